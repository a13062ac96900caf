"""Classification metrics from true labels and predicted probabilities.

Shared by run evaluation, the `fer` baseline and the ONNX check, so every number in the
README's results table comes from the same code.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score, roc_curve

from app.inference import softmax

ECE_BINS = 15
HEADLINE_KEYS = ("split", "n", "accuracy", "macro_f1", "weighted_f1", "per_class", "roc_auc")
"""The evaluation numbers a registry entry carries (export and quantize add their ECE keys)."""


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def report(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, and the study's per-class classification report."""
    y_pred = probs.argmax(axis=1)
    rep = classification_report(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        target_names=labels,
        output_dict=True,
        zero_division=0,
    )
    per_class = {
        name: {k: float(rep[name][k]) for k in ("precision", "recall", "f1-score")}
        | {"support": int(rep[name]["support"])}
        for name in labels
    }
    aucs = roc_curves(y_true, probs, labels)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "macro_f1": float(rep["macro avg"]["f1-score"]),
        "weighted_f1": float(rep["weighted avg"]["f1-score"]),
        "per_class": per_class,
        "roc_auc": {k: float(v[2]) for k, v in aucs.items()},
        "ece": expected_calibration_error(y_true, probs)[0],
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1)))),
    }


def roc_curves(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curve and AUC per class (classes absent from y_true are skipped)."""
    out = {}
    for i, name in enumerate(labels):
        positives = y_true == i
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, i])
        out[name] = (fpr, tpr, float(roc_auc_score(positives, probs[:, i])))
    return out


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """ECE of the top-class confidence over equal-width bins, plus per-bin confidence, accuracy, count."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_mean = np.bincount(idx, weights=conf, minlength=n_bins) / np.maximum(count, 1)
    acc_mean = np.bincount(idx, weights=correct, minlength=n_bins) / np.maximum(count, 1)
    ece = float(np.sum(count / max(len(y_true), 1) * np.abs(acc_mean - conf_mean)))
    return ece, conf_mean, acc_mean, count


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T, since log p = logits + const."""
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / temperature)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimizing validation NLL (SciPy's bounded scalar search on log T)."""

    def nll(log_t: float) -> float:
        p = apply_temperature(probs, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, 1))))

    best = minimize_scalar(
        nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-8}
    )
    return float(np.exp(best.x))
