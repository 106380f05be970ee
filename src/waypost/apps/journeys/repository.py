"""Journey rows in and out of the database."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys.build import JourneyView, PhotoPoint, build_view
from waypost.store.models import journeys, photos, utcnow

TOKEN_BYTES = 24  # 192 random bits in every share link


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


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


def create_journey(conn: Connection, *, title: str, owner: str, source_message_id: str) -> tuple[int, str]:
    now = utcnow()
    token = new_token()
    result = conn.execute(
        journeys.insert().values(
            token=token, title=title, owner_address=owner, source_message_id=source_message_id,
            created_at=now, updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0]), token


def add_photos(conn: Connection, journey_id: int, new_photos: list[NewPhoto]) -> None:
    if not new_photos:
        return
    rows = [
        {**photo.__dict__, "journey_id": journey_id, "public_id": secrets.token_urlsafe(12)}
        for photo in new_photos
    ]
    conn.execute(photos.insert(), rows)


def find_by_source(conn: Connection, source_message_id: str) -> tuple[int, str] | None:
    row = conn.execute(
        sa.select(journeys.c.id, journeys.c.token).where(journeys.c.source_message_id == source_message_id)
    ).first()
    return (row.id, row.token) if row else None


class JourneyReader:
    """Read side used by the web and by replies."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def view(self, token: str) -> JourneyView | None:
        with self.engine.connect() as conn:
            return load_view(conn, token)

    def photo_blob_key(self, token: str, public_id: str, size: str) -> str | None:
        column = photos.c.thumb_key if size == "thumb" else photos.c.display_key
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(column)
                .select_from(photos.join(journeys, photos.c.journey_id == journeys.c.id))
                .where(journeys.c.token == token, photos.c.public_id == public_id)
            ).scalar()


def load_view(conn: Connection, token: str) -> JourneyView | None:
    journey = conn.execute(sa.select(journeys).where(journeys.c.token == token)).first()
    if journey is None:
        return None
    rows = conn.execute(sa.select(photos).where(photos.c.journey_id == journey.id)).all()
    points = [
        PhotoPoint(
            public_id=r.public_id, filename=r.filename, mail_position=r.mail_position, taken_at=r.taken_at,
            utc_offset_minutes=r.utc_offset_minutes, time_source=r.time_source, latitude=r.latitude,
            longitude=r.longitude, problem=r.problem,
        )
        for r in rows
    ]
    return build_view(journey.title, journey.token, journey.created_at, points)
