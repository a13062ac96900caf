"""Score registered models on whole photos, end to end through the service's own code.

A photo folder has `images/` and a `labels.csv` with one labelled face box per row (the
layout of `expw-dev/val`). Each photo goes through `app.pipeline` exactly as an upload to
`/predict` does with the given detector: decode, detect, align, preprocess, the registered
ONNX model. The detected face whose box overlaps a labelled one best (IoU at least 0.3)
answers for it; a labelled face with no such detection counts as wrong ("missed"). This,
next to FER2013 `test/`, is the number that decides which model ships.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.face_search import FaceSearch, iou
from app.faces import Box, FaceDetector
from app.inference import OnnxModel
from app.labels import EMOTIONS
from app.pipeline import Options, classify, prepare_image
from app.registry import load_registry
from app.runtime import DetectorChoice
from app.settings import Settings
from training.metrics import report
from training.plots import plot_confusion

MIN_IOU = 0.3
MISSED = "missed"
WIDTH_EDGES = (48, 96, 192)
"""Labelled face widths (pixels) where `by_face_width` splits: the 48 px that the models
read, then doublings. Whether larger faces score better says whether larger inputs could."""


@dataclass(frozen=True)
class LabelledFace:
    path: str
    box: Box
    label: int


def read_labels(folder: Path) -> list[LabelledFace]:
    """The labelled face boxes of `folder/labels.csv` (path relative to the folder)."""
    faces = []
    with open(folder / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            left, top, right, bottom = (
                int(float(row[k])) for k in ("left", "top", "right", "bottom")
            )
            faces.append(
                LabelledFace(
                    row["path"],
                    Box(left, top, right - left, bottom - top),
                    EMOTIONS.index(row["label"]),
                )
            )
    return faces


def match(labelled: Box, found: list[Box]) -> int | None:
    """Index of the detection overlapping `labelled` best, if any reaches MIN_IOU."""
    scores = [iou(labelled, b) for b in found]
    if not scores or max(scores) < MIN_IOU:
        return None
    return int(np.argmax(scores))


def score_models(
    folder: Path,
    models: list[OnnxModel],
    detector: FaceDetector | FaceSearch | None,
    settings: Settings,
) -> tuple[list[LabelledFace], list[np.ndarray], list[int]]:
    """(labelled faces, each model's probabilities with a row of zeros where missed, faces
    missed each).

    Each photo goes through the pipeline once per distinct model input, not once per model:
    the faces found do not depend on the model, only their preprocessing does.
    """
    labelled = read_labels(folder)
    options = Options.from_settings(detector, "none", settings.max_faces_limit, settings)
    by_photo: dict[str, list[int]] = {}
    for i, face in enumerate(labelled):
        by_photo.setdefault(face.path, []).append(i)
    probs = [np.zeros((len(labelled), len(EMOTIONS))) for _ in models]
    missed = [0] * len(models)
    for n, (path, rows) in enumerate(by_photo.items(), 1):
        upload, passes = (folder / path).read_bytes(), {}
        for k, model in enumerate(models):
            if model.spec not in passes:  # the image and which face answers each label
                image = prepare_image(upload, model.spec, options)
                boxes = [f.box for f in image.faces]
                passes[model.spec] = (image, [match(labelled[i].box, boxes) for i in rows])
            image, matched = passes[model.spec]
            result = classify(model, [image])[0]
            if isinstance(result, Exception):
                raise result
            for i, j in zip(rows, matched, strict=True):
                if j is None:
                    missed[k] += 1
                else:
                    probs[k][i] = result[j]
        if n % 100 == 0 or n == len(by_photo):
            print(f"photos: {n}/{len(by_photo)}", flush=True)
    return labelled, probs, missed


def metrics_with_misses(y: np.ndarray, probs: np.ndarray, missed: int) -> dict:
    """`training.metrics.report` where a missed face is a wrong answer, plus the miss count."""
    found = probs.sum(axis=1) > 0
    # A missed face gets a prediction that is never right: one-hot on a class not its own.
    filled = probs.copy()
    filled[~found] = np.eye(len(EMOTIONS))[(y[~found] + 1) % len(EMOTIONS)]
    out = report(y, filled, list(EMOTIONS))
    out.pop("roc_auc"), out.pop("ece"), out.pop("nll")  # meaningless with stand-in rows
    out["faces_found"] = int(found.sum())
    out["faces_missed"] = int(missed)
    out["found_fraction"] = float(found.mean())
    out["accuracy_on_found"] = (
        float(np.mean(probs[found].argmax(1) == y[found])) if found.any() else 0.0
    )
    return out


def by_face_width(y: np.ndarray, probs: np.ndarray, widths: np.ndarray) -> list[dict]:
    """Faces, faces found, accuracy (a missed face is wrong) and accuracy on the found faces,
    per band of labelled face width between `WIDTH_EDGES`."""
    found = probs.sum(axis=1) > 0
    right = found & (probs.argmax(1) == y)
    bands = []
    for lo, hi in zip((0, *WIDTH_EDGES), (*WIDTH_EDGES, None), strict=True):
        band = (widths >= lo) & (widths < hi if hi is not None else True)
        n, n_found = int(band.sum()), int((band & found).sum())
        bands.append(
            {
                "min_px": lo,
                "max_px": hi,
                "faces": n,
                "found": n_found,
                "accuracy": float(right[band].mean()) if n else None,
                "accuracy_on_found": float(right[band & found].sum() / n_found)
                if n_found
                else None,
            }
        )
    return bands


def confusion_with_misses(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Counts (7 x 8): true class by predicted class, the last column for missed faces."""
    cm = np.zeros((len(EMOTIONS), len(EMOTIONS) + 1), dtype=int)
    found = probs.sum(axis=1) > 0
    pred = np.where(found, probs.argmax(1), len(EMOTIONS))
    np.add.at(cm, (y, pred), 1)
    return cm


def compare_on_photos(
    folder: str | Path,
    models: list[str] | None,
    out: str | Path,
    detector: DetectorChoice = "auto",
    settings: Settings | None = None,
) -> list[dict]:
    """Score each registered model (default: all) on the photo folder; table and pictures in `out`."""
    settings = settings or Settings()
    registry = load_registry(Path(settings.models_dir))
    loaded = []
    for name in models or [m.name for m in registry.models]:
        entry = registry.get(name)
        if entry is None:
            raise KeyError(f"no model {name!r} in {settings.models_dir}")
        loaded.append(OnnxModel(entry, Path(settings.models_dir), settings.inference_threads))
    return score_on_photos(folder, loaded, out, detector, settings)


def score_on_photos(
    folder: str | Path,
    models: list[OnnxModel],
    out: str | Path,
    detector: DetectorChoice = "auto",
    settings: Settings | None = None,
) -> list[dict]:
    """Score loaded models, registered or not (the `fer` baseline), on the photo folder:
    `out/NAME/` gets each one's metrics and confusion matrix, `out/photos.md` the table."""
    folder, out = Path(folder), Path(out)
    settings = settings or Settings()
    loaded = {
        kind: FaceDetector.for_kind(kind, settings)
        for kind in ("full", "short")
        if detector in (kind, "auto")
    }
    face_detector = (
        FaceSearch(loaded["full"], loaded["short"]) if detector == "auto" else loaded.get(detector)
    )
    rows = []
    try:
        labelled, all_probs, all_missed = score_models(folder, models, face_detector, settings)
        y = np.asarray([f.label for f in labelled])
        widths = np.asarray([f.box.width for f in labelled])
        for model, probs, missed in zip(models, all_probs, all_missed, strict=True):
            name, version = model.entry.name, model.entry.version
            m = metrics_with_misses(y, probs, missed)
            m["by_face_width"] = by_face_width(y, probs, widths)
            m |= {"model": name, "version": version, "detector": detector, "data": str(folder)}
            target = out / name
            target.mkdir(parents=True, exist_ok=True)
            (target / "photo_metrics.json").write_text(json.dumps(m, indent=2))
            plot_confusion(
                confusion_with_misses(y, probs),
                [*EMOTIONS, MISSED],
                target / "photo_confusion_matrix.png",
                f"{name} {version} on {folder.name} photos (detector={detector})",
                rows=list(EMOTIONS),
            )
            rows.append(m)
            print(
                f"{name:24s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
                f"lowest recall {min(c['recall'] for c in m['per_class'].values()):.2f}  "
                f"found {m['faces_found']}/{m['n']}"
            )
            print(
                "  accuracy on found faces by width: "
                + ", ".join(
                    f"{b['min_px']}-{b['max_px'] or ''} px {b['accuracy_on_found']:.3f} "
                    f"({b['found']})"
                    for b in m["by_face_width"]
                    if b["found"]
                )
            )
    finally:
        for d in loaded.values():
            d.close()
    write_table(rows, out / "photos.md")
    return rows


def write_table(rows: list[dict], path: Path) -> None:
    head = "| model | detector | accuracy | macro-F1 | " + " | ".join(EMOTIONS) + " | faces found |"
    lines = [head, "|" + "---|" * (5 + len(EMOTIONS))]
    for m in rows:
        recalls = " | ".join(f"{m['per_class'][c]['recall']:.2f}" for c in EMOTIONS)
        lines.append(
            f"| {m['model']} {m['version']} | {m['detector']} | {m['accuracy']:.3f} | "
            f"{m['macro_f1']:.3f} | {recalls} | {m['faces_found']}/{m['n']} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"table: {path}")
