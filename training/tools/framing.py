"""Measure how FER2013 frames a face, so `app.align` can crop photos the same way.

A model trained on FER2013 has only seen faces framed the way that dataset framed them. This
script runs our own detector over FER2013 crops and measures, in the detector's terms, where
the crop's square frame sits: its side relative to the detected box, and its centre relative
to the eye centre (in the eye-levelled frame, in box widths). `app.align` bakes in the
medians. Run it (read-only on the dataset, nothing is copied) with:

    python -m training.tools.framing ../shared/fer2013 --count 600

FER crops are tiny and the face fills them, which detectors dislike, so each crop is
upscaled (to 192x192) and padded by replicating its border before detection; the padding
does not move the frame, which stays the original crop.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.assets import DetectorKind, detector_model_path
from app.faces import Face, FaceDetector
from app.labels import EMOTIONS


@dataclass(frozen=True)
class FrameSample:
    """One crop's frame expressed in the detected face's own measures."""

    side_per_box: float  # frame side / detected box width
    side_per_eyes: float  # frame side / eye distance
    dx_per_box: float  # frame centre - eye centre, along the eye line, / box width
    dy_per_box: float  # ... perpendicular to it (positive: towards the mouth)
    roll_deg: float  # eye-line angle; FER crops are not levelled, so only its spread matters


def measure(face: Face, frame_x: float, frame_y: float, frame_side: float) -> FrameSample | None:
    """Express a known square frame (top-left, side) in terms of a detection."""
    if face.frame is None or "right_eye" not in face.keypoints or "left_eye" not in face.keypoints:
        return None
    box_w = face.frame[2]
    rx, ry = face.keypoints["right_eye"]
    lx, ly = face.keypoints["left_eye"]
    eyes = math.hypot(lx - rx, ly - ry)
    if box_w <= 0 or eyes <= 0:
        return None
    angle = math.atan2(ly - ry, lx - rx)
    ex, ey = (rx + lx) / 2, (ry + ly) / 2
    cx, cy = frame_x + frame_side / 2 - ex, frame_y + frame_side / 2 - ey
    # Rotate the offset into the face's frame (undo the roll).
    c, s = math.cos(-angle), math.sin(-angle)
    dx, dy = c * cx - s * cy, s * cx + c * cy
    return FrameSample(
        frame_side / box_w, frame_side / eyes, dx / box_w, dy / box_w, math.degrees(angle)
    )


def sample_files(data_dir: Path, count: int, seed: int) -> list[Path]:
    """A seeded sample of training crops spread over every class folder."""
    files = sorted(p for label in EMOTIONS for p in (data_dir / "train" / label).glob("*.jpg"))
    if not files:
        raise SystemExit(f"no train/<class>/*.jpg crops under {data_dir}")
    random.Random(seed).shuffle(files)
    return files[:count]


def collect(files: list[Path], detector: FaceDetector, upscale: int, pad: int) -> list[FrameSample]:
    samples: list[FrameSample] = []
    for path in files:
        with Image.open(path) as im:
            gray = np.asarray(im.convert("L"))
        gray = cv2.resize(gray, (upscale, upscale), interpolation=cv2.INTER_CUBIC)
        rgb = cv2.copyMakeBorder(
            np.repeat(gray[..., None], 3, axis=2), pad, pad, pad, pad, cv2.BORDER_REPLICATE
        )
        faces = detector.detect(np.ascontiguousarray(rgb))
        if not faces:
            continue
        face = max(faces, key=lambda f: f.box.area)
        sample = measure(face, pad, pad, upscale)
        if sample is not None:
            samples.append(sample)
    return samples


def summarize(samples: list[FrameSample]) -> dict[str, tuple[float, float, float]]:
    """Quartiles (25th, median, 75th) of every measure."""
    out = {}
    for name in FrameSample.__dataclass_fields__:
        values = np.array([getattr(s, name) for s in samples])
        q1, q2, q3 = np.percentile(values, [25, 50, 75])
        out[name] = (float(q1), float(q2), float(q3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.tools.framing", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "data", type=Path, help="FER2013 folder in Kaggle layout (train/<class>/*.jpg)"
    )
    parser.add_argument("--count", type=int, default=600, help="crops to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--upscale", type=int, default=192, help="side the 48x48 crop is enlarged to"
    )
    parser.add_argument("--pad", type=int, default=96, help="replicated border added around it")
    parser.add_argument("--detector", choices=["short", "full", "both"], default="both")
    args = parser.parse_args(argv)

    files = sample_files(args.data, args.count, args.seed)
    kinds: list[DetectorKind] = ["short", "full"] if args.detector == "both" else [args.detector]
    for kind in kinds:
        with FaceDetector(detector_model_path(kind)) as detector:
            samples = collect(files, detector, args.upscale, args.pad)
        print(f"\n{kind}-range detector: face found in {len(samples)}/{len(files)} crops")
        print(f"  {'measure':<14} {'median':>8} {'q25':>8} {'q75':>8}")
        for name, (q1, q2, q3) in summarize(samples).items():
            print(f"  {name:<14} {q2:8.3f} {q1:8.3f} {q3:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
