"""Input suitability rules on generated images (no models)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.intake import decode_upload
from inference.suitability import (
    NotAChestRadiograph,
    box_reduce,
    check_rules,
    colourfulness,
    neighbour_correlation,
    working_copy,
)
from tests.factories import png_bytes, synthetic_chest
from training.hostile import non_radiographs, suspicious_variants

EXPECTED_REASONS = {
    "blank": {"constant", "too_small"},
    "noise": {"noise", "too_small", "colour"},
    "gradient": {"featureless", "colour"},
    "document": {"document"},
}


def _chest(h: int = 256, w: int = 224) -> np.ndarray:
    return synthetic_chest(h, w).astype(np.float32) / 255.0


def test_a_radiograph_like_image_passes() -> None:
    assert check_rules(_chest()).reason is None
    assert check_rules(_chest(128, 128)).reason is None  # exactly the minimum side


@pytest.mark.parametrize(
    "case",
    [c for c in non_radiographs() if c.category in EXPECTED_REASONS],
    ids=lambda c: f"{c.category}:{c.name}",
)
def test_generated_non_radiographs_trip_the_rule_of_their_kind(case) -> None:  # type: ignore[no-untyped-def]
    r = decode_upload(case.data)
    result = check_rules(r.pixels, r.colourfulness)
    assert result.reason in EXPECTED_REASONS[case.category], result


def test_size_and_aspect_rules() -> None:
    assert check_rules(_chest(127, 200)).reason == "too_small"
    assert check_rules(np.tile(_chest(130, 130), (1, 3))).reason == "extreme_aspect_ratio"
    assert check_rules(np.tile(_chest(130, 130), (1, 2))).reason is None  # 2:1 is allowed


def test_colour_is_measured_at_intake_and_refused() -> None:
    gray = synthetic_chest(200, 180)
    as_rgb = np.stack([gray] * 3, axis=2)
    tinted = as_rgb.copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 60, 0, 255).astype(np.uint8)
    assert colourfulness(as_rgb) == 0.0
    assert colourfulness(tinted) > 0.5
    r = decode_upload(png_bytes(tinted))
    assert r.colourfulness > 0.5 and check_rules(r.pixels, r.colourfulness).reason == "colour"
    plain = decode_upload(png_bytes(as_rgb))  # grayscale saved as RGB is fine
    assert (
        plain.colourfulness == 0.0 and check_rules(plain.pixels, plain.colourfulness).reason is None
    )


def test_jpeg_chroma_noise_is_not_colour() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.stack([synthetic_chest(200, 180)] * 3, axis=2)).save(buf, "JPEG", quality=70)
    r = decode_upload(buf.getvalue())
    assert r.colourfulness < 0.01


def test_noise_is_judged_after_block_averaging() -> None:
    rng = np.random.default_rng(0)
    noise = rng.random((256, 256)).astype(np.float32)
    assert neighbour_correlation(box_reduce(noise)) < 0.2
    dithered = np.asarray(
        Image.fromarray(synthetic_chest(256, 224)).convert("1").convert("L"), np.float32
    )
    assert neighbour_correlation(dithered) < 0.2  # pixel level: looks like noise
    assert neighbour_correlation(box_reduce(dithered / 255.0)) > 0.5  # structure comes back


def test_working_copy_is_small_and_keeps_the_aspect() -> None:
    big = np.zeros((3000, 2000), np.float32)
    small = working_copy(big)
    assert max(small.shape) <= 256 and abs(small.shape[0] / small.shape[1] - 1.5) < 0.05


def test_heavy_collimation_is_a_flag_not_a_rejection() -> None:
    chest = _chest(200, 180)
    framed = np.zeros((400, 360), np.float32)
    framed[100:300, 90:270] = chest
    result = check_rules(framed)
    assert result.reason is None and result.flags == ("heavy_collimation",)
    assert check_rules(chest).flags == ()


def test_suspicious_variants_of_a_chest_are_not_refused_by_the_rules() -> None:
    for case in suspicious_variants("chest", synthetic_chest(400, 360)):
        r = decode_upload(case.data)
        assert check_rules(r.pixels, r.colourfulness).reason is None, case.name


def test_not_a_chest_radiograph_problem_extra() -> None:
    exc = NotAChestRadiograph("noise", view_index=2)
    assert exc.code == "not_a_chest_radiograph"
    assert exc.problem_extra() == {"reason": "noise", "view_index": 2}
    assert NotAChestRadiograph("document").problem_extra() == {"reason": "document"}


def test_a_dark_low_contrast_film_is_not_featureless() -> None:
    """The structure floor is relative to the image's contrast: the raw floor refused 10 of
    JSRT's 209 real films (dark scans whose detail is faint in absolute grey levels), while a
    gradient stays featureless at any contrast."""
    chest = _chest(512, 512)
    dark = 0.02 + 0.12 * chest  # same film, an eighth of the contrast, near black
    assert check_rules(dark).reason is None
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 512.0
    for contrast in (1.0, 0.1):
        assert check_rules(0.1 + contrast * 0.8 * (xx + yy) / 2).reason == "featureless"
