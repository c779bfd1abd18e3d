"""Cardiothoracic ratio and lung areas on hand-drawn masks (inference/measure.py)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.measure import measure_chest, thoracic_width


def _chest(heart_half_width: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 200x200 PA-like drawing: lungs at image columns 20-89 and 110-179, rows 30-169;
    heart centred at column 100 in rows 100-159."""
    right = np.zeros((200, 200), dtype=bool)
    left = np.zeros((200, 200), dtype=bool)
    heart = np.zeros((200, 200), dtype=bool)
    right[30:170, 20:90] = True  # the patient's right lung is on the image left
    left[30:170, 110:180] = True
    heart[100:160, 100 - heart_half_width : 100 + heart_half_width] = True
    return right, left, heart


def test_ctr_is_widest_heart_over_widest_internal_thorax() -> None:
    right, left, heart = _chest(20)
    m = measure_chest(right, left, heart)
    assert m.heart_width_px == 40 and m.thoracic_width_px == 160
    assert m.ctr == pytest.approx(0.25)
    assert "implausible_ctr" in m.notes and not m.reliable  # 0.25: no plausible film
    m = measure_chest(*_chest(36))
    assert m.ctr == pytest.approx(72 / 160) and m.reliable and m.notes == ()


def test_thoracic_width_uses_rows_holding_both_lungs() -> None:
    right, left, _ = _chest()
    right[10:30, 0:90] = True  # an apex wider than anything on rows with both lungs
    assert thoracic_width(right, left) == 160


def test_lung_shares_and_ratio() -> None:
    right, left, heart = _chest(36)
    left[30:170, 160:180] = False  # left lung 50 px wide, right 70 px
    m = measure_chest(right, left, heart)
    assert m.right_share == pytest.approx(70 / 120) and m.left_share == pytest.approx(50 / 120)
    assert m.lung_ratio == pytest.approx(70 / 50)


@pytest.mark.parametrize(
    ("change", "note"),
    [
        ("no_left", "lung_missing"),
        ("no_heart", "heart_missing"),
        ("heart_high", "heart_outside_chest"),
        ("tiny_left", "unequal_lungs"),
        ("ap", "ap_view"),
    ],
)
def test_implausible_masks_or_ap_view_are_flagged(change: str, note: str) -> None:
    right, left, heart = _chest(36)
    view = None
    if change == "no_left":
        left[:] = False
    elif change == "no_heart":
        heart[:] = False
    elif change == "heart_high":
        heart[:] = False
        heart[35:60, 64:136] = True
    elif change == "tiny_left":
        left[30:170, 130:180] = False
    else:
        view = "AP"
    m = measure_chest(right, left, heart, view=view)
    assert note in m.notes and not m.reliable
    if note in ("lung_missing", "heart_missing"):
        assert m.ctr is None
