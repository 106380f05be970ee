"""Shrink a camera JPEG to the display size through libvips (pyvips with its binary wheel).

Pillow's resampling has no SIMD: going from the 1/2-scale decode of a 12 MP photo
(2000x1500) to 1600x1200 cost about as much as a third of the decode itself. libvips decodes
at the same libjpeg DCT scale ("shrink-on-load") and resizes with vectorised kernels while
the decode is still running, in one streamed pass.

Only the pixels go through libvips. Pillow has opened the file first (the format is known to
be JPEG, the declared size is checked, the EXIF is read); libvips converts an RGB photo's
colours to sRGB in the same pass when Pillow found a usable profile, and Pillow still does
the turn upright, the thumbnail and the encoding. libvips is asked for its JPEG
loader by name, so it never guesses a format, and its loaders marked untrusted are blocked.

pyvips is imported on first use, inside the image pool's worker: libvips starts threads,
and a fork server that had loaded it would fork copies of its locks.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from types import ModuleType

_DCT_SHRINKS = (8, 4, 2)  # what libjpeg can scale by while decoding


class ScaleError(Exception):
    """libvips could not decode the JPEG: truncated or corrupt data."""


def shrink_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The largest DCT scale (1/8, 1/4, 1/2) whose decode still covers ``target``, as
    Pillow's ``draft`` picks it; 1 when none does."""
    width, height = size
    return next((s for s in _DCT_SHRINKS if width // s >= target[0] and height // s >= target[1]), 1)


def display_from_jpeg(data: bytes, size: tuple[int, int], target: tuple[int, int], *,
                      icc_profile: bytes | None = None) -> Image.Image:
    """The JPEG in ``data`` (declared ``size``, 3-band YCbCr or 1-band grey) decoded at the
    best DCT scale and resized to exactly ``target``, as an RGB or L Pillow image with no
    ``info``. With ``icc_profile`` (an RGB profile, for a 3-band JPEG) the resized pixels
    are converted from it to sRGB in the same pass. Raises ``ScaleError`` when the data is
    truncated or corrupt, or libvips cannot use the profile."""
    vips = _pyvips()
    try:
        decoded = vips.Image.jpegload_buffer(data, shrink=shrink_factor(size, target), access="sequential",
                                            fail_on="truncated", autorotate=False)
        resized = decoded if (decoded.width, decoded.height) == target else _resized(decoded, target)
        if icc_profile is not None:
            resized = _in_srgb(vips, resized, icc_profile)
        pixels = resized.write_to_memory()
    except vips.Error as err:
        raise ScaleError(str(err).strip().splitlines()[-1] if str(err).strip() else "decode failed") from err
    mode = {1: "L", 3: "RGB"}.get(resized.bands)
    if mode is None or resized.format != "uchar":
        raise ScaleError(f"unexpected JPEG layout: {resized.bands} bands of {resized.format}")
    return Image.frombuffer(mode, target, pixels, "raw", mode, 0, 1)


def _resized(image: Any, target: tuple[int, int]) -> Any:
    # Separate horizontal and vertical scales land on the exact size; a cubic kernel was as
    # sharp as Lanczos at a reduction of less than 2 and cheaper (see benchmarks/README.md).
    resized = image.resize(target[0] / image.width, vscale=target[1] / image.height, kernel="cubic")
    if (resized.width, resized.height) != target:  # rounding: a pixel at most
        resized = resized.gravity("centre", *target, extend="copy")
    return resized


def _in_srgb(vips: ModuleType, image: Any, profile: bytes) -> Any:
    # LittleCMS through libvips, on the worker threads that resize: a Display P3 photo cost
    # 10 ms less than with ImageCms after the decode, and no pixel differed by more than one
    # level. The profile is the one Pillow read, attached here rather than found again.
    tagged = image.copy()
    tagged.set_type(vips.GValue.blob_type, "icc-profile-data", profile)
    return tagged.icc_transform("srgb", embedded=True, intent="perceptual")


@cache
def _pyvips() -> ModuleType:
    import pyvips

    pyvips.block_untrusted_set(True)
    # The operation cache would keep the last 100 operations, each holding its photo's
    # bytes: 60 MB more per worker after 60 photos, and a photo is never decoded twice.
    pyvips.cache_set_max(0)
    return pyvips
