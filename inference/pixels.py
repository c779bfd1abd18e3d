"""Small pixel helpers shared by the decoders."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]


def stretch_to_unit(values: npt.NDArray[np.floating], low_pct: float = 0.5, high_pct: float = 99.5) -> FloatImage:
    """Robust min-max window to [0, 1] for data without a display window.

    Percentiles (not the raw extremes) so that a few hot or dead detector pixels, burned-in
    markers or padding do not flatten the anatomy's contrast.
    """
    arr = np.asarray(values, dtype=np.float32)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    out = (np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
