from __future__ import annotations

import numpy as np

from inference.anatomy import (
    build_anatomy,
    derive_abdomen,
    derive_spine,
    largest_components,
    masks_from_logits,
)


def _lungs(h: int = 200, w: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    right = np.zeros((h, w), bool)
    left = np.zeros((h, w), bool)
    heart = np.zeros((h, w), bool)
    right[30:150, 20:90] = True  # image left = patient's right
    left[30:140, 110:180] = True
    heart[100:150, 80:130] = True
    return right, left, heart


def test_spine_is_a_midline_band_between_the_lungs() -> None:
    right, left, _ = _lungs()
    spine = derive_spine(right, left)
    cols = np.flatnonzero(spine.any(axis=0))
    rows = np.flatnonzero(spine.any(axis=1))
    assert cols[0] >= 90 and cols[-1] <= 110 and abs((cols[0] + cols[-1]) / 2 - 100) <= 1
    assert rows[0] == 30 and rows[-1] == 149
    assert not (spine & (right | left)).any()


def test_abdomen_lies_below_the_lung_bases_and_outside_the_heart() -> None:
    right, left, heart = _lungs()
    abdomen = derive_abdomen(right, left, heart)
    assert abdomen[160:, 20:180].all()
    assert not abdomen[:150, 20:90].any()  # above the right base
    assert not (abdomen & heart).any()
    assert not abdomen[:, :20].any() and not abdomen[:, 181:].any()


def test_derived_structures_empty_without_lungs() -> None:
    empty = np.zeros((50, 50), bool)
    assert not derive_spine(empty, empty).any()
    assert not derive_abdomen(empty, empty, empty).any()
    anatomy = build_anatomy({"right_lung": empty, "left_lung": empty, "heart_mediastinum": empty})
    assert [s.provenance for s in anatomy.structures] == ["predicted"] * 3 + ["derived"] * 2


def test_largest_component_drops_speckles() -> None:
    m = np.zeros((40, 40), bool)
    m[5:20, 5:20] = True
    m[30, 30] = True
    assert largest_components(m).sum() == 225


def test_masks_resized_to_original_size() -> None:
    logits = np.full((3, 16, 16), -10.0, np.float32)
    logits[0, 4:12, 2:7] = 10.0
    masks = masks_from_logits(logits, 100, 80)
    assert all(m.shape == (100, 80) for m in masks)
    assert masks[0].any() and not masks[2].any()


def test_apex_and_cardiac_notch_do_not_pull_the_diaphragm_into_the_chest() -> None:
    right, left, heart = _lungs()
    left[30:45, 95:110] = True  # apex curving medially over the mediastinum
    left[100:140, 110:125] = False  # cardiac notch: medial columns end high
    abdomen = derive_abdomen(right, left, heart)
    assert not abdomen[:140, :].any()
    assert abdomen[170:, 95:125].all()


def test_logits_are_upsampled_before_thresholding() -> None:
    """A disc of logits at 32 px must come back as a round disc at 256 px, not as blocks."""
    yy, xx = np.mgrid[:32, :32]
    radius = np.hypot(yy - 15.5, xx - 15.5)
    logits = np.stack([10.0 - radius] * 3).astype(np.float32)  # zero crossing at r = 10
    mask = masks_from_logits(logits, 256, 256)[0]
    y, x = np.mgrid[:256, :256]
    r = np.hypot(y - 127.5, x - 127.5)
    assert mask[r < 76].all() and not mask[r > 84].any()  # 10 px * 8 = 80 px, within 4 px


def test_each_structure_keeps_its_largest_component_with_holes_filled() -> None:
    logits = np.full((3, 64, 64), -5.0, np.float32)
    logits[0, 10:50, 5:25] = 5.0
    logits[0, 20:25, 10:15] = -5.0  # a hole inside the lung
    logits[0, 55:60, 40:45] = 5.0  # a speck elsewhere
    masks = masks_from_logits(logits, 64, 64)
    expected = np.zeros((64, 64), bool)
    expected[10:50, 5:25] = True
    assert np.array_equal(masks[0], expected)
    assert not masks[1].any() and not masks[2].any()


def test_fill_holes_matches_scipy_on_random_masks() -> None:
    from scipy import ndimage

    from inference.anatomy import fill_holes

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = ndimage.binary_opening(rng.random((60, 70)) > 0.45)
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    assert not fill_holes(np.zeros((5, 5), bool)).any()


def test_largest_components_matches_full_image_labelling() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    for _ in range(20):
        m = rng.random((50, 40)) > 0.6
        labels, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        sizes = ndimage.sum_labels(m, labels, np.arange(1, n + 1))
        biggest = labels == (np.argmax(sizes) + 1)
        out = largest_components(m)
        assert out.sum() == biggest.sum() and (out <= m).all()


def test_upsampling_inside_the_box_equals_the_full_resize() -> None:
    from inference.anatomy import upsampled_positive
    from inference.preprocess import resize_gray

    rng = np.random.default_rng(2)
    for height, width in [(2048, 2048), (512, 509), (224, 224), (300, 1000), (37, 41)]:
        logits = np.full((64, 64), -4.0, np.float32)
        logits[20:44, 10:30] = rng.standard_normal((24, 20)).astype(np.float32) + 1.0
        expected = resize_gray(logits, width, height) > 0
        got = upsampled_positive(logits, height, width)
        assert (got != expected).mean() < 1e-4  # PIL's shrink kernel differs by ~1e-5 at most
    assert not upsampled_positive(np.full((8, 8), -1.0, np.float32), 30, 30).any()
