"""End-to-end fine-tuning of the classifier (the recipe since issue 9), CPU-first.

Every stage of the ImageNet-initialised EfficientNet is trained, with discriminative learning
rates: the head gets ``lr``, each trunk block below it ``layer_decay`` times its upper
neighbour's rate (the stem ends at ~4 % of the head's rate), so generic low-level filters move
least. Images come from the uint8 256 px cache (no JPEG decoding per epoch) through
:func:`training.augment.site_augment`. Batches are drawn by :func:`sampling_weights`: a fixed
number of adult images in every batch, sources weighted by count ** 0.5 within a population,
and no source or finding family above ``max_positive_share`` of the positives. Training
checkpoints every ``checkpoint_every`` steps and resumes from the checkpoint when the config
matches.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from training.adapters import ADULT, PEDIATRIC, finding_type
from training.augment import normalise, site_augment
from training.dataset import ClsSplit
from training.models import IMAGENET_MEAN, IMAGENET_STD, features_of, head_of

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one end-to-end run (recorded in the manifest)."""

    init: str = "b0-lite0-transplant"
    size: int = 224
    epochs: int = 3
    samples_per_epoch: int = 4096
    batch_size: int = 32
    lr: float = 1e-3
    layer_decay: float = 0.7
    weight_decay: float = 1e-5
    warmup_frac: float = 0.1
    adult_share: float = 0.6
    max_positive_share: float = 0.45
    source_power: float = 0.5
    exclude_sources: tuple[str, ...] = ()
    # finding families left out of training (e.g. "covid": positives from other hospitals than
    # the adult normals, a site shortcut); evaluation is unaffected
    exclude_families: tuple[str, ...] = ()
    checkpoint_every: int = 25
    time_budget_s: float = 1e9
    seed: int = 20260228

    @property
    def total_steps(self) -> int:
        return self.epochs * max(1, self.samples_per_epoch // self.batch_size)


@dataclass(frozen=True)
class Sampler:
    """Per-population sampling distributions and the shares they give (for the manifest)."""

    adult_index: npt.NDArray[np.int64]
    adult_p: npt.NDArray[np.float64]
    pediatric_index: npt.NDArray[np.int64]
    pediatric_p: npt.NDArray[np.float64]
    adult_per_batch: int
    shares: dict[str, Any]


def _source_weights(sources: npt.NDArray[np.str_], power: float) -> npt.NDArray[np.float64]:
    _, inverse, counts = np.unique(sources, return_inverse=True, return_counts=True)
    share = counts.astype(np.float64) ** power
    return (share / share.sum())[inverse] / counts[inverse]


def _cap_positive_groups(
    w: npt.NDArray[np.float64],
    positive: npt.NDArray[np.bool_],
    keys: list[npt.NDArray[np.str_]],
    cap: float,
    populations: list[tuple[npt.NDArray[np.bool_], float]],
) -> None:
    """Scale down (in place) any positive group above ``cap`` of the positive mass.

    Each population's total mass is fixed by the batch composition, so after every pass the
    populations are renormalised to their shares (a capped group's mass goes to the rest of
    its population); passes repeat until no group is above the cap.
    """
    for _ in range(500):
        changed = False
        for key in keys:
            mass = w[positive].sum()
            for name in np.unique(key[positive]):
                group = positive & (key == name)
                share = w[group].sum() / mass
                if share > cap + 1e-4:
                    w[group] *= cap / share
                    changed = True
        for mask, share in populations:
            if mask.any():
                w[mask] *= share / w[mask].sum()
        if not changed:
            return


def sampling_weights(split: ClsSplit, cfg: FinetuneConfig) -> Sampler:
    """Population-stratified, source-balanced, positive-capped sampling (module docstring)."""
    pops = split.populations()
    families = np.array(
        [finding_type(int(y), f) for y, f in zip(split.labels, split.findings, strict=True)]
    )
    positive = split.labels == 1
    has_peds = bool((pops == PEDIATRIC).any())
    adult_share = cfg.adult_share if has_peds else 1.0
    w = np.zeros(len(split.labels))
    for pop, share in ((ADULT, adult_share), (PEDIATRIC, 1.0 - adult_share)):
        mask = pops == pop
        if mask.any():
            w[mask] = share * _source_weights(split.sources[mask], cfg.source_power)
    # shares of all positives are capped per source and per finding family; children's
    # positives (Kermany's pneumonia) count as one family of their own, so COVID-19 or adult
    # pneumonia cannot hide behind the pediatric pneumonia count
    adult_family = np.where(pops == ADULT, families, "pediatric")
    _cap_positive_groups(
        w,
        positive,
        [split.sources, adult_family],
        cfg.max_positive_share,
        [(pops == ADULT, adult_share), (pops == PEDIATRIC, 1.0 - adult_share)],
    )
    adult = np.flatnonzero(pops == ADULT)
    peds = np.flatnonzero(pops == PEDIATRIC)
    n_adult = cfg.batch_size if not has_peds else math.ceil(adult_share * cfg.batch_size)
    p_adult = w[adult] / w[adult].sum()
    p_peds = w[peds] / w[peds].sum() if len(peds) else np.zeros(0)
    # the effective distribution: each population's mass fixed by the batch composition
    eff = np.zeros(len(w))
    eff[adult] = p_adult * n_adult / cfg.batch_size
    if len(peds):
        eff[peds] = p_peds * (cfg.batch_size - n_adult) / cfg.batch_size
    pos_mass = eff[positive].sum()
    shares = {
        "adult_per_batch": n_adult,
        "batch_size": cfg.batch_size,
        "positive_fraction": float(pos_mass),
        "source": {str(s): float(eff[split.sources == s].sum()) for s in np.unique(split.sources)},
        "positives_by_source": {
            str(s): float(eff[positive & (split.sources == s)].sum() / pos_mass)
            for s in np.unique(split.sources[positive])
        },
        "positives_by_family": {
            str(f): float(eff[positive & (adult_family == f)].sum() / pos_mass)
            for f in np.unique(adult_family[positive])
        },
    }
    return Sampler(adult, p_adult, peds, p_peds, n_adult, shares)


def draw_batch(
    sampler: Sampler, rng: np.random.Generator, batch_size: int
) -> npt.NDArray[np.int64]:
    """Row numbers (into the training split) of one batch: ``adult_per_batch`` adults first."""
    adults = rng.choice(sampler.adult_index, sampler.adult_per_batch, p=sampler.adult_p)
    rest = batch_size - sampler.adult_per_batch
    if rest == 0:
        return adults
    return np.concatenate(
        [adults, rng.choice(sampler.pediatric_index, rest, p=sampler.pediatric_p)]
    )


def param_groups(model: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """Discriminative learning rates: head ``lr``, trunk block k from the top ``lr*decay**k``."""
    blocks = list(features_of(model))
    groups = [{"params": list(head_of(model).parameters()), "lr": lr}]
    for depth, block in enumerate(reversed(blocks), start=1):
        groups.append({"params": list(block.parameters()), "lr": lr * decay**depth})
    return groups


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _pos_weight(split: ClsSplit, sampler: Sampler) -> float:
    frac = sampler.shares["positive_fraction"]
    return float((1.0 - frac) / max(frac, 1e-9))


@dataclass(frozen=True)
class FinetuneRun:
    """Outputs of :func:`finetune`: history, wall time and the sampler shares."""

    history: list[dict[str, float]]
    wall_s: float
    sampler: dict[str, Any]
    steps: int


def finetune(
    model: nn.Module,
    cfg: FinetuneConfig,
    train_cache: npt.NDArray[np.uint8],
    train: ClsSplit,
    out_dir: Path,
) -> FinetuneRun:
    """Train ``model`` end to end on ``train`` (rows of ``train_cache``); resumable."""
    torch.manual_seed(cfg.seed)
    keep = ~np.isin(train.sources, list(cfg.exclude_sources))
    train = train.subset(keep)
    sampler = sampling_weights(train, cfg)
    LOG.info("sampler: %s", sampler.shares)
    opt = torch.optim.AdamW(
        param_groups(model, cfg.lr, cfg.layer_decay), weight_decay=cfg.weight_decay
    )
    total, warmup = cfg.total_steps, max(1, int(cfg.warmup_frac * cfg.total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = torch.from_numpy(train.labels).float()
    pos_weight = torch.tensor(_pos_weight(train, sampler))
    state = {"step": 0, "history": [], "wall_s": 0.0}
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        if saved["config"] == asdict(cfg):
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
            rng.bit_generator.state = saved["rng"]
            gen.set_state(saved["gen"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["state"]
            LOG.info("resumed at step %d", state["step"])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(memory_format=torch.channels_last)  # ~faster CPU convolutions
    steps_per_epoch = total // cfg.epochs
    start = time.monotonic() - state["wall_s"]
    losses: list[float] = []
    model.train()
    while state["step"] < total:
        rows = draw_batch(sampler, rng, cfg.batch_size)
        gray = torch.from_numpy(train_cache[train.index[rows]].astype(np.float32) / 255.0)
        x = normalise(site_augment(gray, gen, cfg.size), IMAGENET_MEAN, IMAGENET_STD)
        logit = model(x.contiguous(memory_format=torch.channels_last)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, labels[rows], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        state["step"] += 1
        step = state["step"]
        if step % steps_per_epoch == 0 or step == total:
            state["history"].append(
                {
                    "epoch": step / steps_per_epoch,
                    "loss": float(np.mean(losses)),
                    "elapsed_s": time.monotonic() - start,
                    "img_per_s": step * cfg.batch_size / (time.monotonic() - start),
                }
            )
            LOG.info("%s", state["history"][-1])
            losses = []
        over_budget = time.monotonic() - start > cfg.time_budget_s
        if step % cfg.checkpoint_every == 0 or step == total or over_budget:
            state["wall_s"] = time.monotonic() - start
            torch.save(
                {
                    "config": asdict(cfg),
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": rng.bit_generator.state,
                    "gen": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),  # dropout
                    "state": state,
                },
                ckpt,
            )
        if over_budget:
            LOG.info("time budget reached at step %d/%d", step, total)
            break
    model.eval().to(memory_format=torch.contiguous_format)
    return FinetuneRun(state["history"], time.monotonic() - start, sampler.shares, state["step"])


def predict_logits(
    model: nn.Module,
    cache: npt.NDArray[np.float32],
    index: npt.NDArray[np.int64],
    size: int = 224,
    batch_size: int = 64,
) -> npt.NDArray[np.float64]:
    """Eval-mode logits [N] of rows ``index`` of the float32 224 px cache (the serving input).

    At another ``size`` the cached picture is resized (antialiased) first, as in training.
    """
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(index), batch_size):
            gray = torch.from_numpy(np.asarray(cache[index[s : s + batch_size]]))
            if gray.shape[-1] != size:
                gray = F.interpolate(
                    gray.unsqueeze(1), size=(size, size), mode="bilinear", antialias=True
                ).squeeze(1)
            x = normalise(gray, IMAGENET_MEAN, IMAGENET_STD)
            out.append(model(x.contiguous(memory_format=torch.channels_last)).squeeze(1))
    return torch.cat(out).double().numpy()
