"""Draw what `/predict` found onto the photo: a box per face, labelled with its top emotion.

People check a result faster by looking than by reading boxes and seven probabilities, so
`/predict/annotated` returns the picture. Sizes follow the image's shorter side, so the
marks read the same on a thumbnail and on a 12-megapixel photo. The drawn picture is first
scaled down so its longest side is at most a configured maximum: that bounds the reply's
size and the encoder's memory, and keeps JPEG under its 65,535-pixel side limit.
"""

from __future__ import annotations

import io
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.faces import Face
from app.labels import EMOTIONS

PictureFormat = Literal["jpeg", "png"]
MEDIA_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png"}

COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 50, 50),
    "disgust": (70, 170, 70),
    "fear": (150, 90, 210),
    "happy": (250, 200, 0),
    "neutral": (170, 170, 170),
    "sad": (50, 120, 230),
    "surprise": (255, 140, 0),
}


def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black text on light label colours, white on dark ones."""
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def fit(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The photo scaled down so its longest side is at most `max_side`, and the scale used."""
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def annotate(
    rgb: np.ndarray, faces: list[Face], probs: np.ndarray, max_side: int = 2048
) -> Image.Image:
    """A copy of the photo, at most `max_side` pixels on its longest side, with each face's
    box and "emotion NN%" label above it."""
    small, scale = fit(rgb, max_side)
    image = Image.fromarray(small)
    draw = ImageDraw.Draw(image)
    short = min(image.size)
    line = max(2, round(short / 250))
    font = ImageFont.load_default(size=max(12, round(short / 28)))
    pad = max(2, line)
    for face, p in zip(faces, probs, strict=True):
        k = int(np.argmax(p))
        emotion, color = EMOTIONS[k], COLORS[EMOTIONS[k]]
        b = face.box
        x, y0 = round(b.x * scale), round(b.y * scale)
        w, h = max(1, round(b.width * scale)), max(1, round(b.height * scale))
        draw.rectangle((x, y0, x + w - 1, y0 + h - 1), outline=color, width=line)
        label = f"{emotion} {p[k]:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tag_h = bottom - top + 2 * pad
        # Above the box when it fits, else just inside its top edge.
        y = y0 - tag_h if y0 >= tag_h else y0
        draw.rectangle((x, y, x + right - left + 2 * pad, y + tag_h), fill=color)
        draw.text((x + pad - left, y + pad - top), label, fill=_ink(color), font=font)
    return image


def encode(image: Image.Image, fmt: PictureFormat) -> bytes:
    """The picture as JPEG (quality 90) or PNG bytes."""
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, "PNG", compress_level=3)
    return out.getvalue()
