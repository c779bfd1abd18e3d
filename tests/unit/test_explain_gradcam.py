"""Grad-CAM from the ``cam`` grid: normalisation, lung restriction, outputs at image size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explain.gradcam import explain_gradcam, gradcam_grid, low_res_shape, render_gradcam
from explain.masks import LungMasks, soft_dilate

H, W = 120, 160


def synthetic_lungs() -> LungMasks:
    yy, xx = np.mgrid[0:H, 0:W]
    right = ((yy - 60) / 45) ** 2 + ((xx - 45) / 25) ** 2 <= 1  # image left
    left = ((yy - 62) / 42) ** 2 + ((xx - 115) / 24) ** 2 <= 1
    return LungMasks(right=right, left=left)


def test_grid_relu_and_normalisation() -> None:
    cam = np.array([[-2.0, 1.0], [0.5, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(gradcam_grid(cam, "finding"), [[0, 0.25], [0.125, 1]])
    np.testing.assert_allclose(gradcam_grid(cam[None, None], "no_finding"), [[1, 0], [0, 0]])


def test_grid_without_evidence_is_zero() -> None:
    assert not gradcam_grid(-np.ones((7, 7), dtype=np.float32), "finding").any()


def test_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        gradcam_grid(np.ones((2, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        gradcam_grid(np.ones((3, 3), dtype=np.float32), "pneumonia")  # type: ignore[arg-type]


def test_soft_dilate_is_one_inside_and_fades_outside() -> None:
    mask = np.zeros((50, 50), dtype=bool)
    mask[20:30, 20:30] = True
    soft = soft_dilate(mask, 6.0)
    assert np.all(soft[mask] == 1.0)
    assert 0.0 < soft[25, 17] < 1.0  # 3 px outside: partly kept
    assert soft[25, 5] < 0.01  # 15 px outside: gone


def test_soft_dilate_on_a_coarse_grid_matches_the_full_resolution_blur(shared_data: Path) -> None:
    """Wide margins (large uploads) blur on a coarser grid; on a real lung mask the result stays
    within 0.02 of blurring at full resolution, and exactly 1 inside the lungs."""
    from explain.masks import gaussian_blur

    small = Image.open(shared_data / "masks" / "jsrt" / "JPCLN001__right_lung.png").convert("L")
    mask = np.asarray(small.resize((1000, 1003), Image.Resampling.NEAREST)) > 0
    margin = 0.05 * 1003  # sigma 25 px: three pixels per coarse step
    hard = mask.astype(np.float32)
    exact = np.maximum(hard, np.clip(2.0 * gaussian_blur(hard, margin / 2.0), 0.0, 1.0))
    soft = soft_dilate(mask, margin)
    assert soft.shape == mask.shape and np.all(soft[mask] == 1.0)
    assert float(np.abs(soft - exact).max()) < 0.02


def test_explain_gradcam_restricts_to_lungs() -> None:
    lungs = synthetic_lungs()
    image = np.random.default_rng(0).random((H, W)).astype(np.float32)
    cam = np.ones((7, 7), dtype=np.float32)
    cam[0, 3] = 5.0  # a hot spot in the top middle: above/between the lungs
    result = explain_gradcam(image, cam, lungs, "finding")
    assert result.heatmap.shape == result.restricted.shape == (H, W)
    assert result.heatmap.dtype == np.float32 and 0.95 < result.heatmap.max() <= 1.0
    both = lungs.both
    np.testing.assert_array_equal(result.restricted[both], result.heatmap[both])
    assert result.restricted[0:5, 75:85].max() < 0.01  # hot spot outside the lungs removed
    assert result.heatmap[0:5, 75:85].max() > 0.9
    assert 0.0 < result.energy_in_lungs < 1.0
    assert result.raw_peak == pytest.approx(5.0)
    assert result.low_res.shape == low_res_shape((H, W), 64) == (48, 64)
    images = render_gradcam(image, result)
    png = Image.open(io.BytesIO(images.overlay_png))
    assert png.size == (W, H) and png.mode == "RGB"
    for gray in (images.lungs_png, images.full_png):
        assert Image.open(io.BytesIO(gray)).size == (W, H)
    assert {d.zone_id for d in result.zones} == {
        "right_upper",
        "right_mid",
        "right_lower",
        "left_upper",
        "left_mid",
        "left_lower",
    }


def test_energy_in_lungs_is_one_for_map_inside_lungs() -> None:
    lungs = synthetic_lungs()
    cam = np.zeros((H // 4, W // 4), dtype=np.float32)
    cam[14, 11] = 1.0  # centre of the right lung (image left), far from its border
    result = explain_gradcam(np.zeros((H, W), np.float32), cam, lungs)
    assert result.energy_in_lungs == pytest.approx(1.0)
    assert result.zones[0].zone_id == "right_mid"


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        explain_gradcam(np.zeros((10, 10), np.float32), np.ones((7, 7)), synthetic_lungs())


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared/data/cxr"


@pytest.mark.skipif(not (SHARED / "images/jsrt").is_dir(), reason="../shared/data/cxr absent")
def test_real_radiograph_keeps_heat_off_the_spine() -> None:
    def load(path: str) -> np.ndarray:
        return np.asarray(Image.open(SHARED / path).convert("L"))

    image = load("images/jsrt/JPCLN001.jpg").astype(np.float32) / 255
    lungs = LungMasks(
        right=load("masks/jsrt/JPCLN001__right_lung.png") > 127,
        left=load("masks/jsrt/JPCLN001__left_lung.png") > 127,
    )
    result = explain_gradcam(image, np.ones((7, 7), np.float32), lungs)  # uniform evidence
    rows = np.flatnonzero(lungs.right.any(axis=1) & lungs.left.any(axis=1))
    right_edge = np.flatnonzero(lungs.right[rows].any(axis=0)).max()
    left_edge = np.flatnonzero(lungs.left[rows].any(axis=0)).min()
    spine = result.restricted[rows][:, (right_edge + left_edge) // 2]
    assert spine.max() < 0.05  # the midline between the lungs stays cold
    assert result.restricted[lungs.both].min() > 0.99
