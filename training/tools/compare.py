"""Compare registered models side by side on one test split, scored as the service runs them.

Each model is scored through onnxruntime with the service's own preprocessing and output
handling (`training.evaluate.predict_onnx_file`), and its per-face latency is measured at
batch 1 and 32 (`training.latency`). Earlier evaluations (`metrics.json` files, such as the
`fer` baseline's) can join the table without a latency. The result is a Markdown table,
the same rows as JSON, and a picture of accuracy, macro-F1 and per-class recall.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.labels import EMOTIONS
from app.preprocess import prepare_batch
from app.registry import load_registry
from training.data import load_split
from training.evaluate import predict_onnx_file
from training.latency import session, time_per_face
from training.metrics import report
from training.plots import plot_comparison


def _row(name: str, metrics: dict, **extra) -> dict:
    return {
        "name": name,
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "recall": {e: metrics["per_class"][e]["recall"] for e in EMOTIONS},
        "ece": metrics.get("ece_after", metrics.get("ece")),
        **extra,
    }


def score_registered(
    models_dir: Path, names: list[str] | None, data: str | Path, threads: int, seconds: float
) -> list[dict]:
    """One row per registered model (all of them when `names` is empty), with progress."""
    registry = load_registry(models_dir)
    unknown = [n for n in names or [] if registry.get(n) is None]
    if unknown:
        known = ", ".join(m.name for m in registry.models)
        raise KeyError(f"not in {models_dir}/registry.json: {', '.join(unknown)} (known: {known})")
    entries = [registry.get(n) for n in names] if names else list(registry.models)
    test, fingerprint = load_split(data, "test")
    rows = []
    for i, entry in enumerate(entries, 1):
        path = models_dir / entry.file
        print(
            f"[{i}/{len(entries)}] {entry.name} {entry.version}: {len(test)} test faces", flush=True
        )
        probs = predict_onnx_file(path, entry, test.x)
        metrics = report(test.y, probs, list(EMOTIONS))
        sess = session(path, threads)
        faces = prepare_batch(test.x, entry.input.spec())  # a cascade's cost depends on them
        rows.append(
            _row(
                f"{entry.name} {entry.version}",
                metrics,
                ms_batch1=time_per_face(sess, 1, seconds, faces).median_ms,
                ms_batch32=time_per_face(sess, 32, seconds, faces).median_ms,
                mb=path.stat().st_size / 1e6,
                test_data_fingerprint=fingerprint,
            )
        )
    return rows


def earlier_rows(metrics_files: list[Path]) -> list[dict]:
    """Rows from `metrics.json` files that `evaluate` or `baseline-fer` wrote."""
    rows = []
    for path in metrics_files:
        metrics = json.loads(Path(path).read_text())
        rows.append(_row(metrics.get("model", Path(path).parent.name), metrics))
    return rows


def markdown(rows: list[dict]) -> str:
    """The comparison as a Markdown table (recall in EMOTIONS order)."""
    head = (
        "| model | n | accuracy | macro-F1 | recall "
        + " / ".join(e[:2] for e in EMOTIONS)
        + " | ECE | ms/face b1 / b32 | MB |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        recall = " / ".join(f"{r['recall'][e]:.2f}" for e in EMOTIONS)
        speed = (
            f"{r['ms_batch1']:.2f} / {r['ms_batch32']:.2f}" if "ms_batch1" in r else "not measured"
        )
        size = f"{r['mb']:.1f}" if "mb" in r else ""
        ece = f"{r['ece']:.3f}" if r.get("ece") is not None else ""
        lines.append(
            f"| {r['name']} | {r['n']} | {r['accuracy']:.1%} | {r['macro_f1']:.3f} | {recall} "
            f"| {ece} | {speed} | {size} |"
        )
    return "\n".join(lines) + "\n"


def compare(
    models_dir: str | Path,
    names: list[str] | None,
    data: str | Path,
    out: str | Path,
    metrics_files: list[Path] | None = None,
    threads: int = 2,
    seconds: float = 2.0,
) -> list[dict]:
    """Score, time, and write `comparison.md`, `comparison.json` and `comparison.png` to out."""
    rows = score_registered(Path(models_dir), names, data, threads, seconds)
    rows += earlier_rows(metrics_files or [])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "comparison.md").write_text(table)
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot_comparison(rows, out / "comparison.png")
    print("\n" + table + f"\nwritten to {out}/comparison.{{md,json,png}}")
    return rows
