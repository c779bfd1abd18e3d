"""Explanation-quality scores and the "weak explanation" flag.

No open explainability tool scores its own output; a report that names a lung zone should
only do so when the explanation behind it holds up. Scores:

- energy_in_lungs: share of the unrestricted Grad-CAM map inside the lungs (a map that
  lives on the frame, labels or spine is a shortcut, not a finding);
- agreement_iou: IoU of the top-20 % areas of Grad-CAM and LIME inside the chest region;
- deletion: confidence drop when the explanation's top cells are masked, minus the mean
  drop for random cells of the same area (> 0: the explanation found regions that matter);
- confidence: the model's calibrated probability of the explained target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from explain.gradcam import GradCamResult, Target
from explain.lime import LimeResult, Predict
from explain.masks import BoolMask, FloatMap, resize_map, resize_mask
from inference.preprocess import resize_gray


def top_fraction(values: FloatMap, region: BoolMask, fraction: float = 0.2) -> BoolMask:
    """The ``fraction`` of ``region``'s pixels with the highest ``values`` (bool [H, W]).

    Exactly ceil(fraction * |region|) pixels; ties are broken by pixel order (stable sort),
    so the result is deterministic.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    idx = np.flatnonzero(region.ravel())
    out = np.zeros(region.size, dtype=bool)
    if idx.size:
        count = int(np.ceil(fraction * idx.size))
        order = np.argsort(-values.ravel()[idx], kind="stable")[:count]
        out[idx[order]] = True
    return out.reshape(region.shape)


def agreement_iou(
    map_a: FloatMap, map_b: FloatMap, region: BoolMask, fraction: float = 0.2
) -> float:
    """IoU of the top-``fraction`` areas of two maps inside ``region`` (0.0 if empty)."""
    a, b = top_fraction(map_a, region, fraction), top_fraction(map_b, region, fraction)
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def explanation_agreement(gradcam: GradCamResult, lime: LimeResult, fraction: float = 0.2) -> float:
    """Grad-CAM/LIME agreement on one image: IoU of their top areas in LIME's chest region."""
    return agreement_iou(gradcam.heatmap, lime.signed_map, lime.segments >= 0, fraction)


@dataclass(frozen=True)
class DeletionResult:
    """Confidences in [0, 1] and drops (positive = confidence fell when regions were masked)."""

    base_confidence: float
    top_drop: float
    random_drop: float
    score: float
    fraction: float
    n_random: int


def _cells(region: BoolMask, grid: int) -> list[npt.NDArray[np.intp]]:
    """Flat pixel indices of region pixels per grid cell, for cells at least 1/4 inside."""
    height, width = region.shape
    rows = np.minimum(np.arange(height) * grid // height, grid - 1)
    cols = np.minimum(np.arange(width) * grid // width, grid - 1)
    cell_of = (rows[:, None] * grid + cols[None, :]).ravel()
    flat = region.ravel()
    cells = []
    for cell in range(grid * grid):
        members = np.flatnonzero((cell_of == cell) & flat)
        total = int((cell_of == cell).sum())
        if total and members.size * 4 >= total:
            cells.append(members)
    return cells


def deletion_test(
    image: FloatMap,
    heat: FloatMap,
    region: BoolMask,
    predict: Predict,
    target: Target = "finding",
    *,
    fraction: float = 0.2,
    grid: int = 16,
    n_random: int = 8,
    seed: int = 0,
    work_size: int = 224,
) -> DeletionResult:
    """Mask the hottest grid cells of ``heat`` vs random cells, one ``predict`` call.

    image: float32 [H, W] in [0, 1]; heat: float32 [H, W] (higher = more important);
    region: bool [H, W] cells to choose from (lungs). Masked pixels take the region's mean
    intensity; the random control cancels the generic effect of masking anything.
    """
    size = work_size
    work = resize_gray(image, size, size)
    work_heat = resize_map(heat, size, size)
    work_region = resize_mask(region, size, size)
    cells = _cells(work_region, grid)
    if not cells:
        raise ValueError("the region is too small for the deletion test")
    fill = float(work[work_region].mean())
    count = max(1, round(fraction * len(cells)))
    scores = np.array([work_heat.ravel()[c].mean() for c in cells])
    rng = np.random.default_rng(seed)
    choices = [np.argsort(-scores, kind="stable")[:count]] + [
        rng.choice(len(cells), size=count, replace=False) for _ in range(n_random)
    ]
    batch = np.repeat(work.reshape(1, -1), 1 + len(choices), axis=0)
    for row, chosen in enumerate(choices, start=1):
        batch[row, np.concatenate([cells[i] for i in chosen])] = fill
    probs = np.asarray(predict(batch.reshape(-1, size, size)), dtype=np.float64)
    conf = probs if target == "finding" else 1.0 - probs
    top_drop = float(conf[0] - conf[1])
    random_drop = float(np.mean(conf[0] - conf[2:]))
    return DeletionResult(
        base_confidence=float(conf[0]),
        top_drop=top_drop,
        random_drop=random_drop,
        score=top_drop - random_drop,
        fraction=count / len(cells),
        n_random=n_random,
    )


@dataclass(frozen=True)
class QualityThresholds:
    """Below these the explanation is flagged weak (the report avoids location claims)."""

    min_confidence: float = 0.6
    min_energy_in_lungs: float = 0.5
    min_agreement_iou: float = 0.1
    min_deletion_score: float = 0.0


@dataclass(frozen=True)
class ExplanationQuality:
    """Quality scores (None = not computed for this request) and the weak flag with reasons."""

    confidence: float
    energy_in_lungs: float | None
    agreement_iou: float | None
    deletion: DeletionResult | None
    weak: bool
    reasons: tuple[str, ...]


def assess_quality(
    confidence: float,
    *,
    energy_in_lungs: float | None = None,
    agreement_iou: float | None = None,
    deletion: DeletionResult | None = None,
    empty_map: bool = False,
    lungs_found: bool = True,
    thresholds: QualityThresholds = QualityThresholds(),
) -> ExplanationQuality:
    """Combine the scores; ``weak`` is True when any available score misses its threshold.

    confidence: calibrated probability in [0, 1] of the explained target. empty_map: the
    explanation has no positive evidence anywhere; lungs_found: False when the segmenter found
    no lung (zones and in-lung scores are then meaningless).
    """
    checks = [
        ("lungs_not_found", not lungs_found),
        ("empty_map", empty_map),
        ("low_confidence", confidence < thresholds.min_confidence),
        (
            "heat_outside_lungs",
            energy_in_lungs is not None and energy_in_lungs < thresholds.min_energy_in_lungs,
        ),
        (
            "gradcam_lime_disagree",
            agreement_iou is not None and agreement_iou < thresholds.min_agreement_iou,
        ),
        (
            "deletion_not_better_than_random",
            deletion is not None and deletion.score <= thresholds.min_deletion_score,
        ),
    ]
    reasons = tuple(name for name, failed in checks if failed)
    return ExplanationQuality(
        confidence=float(confidence),
        energy_in_lungs=energy_in_lungs,
        agreement_iou=agreement_iou,
        deletion=deletion,
        weak=bool(reasons),
        reasons=reasons,
    )
