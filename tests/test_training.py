"""The training package on tiny generated data: architectures, fit, resume, evaluate, export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from app.files import sha256_file  # noqa: E402
from app.preprocess import prepare_batch  # noqa: E402
from app.registry import load_registry  # noqa: E402
from tests.fer_layout import write_fer_folder  # noqa: E402
from training import architectures  # noqa: E402
from training.architectures import GRAY48  # noqa: E402
from training.cli import parse_duration  # noqa: E402
from training.data import (  # noqa: E402
    class_weights,
    load_split,
    recorded_split_seed,
    stratified_split,
)
from training.ensemble import make_ensemble  # noqa: E402
from training.evaluate import evaluate_run  # noqa: E402
from training.export import export_run  # noqa: E402
from training.fit import TrainOptions, split_train, train  # noqa: E402
from training.tools.summary import parameter_counts  # noqa: E402

STUDY_COUNTS = {  # (total, trainable) from the study
    "cnn_scratch": (17_046_535, 17_046_535 - 1_664),
    "cnn_augmented": (17_046_535, 17_046_535 - 1_664),
    "vgg16": (40_934_215, 30_939_143),
    "resnet50v2": (29_996_295, None),
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fer_dir(tmp_path_factory) -> Path:
    return write_fer_folder(tmp_path_factory.mktemp("fer"), per_class=8)


@pytest.mark.parametrize("name", sorted(STUDY_COUNTS))
def test_study_parameter_counts(name):
    trainable, frozen = parameter_counts(architectures.get(name).build(None))
    total, want_trainable = STUDY_COUNTS[name]
    assert trainable + frozen == total
    if want_trainable is not None:
        assert trainable == want_trainable


def test_every_model_ends_in_logits_then_softmax():
    for arch in architectures.ARCHITECTURES.values():
        if arch.input.height != 48:
            continue
        model = arch.build(None)
        assert model.get_layer("logits").units == 7
        assert model.output.shape[-1] == 7


def test_stratified_split_and_class_weights(fer_dir):
    data, fp = load_split(fer_dir, "train")
    assert data.x.shape == (56, 48, 48) and data.x.dtype == np.uint8
    assert len(fp) == 16
    tr, va = stratified_split(data, 0.25, seed=1)
    assert len(tr) + len(va) == len(data)
    assert np.bincount(va.y).tolist() == [2] * 7  # every class in validation
    tr2, va2 = stratified_split(data, 0.25, seed=1)
    assert np.array_equal(va.y, va2.y)  # seeded
    w = class_weights(np.array([0] * 90 + [1] * 10), power=1.0)
    assert w[1] / w[0] == pytest.approx(9.0)
    assert class_weights(np.array([0] * 90 + [1] * 10), power=0.0)[1] == pytest.approx(1.0)


def test_split_seed_fixes_validation_faces_independently_of_the_training_seed(fer_dir):
    _, val_a, fp = split_train(fer_dir, None, 7, 0.25)
    _, val_b, _ = split_train(fer_dir, None, 7, 0.25)
    _, val_c, _ = split_train(fer_dir, None, 8, 0.25)
    assert np.array_equal(val_a.x, val_b.x) and len(fp) == 16
    assert not np.array_equal(val_a.x, val_c.x)
    # Runs record both seeds; older runs recorded only `seed`, which then set the split.
    assert recorded_split_seed({"seed": 1, "split_seed": 7}) == 7
    assert recorded_split_seed({"seed": 1, "split_seed": None}) == 1
    assert recorded_split_seed({"seed": 1}) == 1


def test_parse_duration():
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("2 hours")


def test_train_48_evaluate_export_and_serve(fer_dir, tmp_path):
    run = tmp_path / "run"
    train(TrainOptions(model="emonet", data=str(fer_dir), out=str(run), epochs=1, batch_size=16))
    for f in ("best.keras", "last.keras", "history.csv", "learning_curves.png", "config.json"):
        assert (run / f).exists(), f
    config = json.loads((run / "config.json").read_text())
    assert config["command"].startswith("python -m training")
    assert len(config["data_fingerprint"]) == 16

    metrics = evaluate_run(run, fer_dir, tta=True)
    for f in ("metrics.json", "confusion_matrix.png", "roc.png", "calibration.png"):
        assert (run / f).stat().st_size > 0, f
    assert set(metrics["per_class"]) == {
        "angry",
        "disgust",
        "fear",
        "happy",
        "neutral",
        "sad",
        "surprise",
    }
    assert 0 <= metrics["accuracy"] <= 1 and metrics["temperature"] > 0

    models_dir = tmp_path / "models"
    entry = export_run(
        run,
        "tiny",
        default=True,
        models_dir=models_dir,
        data=fer_dir,
        reports_dir=tmp_path / "reports",
    )
    assert (tmp_path / "reports" / "tiny" / "confusion_matrix.png").exists()
    assert entry.training["parity_max_abs_diff"] <= 1e-4
    registry = load_registry(models_dir)
    assert registry.default.name == "tiny"
    assert sha256_file(models_dir / "tiny.onnx") == entry.sha256
    assert entry.metrics["accuracy"] == metrics["accuracy"]

    import onnxruntime as ort

    sess = ort.InferenceSession(str(models_dir / "tiny.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [48, 48, 1]
    out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 48, 48, 1), np.float32)})[0]
    assert out.shape == (3, 7) and np.allclose(out.sum(1), 1, atol=1e-5)
    assert entry.training["mirror_tta"] is True
    # Mirror TTA is in the graph: a face and its mirror image score the same.
    face = np.random.default_rng(0).uniform(0, 1, (1, 48, 48, 1)).astype(np.float32)
    a, b = (sess.run(None, {"input": f})[0] for f in (face, face[:, :, ::-1].copy()))
    np.testing.assert_allclose(a, b, atol=1e-5)

    from training.quantize import quantize_registered

    q = quantize_registered(
        models_dir, "tiny", "tiny-int8", fer_dir, max_drop=1.0, reports_dir=tmp_path / "reports"
    )
    assert (models_dir / "tiny-int8.onnx").stat().st_size < (
        models_dir / "tiny.onnx"
    ).stat().st_size / 2
    assert load_registry(models_dir).default.name == "tiny"  # not made default unless asked
    assert q.metrics["n"] == 28 and "quantized_from" in q.training  # 4 test faces per class
    # An int8 file whose float32 source is gone can be quantized again: dequantized, its graph
    # computes what the int8 graph computes (activation ranges, and the ReLU they hold, kept).
    import onnx
    import onnxruntime as ort

    from training.dequantize import dequantize, is_quantized, largest_int8_weight

    int8_graph = onnx.load(str(models_dir / "tiny-int8.onnx"))
    assert "7-bit weights" in q.description and largest_int8_weight(int8_graph) == 64
    float_graph = dequantize(int8_graph)
    assert is_quantized(int8_graph) and not is_quantized(float_graph)
    emulated = ort.SessionOptions()
    emulated.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    faces = np.random.default_rng(1).uniform(0, 1, (16, 48, 48, 1)).astype(np.float32)
    a, b = (
        ort.InferenceSession(g.SerializeToString(), emulated).run(None, {"input": faces})[0]
        for g in (int8_graph, float_graph)
    )
    np.testing.assert_allclose(a, b, atol=0.05)
    again = quantize_registered(
        tmp_path / "again",
        "tiny-int8",
        "tiny-int8",
        fer_dir,
        max_drop=1.0,
        reports_dir=tmp_path / "r",
        source_models_dir=models_dir,
        version="1.0.1",
    )
    assert again.version == "1.0.1" and again.sha256 != q.sha256
    assert again.training["quantized_from"] == q.training["quantized_from"]
    assert "requantized from tiny-int8" in again.training["quantization"]
    assert again.description.count("int8 (") == 1 and again.description.endswith("of tiny")
    with pytest.raises(ValueError, match="already int8: give its requantized file a new"):
        quantize_registered(tmp_path / "again", "tiny-int8", "tiny-int8", fer_dir, replace=True)
    # The float32 source may stay in a registry of its own: only the int8 file ships.
    shipped = tmp_path / "shipped"
    quantize_registered(
        shipped,
        "tiny",
        "tiny-int8",
        fer_dir,
        max_drop=1.0,
        reports_dir=tmp_path / "reports",
        source_models_dir=models_dir,
    )
    assert [m.name for m in load_registry(shipped).models] == ["tiny-int8"]
    assert sorted(p.name for p in shipped.iterdir()) == ["registry.json", "tiny-int8.onnx"]
    from training.tools.recover import float_graph, read_members

    def members(name: str) -> list:
        graph, int8 = float_graph(models_dir / name)
        assert int8 == name.endswith("-int8.onnx")
        return read_members(graph, models_dir / name)

    (network,) = members("tiny.onnx")  # mirror TTA: one network, twice
    # The int8 file holds the same network, its weights on the int8 grid (per output channel,
    # 64 steps each way) and its logits layer kept in float32.
    (rounded,) = members("tiny-int8.onnx")
    for (kernel, _), (kernel8, _) in zip(network.convs, rounded.convs, strict=True):
        step = np.abs(kernel).max(axis=(1, 2, 3), keepdims=True) / 64
        assert np.all(np.abs(kernel8 - kernel) <= step / 2 + 1e-7)
    for a, b in zip(network.logits, rounded.logits, strict=True):
        np.testing.assert_array_equal(a, b)

    # A registered name is only overwritten when asked, and a replaced default stays default.
    again = dict(models_dir=models_dir, data=fer_dir, reports_dir=tmp_path / "reports")
    with pytest.raises(FileExistsError, match="already registered.*the default.*--replace"):
        export_run(run, "tiny", version="1.1.0", **again)
    with pytest.raises(FileExistsError, match="--replace"):
        quantize_registered(models_dir, "tiny", "tiny-int8", fer_dir, max_drop=1.0)
    with pytest.raises(ValueError, match="not a model name"):  # before anything is written
        quantize_registered(models_dir, "tiny", "tiny int8", fer_dir, max_drop=1.0)
    assert not list(models_dir.glob("tiny int8*"))
    entry = export_run(run, "tiny", version="1.1.0", replace=True, **again)
    assert entry.default and load_registry(models_dir).default.version == "1.1.0"
    # Weights that changed after evaluation cannot ship the old metrics and temperature.
    trained = keras.models.load_model(run / "best.keras")
    trained.set_weights([w + 0.01 for w in trained.get_weights()])
    trained.save(run / "best.keras")
    with pytest.raises(RuntimeError, match="evaluate` again"):
        export_run(run, "tiny", replace=True, **again)

    # The service's model catalog loads both exports (hash, shapes, labels) and serves them.
    from app.inference import ModelCatalog
    from app.settings import Settings

    catalog = ModelCatalog(Settings(models_dir=models_dir, inference_threads=1))
    assert catalog.problems() == [] and catalog.default_name == "tiny"
    assert set(catalog.states) == {"tiny", "tiny-int8"}


def test_train_224_transfer_model_one_epoch(fer_dir, tmp_path):
    run = tmp_path / "run224"
    train(
        TrainOptions(
            model="resnet50v2",
            data=str(fer_dir),
            out=str(run),
            epochs=1,
            batch_size=8,
            weights=None,
            limit_per_class=2,
            mixed_precision=False,
        )
    )
    rows = (run / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + one epoch
    assert json.loads((run / "config.json").read_text())["input"]["height"] == 224


def test_time_budget_stops_cleanly_and_resume_continues(fer_dir, tmp_path, capsys):
    run = tmp_path / "resume"
    opts = dict(model="cnn_scratch", data=str(fer_dir), out=str(run), epochs=3, limit_per_class=4)
    # interrupted after the first epoch; cnn_scratch's recipe is Adam at a constant rate
    train(TrainOptions(**opts, batch_size=4, learning_rate=0.02, mixup=0.3, time_budget_s=0.001))
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 1 and (run / "best.keras").exists()
    config = json.loads((run / "config.json").read_text())
    assert (config["learning_rate"], config["batch_size"], config["mixup"]) == (0.02, 4, 0.3)
    steps_per_epoch = int(keras.models.load_model(run / "last.keras").optimizer.iterations)
    assert steps_per_epoch > 1
    with pytest.raises(FileExistsError):
        train(TrainOptions(**opts))  # no silent overwrite of an existing run
    # Without the flags the recorded ones hold; a different seed is named and ignored.
    train(TrainOptions(**opts, resume=True, seed=7, split_seed=3))
    assert "resuming: --seed 42 as the run started, not 7" in capsys.readouterr().out
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 3
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["options"]["seed"] == 42 and resumed["options"]["split_seed"] is None
    assert resumed["epochs"] == 3 and resumed["resumed_with"][0].startswith("python -m training")
    epochs = [int(r.split(",")[0]) for r in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]
    optimizer = keras.models.load_model(run / "last.keras").optimizer
    assert int(optimizer.iterations) == 3 * steps_per_epoch
    assert float(optimizer.learning_rate) == pytest.approx(0.02)


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch_across_a_resume(fer_dir, tmp_path):
    from training.pipeline import make_dataset

    run = tmp_path / "acc"
    opts = dict(model="emonet", data=str(fer_dir), out=str(run), limit_per_class=6, batch_size=4)
    train(TrainOptions(**opts, epochs=3, monitor="val_accuracy"))
    # the resume names no --monitor: the run keeps the one it started with
    train(TrainOptions(**opts, epochs=4, resume=True))
    state = json.loads((run / "state.json").read_text())
    rows = (run / "history.csv").read_text().splitlines()
    accuracy = [float(r.split(",")[rows[0].split(",").index("val_accuracy")]) for r in rows[1:]]
    assert len(accuracy) == 4
    assert state["monitor"] == "val_accuracy" and state["best"] == pytest.approx(max(accuracy))
    _, val, _ = split_train(fer_dir, 6, 42, 0.1)
    best = keras.models.load_model(run / "best.keras")
    _, kept = best.evaluate(make_dataset(val, GRAY48, 4, training=False), verbose=0)
    assert kept == pytest.approx(max(accuracy))


def test_one_affine_map_blurs_a_face_less_than_one_layer_per_transform():
    import cv2

    from training.augment import AugmentConfig, RandomAffine, build_augmenter

    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as training sets it
    try:
        keras.utils.set_random_seed(0)
        faces = np.random.default_rng(0).uniform(0, 255, (64, 48, 48, 1)).astype(np.float32)
        still = AugmentConfig(one_resampling=True, rotation_deg=0.0, shift=0.0, zoom=0.0)
        np.testing.assert_allclose(RandomAffine(still)(faces), faces, atol=1e-3)  # identity map

        def sharpness(x):  # Laplacian energy away from the filled borders
            return np.mean(
                [np.mean(cv2.Laplacian(f[..., 0], cv2.CV_32F)[8:40, 8:40] ** 2) for f in x]
            )

        kept = {}
        for one in (False, True):
            cfg = AugmentConfig(rotation_deg=10, shift=0.1, zoom=0.1, one_resampling=one)
            layers = build_augmenter(cfg, seed=1).layers
            assert [type(la).__name__ for la in layers] == (
                ["RandomAffine"] if one else ["RandomRotation", "RandomTranslation", "RandomZoom"]
            )
            moved = np.asarray(build_augmenter(cfg, seed=1)(faces, training=True), np.float32)
            assert moved.shape == faces.shape and np.abs(moved - faces).mean() > 20  # it moves
            kept[one] = sharpness(moved) / sharpness(faces)
        # on pixel noise one resampling keeps about 28% of the Laplacian energy, three about 5%
        assert kept[False] < 0.1 < 0.2 < kept[True]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_one_resampling_reaches_the_training_pipeline_and_survives_a_resume(
    fer_dir, tmp_path, monkeypatch
):
    import training.pipeline as pipeline

    augments, real = [], pipeline.make_dataset

    def spy(*args, **kwargs):
        augments.append(kwargs.get("augment"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "make_dataset", spy)
    run = tmp_path / "sharp"
    opts = dict(model="emonet", data=str(fer_dir), out=str(run), limit_per_class=2, batch_size=4)
    train(TrainOptions(**opts, epochs=1, one_resampling=True))
    train(TrainOptions(**opts, epochs=2, resume=True))  # no flag: the run keeps its own
    assert json.loads((run / "config.json").read_text())["options"]["one_resampling"] is True
    trained = [a for a in augments if a is not None and a.active]
    assert len(trained) == 2 and all(a.one_resampling and a.geometric for a in trained)


def test_a_run_stopped_in_its_first_epoch_starts_again_on_resume(fer_dir, tmp_path):
    run = tmp_path / "cut"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "history.csv").write_text("")  # what a run killed during epoch 1 leaves
    opts = dict(model="cnn_scratch", data=str(fer_dir), out=str(run), epochs=1, limit_per_class=2)
    with pytest.raises(FileExistsError):
        train(TrainOptions(**opts))
    train(TrainOptions(**opts, batch_size=4, resume=True))
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 1


def test_a_folder_that_is_not_a_class_is_refused(tmp_path):
    data = write_fer_folder(tmp_path / "fer", per_class=2)
    (data / "train" / "happy").rename(data / "train" / "Happy")
    with pytest.raises(RuntimeError, match="not classes: Happy"):
        load_split(data, "train")
    with pytest.raises(RuntimeError, match="not classes"):
        train(TrainOptions(model="emonet", data=str(data), out=str(tmp_path / "never")))
    assert not (tmp_path / "never").exists()  # a failed start leaves no empty run folder


@pytest.mark.parametrize(
    "argv",
    [
        "train --model emonet --data d --out o --mixup -1",
        "train --model emonet --data d --out o --batch-size 0",
        "train --model emonet --data d --out o --learning-rate 0",
        "train --model emonet --data d --out o --time-budget 0",
        "train --model emonet --data d --out o --teacher-weight 1.5",
        "export --run r --name my_model/../x",
        "quantize --model m --name 'my model' --data d",
        "evaluate --onnx m --data d --tta",
        "evaluate --onnx m --data d --limit-per-class 2",
        "evaluate --run r --data d --out o",
    ],
)
def test_cli_refuses_values_that_cannot_work(argv, capsys):
    import shlex

    from training.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(shlex.split(argv))
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def test_photo_folders_are_cropped_with_the_services_face_code(tmp_path, assets_dir, monkeypatch):
    """Ordinary photos in the class folders become aligned 48x48 faces; faceless ones are left out."""
    from PIL import Image

    from tests import images

    monkeypatch.setenv("EMOTION_ASSETS_DIR", str(assets_dir))
    for split in ("train", "test"):
        happy = tmp_path / split / "happy"
        happy.mkdir(parents=True)
        Image.fromarray(images.astronaut()).save(happy / "astronaut.jpg")
        Image.fromarray(images.no_face()).save(happy / "coffee.jpg")
    data, _ = load_split(tmp_path, "train")
    assert data.x.shape == (1, 48, 48) and data.y.tolist() == [3]
    assert 40 < data.x.mean() < 220  # a face, not padding


IMBALANCED_WEIGHTS = [1.0, 3.2, 1.0, 0.8, 0.9, 1.0, 1.2]


def _record_imbalanced_class_weights(run: Path) -> None:
    """The generated data is balanced (all class weights 1); record the weights an imbalanced
    set would have in the run's config, so the class-weight prior correction shows."""
    weights = {str(i): w for i, w in enumerate(IMBALANCED_WEIGHTS)}
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "class_weights": weights}))


@pytest.mark.parametrize("second", ["emonet", "emonet_deep", "emonet_res"])
def test_ensemble_of_runs_is_evaluated_and_exported_as_one_graph(
    fer_dir, tmp_path, second, monkeypatch
):
    models = ["emonet", second]
    runs = [tmp_path / f"member{seed}" for seed in (1, 2)]
    for seed, run, model in zip((1, 2), runs, models, strict=True):
        # The command the run records (and `recover` reads back) is the process's own.
        argv = f"train --model {model} --data {fer_dir} --out {run} --epochs 1 --batch-size 16"
        monkeypatch.setattr(
            "sys.argv", ["training", *argv.split(), f"--seed={seed}", "--split-seed=5"]
        )
        train(
            TrainOptions(
                model=model,
                data=str(fer_dir),
                out=str(run),
                epochs=1,
                batch_size=16,
                seed=seed,
                split_seed=5,
            )
        )
    # A member trained on another validation split is refused.
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "best.keras").write_bytes((runs[1] / "best.keras").read_bytes())
    config = json.loads((runs[1] / "config.json").read_text())
    config["options"]["split_seed"] = 6
    (stray / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="validation split"):
        make_ensemble([runs[0], stray], tmp_path / "bad")
    # So is one whose network takes another input (224x224x3).
    config["options"]["split_seed"] = 5
    config["model"] = "vgg16"
    (stray / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="another input"):
        make_ensemble([runs[0], stray], tmp_path / "bad")

    for run in runs:
        _record_imbalanced_class_weights(run)
    ens = make_ensemble(runs, tmp_path / "ens")
    with pytest.raises(FileExistsError, match="already holds"):
        make_ensemble(runs[::-1], ens)  # would mix its metrics with another config
    metrics = evaluate_run(ens, fer_dir)
    assert metrics["validation"]["n"] == 7  # the members' shared split: 1 face per class
    # `select` scores a pair as the ensemble's own graph scores on validation.
    from training.tools.select import select

    (pair,) = select(runs, fer_dir, 2, tmp_path / "select")
    assert pair["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])
    assert pair["members"] == [str(r) for r in runs] and pair["passes"] == 2
    assert len(select(runs, fer_dir, 1, tmp_path / "select", tta=True)) == 2
    assert "| member1 | 2 |" in (tmp_path / "select" / "selection.md").read_text()
    with pytest.raises(RuntimeError, match="is an ensemble"):
        select([runs[0], ens], fer_dir, 2, tmp_path / "select")
    shift = -np.log(IMBALANCED_WEIGHTS)
    np.testing.assert_allclose(metrics["log_prior_shift"], shift)
    entry = export_run(
        ens, "duo", models_dir=tmp_path / "models", data=fer_dir, reports_dir=tmp_path / "rep"
    )
    assert len(entry.training["members"]) == 2
    descriptions = [architectures.get(m).description for m in models]
    if second == "emonet":
        assert entry.description.startswith(f"ensemble of 2 x {descriptions[0]}")
        assert entry.training["architecture"] == metrics["model"] == "emonet"
    else:
        assert entry.description.startswith(f"ensemble of {descriptions[0]} + {descriptions[1]}")
        assert entry.training["architecture"] == metrics["model"] == f"emonet+{second}"
    assert entry.description.endswith("; class-weight prior correction in the graph")
    np.testing.assert_allclose(entry.training["log_prior_shift"], shift)
    assert (tmp_path / "rep" / "duo" / "learning_curves.png").stat().st_size > 0  # both members'

    # The ONNX graph is softmax((mean of the members' logits - log class weights) / T).
    import onnxruntime as ort

    from training.graph import load_float32

    faces = np.random.default_rng(1).uniform(0, 1, (4, 48, 48, 1)).astype(np.float32)
    logits = []
    for run, model in zip(runs, models, strict=True):
        m = load_float32(run, architectures.get(model))
        logits.append(keras.Model(m.input, m.get_layer("logits").output).predict(faces, verbose=0))
    z = (np.mean(logits, axis=0) + shift) / entry.temperature
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    sess = ort.InferenceSession(str(tmp_path / "models" / "duo.onnx"))
    np.testing.assert_allclose(sess.run(None, {"input": faces})[0], want, atol=1e-4)
    # int8 quantization keeps every member's logits layer (and all after it) in float.
    from training.quantize import _head_nodes

    head = _head_nodes(tmp_path / "models" / "duo.onnx")
    assert sum("MatMul" in n for n in head) == 2, head

    # `recover` turns the shipped file back into runs that give the members' own logits and
    # join ensembles with the originals; batch norms start from their data's statistics.
    from training.tools.recover import CALIBRATION_FACES, recover

    recovered = recover(tmp_path / "models", "duo", fer_dir, tmp_path / "rec")
    assert [r.name for r in recovered] == [r.name for r in runs]
    for run, back, model, want in zip(runs, recovered, models, logits, strict=True):
        config = json.loads((back / "config.json").read_text())
        assert config["model"] == model and config["options"]["seed"] == int(run.name[-1])
        assert config["recovered_from"].startswith(f"duo {entry.version} ")
        np.testing.assert_allclose(list(config["class_weights"].values()), IMBALANCED_WEIGHTS)
        m = load_float32(back, architectures.get(model))
        got = keras.Model(m.input, m.get_layer("logits").output).predict(faces, verbose=0)
        np.testing.assert_allclose(got, want, atol=1e-4)
        norm = next(la for la in m.layers if isinstance(la, keras.layers.BatchNormalization))
        train_faces = prepare_batch(split_train(fer_dir, None, 5, 0.1)[0].x, GRAY48)
        assert len(train_faces) <= CALIBRATION_FACES  # so recover saw all of them
        conv = keras.Model(m.input, m.layers[1].output).predict(train_faces, verbose=0)
        np.testing.assert_allclose(norm.moving_mean.numpy(), conv.mean((0, 1, 2)), atol=1e-4)
    make_ensemble([runs[0], recovered[1]], tmp_path / "mixed")  # same data and split
    with pytest.raises(FileExistsError, match="already holds"):
        recover(tmp_path / "models", "duo", fer_dir, tmp_path / "rec")


def test_distillation_targets_mix_labels_and_teacher_probabilities():
    from training.data import Split
    from training.pipeline import make_dataset

    rng = np.random.default_rng(0)
    y = np.arange(14) % 7
    split = Split(rng.integers(0, 256, (14, 48, 48)).astype(np.uint8), y)
    teacher = rng.dirichlet(np.ones(7), 14).astype(np.float32)
    ds = make_dataset(
        split,
        architectures.get("emonet").input,
        14,
        training=True,
        label_smoothing=0.1,
        teacher=teacher,
        teacher_weight=0.25,
    )
    _, target, _ = next(iter(ds))
    smoothed = np.eye(7)[y] * 0.9 + 0.1 / 7
    want = 0.75 * smoothed + 0.25 * teacher
    # Batches are shuffled: compare the rows as sets.
    got = np.asarray(target)
    np.testing.assert_allclose(got[np.lexsort(got.T)], want[np.lexsort(want.T)], atol=1e-6)


def test_mixup_blends_faces_targets_and_weights_with_one_share_per_face():
    from app.preprocess import normalize
    from training.data import Split
    from training.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.arange(7)  # one face per class: a target row names the faces it mixes
    faces = rng.integers(0, 256, (7, 48, 48)).astype(np.uint8)
    weights = {i: 1.0 + i for i in range(7)}
    spec = architectures.get("emonet").input
    ds = make_dataset(
        Split(faces, y), spec, 7, training=True, class_weights=weights, mixup=1.0, seed=3
    )
    x, target, w = (np.asarray(t) for t in next(iter(ds)))
    originals = np.asarray(normalize(faces[..., None].astype(np.float32), spec.normalization))
    mixed = 0
    for xi, ti, wi in zip(x, target, w, strict=True):
        np.testing.assert_allclose(ti.sum(), 1.0, atol=1e-6)
        a, b = np.argsort(ti)[::-1][:2]
        lam = ti[a]
        assert lam >= 0.5 - 1e-6 and np.count_nonzero(ti > 1e-6) <= 2
        if lam > 1 - 1e-6:
            b = a
        else:
            mixed += 1
        want = lam * originals[a] + (1 - lam) * originals[b]
        np.testing.assert_allclose(xi, want, atol=1e-4)
        assert wi == pytest.approx(lam * weights[a] + (1 - lam) * weights[b], rel=1e-5)
    assert mixed >= 3  # Beta(1, 1) shares: faces really are blended


def test_distillation_from_a_teacher_run_and_warm_start(fer_dir, tmp_path, capsys):
    from training.evaluate import predict_keras
    from training.graph import load_best_weights, load_members, prior_correction, serving_model

    common = dict(model="emonet", data=str(fer_dir), epochs=1, batch_size=16)
    teacher = train(TrainOptions(**common, out=str(tmp_path / "teacher"), seed=1, split_seed=3))
    _record_imbalanced_class_weights(teacher)
    student = train(
        TrainOptions(
            **common,
            out=str(tmp_path / "student"),
            seed=2,
            split_seed=3,
            teacher=str(teacher),
            teacher_weight=0.5,
            init_from=str(teacher),
        )
    )
    options = json.loads((student / "config.json").read_text())["options"]
    assert options["teacher"] == str(teacher) and options["init_from"] == str(teacher)
    assert f"teacher {teacher}: scoring" in capsys.readouterr().out
    targets = np.load(student / "teacher_probs.npy")
    # The targets are the teacher's served graph: mirror TTA and its class-weight correction.
    teacher_config = json.loads((teacher / "config.json").read_text())
    shift = prior_correction(teacher_config)
    np.testing.assert_allclose(shift, -np.log(IMBALANCED_WEIGHTS))
    arch = architectures.get("emonet")
    served = serving_model(load_members(teacher, teacher_config), tta=True, log_prior_shift=shift)
    train_split = split_train(fer_dir, None, 3, 0.1)[0]
    np.testing.assert_allclose(targets, predict_keras(served, train_split, arch.input), atol=1e-5)
    # Resuming without repeating --teacher keeps distilling on the targets it started with.
    (teacher / "best.keras").rename(teacher / "hidden")  # so scoring it again would fail
    train(TrainOptions(**{**common, "epochs": 2}, out=str(student), split_seed=3, resume=True))
    (teacher / "hidden").rename(teacher / "best.keras")
    assert "teacher targets: reusing" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(student / "teacher_probs.npy"), targets)
    assert evaluate_run(student, fer_dir)["validation"]["n"] == 7

    # A teacher that trained on the student's validation faces is refused.
    with pytest.raises(RuntimeError, match="validation split"):
        train(
            TrainOptions(**common, out=str(tmp_path / "leak"), split_seed=4, teacher=str(teacher))
        )
    with pytest.raises(ValueError, match="teacher_weight"):
        train(TrainOptions(**common, out=str(tmp_path / "w"), teacher_weight=1.5))

    # Warm start copies every weight of the other run's best checkpoint.
    model = architectures.get("emonet").build(None)
    load_best_weights(model, teacher)
    want = keras.models.load_model(teacher / "best.keras").get_weights()
    for got, ref in zip(model.get_weights(), want, strict=True):
        np.testing.assert_array_equal(got, ref)


def test_onnx_evaluation_turns_logits_into_probabilities_as_the_service_does(tmp_path):
    """`evaluate --onnx` and quantize score what `/predict` returns, whatever the output kind."""
    from app.inference import OnnxModel
    from app.preprocess import prepare_batch
    from tests.tiny_models import TinySpec, add_model
    from training.evaluate import predict_onnx_file

    entry = add_model(tmp_path, "lg", TinySpec(48, 48, 1, output="logits", seed=1), temperature=2.0)
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), np.uint8)
    got = predict_onnx_file(tmp_path / entry.file, entry, faces)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-9)
    served = OnnxModel(entry, tmp_path).predict(prepare_batch(faces, entry.input.spec()))
    np.testing.assert_allclose(got, served, atol=1e-6)


def test_compare_scores_times_and_draws_registered_models(fer_dir, tmp_path, capsys):
    from tests.tiny_models import GRAY48, TinySpec, add_model, write_registry
    from training.cli import main
    from training.evaluate import evaluate_registered

    models = tmp_path / "models"
    write_registry(
        models,
        [
            add_model(models, "probs", GRAY48, default=True),
            add_model(models, "logits", TinySpec(48, 48, 1, output="logits", seed=3)),
        ],
    )
    earlier = evaluate_registered(models, "probs", fer_dir, tmp_path / "eval-probs")
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(fer_dir), "--models-dir", str(models), "--out", str(out)]
    argv += ["--metrics", str(tmp_path / "eval-probs" / "metrics.json"), "--seconds", "0.05"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/2] probs 0.0.1" in printed and "[2/2] logits 0.0.1" in printed  # progress
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in rows] == ["probs 0.0.1", "logits 0.0.1", "probs"]
    assert rows[0]["accuracy"] == rows[2]["accuracy"] == earlier["accuracy"]  # same scoring
    assert rows[0]["n"] == 28 and rows[0]["ms_batch1"] > 0 and rows[1]["ms_batch32"] > 0
    assert "ms_batch1" not in rows[2]
    table = (out / "comparison.md").read_text().splitlines()
    assert len(table) == 2 + 3 and table[-1].endswith("| not measured |  |")
    assert (out / "comparison.png").stat().st_size > 10_000
    assert main(["compare", "--data", str(fer_dir), "--models-dir", str(models), "--models", "x"])
    assert "not in" in capsys.readouterr().err


def test_recover_matches_each_shipped_member_to_its_recorded_architecture():
    """emonet_deep and emonet_res have the same convolutions; only the order of the members'
    names and the dense layer tell them apart, so recover must use both."""
    from app.registry import load_registry
    from training.tools.recover import (
        _matching_build,
        _member_options,
        float_graph,
        read_members,
    )

    models_dir = Path(__file__).parent.parent / "models"
    entry = load_registry(models_dir).get("emonet-trio")
    members = read_members(float_graph(models_dir / entry.file)[0], models_dir / entry.file)
    recorded = [_member_options(c).model for c in entry.training["members"]]
    assert recorded == ["emonet_deep", "emonet", "emonet_res"]
    for member, name in zip(members, recorded, strict=True):
        assert _matching_build(name, member)[0].name == name
    with pytest.raises(RuntimeError, match="does not have emonet_res's layers"):
        _matching_build("emonet_res", members[0])


def test_photo_look_degrades_each_face_differently_within_pixel_range():
    import keras

    from training.augment import PHOTO, PhotoLook, build_augmenter

    rng = np.random.default_rng(0)
    faces = np.repeat(rng.integers(0, 256, (1, 48, 48, 1)).astype(np.float32), 16, axis=0)
    out = np.asarray(PhotoLook()(faces, training=True))
    assert out.shape == faces.shape and out.min() >= 0 and out.max() <= 255
    # sixteen copies of one face come out as (nearly) sixteen different faces
    assert len({round(float(np.abs(o - faces[0]).mean()), 3) for o in out}) > 12
    assert np.array_equal(np.asarray(PhotoLook()(faces, training=False)), faces)
    assert any(isinstance(layer, PhotoLook) for layer in build_augmenter(PHOTO, 1).layers)
    keras.mixed_precision.set_global_policy("float32")


def test_added_data_joins_training_but_never_validation(fer_dir, tmp_path, capsys):
    extra = write_fer_folder(tmp_path / "extra", per_class=3, seed=5)
    base = dict(model="emonet", data=str(fer_dir), limit_per_class=4, batch_size=8, epochs=1)
    plain = train(TrainOptions(**base, out=str(tmp_path / "plain")))
    added = train(
        TrainOptions(
            **base, out=str(tmp_path / "added"), add_data=str(extra), add_repeat=2, augment="photo"
        )
    )
    shown = capsys.readouterr().out
    # 4 per class less the validation face, plus 2 x 3 added faces per class
    assert "21 train / 7 validation" in shown and "63 train / 7 validation" in shown
    one, two = (json.loads((r / "config.json").read_text()) for r in (plain, added))
    assert one["data_fingerprint"] == two["data_fingerprint"]  # the same validation faces
    assert one["added_data_fingerprint"] is None and two["added_data_fingerprint"]
