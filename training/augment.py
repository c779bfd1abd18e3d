"""Radiograph-appropriate augmentation on batches of grayscale images in [0, 1].

Small rotations, scaling and shifts (patient positioning), contrast/brightness and gamma
(exposure, detector response). No horizontal flip: the heart side is anatomical information.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_gray(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """float32 [B, H, W] in [0, 1] -> augmented [B, H, W] in [0, 1]; deterministic per generator."""
    b = batch.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle = uniform(-8.0, 8.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    tx, ty = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, *batch.shape[1:]], align_corners=False)
    out = F.grid_sample(
        batch.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    out = out.squeeze(1).clamp(0.0, 1.0)
    gamma = torch.exp(uniform(-0.25, 0.25)).view(b, 1, 1)
    out = out.pow(gamma)
    contrast = uniform(0.85, 1.15).view(b, 1, 1)
    brightness = uniform(-0.08, 0.08).view(b, 1, 1)
    mean = out.mean((1, 2), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def normalise(gray: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """float32 [B, H, W] in [0, 1] -> [B, C, H, W]: torch twin of ``to_model_input``, no resize."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (gray.unsqueeze(1).expand(-1, len(mean), -1, -1) - m) / s


def _box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """Separable mean filter of odd width ``k`` on [B, 1, H, W] (reflect-padded)."""
    pad = k // 2
    x = F.avg_pool2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), (1, k), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), (k, 1), stride=1)


_GAUSS5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _gauss_blur(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial (~Gaussian sigma 1 px) blur of [B, 1, H, W]."""
    k = _GAUSS5.to(x.dtype)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))


def _jpeg(gray: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip one [H, W] image in [0, 1] through 8-bit JPEG at ``quality``."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    u8 = (gray.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(u8).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        back = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(back)


def site_augment(batch: torch.Tensor, generator: torch.Generator, out_size: int) -> torch.Tensor:
    """Simulate another scanner/site: float32 [B, H, W] in [0, 1] -> [B, out, out] in [0, 1].

    Geometry: rotation +-7 deg, zoom 0.9-1.15, aspect +-10 % (the adult supplement was squashed
    to a square upstream, other sources were not), shift +-5 %. Photometric: gamma, CLAHE-like
    local contrast (unsharp mask with a wide box filter), global contrast/brightness, blur or
    sharpening, Gaussian noise, JPEG re-compression (quality 25-90). No horizontal flip: the
    heart side is anatomy. Deterministic for a given generator state.
    """
    b = batch.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) < p).float()

    x = batch.unsqueeze(1)
    if x.shape[-1] > out_size * 1.2:  # antialias before the affine resample
        side = int(round(out_size * 1.15))
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    angle = uniform(-7.0, 7.0) * math.pi / 180.0
    zoom = uniform(0.9, 1.15)
    aspect = torch.exp(uniform(-0.1, 0.1))
    sx, sy = 1.0 / (zoom * aspect.sqrt()), aspect.sqrt() / zoom
    tx, ty = uniform(-0.05, 0.05), uniform(-0.05, 0.05)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1
    )
    grid = F.affine_grid(theta, [b, 1, out_size, out_size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x.clamp(1e-4, 1.0).pow(torch.exp(uniform(-0.3, 0.3)).view(b, 1, 1, 1))
    local = _box_blur(x, (out_size // 8) | 1)
    x = x + (chance(0.5) * uniform(0.0, 0.8)).view(b, 1, 1, 1) * (x - local)
    mean = x.mean((2, 3), keepdim=True)
    contrast = uniform(0.8, 1.2).view(b, 1, 1, 1)
    x = (x - mean) * contrast + mean + uniform(-0.08, 0.08).view(b, 1, 1, 1)
    # > 0 blurs (softer detector / lower resolution), < 0 sharpens (edge-enhancing processing)
    mix = chance(0.4) * uniform(-0.6, 1.0)
    x = x + mix.view(b, 1, 1, 1) * (_gauss_blur(x) - x)
    x = x + chance(0.5).view(b, 1, 1, 1) * uniform(0.0, 0.025).view(b, 1, 1, 1) * torch.randn(
        x.shape, generator=generator
    )
    x = x.clamp(0.0, 1.0).squeeze(1)
    jpeg = chance(0.3)
    quality = torch.randint(25, 91, (b,), generator=generator)
    for i in torch.nonzero(jpeg).flatten().tolist():
        x[i] = _jpeg(x[i], int(quality[i]))
    return x
