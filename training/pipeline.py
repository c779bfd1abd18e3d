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

from training.dataset import SegSplit, cls_split, seg_split
from training.evaluate import calibrate, per_source_metrics, population_points
from training.export import export_classifier, export_segmenter, write_manifest
from training.finetune import FinetuneConfig, FinetuneRun, finetune, predict_logits
from training.manifests import classifier_manifest, segmenter_manifest
from training.models import ClassifierInit, build_classifier
from training.seg_eval import evaluate_segmenter, onnx_predictor
from training.segmenter import SegmenterConfig, build_segmenter, fit_segmenter
from training.tailtune import TailConfig, train_tail

LOG = logging.getLogger(__name__)
VERSION = "2.1.0"  # tail recipe at cut 6 (stage 6 trained too): won LOSO (issue 9)
# DeepLabV3+: decoder on the frozen trunk, then end-to-end fine-tuning (issue 9); 2.2.0: 900
# end-to-end batches instead of 300
SEGMENTER_VERSION = "2.2.0"


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
    cfg: FinetuneConfig,
    command: str,
) -> dict[str, Any]:
    """Fine-tune end to end, calibrate, evaluate and export; returns the manifest's ``extra``."""
    table = cache_dir / "images.csv"
    train_cache = np.load(cache_dir / "cls256u8.npy", mmap_mode="r")
    eval_cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    model = build_classifier(ClassifierInit(cfg.init))
    run = finetune(model, cfg, train_cache, cls_split(table, "train"), work / "classifier")
    torch.save(model.state_dict(), work / "classifier" / "classifier.pt")
    logits = {
        s: predict_logits(model, eval_cache, cls_split(table, s).index) for s in ("val", "test")
    }
    np.savez(work / "classifier" / "classifier_logits.npz", **logits)
    return finalize_classifier(model, run, logits, table, weights, cfg, command, work)


def run_classifier_tail(
    cache_dir: Path,
    work: Path,
    weights: Path,
    cfg: TailConfig,
    command: str,
) -> dict[str, Any]:
    """The CPU recipe (:mod:`training.tailtune`): cached lower trunk, upper blocks trained.

    Validation/test logits are recomputed from the exported ONNX graph on the serving input
    cache, so the manifest's metrics are those of the shipped file.
    """
    from training.loso import trunk_for

    table = cache_dir / "images.csv"
    trunk = trunk_for(cache_dir, work, cfg.base.init, cfg)
    model = build_classifier(ClassifierInit(cfg.base.init))
    run = train_tail(model, cfg, trunk)
    out = work / "classifier"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "classifier.pt")
    export_classifier(model.eval(), weights / "classifier.onnx", gate_cut=cfg.cut)
    eval_cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    logits = {
        s: onnx_logits(weights / "classifier.onnx", eval_cache, cls_split(table, s).index)
        for s in ("val", "test")
    }
    np.savez(out / "classifier_logits.npz", **logits)
    augmented = [int(ok.sum()) for ok in trunk.valid[1:]]
    frun = FinetuneRun(
        run.history, run.wall_s, run.sampler | {"augmented_rows": augmented}, run.steps
    )
    return finalize_classifier(
        model, frun, logits, table, weights, cfg.base, command, work, cfg.as_dict()
    )


def onnx_logits(
    path: Path, cache: np.ndarray, index: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """``logit`` of the exported classifier on rows of the float32 224 px cache (serving path)."""
    import onnxruntime as ort

    from training.augment import normalise
    from training.models import IMAGENET_MEAN, IMAGENET_STD

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = []
    for s in range(0, len(index), batch_size):
        gray = torch.from_numpy(np.asarray(cache[index[s : s + batch_size]]))
        x = normalise(gray, IMAGENET_MEAN, IMAGENET_STD).numpy()
        out.append(session.run(["logit"], {"image": x})[0][:, 0])
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def finalize_classifier(
    model: torch.nn.Module,
    run: FinetuneRun,
    logits: dict[str, np.ndarray],
    table: Path,
    weights: Path,
    cfg: FinetuneConfig,
    command: str,
    work: Path,
    config_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate on validation, evaluate on test, export ONNX and write the manifest.

    One temperature (validation NLL); operating thresholds and borderline bands per population
    on validation (:func:`training.evaluate.population_points`). The top-level ``threshold`` is
    the adult one (older readers see the adult decision).
    """
    splits = {s: cls_split(table, s) for s in ("val", "test")}
    cal = calibrate(splits["val"], logits["val"])
    points = population_points(splits["val"], logits["val"], cal.temperature)
    metrics = {
        "validation": per_source_metrics(splits["val"], logits["val"], cal, cfg.seed, points),
        "test": per_source_metrics(splits["test"], logits["test"], cal, cfg.seed, points),
    }
    if config_record is None:
        export_classifier(model.eval(), weights / "classifier.onnx")
    init = ClassifierInit(cfg.init)
    extra = {
        "architecture": "efficientnet-lite0" if init is ClassifierInit.LITE0 else "efficientnet-b0",
        "init": init.value,
        "recipe": "end-to-end fine-tuning, discriminative learning rates (training.finetune)"
        if config_record is None
        else f"lower trunk (features[:{config_record['cut']}]) frozen and cached, upper "
        "blocks + head trained with discriminative learning rates (training.tailtune)",
        "metrics": metrics,
        "calibration": asdict(cal),
        "youden_threshold": cal.youden_threshold,
        "operating_point": "per population: sensitivity >= 0.90 on validation (screening), "
        "on sigmoid(logit / temperature); top-level threshold = adult",
        "operating_points_validation": points,
        "sampler": run.sampler,
        "training_config": config_record or asdict(cfg),
        "training_history": run.history,
        "training_wall_s": run.wall_s,
        "training_command": command,
        "seed": cfg.seed,
        "training_data": training_summary(table),
        "preprocessing": "PIL 'L' / 255 -> inference.preprocess.to_model_input "
        "(bilinear 224x224, x3, ImageNet mean/std)",
    }
    loso = weights / "loso.json"
    if loso.exists():
        extra["architecture_choice"] = architecture_choice(
            json.loads(loso.read_text(encoding="utf-8")), init.value
        )
    manifest = classifier_manifest(
        VERSION,
        cal.temperature,
        points["adult"]["threshold"],
        extra,
        gate_features=config_record is not None,  # the tail export adds it (frozen trunk)
    )
    manifest |= operating_points_block(points)
    write_manifest(weights / "classifier.manifest.json", manifest)
    _json(work / "classifier_metrics.json", extra)
    return extra


def operating_points_block(points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``operating_points`` / ``default_population`` (schema: the gate's)."""
    return {
        "operating_points": {
            pop: {"threshold": p["threshold"], "band": p["band"], "basis": p["basis"]}
            for pop, p in points.items()
        },
        "default_population": "adult",
    }


def architecture_choice(loso: dict[str, Any], chosen: str) -> dict[str, Any]:
    """The LOSO evidence behind the shipped architecture (rendered by the model card)."""
    paired = loso.get("paired", [])
    inits = sorted({r["init"] for r in loso.get("runs", [])})
    return {
        "chosen": chosen,
        "criterion": "ship EfficientNet-B0 (the design card's architecture) unless it is "
        "measurably worse than Lite0 on leave-one-source-out AUROC: the paired bootstrap 95 % "
        "CI of AUROC(B0) - AUROC(Lite0) lies entirely below 0 on any fold",
        "compared": inits,
        "paired": paired,
        "note": ""
        if paired
        else "not compared in this build: only "
        + ", ".join(inits)
        + " was run through LOSO (CPU budget); the shipped architecture is unchanged",
    }


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


def reexport_classifier(cache_dir: Path, work: Path, weights: Path, command: str) -> dict[str, Any]:
    """Re-export ``weights/classifier.onnx`` from its checkpoint (``work/classifier/
    classifier.pt``) with the current graph: a tail-recipe classifier gains ``gate_features``.

    The weights are the same, so the manifest's metrics, calibration and operating points stay;
    this is checked, not assumed: the new graph's validation and test logits (serving input
    cache) must match the logits the metrics were computed from (``classifier_logits.npz``)
    within 1e-3. Outputs, an ``export`` record and the sha256 are updated.
    """
    path = weights / "classifier.manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    cut = manifest["extra"].get("training_config", {}).get("cut")
    if not isinstance(cut, int):
        raise ValueError("reexport: not a tail-recipe classifier (no training_config.cut)")
    model = build_classifier(ClassifierInit(manifest["extra"]["init"]))
    model.load_state_dict(
        torch.load(work / "classifier" / "classifier.pt", map_location="cpu", weights_only=True)
    )
    new = weights / "classifier.onnx.new"
    export_classifier(model.eval(), new, gate_cut=cut)
    table = cache_dir / "images.csv"
    recorded = np.load(work / "classifier" / "classifier_logits.npz")
    eval_cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    parity = {}
    for s in ("val", "test"):
        logits = onnx_logits(new, eval_cache, cls_split(table, s).index)
        parity[s] = float(np.abs(logits - recorded[s]).max())
    if max(parity.values()) > 1e-3:
        new.unlink()
        raise ValueError(f"reexport: logits differ from the recorded ones: {parity}")
    new.replace(weights / "classifier.onnx")
    manifest["outputs"] = manifest["outputs"] | {"gate_features": "gate_features"}
    manifest["extra"]["export"] = {
        "command": command,
        "checkpoint": str(work / "classifier" / "classifier.pt"),
        "gate_cut": cut,
        "logit_parity_max_abs": parity,
        "note": "re-exported with the gate_features output; weights, metrics, calibration and "
        "operating points unchanged (logits checked against the recorded ones)",
    }
    write_manifest(path, manifest)
    return manifest["extra"]["export"]  # type: ignore[no-any-return]
