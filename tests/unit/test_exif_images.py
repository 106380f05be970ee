"""EXIF reading and photo processing, against real camera files and generated ones.

The corpus in ``shared/corpus/exif`` holds photos from real cameras and phones (JPEG,
HEIC/HEIF, AVIF, WebP, PNG and a DNG), with the values Pillow and pillow-heif read from
them recorded in ``manifest.jsonl``; every file goes through the same table tests. Those
tests carry the ``corpus`` marker: without the corpus they are left out with a notice
(tests/conftest.py), and CI refuses to run without it. Every behaviour a corpus test checks
is also checked on files generated here, so a fresh clone still exercises each one; the
generated files also cover what the corpus lacks: every format's EXIF carrier, every
orientation, and HEIF/AVIF headers that declare enormous sizes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

from tests.conftest import CORPUS, corpus_dir
from waypost.apps.journeys import images
from waypost.apps.journeys.exif import PhotoMetadata, read_metadata, read_metadata_bytes
from waypost.apps.journeys.images import DAMAGED_MEDIA, ImageError, is_supported_image, process_photo
from waypost.apps.journeys.samples import DEMO_TRIP, Shot, display_p3_profile, make_photo
from waypost.errors import PermanentError

# Every kind of file in the corpus; a DNG is a TIFF to Pillow (its first IFD is a preview).
CORPUS_SUFFIXES = {".jpg", ".png", ".webp", ".heic", ".heif", ".avif", ".dng"}
_Base = ExifTags.Base
_GPS = ExifTags.GPS
# How each of Waypost's own refusals begins (images.py); what follows a colon is the
# decoding library's detail, which these tests never match.
_OUR_REASONS = (
    "not a JPEG, PNG, WebP, TIFF, HEIF or AVIF image",
    "image header is corrupt: ",
    "image data is truncated or corrupt: ",
    DAMAGED_MEDIA,
    "image declares ",
    "image is too large to process: ",
)


def _exif_records() -> list[dict[str, Any]]:
    manifest = CORPUS / "manifest.jsonl"
    if not manifest.is_file():
        return []
    records = (json.loads(line) for line in manifest.read_text().splitlines() if line.strip())
    return [record for record in records if record["category"] == "exif"]


ALL_RECORDS = _exif_records()


def _cases(records: list[dict[str, Any]]) -> list[Any]:
    # An empty parameter list would make pytest skip; a sentinel case fails instead (left
    # out with the other corpus tests when there is no corpus at all).
    if not records:
        return [pytest.param(None, id="corpus-missing", marks=pytest.mark.corpus)]
    return [pytest.param(record, id=Path(record["file"]).name, marks=pytest.mark.corpus) for record in records]


def _corpus_bytes(record: dict[str, Any] | None) -> bytes:
    root = corpus_dir()  # fails, never skips, when the corpus is missing (a test without the marker)
    if record is None:
        pytest.fail(f"no EXIF records in {root / 'manifest.jsonl'}")
    return (root / record["file"]).read_bytes()


def _corpus_file(name: str) -> bytes:
    record = next((r for r in ALL_RECORDS if Path(r["file"]).name == name), None)
    return _corpus_bytes(record)


# --- the corpus itself ----------------------------------------------------------------


@pytest.mark.corpus
def test_corpus_is_present_and_complete() -> None:
    assert corpus_dir() == CORPUS
    assert len(ALL_RECORDS) >= 38
    missing = [r["file"] for r in ALL_RECORDS if not (CORPUS / r["file"]).is_file()]
    assert missing == []


@pytest.mark.corpus
def test_every_corpus_file_is_tested_and_in_a_format_waypost_opens() -> None:
    assert {Path(r["file"]).suffix.lower() for r in ALL_RECORDS} == CORPUS_SUFFIXES
    assert {r["pillow_ground_truth"]["format"] for r in ALL_RECORDS} <= set(images._FORMATS)
    on_disk = {path.name for path in (corpus_dir() / "exif").iterdir()}
    assert on_disk == {Path(r["file"]).name for r in ALL_RECORDS}


@pytest.mark.corpus
def test_corpus_includes_damaged_files() -> None:
    damaged = [r for r in ALL_RECORDS if any(w in r["desc"] for w in ("corrupt", "invalid"))]
    assert len(damaged) >= 2


# --- the corpus against its ground truth ----------------------------------------------


def _expected_text(value: str | None) -> str | None:
    return value.split("\0", 1)[0].strip() or None if value is not None else None


def _expected_offset(text: str | None) -> int | None:
    if text is None:
        return None
    offset = datetime.strptime(text, "%z").utcoffset()
    assert offset is not None
    return int(offset.total_seconds() // 60)


def _expected_gps_time(truth: dict[str, Any]) -> datetime | None:
    try:
        day = datetime.strptime(truth["gps_date"], "%Y:%m:%d").replace(tzinfo=UTC)
        hours, minutes, seconds = (float(part) for part in truth["gps_time_utc"].split(":"))
    except (KeyError, ValueError):
        return None
    return day + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _is_placeholder_fix(truth: dict[str, Any]) -> bool:
    return "placeholder" in truth.get("gps_note", "")


@pytest.mark.corpus
@pytest.mark.parametrize("record", _cases(ALL_RECORDS))
def test_corpus_camera_fields_match_ground_truth(record: dict[str, Any] | None) -> None:
    meta = read_metadata_bytes(_corpus_bytes(record))
    truth = record["pillow_ground_truth"]  # type: ignore[index]
    assert (meta.width, meta.height) == tuple(truth["size_px"])
    assert meta.make == _expected_text(truth.get("make"))
    assert meta.model == _expected_text(truth.get("model"))
    assert meta.orientation == truth.get("orientation")


@pytest.mark.corpus
@pytest.mark.parametrize("record", _cases(ALL_RECORDS))
def test_corpus_times_match_ground_truth(record: dict[str, Any] | None) -> None:
    meta = read_metadata_bytes(_corpus_bytes(record))
    truth = record["pillow_ground_truth"]  # type: ignore[index]
    if "DateTimeOriginal" in truth:
        assert meta.taken_local is not None
        assert meta.taken_local.strftime("%Y:%m:%d %H:%M:%S") == truth["DateTimeOriginal"]
    assert meta.utc_offset_minutes == _expected_offset(truth.get("OffsetTimeOriginal"))
    expected = _expected_gps_time(truth)
    if expected is None:
        assert meta.gps_time_utc is None
        if "gps_time_utc" in truth or "gps_date" in truth:
            assert any("GPS time" in problem for problem in meta.problems)
    else:
        assert meta.gps_time_utc is not None
        assert abs(meta.gps_time_utc - expected) < timedelta(milliseconds=1)


@pytest.mark.corpus
@pytest.mark.parametrize("record", _cases(ALL_RECORDS))
def test_corpus_position_matches_ground_truth(record: dict[str, Any] | None) -> None:
    meta = read_metadata_bytes(_corpus_bytes(record))
    truth = record["pillow_ground_truth"]  # type: ignore[index]
    if _is_placeholder_fix(truth) or "gps_lat" not in truth:
        assert (meta.latitude, meta.longitude, meta.altitude) == (None, None, None)
        if _is_placeholder_fix(truth):
            assert meta.problems, "a dropped placeholder position must be explained"
        return
    assert meta.latitude == pytest.approx(truth["gps_lat"], abs=1e-4)
    assert meta.longitude == pytest.approx(truth["gps_lon"], abs=1e-4)
    if "gps_alt_m" in truth:
        assert meta.altitude == pytest.approx(truth["gps_alt_m"], abs=1e-3)
    else:
        assert meta.altitude is None


@pytest.mark.corpus
@pytest.mark.parametrize("record", _cases(ALL_RECORDS))
def test_corpus_photos_process_or_fail_cleanly(record: dict[str, Any] | None) -> None:
    data = _corpus_bytes(record)
    try:
        photo = process_photo(data)
    except ImageError as err:
        assert str(err).startswith(_OUR_REASONS), err
        return
    truth = record["pillow_ground_truth"]  # type: ignore[index]
    width, height = truth["size_px"]
    # HEIF is reported turned and with orientation 1; a TIFF is reported turned already.
    if truth.get("orientation") in (5, 6, 7, 8) and truth["format"] != "TIFF":
        width, height = height, width
    scale = min(1.0, 1600 / max(width, height))
    assert photo.display_size[0] == pytest.approx(width * scale, abs=1)
    assert photo.display_size[1] == pytest.approx(height * scale, abs=1)
    _assert_clean_jpeg(photo.display, longest=1600)
    _assert_clean_jpeg(photo.thumbnail, longest=512)


# --- generated camera files: the same checks without the corpus -------------------------

_CAMERA_FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF"]


def _camera_exif() -> Image.Exif:
    """EXIF as a camera writes it, quirks included: C strings padded with NULs and spaces, a
    position south and east with seconds in hundredths, an altitude below sea level, and a
    GPS clock in UTC (the evening before the local date) with a fraction of a second."""
    exif = Image.Exif()
    exif[_Base.Make] = "Canon\0\0\0\0"
    exif[_Base.Model] = "Canon EOS 5D Mark IV   "
    exif.get_ifd(ExifTags.IFD.Exif).update({
        _Base.DateTimeOriginal: "2024:03:10 09:04:51",
        _Base.SubsecTimeOriginal: "25",
        _Base.OffsetTimeOriginal: "+11:00",
    })
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({
        _GPS.GPSLatitudeRef: "S",
        _GPS.GPSLatitude: _triple((33, 1), (51, 1), (2448, 100)),
        _GPS.GPSLongitudeRef: "E",
        _GPS.GPSLongitude: _triple((151, 1), (12, 1), (5544, 100)),
        _GPS.GPSAltitudeRef: 1,
        _GPS.GPSAltitude: IFDRational(125, 10),
        _GPS.GPSDateStamp: "2024:03:09",
        _GPS.GPSTimeStamp: _triple((22, 1), (4, 1), (5125, 100)),
    })
    return exif


def _noise(size: tuple[int, int], seed: str) -> Image.Image:
    """Random pixels: nothing for an encoder to squeeze, so the picture data is most of the file."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


@functools.cache
def _camera_file(image_format: str, size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    _noise(size, f"camera:{image_format}").save(buffer, image_format, exif=_camera_exif().tobytes(), quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", _CAMERA_FORMATS)
def test_camera_fields_position_and_times_are_read_as_the_camera_wrote_them(image_format: str) -> None:
    meta = read_metadata_bytes(_camera_file(image_format))
    assert (meta.width, meta.height) == (96, 64)
    assert (meta.make, meta.model) == ("Canon", "Canon EOS 5D Mark IV")
    assert meta.taken_local == datetime(2024, 3, 10, 9, 4, 51, 250_000)
    assert meta.utc_offset_minutes == 11 * 60
    assert meta.gps_time_utc == datetime(2024, 3, 9, 22, 4, 51, 250_000, tzinfo=UTC)
    assert meta.latitude == pytest.approx(-(33 + 51 / 60 + 24.48 / 3600), abs=1e-9)
    assert meta.longitude == pytest.approx(151 + 12 / 60 + 55.44 / 3600, abs=1e-9)
    assert meta.altitude == pytest.approx(-12.5)
    assert meta.problems == ()


def _cut(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


def _picture_noise(data: bytes) -> bytes:
    """Every seventh byte of the last two thirds flipped: the picture data, past the headers."""
    return _xored(data, len(data) // 3, step=7)


def _xored(data: bytes, start: int, step: int) -> bytes:
    damaged = bytearray(data)
    for position in range(start, len(damaged), step):
        damaged[position] ^= 0x5A
    return bytes(damaged)


def _looping_exif_jpeg() -> bytes:
    # IFD0's next-directory offset and its EXIF sub-IFD pointer both lead back to IFD0, as in
    # the broken files that made other EXIF readers loop forever.
    return _ifd0_jpeg([(_Base.Make, 2, 4, b"Cam\0"), (ExifTags.IFD.Exif, 4, 1, struct.pack("<I", 8))], next_ifd=8)


_DAMAGE = {
    "cut at a half": _cut(0.5),
    "cut at nine tenths": _cut(0.9),
    "noise in the picture": _picture_noise,
    "noise in the headers": lambda data: _xored(data, 12, step=23)[: len(data) // 3] + data[len(data) // 3 :],
}


@pytest.mark.parametrize("damage", _DAMAGE.values(), ids=_DAMAGE.keys())
@pytest.mark.parametrize("image_format", _CAMERA_FORMATS)
def test_damaged_camera_files_are_processed_or_refused_cleanly(
    image_format: str, damage: Callable[[bytes], bytes]
) -> None:
    _assert_processed_or_refused_cleanly(damage(_camera_file(image_format, size=(160, 120))), (160, 120))


def test_exif_directories_that_loop_are_read_once() -> None:
    meta = _assert_processed_or_refused_cleanly(_looping_exif_jpeg(), (16, 16))
    assert meta is not None and meta.make == "Cam"


def _assert_processed_or_refused_cleanly(data: bytes, size: tuple[int, int]) -> PhotoMetadata | None:
    """The corpus's damaged-file contract: refused with one of Waypost's reasons, or made
    into clean JPEGs of the right size. Returns the metadata of a processed photo."""
    try:
        photo = process_photo(data)
    except ImageError as err:
        assert isinstance(err, PermanentError)
        assert str(err).startswith(_OUR_REASONS), err
        return None
    assert photo.display_size == size
    _assert_clean_jpeg(photo.display, longest=1600)
    _assert_clean_jpeg(photo.thumbnail, longest=512)
    return photo.metadata


# --- generated photos: round trip -----------------------------------------------------


@pytest.mark.parametrize("shot", DEMO_TRIP, ids=lambda shot: shot.label)
def test_demo_photo_round_trips_place_and_time(shot: Shot) -> None:
    meta = read_metadata_bytes(make_photo(shot))
    assert shot.taken_at is not None
    assert meta.latitude == pytest.approx(shot.latitude, abs=1e-5)
    assert meta.longitude == pytest.approx(shot.longitude, abs=1e-5)
    assert meta.altitude == pytest.approx(shot.altitude, abs=0.01)
    assert meta.taken_local == shot.taken_at.replace(tzinfo=None)
    assert meta.utc_offset_minutes == 60
    assert meta.gps_time_utc == shot.taken_at
    assert (meta.make, meta.model, meta.problems) == ("Waypost", "Demo Camera", ())


def _in_format(jpeg: bytes, image_format: str) -> bytes:
    """The same picture and EXIF block, stored the way ``image_format`` stores EXIF."""
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        exif = image.info["exif"]
        buffer = io.BytesIO()
        if image_format.startswith("PNG "):
            image.save(buffer, "PNG", pnginfo=_raw_exif_profile(exif, compressed=image_format == "PNG zTXt"))
        else:
            image.save(buffer, image_format, exif=exif)
    return buffer.getvalue()


def _raw_exif_profile(exif: bytes, *, compressed: bool) -> PngImagePlugin.PngInfo:
    """EXIF as ImageMagick keeps it in PNG text: a blank line, "exif", the byte count,
    then the bytes as hex."""
    hexed = exif.hex()
    lines = "\n".join(hexed[at : at + 72] for at in range(0, len(hexed), 72))
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(exif):8d}\n{lines}\n", zip=compressed)
    return info


@pytest.mark.parametrize("image_format", ["PNG", "PNG tEXt", "PNG zTXt", "WEBP", "TIFF", "HEIF", "AVIF"])
def test_place_and_time_are_read_from_every_format(image_format: str) -> None:
    jpeg = make_photo(DEMO_TRIP[2], size=(96, 64))
    data = _in_format(jpeg, image_format)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == image_format.split()[0]
    assert read_metadata_bytes(data) == read_metadata_bytes(jpeg)
    photo = process_photo(data)
    assert photo.metadata.latitude == pytest.approx(DEMO_TRIP[2].latitude, abs=1e-5)
    assert (photo.metadata.utc_offset_minutes, photo.metadata.problems) == (60, ())


def test_demo_trip_is_one_summer_day_in_lisbon_in_order() -> None:
    times = [shot.taken_at for shot in DEMO_TRIP]
    assert 6 <= len(times) <= 10
    assert times == sorted(times)  # type: ignore[type-var]
    assert {t.date() for t in times if t} == {times[0].date()}  # type: ignore[union-attr]
    for shot in DEMO_TRIP:
        assert 38.6 < shot.latitude < 38.9 and -9.6 < shot.longitude < -9.1  # type: ignore[operator]


def test_photo_south_and_west_below_sea_level_with_subseconds() -> None:
    when = datetime(2023, 1, 2, 23, 59, 58, 250_000, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    meta = read_metadata_bytes(make_photo(Shot(-33.8568, -70.6483, when, "Low", altitude=-12.5)))
    assert (meta.latitude, meta.longitude) == pytest.approx((-33.8568, -70.6483), abs=1e-5)
    assert meta.altitude == pytest.approx(-12.5)
    assert meta.taken_local == datetime(2023, 1, 2, 23, 59, 58, 250_000)
    assert meta.utc_offset_minutes == -330
    assert meta.gps_time_utc == when


def test_photo_without_offset_place_or_time_leaves_them_out() -> None:
    when = datetime(2024, 7, 13, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    no_offset = read_metadata_bytes(make_photo(Shot(1.0, 2.0, when, "x"), include_offset=False))
    assert no_offset.utc_offset_minutes is None and no_offset.taken_local is not None
    nowhere = read_metadata_bytes(make_photo(Shot(None, None, when, "x")))
    assert (nowhere.latitude, nowhere.longitude, nowhere.gps_time_utc) == (None, None, None)
    timeless = read_metadata_bytes(make_photo(Shot(1.0, 2.0, None, "x")))
    assert (timeless.taken_local, timeless.gps_time_utc) == (None, None)
    assert timeless.latitude == pytest.approx(1.0)
    for meta in (no_offset, nowhere, timeless):
        assert meta.problems == ()


def test_make_photo_is_deterministic_and_refuses_naive_times() -> None:
    shot = DEMO_TRIP[0]
    assert make_photo(shot, seed=3) == make_photo(shot, seed=3)
    assert make_photo(shot, seed=3) != make_photo(shot, seed=4)
    with pytest.raises(ValueError, match="aware"):
        make_photo(Shot(1.0, 2.0, datetime(2024, 1, 1), "naive"))  # noqa: DTZ001


# --- malformed metadata ---------------------------------------------------------------


def _jpeg_with_exif(exif: Image.Exif, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def _exif(camera: dict[int, Any] | None = None, gps: dict[int, Any] | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[_Base.Make] = "Test"
    exif.get_ifd(ExifTags.IFD.Exif).update(camera or {})
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    return exif


def _triple(*parts: tuple[int, int]) -> tuple[IFDRational, ...]:
    return tuple(IFDRational(numerator, denominator) for numerator, denominator in parts)


_LISBON_LON = {_GPS.GPSLongitudeRef: "W", _GPS.GPSLongitude: _triple((9, 1), (8, 1), (0, 1))}
_BAD_METADATA = {
    "latitude zero denominators": (
        {},
        {_GPS.GPSLatitudeRef: "N", _GPS.GPSLatitude: _triple((38, 0), (0, 0), (0, 0))} | _LISBON_LON,
        "latitude",
        "GPS latitude",
    ),
    "latitude 123 degrees": (
        {},
        {_GPS.GPSLatitudeRef: "N", _GPS.GPSLatitude: _triple((123, 1), (0, 1), (0, 1))} | _LISBON_LON,
        "latitude",
        "GPS latitude out of range",
    ),
    "latitude without hemisphere": (
        {},
        {_GPS.GPSLatitude: _triple((38, 1), (42, 1), (0, 1))} | _LISBON_LON,
        "latitude",
        "hemisphere",
    ),
    "altitude zero denominator": (
        {},
        {
            _GPS.GPSLatitudeRef: "N",
            _GPS.GPSLatitude: _triple((38, 1), (42, 1), (0, 1)),
            _GPS.GPSAltitude: IFDRational(5, 0),
        }
        | _LISBON_LON,
        "altitude",
        "GPS altitude",
    ),
    "DateTimeOriginal garbage": (
        {_Base.DateTimeOriginal: "garbage"},
        {},
        "taken_local",
        "DateTimeOriginal unreadable: 'garbage'",
    ),
    "DateTimeOriginal February 30": (
        {_Base.DateTimeOriginal: "2024:02:30 10:00:00"},
        {},
        "taken_local",
        "DateTimeOriginal unreadable",
    ),
    "DateTimeOriginal in year 1": (
        {_Base.DateTimeOriginal: "0001:01:01 00:30:00", _Base.OffsetTimeOriginal: "+01:00"},
        {},
        "taken_local",
        "DateTimeOriginal unreadable",
    ),
    "DateTimeOriginal in year 9999": (
        {_Base.DateTimeOriginal: "9999:12:31 23:00:00"},
        {},
        "taken_local",
        "DateTimeOriginal unreadable",
    ),
    "offset out of range": (
        {_Base.DateTimeOriginal: "2024:07:13 10:00:00", _Base.OffsetTimeOriginal: "+25:00"},
        {},
        "utc_offset_minutes",
        "OffsetTimeOriginal unreadable: '+25:00'",
    ),
    "GPS hour 25": (
        {},
        {_GPS.GPSDateStamp: "2024:07:13", _GPS.GPSTimeStamp: _triple((25, 1), (0, 1), (0, 1))},
        "gps_time_utc",
        "GPS time unreadable",
    ),
}


@pytest.mark.parametrize(("camera", "gps", "dropped", "problem"), _BAD_METADATA.values(), ids=_BAD_METADATA.keys())
def test_malformed_values_are_dropped_with_a_reason(
    camera: dict[int, Any], gps: dict[int, Any], dropped: str, problem: str
) -> None:
    meta = read_metadata_bytes(_jpeg_with_exif(_exif(camera, gps)))
    assert getattr(meta, dropped) is None
    assert any(problem in reason for reason in meta.problems), meta.problems
    assert meta.make == "Test"


def test_unreadable_original_time_falls_back_to_digitized() -> None:
    camera = {
        _Base.DateTimeOriginal: "0000:00:00 00:00:00",
        _Base.DateTimeDigitized: "2024:07:13 10:11:12",
        _Base.SubsecTimeDigitized: "5",
    }
    meta = read_metadata_bytes(_jpeg_with_exif(_exif(camera)))
    assert meta.taken_local == datetime(2024, 7, 13, 10, 11, 12, 500_000)
    assert meta.problems == ("DateTimeOriginal unreadable: '0000:00:00 00:00:00'",)


def test_blank_time_and_null_island_are_not_data() -> None:
    gps = {
        _GPS.GPSLatitudeRef: "N",
        _GPS.GPSLatitude: _triple((0, 1), (0, 1), (0, 1)),
        _GPS.GPSLongitudeRef: "E",
        _GPS.GPSLongitude: _triple((0, 1), (0, 1), (0, 1)),
    }
    meta = read_metadata_bytes(_jpeg_with_exif(_exif({_Base.DateTimeOriginal: "    :  :  "}, gps)))
    assert (meta.taken_local, meta.latitude, meta.longitude) == (None, None, None)
    assert meta.problems == ("GPS position is 0,0 (a receiver placeholder, not a fix)",)


def test_orientation_out_of_range_is_dropped() -> None:
    exif = _exif()
    exif[_Base.Orientation] = 9
    meta = read_metadata_bytes(_jpeg_with_exif(exif))
    assert meta.orientation is None
    assert meta.problems == ("Orientation out of range: 9",)


def _exif_payload() -> bytes:
    shot = Shot(38.7, -9.1, datetime(2024, 7, 13, 9, tzinfo=timezone(timedelta(hours=1))), "x")
    with Image.open(io.BytesIO(make_photo(shot, size=(16, 16)))) as image:
        return image.info["exif"]


_PAYLOAD = _exif_payload()  # "Exif\0\0", then a big-endian TIFF header at 6 and IFD0 at 14
# Byte edits (position, new value) that keep the "Exif\0\0" header, and where to cut.
_EDITS = st.lists(st.tuples(st.integers(6, len(_PAYLOAD) - 1), st.integers(0, 255)), min_size=1, max_size=12)
_CUTS = st.integers(8, len(_PAYLOAD))
# Found by hypothesis: byte 19 is the type of IFD0's first entry, Make; 3 makes its eight
# ASCII bytes eight SHORTs, one value too many for Make. Pillow decodes a main-directory
# value only when it is first read and warns then ("Metadata Warning, tag 271 had too many
# entries"), an exception where warnings are errors; it escaped read_metadata. (Byte 8 is
# already 0; the cut at 88 leaves the sub-directories unreadable too.)
_MAKE_AS_EIGHT_SHORTS = {"edits": [(19, 3), (8, 0)], "cut": 88}


def _damaged_exif_jpeg(edits: list[tuple[int, int]], cut: int, **save_options: Any) -> bytes:
    payload = bytearray(_PAYLOAD)
    for position, value in edits:
        payload[position] = value
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", exif=bytes(payload[:cut]), **save_options)
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_EDITS, cut=_CUTS)
@example(**_MAKE_AS_EIGHT_SHORTS)
def test_damaged_exif_bytes_never_make_read_metadata_raise(edits: list[tuple[int, int]], cut: int) -> None:
    # A JFIF resolution keeps Pillow from parsing the EXIF while opening, so every byte
    # of the damaged EXIF reaches read_metadata.
    jpeg = _damaged_exif_jpeg(edits, cut, dpi=(72, 72))
    with Image.open(io.BytesIO(jpeg)) as image:
        meta = read_metadata(image)
    assert isinstance(meta, PhotoMetadata)
    assert (meta.width, meta.height) == (16, 16)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_EDITS, cut=_CUTS)
@example(**_MAKE_AS_EIGHT_SHORTS)
def test_damaged_exif_bytes_never_make_process_photo_fail_uncleanly(edits: list[tuple[int, int]], cut: int) -> None:
    # Damaged EXIF costs the values it damaged (the photo is processed without them) or,
    # where the JPEG itself cannot be read past it, the photo, refused with a reason.
    jpeg = _damaged_exif_jpeg(edits, cut)
    try:
        photo = process_photo(jpeg)
    except ImageError as err:
        assert str(err).startswith(_OUR_REASONS), err
        return
    assert photo.display_size == (16, 16)


def _ifd0_jpeg(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """A JPEG whose EXIF is one little-endian IFD0 of (tag, type, count, 4-byte value)
    entries, written byte by byte so a value can have a type or count Pillow never writes."""
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0") for tag, kind, count, value in entries
    ) + struct.pack("<I", next_ifd)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", exif=b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd)
    return buffer.getvalue()


@pytest.mark.parametrize("warnings_are", ["error", "ignore"])
def test_a_main_directory_value_of_the_wrong_count_costs_that_value_only(warnings_are: str) -> None:
    # Make as two SHORTs (type 3) where one ASCII string belongs; Orientation as it should be.
    # Pillow warns on reading such a value, so where warnings are errors (here, and under
    # `python -W error`) it raises; elsewhere it keeps the first number.
    jpeg = _ifd0_jpeg([(_Base.Make, 3, 2, struct.pack("<HH", 7, 9)), (_Base.Orientation, 3, 1, struct.pack("<H", 3))])
    with warnings.catch_warnings():
        warnings.simplefilter(warnings_are)
        meta = read_metadata_bytes(jpeg)
        photo = process_photo(jpeg)
    assert (meta.make, meta.orientation) == (None, 3)
    assert [problem.split(":")[0] for problem in meta.problems] == [
        "Make unreadable" if warnings_are == "error" else "Make is not text"
    ]
    assert photo.metadata == meta and photo.display_size == (16, 16)


# --- processing -----------------------------------------------------------------------


def _assert_clean_jpeg(data: bytes, *, longest: int) -> tuple[int, int]:
    assert b"Exif\0" not in data and b"http://ns.adobe.com/xap" not in data
    assert b"ICC_PROFILE" not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert max(image.size) <= longest
        assert dict(image.getexif()) == {}
        assert "comment" not in image.info
        image.load()
        return image.size


def test_process_photo_makes_display_and_thumbnail_without_metadata() -> None:
    data = make_photo(DEMO_TRIP[4], size=(2400, 1800))
    photo = process_photo(data)
    assert photo.display_size == (1600, 1200)
    assert _assert_clean_jpeg(photo.display, longest=1600) == (1600, 1200)
    assert _assert_clean_jpeg(photo.thumbnail, longest=512) == (512, 384)
    assert photo.sha256 == hashlib.sha256(data).hexdigest()
    assert photo.metadata.latitude == pytest.approx(DEMO_TRIP[4].latitude, abs=1e-5)
    assert (photo.metadata.width, photo.metadata.height) == (2400, 1800)


def test_a_photo_comes_out_the_same_with_or_without_the_helper_thread() -> None:
    """The digest and the thumbnail are made beside the decode and the display encode only when a
    core is free (``spare_core``); the image pool's busy workers make them one after another."""
    data = make_photo(DEMO_TRIP[2], size=(2400, 1800))
    beside, after = process_photo(data, spare_core=True), process_photo(data, spare_core=False)
    assert beside == after
    assert after.sha256 == hashlib.sha256(data).hexdigest()
    assert _assert_clean_jpeg(after.thumbnail, longest=512) == (512, 384)


@pytest.mark.parametrize("mode", ["RGB", "RGBX", "L"])
def test_encode_jpeg_writes_through_a_descriptor_the_bytes_pillow_writes_to_memory(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_jpeg writes to an anonymous memory file so that Pillow's encoder lets go of the
    GIL; the bytes are those of a save to a BytesIO, and where there is no such file (not
    Linux, out of descriptors) it falls back to one."""
    picture = Image.open(io.BytesIO(make_photo(DEMO_TRIP[1], size=(640, 480)))).convert(mode)
    picture.info = {"comment": b"Jane Doe"}
    in_memory, bare = io.BytesIO(), picture.copy()
    bare.info = {}
    bare.save(in_memory, "JPEG", quality=82, optimize=False, exif=b"")
    written: list[int] = []
    real_fdopen = images.os.fdopen

    def fdopen(fd: int, *args: Any) -> Any:
        written.append(fd)
        return real_fdopen(fd, *args)

    monkeypatch.setattr(images.os, "fdopen", fdopen)
    encoded = images.encode_jpeg(picture.copy(), quality=82, optimize=False)
    assert len(written) == 1 and encoded == in_memory.getvalue()
    assert b"Jane Doe" not in encoded
    with Image.open(io.BytesIO(encoded)) as decoded:
        assert (decoded.format, decoded.mode, decoded.size) == ("JPEG", "L" if mode == "L" else "RGB", (640, 480))
        assert dict(decoded.getexif()) == {}

    def no_memfd(*_: Any) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(images.os, "memfd_create", no_memfd)
    assert images.encode_jpeg(picture.copy(), quality=82, optimize=False) == encoded
    assert len(written) == 1  # the fallback wrote to memory


_SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
_PRIVATE_SEGMENTS = {
    "comment": {"comment": b"owner: Jane Doe, serial 1234"},
    "icc and xmp": {
        "icc_profile": _SRGB_PROFILE,
        "xmp": b'<x:xmpmeta xmlns:x="adobe:ns:meta/">Jane Doe</x:xmpmeta>',
    },
}


@pytest.mark.parametrize("segments", _PRIVATE_SEGMENTS.values(), ids=_PRIVATE_SEGMENTS.keys())
def test_process_photo_drops_comment_icc_and_xmp(segments: dict[str, bytes]) -> None:
    source = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(source, "JPEG", **segments)
    assert b"Jane Doe" in source.getvalue() or b"ICC_PROFILE" in source.getvalue()
    photo = process_photo(source.getvalue())
    for output in (photo.display, photo.thumbnail):
        _assert_clean_jpeg(output, longest=64)
        assert b"Jane Doe" not in output


def _icc_swapping_red_and_green() -> bytes:
    """A minimal ICC v2 RGB profile whose red primary is sRGB's green and vice versa."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    linear = b"curv\0\0\0\0" + struct.pack(">IH", 1, 256) + b"\0\0"  # gamma 1.0
    description = b"desc\0\0\0\0" + struct.pack(">I", 5) + b"swap\0" + bytes(79)
    tags = [
        (b"desc", description),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", linear),
        (b"gTRC", linear),
        (b"bTRC", linear),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes.fromhex("02100000")
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + xyz(0.9642, 1.0, 0.8249)[8:]
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


def test_process_photo_converts_embedded_profile_to_srgb() -> None:
    source = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(source, "PNG", icc_profile=_icc_swapping_red_and_green())
    photo = process_photo(source.getvalue())
    with Image.open(io.BytesIO(photo.display)) as display:
        red, green, blue = display.getpixel((16, 16))
    assert green > 200 and red < 60 and blue < 60, (red, green, blue)


def test_process_photo_ignores_an_unusable_profile() -> None:
    source = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(source, "PNG", icc_profile=b"not a profile")
    with Image.open(io.BytesIO(process_photo(source.getvalue()).display)) as display:
        assert display.getpixel((16, 16)) == pytest.approx((255, 0, 0), abs=8)


def test_a_camera_jpeg_is_converted_from_its_profile_exactly_once() -> None:
    # libvips converts a JPEG's colours while it scales; a second conversion by ImageCms
    # would swap red and green back.
    source = io.BytesIO()
    Image.new("RGB", (400, 300), (255, 0, 0)).save(source, "JPEG", quality=95,
                                                   icc_profile=_icc_swapping_red_and_green())
    photo = process_photo(source.getvalue(), display_px=200, thumb_px=50)
    for output in (photo.display, photo.thumbnail):
        with Image.open(io.BytesIO(output)) as published:
            red, green, blue = published.getpixel((published.width // 2, published.height // 2))
        assert green > 200 and red < 60 and blue < 60, (red, green, blue)


def test_a_camera_jpeg_with_an_unusable_profile_is_published_unconverted() -> None:
    source = io.BytesIO()
    Image.new("RGB", (400, 300), (255, 0, 0)).save(source, "JPEG", quality=95, icc_profile=b"not a profile")
    with Image.open(io.BytesIO(process_photo(source.getvalue(), display_px=200).display)) as display:
        assert display.getpixel((100, 75)) == pytest.approx((255, 0, 0), abs=8)


def test_libvips_converts_display_p3_as_imagecms_does() -> None:
    """The colours libvips gives a scaled Display P3 JPEG are ImageCms's, to a level or two."""
    from waypost.apps.journeys.jpegscale import display_from_jpeg

    ramp = Image.linear_gradient("L").resize((384, 256))
    picture = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90).resize((384, 256)),
                                  Image.new("L", (384, 256), 90)))
    source = io.BytesIO()
    picture.save(source, "JPEG", quality=95, icc_profile=display_p3_profile())
    unconverted = display_from_jpeg(source.getvalue(), (384, 256), (192, 128))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile()))
    expected = ImageCms.profileToProfile(unconverted, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    converted = display_from_jpeg(source.getvalue(), (384, 256), (192, 128), icc_profile=display_p3_profile())
    assert converted.size == expected.size and converted.mode == "RGB"
    differences = [abs(a - b) for a, b in zip(converted.tobytes(), expected.tobytes(), strict=True)]
    assert max(differences) <= 2
    assert converted.tobytes() != unconverted.tobytes()  # P3 numbers differ from their sRGB ones


def test_only_srgb_counts_as_srgb() -> None:
    assert images._is_srgb(_SRGB_PROFILE)
    assert not images._is_srgb(display_p3_profile())
    assert not images._is_srgb(_icc_swapping_red_and_green())
    assert not images._is_srgb(b"not a profile")


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_a_photo_tagged_srgb_is_not_converted(image_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cameras embed their own copy of sRGB; converting from it to sRGB would only cost time.
    scaled_with: list[bytes | None] = []
    real_scale = images.resize_pixels  # what resizes a JPEG Pillow decoded (display_from_jpeg: one with a profile)

    def recording_scale(*args: Any, icc_profile: bytes | None = None) -> Image.Image:
        scaled_with.append(icc_profile)
        return real_scale(*args, icc_profile=icc_profile)

    def no_conversion(image: Image.Image, profile: bytes) -> Image.Image | None:
        raise AssertionError("an sRGB photo was converted to sRGB")

    monkeypatch.setattr(images, "resize_pixels", recording_scale)
    monkeypatch.setattr(images, "_convert_with_profile", no_conversion)
    picture = Image.new("RGB", (400, 300), (200, 120, 40))
    tagged, untagged = io.BytesIO(), io.BytesIO()
    picture.save(tagged, image_format, icc_profile=_SRGB_PROFILE)
    picture.save(untagged, image_format)
    published = [process_photo(data.getvalue(), display_px=200).display for data in (tagged, untagged)]
    assert published[0] == published[1]
    assert scaled_with == ([None, None] if image_format == "JPEG" else [])


def test_libvips_keeps_no_photo_in_its_operation_cache() -> None:
    """Every photo is decoded once: cached operations would only hold on to their bytes."""
    import pyvips

    process_photo(make_photo(DEMO_TRIP[5], size=(800, 600)))
    assert pyvips.cache_get_max() == 0 and pyvips.cache_get_size() == 0


# Display P3 -> linear sRGB (both D65): the P3 primaries' XYZ through the inverse sRGB matrix.
_P3_TO_SRGB = ((1.2249, -0.2247, 0.0), (-0.0420, 1.0419, 0.0), (-0.0197, -0.0786, 1.0979))
_P3_RED = (220, 60, 50)  # saturated, yet inside sRGB, so a right conversion is not clipped


def _p3_as_srgb(colour: tuple[int, int, int]) -> tuple[float, ...]:
    """What a colour-managed viewer shows for a Display P3 pixel, worked out without LittleCMS."""
    linear = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in (c / 255 for c in colour)]
    mixed = [min(1.0, max(0.0, sum(w * v for w, v in zip(row, linear, strict=True)))) for row in _P3_TO_SRGB]
    return tuple(255 * (12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055) for v in mixed)


@pytest.mark.parametrize(("image_format", "size"), [("JPEG", (1200, 900)), ("PNG", (120, 90))])
def test_a_display_p3_red_stays_the_red_the_camera_saw(image_format: str, size: tuple[int, int]) -> None:
    # The JPEG is scaled on decode (libvips), the PNG by Pillow: both honour the profile.
    source = io.BytesIO()
    Image.new("RGB", size, _P3_RED).save(source, image_format, icc_profile=display_p3_profile())
    photo = process_photo(source.getvalue(), display_px=500, thumb_px=60)
    expected = _p3_as_srgb(_P3_RED)  # about (239, 35, 36): redder than the P3 numbers read as sRGB
    for output in (photo.display, photo.thumbnail):
        _assert_clean_jpeg(output, longest=500)
        with Image.open(io.BytesIO(output)) as published:
            pixel = published.getpixel((published.width // 2, published.height // 2))
        assert pixel == pytest.approx(expected, abs=6), (pixel, expected)
        # Ignoring the profile would publish the P3 numbers as they are: washed out.
        assert pixel[0] - _P3_RED[0] > 12 and _P3_RED[1] - pixel[1] > 15, pixel


def test_process_photo_opens_once_and_decodes_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Image.Image] = []
    decoded_sizes: list[tuple[int, int]] = []
    real_open, real_to_srgb = Image.open, images._to_srgb

    def counting_open(*args: Any, **kwargs: Any) -> Image.Image:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    def recording_to_srgb(image: Image.Image) -> Image.Image:
        decoded_sizes.append(image.size)
        return real_to_srgb(image)

    data = make_photo(DEMO_TRIP[5], size=(4000, 3000))
    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(images, "_to_srgb", recording_to_srgb)
    photo = process_photo(data, display_px=500, thumb_px=100)
    assert len(opened) == 1
    assert decoded_sizes == [(500, 375)]  # JPEG DCT scaling at 1/8, not 12 MP of pixels
    assert photo.display_size == (500, 375)
    assert (photo.metadata.width, photo.metadata.height) == (4000, 3000)


def test_process_photo_never_enlarges() -> None:
    photo = process_photo(make_photo(DEMO_TRIP[0], size=(300, 200)), thumb_px=256)
    assert photo.display_size == (300, 200)
    assert _assert_clean_jpeg(photo.thumbnail, longest=256) == (256, 171)


@pytest.mark.parametrize(
    ("name", "upright_size"),
    [
        ("exifpy_jpg_orientation_landscape_3.jpg", (600, 450)),
        ("exifpy_jpg_orientation_portrait_5.jpg", (450, 600)),
        ("exifpy_jpg_orientation_landscape_6.jpg", (600, 450)),
        ("exifpy_jpg_orientation_landscape_8.jpg", (600, 450)),
    ],
)
@pytest.mark.corpus
def test_process_photo_applies_corpus_orientation(name: str, upright_size: tuple[int, int]) -> None:
    photo = process_photo(_corpus_file(name))
    assert photo.display_size == upright_size
    assert _assert_clean_jpeg(photo.display, longest=1600) == upright_size


# Where the stored picture's top-left and top-right corners must end up once upright, for
# each EXIF orientation (EXIF 2.31 §4.6.4: the value says where the stored first row and
# first column are seen): T/B top or bottom, L/R left or right.
_CORNERS_UPRIGHT = {
    1: ("TL", "TR"), 2: ("TR", "TL"), 3: ("BR", "BL"), 4: ("BL", "BR"),
    5: ("TL", "BL"), 6: ("TR", "BR"), 7: ("BR", "TR"), 8: ("BL", "TL"),
}


@pytest.mark.parametrize("orientation", _CORNERS_UPRIGHT)
@pytest.mark.parametrize("image_format", _CAMERA_FORMATS)
def test_process_photo_turns_every_exif_orientation_upright(image_format: str, orientation: int) -> None:
    # Red top-left and green top-right corners on blue, stored 120x80; orientations 5 to 8
    # are seen portrait. HEIF and AVIF writers keep the value as rotation and mirror boxes.
    stored = Image.new("RGB", (120, 80), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 40, 40))
    stored.paste((0, 255, 0), (80, 0, 120, 40))
    exif = Image.Exif()
    exif[_Base.Orientation] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, image_format, exif=exif.tobytes(), quality=95)
    photo = process_photo(buffer.getvalue())
    upright_size = (120, 80) if orientation <= 4 else (80, 120)
    assert photo.display_size == upright_size
    assert _assert_clean_jpeg(photo.display, longest=1600) == upright_size
    red_corner, green_corner = _CORNERS_UPRIGHT[orientation]
    with Image.open(io.BytesIO(photo.display)) as upright:
        assert _corner_colour(upright, red_corner) == pytest.approx((255, 0, 0), abs=60)
        assert _corner_colour(upright, green_corner) == pytest.approx((0, 255, 0), abs=60)


def _corner_colour(image: Image.Image, corner: str) -> tuple[int, int, int]:
    x = 10 if corner[1] == "L" else image.width - 11
    y = 10 if corner[0] == "T" else image.height - 11
    return image.getpixel((x, y))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF"])
def test_orientation_6_turns_the_stored_left_edge_to_the_top(image_format: str) -> None:
    # HEIF and AVIF writers turn EXIF orientation 6 into the container's rotation and
    # mirror boxes; either way the published picture must be turned exactly once.
    stored = Image.new("RGB", (200, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # left half red
    exif = Image.Exif()
    exif[_Base.Orientation] = 6
    buffer = io.BytesIO()
    stored.save(buffer, image_format, exif=exif.tobytes(), quality=95)
    photo = process_photo(buffer.getvalue())
    assert photo.display_size == (100, 200)
    with Image.open(io.BytesIO(photo.display)) as upright:
        top, bottom = upright.getpixel((50, 25)), upright.getpixel((50, 175))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


@pytest.mark.corpus
def test_heic_turned_by_its_container_is_not_turned_again_by_its_exif() -> None:
    # The iPhone stores the sensor's landscape frame with an irot box and EXIF
    # orientation 6; pillow-heif applies the irot and reports orientation 1.
    data = _corpus_file("exifpy_heic_mobile_iphone_13_pro_max.heic")
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["original_orientation"] == 6  # the file does say "rotate"
    photo = process_photo(data)
    assert photo.metadata.orientation == 1
    assert (photo.metadata.width, photo.metadata.height) == (3024, 4032)
    assert photo.display_size == (1200, 1600)  # portrait, as the phone showed it
    assert photo.metadata.utc_offset_minutes == 60


def test_generated_heic_turned_by_its_container_is_not_turned_again_by_its_exif() -> None:
    # pillow-heif writes what the iPhone writes for a photo held upright: the landscape frame
    # with an irot box, and EXIF orientation 6 kept in the Exif item.
    stored = Image.new("RGB", (200, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # left half red: the top once upright
    exif = Image.Exif()
    exif[_Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.Exif).update({_Base.DateTimeOriginal: "2024:07:13 10:00:00",
                                            _Base.OffsetTimeOriginal: "+01:00"})
    buffer = io.BytesIO()
    stored.save(buffer, "HEIF", exif=exif.tobytes(), quality=95)
    data = buffer.getvalue()
    assert b"irot" in data[: data.find(b"mdat")]
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["original_orientation"] == 6  # the file does say "rotate"
    photo = process_photo(data)
    assert photo.metadata.orientation == 1
    assert (photo.metadata.width, photo.metadata.height) == (100, 200)
    assert photo.display_size == (100, 200)  # portrait, turned once
    with Image.open(io.BytesIO(photo.display)) as upright:
        assert upright.getpixel((50, 25)) == pytest.approx((255, 0, 0), abs=60)
        assert upright.getpixel((50, 175)) == pytest.approx((0, 0, 255), abs=60)
    assert photo.metadata.utc_offset_minutes == 60


def _encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0, 200, 30, 30])
    image.info["transparency"] = 0
    return image


_MODES = {
    "RGBA transparent": (Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG", (255, 255, 255)),
    "LA transparent": (Image.new("LA", (40, 30), (0, 0)), "PNG", (255, 255, 255)),
    "P transparent": (_palette_with_transparency(), "PNG", (255, 255, 255)),
    "L": (Image.new("L", (40, 30), 100), "PNG", (100, 100, 100)),
    "I;16": (Image.new("I;16", (40, 30), 40_000), "PNG", (156, 156, 156)),
    "CMYK": (Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
    "RGB webp": (Image.new("RGB", (40, 30), (20, 160, 60)), "WEBP", (20, 160, 60)),
    "RGB tiff": (Image.new("RGB", (40, 30), (20, 160, 60)), "TIFF", (20, 160, 60)),
}


@pytest.mark.parametrize(("image", "image_format", "colour"), _MODES.values(), ids=_MODES.keys())
def test_process_photo_converts_every_mode_to_rgb(
    image: Image.Image, image_format: str, colour: tuple[int, int, int]
) -> None:
    photo = process_photo(_encoded(image, image_format))
    assert photo.display_size == (40, 30)
    with Image.open(io.BytesIO(photo.display)) as display:
        pixel = display.convert("RGB").getpixel((20, 15))
    assert pixel == pytest.approx(colour, abs=8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (make_photo(DEMO_TRIP[1])[:6000], "^image data is truncated or corrupt: "),
        (b"", "^not a JPEG, PNG, WebP, TIFF, HEIF or AVIF image$"),
        (b"GIF89a" + b"\0" * 64, "^not a JPEG, PNG, WebP, TIFF, HEIF or AVIF image$"),
        (b"\xff\xd8\xff\xe0" + b"\x13" * 300, "^image header is corrupt: "),
    ],
    ids=["truncated jpeg", "empty", "gif", "garbage after jpeg marker"],
)
def test_damaged_or_foreign_images_raise_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as caught:
        process_photo(data)
    assert isinstance(caught.value, PermanentError)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


_BOMB_PROBE = """
import resource, sys, time
from waypost.apps.journeys.images import ImageError, process_photo
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    process_photo(data)
    outcome = "processed"
except ImageError as err:
    outcome = "ImageError: " + str(err)
elapsed = time.perf_counter() - start
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(f"{grown_kb} {elapsed:.3f} {outcome}")
"""


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (12_000, 9_000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(width, height))
    assert bomb.stat().st_size < 200
    outcome = _probe_bomb(bomb)
    assert outcome.startswith("ImageError: image"), outcome


def _probe_bomb(path: Path) -> str:
    """``process_photo`` on ``path`` in a fresh interpreter with default warning filters, as
    in production, so the peak RSS measured is this call's alone and the size check (not a
    warning) refuses. Asserts memory stayed bounded (how long it took is printed, for a person
reading a failure, never asserted); returns the outcome line."""
    result = subprocess.run([sys.executable, "-c", _BOMB_PROBE, str(path)], capture_output=True, text=True,
                            timeout=60, check=True)
    grown_kb, elapsed, outcome = result.stdout.split(" ", 2)
    # not decoded: 100,000² pixels would take gigabytes
    assert int(grown_kb) < 200 * 1024, f"grew {grown_kb} KB in {elapsed} s: {outcome}"
    return outcome.strip()


def test_size_limit_holds_even_with_pillow_limit_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match="limit is 100000000"):
        process_photo(_png_declaring(100_000, 100_000))


def _small_photo(image_format: str, size: tuple[int, int] = (64, 64)) -> bytes:
    # 64x64 needs no clean-aperture crop, so the "ispe" size is the picture's size.
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 160, 90)).save(buffer, image_format, quality=60)
    return buffer.getvalue()


def _declaring(data: bytes, width: int, height: int) -> bytes:
    """A HEIF or AVIF file whose image spatial extents properties claim another size.

    Each "ispe" box (ISO/IEC 23008-12 §6.5.3.1) is a 32-bit size (20), the type, a 32-bit
    version-and-flags word (0), then the 32-bit width and height, all big-endian.
    """
    patched = bytearray(data)
    at = patched.find(b"ispe")
    assert at >= 4, "no ispe box"
    while at >= 4:
        assert struct.unpack_from(">I", patched, at - 4)[0] == 20
        struct.pack_into(">III", patched, at + 4, 0, width, height)
        at = patched.find(b"ispe", at + 16)
    return bytes(patched)


_MEDIA_BOMBS = [
    pytest.param(image_format, width, height, id=f"{image_format}-{width}x{height}")
    for image_format in ("HEIF", "AVIF")
    for width, height in ((100_000, 100_000), (12_000, 9_000), (0xFFFF_FFFF, 0xFFFF_FFFF))
]


@pytest.mark.parametrize(("image_format", "width", "height"), _MEDIA_BOMBS)
def test_heif_and_avif_bombs_are_refused_before_decoding(
    tmp_path: Path, image_format: str, width: int, height: int
) -> None:
    bomb = tmp_path / "bomb"
    bomb.write_bytes(_declaring(_small_photo(image_format), width, height))
    assert bomb.stat().st_size < 2000
    outcome = _probe_bomb(bomb)
    assert outcome == f"ImageError: image declares {width}x{height} pixels; the limit is 100000000"


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_heif_and_avif_declared_size_is_checked_before_the_decoder_sees_the_file(
    monkeypatch: pytest.MonkeyPatch, image_format: str
) -> None:
    def no_decoder(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the decoder was reached")

    bomb = _declaring(_small_photo(image_format), 12_000, 9_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(Image, "open", no_decoder)
    with pytest.raises(ImageError, match="12000x9000 pixels"):
        process_photo(bomb)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_heif_and_avif_within_the_limit_still_decode(image_format: str) -> None:
    data = _small_photo(image_format, size=(64, 48))
    assert _declaring(_small_photo(image_format), 64, 64) == _small_photo(image_format)
    photo = process_photo(data)
    assert photo.display_size == (64, 48)
    with Image.open(io.BytesIO(photo.display)) as display:
        assert display.getpixel((32, 24)) == pytest.approx((30, 160, 90), abs=12)


@pytest.mark.corpus
def test_avif_with_a_generic_brand_is_decoded_as_avif() -> None:
    # "mif1" as the major brand is legal for AVIF; libheif (no AV1 decoder here) would
    # claim such a file and fail, so Pillow's AVIF plugin must be asked first.
    data = bytearray(_corpus_file("exifpy_avif_mountains.avif"))
    assert data[8:12] == b"avif"
    data[8:12] = b"mif1"
    photo = process_photo(bytes(data))
    assert photo.display_size == (1600, 900)
    assert photo.metadata.model == "E-PL8"


def test_generated_avif_with_a_generic_brand_is_decoded_as_avif() -> None:
    exif = Image.Exif()
    exif[_Base.Model] = "E-PL8"
    buffer = io.BytesIO()
    _noise((320, 180), "generic brand").save(buffer, "AVIF", exif=exif.tobytes(), quality=60)
    data = bytearray(buffer.getvalue())
    assert data[4:12] == b"ftypavif"
    data[8:12] = b"mif1"
    photo = process_photo(bytes(data))
    assert photo.display_size == (320, 180)
    assert photo.metadata.model == "E-PL8"


@functools.cache
def _media_noise(image_format: str) -> bytes:
    buffer = io.BytesIO()
    _noise((256, 256), f"media:{image_format}").save(buffer, image_format, quality=90)
    return buffer.getvalue()


def _coded_picture_flipped(data: bytes) -> bytes:
    """Every seventh byte of the coded picture flipped, from just past the "mdat" box header."""
    return _xored(data, data.find(b"mdat") + 8, step=7)


def _noisy(data: bytes, start: int) -> bytes:
    return _xored(data, start, step=97)


# Waypost's reason, whichever stage of libheif or libavif gives up; their words may follow.
_DAMAGED = f"^{DAMAGED_MEDIA}"
_BROKEN_MEDIA = [
    pytest.param(lambda: _cut(0.5)(_media_noise("HEIF")), _DAMAGED, id="heic cut in half"),
    pytest.param(lambda: _cut(0.5)(_media_noise("AVIF")), _DAMAGED, id="avif cut in half"),
    pytest.param(lambda: _coded_picture_flipped(_media_noise("HEIF")), _DAMAGED, id="heic noise in the picture"),
    pytest.param(lambda: _coded_picture_flipped(_media_noise("AVIF")), _DAMAGED, id="avif noise in the picture"),
    pytest.param(lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", f"{_DAMAGED}$", id="ftyp and nothing else"),
    pytest.param(lambda: _declaring(_small_photo("HEIF"), 0, 0),
                 "^image declares 0x0 pixels; the limit is 100000000$", id="empty ispe"),
    pytest.param(lambda: _corpus_file("exifpy_heic_spring_1440x960.heic")[:25_000], _DAMAGED,
                 id="corpus heic cut in half", marks=pytest.mark.corpus),
    pytest.param(lambda: _corpus_file("exifpy_avif_mountains.avif")[:30_000], _DAMAGED,
                 id="corpus avif cut short", marks=pytest.mark.corpus),
    pytest.param(lambda: _noisy(_corpus_file("exifpy_avif_mountains.avif"), 1200), _DAMAGED,
                 id="corpus avif noise in the picture", marks=pytest.mark.corpus),
]


@pytest.mark.parametrize(("make", "reason"), _BROKEN_MEDIA)
def test_broken_heif_and_avif_raise_image_error_with_a_reason(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(ImageError, match=reason) as caught:
        process_photo(make())
    assert isinstance(caught.value, PermanentError)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_heif_and_avif_headers_never_fail_uncleanly(data: st.DataObject) -> None:
    image_format = data.draw(st.sampled_from(["HEIF", "AVIF"]))
    damaged = bytearray(_small_photo(image_format))
    header_end = damaged.find(b"mdat")
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.integers(8, header_end))] = data.draw(st.integers(0, 255))
    try:
        photo = process_photo(bytes(damaged))
    except ImageError as err:
        assert str(err).startswith(_OUR_REASONS), err
        return
    assert max(photo.display_size) <= 1600


def test_own_size_limit_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 640 * 480 - 1)
    with pytest.raises(ImageError, match="640x480"):
        process_photo(make_photo(DEMO_TRIP[2]))


def test_process_photo_leaves_pillow_global_limit_alone() -> None:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    process_photo(make_photo(DEMO_TRIP[3]))
    with pytest.raises(ImageError):
        process_photo(_png_declaring(100_000, 100_000))
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


def test_bad_sizes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="positive"):
        process_photo(make_photo(DEMO_TRIP[0]), thumb_px=0)


# --- which attachments are photos -----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "filename", "supported"),
    [
        ("image/jpeg", None, True),
        ("IMAGE/JPEG; name=a.jpg", "a.jpg", True),
        ("image/pjpeg", "a.jpg", True),
        ("image/png", None, True),
        ("image/webp", "x", True),
        ("image/tiff", None, True),
        ("application/octet-stream", "IMG_0001.JPG", True),
        ("application/octet-stream", "C:\\Photos\\beach.jpeg", True),
        ("application/octet-stream", "scan.tif", True),
        ("application/octet-stream", "notes.pdf", False),
        ("application/octet-stream", None, False),
        ("image/heic", "IMG_0001.HEIC", True),
        ("image/heif", None, True),
        ("image/heic-sequence", "burst.heics", True),
        ("image/heif-sequence", None, True),
        ("image/avif", "a.avif", True),
        ("application/octet-stream", "IMG_0001.HEIC", True),
        ("application/octet-stream", "nokia.heif", True),
        ("application/octet-stream", "DSC0001.HIF", True),
        ("application/octet-stream", "photo.avif", True),
        ("application/octet-stream", "clip.mov", False),
        ("image/gif", "a.gif", False),
        ("video/quicktime", "IMG_0001.MOV", False),
        ("text/plain", "a.jpg", False),
        ("application/pdf", "a.png", False),
    ],
)
def test_is_supported_image(content_type: str, filename: str | None, supported: bool) -> None:
    assert is_supported_image(content_type, filename) is supported


@pytest.mark.corpus
def test_a_jpeg_libvips_stops_at_is_decoded_by_pillow_as_before() -> None:
    """exif-py's corrupted sample has a damaged restart marker: libvips stops there, libjpeg
    through Pillow only warns and decodes the photo, as Waypost did before libvips."""
    from waypost.apps.journeys.jpegscale import ScaleError, display_from_jpeg

    data = _corpus_file("exifpy_jpg_corrupted.jpg")
    with pytest.raises(ScaleError):
        display_from_jpeg(data, (3648, 2736), (1600, 1200))
    processed = process_photo(data)
    with Image.open(io.BytesIO(processed.display)) as display:
        assert display.size == (1600, 1200)


def test_libvips_resizes_pillows_pixels_in_place_as_it_would_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """resize_pixels reads Pillow's decoded pixels where Pillow keeps them (RGB as RGBX); the
    result is the one a copy of them gives, which is what images too large to share get."""
    from waypost.apps.journeys import jpegscale

    ramp = Image.linear_gradient("L").resize((400, 300))
    mirrored = ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = Image.merge("RGB", (ramp, mirrored, Image.new("L", (400, 300), 90)))
    shared = jpegscale.resize_pixels(picture, (320, 240))
    assert shared.mode == "RGBX" and shared.size == (320, 240)

    def not_shareable(image: Image.Image, step: int) -> tuple[int, object]:
        raise ValueError("Image rows are not contiguous in memory.")

    monkeypatch.setattr(jpegscale, "_pixel_address", not_shareable)
    copied = jpegscale.resize_pixels(picture, (320, 240))
    assert copied.mode == "RGB"
    assert shared.convert("RGB").tobytes() == copied.tobytes()
    grey = jpegscale.resize_pixels(ramp, (320, 240))
    assert grey.mode == "L" and grey.size == (320, 240)


def _camera_like_jpeg(size: tuple[int, int], **options: Any) -> bytes:
    """A JPEG with detail at every scale (smooth noise), so any shift of a resized row shows."""
    noise = Image.effect_noise((size[0] // 8 + 1, size[1] // 8 + 1), 64)
    detail = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                 noise.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    encoded = io.BytesIO()
    detail.resize(size, Image.Resampling.BILINEAR).save(encoded, "JPEG", quality=90, **options)
    return encoded.getvalue()


def _resized_both_ways(data: bytes) -> tuple[Image.Image, Image.Image | None]:
    """(load then resize_pixels, resize_while_decoding) of a JPEG at the display size."""
    from waypost.apps.journeys import jpegscale

    with Image.open(io.BytesIO(data)) as image:
        target = images._fitted_size(image.size, 1600)
        image.draft("RGB", target)
        image.load()
        loaded = jpegscale.resize_pixels(image, target)
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", target)
        streamed = jpegscale.resize_while_decoding(image, data, target, images._helper())
    return loaded, streamed


@pytest.mark.parametrize(("size", "options"), [
    ((4032, 3024), {}),  # an iPhone's 12 MP: decoded at 2016x1512, 63 rows to every 50
    ((3024, 4032), {}),  # the same, upright
    ((4000, 2250), {"progressive": True}),  # 16:9; no row is out before the last scan
    ((3264, 2448), {"restart_marker_blocks": 1}),  # 8 MP, 51 rows to 50, restart markers
], ids=["12 MP", "portrait", "progressive 16:9", "8 MP with restart markers"])
def test_resizing_rows_as_they_are_decoded_gives_the_pixels_of_a_whole_decode(
        size: tuple[int, int], options: dict[str, Any]) -> None:
    """The display size is made in bands of rows while Pillow still decodes the rest; each
    band starts where the scale's period starts again, so no pixel differs."""
    loaded, streamed = _resized_both_ways(_camera_like_jpeg(size, **options))
    assert streamed is not None
    assert (streamed.mode, streamed.size) == (loaded.mode, loaded.size)
    assert streamed.tobytes() == loaded.tobytes()


@pytest.mark.parametrize(("size", "why"), [
    ((1600, 1200), "already the display size"),
    ((2001, 1333), "1333 rows to 1066: a period of the whole image"),
    ((3000, 3000), "no DCT scale fits: 36 MB of pixels in several blocks"),
])
def test_photos_that_do_not_suit_bands_are_left_to_load(size: tuple[int, int], why: str) -> None:
    loaded, streamed = _resized_both_ways(_camera_like_jpeg(size))
    assert streamed is None, why
    assert loaded.size == images._fitted_size(size, 1600)


def test_a_damaged_decode_or_resize_while_decoding_falls_back_to_the_plain_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated photo ends the banded decode with None, and the plain load then refuses it
    with its usual reason; a libvips failure on a band, or Pillow's internals not as expected,
    decode the photo again the plain way."""
    from waypost.apps.journeys import jpegscale

    data = _camera_like_jpeg((4032, 3024))
    cut = data[: len(data) // 2]
    with Image.open(io.BytesIO(cut)) as image:
        image.draft("RGB", (1600, 1200))
        assert jpegscale.resize_while_decoding(image, cut, (1600, 1200), images._helper()) is None
        with pytest.raises(OSError, match="truncated"):
            image.load()  # as without the bands
    with pytest.raises(ImageError, match="^image data is truncated or corrupt: "):
        process_photo(cut)
    whole = process_photo(data, spare_core=False)

    def failing(*_: Any) -> None:
        raise jpegscale.ScaleError("no memory for the band")

    monkeypatch.setattr(jpegscale, "_resize_bands", failing)
    assert _resized_both_ways(data)[1] is None
    assert process_photo(data) == whole
    monkeypatch.undo()

    def renamed(*_: Any) -> None:  # Pillow's internals as a later version might have them
        raise AttributeError("module 'PIL.Image' has no attribute '_getdecoder'")

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (1600, 1200))
        monkeypatch.setattr(jpegscale.Image, "_getdecoder", renamed)
        assert jpegscale.resize_while_decoding(image, data, (1600, 1200), images._helper()) is None
        monkeypatch.undo()
        image.load()  # and the plain way still decodes it
        assert image.size == (2016, 1512)


def test_the_thumbnail_libvips_encodes_is_a_bare_jpeg() -> None:
    from waypost.apps.journeys import jpegscale

    picture = Image.new("RGB", (1600, 1200), (200, 120, 40))
    picture.info["icc_profile"] = _SRGB_PROFILE  # never written out
    for source in (picture, picture.convert("RGBX")):
        thumbnail = jpegscale.thumbnail_jpeg(source, (512, 384), quality=78, optimize=True)
        assert _assert_clean_jpeg(thumbnail, longest=512) == (512, 384)
        with Image.open(io.BytesIO(thumbnail)) as published:
            assert published.getpixel((256, 192)) == pytest.approx((200, 120, 40), abs=3)
