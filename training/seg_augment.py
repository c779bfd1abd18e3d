"""Paired image/mask augmentation for the segmenter: other scanners, sites and positioning.

Geometry (applied to image and masks alike): rotation ±7°, scale ±10 %, an extra ±8 % aspect
change (some sources were squashed to square upstream), shift ±5 %. Masks are resampled with
nearest neighbour; pixels that come from outside the original image become IGNORE, so the loss
never learns "no lung" from padding. No horizontal flips: left/right is anatomy.

Intensity (image only), each drawn per sample: gamma and contrast/brightness (exposure and
detector response), Gaussian blur or unsharp masking (vendor post-processing), Gaussian noise
(dose), and a down-/up-sampling round trip (the 224-256 px sources).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from training.prepare import IGNORE


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _affine_grid(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    angle = _uniform(b, -7.0, 7.0, gen) * math.pi / 180.0
    scale = _uniform(b, 0.9, 1.1, gen)
    aspect = _uniform(b, -0.08, 0.08, gen).exp()
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    tx, ty = _uniform(b, -0.05, 0.05, gen), _uniform(b, -0.05, 0.05, gen)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos / sx, -sin / sx, tx], 1), torch.stack([sin / sy, cos / sy, ty], 1)], 1
    )
    return F.affine_grid(theta, [b, 1, h, w], align_corners=False)


def warp_pair(
    images: torch.Tensor, targets: torch.Tensor, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp gray [B, H, W] (bilinear, border) and uint8 targets [B, C, H, W] (nearest).

    Target values are shifted by one before sampling with zero padding, so "outside the
    original image" (0 after sampling) is told apart from "labelled background" and set IGNORE.
    """
    out = F.grid_sample(
        images.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=False
    ).squeeze(1)
    shifted = targets.float() + 1.0
    warped = F.grid_sample(
        shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False
    ).round()
    tgt = torch.where(warped == 0, torch.full_like(warped, IGNORE + 1), warped) - 1.0
    return out.clamp(0.0, 1.0), tgt.to(torch.uint8)


def _blur_or_sharpen(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One image [H, W]: blur (p 0.25), unsharp mask (p 0.2) or unchanged."""
    u = float(torch.rand(1, generator=gen))
    if u >= 0.45:
        return img
    sigma = float(_uniform(1, 0.5, 1.5, gen))
    blurred = gaussian_blur(img[None, None], [7, 7], [sigma, sigma])[0, 0]
    if u < 0.25:
        return blurred
    amount = float(_uniform(1, 0.3, 1.0, gen))
    return (img + amount * (img - blurred)).clamp(0.0, 1.0)


def _resample(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Down- to 96-192 px and back (p 0.15): low-resolution sources and heavy compression."""
    if float(torch.rand(1, generator=gen)) >= 0.15:
        return img
    side = int(_uniform(1, 96, 192, gen))
    small = F.interpolate(img[None, None], size=(side, side), mode="area")
    return F.interpolate(small, size=img.shape, mode="bilinear", align_corners=False)[0, 0]


def intensity(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scanner/site appearance changes on gray [B, H, W] in [0, 1]."""
    b = images.shape[0]
    out = images.clamp(1e-6, 1.0).pow(_uniform(b, -0.35, 0.35, gen).exp().view(b, 1, 1))
    contrast = _uniform(b, 0.75, 1.3, gen).view(b, 1, 1)
    brightness = _uniform(b, -0.08, 0.08, gen).view(b, 1, 1)
    mean = out.mean((1, 2), keepdim=True)
    out = ((out - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
    out = torch.stack([_resample(_blur_or_sharpen(img, gen), gen) for img in out])
    noisy = torch.rand(b, generator=gen) < 0.3
    sigma = _uniform(b, 0.0, 0.03, gen) * noisy
    noise = torch.randn(out.shape, generator=gen) * sigma.view(b, 1, 1)
    return (out + noise).clamp(0.0, 1.0)


def augment_seg(
    images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment gray [B, H, W] in [0, 1] and uint8 targets [B, C, H, W] (IGNORE kept)."""
    b, h, w = images.shape
    warped, tgt = warp_pair(images.float(), targets, _affine_grid(b, h, w, gen))
    return intensity(warped, gen), tgt
