"""Segmenter evaluation: Dice and 95 % Hausdorff distance per structure per source.

Masks are scored at the 256x256 training grid after the serving post-processing
(:func:`inference.anatomy.masks_from_logits`: largest component per structure, holes filled),
so the numbers describe what ``/segment`` returns. Any model that maps a batch of normalised
inputs to logits can be scored (the torch model being trained, or a shipped ONNX file).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from inference.anatomy import masks_from_logits
from training.augment import normalise
from training.dataset import SegSplit
from training.metrics import dice
from training.models import IMAGENET_MEAN, IMAGENET_STD
from training.prepare import IGNORE, SEG_CHANNELS

Predictor = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
BoolMask = npt.NDArray[np.bool_]


def _surface(mask: BoolMask) -> BoolMask:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: BoolMask, target: BoolMask) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels (MONAI's definition).

    The larger of the two directed 95th percentiles of boundary-to-boundary distances. 0 when
    both masks are empty; the image diagonal (the worst possible value) when only one is.
    """
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return float(np.hypot(*pred.shape))
    sp, st = _surface(pred), _surface(target)
    to_target = ndimage.distance_transform_edt(~st)[sp]
    to_pred = ndimage.distance_transform_edt(~sp)[st]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def onnx_predictor(path: Path, threads: int = 2) -> Predictor:
    """Logits of an exported segmenter (input ``image``, output ``logits``) through ORT."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: np.asarray(session.run(["logits"], {"image": x})[0], dtype=np.float32)


def torch_predictor(model: torch.nn.Module) -> Predictor:
    """Logits of a torch segmenter (``model(x)["out"]``) in eval mode."""
    model.eval()

    def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return model(torch.from_numpy(x))["out"].numpy()

    return predict


def _normalised(gray: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return normalise(torch.from_numpy(gray), IMAGENET_MEAN, IMAGENET_STD).numpy()


def _summary(values: dict[str, list[float]], diagonal: float) -> dict[str, float]:
    d, h = np.asarray(values["dice"]), np.asarray(values["hd95"])
    return {
        "dice": float(d.mean()),
        "hd95_px": float(h.mean()),
        "hd95_pct_diag": float(100.0 * h.mean() / diagonal),
        "hd95_px_median": float(np.median(h)),
        "n": len(d),
    }


def evaluate_segmenter(
    predict: Predictor,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    split: SegSplit,
) -> dict[str, dict[str, dict[str, float]]]:
    """{source: {structure: {dice, hd95_px, hd95_pct_diag, hd95_px_median, n}}} (means).

    A structure is scored on an image only where the source labels it on the whole image;
    "lungs" (union of both lung masks) is scored for every source. HD95 is in pixels of the
    256x256 grid and as % of its diagonal (362 px).
    """
    scores: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    size = images.shape[-1]
    for start in range(0, len(split.index), 32):
        rows = split.index[start : start + 32]
        logits = predict(_normalised(np.asarray(images[rows])))
        tgt = np.asarray(targets[rows])
        for k, source in enumerate(split.sources[start : start + 32]):
            right, left, heart = masks_from_logits(logits[k], size, size)
            preds = (right, left, heart, right | left)
            for c, name in enumerate(SEG_CHANNELS):
                if (tgt[k, c] == IGNORE).any():
                    continue
                truth = tgt[k, c] == 1
                scores[str(source)][name]["dice"].append(dice(preds[c], truth))
                scores[str(source)][name]["hd95"].append(hd95(preds[c], truth))
    diagonal = float(np.hypot(size, size))
    return {
        src: {name: _summary(v, diagonal) for name, v in per.items()} for src, per in scores.items()
    }
