"""Where and when a photo was taken, read from its EXIF metadata.

Each format keeps the EXIF block in a place of its own (a JPEG APP1 segment, a PNG eXIf
chunk or ImageMagick's "Raw profile type exif" text chunk, a WebP EXIF chunk, TIFF's own
directories, a HEIF or AVIF Exif item); Pillow and pillow-heif hand each of them over as
``Image.getexif()``, so one reader serves them all.

Photos arrive from every camera and phone ever made, and their metadata is as often
broken as not: zero denominators, blank dates, placeholder coordinates, strings padded
with NULs. Reading never fails because of it; a value that cannot be trusted becomes
``None`` and the reason is kept in ``PhotoMetadata.problems`` for the operator.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Real
from typing import Any

from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

_Base = ExifTags.Base
_GPS = ExifTags.GPS

# Capture times in order of preference, each with the sub-second and offset tags that
# belong to it (EXIF 2.31 §4.6.5): a fallback time must not borrow another time's offset.
_CAPTURE_TIMES = (
    (_Base.DateTimeOriginal, _Base.SubsecTimeOriginal, _Base.OffsetTimeOriginal),
    (_Base.DateTimeDigitized, _Base.SubsecTimeDigitized, _Base.OffsetTimeDigitized),
    (_Base.DateTime, _Base.SubsecTime, _Base.OffsetTime),
)
# What is read from the main directory (IFD0); the camera tags may sit in either.
_MAIN_TAGS = (_Base.Make, _Base.Model, _Base.Orientation, *(tag for tags in _CAPTURE_TIMES for tag in tags))
_DATE_TIME = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)")
_DATE = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)")
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")
_HEMISPHERES = {"latitude": {"N": 1, "S": -1}, "longitude": {"E": 1, "W": -1}}
_LIMITS = {"latitude": 90.0, "longitude": 180.0}
# Deepest dry land to stratospheric balloons; anything outside is a corrupt value.
_ALTITUDE_RANGE = (-500.0, 50_000.0)
_MAX_OFFSET_MINUTES = 14 * 60  # UTC+14:00 (Kiribati) is the furthest zone in use


@dataclass(frozen=True)
class PhotoMetadata:
    """What Waypost knows about a photo's capture; every field may be missing.

    ``taken_local`` is naive wall-clock time as the camera showed it; add
    ``utc_offset_minutes`` (when known) to place it in UTC. ``gps_time_utc`` is aware and
    comes from the GPS receiver, independent of the camera clock. ``width``/``height`` and
    ``orientation`` are as the opened, not yet decoded, image reports them. Where the
    decoder turns the pixels itself the size is already the turned one: a HEIC's rotation
    and mirror boxes govern, not its EXIF tag, so pillow-heif reports orientation 1 even
    where the camera wrote 6; Pillow's TIFF plugin reports the turned size but keeps the
    tag until it decodes. ``problems`` lists why values present in the file were dropped;
    absent values are not problems.
    """

    taken_local: datetime | None = None
    utc_offset_minutes: int | None = None
    gps_time_utc: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    make: str | None = None
    model: str | None = None
    orientation: int | None = None
    width: int = 0
    height: int = 0
    problems: tuple[str, ...] = field(default=())


def read_metadata(image: Image.Image) -> PhotoMetadata:
    """Read capture time, place and camera from an opened, not necessarily decoded, image.

    Never raises because of what the metadata contains; see ``PhotoMetadata.problems``.
    """
    reader = _ExifReader(image)
    taken_local, offset = reader.capture_time()
    latitude, longitude, altitude = reader.position()
    return PhotoMetadata(
        taken_local=taken_local,
        utc_offset_minutes=offset,
        gps_time_utc=reader.gps_time(),
        latitude=latitude,
        longitude=longitude,
        altitude=altitude,
        make=reader.text(_Base.Make),
        model=reader.text(_Base.Model),
        orientation=reader.orientation(),
        width=image.width,
        height=image.height,
        problems=tuple(reader.problems),
    )


def read_metadata_bytes(data: bytes) -> PhotoMetadata:
    """``read_metadata`` for encoded image bytes; raises only if Pillow cannot open them.

    HEIF opens once ``waypost.apps.journeys.images`` is imported: it registers the opener.
    """
    with Image.open(io.BytesIO(data)) as image:
        return read_metadata(image)


class _ExifReader:
    """Reads typed values from the three EXIF directories, noting each value it drops."""

    def __init__(self, image: Image.Image) -> None:
        self.problems: list[str] = []
        exif = self._directory(lambda: image.getexif(), "EXIF")
        self.camera = self._sub_directory(exif, ExifTags.IFD.Exif, "EXIF sub-IFD")
        self.gps = self._sub_directory(exif, ExifTags.IFD.GPSInfo, "GPS IFD")
        self.main = self._main_values(exif)

    def _directory(self, load: Callable[[], Any], name: str) -> Any:
        # Pillow's parsers raise a wide range of errors on malformed directories (and
        # warnings too, where the application makes warnings errors); any of them
        # means the same thing here: this directory cannot be read.
        try:
            return load()
        except Exception as err:  # noqa: BLE001 - see above
            self.problems.append(f"{name} unreadable: {err}")
            return {}

    def _sub_directory(self, exif: Any, tag: int, name: str) -> dict[int, Any]:
        if not isinstance(exif, Image.Exif):
            return {}
        return self._directory(lambda: exif.get_ifd(tag), name)

    def _main_values(self, exif: Any) -> dict[int, Any]:
        """The main directory's tags that are read here, each decoded on its own.

        Pillow reads the main directory's entries when the file is opened but decodes a
        value only when it is first asked for (the sub-directories are decoded whole, in
        ``_sub_directory``). A value stored with the wrong type or count then fails (or
        warns, an error where warnings are errors) at that moment: it costs that tag alone.
        """
        values: dict[int, Any] = {}
        for tag in _MAIN_TAGS:
            try:
                value = exif.get(tag)
            except Exception as err:  # noqa: BLE001 - as in _directory, for one value
                self.problems.append(f"{_tag_name(tag)} unreadable: {err}")
                continue
            if value is not None:
                values[tag] = value
        return values

    def text(self, tag: int) -> str | None:
        """An ASCII tag as text, cut at the first NUL (C strings) and stripped of padding."""
        text = self._raw_text(self.main.get(tag, self.camera.get(tag)), _tag_name(tag))
        return (text.split("\0", 1)[0].strip() or None) if text else None

    def orientation(self) -> int | None:
        value = self.main.get(_Base.Orientation)
        if value is None:
            return None
        if isinstance(value, int) and 1 <= value <= 8:
            return value
        self.problems.append(f"Orientation out of range: {value!r}")
        return None

    def capture_time(self) -> tuple[datetime | None, int | None]:
        """The first readable capture time and the UTC offset recorded with it."""
        for time_tag, subsec_tag, offset_tag in _CAPTURE_TIMES:
            taken = self._date_time(time_tag)
            if taken is not None:
                taken = taken.replace(microsecond=self._microseconds(subsec_tag))
                return taken, self._offset_minutes(offset_tag)
        return None, None

    def _camera_text(self, tag: int) -> str | None:
        return self._raw_text(self.camera.get(tag, self.main.get(tag)), _tag_name(tag))

    def _date_time(self, tag: int) -> datetime | None:
        text = self._camera_text(tag)
        if text is None:
            return None
        match = _DATE_TIME.fullmatch(text)
        taken = _datetime_or_none(*map(int, match.groups())) if match else None
        if taken is None:
            self.problems.append(f"{_tag_name(tag)} unreadable: {text!r}")
        return taken

    def _microseconds(self, tag: int) -> int:
        text = self._camera_text(tag)
        if text is None:
            return 0
        if not text.isdigit():
            self.problems.append(f"{_tag_name(tag)} unreadable: {text!r}")
            return 0
        # The digits are a decimal fraction of a second: "5" is 0.5 s, "133" is 0.133 s.
        return int(text[:6].ljust(6, "0"))

    def _offset_minutes(self, tag: int) -> int | None:
        text = self._camera_text(tag)
        if text is None:
            return None
        minutes = _minutes_east_of_utc(text)
        if minutes is None:
            self.problems.append(f"{_tag_name(tag)} unreadable: {text!r}")
        return minutes

    def _raw_text(self, value: Any, name: str) -> str | None:
        """A tag value as stripped text, or None when absent or blank (cameras pad unset
        fields with spaces, colons or NULs)."""
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if value is not None and not isinstance(value, str):
            self.problems.append(f"{name} is not text: {value!r}")
            return None
        text = (value or "").strip(" \0")
        return text if text.strip(" :") else None

    def position(self) -> tuple[float | None, float | None, float | None]:
        """Latitude, longitude and altitude, or all None when there is no usable fix."""
        latitude = self._coordinate("latitude", _GPS.GPSLatitude, _GPS.GPSLatitudeRef)
        longitude = self._coordinate("longitude", _GPS.GPSLongitude, _GPS.GPSLongitudeRef)
        if latitude is None or longitude is None:
            if (_GPS.GPSLatitude in self.gps) != (_GPS.GPSLongitude in self.gps):
                self.problems.append("GPS position incomplete: latitude or longitude missing")
            return None, None, None
        if latitude == 0 and longitude == 0:
            # Receivers without a fix write 0,0 ("null island"); no one photographs it.
            self.problems.append("GPS position is 0,0 (a receiver placeholder, not a fix)")
            return None, None, None
        return latitude, longitude, self._altitude()

    def _coordinate(self, axis: str, tag: int, ref_tag: int) -> float | None:
        if tag not in self.gps:
            return None
        degrees = self._degrees(self.gps[tag], axis)
        if degrees is None:
            return None
        reference = self._raw_text(self.gps.get(ref_tag), f"GPS {axis} reference")
        sign = _HEMISPHERES[axis].get((reference or "").upper())
        if sign is None:
            self.problems.append(f"GPS {axis} has no valid hemisphere reference")
            return None
        if degrees > _LIMITS[axis]:
            self.problems.append(f"GPS {axis} out of range: {degrees}")
            return None
        return sign * degrees

    def _degrees(self, value: Any, axis: str) -> float | None:
        """Degrees from a (degrees, minutes, seconds) triple of rationals."""
        if not isinstance(value, tuple) or len(value) != 3:
            self.problems.append(f"GPS {axis} is not a degrees/minutes/seconds triple")
            return None
        degrees, minutes, seconds = (_number(part) for part in value)
        if seconds is None and minutes is not None and not minutes.is_integer():
            # Some writers put the whole fraction in the minutes and leave seconds 0/0.
            seconds = 0.0
        if degrees is None or minutes is None or seconds is None or min(degrees, minutes, seconds) < 0:
            self.problems.append(f"GPS {axis} unreadable (zero denominator or bad value)")
            return None
        return degrees + minutes / 60 + seconds / 3600

    def _altitude(self) -> float | None:
        if _GPS.GPSAltitude not in self.gps:
            return None
        metres = _number(self.gps[_GPS.GPSAltitude])
        if metres is None:
            self.problems.append("GPS altitude unreadable (zero denominator or bad value)")
            return None
        # EXIF 3.0 refs: 0 above sea level, 1 below, 2/3 the same for ellipsoidal height.
        if _byte(self.gps.get(_GPS.GPSAltitudeRef, 0)) in (1, 3):
            metres = -metres
        if not _ALTITUDE_RANGE[0] <= metres <= _ALTITUDE_RANGE[1]:
            self.problems.append(f"GPS altitude out of range: {metres} m")
            return None
        return metres

    def gps_time(self) -> datetime | None:
        """The GPS receiver's UTC time, when both its date and time stamps are readable."""
        stamp = self.gps.get(_GPS.GPSTimeStamp)
        date_text = self._raw_text(self.gps.get(_GPS.GPSDateStamp), "GPSDateStamp")
        if stamp is None and date_text is None:
            return None
        if stamp is None or date_text is None:
            missing = "GPSTimeStamp" if stamp is None else "GPSDateStamp"
            self.problems.append(f"GPS time dropped: {missing} is missing")
            return None
        moment = _gps_moment(date_text, stamp)
        if moment is None:
            self.problems.append(f"GPS time unreadable: {date_text!r} {stamp!r}")
        return moment


def _gps_moment(date_text: str, stamp: Any) -> datetime | None:
    """Aware UTC time from a GPSDateStamp text and a GPSTimeStamp triple."""
    date_match = _DATE.fullmatch(date_text)
    clock = _clock(stamp)
    if date_match is None or clock is None:
        return None
    hours, minutes, seconds = clock
    year, month, day = (int(part) for part in date_match.groups())
    whole = _datetime_or_none(year, month, day, hours, minutes, int(seconds))
    if whole is None:
        return None
    microseconds = min(round((seconds % 1) * 1_000_000), 999_999)
    return whole.replace(microsecond=microseconds, tzinfo=UTC)


def _minutes_east_of_utc(text: str) -> int | None:
    """Minutes from an EXIF offset such as "+01:00" or "-05:30"; None if not one."""
    match = _OFFSET.fullmatch(text)
    if match is None or int(match[3]) >= 60:
        return None
    minutes = int(match[2]) * 60 + int(match[3])
    if minutes > _MAX_OFFSET_MINUTES:
        return None
    return -minutes if match[1] == "-" else minutes


def _number(value: Any) -> float | None:
    """A finite float from an EXIF number, or None (zero denominators read as NaN)."""
    if isinstance(value, IFDRational) and value.denominator == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _byte(value: Any) -> int | None:
    if isinstance(value, bytes):
        return value[0] if value else None
    return value if isinstance(value, int) else None


def _clock(stamp: Any) -> tuple[int, int, float] | None:
    """(hours, minutes, seconds) from a GPSTimeStamp triple of rationals."""
    if not isinstance(stamp, tuple) or len(stamp) != 3:
        return None
    hours, minutes, seconds = (_number(part) for part in stamp)
    if hours is None or minutes is None or seconds is None:
        return None
    # Hours, minutes and whole seconds out of range are left for datetime() to refuse.
    if not (hours.is_integer() and minutes.is_integer() and seconds >= 0):
        return None
    return int(hours), int(minutes), seconds


_YEARS = range(1826, 2200)  # from the oldest surviving photograph; anything else is a broken clock


def _datetime_or_none(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
                      second: int = 0) -> datetime | None:
    """The time, or None for an impossible one. Years far outside photography are refused
    too: shifting year 1 or 9999 by a UTC offset leaves Python's date range."""
    if year not in _YEARS:
        return None
    try:
        return datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - EXIF wall-clock time carries no zone
    except ValueError:
        return None


def _tag_name(tag: int) -> str:
    return ExifTags.TAGS.get(tag, f"tag 0x{tag:04x}")
