"""Choose ensemble members on the validation split: score every combination of candidate runs.

An ensemble is only as good as how differently its members err, which no single network's
score shows. This scores each combination of `size` runs exactly as `ensemble` + `evaluate`
would build it (mean of the members' float32 logits plus the class-weight prior correction,
optionally with mirror TTA), on the validation faces the runs share, so the choice of the
shipped members never looks at test/.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from app.inference import softmax
from app.labels import EMOTIONS
from training import architectures
from training.data import check_same_split, recorded_split_seed
from training.evaluate import predict_keras
from training.graph import load_float32, prior_correction, serving_model
from training.metrics import report
from training.run_config import RunConfig, read_run_config
from training.split import split_train


def _logits(run: Path, config: RunConfig, val, tta: bool) -> np.ndarray:
    """The run's validation logits (mean over views with `tta`): probabilities at T = 1."""
    arch = architectures.get(config.model)
    probs = predict_keras(serving_model([load_float32(run, arch)], tta=tta), val, arch.input)
    # Softmax is shift-invariant, so log-probabilities are the logits up to a per-face constant.
    return np.log(np.clip(probs, 1e-30, None))


def select(
    runs: list[str | Path], data: str | Path, size: int, out: str | Path, tta: bool = False
) -> list[dict]:
    """Score every `size`-member combination of `runs` on validation; write a table, best first."""
    runs = [Path(r) for r in runs]
    if not 1 <= size <= len(runs):
        raise RuntimeError(f"cannot choose {size} of {len(runs)} runs")
    configs = [read_run_config(r) for r in runs]
    for run, config in zip(runs, configs, strict=True):
        if config.members:
            raise RuntimeError(f"{run} is an ensemble; list its member runs instead")
        check_same_split(run, config, configs[0])
    opts = configs[0].options
    _, val, _ = split_train(
        data,
        opts.limit_per_class,
        recorded_split_seed(opts),
        configs[0].val_fraction,
    )
    logits = []
    for i, (run, config) in enumerate(zip(runs, configs, strict=True)):
        print(f"[{i + 1}/{len(runs)}] validation logits of {run}", flush=True)
        logits.append(_logits(run, config, val, tta))
    shift = prior_correction(configs[0])
    rows = []
    for combo in itertools.combinations(range(len(runs)), size):
        z = np.mean([logits[i] for i in combo], axis=0) + (0 if shift is None else shift)
        m = report(val.y, softmax(z), list(EMOTIONS))
        recalls = {k: v["recall"] for k, v in m["per_class"].items()}
        rows.append(
            {
                "members": [str(runs[i]) for i in combo],
                "passes": len(combo) * (2 if tta else 1),
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "lowest_recall": min(recalls.values()),
                "lowest_recall_class": min(recalls, key=recalls.get),
            }
        )
    rows.sort(key=lambda r: (r["accuracy"], r["macro_f1"]), reverse=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps({"n": len(val), "rows": rows}, indent=2))
    lines = [
        f"Validation split: {len(val)} faces; mean logits + class-weight prior correction"
        + (", mirror TTA" if tta else ""),
        "",
        "| members | network passes | validation accuracy | macro-F1 | lowest recall |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        names = " + ".join(Path(m).name for m in r["members"])
        lines.append(
            f"| {names} | {r['passes']} | {r['accuracy']:.2%} | {r['macro_f1']:.3f} | "
            f"{r['lowest_recall']:.2f} ({r['lowest_recall_class']}) |"
        )
    (out / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
