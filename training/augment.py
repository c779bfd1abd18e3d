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
