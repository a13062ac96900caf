"""Per-face latency of ONNX models in onnxruntime at batch 1 and batch 32 (medians).

    python tests/benchmarks/bench_model.py models/emonet.onnx [more.onnx ...] [--threads 2]

Run it on an otherwise idle machine; it reports the median over many repetitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from training.latency import per_face_ms, session  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    print(f"{'model':40s} {'MB':>6s} {'batch 1 ms/face':>16s} {'batch 32 ms/face':>17s}")
    for path in args.models:
        sess = session(path, args.threads)
        b1 = per_face_ms(sess, 1, args.seconds)
        b32 = per_face_ms(sess, 32, args.seconds)
        print(f"{str(path):40s} {path.stat().st_size / 1e6:6.2f} {b1:16.3f} {b32:17.3f}")


if __name__ == "__main__":
    main()
