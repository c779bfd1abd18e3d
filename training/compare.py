"""Equal-budget comparisons on the same split: classifier initialisations and architectures.

Both write JSON under ``work/compare/`` that the model card renders.

* Initialisations (:func:`compare_inits`): the production protocol (frozen trunk cached through
  stage 6, tail trained) for each :class:`ClassifierInit` available here, on the same training
  images, same epochs; ranked by validation AUROC.
* Architectures (:func:`compare_architectures`): EfficientNet-B0, MobileNetV3-Large, ResNet50,
  DenseNet121 from random initialisation (no ImageNet weights for them exist on this machine),
  trained end to end for the same wall-clock budget at 128 px on a source-balanced subset;
  parameters, forward FLOPs at 224 px, ONNX Runtime CPU latency (batch 1, 1 thread, 224 px),
  validation AUROC.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models

from training.augment import augment_gray, normalise
from training.classifier import ClassifierConfig, fit_classifier
from training.dataset import ClsSplit, cls_split, source_balanced_weights
from training.metrics import auroc
from training.models import IMAGENET_MEAN, IMAGENET_STD, ClassifierInit, build_classifier

LOG = logging.getLogger(__name__)


def _subset(split: ClsSplit, n: int, seed: int) -> ClsSplit:
    if len(split.labels) <= n:
        return split
    rng = np.random.default_rng(seed)
    keep = np.sort(
        rng.choice(len(split.labels), n, replace=False, p=source_balanced_weights(split.sources))
    )
    return ClsSplit(
        split.index[keep],
        split.labels[keep],
        split.sources[keep],
        tuple(split.images[i] for i in keep),
        tuple(split.findings[i] for i in keep),
    )


def compare_inits(
    cache_dir: Path, work: Path, seed: int, budget_s: float, n_train: int = 1000
) -> list[dict[str, Any]]:
    """Validation AUROC of each available initialisation under the production protocol."""
    table = cache_dir / "images.csv"
    cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    val = cls_split(table, "val")
    # fit_classifier also scores a "test" split; a handful of validation rows keeps that cheap
    # (the test split is not looked at while choosing the initialisation).
    probe = ClsSplit(
        val.index[:8], val.labels[:8], val.sources[:8], val.images[:8], val.findings[:8]
    )
    splits = {"train": _subset(cls_split(table, "train"), n_train, seed), "val": val, "test": probe}
    rows = []
    for init in (ClassifierInit.RANDOM, ClassifierInit.LITE0_TRANSPLANT, ClassifierInit.LITE0):
        cfg = replace(ClassifierConfig(seed=seed), n_aug=0, epochs=3, time_budget_s=budget_s)
        run = fit_classifier(
            build_classifier(init), cfg, cache, splits, work / "compare" / f"init-{init.value}"
        )
        rows.append(
            {
                "init": init.value,
                "val_auroc": auroc(splits["val"].labels, run.val_logits),
                "n_train": len(splits["train"].labels),
                "epochs": len(run.history),
                "wall_s": run.wall_s,
            }
        )
        LOG.info("init %s: %s", init.value, rows[-1])
    _write(work / "compare" / "inits.json", rows)
    return rows


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _architectures() -> dict[str, nn.Module]:
    return {
        "EfficientNet-B0": models.efficientnet_b0(num_classes=1),
        "MobileNetV3-Large": models.mobilenet_v3_large(num_classes=1),
        "ResNet50": models.resnet50(num_classes=1),
        "DenseNet121": models.densenet121(num_classes=1),
    }


def model_cost(model: nn.Module, size: int = 224) -> dict[str, float]:
    """Parameters and forward FLOPs at ``size`` (FLOPs = 2 x multiply-accumulates)."""
    model.eval()
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops_224": counter.get_total_flops() / 1e9,
    }


def ort_latencies(
    nets: dict[str, nn.Module], size: int = 224, repeats: int = 15
) -> dict[str, float]:
    """Median ONNX Runtime CPU latency (ms; batch 1, 1 thread) per model.

    Runs are interleaved across models so that the load of a shared machine hits all of them
    alike (measured back to back, the same network varied 3-4x here with other jobs running).
    """
    feed = {"image": np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)}
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, net) in enumerate(nets.items()):
            path = Path(tmp) / f"{i}.onnx"
            torch.onnx.export(
                net.eval(),
                (torch.zeros(1, 3, size, size),),
                str(path),
                input_names=["image"],
                output_names=["logit"],
                opset_version=17,
                dynamo=False,
            )
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            sessions[name] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            sessions[name].run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def _train_budget(
    model: nn.Module,
    cache: np.ndarray,
    train: ClsSplit,
    val: ClsSplit,
    size: int,
    budget_s: float,
    seed: int,
) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    weights = source_balanced_weights(train.sources)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    pos = float(weights[train.labels == 0].sum() / weights[train.labels == 1].sum())
    start, steps = time.monotonic(), 0
    model.train()
    while time.monotonic() - start < budget_s:
        idx = np.sort(rng.choice(len(weights), 32, p=weights))
        gray = augment_gray(torch.from_numpy(np.asarray(cache[train.index[idx]])), gen)
        gray = F.interpolate(
            gray.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False
        ).squeeze(1)
        logit = model(normalise(gray, IMAGENET_MEAN, IMAGENET_STD)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(
            logit, torch.from_numpy(train.labels[idx]).float(), pos_weight=torch.tensor(pos)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    logits = []
    with torch.no_grad():
        for s in range(0, len(val.index), 64):
            gray = torch.from_numpy(np.asarray(cache[val.index[s : s + 64]]))
            gray = F.interpolate(
                gray.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False
            ).squeeze(1)
            logits.append(model(normalise(gray, IMAGENET_MEAN, IMAGENET_STD)).squeeze(1))
    return {
        "val_auroc": auroc(val.labels, torch.cat(logits).numpy()),
        "train_steps": steps,
        "train_images_seen": steps * 32,
    }


def compare_architectures(
    cache_dir: Path, work: Path, seed: int, budget_s: float, size: int = 128
) -> list[dict[str, Any]]:
    """Equal wall-clock budget, random init, ``size`` px; see the module docstring."""
    table = cache_dir / "images.csv"
    cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    train, val = cls_split(table, "train"), cls_split(table, "val")
    rows = []
    for name, model in _architectures().items():
        row: dict[str, Any] = {
            "architecture": name,
            "init": "random",
            "train_px": size,
            "budget_s": budget_s,
        }
        row |= _train_budget(model, cache, train, val, size, budget_s, seed)
        row |= model_cost(model)
        rows.append(row)
        LOG.info("%s", row)
        _write(work / "compare" / "architectures.json", rows)
    return rows


def shipped_row(weights: Path) -> dict[str, Any]:
    """Cost and validation AUROC of the shipped classifier, as a comparison-table row."""
    from training.models import classifier_architecture

    manifest = json.loads((weights / "classifier.manifest.json").read_text(encoding="utf-8"))
    extra = manifest["extra"]
    cfg = extra["training_config"]
    n_train = sum(v["n"] for v in extra["training_data"]["train"]["classification"].values())
    row: dict[str, Any] = {
        "architecture": f"{extra['architecture']} (shipped)",
        "init": f"{extra['init']} (ImageNet), frozen trunk",
        "train_px": 224,
        "budget_s": extra["training_wall_s"],
        "val_auroc": extra["metrics"]["validation"]["all"]["auroc"],
        "train_steps": 0,
        "train_images_seen": cfg["epochs"] * n_train,
    }
    net = classifier_architecture(extra["architecture"])
    return row | model_cost(net) | {"ort_latency_ms": ort_latencies({"shipped": net})["shipped"]}


def architecture_by_name(name: str) -> nn.Module:
    """Untrained network of a comparison row (for latency only)."""
    nets = _architectures()
    if name in nets:
        return nets[name]
    from training.models import classifier_architecture

    return classifier_architecture(name.removesuffix(" (shipped)"))
