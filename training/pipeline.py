"""End-to-end retraining: prepare -> classifier -> segmenter -> evaluation -> export -> card.

Every step reads/writes under ``work`` (scratch, gitignored ``runs/``) and ``weights``
(shipped artifacts). Seeds are fixed; see ``python -m training --help``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.classifier import ClassifierConfig, ClassifierRun, fit_classifier
from training.dataset import SegSplit, cls_split, seg_split
from training.evaluate import calibrate, per_source_metrics
from training.export import export_classifier, export_segmenter, write_manifest
from training.manifests import classifier_manifest, segmenter_manifest
from training.models import ClassifierInit, build_classifier
from training.seg_eval import evaluate_segmenter, onnx_predictor
from training.segmenter import SegmenterConfig, build_segmenter, fit_segmenter

LOG = logging.getLogger(__name__)
VERSION = "1.0.0"
SEGMENTER_VERSION = "2.0.0"  # DeepLabV3+ with a decoder (issue 9)


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def training_summary(table: Path) -> dict[str, Any]:
    """Counts per split/source/label of the kept classification rows and of the mask images."""
    summary: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        cls = cls_split(table, split)
        seg = seg_split(table, split)
        summary[split] = {
            "classification": {
                str(s): {
                    "n": int((cls.sources == s).sum()),
                    "positive": int(cls.labels[cls.sources == s].sum()),
                }
                for s in np.unique(cls.sources)
            },
            "segmentation": {str(s): int((seg.sources == s).sum()) for s in np.unique(seg.sources)},
        }
    return summary


def run_classifier(
    cache_dir: Path,
    work: Path,
    weights: Path,
    init: ClassifierInit,
    cfg: ClassifierConfig,
    command: str,
) -> dict[str, Any]:
    """Train, calibrate, evaluate and export the classifier; returns the manifest's ``extra``."""
    table = cache_dir / "images.csv"
    splits = {s: cls_split(table, s) for s in ("train", "val", "test")}
    cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    model = build_classifier(init)
    run = fit_classifier(model, cfg, cache, splits, work / "classifier")
    return finalize_classifier(model, run, table, weights, init, cfg, command, work)


def finalize_classifier(
    model: torch.nn.Module,
    run: ClassifierRun,
    table: Path,
    weights: Path,
    init: ClassifierInit,
    cfg: ClassifierConfig,
    command: str,
    work: Path,
) -> dict[str, Any]:
    """Calibrate on validation, evaluate on test, export ONNX and write the manifest."""
    splits = {s: cls_split(table, s) for s in ("val", "test")}
    cal = calibrate(splits["val"], run.val_logits)
    metrics = {
        "validation": per_source_metrics(splits["val"], run.val_logits, cal, cfg.seed),
        "test": per_source_metrics(splits["test"], run.test_logits, cal, cfg.seed),
    }
    export_classifier(model.eval(), weights / "classifier.onnx")
    extra = {
        "architecture": "efficientnet-lite0" if init is ClassifierInit.LITE0 else "efficientnet-b0",
        "init": init.value,
        "metrics": metrics,
        "calibration": asdict(cal),
        "youden_threshold": cal.youden_threshold,
        "operating_point": "sensitivity >= 0.90 on validation (screening), "
        "on sigmoid(logit / temperature)",
        "training_config": asdict(cfg),
        "training_history": run.history,
        "training_wall_s": run.wall_s,
        "training_command": command,
        "seed": cfg.seed,
        "training_data": training_summary(table),
        "preprocessing": "PIL 'L' / 255 -> inference.preprocess.to_model_input "
        "(bilinear 224x224, x3, ImageNet mean/std)",
    }
    comparison = weights / "init_comparison.json"
    if comparison.exists():
        extra["init_choice"] = {
            "chosen": init.value,
            "criterion": "validation AUROC, production protocol (python -m training init-compare)",
            "comparison": json.loads(comparison.read_text(encoding="utf-8")),
        }
    write_manifest(
        weights / "classifier.manifest.json",
        classifier_manifest(VERSION, cal.temperature, cal.threshold, extra),
    )
    _json(work / "classifier_metrics.json", extra)
    return extra


def run_segmenter(
    cache_dir: Path, work: Path, weights: Path, cfg: SegmenterConfig, size: int, command: str
) -> dict[str, Any]:
    """Train, evaluate (Dice and HD95 per structure per source) and export the segmenter."""
    table = cache_dir / "images.csv"
    images = np.load(cache_dir / "seg256.npy", mmap_mode="r")
    targets = np.load(cache_dir / "seg_targets.npy", mmap_mode="r")
    model = build_segmenter(aspp_channels=cfg.aspp_channels)
    train, val = seg_split(table, "train"), seg_split(table, "val")
    monitor = SegSplit(val.index[val.sources == "jsrt"], val.sources[val.sources == "jsrt"], ())
    _, wall, steps = fit_segmenter(model, cfg, images, targets, train, work / "segmenter", monitor)
    return finalize_segmenter(model, cfg, wall, steps, cache_dir, work, weights, size, command)


def previous_segmenter(
    weights: Path,
    images: np.ndarray,
    targets: np.ndarray,
    splits: dict[str, SegSplit],
    work: Path,
) -> dict[str, Any] | None:
    """The segmenter about to be replaced, scored like the new one (for the comparison table).

    A manifest written by this pipeline already carries its own ``previous`` block (kept, so a
    rerun keeps comparing against the same earlier model); an older manifest is evaluated now
    (result kept in ``work/segmenter/previous_<sha256>.json``, so it can be computed while
    the new model trains).
    """
    path = weights / "segmenter.manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    extra = manifest.get("extra", {})
    if "previous" in extra:
        return dict(extra["previous"])
    cached = work / "segmenter" / f"previous_{manifest['sha256']}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text(encoding="utf-8")))
    predict = onnx_predictor(weights / manifest["file"])
    result = {
        "architecture": extra.get("architecture", "unknown"),
        "version": manifest.get("version"),
        "sha256": manifest.get("sha256"),
        "metrics": {
            name: evaluate_segmenter(predict, images, targets, split)
            for name, split in splits.items()
        },
    }
    _json(cached, result)
    return result


def finalize_segmenter(
    model: torch.nn.Module,
    cfg: SegmenterConfig,
    wall: float,
    finetune_steps: int,
    cache_dir: Path,
    work: Path,
    weights: Path,
    size: int,
    command: str,
) -> dict[str, Any]:
    """Evaluate (Dice, HD95 per structure per source), export ONNX and write the manifest."""
    table = cache_dir / "images.csv"
    images = np.load(cache_dir / "seg256.npy", mmap_mode="r")
    targets = np.load(cache_dir / "seg_targets.npy", mmap_mode="r")
    splits = {split: seg_split(table, split) for split in ("val", "test")}
    previous = previous_segmenter(weights, images, targets, splits, work)
    export_segmenter(model, size, weights / "segmenter.onnx")
    predict = onnx_predictor(weights / "segmenter.onnx")  # scores the shipped file itself
    metrics = {
        name: evaluate_segmenter(predict, images, targets, split) for name, split in splits.items()
    }
    extra = {
        "architecture": "DeepLabV3+ (ASPP rates 3/6/9 at output stride 16 + stride-4 decoder) "
        "on EfficientNet-Lite0 stages 0-6; decoder trained on the frozen trunk, "
        "then the whole network fine-tuned end to end",
        "decoder": True,
        "aspp_rates": [3, 6, 9],
        "labels_note": "right_lung = patient's right = image left on PA/AP; "
        "heart_mediastinum is trained on "
        "JSRT/SCR 'heart' and covidseg 'cardiomediastinum' masks",
        "metrics_dice": metrics,
        "metrics_note": "256x256 grid after the serving post-processing (largest component, "
        "holes filled); hd95 in pixels of that grid and in % of its diagonal",
        "aspp_channels": cfg.aspp_channels,
        "training_config": asdict(cfg),
        "training_wall_s": wall,
        "finetune_steps_run": finetune_steps,
        "training_command": command,
        "seed": cfg.seed,
        "loss": "partial-label BCE + soft Dice; unlabelled structures ignored per source; "
        "lungs-only masks supervise the union",
    }
    if previous is not None:
        extra["previous"] = previous
    write_manifest(
        weights / "segmenter.manifest.json", segmenter_manifest(SEGMENTER_VERSION, size, extra)
    )
    _json(work / "segmenter_metrics.json", extra)
    return extra
