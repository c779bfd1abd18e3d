"""Classifier training on a frozen-trunk feature cache (the CPU-budget recipe).

The EfficientNet trunk up to ``cut`` (default: through stage 6, 192 channels at 7x7) is
frozen with its ImageNet statistics; its activations are computed once per view (one clean
view for every image, ``n_aug`` augmented views for training images) and cached. Only the
tail (stage 7, the 1280-channel head conv, the linear head) is trained. On 2 CPU cores this
is ~20x faster than end-to-end training. Smaller ``cut`` values train more of the network
(``cut=0``: everything, on cached normalised images) for users with the compute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from training.augment import augment_gray, normalise
from training.dataset import ClsSplit, source_balanced_weights
from training.models import IMAGENET_MEAN, IMAGENET_STD, features_of, head_of
from training.ort_trunk import ort_function

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameters of one classifier run (recorded in the manifest)."""

    cut: int = 7
    n_aug: int = 2
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    source_power: float = 0.5
    time_budget_s: float = 1e9
    seed: int = 20260228


def trunk_features(
    trunk: nn.Module,
    cache: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    augment_seed: int | None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Frozen-trunk activations (float16) of cache rows ``index``; augmented if a seed is given.

    The trunk runs in ONNX Runtime (:mod:`training.ort_trunk`); augmentation runs in torch.
    """
    run = ort_function(trunk, cache.shape[-1])
    generator = torch.Generator().manual_seed(augment_seed) if augment_seed is not None else None
    outputs = []
    for start in range(0, len(index), batch_size):
        gray = torch.from_numpy(np.asarray(cache[index[start : start + batch_size]]))
        if generator is not None:
            gray = augment_gray(gray, generator)
        outputs.append(
            torch.from_numpy(run(normalise(gray, IMAGENET_MEAN, IMAGENET_STD).numpy())).to(
                torch.float16
            )
        )
    return torch.cat(outputs)


def class_pos_weight(labels: npt.NDArray[np.int64], weights: npt.NDArray[np.float64]) -> float:
    """BCE pos_weight that balances the classes under the sampling weights."""
    pos = float(weights[labels == 1].sum())
    neg = float(weights[labels == 0].sum())
    return neg / max(pos, 1e-9)


def tail_logits(
    tail: nn.Module, head: nn.Module, feats: torch.Tensor, batch_size: int = 256
) -> npt.NDArray[np.float64]:
    """Eval-mode logits [N] of cached trunk features."""
    tail.eval()
    head.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(feats), batch_size):
            out.append(head(tail(feats[start : start + batch_size].float())).squeeze(1))
    return torch.cat(out).double().numpy()


def train_tail(
    model: nn.Module,
    cfg: ClassifierConfig,
    views: list[torch.Tensor],
    train: ClsSplit,
    val_feats: torch.Tensor,
    val: ClsSplit,
) -> list[dict[str, float]]:
    """Train ``model.features[cut:]`` + ``model.classifier`` on cached views; returns the history.

    Each step samples a batch of training images with source-balanced weights and, for each,
    one of its cached views at random. Validation AUROC is logged after every epoch.
    """
    from training.metrics import auroc

    tail = nn.Sequential(*features_of(model)[cfg.cut :], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    head = head_of(model)
    params = list(tail.parameters()) + list(head.parameters())
    weights = source_balanced_weights(train.sources, cfg.source_power)
    pos_weight = torch.tensor(class_pos_weight(train.labels, weights))
    steps_per_epoch = max(1, len(train.labels) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15
    )
    rng = np.random.default_rng(cfg.seed)
    labels = torch.from_numpy(train.labels).float()
    history: list[dict[str, float]] = []
    start = time.monotonic()
    for epoch in range(cfg.epochs):
        tail.train()
        head.train()
        losses = []
        for _ in range(steps_per_epoch):
            idx = rng.choice(len(weights), cfg.batch_size, p=weights)
            view = rng.integers(0, len(views), cfg.batch_size)
            x = torch.stack(
                [views[v][i] for v, i in zip(view.tolist(), idx.tolist(), strict=True)]
            ).float()
            logit = head(tail(x)).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logit, labels[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        val_auc = auroc(val.labels, tail_logits(tail, head, val_feats))
        elapsed = time.monotonic() - start
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_auroc": val_auc,
                "elapsed_s": elapsed,
            }
        )
        LOG.info(
            "epoch %d loss %.4f val AUROC %.4f (%.0f s)",
            epoch + 1,
            np.mean(losses),
            val_auc,
            elapsed,
        )
        if elapsed > cfg.time_budget_s:
            LOG.info("time budget reached")
            break
    return history


@dataclass(frozen=True)
class ClassifierRun:
    """Outputs of :func:`fit_classifier`: weights file, logits per split, history."""

    state_path: Path
    val_logits: npt.NDArray[np.float64]
    test_logits: npt.NDArray[np.float64]
    history: list[dict[str, float]]
    wall_s: float


def fit_classifier(
    model: nn.Module,
    cfg: ClassifierConfig,
    cache: npt.NDArray[np.float32],
    splits: dict[str, ClsSplit],
    out_dir: Path,
) -> ClassifierRun:
    """Cache trunk views, train the tail, save ``classifier.pt`` and val/test logits."""
    torch.manual_seed(cfg.seed)
    start = time.monotonic()
    trunk = features_of(model)[: cfg.cut]
    for p in trunk.parameters():
        p.requires_grad_(False)
    train = splits["train"]
    views = [trunk_features(trunk, cache, train.index, None)]
    views += [
        trunk_features(trunk, cache, train.index, cfg.seed + k) for k in range(1, cfg.n_aug + 1)
    ]
    val_feats = trunk_features(trunk, cache, splits["val"].index, None)
    test_feats = trunk_features(trunk, cache, splits["test"].index, None)
    LOG.info("trunk cache: %d views, %.0f s", len(views), time.monotonic() - start)
    history = train_tail(model, cfg, views, train, val_feats, splits["val"])
    tail = nn.Sequential(*features_of(model)[cfg.cut :], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "classifier.pt"
    torch.save(model.state_dict(), state_path)
    run = ClassifierRun(
        state_path=state_path,
        val_logits=tail_logits(tail, head_of(model), val_feats),
        test_logits=tail_logits(tail, head_of(model), test_feats),
        history=history,
        wall_s=time.monotonic() - start,
    )
    np.savez(out_dir / "classifier_logits.npz", val=run.val_logits, test=run.test_logits)
    return run
