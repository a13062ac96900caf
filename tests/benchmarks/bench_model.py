"""Per-face latency of ONNX models in onnxruntime at batch 1 and batch 32 (medians).

    python tests/benchmarks/bench_model.py models/emonet-trio-int8.onnx [more.onnx ...] [--threads 2] \
        [--data ../shared/fer2013]

Run it on an otherwise idle machine; it reports the median over many repetitions. With
`--data` each run scores the next real test faces (prepared as the registry beside the file
says) and the mean is reported too: an early-exit cascade spends more on doubtful faces, so
its cost per face is only meaningful on real ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from training.latency import prepared_test_faces, session, time_per_face  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--data", help="Kaggle-layout folder: time on its test faces")
    args = p.parse_args()
    print(
        f"{'model':40s} {'MB':>6s} {'batch 1 ms/face':>16s} {'batch 32 ms/face':>17s}"
        + ("   (median / mean over runs on test faces)" if args.data else "")
    )
    for path in args.models:
        sess = session(path, args.threads)
        faces = prepared_test_faces(path, args.data) if args.data else None
        cells = []
        for batch in (1, 32):
            t = time_per_face(sess, batch, args.seconds, faces)
            cells.append(
                f"{t.median_ms:.3f} / {t.mean_ms:.3f}" if args.data else f"{t.median_ms:.3f}"
            )
        print(f"{str(path):40s} {path.stat().st_size / 1e6:6.2f} {cells[0]:>16s} {cells[1]:>17s}")


if __name__ == "__main__":
    main()
