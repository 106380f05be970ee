"""Turn an emailed photo into the two JPEGs the journey page shows, safely.

The bytes come from strangers' mail, so the decoder is treated as hostile ground: only a
few formats are opened, the declared pixel count is checked before anything is decoded,
and every decoder failure becomes an ``ImageError``. The published JPEGs carry no
metadata at all: the journey page shows where a photo was taken on purpose, but the
camera serial numbers, exact EXIF and embedded comments stay private.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, ImageCms, UnidentifiedImageError

from waypost.apps.journeys.exif import PhotoMetadata, read_metadata
from waypost.errors import PermanentError

MAX_PIXELS = 100_000_000
"""Largest declared width x height accepted; a 108 MP phone photo is refused."""

# Formats phones and cameras send; everything else (EPS, PSD, ...) is never parsed.
# Pillow's JPEG opener also covers the multi-picture (MPO) JPEGs many phones write.
_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
_CONTENT_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/tiff"})
_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff"})
_GENERIC_TYPES = frozenset({"application/octet-stream", ""})

# What Pillow raises on damaged, truncated or hostile data (seen across its plugins).
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

# EXIF orientation value -> the transpose that makes the picture upright (EXIF 2.31 §4.6.4).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_SRGB = ImageCms.createProfile("sRGB")


class ImageError(PermanentError):
    """The attachment is not an image Waypost can safely decode; retrying cannot help."""


@dataclass(frozen=True)
class ProcessedPhoto:
    """A photo ready to publish: metadata from the original, two metadata-free JPEGs."""

    metadata: PhotoMetadata
    thumbnail: bytes
    display: bytes
    display_size: tuple[int, int]
    sha256: str


def process_photo(data: bytes, *, thumb_px: int = 512, display_px: int = 1600) -> ProcessedPhoto:
    """Read metadata and make upright display and thumbnail JPEGs from one decode.

    Longest sides are at most ``display_px`` and ``thumb_px``; smaller photos are never
    enlarged. ``sha256`` is the hex digest of ``data`` (the photo's identity for
    idempotency). Raises ``ImageError`` for unsupported, oversized, truncated or corrupt
    images; bad metadata alone never fails (see ``PhotoMetadata.problems``).
    """
    if thumb_px < 1 or display_px < 1:
        raise ValueError("thumb_px and display_px must be positive")
    with _open_checked(data) as image:
        metadata = read_metadata(image)
        upright = _decode_upright(image, display_px, metadata.orientation)
    display = _shrink_to(upright, display_px)
    thumbnail = _shrink_to(display, thumb_px)
    return ProcessedPhoto(
        metadata=metadata,
        thumbnail=_encode_jpeg(thumbnail, quality=78),
        display=_encode_jpeg(display, quality=82),
        display_size=display.size,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def is_supported_image(content_type: str, filename: str | None) -> bool:
    """Whether an attachment should be treated as a photo, by MIME type or, when the
    sender's client only said ``application/octet-stream``, by file extension."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _CONTENT_TYPES:
        return True
    if mime not in _GENERIC_TYPES or not filename:
        return False
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower() in _EXTENSIONS


def _open_checked(data: bytes) -> Image.Image:
    """Open (parse headers only) and refuse images whose declared size is too large."""
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # The warning arrives as an exception only where warnings are errors; elsewhere
        # Pillow just logs it and the size check below decides.
        raise ImageError(f"image is too large to process: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageError("not a JPEG, PNG, WebP or TIFF image") from err
    except (*_DECODER_ERRORS, Warning) as err:
        # Pillow reads a JPEG's EXIF while opening it and warns about corrupt EXIF;
        # where the application turns warnings into errors, that ends up here.
        raise ImageError(f"image header is corrupt: {err}") from err
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        image.close()
        raise ImageError(f"image declares {width}x{height} pixels; the limit is {MAX_PIXELS}")
    return image


def _decode_upright(image: Image.Image, display_px: int, orientation: int | None) -> Image.Image:
    """Decode once, as small as the display size allows, in RGB, the right way up."""
    # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; ask for the display size so a
    # 12 MP photo never becomes 36 MB of pixels. A no-op for the other formats.
    image.draft("RGB", _fitted_size(image.size, display_px))
    try:
        rgb = _to_srgb(image)
    except (*_DECODER_ERRORS, Warning) as err:
        raise ImageError(f"image data is truncated or corrupt: {err}") from err
    transpose = _UPRIGHT.get(orientation or 1)
    return rgb if transpose is None else rgb.transpose(transpose)


def _to_srgb(image: Image.Image) -> Image.Image:
    """Decode to 8-bit RGB, flattening transparency onto white and honouring ICC colour."""
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        return _flatten_on_white(image)
    if image.mode in _WIDE_GREY_MODES:
        # Pillow's direct conversion clips 16-bit grey at 255; scale it down instead.
        return image.convert("I").point(lambda value: value / 256, "L").convert("RGB")
    profile = image.info.get("icc_profile")
    if profile and image.mode in ("RGB", "CMYK", "L"):
        converted = _convert_with_profile(image, profile)
        if converted is not None:
            return converted
    return image.convert("RGB")


def _convert_with_profile(image: Image.Image, profile: bytes) -> Image.Image | None:
    """sRGB pixels from an image with an embedded profile (phones shoot Display P3, which
    looks washed out when shown as sRGB); None when the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return None


def _flatten_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _fitted_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` scaled so its longer side is at most ``longest``; never enlarged."""
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink_to(image: Image.Image, longest: int) -> Image.Image:
    target = _fitted_size(image.size, longest)
    if target == image.size:
        return image
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode_jpeg(image: Image.Image, *, quality: int) -> bytes:
    """Baseline-compatible progressive JPEG with no EXIF, XMP, ICC or comment segments."""
    # Pillow copies ``info`` (EXIF, XMP, ICC, comments) from image to image and writes
    # some of it back by default; a bare copy of the pixels carries none of it.
    bare = Image.frombytes(image.mode, image.size, image.tobytes())
    buffer = io.BytesIO()
    bare.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    return buffer.getvalue()
