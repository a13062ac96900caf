"""Model loading checks, output calibration and column mapping, on real onnxruntime sessions."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from app.files import sha256_file
from app.inference import (
    InferenceError,
    ModelCatalog,
    ModelLoadError,
    OnnxModel,
    to_probabilities,
)
from app.labels import EMOTIONS
from app.settings import Settings
from tests.tiny_models import GRAY48, TinySpec, add_model, entry_for, write_registry


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 48, 48, 1), dtype=np.float32)


def raw_output(model: OnnxModel, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].astype(np.float64)


def test_probabilities_come_back_in_canonical_order_and_sum_to_one(tmp_path):
    model = OnnxModel(add_model(tmp_path, "m", GRAY48), tmp_path)
    p = model.predict(faces(5))
    assert p.shape == (5, len(EMOTIONS))
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(p, raw_output(model, faces(5)), atol=1e-6)


def test_labels_in_another_order_are_mapped_to_canonical_columns(tmp_path):
    shuffled = ["surprise", "sad", "neutral", "happy", "fear", "disgust", "angry"]
    plain = OnnxModel(add_model(tmp_path, "plain", GRAY48), tmp_path)
    reordered = OnnxModel(add_model(tmp_path, "reordered", GRAY48, labels=shuffled), tmp_path)
    # Same weights; the second model claims its columns mean the reverse emotions.
    assert np.allclose(reordered.predict(faces(3)), plain.predict(faces(3))[:, ::-1])


def test_logits_get_softmax_with_temperature(tmp_path):
    spec = TinySpec(48, 48, 1, output="logits", seed=1)
    model = OnnxModel(add_model(tmp_path, "lg", spec, temperature=2.0), tmp_path)
    logits = raw_output(model, faces(4))
    z = np.exp(logits / 2.0 - (logits / 2.0).max(axis=1, keepdims=True))
    assert np.allclose(model.predict(faces(4)), z / z.sum(axis=1, keepdims=True), atol=1e-6)


def test_untempered_probabilities_are_re_tempered(tmp_path):
    entry = add_model(tmp_path, "pt", GRAY48, temperature=2.0, temperature_in_graph=False)
    model = OnnxModel(entry, tmp_path)
    p = raw_output(model, faces(4)) ** 0.5
    assert np.allclose(model.predict(faces(4)), p / p.sum(axis=1, keepdims=True), atol=1e-5)


def test_big_batches_run_in_chunks_with_the_same_result(tmp_path):
    entry = add_model(tmp_path, "c", GRAY48)
    whole = OnnxModel(entry, tmp_path, max_batch=256)
    chunked = OnnxModel(entry, tmp_path, max_batch=2)
    assert whole.calls == chunked.calls == 0  # warm-up is not counted
    assert np.allclose(chunked.predict(faces(5)), whole.predict(faces(5)))
    assert (whole.calls, chunked.calls) == (1, 3)
    assert chunked.predict(faces(0)).shape == (0, 7)


def test_to_probabilities_refuses_non_finite_output():
    entry = entry_for("x", "x.onnx", "0" * 64, GRAY48)
    with pytest.raises(InferenceError, match="non-finite"):
        to_probabilities(np.array([[np.nan] * 7]), entry)


@pytest.mark.parametrize(
    ("spec", "fields", "reason"),
    [
        (
            TinySpec(48, 48, 1, seed=1),
            {"input": {"height": 64, "width": 64, "channels": 1}},
            "does not match",
        ),
        (TinySpec(48, 48, 1, batch_dim=1), {}, "batch dimension is fixed"),
        (TinySpec(48, 48, 1, n_outputs=6), {}, "output shape"),
        (GRAY48, {"labels": [*EMOTIONS[:-1], "contempt"]}, "unknown: ['contempt']"),
        (GRAY48, {"labels": list(EMOTIONS[:-1])}, "missing: ['surprise']"),
    ],
    ids=["input-size", "fixed-batch", "output-width", "unknown-label", "missing-label"],
)
def test_a_model_that_does_not_fit_its_entry_is_refused(tmp_path, spec, fields, reason):
    entry = add_model(tmp_path, "bad", spec)
    if "input" in fields:
        fields = {"input": entry.input.model_copy(update=fields["input"])}
    with pytest.raises(ModelLoadError) as info:
        OnnxModel(entry.model_copy(update=fields), tmp_path)
    assert reason in str(info.value)


def test_missing_file_wrong_hash_and_corrupt_file_are_refused(tmp_path):
    entry = add_model(tmp_path, "m", GRAY48)
    with pytest.raises(ModelLoadError, match="sha256"):
        OnnxModel(entry.model_copy(update={"sha256": "f" * 64}), tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxModel(entry.model_copy(update={"file": "gone.onnx"}), tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    corrupt = entry.model_copy(update={"sha256": sha256_file(tmp_path / "m.onnx")})
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        OnnxModel(corrupt, tmp_path)


def test_catalog_keeps_good_models_and_the_reasons_for_bad_ones(tmp_path, caplog):
    good = add_model(tmp_path, "good", GRAY48, default=True)
    stale = add_model(tmp_path, "stale", GRAY48).model_copy(update={"sha256": "0" * 64})
    write_registry(tmp_path, [good, stale])
    catalog = ModelCatalog(Settings(models_dir=tmp_path, inference_threads=1))
    assert catalog.default_name == "good"
    assert catalog.states["good"].model is not None
    assert catalog.states["stale"].model is None
    assert catalog.problems() == [f"model stale: {catalog.states['stale'].error}"]
    assert "model stale 0.0.1 is unusable: sha256 of" in caplog.text


def test_catalog_without_registry_or_with_an_unknown_default(tmp_path):
    missing = ModelCatalog(Settings(models_dir=tmp_path / "none"))
    assert missing.problems() and "does not exist" in missing.problems()[0]
    write_registry(tmp_path, [add_model(tmp_path, "only", GRAY48)])
    wrong_default = ModelCatalog(Settings(models_dir=tmp_path, default_model="other"))
    assert "default model 'other' is not in the registry" in wrong_default.problems()[0]


def test_registry_writes_are_validated_and_names_claimed_before_writing(tmp_path):
    from pydantic import ValidationError

    from app.registry import claim_name, load_registry, upsert

    good = add_model(tmp_path, "good", GRAY48, default=True)
    upsert(tmp_path, good)
    with pytest.raises(ValidationError):  # model_copy(update=...) alone would not check
        upsert(tmp_path, good.model_copy(update={"name": "two words"}))
    assert [m.name for m in load_registry(tmp_path).models] == ["good"]
    assert claim_name(tmp_path, "new", replace=False) is False
    assert claim_name(tmp_path, "good", replace=True) is True  # replacing the default
    with pytest.raises(FileExistsError, match="--replace"):
        claim_name(tmp_path, "good", replace=False)
    with pytest.raises(ValueError, match="not a model name"):
        claim_name(tmp_path, "../x", replace=True)


def test_an_int8_file_with_8_bit_weights_is_named_on_a_cpu_without_vnni(
    tmp_path, caplog, monkeypatch
):
    """Such a file answers worse there than it was measured: the operator hears of it."""
    from app import inference
    from app.int8_portability import cpu_flags, requantize_hint

    eight = {"quantization": "onnxruntime static QDQ, uint8 activations, int8 per-channel weights"}
    seven = {"quantization": "onnxruntime static QDQ, uint8 activations, 7-bit per-channel weights"}
    old = add_model(tmp_path, "old", GRAY48, default=True, training=eight)
    new = add_model(tmp_path, "new", GRAY48, training=seven)
    plain = add_model(tmp_path, "plain", GRAY48)
    write_registry(tmp_path, [old, new, plain])
    for flags, warned in [({"avx2", "fma"}, True), ({"avx2", "avx512_vnni"}, False), (None, False)]:
        caplog.clear()
        monkeypatch.setattr(inference, "cpu_flags", lambda flags=flags: flags)
        catalog = ModelCatalog(Settings(models_dir=tmp_path, inference_threads=1))
        assert all(s.model is not None for s in catalog.states.values())  # still served
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ([requantize_hint(old)] if warned else []), flags
    assert "model old 0.0.1 has 8-bit int8 weights" in requantize_hint(old)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx_vnni\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "avx_vnni"}
    info.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # ARM: no x86 kernels to overflow
    assert cpu_flags(info) is None and cpu_flags(tmp_path / "none") is None
