"""Pure pre-processing shared by serving and training.

Training imports these functions too, so the tensor a model sees in production is
bit-for-bit the tensor it was trained and validated on (the export parity test relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input: square side, per-channel normalisation, channel count.

    The grayscale radiograph in [0, 1] is resized (aspect ratio not kept: radiographs are close
    to square and both models were trained this way), replicated to ``channels`` and normalised
    as ``(x - mean[c]) / std[c]``.
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3


def resize_gray(pixels: FloatImage, width: int, height: int) -> FloatImage:
    """Bilinear resize of a float32 [H, W] image (any range) to [height, width]."""
    if pixels.shape == (height, width):
        return pixels.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def to_model_input(pixels: FloatImage, spec: InputSpec) -> FloatImage:
    """Grayscale float32 [H, W] in [0, 1] -> float32 [channels, size, size], normalised."""
    small = resize_gray(pixels, spec.size, spec.size)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    stacked = np.broadcast_to(small, (spec.channels, spec.size, spec.size))
    return ((stacked - mean) / std).astype(np.float32)


def batch_inputs(images: list[FloatImage], spec: InputSpec) -> FloatImage:
    """Stack several radiographs into one float32 [N, C, S, S] batch."""
    return np.stack([to_model_input(img, spec) for img in images]).astype(np.float32)
