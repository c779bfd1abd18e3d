"""Lung zones: thirds of each lung's own height, names, descriptor sorting."""

from __future__ import annotations

import numpy as np
import pytest

from explain.masks import LungMasks
from explain.zones import ZONE_INFOS, LimeZoneInput, describe_zones, split_zones


def block_lungs() -> LungMasks:
    right = np.zeros((90, 60), dtype=bool)
    left = np.zeros((90, 60), dtype=bool)
    right[0:90, 5:25] = True  # rows 0..89: thirds of 30 rows
    left[30:90, 35:55] = True  # starts lower: its own thirds are 20 rows
    return LungMasks(right=right, left=left)


def test_zone_names() -> None:
    names = {info.zone_id: (info.name_en, info.name_ru) for info in ZONE_INFOS}
    assert names["right_mid"] == ("right mid zone", "правая средняя зона")
    assert names["left_upper"] == ("left upper zone", "левая верхняя зона")
    assert names["left_lower"] == ("left lower zone", "левая нижняя зона")
    assert len(names) == 6


def test_split_by_each_lungs_height() -> None:
    zones = {z.info.zone_id: z for z in split_zones(block_lungs())}
    assert np.flatnonzero(zones["right_upper"].mask.any(axis=1)).tolist() == list(range(0, 30))
    assert np.flatnonzero(zones["left_upper"].mask.any(axis=1)).tolist() == list(range(30, 50))
    assert np.flatnonzero(zones["left_lower"].mask.any(axis=1)).tolist() == list(range(70, 90))
    union = np.zeros((90, 60), dtype=bool)
    for zone in zones.values():
        assert not (union & zone.mask).any()  # disjoint
        union |= zone.mask
    np.testing.assert_array_equal(union, block_lungs().both)


def test_descriptors_sorted_and_fused() -> None:
    lungs = block_lungs()
    gradcam = np.zeros((90, 60), dtype=np.float32)
    gradcam[60:90, 5:25] = 0.8  # right lower
    gradcam[50:70, 35:55] = 0.4  # left mid
    lime_int = np.zeros_like(gradcam)
    lime_int[60:90, 5:25] = 0.2
    mass = lime_int / lime_int.sum()
    out = describe_zones(split_zones(lungs), gradcam, LimeZoneInput(lime_int, mass))
    assert [d.zone_id for d in out[:2]] == ["right_lower", "left_mid"]
    top = out[0]
    assert top.gradcam_mean == pytest.approx(0.8) and top.gradcam_peak == pytest.approx(0.8)
    assert top.lime_intensity == pytest.approx(0.2) and top.lime_positive_mass == pytest.approx(1)
    assert top.fused == pytest.approx(0.5)
    assert top.text_en() == "right lower zone: intensity 0.50"
    assert top.text_ru() == "правая нижняя зона: интенсивность 0.50"
    assert sum(d.area_fraction for d in out) == pytest.approx(1.0)


def test_missing_lung_gives_no_descriptors_for_it() -> None:
    lungs = block_lungs()
    lungs = LungMasks(right=lungs.right, left=np.zeros_like(lungs.left))
    out = describe_zones(split_zones(lungs), np.ones((90, 60), np.float32))
    assert {d.side for d in out} == {"right"} and len(out) == 3


def test_describe_needs_some_evidence() -> None:
    with pytest.raises(ValueError):
        describe_zones(split_zones(block_lungs()))
