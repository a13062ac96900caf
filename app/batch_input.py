"""What `emotion batch` reads: a folder, a glob, or a manifest (CSV/Parquet with a path column).

A folder or a glob is listed here, on the driver, with the same image suffixes as
`emotion score`; a manifest is read by Ray Data itself so that a listing of millions of
paths is never held in one process. Either way the dataset has one column, `file`.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from app.face_table import IMAGE_SUFFIXES, image_files

MANIFEST_SUFFIXES = {".csv", ".parquet"}
PATH_COLUMNS = ("path", "file")
"""The manifest column that names the photos: the first of these that it has."""


def listed_files(source: str) -> list[str] | None:
    """The image files of a folder or a glob, sorted; None when `source` is a manifest."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return None
    if path.is_dir():
        return [str(p) for p in image_files([source])]
    if path.is_file():
        return [source]
    return sorted(
        p
        for p in glob.glob(source, recursive=True)
        if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
    )


def read_listing(source: str) -> Any:
    """A Ray dataset of `{"file": path}` rows, one per photo to score (raises ValueError)."""
    import ray.data

    files = listed_files(source)
    if files is not None:
        if not files:
            raise ValueError(f"no image files in {source}")
        return ray.data.from_items([{"file": f} for f in files])
    if source.lower().endswith(".csv"):
        ds = ray.data.read_csv(source)
    else:
        ds = ray.data.read_parquet(source)
    names = ds.columns()
    column = next((c for c in PATH_COLUMNS if c in names), None)
    if column is None:
        raise ValueError(f"{source} has no {' or '.join(PATH_COLUMNS)} column (it has {names})")
    ds = ds.select_columns([column])
    return ds if column == "file" else ds.rename_columns({column: "file"})
