"""Choose an early-exit cascade's margins on the validation split, within a compute budget.

A network's prediction on a face it is sure about rarely changes when more networks or
other views of the face (mirrored, zoomed) are averaged in; the gains of an ensemble and of
test-time augmentation come from doubtful faces. A cascade (`training.graph.CascadeSpec`) runs its first stage on every face and the
later ones only on faces whose top-2 margin is still small. This scores every choice of
margins on a grid, from each view's validation logits (computed once), and keeps the most
accurate one whose mean compute per face stays within `budget` times that of running every
member once (the plain ensemble). It writes a new folder that `evaluate` and `export` treat
as a run, so nothing here looks at test/.
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

from app.inference import softmax
from training import architectures
from training.architectures import N_CLASSES
from training.data import recorded_split_seed
from training.evaluate import predict_keras
from training.graph import (
    CascadeSpec,
    load_members,
    member_architectures,
    prior_correction,
    serving_model,
)
from training.plots import plot_cascade
from training.run_config import read_run_config, write_run_config
from training.split import split_train

GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0: no face goes on, 1: every face


def multiply_adds(model) -> int:
    """Multiply-adds per face of a network's convolutions and dense layers: its cost."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def simulate(
    views: dict[tuple[int, str], np.ndarray],
    spec: CascadeSpec,
    shift: np.ndarray,
    costs: list[float],
) -> tuple[np.ndarray, float]:
    """The cascade's mean logits (as the graph computes them) and its mean cost per face.

    `views` maps `(member, transform)` to that view's logits; `costs` is each member's cost
    as a share of all members' together.
    """
    first = spec.stages[0]
    total = sum(views[v] for v in first)
    mean = total / len(first)
    going = np.ones(len(mean), bool)
    cost = sum(costs[i] for i, _ in first)
    seen = len(first)
    for stage, margin in zip(spec.stages[1:], spec.margins, strict=True):
        top2 = np.sort(softmax(mean + shift), 1)[:, -2:]
        going &= top2[:, 1] - top2[:, 0] < margin
        total = total + sum(views[v] for v in stage)
        seen += len(stage)
        mean = np.where(going[:, None], total / seen, mean)
        cost += going.mean() * sum(costs[i] for i, _ in stage)
    return mean, float(cost)


def view_logits(members, shape: CascadeSpec, split, spec_in) -> dict[tuple[int, str], np.ndarray]:
    """Each view's logits (up to a per-face constant) on `split`, computed once."""
    views = {}
    for view in sorted({v for stage in shape.stages for v in stage}):
        print(f"validation logits of view {view[0]}{view[1]}", flush=True)
        probs = predict_keras(
            serving_model(members, cascade=CascadeSpec(((view,),), ())), split, spec_in
        )
        views[view] = np.log(np.clip(probs, 1e-30, None))
    return views


def score_margins(views, shape: CascadeSpec, shift, costs, y) -> list[dict]:
    """Accuracy and mean cost of every non-increasing choice of margins on the grid."""
    rows = []
    for margins in itertools.product(GRID, repeat=len(shape.stages) - 1):
        if any(b > a for a, b in itertools.pairwise(margins)):
            continue  # a later stage never asks for more doubt than an earlier one
        mean, cost = simulate(views, CascadeSpec(shape.stages, margins), shift, costs)
        accuracy = float(np.mean((mean + shift).argmax(1) == y))
        rows.append({"margins": list(margins), "accuracy": accuracy, "cost": cost})
    return rows


def tune_cascade(
    run: str | Path, stages: str, data: str | Path, budget: float, out: str | Path
) -> CascadeSpec:
    """Pick margins for `stages` over `run`'s members; write `out` as a cascade run folder."""
    run, out = Path(run), Path(out)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run or an ensemble; choose another --out")
    config = read_run_config(run)
    if config.cascade is not None:
        raise RuntimeError(f"{run} is a cascade already; give the ensemble it was made from")
    members = load_members(run, config)
    try:
        shape = CascadeSpec.parse(stages, [1.0] * stages.count(";"))
    except ValueError as exc:
        raise RuntimeError(f"--stages {stages!r}: {exc}") from exc
    used = {i for stage in shape.stages for i, _ in stage}
    if not used <= set(range(len(members))) or len(used) != len(members):
        raise RuntimeError(
            f"the stages {stages!r} must use each of the {len(members)} members (0 to "
            f"{len(members) - 1}) of {run} at least once"
        )
    macs = [multiply_adds(m) for m in members]
    costs = [m / sum(macs) for m in macs]
    cheapest = sum(costs[i] for i, _ in shape.stages[0])  # every margin 0: stage 1 alone
    if cheapest > budget:
        raise RuntimeError(
            f"the first stage alone costs {cheapest:.2f} of the plain ensemble, over --budget {budget:g}"
        )
    opts = config.options
    _, val, fingerprint = split_train(
        data,
        opts.limit_per_class,
        recorded_split_seed(opts),
        config.val_fraction,
    )
    if fingerprint != config.data_fingerprint:
        raise RuntimeError(f"{data} is not the data {run} was trained on ({fingerprint})")
    views = view_logits(members, shape, val, architectures.get(config.model).input)
    shift = np.asarray(prior_correction(config) or [0.0] * N_CLASSES)
    rows = score_margins(views, shape, shift, costs, val.y)
    within = [r for r in rows if r["cost"] <= budget]  # all margins 0 always is
    best = max(within, key=lambda r: (r["accuracy"], -r["cost"]))
    everything = next(r for r in rows if all(m == 1.0 for m in r["margins"]))
    chosen = CascadeSpec(shape.stages, tuple(best["margins"]))

    out.mkdir(parents=True, exist_ok=True)
    archs = member_architectures(config)
    paths = config.members or [str(run.resolve())]
    cascade_config = config.model_copy(
        update={
            "members": paths,
            "member_models": [a.name for a in archs],
            "member_commands": config.member_commands or [config.command],
            "command": "python -m training " + shlex.join(sys.argv[1:]),
            "cascade": chosen.as_dict()
            | {
                "budget": budget,
                "validation_accuracy": best["accuracy"],
                "validation_cost": best["cost"],
                "member_multiply_adds": macs,
            },
        }
    )
    write_run_config(out, cascade_config)
    (out / "cascade.json").write_text(json.dumps({"n": len(val), "rows": rows}, indent=2))
    plot_cascade(rows, best, everything, budget, out / "cascade.png")
    if (run / "learning_curves.png").exists():  # export ships it beside the cascade's plots
        shutil.copyfile(run / "learning_curves.png", out / "learning_curves.png")
    print(
        f"stages {chosen.text()}, margins {', '.join(f'{m:g}' for m in chosen.margins)}: "
        f"validation {best['accuracy']:.2%} at {best['cost']:.2f} of the plain ensemble's "
        f"compute (every view for every face: {everything['accuracy']:.2%} at "
        f"{everything['cost']:.2f}); evaluate and export {out} as a run"
    )
    return chosen
