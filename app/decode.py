"""Turn uploaded bytes into the RGB uint8 HxWx3 array the rest of the pipeline expects.

Uploads are untrusted, so the order matters: identify the format and read the declared size
from the header, refuse what is too large *before* decoding a single pixel, then decode only
the first frame. Every failure is an `ImageError` carrying the HTTP status and problem type
the API answers with, so the HTTP layer never has to interpret Pillow's exceptions.

Pixels are not the only cost: a progressive JPEG's scans are each decoded over the whole
image, so their number is counted from the bytes and capped before decoding; of TIFF pages
and GIF, WebP or APNG frames only the first is read, and nothing that counts them all
(`n_frames`, `is_animated`) is ever called.

Pillow reads every header and makes every check; the pixels of an ordinary JPEG (RGB or
grey) are then decoded by OpenCV, which wraps the same libjpeg-turbo with the same settings
and so gives the same pixels, straight into one array (Pillow fills its own buffer, which
numpy then copies) and without holding the interpreter lock. Anything OpenCV refuses goes
back to Pillow, which names the error as before.

Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) stays on as a backstop; the
service raises it to at least `max_pixels` at start-up so it never rejects what we accept.
Anything its warning would flag is above `max_pixels` and refused by our own check first.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from app.jpeg_scans import count_scans, is_jpeg
from app.problems import ProblemError

SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF or GIF"

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
DEFAULT_MAX_JPEG_SCANS = 32
PNG_MAX_CHUNK_BYTES = 16 << 20
"""Largest decompressed PNG text or ICC chunk: camera and print profiles pass 1 MiB."""
UNREADABLE = "the file is not an image this service can read"
CHUNK_PIXELS = 1 << 20
"""Pixels per step of the wide-gray and alpha conversions: their temporaries stay a few MiB."""

log = logging.getLogger("emotion.decode")

_OPENCV_SCALES = {
    1: 0,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
"""libjpeg's DCT scales as OpenCV's flags (the grey ones, which only carry the scale here)."""
_OPENCV_MODES = frozenset({"RGB", "L"})
"""JPEG modes whose pixels OpenCV gives as Pillow does (its CMYK conversion differs)."""
_ORIENTED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}
"""The EXIF Orientation values that `ImageOps.exif_transpose` acts on, as array views."""


class ImageError(ProblemError):
    """An upload that cannot be used as an image; `status` and `slug` say how to answer."""


def ensure_pillow_limit(max_pixels: int) -> None:
    """Set Pillow's process-wide limits once, at start-up: its bomb guard at or above our own
    pixel limit, and its PNG chunk limit high enough for large ICC profiles (Pillow's 1 MiB
    refused them as corrupt; total text memory stays capped by Pillow's MAX_TEXT_MEMORY)."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_MAX_CHUNK_BYTES)


def decode_image(
    data: bytes, max_pixels: int, max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
) -> np.ndarray:
    """Decode the first frame of an image upload to RGB uint8, EXIF orientation applied."""
    return decode_reduced(data, max_pixels, max_jpeg_scans)[0]


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The largest of libjpeg's 1/8, 1/4 and 1/2 scales (as 8, 4, 2) that leaves the longer
    side at least `min_side` pixels; 1 when none does or `min_side` is 0."""
    for scale in (8, 4, 2):
        if min_side and max(width, height) // scale >= min_side:
            return scale
    return 1


def decode_reduced(
    data: bytes, max_pixels: int, max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS, min_side: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image`, but a large JPEG comes out smaller; also returns the photo's full size.

    A JPEG is decoded at the `draft_scale` for `min_side` through libjpeg's DCT scaling, which
    skips most of the work of decoding every pixel (and of copying them). The full (width,
    height) is the photo's size after EXIF orientation, what boxes are reported against.
    """
    if not data:
        raise ImageError(400, "empty-file", "Empty file", "the uploaded file is empty")
    if is_jpeg(data) and count_scans(data, max_jpeg_scans) > max_jpeg_scans:
        raise ImageError(
            422,
            "image-too-complex",
            "Image too complex",
            f"the JPEG has more than {max_jpeg_scans} scans; re-save it as a baseline JPEG",
        )
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise _bomb(max_pixels) from e
    except UnidentifiedImageError as e:
        raise ImageError(
            400,
            "not-an-image",
            "Not an image",
            f"the file is not a readable image; send {SUPPORTED_TEXT}",
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # Pillow raises many types on malformed headers
        raise _unreadable(e) from e
    with im:
        if im.format not in SUPPORTED_FORMATS:
            raise ImageError(
                415,
                "unsupported-format",
                "Unsupported image format",
                f"{im.format or 'this'} images are not accepted; send {SUPPORTED_TEXT}",
            )
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageError(
                400, "empty-image", "Empty image", f"the image is {width}x{height} pixels"
            )
        if width * height > max_pixels:
            raise _too_large(
                f"the image is {width}x{height} = {width * height:,} pixels; "
                f"the limit is {max_pixels:,}"
            )
        scale = draft_scale(width, height, min_side) if im.format in ("JPEG", "MPO") else 1
        if scale > 1:
            im.draft(im.mode, (max(1, width // scale), max(1, height // scale)))
        stored = im.size
        rgb = _jpeg_by_opencv(data, im, scale)
        if rgb is None:
            _load_first_frame(im, max_pixels)
            rgb = to_rgb(_oriented(im))
        turned = (rgb.shape[1], rgb.shape[0]) != stored
        return rgb, (height, width) if turned else (width, height)


def _jpeg_by_opencv(data: bytes, im: Image.Image, scale: int) -> np.ndarray | None:
    """The RGB pixels of a JPEG that Pillow has opened, checked and drafted to `scale`,
    decoded by OpenCV and oriented as `_oriented` would; None where Pillow must decode it."""
    if im.format not in ("JPEG", "MPO") or im.mode not in _OPENCV_MODES:
        return None
    flags = _OPENCV_SCALES[scale] | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if rgb is None or rgb.shape[1::-1] != im.size:  # refused, or not Pillow's draft size
        return None
    try:
        turn = _ORIENTED.get(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as e:  # as `_oriented`: a broken EXIF block leaves the image as stored
        log.debug("ignoring unreadable EXIF orientation: %s", e)
        turn = None
    return rgb if turn is None else np.ascontiguousarray(turn(rgb))


def _too_large(detail: str) -> ImageError:
    return ImageError(413, "image-too-large", "Image too large", detail)


def _bomb(max_pixels: int) -> ImageError:
    """Pillow's guard fired: say so with our limit, not Pillow's (a different number)."""
    return _too_large(f"the image declares far more than the limit of {max_pixels:,} pixels")


def _load_first_frame(im: Image.Image, max_pixels: int) -> None:
    """Load the frame the file opened on, the first: never seek (TIFF counts pages to seek)."""
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise _bomb(max_pixels) from e
    except MemoryError:
        raise
    except Exception as e:
        raise _unreadable(e) from e


def _unreadable(e: Exception) -> ImageError:
    """A decoding failure: truncated data (Pillow says so in the message) or corrupt data."""
    if "truncated" in str(e).lower():
        return ImageError(
            400,
            "truncated-image",
            "Truncated image",
            "the image data ends early; the upload is incomplete or cut off",
        )
    return ImageError(400, "corrupt-image", "Corrupt image", UNREADABLE)


def _oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag; a broken EXIF block leaves the image as stored.

    In place: otherwise Pillow returns a full copy even when there is nothing to turn (one
    more image-sized buffer per upload: 160 MB at the 40-megapixel limit).
    """
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as e:
        log.debug("ignoring unreadable EXIF orientation: %s", e)
    return im


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: alpha composited on white, wide grays rescaled."""
    try:
        if im.mode == "RGB":
            arr = np.asarray(im)
        elif im.mode in _WIDE_GRAY_MODES:
            arr = np.repeat(wide_gray_to_uint8(np.asarray(im), im.mode)[..., None], 3, axis=2)
        elif im.mode in _ALPHA_MODES or "transparency" in im.info:
            arr = on_white(np.asarray(im.convert("RGBA")))
        elif im.mode == "L":  # numpy, not Pillow's 4-byte-per-pixel RGB plus a copy of it
            arr = np.repeat(np.asarray(im)[..., None], 3, axis=2)
        else:
            arr = np.asarray(im.convert("RGB"))
    except ValueError as e:
        raise ImageError(
            415,
            "unsupported-color-mode",
            "Unsupported colour mode",
            f"{im.mode} images cannot be converted to RGB",
        ) from e
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _chunks(n: int) -> list[slice]:
    return [slice(i, i + CHUNK_PIXELS) for i in range(0, n, CHUNK_PIXELS)]


def on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA uint8 array on opaque white (same values as Pillow's composite).

    Done in chunks of pixels: Pillow's `alpha_composite` route needed three more full-size
    RGBA copies (a 40-megapixel LA PNG peaked at 1.1 GB). `c + (255-c)(255-a)/255` is
    `(c*a + 255*(255-a))/255` rearranged so every term fits in uint16.
    """
    flat = np.ascontiguousarray(rgba).reshape(-1, 4)
    out = np.empty((len(flat), 3), np.uint8)
    for s in _chunks(len(flat)):
        px = flat[s].astype(np.uint16)
        color, clear = px[:, :3], 255 - px[:, 3:]
        out[s] = color + ((255 - color) * clear + 127) // 255
    return out.reshape(*rgba.shape[:-1], 3)


def wide_gray_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer and float grays to 0..255 instead of clipping them.

    16-bit modes divide by 257 (65535 -> 255). Mode "I" holds 16-bit data in practice (old
    Pillow opened 16-bit PNGs as "I"): values within 0..255 are kept, within 0..65535 are
    divided by 257, anything wider is stretched min..max. Floats in 0..1 are multiplied by
    255, floats within 0..255 kept, others stretched.

    The float64 arithmetic runs over chunks of pixels: on the whole array its temporaries
    took 15x the output (a 260 KB float TIFF of 40 megapixels peaked at 1.7 GB).
    """
    flat = np.ascontiguousarray(arr).reshape(-1)
    chunks = _chunks(flat.size)

    def clean(s: slice) -> np.ndarray:
        return np.nan_to_num(flat[s].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    lo, hi = (np.inf, -np.inf) if chunks else (0.0, 0.0)
    for s in chunks:
        a = clean(s)
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    scale: Callable[[np.ndarray], np.ndarray]
    if mode.startswith("I;16"):
        scale = lambda a: a / 257.0  # noqa: E731
    elif mode == "I" and lo >= 0 and hi <= 255 or mode == "F" and lo >= 0 and hi <= 255 and hi > 1:
        scale = lambda a: a  # noqa: E731
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scale = lambda a: a / 257.0  # noqa: E731
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale = lambda a: a * 255.0  # noqa: E731
    elif hi > lo:
        scale = lambda a: (a - lo) * (255.0 / (hi - lo))  # noqa: E731
    else:
        scale = np.zeros_like
    out = np.empty(flat.size, np.uint8)
    for s in chunks:
        out[s] = np.clip(np.rint(scale(clean(s))), 0, 255).astype(np.uint8)
    return out.reshape(np.shape(arr))
