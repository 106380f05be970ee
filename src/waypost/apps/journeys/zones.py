"""The time zone at a place, and what a camera's wall-clock reading there means in UTC.

Offline, through timezonefinder's bundled boundaries. At sea it answers with the nautical
zones, ``Etc/GMT+3`` and the like (whose names carry the POSIX sign, inverted: that one is
UTC-3); ``zoneinfo`` reads them correctly, so they are returned like any other zone.
"""

from __future__ import annotations

import atexit
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from waypost.apps.journeys.places import check_coordinates

if TYPE_CHECKING:
    from timezonefinder import TimezoneFinder

_finder: TimezoneFinder | None = None
# A TimezoneFinder must not be used from two threads at once; lookups take microseconds,
# so one instance behind a lock costs less than an instance (and its memory) per thread.
_finder_lock = threading.Lock()


def zone_at(latitude: float, longitude: float) -> ZoneInfo | None:
    """The zone in force at the point (a nautical ``Etc/GMT±N`` zone at sea); None if there is none.

    The first call opens the boundary data, memory-mapped rather than read in: about 0.5 s and
    18 MB, where ``in_memory=True`` takes 38 MB. Safe from any thread. Raises ValueError for
    coordinates that are not finite or out of range, and ``zoneinfo.ZoneInfoNotFoundError``
    when the system's time zone database lacks the zone, which is a deployment problem to fix
    rather than a photo's.
    """
    latitude, longitude = check_coordinates(latitude, longitude)
    global _finder
    with _finder_lock:
        if _finder is None:
            from timezonefinder import TimezoneFinder  # on first use, like the boundary data

            _finder = TimezoneFinder(in_memory=False)
            atexit.register(_close_finder)
        name = _finder.timezone_at(lat=latitude, lng=longitude)
    return ZoneInfo(name) if name else None


def _close_finder() -> None:
    """Unmap the boundary files while the interpreter is whole: left to the garbage collector at
    shutdown, timezonefinder finds its helpers gone and the files are reported as never closed."""
    global _finder
    with _finder_lock:
        if _finder is not None:
            _finder.cleanup()
            _finder = None


def localize(naive_local: datetime, zone: ZoneInfo) -> tuple[datetime, int]:
    """The UTC instant a wall-clock reading in ``zone`` denotes, and the zone's UTC offset then, in minutes.

    Twice a year a reading has no single answer; both cases take the offset in force just
    *before* the clocks changed (PEP 495's ``fold=0``, imposed whatever ``fold`` the argument
    carries, since EXIF has no way to say which):

    - a gap (spring forward: on 10 Mar 2024 New York's clocks go from 02:00 to 03:00, so
      02:30 never shows): read with the old offset, UTC-5, giving 07:30 UTC. That is what a
      camera still on winter time shows, the only way such a reading arises;
    - a fold (fall back: on 3 Nov 2024 01:30 shows twice in New York): the first occurrence,
      still on summer time, UTC-4, giving 05:30 UTC. Wrong by at most the size of the shift
      when the photo was taken during the second pass.

    Either way ``utc + offset`` gives back the reading, so the camera's time is shown as it
    was taken. Offsets that are not whole minutes (local mean time before ~1900) are rounded
    to the nearest minute; the instant is exact. Raises ValueError if ``naive_local`` is aware.
    """
    if naive_local.tzinfo is not None:
        raise ValueError(f"expected a naive wall-clock time, got {naive_local.isoformat()} with a zone")
    offset = naive_local.replace(tzinfo=zone, fold=0).utcoffset() or timedelta(0)
    return (naive_local - offset).replace(tzinfo=UTC), round(offset.total_seconds() / 60)
