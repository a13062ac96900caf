"""Per-face latency of an ONNX file in onnxruntime: the median of many timed runs.

Shared by `python -m training compare` and `tests/benchmarks/bench_model.py`, so the latency
in a comparison table is measured exactly as the README's benchmark figures are. Given real
faces, each run takes the next ones: an early-exit cascade's cost depends on how sure it is
of a face, which random pixels would not show.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float  # per face, median over runs
    mean_ms: float  # per face, mean over runs: a cascade's throughput


def session(path: Path, threads: int):
    """An onnxruntime CPU session with `threads` intra-op threads (the model alone: spinning on)."""
    from app.inference import cpu_session

    return cpu_session(path, threads)


def prepared_test_faces(path: Path, data: str | Path) -> np.ndarray:
    """`data/test` faces prepared for the model at `path`, as registered beside it."""
    from app.preprocess import prepare_batch
    from app.registry import load_registry
    from training.data import load_split

    entry = next((m for m in load_registry(path.parent).models if m.file == path.name), None)
    if entry is None:
        raise KeyError(f"{path.name} is not registered in {path.parent}/registry.json")
    test, _ = load_split(data, "test")
    return prepare_batch(test.x, entry.input.spec())


def time_per_face(sess, batch: int, seconds: float, faces: np.ndarray | None = None) -> Timing:
    """Per-face timing over at least `seconds` (and 20 runs) at this batch size.

    Without `faces` every run scores the same random batch.
    """
    inp = sess.get_inputs()[0]
    if faces is None:
        h, w, c = (int(d) for d in inp.shape[1:])
        faces = np.random.default_rng(0).uniform(0, 1, (batch, h, w, c)).astype(np.float32)
    # Splits are read class by class: shuffle once, so that a batch mixes classes as a
    # cascade's real traffic would (its cost depends on how sure it is of each face).
    faces = faces[np.random.default_rng(1).permutation(len(faces))]
    if len(faces) < batch:
        faces = np.resize(faces, (batch, *faces.shape[1:]))
    order = np.random.default_rng(2).permutation(len(faces) - batch + 1)
    batches = (faces[i : i + batch] for i in itertools.cycle(order))
    for _ in range(10):
        sess.run(None, {inp.name: next(batches)})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        x = next(batches)
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    return Timing(statistics.median(times) * 1000 / batch, statistics.mean(times) * 1000 / batch)
