"""Exact Grad-CAM without a backward pass.

For a head ``logit = b + sum_k w_k * mean_{ij} A_k[i, j]`` (global-average-pool + linear),
the gradient of the logit w.r.t. ``A_k[i, j]`` is ``w_k / (h*w)`` everywhere, so Grad-CAM's
channel weights (spatial means of those gradients) are ``w_k / (h*w)`` and the map is

    ReLU( sum_k w_k / (h*w) * A_k )  ==  ReLU(cam)

where ``cam`` is the classifier's ONNX output [N, 1, h, w] (see inference/manifest.py).
For the "no_finding" target the logit of the complement is ``-logit``, hence ReLU(-cam).
tests/unit/test_explain_gradcam_captum.py checks this against captum's LayerGradCam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from explain.masks import (
    FloatMap,
    LungMasks,
    area_downsample,
    margin_pixels,
    resize_map,
    soft_dilate,
)
from explain.render import Rgb, encode_gray_png, encode_png, heat_overlay
from explain.zones import ZoneDescriptor, describe_zones, split_zones
from inference.vocabulary import BINARY_DECISIONS, BinaryDecision

Target = BinaryDecision  # what an explanation explains: one side of the threshold
TARGETS: tuple[Target, ...] = BINARY_DECISIONS


def gradcam_grid(cam: npt.NDArray[np.floating], target: Target = "finding") -> FloatMap:
    """Grad-CAM on the feature grid, float32 [h, w] in [0, 1] (normalised by its maximum).

    cam: float [h, w] (or [1, h, w] / [1, 1, h, w]) per-position logit contributions.
    An all-zero result means the map carries no evidence for ``target`` at any position.
    """
    grid = np.asarray(cam, dtype=np.float32).squeeze()
    if grid.ndim != 2:
        raise ValueError(f"cam must squeeze to [h, w], got shape {np.shape(cam)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    positive = np.maximum(grid if target == "finding" else -grid, 0.0)
    peak = float(positive.max())
    return (positive / peak).astype(np.float32) if peak > 0 else np.zeros_like(positive)


def gradcam_raw_peak(cam: npt.NDArray[np.floating], target: Target = "finding") -> float:
    """Largest positive per-position contribution to the target's logit (logit units)."""
    grid = np.asarray(cam, dtype=np.float32)
    return float(np.maximum(grid if target == "finding" else -grid, 0.0).max())


@dataclass(frozen=True)
class GradCamResult:
    """Grad-CAM explanation at the upload's size [H, W].

    heatmap: unrestricted map, float32 [H, W] in [0, 1] (bilinear upsample of the grid).
    restricted: ``heatmap`` times the softly dilated lung mask, float32 [H, W] in [0, 1];
        deliberately NOT re-normalised, so weak in-lung evidence stays visibly weak.
    low_res: ``restricted`` area-averaged to float32 [h', w'] with the longer side ``low_res_side``.
    energy_in_lungs: share of the unrestricted map's sum that lies inside the hard lung mask.
    raw_peak: largest positive logit contribution of one grid cell (0 => empty map).
    zones: descriptors sorted by Grad-CAM zone mean.

    Holds no encoded images: a report or an SR needs the numbers only, so pictures are made
    on demand (:func:`gradcam_overlay`, :func:`render_gradcam`).
    """

    target: Target
    grid: FloatMap
    heatmap: FloatMap
    restricted: FloatMap
    low_res: FloatMap
    energy_in_lungs: float
    raw_peak: float
    zones: tuple[ZoneDescriptor, ...]


def energy_in_mask(heat: FloatMap, mask: npt.NDArray[np.bool_]) -> float:
    """Fraction of a non-negative map's total inside ``mask`` (0.0 for an all-zero map)."""
    total = float(heat.sum(dtype=np.float64))
    return float(heat[mask].sum(dtype=np.float64)) / total if total > 0 else 0.0


def low_res_shape(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """Shape with the longer side ``side`` and the image's aspect ratio (each side >= 1)."""
    height, width = shape
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def explain_gradcam(
    image: FloatMap,
    cam: npt.NDArray[np.floating],
    lungs: LungMasks,
    target: Target = "finding",
    *,
    margin_fraction: float = 0.02,
    low_res_side: int = 64,
) -> GradCamResult:
    """Full Grad-CAM explanation from the classifier's ``cam`` output.

    image: float32 [H, W] in [0, 1] (the upload); cam: float [h, w] for this image;
    lungs: bool masks at [H, W]. margin_fraction: soft lung-mask dilation as a fraction of
    the longer image side (2 % keeps the map off the spine between the lungs).
    """
    if image.shape != lungs.shape:
        raise ValueError("image and lung masks must have the same shape")
    height, width = image.shape
    grid = gradcam_grid(cam, target)
    heatmap = np.clip(resize_map(grid, height, width), 0.0, 1.0)
    soft = soft_dilate(lungs.both, margin_pixels(image.shape, margin_fraction))
    restricted = (heatmap * soft).astype(np.float32)
    low_res = area_downsample(restricted, *low_res_shape(image.shape, low_res_side))
    return GradCamResult(
        target=target,
        grid=grid,
        heatmap=heatmap,
        restricted=restricted,
        low_res=low_res,
        energy_in_lungs=energy_in_mask(heatmap, lungs.both),
        raw_peak=gradcam_raw_peak(cam, target),
        zones=describe_zones(split_zones(lungs), gradcam=restricted),
    )


@dataclass(frozen=True)
class GradCamImages:
    """The pictures of a Grad-CAM result, as the JSON answer shows them (PNG, image size).

    overlay_png: jet overlay of ``restricted`` over the radiograph (RGB).
    lungs_png: ``restricted`` as 8-bit grayscale (0-255 = 0-1).
    full_png: ``heatmap`` (unrestricted) as 8-bit grayscale.
    """

    overlay_png: bytes
    lungs_png: bytes
    full_png: bytes


def gradcam_overlay(image: FloatMap, result: GradCamResult) -> Rgb:
    """uint8 [H, W, 3]: the lung-restricted map in jet colours over ``image`` (float32 [H, W])."""
    return heat_overlay(image, result.restricted)


def render_gradcam(image: FloatMap, result: GradCamResult) -> GradCamImages:
    """Encode the three PNGs of ``result`` over ``image`` (float32 [H, W] in [0, 1])."""
    return GradCamImages(
        overlay_png=encode_png(gradcam_overlay(image, result)),
        lungs_png=encode_gray_png(result.restricted),
        full_png=encode_gray_png(result.heatmap),
    )
