"""Both detector engines on a folder of photos: do they find the same faces, and how fast.

    python tests/benchmarks/compare_detectors.py ../shared/expw-dev/val/images [--rounds 3]
    python tests/benchmarks/compare_detectors.py --synthetic     # tests/images.py's photos

For each BlazeFace file it runs `app.blazeface` (LiteRT, the default engine) and MediaPipe's
Tasks API on every photo, and reports faces found by each, photos where the number of faces
differs, faces whose boxes differ, and the largest keypoint and score differences. Then it
times one call per photo for each engine, engine after engine, and reports the median of
the per-round medians (ms per photo, wall clock, one thread).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from app.faces import FaceDetector  # noqa: E402
from app.settings import Settings  # noqa: E402


def load_photos(folder: Path | None) -> dict[str, np.ndarray]:
    if folder is None:
        from tests import images

        return {
            "640x480": images.astronaut_640x480(),
            "group": images.group(),
            "1080p": images.group_1080p(),
        }
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in files}


def compare(photos: dict[str, np.ndarray], direct: FaceDetector, tasks: FaceDetector) -> str:
    faces = [0, 0]
    counts_differ = boxes_differ = 0
    keypoints = scores = 0.0
    for rgb in photos.values():
        ours, theirs = direct.detect(rgb), tasks.detect(rgb)
        faces[0] += len(ours)
        faces[1] += len(theirs)
        if len(ours) != len(theirs):
            counts_differ += 1
            continue
        for a, b in zip(ours, theirs, strict=True):
            boxes_differ += a.box != b.box or a.frame != b.frame
            scores = max(scores, abs(a.score - b.score))
            for name, point in b.keypoints.items():
                keypoints = max(
                    keypoints, float(np.abs(np.subtract(a.keypoints[name], point)).max())
                )
    return (
        f"faces {faces[0]} (litert) / {faces[1]} (tasks); photos with another count "
        f"{counts_differ}; boxes differing {boxes_differ}; largest keypoint difference "
        f"{keypoints:.2g} px, score difference {scores:.2g}"
    )


def time_engines(
    photos: dict[str, np.ndarray], detectors: dict[str, FaceDetector], rounds: int
) -> dict[str, float]:
    """Median ms per photo of each engine: one engine over every photo, then the next (the
    Tasks API's threads would otherwise disturb the other engine's calls), the order turned
    round by round."""
    medians: dict[str, list[float]] = {name: [] for name in detectors}
    order = list(detectors)
    for _ in range(rounds):
        for name in order:
            spent = []
            for rgb in photos.values():
                start = time.perf_counter()
                detectors[name].detect(rgb)
                spent.append(time.perf_counter() - start)
            medians[name].append(statistics.median(spent) * 1e3)
        order.reverse()
    return {name: statistics.median(values) for name, values in medians.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("folder", nargs="?", type=Path, help="photos (.jpg/.jpeg/.png)")
    p.add_argument("--synthetic", action="store_true", help="tests/images.py's photos instead")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if (args.folder is None) == (not args.synthetic):
        p.error("give a folder or --synthetic")
    photos = load_photos(None if args.synthetic else args.folder)
    settings = Settings()
    tasks_settings = settings.model_copy(update={"detector_engine": "tasks"})
    print(f"{len(photos)} photos")
    for kind in ("short", "full"):
        detectors = {
            "litert": FaceDetector.for_kind(kind, settings),
            "tasks": FaceDetector.for_kind(kind, tasks_settings),
        }
        try:
            print(f"{kind}: {compare(photos, detectors['litert'], detectors['tasks'])}")
            timed = time_engines(photos, detectors, args.rounds)
            cells = ", ".join(f"{name} {ms:.2f} ms" for name, ms in timed.items())
            print(f"{kind}: median per photo, median of {args.rounds} rounds: {cells}")
        finally:
            for detector in detectors.values():
                detector.close()


if __name__ == "__main__":
    main()
