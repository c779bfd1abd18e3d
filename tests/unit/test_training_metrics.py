"""Metrics, temperature scaling and operating thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    at_threshold,
    auroc,
    bootstrap_auroc_ci,
    dice,
    ece,
    fit_temperature,
    sigmoid,
    threshold_for_sensitivity,
    youden_point,
)


def test_auroc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding creates ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = (
        (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    ) / (len(pos) * len(neg))
    assert auroc(y, s) == pytest.approx(pairwise)
    assert np.isnan(auroc(np.ones(5), np.arange(5)))


def test_bootstrap_ci_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.normal(y, 1.0)
    lo, hi = bootstrap_auroc_ci(y, s, seed=0, n_boot=300)
    assert lo < auroc(y, s) < hi
    assert hi - lo < 0.2


def test_temperature_scaling_recovers_overconfidence_and_lowers_ece() -> None:
    rng = np.random.default_rng(2)
    true_logit = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(true_logit)).astype(int)
    overconfident = 3.0 * true_logit
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.08)
    assert ece(y, sigmoid(overconfident / t)) < 0.02 < ece(y, sigmoid(overconfident))


def test_screening_threshold_reaches_sensitivity_and_youden_is_optimal() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = sigmoid(rng.normal(2 * y - 1, 1.2))
    screen = threshold_for_sensitivity(y, p, 0.9)
    assert screen.sensitivity >= 0.9
    stricter = at_threshold(y, p, screen.threshold + 1e-3)
    assert stricter.sensitivity < 0.9 or stricter.threshold > p.max()
    youden = youden_point(y, p)
    for t in np.linspace(0.05, 0.95, 19):
        other = at_threshold(y, p, float(t))
        assert (
            youden.sensitivity + youden.specificity >= other.sensitivity + other.specificity - 1e-12
        )


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
