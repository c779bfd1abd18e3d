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
from scipy import ndimage

from inference.pixels import FloatImage
from inference.preprocess import batch_inputs, resize_gray
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


def largest_components(mask: BoolMask, keep: int = 1) -> BoolMask:
    """Keep the ``keep`` largest 8-connected components (drops speckles the net leaves around).

    Labelling runs inside the mask's bounding box only, which is what keeps full-resolution
    post-processing cheap on large uploads.
    """
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box:
        return mask
    crop = mask[box[0]]
    labels, count = ndimage.label(crop, structure=np.ones((3, 3), dtype=bool))
    if count <= keep:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    winners = np.argsort(sizes)[::-1][:keep] + 1
    out = np.zeros_like(mask)
    out[box[0]] = np.isin(labels, winners)
    return out


def fill_holes(mask: BoolMask) -> BoolMask:
    """Fill every background region not connected (4-neighbourhood) to the image border.

    Equivalent to ``scipy.ndimage.binary_fill_holes`` but one labelling pass of the background
    inside the mask's bounding box instead of an iterated dilation over the whole image.
    """
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box:
        return mask
    crop = np.pad(mask[box[0]], 1)  # the padding ring is background connected to the outside
    background, _ = ndimage.label(~crop)
    filled = background != background[0, 0]
    out = mask.copy()
    out[box[0]] = filled[1:-1, 1:-1]
    return out


def masks_from_logits(logits: npt.NDArray[np.float32], height: int, width: int) -> list[BoolMask]:
    """[K, S, S] logits -> K boolean masks at [height, width].

    The logits (not masks) are resized bilinearly to the upload's size and thresholded at 0
    (sigmoid 0.5), so borders are as smooth as the network's output at any size; each
    structure then keeps its largest connected component (one lung is one region) with its
    holes filled.
    """
    return [
        fill_holes(largest_components(resize_gray(channel, width, height) > 0))
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
