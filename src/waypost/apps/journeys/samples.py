"""Generated photos with real-looking EXIF, for the demo and for tests.

``make_photo`` draws a small landscape (sky, sun, hills, a caption) and tags it the way a
phone would: local capture time with its UTC offset, and a GPS block with position and
UTC time. ``DEMO_TRIP`` is a day out from Lisbon to use with it.
"""

from __future__ import annotations

import io
import random
import struct
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps
from PIL.TiffImagePlugin import IFDRational

_Base = ExifTags.Base
_GPS = ExifTags.GPS
_TEN_THOUSANDTHS_PER_DEGREE = 3600 * 10_000  # GPS seconds are written to 1/10000 s
_HILL_COLOURS = ((122, 142, 160), (86, 128, 92), (52, 96, 58))
# Sky from zenith to horizon, by hour of the local day.
_SKIES = (
    (range(0, 6), (12, 18, 44), (44, 56, 96)),
    (range(6, 10), (96, 146, 206), (250, 212, 170)),
    (range(10, 17), (38, 108, 198), (176, 214, 242)),
    (range(17, 21), (64, 66, 128), (250, 156, 92)),
    (range(21, 24), (12, 18, 44), (44, 56, 96)),
)


@dataclass(frozen=True)
class Shot:
    """One photo of a trip: where (WGS 84 degrees, metres) and when (aware) it was taken."""

    latitude: float | None
    longitude: float | None
    taken_at: datetime | None
    label: str
    altitude: float | None = None


def make_photo(shot: Shot, *, size: tuple[int, int] = (640, 480), include_offset: bool = True,
               include_gps_time: bool = True, seed: int = 0) -> bytes:
    """A JPEG of a generated landscape captioned with ``shot.label``, tagged with EXIF.

    Tags: Make "Waypost", Model "Demo Camera"; when ``taken_at`` is set, DateTimeOriginal
    (its own wall clock), SubSecTimeOriginal, and OffsetTimeOriginal unless
    ``include_offset`` is false; when ``latitude`` is set, a GPS block with position,
    altitude if given and (with ``taken_at``, unless ``include_gps_time`` is false) UTC date
    and time to 1/100 s. The same
    arguments give the same bytes. Raises ValueError for a naive ``taken_at``.
    """
    if shot.taken_at is not None and shot.taken_at.utcoffset() is None:
        raise ValueError("Shot.taken_at must be timezone-aware")
    picture = _landscape(size, shot, random.Random(f"{seed}:{shot.label}"))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=88, exif=_exif_for(shot, include_offset, include_gps_time).tobytes())
    return buffer.getvalue()


def _landscape(size: tuple[int, int], shot: Shot, rng: random.Random) -> Image.Image:
    hour = shot.taken_at.hour if shot.taken_at else 12
    picture = _sky(size, hour)
    draw = ImageDraw.Draw(picture)
    _draw_sun(draw, size, hour)
    for layer, colour in enumerate(_HILL_COLOURS):
        draw.polygon(_ridge(size, layer, rng), fill=colour)
    _draw_caption(picture, shot)
    return picture


def _sky(size: tuple[int, int], hour: int) -> Image.Image:
    zenith, horizon = next((top, low) for hours, top, low in _SKIES if hour in hours)
    gradient = Image.linear_gradient("L").resize(size)
    return ImageOps.colorize(gradient, zenith, horizon)


def _draw_sun(draw: ImageDraw.ImageDraw, size: tuple[int, int], hour: int) -> None:
    width, height = size
    # The sun crosses the picture from 6:00 to 21:00 and is highest at midday.
    progress = min(max((hour - 6) / 15, 0.0), 1.0)
    x = width * (0.1 + 0.8 * progress)
    y = height * (0.55 - 0.4 * (1 - abs(2 * progress - 1)))
    radius = min(size) / 14
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 236, 180))


def _ridge(size: tuple[int, int], layer: int, rng: random.Random) -> list[tuple[float, float]]:
    """A hill outline closed along the bottom edge; nearer layers sit lower."""
    width, height = size
    level = height * (0.55 + 0.12 * layer)
    points, y = [], level
    for step in range(13):
        y = min(max(y + rng.uniform(-1, 1) * height * 0.05, height * 0.35), height * 0.95)
        points.append((width * step / 12, y))
    return [(0, height), *points, (width, height)]


def _draw_caption(picture: Image.Image, shot: Shot) -> None:
    width, height = picture.size
    font = ImageFont.load_default(size=max(10, height // 20))
    band = (0, height - height // 7, width, height)
    ImageDraw.Draw(picture).rectangle(band, fill=(24, 28, 36))
    when = shot.taken_at.strftime("  %H:%M") if shot.taken_at else ""
    caption = _ascii_only(shot.label) + when
    ImageDraw.Draw(picture).text((width // 30, band[1] + height // 28), caption, fill="white", font=font)


def _ascii_only(text: str) -> str:
    """ "Belém" as "Belem": Pillow's built-in font has glyphs for ASCII only."""
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def _exif_for(shot: Shot, include_offset: bool, include_gps_time: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[_Base.Make] = "Waypost"
    exif[_Base.Model] = "Demo Camera"
    if shot.taken_at is not None:
        _tag_capture_time(exif.get_ifd(ExifTags.IFD.Exif), shot.taken_at, include_offset)
    if shot.latitude is not None and shot.longitude is not None:
        position = (shot.latitude, shot.longitude, shot.altitude)
        _tag_position(exif.get_ifd(ExifTags.IFD.GPSInfo), position, shot.taken_at if include_gps_time else None)
    return exif


def _tag_capture_time(tags: dict[int, object], taken_at: datetime, include_offset: bool) -> None:
    tags[_Base.DateTimeOriginal] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    if taken_at.microsecond:
        tags[_Base.SubsecTimeOriginal] = f"{taken_at.microsecond:06d}".rstrip("0")
    if include_offset:
        tags[_Base.OffsetTimeOriginal] = _offset_text(taken_at.utcoffset() or timedelta())


def _offset_text(offset: timedelta) -> str:
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _tag_position(
    tags: dict[int, object],
    position: tuple[float, float, float | None],
    taken_at: datetime | None,
) -> None:
    latitude, longitude, altitude = position
    tags[_GPS.GPSVersionID] = b"\x02\x03\x00\x00"
    tags[_GPS.GPSLatitudeRef] = "N" if latitude >= 0 else "S"
    tags[_GPS.GPSLatitude] = _degrees_minutes_seconds(latitude)
    tags[_GPS.GPSLongitudeRef] = "E" if longitude >= 0 else "W"
    tags[_GPS.GPSLongitude] = _degrees_minutes_seconds(longitude)
    if altitude is not None:
        tags[_GPS.GPSAltitudeRef] = b"\x01" if altitude < 0 else b"\x00"
        tags[_GPS.GPSAltitude] = IFDRational(round(abs(altitude) * 100), 100)
    if taken_at is not None:
        utc = taken_at.astimezone(UTC)
        hundredths = utc.second * 100 + utc.microsecond // 10_000
        tags[_GPS.GPSTimeStamp] = (
            IFDRational(utc.hour),
            IFDRational(utc.minute),
            IFDRational(hundredths, 100),
        )
        tags[_GPS.GPSDateStamp] = utc.strftime("%Y:%m:%d")


def _degrees_minutes_seconds(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    # Whole integers all the way, so 59.99995 seconds cannot round up to an invalid 60.
    total = round(abs(value) * _TEN_THOUSANDTHS_PER_DEGREE)
    degrees, rest = divmod(total, _TEN_THOUSANDTHS_PER_DEGREE)
    minutes, seconds = divmod(rest, 60 * 10_000)
    return IFDRational(degrees), IFDRational(minutes), IFDRational(seconds, 10_000)


_LISBON_SUMMER = timezone(timedelta(hours=1), "WEST")


def _lisbon(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 7, 13, hour, minute, second, tzinfo=_LISBON_SUMMER)


DEMO_TRIP: tuple[Shot, ...] = (
    Shot(38.69158, -9.21597, _lisbon(9, 4, 12), "Torre de Belém", 4.0),
    Shot(38.69786, -9.20676, _lisbon(9, 41, 30), "Mosteiro dos Jerónimos", 12.0),
    Shot(38.71187, -9.13027, _lisbon(11, 8, 45), "Miradouro de Santa Luzia, Alfama", 74.0),
    Shot(38.71391, -9.13355, _lisbon(11, 52, 3), "Castelo de São Jorge", 98.0),
    Shot(38.78763, -9.39059, _lisbon(14, 21, 18), "Palácio da Pena, Sintra", 480.0),
    Shot(38.79628, -9.39599, _lisbon(15, 33, 40), "Quinta da Regaleira", 255.0),
    Shot(38.78048, -9.49893, _lisbon(17, 46, 9), "Cabo da Roca", 140.0),
    Shot(38.69256, -9.41899, _lisbon(20, 12, 27), "Cascais marina at sunset", 3.0),
)
"""One summer Saturday around Lisbon (WEST, UTC+01:00): Belém, Alfama, Sintra, the coast."""


# Display P3 (what iPhones tag their photos with): DCI-P3 primaries, D65 white, the sRGB
# tone curve. Colorants are the primaries' XYZ adapted to the ICC's D50 by Bradford, as in
# Apple's own profile; each column sums to the D50 white.
_D50 = (0.9642, 1.0, 0.8249)
_P3_COLORANTS = ((b"rXYZ", (0.5151, 0.2412, -0.0011)), (b"gXYZ", (0.2919, 0.6922, 0.0419)),
                 (b"bXYZ", (0.1572, 0.0666, 0.7841)))


def display_p3_profile() -> bytes:
    """A minimal ICC v2 display profile for Display P3, to tag sample photos as a phone does."""
    curve = [round(65535 * _srgb_to_linear(step / 1023)) for step in range(1024)]
    trc = b"curv\0\0\0\0" + struct.pack(f">I{len(curve)}H", len(curve), *curve)
    text = b"Display P3 (Waypost sample)\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(79)),
            (b"wtpt", _xyz_tag(_D50)), *((name, _xyz_tag(xyz)) for name, xyz in _P3_COLORANTS),
            (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + bytes.fromhex("02100000") + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + _xyz_tag(_D50)[8:] + bytes(48))
    return header + table + body


def _srgb_to_linear(value: float) -> float:
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def _xyz_tag(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(value * 65536) for value in xyz))
