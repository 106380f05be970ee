"""The journeys app: photos in, a journey and a reply out."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import overload

from sqlalchemy.engine import Connection

from waypost.apps.journeys import advice, commands, privacy_zones, repository, story
from waypost.apps.journeys.build import JourneyView, Locate, RouteRules
from waypost.apps.journeys.exif import PhotoMetadata
from waypost.apps.journeys.imagepool import ImagePool, Photo
from waypost.apps.journeys.images import ImageError, ProcessedPhoto, is_supported_image
from waypost.apps.journeys.preview import mail_picture
from waypost.apps.journeys.repository import NewPhoto
from waypost.apps.journeys.timeline import PhotoTime, ZoneAt, resolve_time
from waypost.config import JourneySettings
from waypost.mail.addresses import address_key
from waypost.mail.commands import Verb
from waypost.mail.parse import Attachment, ParsedMessage
from waypost.outbound.compose import Composer, Draft, InlineImage, reply_subject
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.pipeline.router import BaseApp, Commit, InboundMail
from waypost.store.blobs import BlobStore
from waypost.store.models import utcnow

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).with_name("templates")
STREAM = "journeys"


@dataclass(frozen=True)
class Batch:
    photos: list[NewPhoto]
    ignored: list[str]  # names of attachments that are not photos


def route_rules(settings: JourneySettings) -> RouteRules:
    return RouteRules(
        stop_radius_km=settings.stop_radius_m / 1000,
        stop_max_gap=timedelta(minutes=settings.stop_max_gap_minutes),
        estimate_max_gap=timedelta(minutes=settings.estimate_max_gap_minutes),
        max_speed_kmh=settings.max_speed_kmh,
        flight_min_km=settings.flight_min_km,
        flight_min_speed_kmh=settings.flight_min_speed_kmh,
    )


class JourneysApp(BaseApp):
    """Photos mailed to the journeys address become a journey; a reply in its thread (or to
    its reply address) adds to it. Every mail that reaches this app gets one reply."""

    name = "journeys"
    open_to_all = False

    def __init__(self, settings: JourneySettings, blobs: BlobStore, outbox: Outbox, composer: Composer,
                 base_url: str, envelope_sender: str, mail_domain: str, *, images: ImagePool | None = None,
                 locate: Locate | None = None, zone_at: ZoneAt | None = None,
                 rate_window: timedelta = timedelta(hours=1)) -> None:
        self.settings = settings
        self.mailbox = settings.mailbox
        self.blobs = blobs
        self.outbox = outbox
        self.composer = composer
        self.base_url = base_url
        self.envelope_sender = envelope_sender
        self.mail_domain = mail_domain
        self.images = images or ImagePool(1)
        self.raw_retention = timedelta(days=settings.keep_originals_days)
        self.rules = route_rules(settings)
        self.locate = locate
        self.zone_at = zone_at
        self.rate_window = rate_window
        self.commands = commands.CommandDesk(outbox, composer, blobs, base_url=base_url,
                                             journeys_address=f"{self.mailbox}@{mail_domain}", mailbox=self.mailbox,
                                             mail_domain=mail_domain, envelope_sender=envelope_sender,
                                             erasure_wait=timedelta(days=settings.erasure_confirm_days),
                                             rules=self.rules, locate=self.locate)

    def handle(self, mail: InboundMail) -> Commit:
        batch = self._read_photos(mail)

        def commit(conn: Connection) -> str | None:
            if repository.find_by_inbound(conn, mail.id) is not None:
                return None  # an earlier run of this job already committed
            message = mail.message
            # what the reader left out (archives, TNEF, attachments over the size budget), said in the reply
            notes = [*message.notes, *message.skipped]
            journey = repository.find_thread(
                conn, sender=mail.sender, reply_token=self._reply_token(mail.recipient),
                message_ids=[*message.references, *([message.in_reply_to] if message.in_reply_to else [])],
            )
            command = commands.command_of(mail)
            returning = command is not None and command.verb == Verb.START and commands.stopped_by_self(
                conn, mail.sender)  # the gate let them in for this alone: their photos wait
            if not batch.photos or returning:
                return self.commands.answer(conn, commands.Request(mail, command, journey, batch.ignored, notes))
            template = "journeys/journey_updated" if journey else "journeys/journey_ready"
            if journey is None:
                journey = repository.create_journey(conn, title=message.subject or "Your journey",
                                                    owner=mail.sender, source_message_id=mail.id,
                                                    link_days=self.settings.link_days)
            added = repository.add_photos(conn, journey.id, batch.photos)
            repository.link_message(conn, journey.id, direction="in", inbound_message_id=mail.id,
                                    message_id_header=message.message_id)
            view = repository.load_view(conn, journey.token, rules=self.rules, locate=self.locate)
            # a link the operator turned off (or that expired) is not handed out again by a reply
            url = f"{self.base_url}/j/{journey.token}" if repository.link_is_live(conn, journey.id) else None
            # this reply, to the owner alone, shows everything; the page leaves out what a zone hides
            zones = privacy_zones.zones_of(conn, journey.owner_address)
            hidden = len(privacy_zones.hidden_photos(view, zones)) if view is not None else 0
            context = {"journey": view, "url": url, "ignored": batch.ignored, "hidden": hidden,
                       "added": len(added), "repeated": len(batch.photos) - len(added), "notes": notes}
            told, picture = _told(view, len(added))
            self._queue_reply(conn, mail, template, {**context, **told}, journey, picture)
            return None

        return commit

    def _reply_token(self, recipient: str) -> str | None:
        """The +detail of ``journeys+<reply token>@domain``, if the mail was sent there."""
        local = recipient.rsplit("@", 1)[0]
        _, _, detail = local.partition("+")
        return detail.lower() or None

    def _read_photos(self, mail: InboundMail) -> Batch:
        ignored: list[str] = []
        wanted: list[Attachment] = []
        for attachment in mail.message.attachments:
            if is_supported_image(attachment.content_type, attachment.filename):
                wanted.append(attachment)
            else:
                ignored.append(attachment.filename or attachment.content_type)
        # each photo decoded once, as the pool takes it (its worker hashes it); its two JPEGs are
        # stored as soon as it comes back, while the pool works on the rest
        with _PhotoBlobs(self.blobs, len(wanted)) as stored:
            results = self.images.process(_Decoded(wanted), thumb_px=self.settings.thumbnail_px,
                                          display_px=self.settings.display_px, on_result=stored.store)
        photos: list[NewPhoto] = []
        seen: set[str] = set()
        for attachment, result in zip(wanted, results, strict=True):
            digest = result.sha256 if isinstance(result, ProcessedPhoto) else _sha256(attachment)
            if digest not in seen:  # the same image twice in one mail is one photo
                seen.add(digest)
                photos.append(self._photo(attachment, digest, result, mail))
        return Batch(photos, ignored)

    def _photo(self, attachment: Attachment, digest: str, result: ProcessedPhoto | ImageError,
               mail: InboundMail) -> NewPhoto:
        if isinstance(result, ImageError):
            log.info("photo %s of %s unreadable: %s", attachment.position, mail.id, result)
            return _unreadable(attachment, digest, str(result))
        thumb_key, display_key = photo_keys(digest)
        when = resolve_time(result.metadata, mail.message.date, self.zone_at)
        return _photo_row(attachment, digest, result.metadata, when, result.display_size, thumb_key, display_key)

    def rate_notice(self, conn: Connection, sender: str, message: ParsedMessage) -> None:
        """Tell an allowed, authenticated sender over the per-sender limit that this mail was
        not processed: once per window, however many more arrive (the key holds it to one)."""
        window = self.rate_window.total_seconds()
        started = datetime.fromtimestamp(utcnow().timestamp() // window * window, UTC)
        subject = f"Not processed: {message.subject}" if message.subject else "Your message was not processed"
        draft = Draft(template="journeys/rate_limited", to=sender, subject=subject, stream=STREAM,
                      context={"journeys_address": f"{self.mailbox}@{self.mail_domain}",
                               "window_minutes": round(window / 60), "until": started + self.rate_window},
                      in_reply_to=message.message_id, references=message.references)
        composed = self.composer.compose(draft)
        self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"journeys-rate-{address_key(sender)}-{started:%Y%m%dT%H%M}", stream=STREAM,
            recipient=sender, envelope_sender=self.envelope_sender, subject=composed.subject,
            message_id=composed.message_id, raw=composed.raw,
        ))

    def _queue_reply(self, conn: Connection, mail: InboundMail, template: str, context: dict,
                     journey: repository.JourneyRef | None, inline: tuple[InlineImage, ...] = ()) -> None:
        subject = reply_subject(mail.message.subject)
        reply_to = f"{self.mailbox}+{journey.reply_token}@{self.mail_domain}" if journey else None
        context = {**context, "journeys_address": f"{self.mailbox}@{self.mail_domain}"}
        draft = Draft(template=template, to=mail.sender, subject=subject, stream=STREAM, context=context,
                      in_reply_to=mail.message.message_id, references=mail.message.references, reply_to=reply_to,
                      inline=inline)
        composed = self.composer.compose(draft)
        self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"journeys-reply-{mail.id}", stream=STREAM, recipient=mail.sender,
            envelope_sender=self.envelope_sender, subject=composed.subject,
            message_id=composed.message_id, raw=composed.raw,
        ))
        if journey is not None:
            repository.link_message(conn, journey.id, direction="out", message_id_header=composed.message_id)


def photo_keys(digest: str) -> tuple[str, str]:
    """The blob keys of a photo's thumbnail and display JPEGs, by the hex SHA-256 of its bytes."""
    return f"photos/{digest}/thumb.jpg", f"photos/{digest}/display.jpg"


class _PhotoBlobs:
    """Stores each processed photo's thumbnail and display JPEGs on threads of their own, as
    the image pool hands the photo back: the writes (each waits for its fsync) overlap the
    decoding of the other photos and each other, instead of following them one by one. A
    photo that came twice is stored once. Leaving the ``with`` block waits for every write
    and raises the first write's error (StorageError), so nothing refers to a blob before
    it is durable."""

    _THREADS = 4

    def __init__(self, blobs: BlobStore, photos: int) -> None:
        self._blobs = blobs
        self._writers = ThreadPoolExecutor(max_workers=max(1, min(photos, self._THREADS)),
                                           thread_name_prefix="photo-blobs")
        self._writes: list[Future[None]] = []
        self._digests: set[str] = set()

    def store(self, index: int, result: ProcessedPhoto | ImageError) -> None:
        """``ImagePool.process``'s ``on_result``: start storing ``result``'s JPEGs."""
        if isinstance(result, ImageError) or result.sha256 in self._digests:
            return
        self._digests.add(result.sha256)
        self._writes.append(self._writers.submit(self._put, result))

    def _put(self, photo: ProcessedPhoto) -> None:
        thumb_key, display_key = photo_keys(photo.sha256)
        self._blobs.put(thumb_key, photo.thumbnail)
        self._blobs.put(display_key, photo.display)

    def __enter__(self) -> _PhotoBlobs:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        self._writers.shutdown(wait=True)
        if kind is None:
            for write in self._writes:
                write.result()  # the first write that failed raises here


class _Decoded(Sequence[Photo]):
    """The attachments for the image pool, each taken only when the pool takes it: where the
    worker can read it from the stored mail itself, its place there (``StoredBody``), else its
    bytes, decoded then (parse.py keeps long bodies encoded). The server decodes no photo
    a worker can read, and a mail of forty photos never has them all decoded at once."""

    def __init__(self, attachments: list[Attachment]) -> None:
        self._attachments = attachments

    def __len__(self) -> int:
        return len(self._attachments)

    @overload
    def __getitem__(self, index: int) -> Photo: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Photo]: ...

    def __getitem__(self, index: int | slice) -> Photo | Sequence[Photo]:
        if isinstance(index, slice):
            return _Decoded(self._attachments[index])
        attachment = self._attachments[index]
        return attachment.body.stored() or attachment.data


def _sha256(attachment: Attachment) -> str:
    """The hex SHA-256 of a photo the pool refused (it hashes those it reads)."""
    return hashlib.sha256(attachment.data).hexdigest()


def _told(view: JourneyView | None, added: int) -> tuple[dict[str, object], tuple[InlineImage, ...]]:
    """What the ready and updated replies tell besides the journey, and the route as a picture
    numbered as on the page (none when nothing is on the map)."""
    if view is None:
        return {}, ()
    picture = (InlineImage("route", "image/png", mail_picture(view)),) if view.totals.on_map else ()
    return story.reply_context(view, added), picture




def _photo_row(attachment: Attachment, digest: str, meta: PhotoMetadata, when: PhotoTime, size: tuple[int, int],
               thumb_key: str, display_key: str) -> NewPhoto:
    problems = []
    if meta.latitude is None or meta.longitude is None:
        problems.append(advice.missing_location(attachment.filename, meta))
    if when.utc is None:
        problems.append(advice.missing_time(attachment.filename, meta))
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
