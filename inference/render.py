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


def encode_png(arr: np.ndarray, *, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def radiograph_png(image: FloatImage, max_side: int | None = None) -> bytes:
    """8-bit grayscale PNG of the radiograph as the models see it (windowed, MONOCHROME2).

    image: float32 [H, W] in [0, 1]. With ``max_side`` the longer side is reduced to at most that
    many pixels (area averaging, aspect ratio kept); never enlarged.
    """
    gray = Image.fromarray((np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8))
    if max_side is not None and max(gray.size) > max_side:
        scale = max_side / max(gray.size)
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
    buf = io.BytesIO()
    gray.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def mask_png(mask: BoolMask) -> bytes:
    """A 1-bit PNG (0 = outside, 1 = inside) at the mask's size; tiny even for large images."""
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return buf.getvalue()


def _outline(mask: BoolMask, width: int) -> BoolMask:
    """Border pixels of ``mask``, ``width`` pixels thick.

    A 4-neighbour edge test followed by a separable maximum filter: linear in the pixel count,
    unlike iterated binary erosion, which dominated /segment time on multi-megapixel uploads.
    """
    edge = np.zeros_like(mask)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    if width > 1:
        edge = ndimage.maximum_filter(edge, size=width)
    return edge & mask


def _bbox(mask: BoolMask, pad: int) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)),
    )


def anatomy_overlay(image: FloatImage, anatomy: Anatomy) -> bytes:
    """RGB PNG of the radiograph with predicted structures filled and every structure outlined."""
    gray = (np.clip(image, 0, 1) * 255.0).astype(np.uint8)
    base = np.repeat(gray[..., None], 3, axis=2)
    line = max(1, round(min(image.shape) / 256))
    keep = round(256 * (1 - _FILL_ALPHA))
    for s in anatomy.structures:
        box = _bbox(s.mask, pad=line)
        if box is None:
            continue
        mask, view = s.mask[box], base[box]  # work on the structure's bounding box only
        colour = np.asarray(COLOURS.get(s.name, (255, 255, 255)), dtype=np.uint16)
        if s.provenance == "predicted":
            # Integer alpha blend on the masked pixels only (uint16 to avoid overflow).
            inside = view[mask].astype(np.uint16)
            view[mask] = ((inside * keep + colour * (256 - keep)) >> 8).astype(np.uint8)
        view[_outline(mask, line)] = colour.astype(np.uint8)
    # Fast compression: the overlay is a preview, and level 6 tripled its encode time.
    return encode_png(base, compress_level=1)
