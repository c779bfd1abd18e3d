"""LIME for radiographs: the ``lime`` package's algorithm, restricted to the chest and batched.

Algorithm (as lime_image.LimeImageExplainer + lime_base.LimeBase with their defaults):
superpixels are switched on/off by uniform random binary vectors (row 0 all ones = the
original); an "off" superpixel is replaced by its own mean intensity (lime's
``hide_color=None``); each sample is weighted by ``sqrt(exp(-d**2 / 0.25**2))`` with ``d``
the cosine distance of its vector to the all-ones vector; a weighted Ridge(alpha=1) fit of
P(target) on the vectors gives one weight per superpixel. tests/unit/test_explain_lime.py
checks the fit against ``lime_base`` on the same samples.

Differences, all for speed, stability and relevance (measured in bench/RESULTS.md):
15 SLIC superpixels inside the lungs, grown over a margin (pixels outside are never
perturbed, so no weight is spent on the frame, labels or shoulders); an "off" superpixel
takes the chest region's mean grey (lime's ``hide_color=<value>`` instead of its default
per-superpixel mean, which leaves an opacity's brightness in place); work happens at the
model's input size; the perturbed images go to ``predict`` in large batches; the random
vectors come from ``numpy.random.default_rng(seed)`` so a seed reproduces the output exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from skimage.segmentation import slic

from explain.gradcam import Target
from explain.masks import (
    FloatMap,
    LungMasks,
    chest_region,
    margin_pixels,
    resize_labels,
    resize_mask,
)
from explain.render import encode_png, label_boundaries, signed_overlay
from explain.zones import LimeZoneInput, ZoneDescriptor, ZoneId, describe_zones, split_zones
from inference.preprocess import resize_gray

Labels = npt.NDArray[np.int32]
#: predict(images float32 [N, h, w] in [0, 1]) -> float32 [N] calibrated P(finding) in [0, 1].
Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]

MAX_SAMPLES = 1000


@dataclass(frozen=True)
class LimeConfig:
    """LIME knobs. ``n_samples`` default comes from the stability study in bench/RESULTS.md."""

    n_samples: int = 200
    n_segments: int = 15
    compactness: float = 0.5
    work_size: int = 224
    batch_size: int = 100
    kernel_width: float = 0.25
    ridge_alpha: float = 1.0
    margin_fraction: float = 0.03
    top_k: int = 5
    keep_probability: float = 0.5
    design: Literal["uniform", "orthogonal"] = "uniform"
    fill: Literal["segment_mean", "chest_mean"] = "chest_mean"

    def __post_init__(self) -> None:
        if not 10 <= self.n_samples <= MAX_SAMPLES:
            raise ValueError(f"n_samples must be in [10, {MAX_SAMPLES}]")
        if not 4 <= self.n_segments <= 200:
            raise ValueError("n_segments must be in [4, 200]")
        if not 0.05 <= self.keep_probability <= 0.95:
            raise ValueError("keep_probability must be in [0.05, 0.95]")
        if self.batch_size < 1 or self.work_size < 32 or self.top_k < 1:
            raise ValueError("batch_size, work_size and top_k must be positive")


@dataclass(frozen=True)
class LinearFit:
    """Weighted ridge fit: coef float64 [K], intercept, weighted R^2, prediction at row 0."""

    coef: npt.NDArray[np.float64]
    intercept: float
    score: float
    local_pred: float


@dataclass(frozen=True)
class SuperpixelWeight:
    """One superpixel's LIME weight (change of P(target) when it is present).

    area_fraction: share of the chest region's pixels; centroid_yx: row/column of its centre
    as fractions of the image height/width; zone_id: the lung zone it overlaps most (None
    when it lies in the margin only).
    """

    superpixel: int
    weight: float
    area_fraction: float
    centroid_yx: tuple[float, float]
    zone_id: ZoneId | None


@dataclass(frozen=True)
class LimeTiming:
    segmentation_s: float
    predict_s: float
    fit_s: float
    render_s: float
    total_s: float


@dataclass(frozen=True)
class LimeResult:
    """LIME explanation at the upload's size [H, W].

    segments: int32 [H, W] superpixel ids 0..K-1, -1 outside the chest region.
    weights: float64 [K]; positive / negative: the ``top_k`` strongest of each sign, sorted
    by |weight| descending. signed_map: float32 [H, W] in [-1, 1] (weight / max |weight|).
    overlay_png: top superpixels coloured (positive red, negative blue) over the radiograph.
    """

    target: Target
    seed: int
    n_samples: int
    segments: Labels
    weights: npt.NDArray[np.float64]
    intercept: float
    score: float
    local_pred: float
    base_probability: float
    positive: tuple[SuperpixelWeight, ...]
    negative: tuple[SuperpixelWeight, ...]
    signed_map: FloatMap
    zone_input: LimeZoneInput
    zones: tuple[ZoneDescriptor, ...]
    overlay_png: bytes
    timing: LimeTiming

    def summary(self) -> LimeSummary:
        """The response's content without the per-pixel maps."""
        return LimeSummary(
            target=self.target,
            seed=self.seed,
            n_samples=self.n_samples,
            n_superpixels=int(self.weights.size),
            score=self.score,
            base_probability=self.base_probability,
            positive=self.positive,
            negative=self.negative,
            overlay_png=self.overlay_png,
            timing=self.timing,
        )


@dataclass(frozen=True)
class LimeSummary:
    """What a LIME answer shows, without per-pixel arrays: small enough to keep as a job
    result for minutes (the full :class:`LimeResult` of a 30 MP upload held ~254 MB)."""

    target: Target
    seed: int
    n_samples: int
    n_superpixels: int
    score: float
    base_probability: float
    positive: tuple[SuperpixelWeight, ...]
    negative: tuple[SuperpixelWeight, ...]
    overlay_png: bytes
    timing: LimeTiming


def chest_superpixels(
    image: FloatMap,
    lungs: npt.NDArray[np.bool_],
    margin_px: float,
    n_segments: int,
    compactness: float,
) -> Labels:
    """SLIC superpixels of the lungs, grown outward over a margin: int32 [h, w], ids 0..K-1
    consecutive, -1 outside the chest region (lungs plus about ``margin_px`` pixels).

    image: float32 [h, w] in [0, 1]; lungs: bool [h, w]. SLIC runs inside the lungs only and
    each margin pixel joins the nearest lung superpixel: segmenting the margin on its own made
    long slivers along the ribs and pleura. Deterministic (SLIC has no randomness).
    """
    if not lungs.any():
        raise ValueError("the chest region is empty: no lung was found")
    raw = slic(
        image.astype(np.float64),
        n_segments=n_segments,
        compactness=compactness,
        sigma=1.0,
        mask=lungs,
        channel_axis=None,
        start_label=1,
    )
    ids, inverse = np.unique(raw, return_inverse=True)
    labels = inverse.reshape(raw.shape).astype(np.int32)
    # SLIC marks pixels outside the mask with 0; keep ids consecutive from 0 inside.
    labels = labels - 1 if ids[0] == 0 else labels
    region = chest_region(lungs, margin_px)
    return _grow_labels(labels, region, int(np.ceil(1.2 * margin_px)) + 2)


def _grow_labels(labels: Labels, region: npt.NDArray[np.bool_], steps: int) -> Labels:
    """Give unlabelled ``region`` pixels the label of a labelled 4-neighbour, ``steps`` times."""
    out = labels.copy()
    height, width = out.shape
    for _ in range(steps):
        todo = region & (out < 0)
        if not todo.any():
            break
        padded = np.pad(out, 1, constant_values=-1)
        grown = out.copy()
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            take = todo & (grown < 0) & (neighbour >= 0)
            grown[take] = neighbour[take]
        out = grown
    return out


def segment_means(image: FloatMap, labels: Labels, n_segments: int) -> npt.NDArray[np.float32]:
    """Mean intensity of each superpixel, float32 [K] (lime's default "hide" colour)."""
    inside = labels >= 0
    sums = np.bincount(labels[inside], weights=image[inside], minlength=n_segments)
    counts = np.bincount(labels[inside], minlength=n_segments)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def sample_design(
    n_samples: int, n_segments: int, rng: np.random.Generator, keep_probability: float = 0.5
) -> npt.NDArray[np.uint8]:
    """uint8 [n_samples, K] of 0/1 (1 = superpixel kept); row 0 is all ones, as in lime.

    keep_probability 0.5 is lime's design (uniform random bits). A higher value keeps the
    perturbed images closer to the original, where the model is closer to linear, so the
    local linear fit varies less from seed to seed (see the stability study). The first n
    rows of a longer design equal the n-row design for the same seed.
    """
    if keep_probability == 0.5:
        rows = rng.integers(0, 2, size=(n_samples, n_segments), dtype=np.uint8)
    else:
        rows = (rng.random((n_samples, n_segments)) < keep_probability).astype(np.uint8)
    rows[0] = 1
    return rows


def orthogonal_design(
    n_samples: int, n_segments: int, rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """uint8 [n_samples, K]: row 0 all ones, then rows of a randomised Sylvester-Hadamard design.

    Every row after the first keeps each superpixel with probability 1/2, as in lime, but the
    columns are (nearly, when fewer rows than the Hadamard order are used) orthogonal, so one
    superpixel's estimated weight does not pick up chance correlation with the others'. The
    seed picks the Hadamard columns, their signs and the row order.
    """
    order = 1
    while order < max(n_samples - 1, n_segments + 1):
        order *= 2
    hadamard = np.ones((1, 1), dtype=np.int8)
    while hadamard.shape[0] < order:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    columns = rng.choice(np.arange(1, order), size=n_segments, replace=False)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=n_segments)
    rows = rng.permutation(order)[: n_samples - 1]
    body = (hadamard[np.ix_(rows, columns)] * signs) > 0
    return np.vstack([np.ones((1, n_segments), dtype=np.uint8), body.astype(np.uint8)])


def perturb(
    image: FloatMap, labels: Labels, fill: npt.NDArray[np.float32], rows: npt.NDArray[np.uint8]
) -> npt.NDArray[np.float32]:
    """Images with "off" superpixels filled: float32 [B, h, w] for rows uint8 [B, K]."""
    inside = np.flatnonzero(labels.ravel() >= 0)
    seg = labels.ravel()[inside]
    batch = np.repeat(image.reshape(1, -1), rows.shape[0], axis=0)
    keep = rows[:, seg].astype(bool)
    batch[:, inside] = np.where(keep, batch[:, inside], fill[seg][None, :])
    return batch.reshape(rows.shape[0], *image.shape)


def kernel_weights(rows: npt.NDArray[np.uint8], kernel_width: float) -> npt.NDArray[np.float64]:
    """lime's sample weights: sqrt(exp(-d^2 / width^2)), d = cosine distance to all-ones.

    For a 0/1 vector with s ones out of K, cosine similarity to all-ones is sqrt(s / K);
    an all-zero vector gets distance 1, as sklearn's cosine distance gives it.
    """
    ones = rows.sum(axis=1, dtype=np.float64)
    distance = 1.0 - np.sqrt(ones / rows.shape[1])
    weights: npt.NDArray[np.float64] = np.sqrt(np.exp(-(distance**2) / kernel_width**2))
    return weights


def fit_weighted_ridge(
    features: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    target: npt.NDArray[np.floating],
    sample_weight: npt.NDArray[np.floating],
    alpha: float = 1.0,
) -> LinearFit:
    """Closed-form sklearn ``Ridge(alpha, fit_intercept=True).fit(X, y, sample_weight)``.

    Weighted centring, then (Xc' W Xc + alpha I) coef = Xc' W yc; score is the weighted R^2
    as ``Ridge.score(X, y, sample_weight)`` reports it; local_pred is the fit at row 0.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    x_mean = np.average(x, axis=0, weights=w)
    y_mean = float(np.average(y, weights=w))
    xc, yc = x - x_mean, y - y_mean
    gram = (xc * w[:, None]).T @ xc + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, (xc * w[:, None]).T @ yc).astype(np.float64)
    intercept = y_mean - float(x_mean @ coef)
    pred = x @ coef + intercept
    total = float(np.sum(w * (y - y_mean) ** 2))
    score = 1.0 - float(np.sum(w * (y - pred) ** 2)) / total if total > 0 else 0.0
    return LinearFit(coef=coef, intercept=intercept, score=score, local_pred=float(pred[0]))


def hide_values(
    image: FloatMap, labels: Labels, n_segments: int, fill: str
) -> npt.NDArray[np.float32]:
    """Value each superpixel takes when switched off, float32 [K].

    "segment_mean": its own mean (lime's ``hide_color=None``); "chest_mean": one grey, the mean
    of the whole chest region (lime's ``hide_color=<value>``), which also removes the local
    brightness of an opacity, not only its texture.
    """
    if fill == "segment_mean":
        return segment_means(image, labels, n_segments)
    return np.full(n_segments, image[labels >= 0].mean(), dtype=np.float32)


def _evaluate(
    image: FloatMap,
    labels: Labels,
    rows: npt.NDArray[np.uint8],
    predict: Predict,
    batch_size: int,
    fill_mode: str = "segment_mean",
) -> npt.NDArray[np.float64]:
    fill = hide_values(image, labels, rows.shape[1], fill_mode)
    out = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], batch_size):
        chunk = rows[start : start + batch_size]
        probs = np.asarray(predict(perturb(image, labels, fill, chunk)), dtype=np.float64)
        if probs.shape != (chunk.shape[0],):
            raise ValueError(f"predict must return shape [{chunk.shape[0]}], got {probs.shape}")
        out[start : start + chunk.shape[0]] = probs
    return out


def _describe_superpixels(
    labels: Labels, weights: npt.NDArray[np.float64], ids: npt.NDArray[np.intp], lungs: LungMasks
) -> tuple[SuperpixelWeight, ...]:
    zones = split_zones(lungs)
    height, width = labels.shape
    total = max(int((labels >= 0).sum()), 1)
    out = []
    for sp in ids:
        mask = labels == sp
        ys, xs = np.nonzero(mask)
        overlaps = [int(zone.mask[mask].sum()) for zone in zones]
        best = int(np.argmax(overlaps))
        out.append(
            SuperpixelWeight(
                superpixel=int(sp),
                weight=float(weights[sp]),
                area_fraction=ys.size / total,
                centroid_yx=(float(ys.mean()) / height, float(xs.mean()) / width),
                zone_id=zones[best].info.zone_id if overlaps[best] > 0 else None,
            )
        )
    return tuple(out)


def _zone_input(labels: Labels, weights: npt.NDArray[np.float64]) -> LimeZoneInput:
    positive = np.maximum(weights, 0.0)
    inside = labels >= 0
    intensity = np.zeros(labels.shape, dtype=np.float32)
    mass = np.zeros(labels.shape, dtype=np.float32)
    if positive.max(initial=0.0) > 0:
        areas = np.bincount(labels[inside], minlength=weights.size).astype(np.float64)
        intensity[inside] = (positive / positive.max())[labels[inside]]
        per_pixel = positive / np.maximum(areas, 1.0) / positive.sum()
        mass[inside] = per_pixel[labels[inside]]
    return LimeZoneInput(intensity=intensity, mass=mass)


def explain_lime(
    image: FloatMap,
    lungs: LungMasks,
    predict: Predict,
    target: Target = "finding",
    *,
    seed: int = 0,
    config: LimeConfig = LimeConfig(),
    render: bool = True,
) -> LimeResult:
    """LIME explanation of P(target) for one radiograph.

    image: float32 [H, W] in [0, 1]; lungs: bool masks at [H, W]; predict: see ``Predict``
    (called ceil(n_samples / batch_size) times with float32 [<=batch_size, s, s] images,
    s = config.work_size). Same inputs and seed => identical weights and overlay bytes.
    render: encode the overlay PNG; False leaves ``overlay_png`` empty for callers that only
    use the weights and zones (a report), which saves the encode of a full-size picture.
    """
    if image.shape != lungs.shape:
        raise ValueError("image and lung masks must have the same shape")
    started = time.perf_counter()
    size = config.work_size
    work = np.clip(resize_gray(image, size, size), 0.0, 1.0)
    labels = chest_superpixels(
        work,
        resize_mask(lungs.both, size, size),
        margin_pixels((size, size), config.margin_fraction),
        config.n_segments,
        config.compactness,
    )
    n_segments = int(labels.max()) + 1
    t_seg = time.perf_counter()

    if config.design == "orthogonal":
        rows = orthogonal_design(config.n_samples, n_segments, np.random.default_rng(seed))
    else:
        rows = sample_design(
            config.n_samples, n_segments, np.random.default_rng(seed), config.keep_probability
        )
    probs = _evaluate(work, labels, rows, predict, config.batch_size, config.fill)
    response = probs if target == "finding" else 1.0 - probs
    t_pred = time.perf_counter()

    fit = fit_weighted_ridge(
        rows, response, kernel_weights(rows, config.kernel_width), config.ridge_alpha
    )
    t_fit = time.perf_counter()

    height, width = image.shape
    full = resize_labels(labels, height, width)
    scale = float(np.abs(fit.coef).max()) or 1.0
    order = np.argsort(-np.abs(fit.coef), kind="stable")
    pos_ids = np.array([i for i in order if fit.coef[i] > 0][: config.top_k], dtype=np.intp)
    neg_ids = np.array([i for i in order if fit.coef[i] < 0][: config.top_k], dtype=np.intp)
    shown = np.zeros(n_segments, dtype=bool)
    shown[pos_ids] = shown[neg_ids] = True
    signed = np.zeros((height, width), dtype=np.float32)
    inside = full >= 0
    signed[inside] = (fit.coef / scale)[full[inside]]
    shown_map = np.where(inside & shown[np.maximum(full, 0)], signed, 0.0).astype(np.float32)
    overlay = (
        encode_png(signed_overlay(image, shown_map, label_boundaries(full, shown)))
        if render
        else b""
    )
    zone_input = _zone_input(full, fit.coef)
    zones = describe_zones(split_zones(lungs), lime=zone_input)
    done = time.perf_counter()
    return LimeResult(
        target=target,
        seed=seed,
        n_samples=config.n_samples,
        segments=full,
        weights=fit.coef,
        intercept=fit.intercept,
        score=fit.score,
        local_pred=fit.local_pred,
        base_probability=float(probs[0]),
        positive=_describe_superpixels(full, fit.coef, pos_ids, lungs),
        negative=_describe_superpixels(full, fit.coef, neg_ids, lungs),
        signed_map=signed,
        zone_input=zone_input,
        zones=zones,
        overlay_png=overlay,
        timing=LimeTiming(
            segmentation_s=t_seg - started,
            predict_s=t_pred - t_seg,
            fit_s=t_fit - t_pred,
            render_s=done - t_fit,
            total_s=done - started,
        ),
    )
