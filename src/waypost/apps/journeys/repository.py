"""Journey rows in and out of the database."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys.build import JourneyView, Locate, PhotoPoint, RouteRules, build_view
from waypost.mail.addresses import AddressError, address_key
from waypost.store.models import journey_messages, journeys, photos, utcnow

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


def create_journey(conn: Connection, *, title: str, owner: str, source_message_id: str) -> JourneyRef:
    now = utcnow()
    token, reply_token = new_token(), new_reply_token()
    result = conn.execute(
        journeys.insert().values(
            token=token, reply_token=reply_token, title=title, owner_address=owner,
            source_message_id=source_message_id, created_at=now, updated_at=now,
        )
    )
    return JourneyRef(int(result.inserted_primary_key[0]), token, reply_token, owner, title)


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


class JourneyReader:
    """Read side used by the web and by replies."""

    def __init__(self, engine: Engine, *, rules: RouteRules | None = None, locate: Locate | None = None) -> None:
        self.engine = engine
        self.rules = rules
        self.locate = locate

    def view(self, token: str) -> JourneyView | None:
        with self.engine.connect() as conn:
            return load_view(conn, token, rules=self.rules, locate=self.locate)

    def photo_blob_key(self, token: str, public_id: str, size: str) -> str | None:
        column = photos.c.thumb_key if size == "thumb" else photos.c.display_key
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(column)
                .select_from(photos.join(journeys, photos.c.journey_id == journeys.c.id))
                .where(journeys.c.token == token, photos.c.public_id == public_id)
            ).scalar()


def load_view(conn: Connection, token: str, *, rules: RouteRules | None = None,
              locate: Locate | None = None) -> JourneyView | None:
    journey = conn.execute(sa.select(journeys).where(journeys.c.token == token)).first()
    if journey is None:
        return None
    rows = conn.execute(sa.select(photos).where(photos.c.journey_id == journey.id)).all()
    points = [
        PhotoPoint(
            public_id=r.public_id, filename=r.filename, mail_position=r.mail_position, taken_at=r.taken_at,
            utc_offset_minutes=r.utc_offset_minutes, time_source=r.time_source, latitude=r.latitude,
            longitude=r.longitude, problem=r.problem, altitude=r.altitude, sequence=r.id,
        )
        for r in rows
    ]
    return build_view(journey.title, journey.token, journey.created_at, points, rules=rules, locate=locate,
                      updated_at=journey.updated_at)
