"""LIME: lime's algorithm (checked against lime_base), chest restriction, batching, seeds."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from explain.lime import (
    LimeConfig,
    chest_superpixels,
    explain_lime,
    fit_weighted_ridge,
    hide_values,
    kernel_weights,
    orthogonal_design,
    perturb,
    sample_design,
)
from explain.masks import LungMasks, chest_region

H, W = 150, 180
SPOT = (0.62, 0.25)  # relative (row, col) of a small bright spot in the right lung (image left)


def synthetic_case() -> tuple[np.ndarray, LungMasks]:
    yy, xx = np.mgrid[0:H, 0:W]
    right = ((yy - 75) / 55) ** 2 + ((xx - 50) / 30) ** 2 <= 1
    left = ((yy - 75) / 55) ** 2 + ((xx - 130) / 30) ** 2 <= 1
    rng = np.random.default_rng(0)
    image = (0.3 + 0.05 * rng.random((H, W))).astype(np.float32)
    image[~(right | left)] = 0.7
    r, c = int(SPOT[0] * H), int(SPOT[1] * W)
    image[r - 3 : r + 4, c - 3 : c + 4] = 1.0
    return image, LungMasks(right=right, left=left)


class SpotModel:
    """P(finding) rises with the brightest pixel near the spot; records its batch sizes."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls.append(batch.shape[0])
        n, h, w = batch.shape
        r, c = int(SPOT[0] * h), int(SPOT[1] * w)
        window = batch[:, r - 8 : r + 9, c - 8 : c + 9].reshape(n, -1).max(axis=1)
        return (1 / (1 + np.exp(-12 * (window - 0.6)))).astype(np.float32)


def test_ridge_matches_sklearn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (200, 12)).astype(np.float64)
    y = x @ rng.normal(size=12) + 0.1 * rng.normal(size=200)
    w = rng.random(200)
    ours = fit_weighted_ridge(x, y, w, alpha=1.0)
    ref = linear_model.Ridge(alpha=1.0).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef, ref.coef_, atol=1e-9)
    assert ours.intercept == pytest.approx(ref.intercept_)
    assert ours.score == pytest.approx(ref.score(x, y, sample_weight=w))


def test_fit_matches_lime_base_on_the_same_samples() -> None:
    lime_base = pytest.importorskip("lime.lime_base")
    metrics = pytest.importorskip("sklearn.metrics")
    rows = sample_design(300, 15, np.random.default_rng(5))
    probs = 1 / (1 + np.exp(-(rows @ np.linspace(-1, 1, 15) - 0.2)))
    distances = metrics.pairwise_distances(rows, rows[0:1], metric="cosine").ravel()
    lime_weights = np.sqrt(np.exp(-(distances**2) / 0.25**2))
    np.testing.assert_allclose(kernel_weights(rows, 0.25), lime_weights, atol=1e-12)

    def kernel(d: np.ndarray) -> np.ndarray:
        return np.sqrt(np.exp(-(d**2) / 0.25**2))

    base = lime_base.LimeBase(kernel, random_state=0)
    labels = np.stack([1 - probs, probs], axis=1)
    intercept, exp, score, local = base.explain_instance_with_data(
        rows, labels, distances, 1, 100000, feature_selection="auto"
    )
    theirs = np.zeros(15)
    for feature, weight in exp:
        theirs[feature] = weight
    ours = fit_weighted_ridge(rows, probs, kernel_weights(rows, 0.25), alpha=1.0)
    np.testing.assert_allclose(ours.coef, theirs, atol=1e-9)
    assert ours.intercept == pytest.approx(intercept)
    assert ours.score == pytest.approx(score)
    assert ours.local_pred == pytest.approx(float(np.ravel(local)[0]))


def test_superpixels_stay_in_the_region() -> None:
    image, lungs = synthetic_case()
    labels = chest_superpixels(image, lungs.both, 4.0, 20, 0.5)
    assert labels.dtype == np.int32
    assert np.all(labels[lungs.both] >= 0)
    margin = chest_region(lungs.both, 4.0) & ~lungs.both
    assert np.all(labels[margin] >= 0)  # the margin joins neighbouring lung superpixels
    assert np.all(labels[~chest_region(lungs.both, 4.0)] == -1)
    assert np.unique(labels[labels >= 0]).tolist() == list(range(labels.max() + 1))


def test_perturb_fills_only_switched_off_superpixels() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    labels = np.array([[-1, 0, 0, 1]] * 4, dtype=np.int32)
    rows = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.uint8)
    out = perturb(image, labels, np.array([9.0, 7.0], np.float32), rows)
    np.testing.assert_array_equal(out[0], image)
    assert np.all(out[1][:, 1:3] == 9.0) and np.all(out[1][:, 3] == image[:, 3])
    assert np.all(out[2][:, 3] == 7.0) and np.all(out[2][:, 0] == image[:, 0])


def test_lime_finds_the_spot_and_batches_predictions() -> None:
    image, lungs = synthetic_case()
    model = SpotModel()
    config = LimeConfig(n_samples=200, n_segments=30, batch_size=64, work_size=96)
    result = explain_lime(image, lungs, model, "finding", seed=1, config=config)
    assert model.calls == [64, 64, 64, 8]
    top = result.positive[0]
    assert result.segments[int(SPOT[0] * H), int(SPOT[1] * W)] == top.superpixel
    assert top.zone_id == "right_lower" or top.zone_id == "right_mid"
    assert top.weight > 0.3 and all(p.weight > 0 for p in result.positive)
    assert all(n.weight < 0 for n in result.negative)
    assert result.zones[0].side == "right"
    assert result.segments.shape == (H, W) and np.all(result.segments[~lungs.both] >= -1)
    assert Image.open(io.BytesIO(result.overlay_png)).size == (W, H)
    flipped = explain_lime(image, lungs, SpotModel(), "no_finding", seed=1, config=config)
    np.testing.assert_allclose(flipped.weights, -result.weights, atol=1e-9)


def test_same_seed_same_bytes_other_seed_differs() -> None:
    image, lungs = synthetic_case()
    config = LimeConfig(n_samples=60, n_segments=20, work_size=80)
    first = explain_lime(image, lungs, SpotModel(), seed=7, config=config)
    again = explain_lime(image, lungs, SpotModel(), seed=7, config=config)
    other = explain_lime(image, lungs, SpotModel(), seed=8, config=config)
    assert first.overlay_png == again.overlay_png
    assert first.weights.tobytes() == again.weights.tobytes()
    assert first.seed == 7
    assert not np.array_equal(first.weights, other.weights)


@pytest.mark.parametrize("n_samples", [5, 1001])
def test_sample_count_is_bounded(n_samples: int) -> None:
    with pytest.raises(ValueError):
        LimeConfig(n_samples=n_samples)


def test_empty_lungs_are_rejected() -> None:
    image, lungs = synthetic_case()
    empty = LungMasks(right=np.zeros_like(lungs.right), left=np.zeros_like(lungs.left))
    with pytest.raises(ValueError):
        explain_lime(image, empty, SpotModel(), config=LimeConfig(n_samples=20))


def test_predict_with_wrong_shape_is_reported() -> None:
    image, lungs = synthetic_case()
    with pytest.raises(ValueError):
        explain_lime(image, lungs, lambda b: np.zeros((b.shape[0], 2), np.float32))


def test_design_keeps_the_requested_share_and_is_prefix_stable() -> None:
    for keep in (0.5, 0.75):
        rows = sample_design(9, 6, np.random.default_rng(2), keep)
        assert rows[0].all() and rows.dtype == np.uint8
        longer = sample_design(4001, 6, np.random.default_rng(2), keep)
        np.testing.assert_array_equal(longer[:9], rows)
        assert longer[1:].mean() == pytest.approx(keep, abs=0.02)


def test_orthogonal_design_is_balanced_and_seeded() -> None:
    rows = orthogonal_design(129, 12, np.random.default_rng(4))
    assert rows.shape == (129, 12) and rows[0].all()
    signs = rows[1:].astype(np.float64) * 2 - 1  # 128 rows = one full Hadamard order
    np.testing.assert_allclose(signs.T @ signs, 128 * np.eye(12))  # orthogonal, balanced
    np.testing.assert_array_equal(rows, orthogonal_design(129, 12, np.random.default_rng(4)))
    assert not np.array_equal(rows, orthogonal_design(129, 12, np.random.default_rng(5)))


def test_hide_values_segment_or_chest_mean() -> None:
    image = np.array([[0.0, 0.2, 0.4, 0.9]], dtype=np.float32)
    labels = np.array([[0, 0, 1, -1]], dtype=np.int32)
    np.testing.assert_allclose(hide_values(image, labels, 2, "segment_mean"), [0.1, 0.4])
    np.testing.assert_allclose(hide_values(image, labels, 2, "chest_mean"), [0.2, 0.2])
