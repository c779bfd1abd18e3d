"""PNG encoding of masks and the anatomy overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from inference.anatomy import Anatomy, BoolMask
from inference.pixels import FloatImage

# RGB per structure; derived structures are drawn as outlines only so that they never read as
# model output.
COLOURS: dict[str, tuple[int, int, int]] = {
    "right_lung": (0, 200, 255),
    "left_lung": (0, 255, 120),
    "heart_mediastinum": (255, 60, 60),
    "spine": (255, 220, 0),
    "abdomen": (200, 120, 255),
}
_FILL_ALPHA = 0.30


def encode_png(arr: np.ndarray, *, optimize: bool = False) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=optimize, compress_level=6)
    return buf.getvalue()


def mask_png(mask: BoolMask) -> bytes:
    """A 1-bit PNG (0 = outside, 1 = inside) at the mask's size; tiny even for large images."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _outline(mask: BoolMask, width: int) -> BoolMask:
    return mask & ~ndimage.binary_erosion(mask, iterations=width)


def anatomy_overlay(image: FloatImage, anatomy: Anatomy) -> bytes:
    """RGB PNG of the radiograph with predicted structures filled and every structure outlined."""
    base = np.repeat((np.clip(image, 0, 1) * 255.0)[..., None], 3, axis=2).astype(np.float32)
    line = max(1, round(min(image.shape) / 256))
    for s in anatomy.structures:
        colour = np.asarray(COLOURS.get(s.name, (255, 255, 255)), dtype=np.float32)
        if s.provenance == "predicted":
            base[s.mask] = (1 - _FILL_ALPHA) * base[s.mask] + _FILL_ALPHA * colour
        base[_outline(s.mask, line)] = colour
    return encode_png(base.astype(np.uint8))
