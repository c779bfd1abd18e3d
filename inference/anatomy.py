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

    @property
    def lungs(self) -> BoolMask:
        return self.mask("right_lung") | self.mask("left_lung")


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def largest_components(mask: BoolMask, keep: int = 1) -> BoolMask:
    """Keep the ``keep`` largest 8-connected components (drops speckles the net leaves around)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= keep:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    winners = np.argsort(sizes)[::-1][:keep] + 1
    return np.isin(labels, winners)


def masks_from_logits(logits: npt.NDArray[np.float32], height: int, width: int) -> list[BoolMask]:
    """[K, S, S] logits -> K boolean masks at [height, width] (probabilities resized, then > 0.5)."""
    probs = _sigmoid(logits)
    masks = []
    for channel in probs:
        full = resize_gray(channel, width, height) > 0.5
        masks.append(ndimage.binary_fill_holes(largest_components(full)))
    return masks


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


def derive_abdomen(right: BoolMask, left: BoolMask, heart: BoolMask) -> BoolMask:
    """Region below the diaphragm line, within the chest's lateral extent, minus the heart."""
    lungs = right | left
    abdomen = np.zeros_like(lungs)
    if not right.any() or not left.any():
        return abdomen
    height = lungs.shape[0]
    cols = np.flatnonzero(lungs.any(axis=0))
    x0, x1 = cols[0], cols[-1]
    xs = np.arange(x0, x1 + 1)
    has = lungs[:, xs].any(axis=0)
    # Lowest lung pixel per column; interpolate across the mediastinum where no lung is present.
    lowest = np.where(has, height - 1 - np.argmax(lungs[::-1, xs], axis=0), 0)
    base = np.interp(xs, xs[has], lowest[has]).astype(int)
    rows = np.arange(height)[:, None]
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
