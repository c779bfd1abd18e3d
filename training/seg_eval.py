"""Segmenter evaluation: Dice per structure per source (masks at the 256x256 training grid)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt
from torchvision.models.segmentation import DeepLabV3

from training.dataset import SegSplit
from training.metrics import dice
from training.prepare import IGNORE, SEG_CHANNELS
from training.segmenter import _Tail, cached_trunk, predict_cached


def evaluate_segmenter(
    model: DeepLabV3,
    cut: int,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    split: SegSplit,
    size: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """{source: {structure: {"dice": mean, "n": count}}}; predictions are sigmoid > 0.5.

    A structure is scored on an image only where the source labels it on the whole image;
    "lungs" (union of both lungs) is scored for every source.
    """
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tail = _Tail(model, cut, size)
    for start in range(0, len(split.index), 64):
        rows = split.index[start : start + 64]
        pred = predict_cached(tail, cached_trunk(model, cut, images, rows)).numpy() > 0
        tgt = np.asarray(targets[rows])
        for k, source in enumerate(split.sources[start : start + 64]):
            union = pred[k, 0] | pred[k, 1]
            for c, name in enumerate(SEG_CHANNELS):
                if (tgt[k, c] == IGNORE).any():
                    continue
                scores[str(source)][name].append(
                    dice(union if c == 3 else pred[k, c], tgt[k, c] == 1)
                )
    return {
        src: {name: {"dice": float(np.mean(v)), "n": len(v)} for name, v in per.items()}
        for src, per in scores.items()
    }
