"""Per-face latency of an ONNX file in onnxruntime: the median of many timed runs.

Shared by `python -m training compare` and `tests/benchmarks/bench_model.py`, so the latency
in a comparison table is measured exactly as the README's benchmark figures are.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def session(path: Path, threads: int):
    """An onnxruntime CPU session with `threads` intra-op threads, as the service builds one."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def per_face_ms(sess, batch: int, seconds: float) -> float:
    """Median milliseconds per face over at least `seconds` (and 20 runs) at this batch size."""
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
