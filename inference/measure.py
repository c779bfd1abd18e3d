"""Measurements on the segmentation masks: cardiothoracic ratio (CTR) and lung areas.

Definitions (bool [H, W] masks at one image size; the patient's right lung is on the image
left of a PA/AP radiograph):

- heart width: the widest horizontal extent of the heart/mediastinum mask over all rows
  (rightmost minus leftmost heart pixel + 1, maximised over rows);
- thoracic width: the widest internal thoracic width, measured per row between the lungs'
  outer borders (the right lung's leftmost pixel to the left lung's rightmost pixel), over the
  rows where both lungs are present;
- CTR = heart width / thoracic width. Normal below 0.5 on an adult PA film.

The CTR is flagged unreliable (``notes``) when the masks are implausible: a missing lung or
heart, a heart not sitting between the lungs in the lower chest, a CTR outside 0.3-0.75 (no
plausible film), or lungs so unequal in area (ratio outside 0.5-2) that one outline is
probably wrong; and on an AP view, which magnifies the heart. Areas are pixel counts of the
masks; only their shares and ratio are reported (no pixel spacing is assumed).

Validated against CTRs from the human JSRT/SCR heart and lung masks: bench/bench_ctr.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolMask = npt.NDArray[np.bool_]
CTR_PLAUSIBLE = (0.3, 0.75)
LUNG_RATIO_PLAUSIBLE = (0.5, 2.0)


@dataclass(frozen=True)
class ChestMeasurements:
    """ctr: None when not measurable; reliable: see the module docstring; notes: why not.

    right_share / left_share: each lung's share of the total lung area, None without both
    lungs; lung_ratio: right / left area.
    """

    ctr: float | None
    heart_width_px: int
    thoracic_width_px: int
    reliable: bool
    notes: tuple[str, ...]
    right_lung_px: int
    left_lung_px: int
    right_share: float | None
    left_share: float | None
    lung_ratio: float | None


def _max_row_width(mask: BoolMask) -> int:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    return int((last - first + 1).max())


def thoracic_width(right: BoolMask, left: BoolMask) -> int:
    """Widest distance between the lungs' outer borders on rows holding both lungs."""
    rows = np.flatnonzero(right.any(axis=1) & left.any(axis=1))
    if rows.size == 0:
        return 0
    r, le = right[rows], left[rows]
    outer_right = np.argmax(r, axis=1)  # the patient's right lung's lateral border (image left)
    outer_left = le.shape[1] - 1 - np.argmax(le[:, ::-1], axis=1)
    return int((outer_left - outer_right + 1).max())


def _heart_placement_ok(right: BoolMask, left: BoolMask, heart: BoolMask) -> bool:
    """The heart's centre lies between the lungs' outer borders, in the lower chest half."""
    lungs = right | left
    cols = np.flatnonzero(lungs.any(axis=0))
    rows = np.flatnonzero(lungs.any(axis=1))
    h_rows, h_cols = np.nonzero(heart)
    centre_col, bottom = float(h_cols.mean()), int(h_rows.max())
    mid_chest = rows[0] + 0.5 * (rows[-1] - rows[0])
    return bool(cols[0] < centre_col < cols[-1] and bottom > mid_chest)


def measure_chest(
    right: BoolMask, left: BoolMask, heart: BoolMask, view: str | None = None
) -> ChestMeasurements:
    """CTR and lung areas from the three masks (see the module docstring)."""
    n_right, n_left = int(right.sum()), int(left.sum())
    total = n_right + n_left
    both = n_right > 0 and n_left > 0
    right_share = n_right / total if both else None
    left_share = n_left / total if both else None
    ratio = n_right / n_left if both else None
    notes: list[str] = []
    if not both:
        notes.append("lung_missing")
    if not heart.any():
        notes.append("heart_missing")
    heart_w = _max_row_width(heart)
    thorax_w = thoracic_width(right, left) if both else 0
    ctr = heart_w / thorax_w if notes == [] and thorax_w > 0 else None
    if ctr is not None:
        if not _heart_placement_ok(right, left, heart):
            notes.append("heart_outside_chest")
        if not CTR_PLAUSIBLE[0] <= ctr <= CTR_PLAUSIBLE[1]:
            notes.append("implausible_ctr")
        if ratio is not None and not LUNG_RATIO_PLAUSIBLE[0] <= ratio <= LUNG_RATIO_PLAUSIBLE[1]:
            notes.append("unequal_lungs")
        if view is not None and view.upper() == "AP":
            notes.append("ap_view")
    if ctr is not None:
        ctr = min(1.0, ctr)
    return ChestMeasurements(
        ctr=ctr,
        heart_width_px=heart_w,
        thoracic_width_px=thorax_w,
        reliable=ctr is not None and not notes,
        notes=tuple(notes),
        right_lung_px=n_right,
        left_lung_px=n_left,
        right_share=right_share,
        left_share=left_share,
        lung_ratio=ratio,
    )
