"""Explanation-quality scores: top areas, agreement, deletion vs random, the weak flag."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from explain.quality import (
    DeletionResult,
    agreement_iou,
    assess_quality,
    deletion_test,
    top_fraction,
)

SIZE = 128


def spot_model(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """P(finding) follows the mean brightness of the rows 20-40 % / columns 20-40 % block."""
    n, h, w = batch.shape
    block = batch[:, int(0.2 * h) : int(0.4 * h), int(0.2 * w) : int(0.4 * w)]
    return (1 / (1 + np.exp(-10 * (block.reshape(n, -1).mean(axis=1) - 0.5)))).astype(np.float32)


def case() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((SIZE, SIZE), 0.3, dtype=np.float32)
    image[int(0.2 * SIZE) : int(0.4 * SIZE), int(0.2 * SIZE) : int(0.4 * SIZE)] = 0.9
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[10:118, 10:118] = True
    return image, region


def test_top_fraction_picks_exact_count() -> None:
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    region = np.ones((10, 10), dtype=bool)
    top = top_fraction(values, region, 0.2)
    assert top.sum() == 20 and top[8:].all()
    with pytest.raises(ValueError):
        top_fraction(values, region, 0.0)


def test_agreement_iou() -> None:
    values = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    region = np.ones((20, 20), dtype=bool)
    assert agreement_iou(values, values, region) == 1.0
    assert agreement_iou(values, -values, region) == 0.0


def test_deletion_rewards_the_right_region() -> None:
    image, region = case()
    good = np.zeros_like(image)
    good[int(0.2 * SIZE) : int(0.4 * SIZE), int(0.2 * SIZE) : int(0.4 * SIZE)] = 1.0
    bad = np.zeros_like(image)
    bad[90:118, 90:118] = 1.0
    right = deletion_test(image, good, region, spot_model, work_size=SIZE)
    wrong = deletion_test(image, bad, region, spot_model, work_size=SIZE)
    assert right.base_confidence == pytest.approx(float(spot_model(image[None])[0]))
    assert right.top_drop > 0.3 and right.score > 0.2
    assert wrong.top_drop == pytest.approx(0.0, abs=1e-6) and wrong.score < 0
    flipped = deletion_test(image, good, region, spot_model, "no_finding", work_size=SIZE)
    assert flipped.top_drop == pytest.approx(-right.top_drop, abs=1e-6)


def test_weak_flag_reasons() -> None:
    strong = assess_quality(
        0.9,
        energy_in_lungs=0.8,
        agreement_iou=0.4,
        deletion=DeletionResult(0.9, 0.3, 0.05, 0.25, 0.2, 8),
    )
    assert not strong.weak and strong.reasons == ()
    weak = assess_quality(
        0.55,
        energy_in_lungs=0.3,
        agreement_iou=0.05,
        deletion=DeletionResult(0.55, 0.01, 0.02, -0.01, 0.2, 8),
    )
    assert weak.weak
    assert weak.reasons == (
        "low_confidence",
        "heat_outside_lungs",
        "gradcam_lime_disagree",
        "deletion_not_better_than_random",
    )
    assert assess_quality(0.9, empty_map=True).reasons == ("empty_map",)
