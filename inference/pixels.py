"""Small pixel helpers shared by the decoders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]

# Elements per block for element-wise float64 maths: the temporaries stay at ~8 MB each instead
# of several full-image float64 copies (a 40 MP image made ~1 GB of them; hostile input H11 asks
# RSS delta <= 256 MB for an image just under the pixel budget).
BLOCK_ELEMENTS = 1 << 20


Elementwise = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


def blockwise(values: npt.NDArray[Any], fn: Elementwise) -> FloatImage:
    """``fn(values).astype(float32)`` computed over flat blocks, same shape as ``values``.

    ``fn`` must be element-wise; the result is bit-identical to applying it to the whole array
    (same dtypes, same operations), only the temporaries are smaller.
    """
    flat = np.ravel(values)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        stop = start + BLOCK_ELEMENTS
        out[start:stop] = fn(flat[start:stop])
    return out.reshape(np.shape(values))


def stretch_to_unit(
    values: npt.NDArray[np.floating], low_pct: float = 0.5, high_pct: float = 99.5
) -> FloatImage:
    """Robust min-max window to [0, 1] for data without a display window.

    Percentiles (not the raw extremes) so that a few hot or dead detector pixels, burned-in
    markers or padding do not flatten the anatomy's contrast.
    """
    arr = np.asarray(values, dtype=np.float32)
    finite_mask = np.isfinite(arr)
    all_finite = bool(finite_mask.all())
    # No masked copy when every value is finite (the usual case): percentile copies once anyway.
    finite = arr if all_finite else arr[finite_mask]
    del finite_mask
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)

    def scale(block: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        if not all_finite:
            block = np.nan_to_num(block, nan=lo, posinf=hi, neginf=lo)
        scaled: npt.NDArray[np.generic] = np.clip((block - lo) / (hi - lo), 0.0, 1.0)
        return scaled

    return blockwise(arr, scale)
