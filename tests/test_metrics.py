"""Metrics code against hand-worked examples."""

import numpy as np
import pytest

from training.metrics import (
    apply_temperature,
    confusion,
    expected_calibration_error,
    fit_temperature,
    report,
)

LABELS = ["a", "b", "c"]


def one_hot_probs(pred, n=3, p=0.8):
    probs = np.full((len(pred), n), (1 - p) / (n - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


def test_hand_worked_confusion_matrix_and_report():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 2])
    cm = confusion(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    r = report(y_true, one_hot_probs(y_pred), LABELS)
    assert r["accuracy"] == pytest.approx(0.7)
    # class a: precision 2/3, recall 2/3; b: precision 1/2, recall 1/2; c: 4/5 and 4/5
    assert r["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1-score"] == pytest.approx(0.8)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.8) / 3)
    assert r["per_class"]["c"]["support"] == 5


def test_ece_hand_worked():
    # Two predictions at confidence 0.8: one right, one wrong -> |0.5 - 0.8| = 0.3
    probs = one_hot_probs(np.array([0, 0]))
    ece, conf, acc, count = expected_calibration_error(np.array([0, 1]), probs)
    assert ece == pytest.approx(0.3)
    assert count.sum() == 2


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), y] += 1.0
    true_probs = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1.0)
    overconfident = apply_temperature(true_probs, 0.4)  # as if logits were 2.5x too large
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.5, rel=0.15)
    before = expected_calibration_error(y, overconfident)[0]
    after = expected_calibration_error(y, apply_temperature(overconfident, t))[0]
    assert after < before / 2
    assert np.allclose(apply_temperature(overconfident, t).sum(1), 1)


def test_fitted_temperature_is_the_nll_minimum():
    """The bounded search lands where a fine grid over log T puts the lowest validation NLL."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 1500)
    logits = rng.normal(size=(1500, 7))
    logits[np.arange(1500), y] += 1.5
    probs = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.6)

    def nll(t):
        return -np.mean(np.log(apply_temperature(probs, t)[np.arange(len(y)), y]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 4001))
    best = grid[np.argmin([nll(t) for t in grid])]
    assert fit_temperature(y, probs) == pytest.approx(best, rel=2e-3)
