"""Test photos built from scikit-image's sample data, encoded in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

# Where the astronaut's face is in data.astronaut() (short-range detector, x y w h).
ASTRONAUT_FACE = (177, 82, 95, 95)


def encode(rgb: np.ndarray | Image.Image, fmt: str = "JPEG", **options) -> bytes:
    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def png_header(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    """A PNG that declares any size (and bit depth, colour type) but holds almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def astronaut() -> np.ndarray:
    """512x512 RGB, one frontal face."""
    return np.ascontiguousarray(data.astronaut())


def no_face() -> np.ndarray:
    """A cup of coffee: no face in it."""
    return np.ascontiguousarray(data.coffee())


def group() -> np.ndarray:
    """640x360 with three copies of the astronaut's face at decreasing sizes.

    The full-range detector finds all three; the short-range one the two larger ones.
    """
    face = astronaut()[20:260, 110:350]
    canvas = np.full((360, 640, 3), 200, np.uint8)
    for x, y, side in [(0, 40, 280), (290, 60, 200), (500, 100, 140)]:
        canvas[y : y + side, x : x + side] = cv2.resize(
            face, (side, side), interpolation=cv2.INTER_AREA
        )
    return canvas


def group_1080p() -> np.ndarray:
    """1920x1080, four copies of the astronaut's face side by side on a photo background."""
    face = astronaut()[20:260, 110:350]
    canvas = cv2.resize(no_face(), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    for x in (100, 560, 1020, 1480):
        canvas[200:500, x : x + 300] = cv2.resize(face, (300, 300), interpolation=cv2.INTER_AREA)
    return canvas


def rotated(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated about the centre (counter-clockwise), borders reflected."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def exif_rotated_jpeg(upright: np.ndarray) -> bytes:
    """A JPEG whose pixels are stored turned 90 degrees, with EXIF Orientation=6 to undo it.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    upright image turned 90 degrees counter-clockwise.
    """
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", exif=exif.tobytes(), quality=95)


def astronaut_640x480() -> np.ndarray:
    """The benchmark photo: 640x480 with one face, cut and scaled from the astronaut."""
    return cv2.resize(astronaut()[64:448, 0:512], (640, 480), interpolation=cv2.INTER_LINEAR)


def many_scan_jpeg(scans: int, side: int = 64) -> bytes:
    """A progressive JPEG made of its first (DC) scan repeated `scans` times.

    libjpeg decodes every scan over the whole image, so the cost grows with the scan count
    while the file stays small: what a decode budget must refuse.
    """
    base = encode(np.full((side, side, 3), 128, np.uint8), "JPEG", progressive=True)
    pos, head, found = 2, bytearray(base[:2]), []
    while pos < len(base) and base[pos + 1] != 0xD9:
        marker = base[pos + 1]
        length = struct.unpack(">H", base[pos + 2 : pos + 4])[0]
        if marker != 0xDA:
            if not found:
                head += base[pos : pos + 2 + length]
            pos += 2 + length
            continue
        end = base.find(b"\xff", pos + 2 + length)
        while base[end + 1] == 0 or 0xD0 <= base[end + 1] <= 0xD7:
            end = base.find(b"\xff", end + 2)
        found.append(base[pos:end])
        pos = end
    return bytes(head) + found[0] * scans + b"\xff\xd9"


def many_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of `pages` 1x1 gray pages sharing one strip: small to write,
    costly for a reader that counts every page to find the first."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 3, 1),  # width
        (257, 3, 1),  # height
        (258, 3, 8),  # bits per sample
        (262, 3, 1),  # black is zero
        (273, 4, 8),  # strip offset: the pixel byte right after the header
        (277, 3, 1),  # samples per pixel
        (278, 3, 1),  # rows per strip
        (279, 4, 1),  # strip byte count
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 12) + b"\x80\x00\x00\x00")
    for page in range(pages):
        nxt = 12 + (page + 1) * ifd_size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHI", tag, kind, 1) + struct.pack("<I", value)
        out += struct.pack("<I", nxt)
    return bytes(out)


def photo_folder(root: Path, count: int, broken: int = 0) -> list[Path]:
    """`count` varied photos under `root` (one face, three faces, none; turned, scaled;
    JPEG and PNG, some in a subfolder) and `broken` files that are not images. Sorted."""
    kinds = [astronaut_640x480(), group(), no_face(), astronaut()]
    (root / "more").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb = kinds[i % len(kinds)]
        if i % 3 == 1:
            rgb = rotated(rgb, 8.0 * (i % 5 - 2))
        fmt, suffix = ("PNG", "png") if i % 7 == 6 else ("JPEG", "jpg")
        path = root / ("more" if i % 2 else "") / f"photo-{i:05d}.{suffix}"
        path.write_bytes(encode(rgb, fmt, **({"quality": 70 + i % 25} if fmt == "JPEG" else {})))
        paths.append(path)
    for i in range(broken):
        path = root / f"broken-{i}.jpg"
        path.write_bytes(b"\xff\xd8 not really a jpeg" if i % 2 == 0 else b"")
        paths.append(path)
    return sorted(paths)
