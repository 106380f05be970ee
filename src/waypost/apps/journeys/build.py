"""From stored photos to the journey people see: ordered points, legs, totals.

This is the one place that turns photo rows into the journey view; the web page, the JSON,
and the reply all read it, so they never disagree."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class PhotoPoint:
    public_id: str
    filename: str | None
    mail_position: int
    taken_at: datetime | None
    utc_offset_minutes: int | None
    time_source: str | None
    latitude: float | None
    longitude: float | None
    problem: str | None

    @property
    def placed(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    @property
    def local_taken_at(self) -> datetime | None:
        """The wall-clock time where the photo was taken (aware, in its own offset)."""
        if self.taken_at is None:
            return None
        if self.utc_offset_minutes is None:
            return self.taken_at
        return self.taken_at.astimezone(timezone(timedelta(minutes=self.utc_offset_minutes)))


@dataclass(frozen=True)
class JourneyView:
    title: str
    token: str
    created_at: datetime
    photos: tuple[PhotoPoint, ...]  # every photo, in time order (untimed ones last, mail order)
    route: tuple[PhotoPoint, ...]  # placed photos in time order
    distance_km: float
    start: datetime | None  # local time of the first photo, aware
    end: datetime | None  # local time of the last photo, aware

    @property
    def unplaced(self) -> tuple[PhotoPoint, ...]:
        return tuple(photo for photo in self.photos if not photo.placed)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a spherical Earth (error under 0.5 %, fine for a travel map)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def time_order(photos: Iterable[PhotoPoint]) -> list[PhotoPoint]:
    """By UTC instant; photos without a time keep their mail order, after the timed ones."""
    return sorted(photos, key=lambda p: (p.taken_at is None, p.taken_at or datetime.min, p.mail_position))


def build_view(title: str, token: str, created_at: datetime, photos: Iterable[PhotoPoint]) -> JourneyView:
    ordered = time_order(photos)
    route = tuple(p for p in ordered if p.placed and p.taken_at is not None)
    distance = sum(
        great_circle_km(a.latitude, a.longitude, b.latitude, b.longitude)  # type: ignore[arg-type]
        for a, b in zip(route, route[1:], strict=False)
    )
    timed = [p for p in ordered if p.taken_at is not None]
    return JourneyView(
        title=title,
        token=token,
        created_at=created_at,
        photos=tuple(ordered),
        route=route,
        distance_km=round(distance, 3),
        start=timed[0].local_taken_at if timed else None,
        end=timed[-1].local_taken_at if timed else None,
    )


def describe_moment(moment: datetime | None) -> str:
    """'13 Jul 2024, 09:04 (UTC+01:00)': local clock time with its offset, for people."""
    if moment is None:
        return "time unknown"
    offset = moment.strftime("%z")
    label = "UTC" if offset in ("+0000", "") else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{moment.day} {moment:%b %Y, %H:%M} ({label})"
