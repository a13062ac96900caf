"""Pictures of a run: learning curves, confusion matrix, ROC curves, reliability diagram;
and of a comparison of models."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, out: Path) -> None:
    """Write the picture and free it: pyplot keeps every open figure alive otherwise."""
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_learning_curves(history_csvs: list[Path], out: Path) -> None:
    """Train vs validation loss and accuracy per epoch, as the study shows them.

    Several histories (an ensemble's members) share the axes, labelled by run folder.
    """
    runs = []
    for path in history_csvs:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if rows:
            runs.append((path.parent.name, rows))
    if not runs:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for run, rows in runs:
            epochs = [int(r["epoch"]) + 1 for r in rows]
            for prefix, label in (("", "train"), ("val_", "validation")):
                vals = [float(r[prefix + key]) for r in rows if r.get(prefix + key)]
                if vals:
                    name = label if len(runs) == 1 else f"{run} {label}"
                    ax.plot(epochs[: len(vals)], vals, marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Learning curves ({', '.join(run for run, _ in runs)})")
    _save(fig, out)


def plot_confusion(
    cm: np.ndarray, labels: list[str], out: Path, title: str, rows: list[str] | None = None
) -> None:
    """Counts and row-normalized (recall) confusion matrices side by side.

    `rows` names the true classes when they differ from the predicted `labels` (a photo
    benchmark adds a "missed" column).
    """
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, mat, fmt, name in (
        (axes[0], cm, "d", "counts"),
        (axes[1], norm, ".2f", "row-normalized"),
    ):
        im = ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(rows or labels)), rows or labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        hi = mat.max() / 2 if mat.size else 0
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(
                    j,
                    i,
                    format(mat[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] > hi else "black",
                )
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    _save(fig, out)


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out: Path, title: str
) -> None:
    """One-vs-rest ROC curve per class with its AUC in the legend."""
    fig, ax = plt.subplots(figsize=(7, 6))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    _save(fig, out)


def plot_reliability(
    bins: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, str]], out: Path, title: str
) -> None:
    """Reliability diagram: mean confidence vs accuracy per bin, one line per calibration."""
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for conf, acc, count, ece, name in bins:
        keep = count > 0
        ax.plot(conf[keep], acc[keep], marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    _save(fig, out)


def plot_comparison(rows: list[dict], out: Path) -> None:
    """Grouped bars: accuracy, macro-F1 and each class's recall, one colour per model."""
    from app.labels import EMOTIONS

    groups = ["accuracy", "macro-F1", *EMOTIONS]
    x = np.arange(len(groups))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, r in enumerate(rows):
        values = [r["accuracy"], r["macro_f1"], *(r["recall"][e] for e in EMOTIONS)]
        ax.bar(x - 0.4 + (i + 0.5) * width, values, width, label=r["name"])
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy / macro-F1 / recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    if rows:
        ax.set_title(f"Models on the same test split (n = {rows[0]['n']})")
    _save(fig, out)


def plot_cascade(
    rows: list[dict], chosen: dict, everything: dict, budget: float, out: Path
) -> None:
    """Validation accuracy against mean compute per face for every choice of margins."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(
        [r["cost"] for r in rows],
        [r["accuracy"] for r in rows],
        s=8,
        alpha=0.4,
        label="a choice of margins",
    )
    ax.axvline(budget, color="grey", ls="--", lw=1, label=f"budget ({budget:g})")
    ax.scatter(
        [everything["cost"]],
        [everything["accuracy"]],
        color="black",
        marker="s",
        label="every view for every face",
    )
    ax.scatter(
        [chosen["cost"]],
        [chosen["accuracy"]],
        color="red",
        marker="*",
        s=150,
        label=f"chosen: margins {', '.join(f'{m:g}' for m in chosen['margins'])}",
    )
    ax.set_xlabel("mean compute per face (1 = every member once)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Early-exit cascade: accuracy against compute")
    _save(fig, out)
