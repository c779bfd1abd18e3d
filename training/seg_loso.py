"""``python -m training seg-loso``: the segmenter recipe trained without one mask source and
scored on that source's images (issue 9: lung Dice at hospitals the model has never seen).

The internal test split's Dice comes from the same sources, annotators and mask conventions as
training; an unseen hospital brings its own. Holding a source out of training (its shares
redistributed over the others by :func:`training.segmenter.source_share_weights`) and scoring
every one of its images estimates that. ``covidseg`` draws ieee8023's pictures, so the two
are held out together. The shipped model is scored on the held-out source's internal test
images beside the held-out model on the same images: the difference is what having the source
in training buys.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.dataset import SegSplit, seg_split
from training.segmenter import SegmenterConfig, build_segmenter, fit_segmenter

LOG = logging.getLogger(__name__)

# fold name -> mask sources held out together (covidseg re-draws ieee8023 pictures)
FOLDS: dict[str, tuple[str, ...]] = {
    "jsrt": ("jsrt",),
    "covidqu": ("covidqu",),
    "kermany": ("kermany",),
    "ieee8023": ("ieee8023", "covidseg"),
}


def select(split: SegSplit, sources: tuple[str, ...], keep: bool) -> SegSplit:
    """Rows of ``split`` whose source is (``keep``) or is not (not ``keep``) in ``sources``."""
    mask = np.isin(split.sources, sources) == keep
    return SegSplit(
        split.index[mask],
        split.sources[mask],
        tuple(im for im, m in zip(split.images, mask, strict=True) if m) if split.images else (),
    )


def concat(splits: list[SegSplit]) -> SegSplit:
    return SegSplit(
        np.concatenate([s.index for s in splits]),
        np.concatenate([s.sources for s in splits]),
        tuple(im for s in splits for im in s.images),
    )


def fold_config(cfg: SegmenterConfig, held: tuple[str, ...]) -> SegmenterConfig:
    """The recipe's source shares without the held-out sources (their share goes to none)."""
    shares = tuple((s, w) for s, w in cfg.source_shares if s not in held)
    if not shares:
        raise ValueError(f"seg-loso: holding out {held} leaves no training source")
    return replace(cfg, source_shares=shares)


def run_fold(
    fold: str,
    cfg: SegmenterConfig,
    cache_dir: Path,
    work: Path,
    weights: Path,
    trained: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the fold (or, with ``trained``, the fold's earlier row, re-score the model it
    saved: e.g. after a cache fix that does not touch the training images) and score it."""
    from training.seg_eval import evaluate_segmenter, onnx_predictor, torch_predictor

    held = FOLDS[fold]
    table = cache_dir / "images.csv"
    images = np.load(cache_dir / "seg256.npy", mmap_mode="r")
    targets = np.load(cache_dir / "seg_targets.npy", mmap_mode="r")
    splits = {s: seg_split(table, s) for s in ("train", "val", "test")}
    train = select(splits["train"], held, keep=False)
    scored_all = concat([select(splits[s], held, keep=True) for s in splits])
    scored_test = select(splits["test"], held, keep=True)
    fcfg = fold_config(cfg, held)
    model = build_segmenter(aspp_channels=fcfg.aspp_channels)
    start = time.monotonic()
    out_dir = work / "seg_loso" / fold
    if trained is None:
        _, wall, steps = fit_segmenter(model, fcfg, images, targets, train, out_dir)
    else:
        # compared as stored: JSON turns the config's tuples into lists
        same = trained["config"] == json.loads(json.dumps(asdict(fcfg)))
        if not same or trained["train_images"] != len(train.index):
            raise SystemExit(f"seg-loso: fold {fold} was trained with another recipe or split")
        model.load_state_dict(torch.load(out_dir / "segmenter.pt", map_location="cpu"))
        wall, steps = float(trained["wall_s"]), int(trained["finetune_steps_run"])
    held_out = torch_predictor(model)
    shipped = onnx_predictor(weights / "segmenter.onnx")
    return {
        "fold": fold,
        "held_out": list(held),
        "train_images": len(train.index),
        "finetune_steps_run": steps,
        "wall_s": wall,
        "config": asdict(fcfg),
        "held_out_model": {
            "all": evaluate_segmenter(held_out, images, targets, scored_all),
            "test": evaluate_segmenter(held_out, images, targets, scored_test),
        },
        "shipped_model_test": evaluate_segmenter(shipped, images, targets, scored_test),
        "eval_s": time.monotonic() - start - wall,
    }


def run_seg_loso(
    cache_dir: Path,
    work: Path,
    weights: Path,
    cfg: SegmenterConfig,
    folds: list[str],
    command: str,
    evaluate_only: bool = False,
) -> Path:
    """Run the folds (a fold already in ``weights/seg_loso.json`` is replaced); write the file.
    ``evaluate_only`` re-scores each fold's saved model instead of training it."""
    manifest = json.loads((weights / "segmenter.manifest.json").read_text(encoding="utf-8"))
    out = weights / "seg_loso.json"
    doc: dict[str, Any] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"folds": []}
    )
    for fold in folds:
        if fold not in FOLDS:
            raise SystemExit(f"seg-loso: unknown fold {fold!r} (one of {', '.join(FOLDS)})")
        earlier = next((f for f in doc["folds"] if f["fold"] == fold), None)
        if evaluate_only and earlier is None:
            raise SystemExit(f"seg-loso: no trained fold {fold!r} to re-score")
        row = run_fold(fold, cfg, cache_dir, work, weights, earlier if evaluate_only else None)
        row["command"] = earlier["command"] if evaluate_only and earlier else command
        if evaluate_only:
            row["rescored_by"] = command
        row["shipped"] = f"{manifest['name']} {manifest['version']}"
        row["shipped_sha256"] = manifest["sha256"]
        doc["folds"] = [f for f in doc["folds"] if f["fold"] != fold] + [row]
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        LOG.info("seg-loso: fold %s written to %s", fold, out)
    return out
