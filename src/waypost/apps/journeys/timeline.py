"""When a photo was taken, as a UTC instant plus the offset of the place (invariant 8).

Sources, best first: the EXIF offset tag; the GPS clock (UTC by definition), which also
yields the offset when the camera's wall-clock time is known; the zone of the mail's Date
header, on the assumption that the sender wrote from where the photos were taken. The
journey-engine work adds the zone at the photo's location before that last resort.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from waypost.apps.journeys.exif import PhotoMetadata

OFFSET_TAG, GPS_TIME, MAIL_DATE_ZONE, NO_TIME = "offset-tag", "gps-time", "mail-date-zone", "none"
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


def resolve_time(meta: PhotoMetadata, mail_date: datetime | None) -> PhotoTime:
    local = meta.taken_local
    if local is not None and meta.utc_offset_minutes is not None:
        return PhotoTime(_as_utc(local, meta.utc_offset_minutes), meta.utc_offset_minutes, OFFSET_TAG)
    if meta.gps_time_utc is not None:
        return PhotoTime(meta.gps_time_utc, _offset_between(local, meta.gps_time_utc), GPS_TIME)
    if local is not None and mail_date is not None and mail_date.utcoffset() is not None:
        offset = int(mail_date.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        return PhotoTime(_as_utc(local, offset), offset, MAIL_DATE_ZONE)
    return PhotoTime(None, None, NO_TIME)


def _as_utc(local: datetime, offset_minutes: int) -> datetime:
    return (local - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def _offset_between(local: datetime | None, utc: datetime) -> int | None:
    """The camera clock minus GPS time, rounded to the 15-minute grid real zones use."""
    if local is None:
        return None
    minutes = (local.replace(tzinfo=UTC) - utc).total_seconds() / 60
    rounded = int(round(minutes / 15) * 15)
    return rounded if abs(rounded) <= MAX_OFFSET_MINUTES else None
