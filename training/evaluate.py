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


def per_source_metrics(
    split: ClsSplit, logits: npt.NDArray[np.float64], cal: Calibration, seed: int
) -> dict[str, dict[str, Any]]:
    """Per source and overall: AUROC (+95 % CI), sens/spec at both thresholds, ECE before/after."""
    out: dict[str, dict[str, Any]] = {}
    groups = {"all": np.ones(len(split.labels), dtype=bool)}
    groups |= {str(s): split.sources == s for s in np.unique(split.sources)}
    for name, mask in groups.items():
        y, z = split.labels[mask], logits[mask]
        calibrated = sigmoid(z / cal.temperature)
        lo, hi = bootstrap_auroc_ci(y, z, seed)
        op = at_threshold(y, calibrated, cal.threshold)
        yp = at_threshold(y, calibrated, cal.youden_threshold)
        out[name] = {
            "n": int(mask.sum()),
            "n_positive": int(y.sum()),
            "auroc": auroc(y, z),
            "auroc_ci95": [lo, hi],
            "sensitivity": op.sensitivity,
            "specificity": op.specificity,
            "youden_sensitivity": yp.sensitivity,
            "youden_specificity": yp.specificity,
            "ece_uncalibrated": ece(y, sigmoid(z)),
            "ece_calibrated": ece(y, calibrated),
        }
    return out


def calibration_dict(cal: Calibration) -> dict[str, float]:
    return asdict(cal)
