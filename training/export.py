"""Export a trained run to `models/NAME.onnx` and register it.

The exported graph takes the model's float32 NHWC input (dynamic batch) and returns
calibrated probabilities: the run's fitted temperature is folded in front of the softmax.
Export fails unless onnxruntime reproduces the Keras outputs on real test faces.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from app.files import sha256_file
from app.labels import EMOTIONS
from app.preprocess import prepare_batch
from app.registry import InputInfo, ModelEntry, claim_name, upsert
from training import architectures
from training.data import load_split
from training.graph import (
    CascadeSpec,
    architecture_name,
    checkpoint_digest,
    load_members,
    member_architectures,
    serving_model,
)
from training.metrics import HEADLINE_KEYS
from training.run_config import read_run_config

OPSET = 17
PARITY_TOL = 1e-4
PARITY_FACES = 256
REPORT_FILES = (
    "metrics.json",
    "confusion_matrix.png",
    "roc.png",
    "calibration.png",
    "learning_curves.png",
    "history.csv",
    "config.json",
    "cascade.png",  # a cascade's validation accuracy against compute
)


def to_onnx(model, spec, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    signature = [
        tf.TensorSpec((None, spec.height, spec.width, spec.channels), tf.float32, name="input")
    ]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(path))


def check_parity(model, path: Path, faces: np.ndarray) -> float:
    """Largest absolute difference between Keras and onnxruntime probabilities."""
    from app.inference import cpu_session

    sess = cpu_session(path)
    expected = np.asarray(model.predict(faces, verbose=0))
    got = sess.run(None, {sess.get_inputs()[0].name: faces})[0]
    return float(np.max(np.abs(expected - got)))


def describe(members: list[str], tta: bool, prior: bool, cascade: CascadeSpec | None = None) -> str:
    """Say in the registry what the graph computes, since one name can hide an ensemble.

    `members` holds each member's architecture description.
    """
    if len(members) == 1:
        text = members[0]
    elif len(set(members)) == 1:
        text = f"ensemble of {len(members)} x {members[0]}"
    else:
        text = "ensemble of " + " + ".join(members)
    text += "; mirror TTA in the graph" if tta else ""
    if cascade is not None:
        margins = ", ".join(f"{m:g}" for m in cascade.margins)
        legend = ", ".join(
            f"{t}: {what}"
            for t, what in (("m", "mirrored"), ("z", "zoomed in"), ("s", "smoothed"))
            if t == "m" or t in cascade.text()
        )
        text += (
            f"; early-exit cascade over views {cascade.text()} ({legend}), a face going on "
            f"while its top-2 margin is below {margins}"
        )
    return text + ("; class-weight prior correction in the graph" if prior else "")


def export_run(
    run: str | Path,
    name: str,
    *,
    version: str = "1.0.0",
    default: bool = False,
    models_dir: str | Path = "models",
    data: str | Path | None = None,
    reports_dir: str | Path = "docs/results",
    replace: bool = False,
) -> ModelEntry:
    """Convert, check parity, register, and copy the run's metrics and pictures to reports_dir/NAME.

    An existing registry name is only overwritten with `replace` (it stays the default if it
    was). The registry entry carries the run's metrics, so they must be of these checkpoints.
    """
    run, models_dir = Path(run), Path(models_dir)
    default = claim_name(models_dir, name, replace) or default
    config = read_run_config(run)
    metrics_file = run / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(
            f"{metrics_file} is missing: run `python -m training evaluate` first"
        )
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("checkpoint_sha256") != checkpoint_digest(run, config):
        raise RuntimeError(
            f"{metrics_file} does not describe the run's current checkpoints (trained on, or "
            "evaluated by an older version, since): run `python -m training evaluate` again"
        )
    arch = architectures.get(config.model)
    spec = arch.input
    temperature = float(metrics.get("temperature", 1.0))

    tta = bool(metrics.get("tta", False))
    members = load_members(run, config)
    shift = metrics.get("log_prior_shift")
    cascade = CascadeSpec.from_dict(config.cascade)
    if metrics.get("cascade") != (cascade and cascade.as_dict()):
        raise RuntimeError(
            f"{metrics_file} was written for other cascade margins than {run}'s: "
            "run `python -m training evaluate` again"
        )
    # The parity reference computes every view; the shipped graph skips what it can.
    model = serving_model(members, temperature, tta, shift, cascade)
    shipped = (
        model if cascade is None else serving_model(members, temperature, tta, shift, cascade, True)
    )
    models_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = models_dir / f"{name}.onnx"
    tmp = onnx_path.with_suffix(".onnx.tmp")
    to_onnx(shipped, spec, tmp)

    test, _ = load_split(data or config.options.data, "test")
    pick = np.random.default_rng(0).permutation(len(test))[:PARITY_FACES]
    faces = prepare_batch(test.x[pick], spec)
    diff = check_parity(model, tmp, faces)
    if diff > PARITY_TOL:
        tmp.unlink()
        raise RuntimeError(
            f"ONNX parity check failed: max |keras - onnx| = {diff:.2e} > {PARITY_TOL}"
        )
    tmp.replace(onnx_path)
    print(f"parity on {len(faces)} test faces: max |keras - onnx| = {diff:.2e}")

    entry = ModelEntry(
        name=name,
        version=version,
        file=onnx_path.name,
        sha256=sha256_file(onnx_path),
        labels=list(EMOTIONS),
        input=InputInfo(**asdict(spec)),
        output="probabilities",
        temperature=temperature,
        temperature_in_graph=True,
        default=default,
        description=describe(
            [a.description for a in member_architectures(config)], tta, shift is not None, cascade
        ),
        metrics={k: metrics[k] for k in (*HEADLINE_KEYS, "ece_before", "ece_after") if k in metrics}
        | {"dataset": "FER2013 test/ (PublicTest, 3,589 faces)"},
        training={
            "architecture": architecture_name(config),
            "command": config.command,
            **({"members": config.member_commands} if config.members else {}),
            "data_fingerprint": config.data_fingerprint,
            "epochs": config.epochs,
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "onnx_opset": OPSET,
            "mirror_tta": tta,
            "log_prior_shift": shift,
            **({"cascade": cascade.as_dict()} if cascade else {}),
            "parity_max_abs_diff": diff,
        },
    )
    upsert(models_dir, entry)
    reports = Path(reports_dir) / name
    reports.mkdir(parents=True, exist_ok=True)
    for f in REPORT_FILES:
        if (run / f).exists():
            shutil.copy2(run / f, reports / f)
    size_mb = onnx_path.stat().st_size / 1e6
    print(f"exported {onnx_path} ({size_mb:.2f} MB), registered in {models_dir / 'registry.json'}")
    return entry
