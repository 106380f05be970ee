"""Journey rows in and out of the database."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys import privacy_zones
from waypost.apps.journeys.build import JourneyView, Locate, PhotoPoint, RouteRules, build_view
from waypost.errors import WaypostError
from waypost.mail.addresses import AddressError, address_key
from waypost.store.db import inserted_id
from waypost.store.models import audit_log, inbound_messages, journey_messages, journeys, photos, utcnow

TOKEN_BYTES = 24  # 192 random bits in every share link
REPLY_TOKEN_BYTES = 20  # 160 bits: 32 base32 characters, well inside a 64-octet local part


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_reply_token() -> str:
    """Lower-case base32: relays that fold the case of a local part cannot break it."""
    return base64.b32encode(secrets.token_bytes(REPLY_TOKEN_BYTES)).decode().rstrip("=").lower()


@dataclass(frozen=True)
class JourneyRef:
    id: int
    token: str
    reply_token: str
    owner_address: str
    title: str


@dataclass(frozen=True)
class NewPhoto:
    content_sha256: str
    filename: str | None
    mail_position: int
    taken_at: object
    utc_offset_minutes: int | None
    time_source: str
    latitude: float | None
    longitude: float | None
    altitude: float | None
    make: str | None
    model: str | None
    width: int | None
    height: int | None
    thumb_key: str | None
    display_key: str | None
    problem: str | None


class JourneyNotFound(WaypostError, LookupError):
    """No journey has the id given."""


def create_journey(conn: Connection, *, title: str, owner: str, source_message_id: str,
                   link_days: float = 0) -> JourneyRef:
    """A new journey with fresh secrets; its share link expires ``link_days`` after now (the
    journey's start), or never when ``link_days`` is 0."""
    now = utcnow()
    token, reply_token = new_token(), new_reply_token()
    result = conn.execute(
        journeys.insert().values(
            token=token, reply_token=reply_token, title=title, owner_address=owner,
            source_message_id=source_message_id, created_at=now, updated_at=now,
            expires_at=now + timedelta(days=link_days) if link_days > 0 else None,
        )
    )
    return JourneyRef(inserted_id(result), token, reply_token, owner, title)


def link_message(conn: Connection, journey_id: int, *, direction: str, message_id_header: str | None,
                 inbound_message_id: str | None = None) -> None:
    """Remember a mail of the journey's thread (``direction`` "in" or "out")."""
    conn.execute(journey_messages.insert().values(
        journey_id=journey_id, direction=direction, inbound_message_id=inbound_message_id,
        message_id_header=message_id_header, created_at=utcnow(),
    ))


def add_photos(conn: Connection, journey_id: int, new_photos: list[NewPhoto]) -> list[NewPhoto]:
    """Add the photos the journey does not hold yet (by content hash); returns those added."""
    if not new_photos:
        return []
    held = set(conn.execute(
        sa.select(photos.c.content_sha256).where(photos.c.journey_id == journey_id)
    ).scalars())
    fresh = [photo for photo in new_photos if photo.content_sha256 not in held]
    if fresh:
        rows = [
            {**photo.__dict__, "journey_id": journey_id, "public_id": secrets.token_urlsafe(12)}
            for photo in fresh
        ]
        conn.execute(photos.insert(), rows)
    conn.execute(journeys.update().where(journeys.c.id == journey_id).values(updated_at=utcnow()))
    return fresh


def _ref(row: sa.Row | None) -> JourneyRef | None:
    if row is None:
        return None
    return JourneyRef(row.id, row.token, row.reply_token, row.owner_address, row.title)


_REF_COLUMNS = (journeys.c.id, journeys.c.token, journeys.c.reply_token, journeys.c.owner_address, journeys.c.title)


def find_by_inbound(conn: Connection, inbound_message_id: str) -> JourneyRef | None:
    """The journey an inbound mail already went into (a re-run of its job), if any."""
    return _ref(conn.execute(
        sa.select(*_REF_COLUMNS)
        .select_from(journeys.join(journey_messages, journey_messages.c.journey_id == journeys.c.id))
        .where(journey_messages.c.inbound_message_id == inbound_message_id)
    ).first())


def find_thread(conn: Connection, *, sender: str, reply_token: str | None,
                message_ids: list[str]) -> JourneyRef | None:
    """The journey a mail continues: by the reply token in the address it was sent to, else
    by the Message-IDs it answers (newest journey first). Only the journey's owner can add to
    it; anyone else starts a journey of their own."""
    candidates: list[JourneyRef] = []
    if reply_token:
        found = _ref(conn.execute(sa.select(*_REF_COLUMNS).where(journeys.c.reply_token == reply_token)).first())
        if found:
            candidates.append(found)
    if message_ids:
        rows = conn.execute(
            sa.select(*_REF_COLUMNS).distinct()
            .select_from(journeys.join(journey_messages, journey_messages.c.journey_id == journeys.c.id))
            .where(journey_messages.c.message_id_header.in_(message_ids[-50:]))
            .order_by(journeys.c.id.desc())
        ).all()
        candidates.extend(ref for ref in map(_ref, rows) if ref is not None)
    return next((ref for ref in candidates if _same_person(ref.owner_address, sender)), None)


def _same_person(a: str, b: str) -> bool:
    try:
        return address_key(a) == address_key(b)
    except AddressError:
        return False


# --- the share link's lifecycle (the console calls these; later, mail commands too) --------------


def _live(now: datetime) -> sa.ColumnElement[bool]:
    """Journeys whose share link works: not revoked, not past its expiry."""
    return sa.and_(journeys.c.revoked_at.is_(None),
                   sa.or_(journeys.c.expires_at.is_(None), journeys.c.expires_at > now))


def link_is_live(conn: Connection, journey_id: int) -> bool:
    """Does the journey's share link work now (not revoked, not expired)?"""
    return conn.execute(sa.select(journeys.c.id).where(journeys.c.id == journey_id, _live(utcnow()))).first() \
        is not None


def _update(conn: Connection, journey_id: int, **values: object) -> None:
    found = conn.execute(journeys.update().where(journeys.c.id == journey_id).values(**values)).rowcount
    if not found:
        raise JourneyNotFound(f"no journey with id {journey_id}")


def revoke(conn: Connection, journey_id: int) -> None:
    """The share link stops working now (every /j/ route answers 404); a journey already
    revoked keeps its first revocation time. Raises JourneyNotFound."""
    revoked = conn.execute(journeys.update().where(journeys.c.id == journey_id, journeys.c.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount
    if not revoked and conn.execute(sa.select(journeys.c.id).where(journeys.c.id == journey_id)).first() is None:
        raise JourneyNotFound(f"no journey with id {journey_id}")


def rotate(conn: Connection, journey_id: int) -> str:
    """A new share token; the old one stops working at once. Rotating also lifts a revocation
    (the owner wants a working link again); the expiry stays as it was. Raises JourneyNotFound."""
    token = new_token()
    _update(conn, journey_id, token=token, revoked_at=None)
    return token


def set_expiry(conn: Connection, journey_id: int, expires_at: datetime | None) -> None:
    """The link works until ``expires_at`` (aware), or for ever with None. Raises JourneyNotFound."""
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    _update(conn, journey_id, expires_at=expires_at)


def rename(conn: Connection, journey_id: int, title: str) -> None:
    """The journey's title, as its owner asked by mail. Raises JourneyNotFound."""
    _update(conn, journey_id, title=title, updated_at=utcnow())


DELETED = "journey.delete"  # the audit action that remembers a deleted journey's link


def token_digest(token: str) -> str:
    """How a deleted journey's link is remembered: a hash, so the audit log holds no live secret."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Deleted:
    photos: int
    blob_keys: list[str]  # images no other journey uses, and the raw mails that brought them


def delete_journey(conn: Connection, journey_id: int) -> Deleted:
    """Remove the journey, its photos and its thread, and remember its link as deleted (the web
    answers 410 for it). The caller deletes ``blob_keys`` from the blob store: should its
    transaction roll back after that, a re-run finds the same rows and the same keys (deleting
    a missing blob is no error), so the end is the same. Raises JourneyNotFound."""
    row = conn.execute(sa.select(journeys.c.token).where(journeys.c.id == journey_id)).first()
    if row is None:
        raise JourneyNotFound(f"no journey with id {journey_id}")
    keys = {k for pair in conn.execute(sa.select(photos.c.thumb_key, photos.c.display_key)
                                       .where(photos.c.journey_id == journey_id)) for k in pair if k}
    count = conn.execute(photos.delete().where(photos.c.journey_id == journey_id)).rowcount
    raw = conn.execute(sa.select(inbound_messages.c.id, inbound_messages.c.blob_key).where(
        inbound_messages.c.id.in_(sa.select(journey_messages.c.inbound_message_id)
                                  .where(journey_messages.c.journey_id == journey_id)),
        inbound_messages.c.raw_deleted_at.is_(None), inbound_messages.c.blob_key != "")).all()
    if raw:
        conn.execute(inbound_messages.update().where(inbound_messages.c.id.in_([r.id for r in raw]))
                     .values(raw_deleted_at=utcnow()))
    conn.execute(journey_messages.delete().where(journey_messages.c.journey_id == journey_id))
    conn.execute(journeys.delete().where(journeys.c.id == journey_id))
    conn.execute(audit_log.insert().values(at=utcnow(), actor="owner", action=DELETED,
                                           target=token_digest(row.token)))
    still_used = set(conn.execute(sa.select(photos.c.thumb_key).where(photos.c.thumb_key.in_(keys))).scalars()) | \
        set(conn.execute(sa.select(photos.c.display_key).where(photos.c.display_key.in_(keys))).scalars())
    return Deleted(count, sorted(keys - still_used) + [r.blob_key for r in raw])


def was_deleted(conn: Connection, token: str) -> bool:
    """Whether ``token`` was the link of a journey its owner deleted (while the audit keeps it)."""
    return conn.execute(sa.select(audit_log.c.id).where(audit_log.c.action == DELETED,
                                                        audit_log.c.target == token_digest(token))).first() is not None


@dataclass(frozen=True)
class JourneySummary:
    """One line of the console's list of journeys."""

    id: int
    token: str
    title: str
    owner: str
    created: datetime
    photos: int
    revoked_at: datetime | None
    expires_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``live``: whether the share link works at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "live"


def list_journeys(conn: Connection, *, limit: int = 50, after_id: int | None = None,
                  owner: str | None = None) -> list[JourneySummary]:
    """Newest first, at most ``limit``; a page continues after the journey ``after_id`` (the
    last id of the previous page). ``owner`` keeps one sender's journeys (case-insensitive)."""
    count = (sa.select(sa.func.count()).select_from(photos)
             .where(photos.c.journey_id == journeys.c.id).scalar_subquery())
    query = (sa.select(journeys.c.id, journeys.c.token, journeys.c.title, journeys.c.owner_address,
                       journeys.c.created_at, count.label("photo_count"), journeys.c.revoked_at,
                       journeys.c.expires_at)
             .order_by(journeys.c.id.desc()).limit(limit))
    if after_id is not None:
        query = query.where(journeys.c.id < after_id)
    if owner:
        query = query.where(sa.func.lower(journeys.c.owner_address) == owner.strip().lower())
    return [JourneySummary(r.id, r.token, r.title, r.owner_address, r.created_at, r.photo_count,
                           r.revoked_at, r.expires_at) for r in conn.execute(query)]


@dataclass(frozen=True)
class PhotoExtras:
    """What the page shows of a photo beyond the journey view: its camera (EXIF make and
    model, untrusted text) and whether it has images to show at all."""

    camera: str | None
    has_image: bool


@dataclass(frozen=True)
class SharedJourney:
    """A journey as its share link shows it."""

    id: int
    view: JourneyView
    extras: dict[str, PhotoExtras]  # by photo public id
    expires_at: datetime | None


def _camera(make: str | None, model: str | None) -> str | None:
    make, model = (make or "").strip(), (model or "").strip()
    if make and model.lower().startswith(make.lower()):
        make = ""  # "Canon" + "Canon EOS R6": the model already names the maker
    return " ".join(part for part in (make, model) if part) or None


class JourneyReader:
    """Read side used by the web and by replies. Only live share links are read: a revoked or
    expired journey is as unknown as a wrong token."""

    def __init__(self, engine: Engine, *, rules: RouteRules | None = None, locate: Locate | None = None) -> None:
        self.engine = engine
        self.rules = rules
        self.locate = locate

    def view(self, token: str) -> JourneyView | None:
        """The journey as its share link shows it (privacy zones left out); None unless live."""
        shared = self.shared(token)
        return shared.view if shared is not None else None

    def shared(self, token: str) -> SharedJourney | None:
        """The journey with what its page needs besides the view; None unless the link is live.
        Photos inside the owner's privacy zones are left out and the route cut there
        (privacy_zones.py): every public output reads the journey through here."""
        with self.engine.connect() as conn:
            journey = _journey_row(conn, token, live=True)
            if journey is None:
                return None
            rows = conn.execute(sa.select(photos).where(photos.c.journey_id == journey.id)).all()
            zones = privacy_zones.zones_of(conn, journey.owner_address)
        whole = _build(journey, rows, rules=self.rules, locate=self.locate)
        view = privacy_zones.public_view(whole, _points(rows), zones, locate=self.locate)
        shown = {photo.public_id for photo in view.photos}
        extras = {r.public_id: PhotoExtras(_camera(r.make, r.model), r.thumb_key is not None)
                  for r in rows if r.public_id in shown}
        return SharedJourney(journey.id, view, extras, journey.expires_at)

    def was_deleted(self, token: str) -> bool:
        """Whether the link was a journey's that its owner deleted (the web answers 410, Gone)."""
        with self.engine.connect() as conn:
            return was_deleted(conn, token)

    def photo_blob_key(self, token: str, public_id: str, size: str) -> str | None:
        """The image of a photo the share link shows; None for one inside the owner's privacy zones."""
        column = photos.c.thumb_key if size == "thumb" else photos.c.display_key
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(column.label("key"), photos.c.latitude, photos.c.longitude, journeys.c.owner_address)
                .select_from(photos.join(journeys, photos.c.journey_id == journeys.c.id))
                .where(journeys.c.token == token, photos.c.public_id == public_id, _live(utcnow()))
            ).first()
            zones = privacy_zones.zones_of(conn, row.owner_address) if row is not None else []
        if row is None or (zones and row.latitude is not None and row.longitude is not None
                           and any(zone.holds((row.latitude, row.longitude)) for zone in zones)):
            return None
        return row.key


def _journey_row(conn: Connection, token: str, *, live: bool) -> sa.Row | None:
    query = sa.select(journeys).where(journeys.c.token == token)
    return conn.execute(query.where(_live(utcnow())) if live else query).first()


def load_view(conn: Connection, token: str, *, rules: RouteRules | None = None,
              locate: Locate | None = None, live: bool = False) -> JourneyView | None:
    """The journey behind ``token``; with ``live``, None when its link is revoked or expired
    (the reply to the owner's own mail reads it either way)."""
    journey = _journey_row(conn, token, live=live)
    if journey is None:
        return None
    rows = conn.execute(sa.select(photos).where(photos.c.journey_id == journey.id)).all()
    return _build(journey, rows, rules=rules, locate=locate)


def _build(journey: sa.Row, rows: Sequence[sa.Row], *, rules: RouteRules | None, locate: Locate | None) -> JourneyView:
    return build_view(journey.title, journey.token, journey.created_at, _points(rows), rules=rules, locate=locate,
                      updated_at=journey.updated_at)


def _points(rows: Sequence[sa.Row]) -> list[PhotoPoint]:
    return [
        PhotoPoint(
            public_id=r.public_id, filename=r.filename, mail_position=r.mail_position, taken_at=r.taken_at,
            utc_offset_minutes=r.utc_offset_minutes, time_source=r.time_source, latitude=r.latitude,
            longitude=r.longitude, problem=r.problem, altitude=r.altitude, sequence=r.id,
        )
        for r in rows
    ]
