"""Synthetic phone photos for the benchmarks: 12 MP, camera-like detail, EXIF with GPS.

Flat or smooth pictures compress to almost nothing and decode unrealistically fast, so a
scene here has what a sensor records: a lit gradient, cloud-like structure at several
scales, hard-edged objects softened by the "lens" (everything is drawn at a quarter of the
resolution and upscaled), and per-pixel luma and chroma grain. At quality 90 a 4000x3000
JPEG comes out at 3-4 MB, like a phone's.

Everything is deterministic and cached under ``benchmarks/.cache/`` (git-ignored); the
file names carry ``GENERATION`` so a change to the recipe never reuses stale files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageDraw
from PIL.TiffImagePlugin import IFDRational

from waypost.apps.journeys.samples import display_p3_profile

CACHE = Path(__file__).resolve().with_name(".cache")
GENERATION = 1  # bump when the recipe changes
PHONE_SIZE = (4000, 3000)
MAIL_SCENES = 5  # the 40 mailed photos are 5 scenes, each turned all 8 ways (half of them portrait)
MAIL_TURNS = (None, *Image.Transpose)
MAIL_PHOTOS = MAIL_SCENES * len(MAIL_TURNS)
_STRUCTURE = ((6, 40.0), (24, 22.0), (120, 12.0))  # (cells across, amplitude in 8-bit levels)
_TRIP_START = datetime(2024, 7, 13, 9, 0, tzinfo=timezone(timedelta(hours=1)))


@dataclass(frozen=True)
class Detail:
    """How much a scene's pixels vary, and how it is compressed."""

    grain: int  # peak per-pixel sensor noise, 8-bit levels
    texture: float  # fine structure before upscaling, standard deviation in 8-bit levels
    quality: int  # the encoder's: JPEG, or x265 for a HEIC


PHONE = Detail(grain=6, texture=10.0, quality=90)  # 3-4 MB at 12 MP
MAILED = Detail(grain=1, texture=4.0, quality=78)  # about 0.75 MB at 12 MP
PHONE_HEIC = Detail(grain=3, texture=8.0, quality=60)  # less grain: phones denoise before HEVC; about 2.8 MB


def scene(seed: int, detail: Detail, size: tuple[int, int] = PHONE_SIZE) -> Image.Image:
    """An RGB picture of ``size`` with camera-like detail; the same seed gives the same pixels."""
    rng = np.random.default_rng(seed)
    small = _backdrop(rng, (size[0] // 4, size[1] // 4), detail.texture)
    _draw_objects(ImageDraw.Draw(small), rng, small.size)
    upscaled = np.asarray(small.resize(size, Image.Resampling.BICUBIC), np.int16)
    return Image.fromarray(_with_grain(upscaled, rng, detail.grain))


def _backdrop(rng: np.random.Generator, size: tuple[int, int], texture: float) -> Image.Image:
    width, height = size
    down = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    across = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(20, 200, 3)
    pixels = top * (1 - down) + bottom * down + 20 * across
    for cells, amplitude in _STRUCTURE:
        pixels = pixels + amplitude * _smooth_field(rng, cells, size)
    pixels = pixels + rng.normal(0, texture, (height, width, 3)).astype(np.float32)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _smooth_field(rng: np.random.Generator, cells: int, size: tuple[int, int]) -> np.ndarray:
    """Normal noise on a coarse grid, interpolated up to ``size``: clouds, foliage, walls."""
    width, height = size
    coarse = rng.normal(0, 1, (cells * height // width + 2, cells + 2, 3)).astype(np.float32)
    low, high = float(coarse.min()), float(coarse.max())
    as_bytes = ((coarse - low) / (high - low) * 255).astype(np.uint8)
    fine = Image.fromarray(as_bytes).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(fine, np.float32) / 255 * (high - low) + low


def _draw_objects(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    width, height = size
    for _ in range(80):
        x, y, reach = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, 120)
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - reach, y - reach * 0.6, x + reach, y + reach * 0.6), fill=colour)
        else:
            corners = [(x + rng.uniform(-reach, reach), y + rng.uniform(-reach, reach)) for _ in range(5)]
            draw.polygon(corners, fill=colour)


def _with_grain(pixels: np.ndarray, rng: np.random.Generator, grain: int) -> np.ndarray:
    if grain:
        height, width, _ = pixels.shape
        # Two uniform draws sum to a triangular distribution: close enough to sensor noise.
        luma = rng.integers(-grain, grain + 1, (height, width, 1), dtype=np.int16)
        luma += rng.integers(-grain, grain + 1, (height, width, 1), dtype=np.int16)
        pixels = pixels + luma + rng.integers(-(grain // 2), grain // 2 + 1, pixels.shape, dtype=np.int16)
    return pixels.clip(0, 255).astype(np.uint8)


def phone_exif(index: int) -> Image.Exif:
    """What a phone writes: make, model, upright orientation, capture time, GPS position."""
    taken = _TRIP_START + timedelta(minutes=17 * index)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Waypost"
    exif[ExifTags.Base.Model] = "Benchmark Phone"
    exif[ExifTags.Base.Orientation] = 1
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S")
    details[ExifTags.Base.OffsetTimeOriginal] = "+01:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "N", _dms(38.69 + 0.004 * index)
    gps[ExifTags.GPS.GPSLongitudeRef], gps[ExifTags.GPS.GPSLongitude] = "W", _dms(9.21 - 0.006 * index)
    gps[ExifTags.GPS.GPSAltitudeRef], gps[ExifTags.GPS.GPSAltitude] = b"\x00", IFDRational(1200 + index, 100)
    utc = taken.astimezone(UTC)
    gps[ExifTags.GPS.GPSTimeStamp] = (IFDRational(utc.hour), IFDRational(utc.minute), IFDRational(utc.second))
    gps[ExifTags.GPS.GPSDateStamp] = utc.strftime("%Y:%m:%d")
    return exif


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    whole, minutes = int(degrees), (degrees - int(degrees)) * 60
    return IFDRational(whole), IFDRational(int(minutes)), IFDRational(round((minutes % 1) * 60 * 100), 100)


def encode_jpeg(picture: Image.Image, detail: Detail, exif: Image.Exif, icc_profile: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=detail.quality, exif=exif.tobytes(), icc_profile=icc_profile)
    return buffer.getvalue()


def encode_heic(picture: Image.Image, detail: Detail, exif: Image.Exif) -> bytes:
    # x265's "ultrafast" preset: its default took 26 s per 12 MP picture on 2 cores, and an
    # ultrafast stream decoded within about 10 % of the time a slower preset's did.
    heif = pillow_heif.from_pillow(picture)
    buffer = io.BytesIO()
    heif.save(buffer, quality=detail.quality, exif=exif.tobytes(), enc_params={"preset": "ultrafast"})
    return buffer.getvalue()


def phone_jpegs(count: int) -> list[Path]:
    """``count`` 12 MP phone JPEGs (3-4 MB each) with EXIF and GPS."""
    return [
        _cached(f"phone-{index:02d}.jpg", lambda i=index: encode_jpeg(scene(i, PHONE), PHONE, phone_exif(i)))
        for index in range(count)
    ]


def phone_p3_jpegs(count: int) -> list[Path]:
    """The same scenes as ``phone_jpegs``, tagged Display P3 as an iPhone's are."""
    return [
        _cached(f"phone-{index:02d}-p3.jpg",
                lambda i=index: encode_jpeg(scene(i, PHONE), PHONE, phone_exif(i), display_p3_profile()))
        for index in range(count)
    ]


def p3_twin(path: Path) -> Path:
    """The Display P3 version of a ``phone_jpegs`` file."""
    return path.with_name(path.name.replace(".jpg", "-p3.jpg"))


def phone_heics(count: int) -> list[Path]:
    """``count`` 12 MP HEICs from pillow-heif (x265), about 2-3 MB each, with EXIF and GPS."""
    return [
        _cached(f"phone-{index:02d}.heic",
                lambda i=index: encode_heic(scene(100 + i, PHONE_HEIC), PHONE_HEIC, phone_exif(i)))
        for index in range(count)
    ]


def photo_mail(sender: str, recipient: str) -> Path:
    """A raw mail carrying ``MAIL_PHOTOS`` (40) distinct 12 MP JPEGs of about 0.75 MB: just
    under the 40 MiB a message may have (the SES receiving limit, Waypost's SMTP SIZE default)."""
    return _cached("mail-40-photos.eml", lambda: _photo_mail_bytes(sender, recipient))


def _photo_mail_bytes(sender: str, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Ann <{sender}>"
    message["To"] = recipient
    message["Subject"] = "Forty photos from the coast"
    message["Message-ID"] = "<benchmark-forty@example.org>"
    message["Date"] = "Sat, 13 Jul 2024 20:00:00 +0100"
    message.set_content("All of today's photos.")
    for index, photo in enumerate(_mailed_photos()):
        message.add_attachment(photo, maintype="image", subtype="jpeg", filename=f"IMG_{index:04d}.jpg")
    return message.as_bytes()


def _mailed_photos() -> list[bytes]:
    photos = []
    for scene_index in range(MAIL_SCENES):
        picture = scene(200 + scene_index, MAILED)
        for turn_index, turn in enumerate(MAIL_TURNS):
            turned = picture if turn is None else picture.transpose(turn)
            exif = phone_exif(scene_index * len(MAIL_TURNS) + turn_index)
            photos.append(encode_jpeg(turned, MAILED, exif))
    return photos


def _cached(name: str, make: Callable[[], bytes]) -> Path:
    path = CACHE / f"g{GENERATION}-{name}"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(make())
        partial.replace(path)  # atomic: a crashed run never leaves half a file under the real name
    return path
