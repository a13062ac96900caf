"""Training away from this machine: packed data, the in-graph input and runs carried as one file.

An accelerator machine has PyTorch or JAX but no TensorFlow and none of the images; these
tests check, under TensorFlow, the parts that make such a run equal to one trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from app.preprocess import InputSpec, prepare_batch  # noqa: E402
from tests.fer_layout import write_fer_folder  # noqa: E402
from training import architectures  # noqa: E402
from training.augment import STANDARD, AugmentConfig  # noqa: E402
from training.cli import main  # noqa: E402
from training.data import Split, load_split, pack_path  # noqa: E402
from training.ingraph import PrepareFaces, arrays, training_view  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fer_dir(tmp_path_factory) -> Path:
    return write_fer_folder(tmp_path_factory.mktemp("fer"), per_class=6)


def test_a_packed_split_loads_as_its_folder_does(fer_dir, tmp_path):
    packs = tmp_path / "packs"
    assert main(["pack-data", "--data", str(fer_dir), "--out", str(packs)]) == 0
    assert pack_path(packs, "train").is_file() and not pack_path(packs, "test").exists()
    (folder, fp), (packed, packed_fp) = load_split(fer_dir, "train"), load_split(packs, "train")
    assert packed_fp == fp  # a run trained on the pack can be evaluated on the folder
    np.testing.assert_array_equal(packed.x, folder.x)
    np.testing.assert_array_equal(packed.y, folder.y)

    subset, subset_fp = load_split(packs, "train", limit=2, seed=3)
    assert np.bincount(subset.y).tolist() == [2] * 7 and subset_fp != fp
    np.testing.assert_array_equal(load_split(packs, "train", limit=2, seed=3)[0].x, subset.x)


@pytest.mark.parametrize(
    "spec",
    [
        architectures.get("resnet50v2").input,  # 48 -> 224, gray in 3 channels, [-1, 1]
        architectures.get("vgg16").input,  # caffe: BGR flip and ImageNet means
        architectures.get("emonet").input,  # 48x48x1 unit: nothing but the scale
        InputSpec(96, 96, 3, color="gray", normalization="unit", source_size=64),
    ],
    ids=["resnet50v2", "vgg16", "gray48", "two-step"],
)
def test_prepare_faces_layer_gives_the_services_model_input(spec):
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48)).astype(np.uint8)
    served = prepare_batch(faces, spec)
    in_graph = keras.ops.convert_to_numpy(PrepareFaces(spec)(faces[..., None].astype(np.float32)))
    assert in_graph.shape == served.shape
    # both resize bilinearly with half-pixel centres; 1e-3 of the input range apart at most
    span = float(served.max() - served.min())
    assert np.abs(in_graph - served).max() <= 1e-3 * span


def test_prepare_faces_refuses_an_input_that_would_shrink_faces():
    with pytest.raises(ValueError, match="shrink"):
        PrepareFaces(InputSpec(32, 32, 1))


def _faces(n: int = 14) -> Split:
    rng = np.random.default_rng(1)
    return Split(rng.integers(0, 256, (n, 48, 48)).astype(np.uint8), np.arange(n) % 7)


def test_training_view_trains_the_model_and_adds_no_weights():
    keras.mixed_precision.set_global_policy("float32")
    arch = architectures.get("emonet")
    model = arch.build(None)
    view = training_view(model, arch.input, STANDARD, seed=0)
    assert len(view.weights) == len(model.weights)

    x, target, weight = arrays(_faces(), class_weights={i: 1.0 + i for i in range(7)})
    assert x.shape == (14, 48, 48, 1) and target.shape == (14, 7)
    np.testing.assert_array_equal(weight, 1.0 + np.arange(14) % 7)
    smoothed = arrays(_faces(), label_smoothing=0.1)[1]
    np.testing.assert_allclose(smoothed.sum(1), 1.0, rtol=1e-6)
    assert smoothed.min() == pytest.approx(0.1 / 7)

    # Outside training the view is the model on the service's input: no augmentation.
    expected = model.predict(prepare_batch(_faces().x, arch.input), verbose=0)
    np.testing.assert_allclose(view.predict(x, verbose=0), expected, atol=1e-5)
    before = [w.copy() for w in model.get_weights()]
    view.compile(optimizer="adam", loss="categorical_crossentropy")
    view.fit(x, target, sample_weight=weight, batch_size=7, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_training_view_refuses_the_tensorflow_only_affine_map():
    arch = architectures.get("emonet")
    with pytest.raises(ValueError, match="TensorFlow"):
        training_view(
            arch.build(None), arch.input, AugmentConfig(rotation_deg=5, one_resampling=True), 0
        )


def test_a_run_travels_as_one_file_and_comes_back_as_a_run(tmp_path):
    keras.mixed_precision.set_global_policy("float32")
    run = tmp_path / "run"
    run.mkdir()
    model = architectures.get("emonet").build(None)
    model.save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"model": "emonet", "epochs": 1}))
    (run / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.2,1.9,0.3,1.8\n"
    )
    (run / "state.json").write_text(json.dumps({"epochs_done": 1}))

    pack, back = tmp_path / "run.npz", tmp_path / "back"
    assert main(["pack-run", "--run", str(run), "--out", str(pack)]) == 0
    # float16 where exact enough: about half of the float32 checkpoint's weights
    weights_bytes = sum(w.nbytes for w in model.get_weights())
    assert pack.stat().st_size < 0.6 * weights_bytes
    assert main(["unpack-run", "--pack", str(pack), "--out", str(back)]) == 0
    for name in ("config.json", "history.csv", "state.json"):
        assert (back / name).read_bytes() == (run / name).read_bytes()
    assert (back / "learning_curves.png").is_file()

    faces = prepare_batch(_faces().x, architectures.get("emonet").input)
    restored = keras.models.load_model(back / "best.keras")
    np.testing.assert_allclose(
        restored.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=2e-3
    )
    assert main(["unpack-run", "--pack", str(pack), "--out", str(back)]) == 2  # never overwrites
