"""In-process segmentation time: shipped segmenter vs a baseline, model run and post-processing.

    python bench/bench_segment.py --baseline DIR [--weights weights] [--rounds 5] [--threads 2]

``DIR`` holds an earlier ``segmenter.onnx`` + ``segmenter.manifest.json`` (e.g. extracted with
``git show <rev>:weights/segmenter.onnx``). For each of a few real radiographs from
``../shared/data/cxr`` (native size, and upscaled to 2048 px, the size of a full-resolution
DICOM), measures interleaved, median over rounds: ``InferenceSession.run`` of each model
(service session options), the current post-processing
(:func:`inference.anatomy.masks_from_logits`: logits upsampled to the upload, largest
component, holes filled) and the previous one (clean-up at 256 px, then a resized probability
map; copied below), and the whole :func:`inference.anatomy.segment`. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.anatomy import largest_components, masks_from_logits, segment  # noqa: E402
from inference.preprocess import batch_inputs, resize_gray  # noqa: E402
from inference.sessions import RuntimeOptions, VerifiedModel, load_verified_model  # noqa: E402
from training.prepare import load_gray  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cxr" / "images"
IMAGES = ("jsrt/JPCLN001.jpg", "nih/00000061_012.jpg", "covidqu", "kermany")


def previous_masks_from_logits(logits: np.ndarray, height: int, width: int) -> list[np.ndarray]:
    """Post-processing of segmenter 1.0.0 (for the timing comparison only)."""
    probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
    masks = []
    for channel in probs.astype(np.float32):
        keep = ndimage.binary_fill_holes(largest_components(channel > 0.5))
        cleaned = np.where(keep, np.maximum(channel, 0.5 + 1e-3), np.minimum(channel, 0.5 - 1e-3))
        masks.append(resize_gray(cleaned.astype(np.float32), width, height) > 0.5)
    return masks


def _pick(rel: str) -> Path:
    path = DATA / rel
    return path if path.is_file() else sorted(path.glob("*.jpg"))[0]


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    options = RuntimeOptions(intra_op_threads=args.threads)
    models: dict[str, VerifiedModel] = {
        "shipped": load_verified_model(args.weights / "segmenter.manifest.json", options),
        "baseline": load_verified_model(args.baseline / "segmenter.manifest.json", options),
    }
    rows: dict[str, list[float]] = {}
    for rel in IMAGES:
        native = load_gray(_pick(rel))
        for label, image in (("native", native), ("2048", resize_gray(native, 2048, 2048))):
            h, w = image.shape
            for name, model in models.items():
                batch = batch_inputs([image], model.manifest.input_spec)
                logits = model.run(batch, ("logits",))["logits"][0]
                runs = {
                    f"{name} model run": lambda m=model, b=batch: m.run(b, ("logits",)),
                    f"{name} segment() total ({label})": lambda m=model, i=image: segment(m, i),
                }
                if name == "shipped":
                    runs[f"post-processing now ({label})"] = partial(
                        masks_from_logits, logits, h, w
                    )
                    runs[f"post-processing 1.0.0 ({label})"] = partial(
                        previous_masks_from_logits, logits, h, w
                    )
                for key, fn in runs.items():
                    fn()  # warm-up
                    rows.setdefault(key, []).append(_median_ms(fn, args.rounds))
    print("| step | median over images (ms) | max (ms) |")
    print("|---|---|---|")
    for key, values in rows.items():
        print(f"| {key} | {statistics.median(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
