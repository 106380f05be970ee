"""When a photo was taken, as a UTC instant plus the offset of the place (invariant 8).

Sources, best first: the EXIF offset tag; the GPS clock (UTC by definition), which also
yields the offset when the camera's wall-clock time is known; the zone of the mail's Date
header, on the assumption that the sender wrote from where the photos were taken. Between
the last two sits the time zone at the photo's own location (offline lookup), which also
knows daylight saving time on the day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from waypost.apps.journeys.exif import PhotoMetadata
from waypost.apps.journeys.zones import localize

OFFSET_TAG, GPS_TIME, LOCATION_ZONE, MAIL_DATE_ZONE, NO_TIME = (
    "offset-tag", "gps-time", "location-zone", "mail-date-zone", "none")
SOURCES = (OFFSET_TAG, GPS_TIME, LOCATION_ZONE, MAIL_DATE_ZONE, NO_TIME)
ZoneAt = Callable[[float, float], "ZoneInfo | None"]
MAX_OFFSET_MINUTES = 14 * 60  # UTC+14 (Kiribati) and UTC-12 bound every real zone


@dataclass(frozen=True)
class PhotoTime:
    utc: datetime | None
    offset_minutes: int | None
    source: str

    @property
    def local(self) -> datetime | None:
        if self.utc is None or self.offset_minutes is None:
            return None
        return self.utc.astimezone(timezone(timedelta(minutes=self.offset_minutes)))


def resolve_time(meta: PhotoMetadata, mail_date: datetime | None, zone_at: ZoneAt | None = None) -> PhotoTime:
    """The photo's instant and local offset, and which source gave them (``SOURCES``).

    A time at the very edge of the calendar that no offset can be applied to counts as no
    time: a hostile photo must never fail the whole mail."""
    try:
        return _resolve(meta, mail_date, zone_at)
    except OverflowError:
        return PhotoTime(None, None, NO_TIME)


def _resolve(meta: PhotoMetadata, mail_date: datetime | None, zone_at: ZoneAt | None) -> PhotoTime:
    local = meta.taken_local
    if local is not None and meta.utc_offset_minutes is not None:
        return PhotoTime(_as_utc(local, meta.utc_offset_minutes), meta.utc_offset_minutes, OFFSET_TAG)
    zone = _zone(meta, zone_at)
    if meta.gps_time_utc is not None:
        # The place's zone gives the true local offset at that instant; the camera clock's
        # difference to GPS time is the fallback (and is wrong when the clock was never set).
        offset = _offset_in(zone, meta.gps_time_utc) if zone else _offset_between(local, meta.gps_time_utc)
        return PhotoTime(meta.gps_time_utc, offset, GPS_TIME)
    if local is not None and zone is not None:
        instant, offset = localize(local, zone)
        return PhotoTime(instant, offset, LOCATION_ZONE)
    if local is not None and mail_date is not None and mail_date.utcoffset() is not None:
        offset = int(mail_date.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        return PhotoTime(_as_utc(local, offset), offset, MAIL_DATE_ZONE)
    return PhotoTime(None, None, NO_TIME)


def _zone(meta: PhotoMetadata, zone_at: ZoneAt | None) -> ZoneInfo | None:
    if zone_at is None or meta.latitude is None or meta.longitude is None:
        return None
    return zone_at(meta.latitude, meta.longitude)


def _offset_in(zone: tzinfo, instant: datetime) -> int:
    return int(instant.astimezone(zone).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]


def _as_utc(local: datetime, offset_minutes: int) -> datetime:
    return (local - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def _offset_between(local: datetime | None, utc: datetime) -> int | None:
    """The camera clock minus GPS time, rounded to the 15-minute grid real zones use."""
    if local is None:
        return None
    minutes = (local.replace(tzinfo=UTC) - utc).total_seconds() / 60
    rounded = int(round(minutes / 15) * 15)
    return rounded if abs(rounded) <= MAX_OFFSET_MINUTES else None
