"""Evaluation: calibration, operating points and per-source metrics with bootstrap CIs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from training.dataset import ClsSplit
from training.metrics import (
    at_threshold,
    auroc,
    bootstrap_auroc_ci,
    ece,
    fit_temperature,
    sigmoid,
    threshold_for_sensitivity,
    youden_point,
)

MIN_SENSITIVITY = 0.90
# The borderline band: probabilities between the validation thresholds for sensitivity 0.95
# and 0.85, i.e. where the screening decision moves when the sensitivity target moves by 0.05.
BAND_SENSITIVITIES = (0.95, 0.85)
GOAL_SPECIFICITY = 0.80


@dataclass(frozen=True)
class Calibration:
    """Temperature and thresholds fitted on the validation split (on sigmoid(logit / T))."""

    temperature: float
    threshold: float
    threshold_sensitivity: float
    threshold_specificity: float
    youden_threshold: float
    youden_sensitivity: float
    youden_specificity: float


def calibrate(val: ClsSplit, logits: npt.NDArray[np.float64]) -> Calibration:
    """Fit T on validation NLL; screening threshold (sensitivity >= 0.90) and Youden's point."""
    temperature = fit_temperature(val.labels, logits)
    probs = sigmoid(logits / temperature)
    screen = threshold_for_sensitivity(val.labels, probs, MIN_SENSITIVITY)
    youden = youden_point(val.labels, probs)
    return Calibration(
        temperature,
        screen.threshold,
        screen.sensitivity,
        screen.specificity,
        youden.threshold,
        youden.sensitivity,
        youden.specificity,
    )


def population_points(
    val: ClsSplit, logits: npt.NDArray[np.float64], temperature: float
) -> dict[str, dict[str, Any]]:
    """Per population (adult / pediatric): screening threshold and borderline band.

    Threshold: the highest with validation sensitivity >= 0.90 in that population; band:
    ``[t(sens >= 0.95), t(sens >= 0.85)]`` (see ``BAND_SENSITIVITIES``). Shape as the manifest's
    ``operating_points`` block, with the validation counts and sens/spec alongside.
    """
    pops = val.populations()
    probs = sigmoid(logits / temperature)
    out: dict[str, dict[str, Any]] = {}
    for pop in ("adult", "pediatric"):
        mask = pops == pop
        if not mask.any():
            continue
        y, p = val.labels[mask], probs[mask]
        point = threshold_for_sensitivity(y, p, MIN_SENSITIVITY)
        lo = threshold_for_sensitivity(y, p, BAND_SENSITIVITIES[0]).threshold
        hi = threshold_for_sensitivity(y, p, BAND_SENSITIVITIES[1]).threshold
        out[pop] = {
            "threshold": point.threshold,
            "band": [min(lo, point.threshold), max(hi, point.threshold)],
            "basis": f"validation {pop}s (n={int(mask.sum())}, {int(y.sum())} positive): "
            f"sensitivity >= {MIN_SENSITIVITY}; band = thresholds for sensitivity "
            f"{BAND_SENSITIVITIES[0]} .. {BAND_SENSITIVITIES[1]}",
            "validation_sensitivity": point.sensitivity,
            "validation_specificity": point.specificity,
        }
    return out


def sensitivity_at_specificity(
    labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], min_spec: float
) -> float:
    """Best sensitivity on the ROC curve with specificity >= ``min_spec`` (nan if one class)."""
    y = labels.astype(bool)
    if y.all() or not y.any():
        return float("nan")
    neg = np.sort(scores[~y])
    # threshold just above the min_spec quantile of the negatives
    k = int(np.ceil(min_spec * len(neg))) - 1
    thr = neg[max(k, 0)]
    return float((scores[y] > thr).mean())


def per_source_metrics(
    split: ClsSplit,
    logits: npt.NDArray[np.float64],
    cal: Calibration,
    seed: int,
    points: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per source, population and overall: AUROC (+95 % CI), sens/spec at the thresholds, ECE.

    ``sensitivity``/``specificity`` use each image's own population threshold when ``points``
    are given (else the single ``cal.threshold``); ``sens_at_spec80`` is the best ROC
    sensitivity at specificity >= 0.80 (the issue's per-source goal).
    """
    out: dict[str, dict[str, Any]] = {}
    pops = split.populations()
    groups = {"all": np.ones(len(split.labels), dtype=bool)}
    groups |= {f"population:{p}": pops == p for p in np.unique(pops)}
    groups |= {str(s): split.sources == s for s in np.unique(split.sources)}
    own = np.full(len(split.labels), cal.threshold)
    for pop, point in (points or {}).items():
        own[pops == pop] = point["threshold"]
    for name, mask in groups.items():
        y, z = split.labels[mask], logits[mask]
        calibrated = sigmoid(z / cal.temperature)
        lo, hi = bootstrap_auroc_ci(y, z, seed)
        op = at_threshold(y, calibrated - own[mask], 0.0)
        yp = at_threshold(y, calibrated, cal.youden_threshold)
        row: dict[str, Any] = {
            "n": int(mask.sum()),
            "n_positive": int(y.sum()),
            "auroc": auroc(y, z),
            "auroc_ci95": [lo, hi],
            "sensitivity": op.sensitivity,
            "specificity": op.specificity,
            "sens_at_spec80": sensitivity_at_specificity(y, z, GOAL_SPECIFICITY),
            "youden_sensitivity": yp.sensitivity,
            "youden_specificity": yp.specificity,
            "ece_uncalibrated": ece(y, sigmoid(z)),
            "ece_calibrated": ece(y, calibrated),
        }
        for pop, point in (points or {}).items():
            at = at_threshold(y, calibrated, point["threshold"])
            row[f"sens_at_{pop}_thr"], row[f"spec_at_{pop}_thr"] = at.sensitivity, at.specificity
        out[name] = row
    return out


def calibration_dict(cal: Calibration) -> dict[str, float]:
    return asdict(cal)
