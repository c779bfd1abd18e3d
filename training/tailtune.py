"""Classifier recipe for a busy CPU: ImageNet trunk below ``cut`` run once per view in ONNX
Runtime, every block from ``cut`` up trained with discriminative learning rates.

Measured on the shared 2-core machine (bench/bench_train_step.py, see the model card):
end-to-end training of Lite0 ran at ~0.5-1.4 images/s, while ONNX Runtime evaluates the frozen
lower trunk ~10-20x faster than eager PyTorch. So the lower stages (``features[:cut]``) are
evaluated once per image and view and cached on disk (float16), and the upper blocks
(``features[cut:]``: by default stages 6-7 and the 1280-channel head conv) plus the linear
head are trained on the cache with :mod:`training.finetune`'s sampler and learning-rate
layout. Augmented views come from :func:`training.augment.site_augment`; the clean view is the
serving input. The cache covers every labelled image (all splits), so leave-one-source-out
folds reuse it and differ only in which rows train the upper blocks.
``training.finetune`` (all stages trained) is the recipe for a machine with the compute.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from training.adapters import finding_type
from training.augment import normalise, site_augment
from training.dataset import ClsSplit
from training.finetune import FinetuneConfig, _schedule, draw_batch, sampling_weights
from training.models import IMAGENET_MEAN, IMAGENET_STD, features_of, head_of
from training.ort_trunk import ort_function

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailConfig:
    """The cached-trunk recipe: ``base`` carries lr, sampler and seed; ``cut`` and views here."""

    base: FinetuneConfig
    cut: int = 6
    n_aug: int = 1
    aug_budget_s: float = 1e9  # augmented views stop here (rows without one use the clean view)

    def as_dict(self) -> dict[str, Any]:
        return {"cut": self.cut, "n_aug": self.n_aug, "aug_budget_s": self.aug_budget_s} | asdict(
            self.base
        )


@dataclass(frozen=True)
class TrunkCache:
    """Lower-trunk activations (float16) of every row of ``rows``: view 0 clean, 1.. augmented.

    Augmented views are filled for training rows only, and only as far as the time budget
    allowed: ``valid[v]`` marks the rows whose view ``v`` exists (others are never read).
    """

    rows: ClsSplit
    splits: npt.NDArray[np.str_]
    views: list[npt.NDArray[np.float16]]
    valid: list[npt.NDArray[np.bool_]]


def build_trunk_cache(
    model: nn.Module,
    cut: int,
    n_aug: int,
    rows: ClsSplit,
    splits: npt.NDArray[np.str_],
    cache224: npt.NDArray[np.float32],
    cache_u8: npt.NDArray[np.uint8],
    out_dir: Path,
    seed: int,
    batch_size: int = 32,
    aug_budget_s: float = 1e9,
) -> TrunkCache:
    """Compute (or reuse, batch by batch, after an interruption) the views under ``out_dir``."""
    trunk = features_of(model)[:cut]
    run = ort_function(trunk, 224)
    shape = run(np.zeros((1, 3, 224, 224), np.float32)).shape[1:]
    out_dir.mkdir(parents=True, exist_ok=True)
    views = []
    for v in range(n_aug + 1):
        path = out_dir / f"view{v}.npy"
        mode = "r+" if path.exists() else "w+"
        views.append(np.lib.format.open_memmap(path, mode, np.float16, (len(rows.labels), *shape)))
    done_path = out_dir / "done.npy"
    done = np.load(done_path) if done_path.exists() else np.zeros((n_aug + 1, 0), dtype=bool)
    if done.shape != (n_aug + 1, math.ceil(len(rows.labels) / batch_size)):
        done = np.zeros((n_aug + 1, math.ceil(len(rows.labels) / batch_size)), dtype=bool)
    start = time.monotonic()
    count = 0
    for v in range(n_aug + 1):
        # augmented views visit batches in a seeded random order: a partial (time-budgeted)
        # view then covers every source, not the first rows of the table
        order = (
            np.arange(done.shape[1])
            if v == 0
            else np.random.default_rng(seed + v).permutation(done.shape[1])
        )
        for b in order.tolist():
            sl = slice(b * batch_size, (b + 1) * batch_size)
            # augmented views only for training rows; one generator per batch keeps a resumed
            # cache equal to an uninterrupted one
            if done[v, b] or (v > 0 and not (splits[sl] == "train").any()):
                continue
            if v > 0 and time.monotonic() - start > aug_budget_s:
                break
            if v == 0:
                gray = torch.from_numpy(np.asarray(cache224[rows.index[sl]]))
            else:
                gen = torch.Generator().manual_seed(seed + 100_003 * v + b)
                u8 = cache_u8[rows.index[sl]].astype(np.float32) / 255.0
                gray = site_augment(torch.from_numpy(u8), gen, 224)
            x = normalise(gray, IMAGENET_MEAN, IMAGENET_STD).numpy()
            views[v][sl] = run(x).astype(np.float16)
            done[v, b] = True
            count += len(x)
            if b % 20 == 0:
                views[v].flush()
                np.save(done_path, done)
                LOG.info(
                    "trunk view %d batch %d/%d (%.1f img/s)",
                    v,
                    b,
                    done.shape[1],
                    count / (time.monotonic() - start),
                )
        views[v].flush()
        np.save(done_path, done)
    final = [np.load(out_dir / f"view{v}.npy", mmap_mode="r") for v in range(n_aug + 1)]
    valid = [np.repeat(done[v], batch_size)[: len(rows.labels)] for v in range(n_aug + 1)]
    valid = [ok & (splits == "train") if v else ok for v, ok in enumerate(valid)]
    LOG.info("augmented rows per view: %s", [int(ok.sum()) for ok in valid[1:]])
    return TrunkCache(rows, splits, final, valid)


def derive_trunk_cache(
    model: nn.Module, lower: TrunkCache, from_cut: int, to_cut: int, out_dir: Path
) -> TrunkCache:
    """Views at ``to_cut`` from a finished cache at ``from_cut`` (ORT on the blocks between).

    Lets a run move the frozen/trained boundary up without re-running the expensive lower
    stages (the measured tail-training speed decides where the boundary can be). The rows
    derived are recorded (``valid.npy``): augmented rows the lower cache gains later (a new
    time-budgeted pass) are not in the derived views and stay invalid there.
    """
    run = ort_function(features_of(model)[from_cut:to_cut], tuple(lower.views[0].shape[1:]))
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / "derived.done"
    valid_path = out_dir / "valid.npy"
    if marker.exists() and valid_path.exists():
        derived = np.load(valid_path)
        valid = [derived[v] & ok for v, ok in enumerate(lower.valid)]
    else:
        valid = lower.valid
    if not marker.exists():
        for v, src in enumerate(lower.views):
            rows = np.flatnonzero(lower.valid[v])
            probe = run(np.asarray(src[:1], dtype=np.float32))
            dst = np.lib.format.open_memmap(
                out_dir / f"view{v}.npy", "w+", np.float16, (len(src), *probe.shape[1:])
            )
            for s in range(0, len(rows), 64):
                part = rows[s : s + 64]
                dst[part] = run(np.asarray(src[part], dtype=np.float32)).astype(np.float16)
            dst.flush()
            LOG.info("derived view %d at cut %d", v, to_cut)
        np.save(valid_path, np.stack(lower.valid))
        marker.touch()
    views = [np.load(out_dir / f"view{v}.npy", mmap_mode="r") for v in range(len(lower.views))]
    return TrunkCache(lower.rows, lower.splits, views, valid)


def tail_of(model: nn.Module, cut: int) -> nn.Sequential:
    return nn.Sequential(*features_of(model)[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _groups(model: nn.Module, cut: int, lr: float, decay: float) -> list[dict[str, Any]]:
    blocks = list(features_of(model))[cut:]
    groups = [{"params": list(head_of(model).parameters()), "lr": lr}]
    for depth, block in enumerate(reversed(blocks), start=1):
        groups.append({"params": list(block.parameters()), "lr": lr * decay**depth})
    return groups


def tail_logits(
    model: nn.Module, cut: int, feats: npt.NDArray[np.float16], batch_size: int = 256
) -> npt.NDArray[np.float64]:
    """Eval-mode logits [N] of cached lower-trunk activations."""
    tail, head = tail_of(model, cut), head_of(model)
    tail.eval()
    head.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(feats), batch_size):
            x = torch.from_numpy(np.asarray(feats[s : s + batch_size], dtype=np.float32))
            out.append(head(tail(x)).squeeze(1))
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@dataclass(frozen=True)
class TailRun:
    history: list[dict[str, float]]
    wall_s: float
    sampler: dict[str, Any]
    steps: int


def train_tail(
    model: nn.Module,
    cfg: TailConfig,
    trunk: TrunkCache,
    exclude: tuple[str, ...] = (),
) -> TailRun:
    """Train the upper blocks + head on the training rows of ``trunk`` minus ``exclude``."""
    base = cfg.base
    torch.manual_seed(base.seed)
    families = np.array(
        [
            finding_type(int(y), f)
            for y, f in zip(trunk.rows.labels, trunk.rows.findings, strict=True)
        ]
    )
    train_pos = np.flatnonzero(
        (trunk.splits == "train")
        & ~np.isin(trunk.rows.sources, list(exclude))
        & ~np.isin(families, list(base.exclude_families))
    )
    train = trunk.rows.subset(train_pos)
    sampler = sampling_weights(train, base)
    tail, head = tail_of(model, cfg.cut), head_of(model)
    for p in features_of(model)[: cfg.cut].parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(
        _groups(model, cfg.cut, base.lr, base.layer_decay), weight_decay=base.weight_decay
    )
    total, warmup = base.total_steps, max(1, int(base.warmup_frac * base.total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    rng = np.random.default_rng(base.seed)
    labels = torch.from_numpy(train.labels).float()
    frac = sampler.shares["positive_fraction"]
    pos_weight = torch.tensor((1.0 - frac) / max(frac, 1e-9))
    steps_per_epoch = max(1, total // base.epochs)
    history: list[dict[str, float]] = []
    losses: list[float] = []
    start = time.monotonic()
    tail.train()
    head.train()
    for step in range(1, total + 1):
        rows = draw_batch(sampler, rng, base.batch_size)
        view = rng.integers(0, len(trunk.views), base.batch_size)
        view = np.where(
            [trunk.valid[v][train_pos[r]] for v, r in zip(view, rows, strict=True)], view, 0
        )
        x = torch.from_numpy(
            np.stack(
                [
                    np.asarray(trunk.views[v][train_pos[r]], dtype=np.float32)
                    for v, r in zip(view.tolist(), rows.tolist(), strict=True)
                ]
            )
        )
        logit = head(tail(x)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, labels[rows], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % steps_per_epoch == 0:
            history.append(
                {
                    "epoch": step / steps_per_epoch,
                    "loss": float(np.mean(losses)),
                    "elapsed_s": time.monotonic() - start,
                }
            )
            LOG.info("%s", history[-1])
            losses = []
        if time.monotonic() - start > base.time_budget_s:
            LOG.info("time budget reached at step %d/%d", step, total)
            break
    tail.eval()
    head.eval()
    return TailRun(history, time.monotonic() - start, sampler.shares, step)


def with_base(cfg: TailConfig, **changes: Any) -> TailConfig:
    return replace(cfg, base=replace(cfg.base, **changes))
