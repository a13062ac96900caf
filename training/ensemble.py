"""Combine trained runs into one ensemble folder that `evaluate` and `export` treat as a run.

The members' logits are averaged inside one graph (`training.graph.serving_model`), so the
service runs an ensemble as a single ONNX model. Members may differ in architecture (different
networks err differently, which is what an ensemble feeds on) but must share the input spec,
the training data and the validation split (`train --split-seed`): otherwise one member's
validation faces are another's training faces, and validation would no longer select or
calibrate honestly.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from training import architectures
from training.data import check_same_split
from training.plots import plot_learning_curves
from training.run_config import RunConfig, read_run_config, write_run_config


def make_ensemble(runs: list[str | Path], out: str | Path) -> Path:
    """Check the members agree and write `out/config.json` pointing at their checkpoints."""
    if len(runs) < 2:
        raise RuntimeError("an ensemble needs at least two runs")
    runs = [Path(r) for r in runs]
    configs = []
    for run in runs:
        if not (run / "best.keras").exists():
            raise FileNotFoundError(f"{run / 'best.keras'} is missing: train that run first")
        configs.append(read_run_config(run))
    first = configs[0]
    spec = architectures.get(first.model).input
    for run, config in zip(runs, configs, strict=True):
        if architectures.get(config.model).input != spec:
            raise RuntimeError(
                f"{run}: model {config.model!r} takes another input than {first.model!r}"
            )
        check_same_split(run, config, first)
    out = Path(out)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run or an ensemble; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        model=first.model,  # whose input spec every member shares
        members=[str(r.resolve()) for r in runs],
        member_models=[c.model for c in configs],
        command="python -m training " + shlex.join(sys.argv[1:]),
        member_commands=[c.command for c in configs],
        options=first.options,  # the shared data and validation split
        epochs=[c.epochs for c in configs],
        data_fingerprint=first.data_fingerprint,
        val_fraction=first.val_fraction,
        class_weights=first.class_weights,  # same data, so the same weights
    )
    write_run_config(out, config)
    histories = [r / "history.csv" for r in runs if (r / "history.csv").exists()]
    plot_learning_curves(histories, out / "learning_curves.png")
    names = " + ".join(config.member_models)
    print(f"ensemble of {names} in {out}; evaluate and export it as a run")
    return out
