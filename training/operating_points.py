"""Population operating points (threshold + borderline band) from labelled probabilities.

Used by ``python -m training operating-points`` (the shipped model, validation split) and by
``python -m training recalibrate`` (a site's own labelled images). Rule, per population:

* ``threshold``: the highest threshold whose sensitivity is >= ``sensitivity`` (screening);
* ``band``: from the threshold with sensitivity >= ``band_sensitivity`` (below: confidently no
  finding) to the threshold with specificity >= ``band_specificity`` (above: confidently a
  finding), widened to contain ``threshold`` and clipped to ``threshold +- max_half_width``.
  Between them neither a high-sensitivity nor a high-specificity reader would be sure:
  ``indeterminate``. (The clip keeps a weak model from answering almost everything
  ``indeterminate``: the current classifier's adult band would be [0.22, 0.99].)

Sensitivity and specificity use the service's rule (``p >= t`` is a finding) and come with
Wilson 95 % intervals (scipy's ``binomtest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest

from inference.operating import OperatingPoint, OperatingPoints, Population

F64 = npt.NDArray[np.float64]
EPS = 1e-4


@dataclass(frozen=True)
class PointRule:
    sensitivity: float = 0.90
    band_sensitivity: float = 0.95
    band_specificity: float = 0.95
    max_half_width: float = 0.10
    min_per_class: int = 30


class TooFewCases(ValueError):
    """Fewer labelled cases per class than the rule's minimum: no threshold is fitted."""


def threshold_at_sensitivity(pos: F64, target: float) -> float:
    """Highest t with mean(pos >= t) >= target."""
    ordered = np.sort(pos)
    k = int(np.floor((1.0 - target) * len(ordered) + 1e-9))
    return float(ordered[min(k, len(ordered) - 1)])


def threshold_at_specificity(neg: F64, target: float) -> float:
    """Lowest t with mean(neg < t) >= target."""
    ordered = np.sort(neg)
    k = int(np.ceil(target * len(ordered) - 1e-9))
    if k >= len(ordered):
        return float(np.nextafter(ordered[-1], 1.0))
    return float(ordered[k]) if k > 0 else float(ordered[0])


def wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def rates(probs: F64, labels: npt.NDArray[np.int_], t: float) -> dict[str, Any]:
    pos, neg = probs[labels == 1], probs[labels == 0]
    tp, tn = int((pos >= t).sum()), int((neg < t).sum())
    return {
        "n_positive": len(pos),
        "n_negative": len(neg),
        "sensitivity": round(tp / len(pos), 4) if len(pos) else None,
        "sensitivity_ci95": wilson(tp, len(pos)),
        "specificity": round(tn / len(neg), 4) if len(neg) else None,
        "specificity_ci95": wilson(tn, len(neg)),
    }


def fit_point(
    probs: F64, labels: npt.NDArray[np.int_], rule: PointRule, basis: str
) -> OperatingPoint:
    pos, neg = probs[labels == 1], probs[labels == 0]
    if len(pos) < rule.min_per_class or len(neg) < rule.min_per_class:
        raise TooFewCases(
            f"{len(pos)} positives and {len(neg)} negatives; at least {rule.min_per_class} "
            "of each are needed"
        )
    t = float(np.clip(threshold_at_sensitivity(pos, rule.sensitivity), EPS, 1 - EPS))
    lo = max(t - rule.max_half_width, min(t, threshold_at_sensitivity(pos, rule.band_sensitivity)))
    hi = min(t + rule.max_half_width, max(t, threshold_at_specificity(neg, rule.band_specificity)))
    lo, hi = float(np.clip(lo, EPS, t)), float(np.clip(hi, t, 1 - EPS))
    # Rounded down (threshold, lo) and up (hi): rounding must never move a case across a bound.
    t6, lo6, hi6 = _down(t), _down(lo), float(np.ceil(hi * 1e6) / 1e6)
    return OperatingPoint(t6, (min(lo6, t6), max(hi6, t6)), basis)


def _down(x: float) -> float:
    return float(np.floor(x * 1e6) / 1e6)


def fit_points(
    probs: F64,
    labels: npt.NDArray[np.int_],
    populations: npt.NDArray[np.str_],
    rule: PointRule,
    fallback: OperatingPoints,
    source: str,
) -> tuple[OperatingPoints, dict[str, Any]]:
    """One point per population with labelled cases; a population without any keeps
    ``fallback``'s point. A population with cases but fewer than the minimum raises."""
    points: dict[Population, OperatingPoint] = {}
    report: dict[str, Any] = {}
    for pop in ("adult", "pediatric"):
        mask = populations == pop
        if not mask.any():
            points[pop] = fallback.for_population(pop)
            report[pop] = {"fitted": False, "reason": "no labelled cases of this population"}
            continue
        basis = (
            f"{source}: n={int(mask.sum())}, threshold at sensitivity >= {rule.sensitivity}, "
            f"band from sensitivity {rule.band_sensitivity} to specificity {rule.band_specificity}"
            f" within +-{rule.max_half_width}"
        )
        point = fit_point(probs[mask], labels[mask], rule, basis)
        points[pop] = point
        report[pop] = {"fitted": True, **rates(probs[mask], labels[mask], point.threshold)}
    result = OperatingPoints(points["adult"], points["pediatric"], fallback.default_population)
    return result, report


def run_operating_points(cache: Path, weights: Path, threads: int, command: str) -> Path:
    """Fit adult / pediatric points of the shipped classifier on the validation split (prepare
    cache) and write them into ``classifier.manifest.json`` (the ONNX file is unchanged)."""
    import json

    from inference.classify import calibrated_probability, run_classifier
    from inference.manifest import load_manifest
    from inference.sessions import RuntimeOptions, load_verified_model
    from training.gate import read_rows

    path = weights / "classifier.manifest.json"
    model = load_verified_model(path, RuntimeOptions(intra_op_threads=threads, prefer_gpu=False))
    arrays = np.load(cache / "cls224.npy", mmap_mode="r")
    val = [r for r in read_rows(cache) if r["split"] == "val"]
    logits: list[float] = []
    for i in range(0, len(val), 32):
        chunk = [np.asarray(arrays[int(r["cls_index"])]) for r in val[i : i + 32]]
        logits += [o.logit for o in run_classifier(model, chunk, with_features=False)]
    t = model.manifest.temperature
    probs = np.asarray([calibrated_probability(x, t) for x in logits], dtype=np.float64)
    labels = np.asarray([int(r["label"]) for r in val])
    pops = np.asarray([r["age_group"] if r["age_group"] == "pediatric" else "adult" for r in val])
    fallback = load_manifest(path).operating
    points, report = fit_points(probs, labels, pops, PointRule(), fallback, "validation split")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(points.as_dict())
    data["extra"]["operating_points_validation"] = report | {"command": command}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
