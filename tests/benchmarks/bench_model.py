"""Per-face latency of ONNX models in onnxruntime at batch 1 and batch 32 (medians).

    python tests/benchmarks/bench_model.py models/emonet.onnx [more.onnx ...] [--threads 2]

Run it on an otherwise idle machine; it reports the median over many repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def per_face_ms(sess: ort.InferenceSession, batch: int, seconds: float) -> float:
    inp = sess.get_inputs()[0]
    h, w, c = (int(d) for d in inp.shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, (batch, h, w, c)).astype(np.float32)
    for _ in range(10):
        sess.run(None, {inp.name: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000 / batch


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
