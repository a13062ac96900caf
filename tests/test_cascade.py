"""Early-exit cascades: the graph, its int8 quantization, and the margin search, on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tests.fer_layout import write_fer_folder  # noqa: E402
from training import architectures  # noqa: E402
from training.architectures import GRAY48  # noqa: E402
from training.cascade import simulate  # noqa: E402
from training.graph import (  # noqa: E402
    SMOOTH_SIGMA,
    CascadeSpec,
    serving_model,
    top2_margin,
    transform_faces,
)

SHIFT = [0.0, -1.2, 0.0, 0.2, 0.1, 0.0, -0.2]


def _logits(model, faces, transform=""):
    x = np.asarray(transform_faces(faces, transform)) if transform else faces
    return keras.Model(model.input, model.get_layer("logits").output).predict(x, verbose=0)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_spec_text_round_trips_and_bad_specs_are_refused():
    spec = CascadeSpec.parse("1;0;0m,1m", [0.8, 0.3])
    assert spec.stages == (((1, ""),), ((0, ""),), ((0, "m"), (1, "m")))
    assert CascadeSpec.parse("0;1zm, 0z", [0.1]).text() == "0;1zm,0z"
    assert CascadeSpec.parse("0s;1sm,1zsm", [0.1]).stages[1] == ((1, "sm"), (1, "zsm"))
    assert CascadeSpec.from_dict(spec.as_dict()) == spec
    with pytest.raises(ValueError, match="3 stages need 2 margins"):
        CascadeSpec.parse("1;0;0m,1m", [0.8])
    from training.export import describe

    text = describe(["a", "b"], False, True, CascadeSpec.parse("1s;0sm", [0.5]))
    assert "views 1s;0sm (m: mirrored, s: smoothed), a face going on while" in text
    for bad in ("1;;0", "1;0x", "1;mz0", "1;0ms"):
        with pytest.raises(ValueError):
            CascadeSpec.parse(bad, [0.5, 0.5])


def test_zoomed_view_is_the_centre_scaled_back_up():
    import tensorflow as tf

    faces = np.random.default_rng(0).uniform(0, 1, (3, 48, 48, 1)).astype(np.float32)
    want = tf.image.resize(faces[:, 1:47, 1:47], (48, 48)).numpy()  # ZOOM 1.05: 46 of 48
    np.testing.assert_allclose(transform_faces(faces, "z"), want, atol=1e-5)
    np.testing.assert_allclose(transform_faces(faces, "zm"), want[:, :, ::-1], atol=1e-5)


def test_smoothed_view_is_the_gaussian_blur_training_gives_faces():
    import cv2

    faces = np.random.default_rng(0).uniform(0, 1, (3, 48, 48, 1)).astype(np.float32)
    got = np.asarray(transform_faces(faces, "s"))
    want = np.stack([cv2.GaussianBlur(f[..., 0], (5, 5), SMOOTH_SIGMA)[..., None] for f in faces])
    np.testing.assert_allclose(got[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2], atol=1e-5)
    flat = np.full((1, 48, 48, 1), 0.3, np.float32)  # at the borders too, weights sum to 1
    np.testing.assert_allclose(transform_faces(flat, "s"), flat, atol=1e-6)
    np.testing.assert_allclose(transform_faces(faces, "sm"), got[:, :, ::-1], atol=1e-6)
    zoomed = np.asarray(transform_faces(faces, "z"))
    np.testing.assert_allclose(
        transform_faces(faces, "zs"), transform_faces(zoomed, "s"), atol=1e-5
    )


def test_the_shipped_graph_skips_confident_faces_and_matches_the_dense_one(tmp_path):
    """The exported graph (gather/scatter) gives the dense reference's numbers at any batch
    size, including single faces that stop after the first stage (empty later batches)."""
    import onnxruntime as ort

    from training.export import to_onnx
    from training.quantize import _head_nodes

    keras.mixed_precision.set_global_policy("float32")  # as `load_float32` serves members
    keras.utils.set_random_seed(0)
    members = [architectures.get("emonet").build(None) for _ in range(2)]
    faces = np.random.default_rng(0).uniform(0, 1, (24, 48, 48, 1)).astype(np.float32)
    # a smoothed first view, so its rows are carried through every stage's gather
    stages = CascadeSpec.parse("1s;0;0sm,1m;0z,1zm", [1.0] * 3).stages
    views = {v: _logits(members[v[0]], faces, v[1]) for stage in stages for v in stage}
    shift = np.asarray(SHIFT)
    # margins that stop about half of the faces still going at each stage
    margins, going = [], [np.ones(len(faces), bool)]
    for k in range(1, len(stages)):
        mean, _ = simulate(views, CascadeSpec(stages[:k], tuple(margins)), shift, [0.5, 0.5])
        top2 = np.asarray(top2_margin(mean + shift))
        margins.append(float(np.median(top2[going[-1]])))
        going.append(going[-1] & (top2 < margins[-1]))
    spec = CascadeSpec(stages, tuple(margins))
    stopped_at = np.sum(going, axis=0)
    assert set(stopped_at) == {1, 2, 3, 4}

    dense = serving_model(members, log_prior_shift=SHIFT, cascade=spec)
    want = dense.predict(faces, verbose=0)
    # The dense graph is what `training.cascade.simulate` scores margins with.
    mean, cost = simulate(views, spec, shift, [0.5, 0.5])
    np.testing.assert_allclose(want, _softmax(mean + shift), atol=1e-5)
    assert cost == pytest.approx(0.5 + 0.5 * going[1].mean() + going[2].mean() + going[3].mean())
    first = _softmax(views[(1, "s")] + shift)
    np.testing.assert_allclose(want[stopped_at == 1], first[stopped_at == 1], atol=1e-5)

    sparse = serving_model(members, log_prior_shift=SHIFT, cascade=spec, skip_confident=True)
    to_onnx(sparse, GRAY48, tmp_path / "cascade.onnx")
    sess = ort.InferenceSession(str(tmp_path / "cascade.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": faces})[0], want, atol=1e-5)
    one_by_one = np.concatenate([sess.run(None, {"input": f[None]})[0] for f in faces])
    np.testing.assert_allclose(one_by_one, want, atol=1e-5)
    assert sess.run(None, {"input": faces[:0]})[0].shape == (0, 7)

    # int8 keeps the logits and what follows them float, but not the convolutions of later
    # stages, even though which faces reach them depends on the logits.
    import onnx

    head = set(_head_nodes(tmp_path / "cascade.onnx"))
    convs = [
        n.name for n in onnx.load(str(tmp_path / "cascade.onnx")).graph.node if n.op_type == "Conv"
    ]
    assert len(convs) == 6 * len(
        [la for la in members[0].layers if isinstance(la, keras.layers.Conv2D)]
    )
    assert not head.intersection(convs)


def test_cascade_command_picks_margins_then_evaluate_export_quantize_and_recover(
    tmp_path, monkeypatch, capsys
):
    from training.cli import main
    from training.ensemble import make_ensemble
    from training.evaluate import evaluate_run
    from training.export import export_run
    from training.fit import TrainOptions, train
    from training.quantize import quantize_registered
    from training.tools.recover import recover

    fer = write_fer_folder(tmp_path / "fer", per_class=8)
    runs = [tmp_path / f"member{seed}" for seed in (1, 2)]
    for seed, run in zip((1, 2), runs, strict=True):
        argv = f"train --model emonet --data {fer} --out {run} --epochs 1 --batch-size 16"
        monkeypatch.setattr(
            "sys.argv", ["training", *argv.split(), f"--seed={seed}", "--split-seed=5"]
        )
        train(
            TrainOptions(
                "emonet", str(fer), str(run), epochs=1, batch_size=16, seed=seed, split_seed=5
            )
        )
    ens = make_ensemble(runs, tmp_path / "ens")

    out = tmp_path / "cascade"
    argv = ["cascade", "--run", str(ens), "--stages", "1;0;0m,1m", "--data", str(fer)]
    assert main([*argv, "--budget", "1.0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation logits of view 0m" in printed  # progress, one line per view
    config = json.loads((out / "config.json").read_text())
    rows = json.loads((out / "cascade.json").read_text())["rows"]
    chosen = config["cascade"]
    assert chosen["stages"] == "1;0;0m,1m" and chosen["validation_cost"] <= 1.0
    best = max(r["accuracy"] for r in rows if r["cost"] <= 1.0)
    assert chosen["validation_accuracy"] == best
    assert any(r["cost"] > 1.0 for r in rows)  # the search saw what the budget ruled out
    assert (out / "cascade.png").stat().st_size > 10_000
    # the members' training curves travel with the cascade, so export ships them
    assert (out / "learning_curves.png").read_bytes() == (ens / "learning_curves.png").read_bytes()
    assert main([*argv, "--out", str(out)]) == 2  # never overwrites
    for stages in ("1;x", "1;1m"):  # not a view; member 0 unused
        bad = ["cascade", "--run", str(ens), "--stages", stages, "--data", str(fer)]
        assert main([*bad, "--out", str(tmp_path / "x")]) == 2
    assert "each of the 2 members" in capsys.readouterr().err
    assert main([*argv, "--budget", "0.2", "--out", str(tmp_path / "x")]) == 2
    assert "first stage alone costs 0.50" in capsys.readouterr().err

    for refused in ({"tta": True}, {"prior": False}):
        with pytest.raises(RuntimeError, match="is a cascade"):
            evaluate_run(out, fer, **refused)
    metrics = evaluate_run(out, fer)
    assert metrics["cascade"] == {"stages": "1;0;0m,1m", "margins": chosen["margins"]}
    # margins changed after the evaluation: export refuses the stale metrics
    edited = config | {"cascade": chosen | {"margins": [0.5, 0.25]}}
    (out / "config.json").write_text(json.dumps(edited))
    with pytest.raises(RuntimeError, match="other cascade margins"):
        export_run(
            out, "casc", models_dir=tmp_path / "models", data=fer, reports_dir=tmp_path / "rep"
        )
    (out / "config.json").write_text(json.dumps(config))

    entry = export_run(
        out, "casc", models_dir=tmp_path / "models", data=fer, reports_dir=tmp_path / "rep"
    )
    assert "early-exit cascade over views 1;0;0m,1m" in entry.description
    assert entry.training["cascade"] == metrics["cascade"]
    q = quantize_registered(
        tmp_path / "models", "casc", "casc-int8", fer, reports_dir=tmp_path / "rep", max_drop=1.0
    )
    assert q.training["cascade"] == metrics["cascade"]
    back = recover(tmp_path / "models", "casc", fer, tmp_path / "rec")
    assert [r.name for r in back] == [r.name for r in runs]
    # Its int8 file too, when it is all that is left: the same members on the int8 grid.
    back8 = recover(tmp_path / "models", "casc-int8", fer, tmp_path / "rec8")
    assert [r.name for r in back8] == [r.name for r in runs]
    assert json.loads((back8[0] / "config.json").read_text())["recovered_from"].startswith(
        "casc-int8 "
    )
