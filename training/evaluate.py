"""Evaluate a trained run on `test/`: metrics.json plus confusion, ROC and calibration pictures.

A temperature is fitted on the run's own validation split (never on test) and the
expected calibration error is reported before and after it; export folds that
temperature into the ONNX graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.labels import EMOTIONS
from app.preprocess import InputSpec
from app.registry import ModelEntry
from training import architectures
from training.data import Split, load_split, recorded_split_seed
from training.metrics import (
    apply_temperature,
    confusion,
    expected_calibration_error,
    fit_temperature,
    report,
    roc_curves,
)
from training.plots import plot_confusion, plot_reliability, plot_roc
from training.run_config import read_run_config
from training.split import split_train

LABELS = list(EMOTIONS)


def predict_keras(model, split: Split, spec: InputSpec, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of a Keras model, with faces prepared by the shared pipeline."""
    from training.pipeline import make_dataset

    ds = make_dataset(split, spec, batch_size, training=False)
    return np.asarray(model.predict(ds.map(lambda x, y: x), verbose=0), dtype=np.float64)


def write_evaluation(
    out: Path,
    title: str,
    y_test: np.ndarray,
    probs_test: np.ndarray,
    y_val: np.ndarray | None = None,
    probs_val: np.ndarray | None = None,
    extra: dict | None = None,
) -> dict:
    """Compute every metric, fit the temperature on validation, and write json + pictures."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"split": "test"} | (extra or {}) | report(y_test, probs_test, LABELS)
    temperature = 1.0
    if y_val is not None and probs_val is not None:
        temperature = fit_temperature(y_val, probs_val)
        metrics["validation"] = {
            "n": int(len(y_val)),
            "accuracy": float(np.mean(probs_val.argmax(1) == y_val)),
            "ece_before": expected_calibration_error(y_val, probs_val)[0],
            "ece_after": expected_calibration_error(
                y_val, apply_temperature(probs_val, temperature)
            )[0],
        }
    metrics["temperature"] = temperature
    metrics["ece_before"] = metrics.pop("ece")
    # Without validation data no temperature is fitted: "after" is the model as it is.
    calibrated = apply_temperature(probs_test, temperature) if temperature != 1.0 else probs_test
    metrics["ece_after"] = expected_calibration_error(y_test, calibrated)[0]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    cm = confusion(y_test, probs_test.argmax(1), len(LABELS))
    plot_confusion(
        cm,
        LABELS,
        out / "confusion_matrix.png",
        f"{title}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
    )
    plot_roc(
        roc_curves(y_test, probs_test, LABELS), out / "roc.png", f"{title}: one-vs-rest ROC (test)"
    )
    series = [("before temperature" if temperature != 1.0 else "model output", probs_test)]
    if temperature != 1.0:
        series.append((f"temperature {temperature:.2f}", calibrated))
    bins = []
    for name, p in series:
        ece, conf, acc, count = expected_calibration_error(y_test, p)
        bins.append((conf, acc, count, ece, name))
    plot_reliability(bins, out / "calibration.png", f"{title}: reliability on test")
    print_summary(title, metrics)
    return metrics


def print_summary(title: str, m: dict) -> None:
    print(
        f"{title}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f} (T={m['temperature']:.3f})"
    )
    for name, row in m["per_class"].items():
        print(
            f"  {name:9s} precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
            f"f1 {row['f1-score']:.3f}  support {row['support']}"
        )


def evaluate_run(
    run: str | Path,
    data: str | Path,
    limit_per_class: int | None = None,
    tta: bool = False,
    prior: bool = True,
) -> dict:
    """Evaluate `run/best.keras` on `data/test` and write the results into the run folder.

    The model is evaluated in float32 with the graph export will ship (`training.graph`);
    `tta` adds mirror test-time augmentation and `prior` the class-weight prior correction
    (`training.graph.prior_correction`); a cascade folder (`training.cascade`) brings its
    stages and margins. Export folds in whatever was evaluated.
    """
    from training.graph import (
        CascadeSpec,
        architecture_name,
        checkpoint_digest,
        load_members,
        prior_correction,
        serving_model,
    )

    run = Path(run)
    config = read_run_config(run)
    arch = architectures.get(config.model)  # every member takes its input
    name = architecture_name(config)
    opts = config.options
    shift = prior_correction(config) if prior else None
    cascade = CascadeSpec.from_dict(config.cascade)
    if cascade is not None and (tta or not prior):
        raise RuntimeError(
            f"{run} is a cascade: its stages say which views it uses and its margins were "
            "chosen with the prior correction, so neither --tta nor --no-prior-correction"
        )
    model = serving_model(
        load_members(run, config), tta=tta, log_prior_shift=shift, cascade=cascade
    )

    test, test_fp = load_split(data, "test", limit_per_class)
    _, val, _ = split_train(
        data,
        opts.limit_per_class,
        recorded_split_seed(opts),
        config.val_fraction,
    )
    probs_test = predict_keras(model, test, arch.input)
    probs_val = predict_keras(model, val, arch.input)
    return write_evaluation(
        run,
        name,
        test.y,
        probs_test,
        val.y,
        probs_val,
        extra={
            "model": name,
            "tta": tta,
            "log_prior_shift": shift,
            "cascade": None if cascade is None else cascade.as_dict(),
            "test_data_fingerprint": test_fp,
            "train_data_fingerprint": config.data_fingerprint,
            "checkpoint_sha256": checkpoint_digest(run, config),
        },
    )


def predict_onnx_file(path: Path, entry: ModelEntry, faces: np.ndarray) -> np.ndarray:
    """Probabilities of an ONNX file described by `entry` for 48x48 faces, in EMOTIONS order.

    Faces are prepared and outputs turned into probabilities (logits, temperature) by the
    service's own code, so this scores exactly what `/predict` would return.
    """
    from app.inference import cpu_session, label_columns, to_probabilities
    from app.preprocess import prepare_batch

    sess = cpu_session(path)
    name = sess.get_inputs()[0].name
    x = prepare_batch(faces, entry.input.spec())
    out = np.concatenate([sess.run(None, {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    return to_probabilities(out, entry)[:, label_columns(entry.labels)]


def predict_onnx(models_dir: str | Path, name: str, faces: np.ndarray) -> np.ndarray:
    """Probabilities of a registered ONNX model: the reference the service is checked against.

    `/predict?detector=none` on the same face must return the same probabilities.
    """
    from app.registry import load_registry

    entry = load_registry(Path(models_dir)).get(name)
    if entry is None:
        raise KeyError(f"model {name!r} is not in {models_dir}/registry.json")
    return predict_onnx_file(Path(models_dir) / entry.file, entry, faces)


def evaluate_registered(
    models_dir: str | Path, name: str, data: str | Path, out: str | Path
) -> dict:
    """Score a shipped ONNX model on test/ exactly as it is served (no Keras involved)."""
    test, fp = load_split(data, "test")
    probs = predict_onnx(models_dir, name, test.x)
    return write_evaluation(
        Path(out),
        f"{name} (onnx)",
        test.y,
        probs,
        extra={"model": name, "test_data_fingerprint": fp, "runtime": "onnxruntime"},
    )
