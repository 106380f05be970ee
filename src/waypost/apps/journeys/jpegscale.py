"""The libvips side of a photo (pyvips with its binary wheel): resizing, colour, thumbnails.

Pillow's resampling has no SIMD: going from the 1/2-scale decode of a 12 MP photo
(2000x1500) to 1600x1200 took 27 ms with its bilinear filter, libvips' vectorised kernels
take 8-9 ms on two threads. So a camera JPEG is decoded by Pillow (libjpeg's DCT scaling
through ``draft``: 46 ms where libvips' own ``jpegload`` took 51 ms for the same pixels) and
``resize_pixels`` lets libvips read the decoded pixels where Pillow keeps them, through the
Arrow C data interface Pillow exports, without a copy: a 9 MB copy into fresh memory cost
2-12 ms here, page faults included. Only when Pillow's pixels are not one block (images past
16 MB) are they copied out first.

When a core is free beside the photo, ``resize_while_decoding`` does the same in bands of rows
while Pillow still decodes the rest, so only the last band's resize is left after the decode
(a 12 MP photo: 1.34x to 1.24x the decode's own time, with the very same pixels).

A JPEG whose RGB profile is not sRGB (a phone's Display P3) is still decoded by libvips
(``display_from_jpeg``): decode, resize and colour conversion stream in one pass, and the
conversion, the dearest step, runs on the second core while the first one still decodes.

``thumbnail_jpeg`` makes and encodes the thumbnail entirely in libvips, which lets go of the
GIL while it works; so does Pillow's JPEG encoder writing to a file descriptor
(``images.encode_jpeg``), so the two encoders run side by side.

pyvips is imported on first use, inside the image pool's worker: libvips starts threads,
and a fork server that had loaded it would fork copies of its locks.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from concurrent.futures import Executor
from fractions import Fraction
from functools import cache
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFile

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)


class _ArrowArray(ctypes.Structure):
    """``struct ArrowArray`` of the Arrow C data interface (a stable ABI)."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

# Pillow mode -> bytes per pixel in Pillow's memory (RGB is kept as RGBX) and the mode the
# resized pixels come back in, sharing libvips' output buffer.
_LAYOUTS = {"RGB": (4, "RGBX"), "L": (1, "L")}
_DCT_SHRINKS = (8, 4, 2)  # what libjpeg can scale by while decoding
RESIZE_KERNEL = "cubic"
"""libvips kernel from Pillow's decode to the display size (a reduction of less than 2): as
sharp as Lanczos there, and the display JPEG has the bytes libvips' own decode and resize gave.
Linear would take 1.7 ms (2.5 ms of CPU) less per 12 MP photo for display JPEGs 0.16 dB PSNR
lower against a Lanczos resize of the full decode (softer, 7 % fewer bytes)."""


_FEED = 65536  # bytes given to the decoder at a time (``ImageFile.load`` reads as much)
_BANDS = 8  # bands a decode is resized in: the last one is all that waits for the decode's end
_KERNEL_REACH = 6  # input rows the cubic kernel reaches either side, at up to half the size


class ScaleError(Exception):
    """libvips could not resize the pixels or could not use the profile."""


def shrink_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The largest DCT scale (1/8, 1/4, 1/2) whose decode still covers ``target``, as
    Pillow's ``draft`` picks it; 1 when none does."""
    width, height = size
    return next((s for s in _DCT_SHRINKS if width // s >= target[0] and height // s >= target[1]), 1)


def display_from_jpeg(data: bytes, size: tuple[int, int], target: tuple[int, int], *,
                      icc_profile: bytes | None = None) -> Image.Image:
    """The JPEG in ``data`` (declared ``size``, 3-band YCbCr or 1-band grey) decoded by libvips
    at the best DCT scale and resized to exactly ``target`` in one streamed pass, as an RGB or
    L Pillow image with no ``info``. With ``icc_profile`` (an RGB profile, for a 3-band JPEG)
    the resized pixels are converted from it to sRGB in the same pass: for a photo with a
    profile this is the faster way, as the colour conversion (the dearest step) runs on the
    second core while the first one still decodes. Raises ``ScaleError`` when the data is
    truncated or corrupt, or libvips cannot use the profile."""
    vips = _pyvips()
    try:
        decoded = vips.Image.jpegload_buffer(data, shrink=shrink_factor(size, target), access="sequential",
                                            fail_on="truncated", autorotate=False)
        resized = _resized(decoded, target, "cubic")
        if icc_profile is not None:
            resized = _in_srgb(vips, resized, icc_profile)
        pixels = resized.write_to_memory()
    except vips.Error as err:
        raise ScaleError(_reason(err, "decode failed")) from err
    mode = {1: "L", 3: "RGB"}.get(resized.bands)
    if mode is None or resized.format != "uchar":
        raise ScaleError(f"unexpected JPEG layout: {resized.bands} bands of {resized.format}")
    return Image.frombuffer(mode, target, pixels, "raw", mode, 0, 1)


def resize_pixels(image: Image.Image, target: tuple[int, int], *, icc_profile: bytes | None = None) -> Image.Image:
    """``image`` (decoded RGB or L) resized to exactly ``target`` with libvips, as an RGBX (for
    RGB) or L Pillow image with no ``info``. With ``icc_profile`` (an RGB profile, for an RGB
    image) the pixels are converted from it to sRGB in the same pass. Raises ``ScaleError``
    for another mode or when libvips cannot use the profile."""
    if image.mode not in _LAYOUTS:
        raise ScaleError(f"cannot resize a {image.mode} image with libvips")
    step, mode = _LAYOUTS[image.mode]
    vips = _pyvips()
    try:
        source, keep_alive = _as_vips(vips, image)
        resized = _resized(source, target)
        if icc_profile is not None:
            resized = _in_srgb(vips, resized, icc_profile)
        pixels = resized.write_to_memory()
    except vips.Error as err:
        raise ScaleError(_reason(err, "resize failed")) from err
    bands = resized.bands
    del source, resized, keep_alive  # libvips has read Pillow's memory: it may go now
    if bands == 3 and step == 4:  # Pillow could not share its pixels: a 3-band copy went in
        mode, step = "RGB", 3
    if bands != step or len(pixels) != target[0] * target[1] * step:
        raise ScaleError(f"libvips returned {bands} bands, {len(pixels)} bytes for a {target} {mode} image")
    return Image.frombuffer(mode, target, pixels, "raw", mode, 0, 1)


def resize_while_decoding(image: ImageFile.ImageFile, data: bytes, target: tuple[int, int],
                          helper: Executor) -> Image.Image | None:
    """``image`` (a JPEG opened from ``data``, ``draft`` set, RGB, not loaded) decoded by Pillow
    and resized to exactly ``target`` by libvips in bands of rows on ``helper``'s thread while
    the decode goes on, as an RGBX image with the very pixels of ``resize_pixels`` after
    ``load``. None, leaving the decode to ``load``, when the photo does not suit (the decode is
    not one block of memory, the vertical scale has no short period) or the decode failed: the
    caller's ``load`` then raises what it always did.

    Pillow decodes a JPEG in one call with no sign of its progress, so the data is fed to its
    decoder 64 KB at a time, as ``load`` does, and a row counts as decoded once the padding
    byte of its last pixel is 255: Pillow keeps RGB as RGBX and fills that byte as it writes
    each row, in a memory zeroed first. The bands start on rows where the vertical scale's
    period starts again, with rows to spare on both sides for the kernel, so each band's
    output rows are sampled exactly where the whole image's are."""
    width, height = image.size
    bands = _bands(height, target[1])
    if (image.mode != "RGB" or len(image.tile) != 1 or bands is None or image.size == target
            or target[1] / height <= 0.5):
        return None
    image.load_prepare()
    try:
        address, keep_alive = _core_address(image.im, 4, width * height * 4)
    except (ValueError, TypeError, AttributeError):  # several blocks, or no Arrow export
        return None
    rows = (ctypes.c_ubyte * (width * height * 4)).from_address(address)
    ctypes.memset(address, 0, width * height * 4)
    progress = _Progress()
    resized = helper.submit(_resize_bands, address, (width, height), target, bands, progress)
    try:
        decoded = _decode_rows(image, data, rows, progress)
    except Exception as err:  # noqa: BLE001 - a surprise in Pillow's internals: ``load`` decides
        log.warning("Pillow's decoder could not be fed in blocks (%s: %s); decoding the photo whole",
                    type(err).__name__, err)
        decoded = False
    finally:
        progress.end()
        try:
            pixels = resized.result()  # libvips has let go of the decoded rows: they may go now
        except (ScaleError, _pyvips().Error) as err:
            log.info("libvips could not resize the JPEG as it decoded (%s); decoding it again", err)
            pixels = None
        del rows, keep_alive
    if not decoded or pixels is None:
        return None
    image.tile = []  # decoded: ``load`` must not decode it again
    return Image.frombuffer("RGBX", target, pixels, "raw", "RGBX", 0, 1)


class _Progress:
    """Rows decoded so far, for the thread resizing them; ``ended`` once the decode stopped,
    whole or not."""

    def __init__(self) -> None:
        self.rows = 0
        self.ended = False
        self.changed = threading.Condition()

    def decoded(self, rows: int) -> None:
        with self.changed:
            self.rows = rows
            self.changed.notify_all()

    def end(self) -> None:
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, rows: int) -> bool:
        """True once ``rows`` rows are decoded, False when the decode ended short of them."""
        with self.changed:
            while self.rows < rows and not self.ended:
                self.changed.wait()
            return self.rows >= rows


def _bands(height: int, target_height: int) -> list[tuple[int, int, int, int]] | None:
    """(first and last input row, first and last output row) of each band; None when the
    scale's period (``height / target_height`` in lowest terms, p input rows to q output rows)
    leaves fewer than three periods."""
    period = Fraction(height, target_height)
    rows_in, rows_out = period.numerator, period.denominator
    periods = height // rows_in
    if periods < 3:
        return None
    spare = -(-_KERNEL_REACH // rows_in)  # whole periods of rows either side of a band
    per_band = -(-periods // _BANDS)
    plan = []
    for first in range(0, periods, per_band):
        last = min(first + per_band, periods)
        plan.append((max(0, first - spare) * rows_in, min(periods, last + spare) * rows_in,
                     first * rows_out, last * rows_out))
    return plan


def _decode_rows(image: ImageFile.ImageFile, data: bytes, rows: Any, progress: _Progress) -> bool:
    """Feed ``data`` to Pillow's decoder as ``ImageFile.load`` does, telling ``progress`` the
    rows done after each block; True when the whole image decoded without error."""
    codec, extents, offset, args = image.tile[0]  # its one tile, as resize_while_decoding checked
    width, height = image.size
    decoder = Image._getdecoder(image.mode, codec, args, image.decoderconfig)
    done = 0
    try:
        decoder.setimage(image.im, extents)
        if decoder.pulls_fd:
            return False
        position, pending = offset, b""
        while True:
            block = data[position:position + _FEED]
            position += len(block)
            if not block and not pending:
                return False  # truncated: ``load`` says so
            pending += block
            consumed, error = decoder.decode(pending)
            while done < height and rows[(done * width + width - 1) * 4 + 3] == 255:
                done += 1
            progress.decoded(done)
            if consumed < 0:
                return error >= 0 and done == height
            if not block and consumed == 0:
                return False
            pending = pending[consumed:]
    finally:
        decoder.cleanup()


def _resize_bands(address: int, size: tuple[int, int], target: tuple[int, int],
                  bands: list[tuple[int, int, int, int]], progress: _Progress) -> bytearray | None:
    """Each band resized by libvips as soon as its rows are decoded, into one RGBX buffer;
    None when the decode ended first."""
    vips = _pyvips()
    width, height = size
    row_bytes, out_row_bytes = width * 4, target[0] * 4
    scale, vscale = target[0] / width, target[1] / height  # the whole image's, as in _resized
    out = bytearray(target[1] * out_row_bytes)
    for first, last, out_first, out_last in bands:
        if not progress.wait_for(last):
            return None
        shared = (ctypes.c_ubyte * ((last - first) * row_bytes)).from_address(address + first * row_bytes)
        band = vips.Image.new_from_memory(shared, width, last - first, 4, "uchar")
        skip = out_first - first * target[1] // height
        resized = band.resize(scale, vscale=vscale, kernel=RESIZE_KERNEL)
        if resized.width != target[0] or resized.height < skip + out_last - out_first:
            raise ScaleError(f"libvips resized a band to {resized.width}x{resized.height}")
        out[out_first * out_row_bytes:out_last * out_row_bytes] = resized.crop(
            0, skip, target[0], out_last - out_first).write_to_memory()
        del band, resized, shared
    return out


def thumbnail_jpeg(image: Image.Image, target: tuple[int, int], *, quality: int, optimize: bool) -> bytes:
    """``image`` (RGB or RGBX, in sRGB) resized to ``target`` with a Lanczos kernel and encoded
    by libvips as a baseline 4:2:0 JPEG with no metadata at all. Made on a helper thread while
    Pillow encodes the display picture: both let go of the GIL while they work, libvips
    for the whole resize and encode. Raises ``ScaleError`` when libvips fails."""
    if image.mode not in ("RGB", "RGBX"):
        raise ScaleError(f"cannot make a thumbnail of a {image.mode} image with libvips")
    vips = _pyvips()
    try:
        source, keep_alive = _as_vips(vips, image)
        resized = _resized(source, target, "lanczos3")
        if resized.bands == 4:  # Pillow's padding byte
            resized = resized.extract_band(0, n=3)
        encoded = resized.copy(interpretation="srgb").jpegsave_buffer(
            Q=quality, optimize_coding=optimize, interlace=False, subsample_mode="on", keep="none")
    except vips.Error as err:
        raise ScaleError(_reason(err, "thumbnail failed")) from err
    del source, resized, keep_alive
    return bytes(encoded)


def _as_vips(vips: ModuleType, image: Image.Image) -> tuple[Any, object]:
    """A libvips image over Pillow's own pixels (RGB as 4 bands, RGBX), and what must stay
    alive while libvips reads them; a 3-band copy when Pillow cannot share them."""
    step = _LAYOUTS[image.mode][0] if image.mode in _LAYOUTS else 4  # RGBX: as RGB
    try:
        address, keep_alive = _pixel_address(image, step)
    except (ValueError, TypeError, AttributeError):  # several blocks, or no Arrow export
        pixels = image.convert("RGB").tobytes() if image.mode == "RGBX" else image.tobytes()
        bands = 1 if image.mode == "L" else 3
        return vips.Image.new_from_memory(pixels, image.width, image.height, bands, "uchar"), None
    shared = (ctypes.c_ubyte * (image.width * image.height * step)).from_address(address)
    return vips.Image.new_from_memory(shared, image.width, image.height, step, "uchar"), (keep_alive, shared)


def _pixel_address(image: Image.Image, step: int) -> tuple[int, object]:
    """Where Pillow keeps ``image``'s pixels, contiguous, row after row, and the exported Arrow
    array that holds a reference to them until it is released."""
    _, array = image.__arrow_c_array__()  # ValueError when the rows are in several blocks
    return _array_address(array, image.width * image.height * step, step), array


def _core_address(core: Any, step: int, length: int) -> tuple[int, object]:
    """``_pixel_address`` of Pillow's core image before it is loaded (``Image.__arrow_c_array__``
    would load it first); ``length`` bytes in all."""
    array = core.__arrow_c_array__()
    return _array_address(array, length, step), array


def _array_address(array: object, length: int, step: int) -> int:
    exported = _ArrowArray.from_address(_capsule_pointer(array, b"arrow_array"))
    if step > 1:  # a fixed-size list of ``step`` bytes per pixel: the bytes are its child's
        if exported.n_children != 1:
            raise ValueError("unexpected Arrow layout")
        exported = exported.children[0].contents
    if exported.n_buffers != 2 or exported.offset != 0 or exported.length != length:
        raise ValueError("unexpected Arrow layout")
    address = exported.buffers[1]
    if not address:
        raise ValueError("no pixel buffer")
    return int(address)


def _reason(err: Exception, fallback: str) -> str:
    """The last line of a libvips error (the one that says what went wrong), or ``fallback``."""
    text = str(err).strip()
    return text.splitlines()[-1] if text else fallback


def _resized(image: Any, target: tuple[int, int], kernel: str = RESIZE_KERNEL) -> Any:
    """``image`` at exactly ``target`` (as it is when it has that size already)."""
    if (image.width, image.height) == target:
        return image
    # Separate horizontal and vertical scales land on the exact size.
    resized = image.resize(target[0] / image.width, vscale=target[1] / image.height, kernel=kernel)
    if (resized.width, resized.height) != target:  # rounding: a pixel at most
        resized = resized.gravity("centre", *target, extend="copy")
    return resized


def _in_srgb(vips: ModuleType, image: Any, profile: bytes) -> Any:
    # LittleCMS through libvips, on the worker threads that resize: a Display P3 photo cost
    # 10 ms less than with ImageCms after the decode, and no pixel differed by more than one
    # level. The profile is the one Pillow read, attached here rather than found again; a
    # fourth band (Pillow's padding byte) is carried through as alpha.
    tagged = image.copy(interpretation="srgb")
    tagged.set_type(vips.GValue.blob_type, "icc-profile-data", profile)
    return tagged.icc_transform("srgb", embedded=True, intent="perceptual")


@cache
def _pyvips() -> ModuleType:
    import pyvips

    pyvips.block_untrusted_set(True)
    # The operation cache would keep the last 100 operations, each holding its photo's
    # pixels, and a photo is never resized twice.
    pyvips.cache_set_max(0)
    return pyvips
