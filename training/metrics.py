"""Classification and segmentation metrics, temperature scaling and operating thresholds.

All functions take numpy arrays: ``labels`` int {0, 1} [N], ``scores``/``logits`` float [N].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); nan if one class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auroc_ci(
    labels: npt.ArrayLike, scores: npt.ArrayLike, seed: int, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUROC (resampling images); (nan, nan) if undefined."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        value = auroc(y[idx], s[idx])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def ece(labels: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width bins over [0, 1]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def fit_temperature(labels: npt.ArrayLike, logits: npt.ArrayLike) -> float:
    """Temperature T > 0 minimising the NLL of sigmoid(logit / T) (golden-section on log T)."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        q = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, q) - y * q))

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2.0))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the calibrated probability and its sensitivity/specificity."""

    threshold: float
    sensitivity: float
    specificity: float


def at_threshold(labels: npt.ArrayLike, probs: npt.ArrayLike, threshold: float) -> OperatingPoint:
    """Sensitivity/specificity of ``probs >= threshold``."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(probs, dtype=np.float64) >= threshold
    sens = float(pred[y].mean()) if y.any() else float("nan")
    spec = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return OperatingPoint(threshold, sens, spec)


def _candidates(probs: FloatArray) -> FloatArray:
    uniq = np.unique(probs)
    mids = (uniq[:-1] + uniq[1:]) / 2.0 if len(uniq) > 1 else uniq
    return np.clip(np.concatenate([mids, uniq]), 1e-6, 1 - 1e-6)


def threshold_for_sensitivity(
    labels: npt.ArrayLike, probs: npt.ArrayLike, min_sensitivity: float
) -> OperatingPoint:
    """Highest threshold whose sensitivity is >= ``min_sensitivity`` (best specificity then)."""
    p = np.asarray(probs, dtype=np.float64)
    best = at_threshold(labels, p, 1e-6)
    for t in np.sort(_candidates(p)):
        point = at_threshold(labels, p, float(t))
        if point.sensitivity >= min_sensitivity:
            best = point
    return best


def youden_point(labels: npt.ArrayLike, probs: npt.ArrayLike) -> OperatingPoint:
    """Threshold maximising sensitivity + specificity - 1."""
    p = np.asarray(probs, dtype=np.float64)
    points = [at_threshold(labels, p, float(t)) for t in _candidates(p)]
    return max(points, key=lambda q: q.sensitivity + q.specificity)


def dice(pred: npt.NDArray[np.bool_], target: npt.NDArray[np.bool_]) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    inter = float(np.logical_and(pred, target).sum())
    total = float(pred.sum() + target.sum())
    return 1.0 if total == 0 else 2.0 * inter / total
