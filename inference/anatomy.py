"""Segmenter post-processing and the derived structures (spine, abdomen).

Predicted structures come from the segmenter's sigmoid channels; the spine and the abdomen have
no public masks to learn from, so they are *derived* from the predicted anatomy with simple,
documented geometry and are always labelled ``derived``:

- spine: a vertical band on the midline between the two lungs' medial borders, from the lung
  apices to the lung bases, as wide as 12 % of the chest (the thoracic vertebrae project there
  behind the mediastinum on a PA/AP view);
- abdomen: everything below the lung bases (the diaphragm line, interpolated between the two
  lungs) inside the chest's lateral extent, minus the heart/mediastinum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from inference.pixels import FloatImage
from inference.preprocess import batch_inputs
from inference.sessions import VerifiedModel

BoolMask = npt.NDArray[np.bool_]
Provenance = Literal["predicted", "derived"]
SPINE_WIDTH_FRACTION = 0.12


@dataclass(frozen=True)
class Structure:
    name: str
    mask: BoolMask
    provenance: Provenance

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


@dataclass(frozen=True)
class Anatomy:
    """Masks at the uploaded image's size, in a fixed order."""

    structures: tuple[Structure, ...]

    def mask(self, name: str) -> BoolMask:
        for s in self.structures:
            if s.name == name:
                return s.mask
        raise KeyError(name)


def _bbox(mask: BoolMask) -> tuple[slice, slice] | None:
    """Bounding box of a mask's True pixels (row/column projections: ~20x cheaper than
    ``ndimage.find_objects`` on a 2048 px mask), or None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def largest_components(mask: BoolMask, keep: int = 1) -> BoolMask:
    """Keep the ``keep`` largest 8-connected components (drops speckles the net leaves around).

    Labelling runs inside the mask's bounding box only, which is what keeps full-resolution
    post-processing cheap on large uploads.
    """
    box = _bbox(mask)
    if box is None:
        return mask
    crop = mask[box]
    labels, count = ndimage.label(crop, structure=np.ones((3, 3), dtype=bool))
    if count <= keep:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    winners = np.argsort(sizes)[::-1][:keep] + 1
    lookup = np.zeros(count + 1, dtype=bool)
    lookup[winners] = True
    out = np.zeros_like(mask)
    out[box] = lookup[labels]
    return out


def fill_holes(mask: BoolMask) -> BoolMask:
    """Fill every background region not connected (4-neighbourhood) to the image border.

    Equivalent to ``scipy.ndimage.binary_fill_holes`` but one labelling pass of the background
    inside the mask's bounding box instead of an iterated dilation over the whole image.
    """
    box = _bbox(mask)
    if box is None:
        return mask
    crop = np.pad(mask[box], 1)  # the padding ring is background connected to the outside
    background, _ = ndimage.label(~crop)
    filled = background != background[0, 0]
    out = mask.copy()
    out[box] = filled[1:-1, 1:-1]
    return out


def _span(first: int, stop: int, scale: float, size: int) -> tuple[int, int]:
    """Output pixels [a, b) whose bilinear sample can reach source pixels [first, stop).

    Output pixel ``i`` is centred at source coordinate ``(i + 0.5) * scale`` and reads source
    pixels within ``max(scale, 1)`` of it (PIL widens the kernel when shrinking); one pixel of
    margin on each side covers rounding.
    """
    support = max(scale, 1.0)
    a = int(np.floor((first + 0.5 - support) / scale - 0.5)) - 1
    b = int(np.ceil((stop - 0.5 + support) / scale - 0.5)) + 2
    return max(a, 0), min(b, size)


def upsampled_positive(channel: npt.NDArray[np.float32], height: int, width: int) -> BoolMask:
    """``resize(channel, height, width) > 0`` (bilinear), resampled only where it can be > 0.

    Bilinear weights are non-negative, so an output pixel is positive only near a positive
    input pixel: the logits are resized inside the (margin-grown) box of the positive ones,
    with PIL's ``box`` argument, which samples exactly as the full-image resize does.
    """
    out = np.zeros((height, width), dtype=bool)
    box = _bbox(channel > 0)
    if box is None:
        return out
    sy, sx = channel.shape[0] / height, channel.shape[1] / width
    y0, y1 = _span(box[0].start, box[0].stop, sy, height)
    x0, x1 = _span(box[1].start, box[1].stop, sx, width)
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
    crop = img.resize(
        (x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    )
    out[y0:y1, x0:x1] = np.asarray(crop, dtype=np.float32) > 0
    return out


def masks_from_logits(logits: npt.NDArray[np.float32], height: int, width: int) -> list[BoolMask]:
    """[K, S, S] logits -> K boolean masks at [height, width].

    The logits (not masks) are resized bilinearly to the upload's size and thresholded at 0
    (sigmoid 0.5), so borders are as smooth as the network's output at any size; each
    structure then keeps its largest connected component (one lung is one region) with its
    holes filled. All three steps run inside the structure's bounding box only.
    """
    return [
        fill_holes(largest_components(upsampled_positive(channel, height, width)))
        for channel in logits
    ]


def _rows_cols(mask: BoolMask) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows, cols


def derive_spine(right: BoolMask, left: BoolMask) -> BoolMask:
    """Midline band between the lungs (image-left lung is the patient's right)."""
    spine = np.zeros_like(right)
    if not right.any() or not left.any():
        return spine
    r_rows, r_cols = _rows_cols(right)
    l_rows, l_cols = _rows_cols(left)
    top, bottom = min(r_rows[0], l_rows[0]), max(r_rows[-1], l_rows[-1])
    medial_right, medial_left = r_cols[-1], l_cols[0]  # inner borders
    center = (medial_right + medial_left) / 2.0
    chest_width = max(l_cols[-1] - r_cols[0], 1)
    half = max(SPINE_WIDTH_FRACTION * chest_width / 2.0, 1.0)
    x0, x1 = int(round(center - half)), int(round(center + half))
    spine[top : bottom + 1, max(x0, 0) : max(x1, 0) + 1] = True
    return spine


def _base_points(
    lung: BoolMask, lowest_fraction: float = 0.6
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Columns and rows of a lung's lower border that belong to the diaphragm.

    A column's lowest lung pixel counts only when it lies in the lower part of that lung: the
    apex curving over the mediastinum and the cardiac notch also have "lowest pixels", high up,
    and must not pull the diaphragm line into the chest.
    """
    rows, cols = _rows_cols(lung)
    top, height = rows[0], rows[-1] - rows[0] + 1
    lowest = lung.shape[0] - 1 - np.argmax(lung[::-1, cols], axis=0)
    keep = lowest >= top + lowest_fraction * height
    return cols[keep], lowest[keep]


def derive_abdomen(right: BoolMask, left: BoolMask, heart: BoolMask) -> BoolMask:
    """Region below the diaphragm line, within the chest's lateral extent, minus the heart."""
    abdomen = np.zeros_like(right)
    if not right.any() or not left.any():
        return abdomen
    r_cols, r_low = _base_points(right)
    l_cols, l_low = _base_points(left)
    cols = np.concatenate([r_cols, l_cols])
    lows = np.concatenate([r_low, l_low])
    order = np.argsort(cols)
    xs = np.arange(cols.min(), cols.max() + 1)
    # Between the two domes (under the heart) the line is interpolated linearly.
    base = np.interp(xs, cols[order], lows[order]).astype(int)
    rows = np.arange(abdomen.shape[0])[:, None]
    abdomen[:, xs] = rows > base[None, :]
    return abdomen & ~heart


def build_anatomy(masks: dict[str, BoolMask]) -> Anatomy:
    right, left = masks["right_lung"], masks["left_lung"]
    heart = masks["heart_mediastinum"]
    predicted = tuple(Structure(name, m, "predicted") for name, m in masks.items())
    derived = (
        Structure("spine", derive_spine(right, left), "derived"),
        Structure("abdomen", derive_abdomen(right, left, heart), "derived"),
    )
    return Anatomy(structures=predicted + derived)


def segment(model: VerifiedModel, image: FloatImage) -> Anatomy:
    """Segment one grayscale [0, 1] radiograph; masks come back at its own size."""
    batch = batch_inputs([image], model.manifest.input_spec)
    logits = model.run(batch, ("logits",))["logits"][0]
    height, width = image.shape
    masks = masks_from_logits(logits, height, width)
    by_name = dict(zip(model.manifest.labels, masks, strict=True))
    return build_anatomy(by_name)
