"""The journeys app: photos in, a journey and a reply out."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection

from waypost.apps.journeys import repository
from waypost.apps.journeys.exif import PhotoMetadata
from waypost.apps.journeys.images import ImageError, is_supported_image, process_photo
from waypost.apps.journeys.repository import NewPhoto
from waypost.apps.journeys.timeline import resolve_time
from waypost.config import JourneySettings
from waypost.mail.parse import Attachment
from waypost.outbound.compose import Composer, Draft
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.pipeline.router import Commit, InboundMail
from waypost.store.blobs import BlobStore

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).with_name("templates")
STREAM = "journeys"


@dataclass(frozen=True)
class Batch:
    photos: list[NewPhoto]
    ignored: list[str]  # names of attachments that are not photos


class JourneysApp:
    name = "journeys"

    def __init__(self, settings: JourneySettings, blobs: BlobStore, outbox: Outbox, composer: Composer,
                 base_url: str, envelope_sender: str) -> None:
        self.settings = settings
        self.mailbox = settings.mailbox
        self.blobs = blobs
        self.outbox = outbox
        self.composer = composer
        self.base_url = base_url
        self.envelope_sender = envelope_sender

    def handle(self, mail: InboundMail) -> Commit:
        batch = self._read_photos(mail)

        def commit(conn: Connection) -> None:
            if repository.find_by_source(conn, mail.id) is not None:
                return  # an earlier run of this job already committed
            if not batch.photos:
                self._queue_reply(conn, mail, "journeys/no_photos", {"ignored": batch.ignored})
                return
            title = mail.message.subject or "Your journey"
            journey_id, token = repository.create_journey(
                conn, title=title, owner=mail.sender, source_message_id=mail.id
            )
            repository.add_photos(conn, journey_id, batch.photos)
            view = repository.load_view(conn, token)
            context = {"journey": view, "url": f"{self.base_url}/j/{token}", "ignored": batch.ignored}
            self._queue_reply(conn, mail, "journeys/journey_ready", context)

        return commit

    def _read_photos(self, mail: InboundMail) -> Batch:
        photos: list[NewPhoto] = []
        ignored: list[str] = []
        seen: set[str] = set()
        for attachment in mail.message.attachments:
            if not is_supported_image(attachment.content_type, attachment.filename):
                ignored.append(attachment.filename or attachment.content_type)
                continue
            digest = hashlib.sha256(attachment.data).hexdigest()
            if digest in seen:  # the same image twice in one mail is one photo
                continue
            seen.add(digest)
            photos.append(self._read_photo(attachment, digest, mail))
        return Batch(photos, ignored)

    def _read_photo(self, attachment: Attachment, digest: str, mail: InboundMail) -> NewPhoto:
        try:
            processed = process_photo(
                attachment.data, thumb_px=self.settings.thumbnail_px, display_px=self.settings.display_px
            )
        except ImageError as err:
            log.info("photo %s of %s unreadable: %s", attachment.position, mail.id, err)
            return _unreadable(attachment, digest, str(err))
        thumb_key, display_key = f"photos/{digest}/thumb.jpg", f"photos/{digest}/display.jpg"
        self.blobs.put(thumb_key, processed.thumbnail)
        self.blobs.put(display_key, processed.display)
        return _photo_row(attachment, digest, processed.metadata, processed.display_size, thumb_key,
                          display_key, mail)

    def _queue_reply(self, conn: Connection, mail: InboundMail, template: str, context: dict) -> None:
        subject = _reply_subject(template, mail.message.subject)
        draft = Draft(template=template, to=mail.sender, subject=subject, context=context,
                      in_reply_to=mail.message.message_id, references=mail.message.references)
        composed = self.composer.compose(draft)
        self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"journeys-reply-{mail.id}", stream=STREAM, recipient=mail.sender,
            envelope_sender=self.envelope_sender, subject=composed.subject,
            message_id=composed.message_id, raw=composed.raw,
        ))


def _reply_subject(template: str, subject: str) -> str:
    if template.endswith("no_photos"):
        return f"No photos found in “{subject}”" if subject else "No photos found in your message"
    return f"Your journey: {subject}" if subject else "Your journey is ready"


def _photo_row(attachment: Attachment, digest: str, meta: PhotoMetadata, size: tuple[int, int],
               thumb_key: str, display_key: str, mail: InboundMail) -> NewPhoto:
    when = resolve_time(meta, mail.message.date)
    problems = []
    if meta.latitude is None or meta.longitude is None:
        problems.append("no location in the photo")
    if when.utc is None:
        problems.append("no time in the photo")
    return NewPhoto(
        content_sha256=digest, filename=attachment.filename, mail_position=attachment.position,
        taken_at=when.utc, utc_offset_minutes=when.offset_minutes, time_source=when.source,
        latitude=meta.latitude, longitude=meta.longitude, altitude=meta.altitude,
        make=meta.make, model=meta.model, width=size[0], height=size[1],
        thumb_key=thumb_key, display_key=display_key, problem="; ".join(problems) or None,
    )


def _unreadable(attachment: Attachment, digest: str, reason: str) -> NewPhoto:
    return NewPhoto(
        content_sha256=digest, filename=attachment.filename, mail_position=attachment.position,
        taken_at=None, utc_offset_minutes=None, time_source="none", latitude=None, longitude=None,
        altitude=None, make=None, model=None, width=None, height=None, thumb_key=None,
        display_key=None, problem=f"could not read the image: {reason}",
    )
