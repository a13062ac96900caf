"""The files `emotion score` and `emotion batch` read and the rows they write: the photos in
folders (by suffix), and one row per face with its box, score and probabilities."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.labels import EMOTIONS

if TYPE_CHECKING:
    from app.analyzer import ImageResult

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
COLUMNS = ["file", "face", "x", "y", "width", "height", "score", "emotion", *EMOTIONS]


def image_files(paths: Iterable[str]) -> Iterator[Path]:
    """The files given, and every image file below the folders given, in sorted order."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def rows(path: Path, result: ImageResult) -> list[dict]:
    """One row per face of `result`, `face` counting from 0."""
    return [
        {
            "file": str(path),
            "face": i,
            "x": f.box.x,
            "y": f.box.y,
            "width": f.box.width,
            "height": f.box.height,
            "score": None if f.score is None else round(f.score, 4),
            "emotion": f.emotion,
            **{e: round(p, 4) for e, p in f.probabilities.items()},
        }
        for i, f in enumerate(result.faces)
    ]
