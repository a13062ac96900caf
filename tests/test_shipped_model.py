"""The models the service ships: registered as they should be, and served exactly as evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.files import sha256_file
from app.labels import EMOTIONS
from app.registry import load_registry
from tests import images

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SHIPPED = load_registry(MODELS).models


@pytest.fixture(scope="module")
def default_entry():
    entry = load_registry(MODELS).default
    assert entry is not None and entry.default, "the registry must name a default model"
    return entry


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_every_shipped_model_is_real_small_and_documented(entry):
    path = MODELS / entry.file
    assert path.stat().st_size < 25e6
    assert sha256_file(path) == entry.sha256
    m = entry.metrics
    assert m["split"] == "test" and m["n"] == 3589  # FER2013 PublicTest
    assert 0.2 < m["accuracy"] <= 1 and 0 < m["macro_f1"] <= 1
    assert set(m["per_class"]) == set(EMOTIONS)
    training = entry.training
    commands = training.get("members", [training["command"]])  # an ensemble lists its members'
    assert commands and all(c.startswith("python -m training train") for c in commands)
    assert len(training["data_fingerprint"]) == 16
    assert training["parity_max_abs_diff"] <= 1e-4
    reports = REPO / "docs" / "results" / entry.name
    for f in ("confusion_matrix.png", "roc.png", "calibration.png", "learning_curves.png"):
        assert (reports / f).stat().st_size > 0, f
    assert json.loads((reports / "metrics.json").read_text())["accuracy"] == m["accuracy"]


def test_the_shipped_default_model_serves(make_client, default_entry):
    client = make_client(MODELS)
    assert client.get("/readyz").status_code == 200, client.get("/readyz").text
    r = client.post("/predict", files={"file": ("a.jpg", images.encode(images.astronaut()))})
    body = r.json()
    assert body["model"]["name"] == default_entry.name
    (face,) = body["faces"]
    assert abs(sum(face["probabilities"].values()) - 1) <= 3.5e-4  # 4 decimals each


def face_crops() -> np.ndarray:
    """48x48 gray faces: the astronaut's face and a few shifted, flipped and darker variants."""
    gray = cv2.cvtColor(images.astronaut(), cv2.COLOR_RGB2GRAY)
    crops = []
    for dx, dy, flip, gain in [
        (0, 0, False, 1.0),
        (8, -6, False, 1.0),
        (0, 0, True, 0.6),
        (-10, 10, False, 1.2),
    ]:
        c = gray[70 + dy : 190 + dy, 165 + dx : 285 + dx]
        c = cv2.resize(c, (48, 48), interpolation=cv2.INTER_AREA)
        c = np.clip(c.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        crops.append(c[:, ::-1] if flip else c)
    return np.stack(crops)


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_service_gives_the_evaluation_codes_probabilities(make_client, entry):
    """A face sent through /predict?detector=none scores exactly as `training.evaluate` scores it."""
    pytest.importorskip("tensorflow")
    from training.evaluate import predict_onnx

    faces = face_crops()
    expected = predict_onnx(MODELS, entry.name, faces)
    client = make_client(MODELS)
    files = [("files", (f"face{i}.png", images.encode(f, "PNG"))) for i, f in enumerate(faces)]
    params = {"detector": "none", "model": entry.name}
    r = client.post("/predict/batch", params=params, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for i, result in enumerate(results):
        (face,) = result["faces"]
        assert face["detected"] is False
        got = np.array([face["probabilities"][e] for e in EMOTIONS])
        np.testing.assert_allclose(got, expected[i], atol=5e-5 + 1e-5)  # 4 decimals
    # A single /predict of one face agrees too.
    r = client.post(
        "/predict", params=params, files={"file": ("f.png", images.encode(faces[0], "PNG"))}
    )
    got = np.array([r.json()["faces"][0]["probabilities"][e] for e in EMOTIONS])
    np.testing.assert_allclose(got, expected[0], atol=5e-5 + 1e-5)


INT8 = [e for e in SHIPPED if "quantization" in e.training]


@pytest.mark.parametrize("entry", INT8, ids=lambda e: e.name)
def test_int8_models_answer_alike_on_every_x86_cpu(entry):
    """onnxruntime's int8 kernels compute what the graph's float emulation computes, here too.

    Without VNNI, onnxruntime adds pairs of uint8 x int8 products in 16 bits, which overflow
    with full 8-bit weights; with 7-bit weights no pair can, so every CPU gives the answers
    measured on the machine that quantized the model.
    """
    import onnx
    import onnxruntime as ort

    from app.preprocess import prepare_batch
    from training.dequantize import largest_int8_weight

    path = MODELS / entry.file
    assert largest_int8_weight(onnx.load(str(path))) == 64  # 7 bits, and the file is int8
    faces = prepare_batch(face_crops(), entry.input.spec())
    emulated = ort.SessionOptions()
    emulated.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    kernels, floats = (
        ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        for o in (ort.SessionOptions(), emulated)
    )
    name = kernels.get_inputs()[0].name
    got, expected = (s.run(None, {name: faces})[0] for s in (kernels, floats))
    np.testing.assert_allclose(got, expected, atol=0.01)
