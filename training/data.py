"""Load a Kaggle-layout face dataset (`<split>/<class>/*`) into memory as 48x48 gray arrays.

FER2013 folders hold ready 48x48 crops. Folders of ordinary photos are accepted too:
any image that is not already a small gray face is run through the service's own face
detector and aligner, so training sees faces framed exactly as the service frames them.
Decoded splits are cached as .npz keyed by a fingerprint of the files, because decoding
28k JPEGs takes longer than an epoch of a small model's evaluation. `pack_split` writes a
split as one compressed file (`<split>.pack.xz`) that keeps the folder's fingerprint: a
folder holding such packs loads like the image folders, for machines without the images.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from app.labels import EMOTIONS
from training.run_config import RunConfig, RunOptions

if TYPE_CHECKING:
    from app.faces import FaceDetector

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
FACE_SIZE = 48
# How photos are framed (`_PhotoCropper`): part of the cache key, so a change re-decodes.
FRAMING = "auto"


@dataclass
class Split:
    """Images (N, 48, 48) uint8 and integer labels (N,) in EMOTIONS order."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def list_files(data_dir: Path, split: str) -> list[tuple[Path, int]]:
    """Every image file of a split with its class index, sorted for reproducibility."""
    root = Path(data_dir) / split
    if not root.is_dir():
        raise FileNotFoundError(f"no {split}/ folder in {data_dir}")
    strays = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    strays = [d for d in strays if d not in EMOTIONS]
    if strays:  # a misspelt class would otherwise vanish from training without a word
        raise RuntimeError(
            f"{root} has folders that are not classes: {', '.join(strays)} "
            f"(class folders: {', '.join(EMOTIONS)})"
        )
    files: list[tuple[Path, int]] = []
    for idx, label in enumerate(EMOTIONS):
        folder = root / label
        if folder.is_dir():
            files += [
                (p, idx) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
    if not files:
        raise FileNotFoundError(f"{root} holds no images in class folders {EMOTIONS}")
    return files


def limit_per_class(
    files: list[tuple[Path, int]], k: int | None, seed: int
) -> list[tuple[Path, int]]:
    """Keep at most k files of each class, drawn with a seeded generator."""
    if not k:
        return files
    rng = np.random.default_rng(seed)
    out: list[tuple[Path, int]] = []
    for idx in range(len(EMOTIONS)):
        cls = [f for f in files if f[1] == idx]
        keep = sorted(rng.permutation(len(cls))[:k])
        out += [cls[i] for i in keep]
    return out


def fingerprint(files: list[tuple[Path, int]]) -> str:
    """A short hash of file names, sizes and labels: which data a model was trained on."""
    h = hashlib.sha256()
    for path, label in files:
        h.update(f"{path.parent.name}/{path.name}:{path.stat().st_size}:{label}\n".encode())
    return h.hexdigest()[:16]


class _PhotoCropper:
    """Finds and aligns the largest face in a photo with the service's own code.

    It searches as the service's default `detector=auto` does (`app.face_search`). The
    detectors are loaded for the first photo only: folders of ready crops never need them.
    """

    def __init__(self) -> None:
        self._detectors: dict[str, FaceDetector] = {}

    def crop(self, rgb: np.ndarray) -> np.ndarray | None:
        from app.align import align_crop
        from app.face_search import FaceSearch

        if not self._detectors:
            from app.assets import detector_model_path
            from app.faces import FaceDetector
            from app.settings import Settings

            score = Settings().detector_min_score
            self._detectors = {
                k: FaceDetector(detector_model_path(k), score) for k in ("full", "short")
            }
        faces = FaceSearch(self._detectors["full"], self._detectors["short"]).detect(rgb)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.box.area)
        return align_crop(rgb, face, FACE_SIZE)

    def close(self) -> None:
        for detector in self._detectors.values():
            detector.close()


def _load_face(path: Path, cropper: _PhotoCropper) -> np.ndarray | None:
    with Image.open(path) as im:
        im.seek(0)
        if im.size == (FACE_SIZE, FACE_SIZE):
            return np.asarray(im.convert("L"), dtype=np.uint8)
        from app.preprocess import to_gray

        crop = cropper.crop(np.asarray(im.convert("RGB")))
    return None if crop is None else to_gray(crop)


def cache_dir() -> Path:
    return Path(os.environ.get("EMOTION_CACHE_DIR", ".cache/datasets"))


def pack_path(data_dir: Path | str, split: str) -> Path:
    return Path(data_dir) / f"{split}.pack.xz"


def pack_split(data_dir: Path | str, split: str, out_dir: Path | str) -> Path:
    """Write a decoded split and its fingerprint to `out_dir/<split>.pack.xz`."""
    data, fp = load_split(data_dir, split)
    buf = io.BytesIO()
    np.savez(buf, x=data.x, y=data.y, fingerprint=np.asarray(fp))
    out = pack_path(out_dir, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(buf.getvalue()))
    return out


def _load_pack(path: Path, limit: int | None, seed: int) -> tuple[Split, str]:
    """A packed split, cut to `limit` faces per class like `limit_per_class` cuts files."""
    with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as z:
        data, fp = Split(z["x"], z["y"]), str(z["fingerprint"])
    if not limit:
        return data, fp
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate(
            [
                np.flatnonzero(data.y == c)[
                    np.sort(rng.permutation(int((data.y == c).sum()))[:limit])
                ]
                for c in range(len(EMOTIONS))
            ]
        )
    )
    fp = hashlib.sha256(f"{fp}:{limit}:{seed}".encode()).hexdigest()[:16]
    return Split(data.x[keep], data.y[keep]), fp


def load_split(
    data_dir: Path | str, split: str, limit: int | None = None, seed: int = 0
) -> tuple[Split, str]:
    """Decode one split (cached, or from a pack) and return it with its data fingerprint."""
    if pack_path(data_dir, split).is_file():
        return _load_pack(pack_path(data_dir, split), limit, seed)
    files = limit_per_class(list_files(Path(data_dir), split), limit, seed)
    fp = fingerprint(files)
    cached = cache_dir() / f"{split}-{fp}-{FRAMING}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return Split(z["x"], z["y"]), fp
    xs, ys, skipped = [], [], 0
    cropper = _PhotoCropper()
    try:
        for path, label in files:
            face = _load_face(path, cropper)
            if face is None:
                skipped += 1
                continue
            xs.append(face)
            ys.append(label)
    finally:
        cropper.close()
    if skipped:
        print(f"{split}: no face found in {skipped} of {len(files)} images; they are left out")
    data = Split(np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64))
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cached, x=data.x, y=data.y)
    return data, fp


def stratified_split(data: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded, class-stratified train/validation split taken from the training folder."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(data.y):
        idx = rng.permutation(np.flatnonzero(data.y == c))
        n_val = max(1, int(round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr = np.sort(np.concatenate(train_idx))
    va = np.sort(np.concatenate(val_idx))
    return Split(data.x[tr], data.y[tr]), Split(data.x[va], data.y[va])


def class_weights(y: np.ndarray, power: float = 1.0) -> dict[int, float]:
    """Inverse-frequency ("balanced") class weights, softened by `power` (0 = none, 1 = full)."""
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(np.float64)
    present = counts > 0
    w = np.ones_like(counts)
    w[present] = (counts[present].sum() / (present.sum() * counts[present])) ** power
    w[present] /= (w[present] * counts[present]).sum() / counts[present].sum()
    return {i: float(v) for i, v in enumerate(w)}


def recorded_split_seed(options: RunOptions | dict) -> int:
    """The split seed a run's `config.json` options imply (older runs have only `seed`)."""
    if isinstance(options, RunOptions):
        options = options.recorded()
    split_seed = options.get("split_seed")
    return options["seed"] if split_seed is None else split_seed


def check_same_split(run: Path, config: RunConfig | dict, reference: RunConfig | dict) -> None:
    """Raise unless `run` trained on the reference's data with its validation split.

    Ensemble members and distillation teachers must agree on both: otherwise one
    network's validation faces are another's training faces.
    """
    config, reference = RunConfig.coerce(config), RunConfig.coerce(reference)
    for key in ("data_fingerprint", "val_fraction"):
        if getattr(config, key) != getattr(reference, key):
            raise RuntimeError(
                f"{run}: {key} {getattr(config, key)!r} differs from {getattr(reference, key)!r}"
            )
    if recorded_split_seed(config.options) != recorded_split_seed(reference.options):
        raise RuntimeError(f"{run}: another validation split; train with the same --split-seed")
