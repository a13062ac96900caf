"""The default face search (`detector=auto`): both BlazeFace models, and tiles where needed.

One BlazeFace pass sees the whole photo shrunk to 192 pixels (full-range) or 128 (short-
range), so a face a few percent of a group photo's width is a few pixels there and is lost,
while the short-range model finds some close-ups that the full-range one misses. So the
search runs the full-range model on the whole photo and, only where it found no face or the
smallest one is narrow, the short-range model on the whole photo and the full-range one on
overlapping tiles (where faces look almost twice as large): a portrait costs one pass.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from app.faces import Box, Face, FaceDetector

SMALL_FACE = 0.15
"""A face narrower than this share of the photo's width sends the search on to tiles."""
TILE_GRID = 2
TILE_OVERLAP = 0.25
"""Share of a tile that its neighbour also covers, so a face cut by one edge is whole in the
next tile."""
SAME_FACE_IOU = 0.3


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a.area + b.area - inter) if inter else 0.0


def tiles(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of TILE_GRID x TILE_GRID tiles covering the photo, overlapping."""
    span = TILE_GRID - (TILE_GRID - 1) * TILE_OVERLAP
    tw, th = int(round(width / span)), int(round(height / span))
    out = []
    for gy in range(TILE_GRID):
        for gx in range(TILE_GRID):
            x = round(gx * (width - tw) / (TILE_GRID - 1))
            y = round(gy * (height - th) / (TILE_GRID - 1))
            out.append((x, y, tw, th))
    return out


def _shifted(face: Face, dx: int, dy: int) -> Face:
    """A tile's detection in the photo's coordinates."""
    b = face.box
    frame = None
    if face.frame is not None:
        fx, fy, fw, fh = face.frame
        frame = (fx + dx, fy + dy, fw, fh)
    keypoints = {k: (x + dx, y + dy) for k, (x, y) in face.keypoints.items()}
    return replace(
        face, box=Box(b.x + dx, b.y + dy, b.width, b.height), frame=frame, keypoints=keypoints
    )


def _cut_by_tile(face: Face, tile: tuple[int, int, int, int], height: int, width: int) -> bool:
    """True when the box touches a tile edge that is not the photo's: likely half a face."""
    x, y, tw, th = tile
    b = face.box  # in tile coordinates
    return (
        (b.x <= 1 and x > 0)
        or (b.y <= 1 and y > 0)
        or (b.x + b.width >= tw - 1 and x + tw < width)
        or (b.y + b.height >= th - 1 and y + th < height)
    )


def merge(faces: list[Face]) -> list[Face]:
    """One detection per face: in order, a face overlapping a kept one is dropped."""
    kept: list[Face] = []
    for face in faces:
        if all(iou(face.box, k.box) < SAME_FACE_IOU for k in kept):
            kept.append(face)
    return kept


class FaceSearch:
    """`detect(rgb)` like a FaceDetector, over the loaded detectors (either may be missing)."""

    def __init__(self, full: FaceDetector | None, short: FaceDetector | None) -> None:
        if full is None and short is None:
            raise ValueError("a face search needs at least one detector")
        self.full, self.short = full, short

    def detect(self, rgb: np.ndarray) -> list[Face]:
        detectors = [d for d in (self.full, self.short) if d is not None]
        faces = detectors[0].detect(rgb)
        ran = 1
        if not faces and len(detectors) > 1:
            faces, ran = detectors[1].detect(rgb), 2
        height, width = rgb.shape[:2]
        if faces and min(f.box.width for f in faces) >= SMALL_FACE * width:
            return faces
        found = sorted(faces, key=lambda f: -(f.score or 0.0))
        for detector in detectors[ran:]:
            found += sorted(detector.detect(rgb), key=lambda f: -(f.score or 0.0))
        # Whole-photo detections first: a tile's detection only adds a face they missed.
        from_tiles: list[Face] = []
        for tile in tiles(height, width):
            x, y, tw, th = tile
            part = rgb[y : y + th, x : x + tw]
            for face in detectors[0].detect(part):
                if not _cut_by_tile(face, tile, height, width):
                    from_tiles.append(_shifted(face, x, y))
        from_tiles.sort(key=lambda f: -(f.score or 0.0))
        return merge(found + from_tiles)
