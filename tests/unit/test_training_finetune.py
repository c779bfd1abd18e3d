"""End-to-end fine-tuning recipe on a tiny EfficientNet-shaped network and synthetic caches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.augment import site_augment
from training.dataset import ClsSplit
from training.finetune import (
    FinetuneConfig,
    draw_batch,
    finetune,
    param_groups,
    predict_logits,
    sampling_weights,
)


class Tiny(nn.Module):
    """``features`` + ``classifier`` like torchvision's EfficientNet, a few hundred weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def _split(n_per: int = 40) -> ClsSplit:
    """Adult sources a (mostly COVID positives), b (negatives), c (pneumonia); pediatric k."""
    rows = (
        [("a", 1, "COVID-19", "adult")] * n_per * 3
        + [("a", 0, "No Finding", "adult")] * (n_per // 4)
        + [("b", 0, "No Finding", "adult")] * n_per
        + [("c", 1, "Pneumonia", "")] * (n_per // 2)
        + [("c", 0, "No Finding", "")] * (n_per // 2)
        + [("k", 1, "bacterial pneumonia", "pediatric")] * n_per * 4
        + [("k", 0, "No Finding", "pediatric")] * n_per * 2
    )
    return ClsSplit(
        np.arange(len(rows)),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[0] for r in rows]),
        tuple(f"{i}.jpg" for i in range(len(rows))),
        tuple(r[2] for r in rows),
        tuple(r[3] for r in rows),
    )


def test_sampler_gives_adults_their_batch_share_and_caps_positive_groups() -> None:
    split = _split()
    cfg = FinetuneConfig(batch_size=10, adult_share=0.6, max_positive_share=0.35)
    sampler = sampling_weights(split, cfg)
    assert sampler.adult_per_batch == 6
    rng = np.random.default_rng(0)
    pops = split.populations()
    for _ in range(20):
        rows = draw_batch(sampler, rng, cfg.batch_size)
        assert (pops[rows] == "adult").sum() == 6  # every batch, not only on average
    shares = sampler.shares
    assert max(shares["positives_by_source"].values()) <= 0.35 + 0.01
    assert max(shares["positives_by_family"].values()) <= 0.35 + 0.01
    # uncapped, source a's COVID positives would be the largest family
    loose = sampling_weights(split, replace(cfg, max_positive_share=1.0)).shares
    assert loose["positives_by_family"]["covid"] > 0.4
    assert sum(shares["source"].values()) == pytest.approx(1.0)


def test_discriminative_learning_rates_fall_towards_the_stem() -> None:
    groups = param_groups(Tiny(), lr=1e-3, decay=0.5)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert sum(len(g["params"]) for g in groups) == len(list(Tiny().parameters()))


def test_site_augment_is_deterministic_in_range_and_never_flips() -> None:
    batch = torch.zeros(8, 64, 64)
    batch[:, :, :20] = 0.9  # bright left third: a flip would move it right
    a = site_augment(batch, torch.Generator().manual_seed(3), 48)
    b = site_augment(batch, torch.Generator().manual_seed(3), 48)
    assert a.shape == (8, 48, 48) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert (a[:, :, :12].mean((1, 2)) > a[:, :, -12:].mean((1, 2)) + 0.3).all()
    c = site_augment(batch, torch.Generator().manual_seed(4), 48)
    assert not torch.equal(a, c)


def _caches(split: ClsSplit) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = len(split.labels)
    yy = np.linspace(0, 1, 64)[None, :, None]
    signal = split.labels[:, None, None] * 0.5 * (yy > 0.5)
    u8 = np.clip((rng.random((n, 64, 64)) * 0.3 + signal) * 255, 0, 255).astype(np.uint8)
    f32 = (u8[:, 4:60, 4:60].astype(np.float32) / 255).copy()
    return u8, f32


def test_finetune_learns_an_easy_signal_and_resumes_exactly(tmp_path: Path) -> None:
    split = _split(16)
    u8, f32 = _caches(split)
    cfg = FinetuneConfig(
        size=48, epochs=2, samples_per_epoch=160, batch_size=16, lr=3e-2, checkpoint_every=5
    )
    torch.manual_seed(0)
    model = Tiny()
    run = finetune(model, cfg, u8, split, tmp_path / "full")
    assert run.steps == cfg.total_steps and len(run.history) == 2
    logits = predict_logits(model, f32, split.index, size=48)
    from training.metrics import auroc

    assert auroc(split.labels, logits) > 0.9
    # interrupted after 10 steps, then resumed: same weights as the uninterrupted run
    torch.manual_seed(0)
    first = Tiny()
    finetune(first, replace(cfg, time_budget_s=0.0), u8, split, tmp_path / "resumed")
    torch.manual_seed(0)
    again = Tiny()
    resumed = finetune(again, cfg, u8, split, tmp_path / "resumed")
    assert resumed.steps == cfg.total_steps
    for p, q in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q)


def test_excluded_sources_are_never_sampled(tmp_path: Path) -> None:
    split = _split(8)
    kept = split.subset(split.sources != "b")
    sampler = sampling_weights(kept, FinetuneConfig(batch_size=8))
    assert "b" not in sampler.shares["source"]


def test_cached_trunk_recipe_and_loso_fold_on_a_tiny_network(tmp_path: Path) -> None:
    from training.loso import _fold_metrics, capped_positions, paired_difference_ci
    from training.tailtune import (
        TailConfig,
        build_trunk_cache,
        derive_trunk_cache,
        tail_logits,
        train_tail,
    )

    split = _split(8)
    n = len(split.labels)
    rng = np.random.default_rng(1)
    signal = split.labels[:, None, None] * 0.5 * (np.linspace(0, 1, 256)[None, :, None] > 0.5)
    u8 = np.clip((rng.random((n, 256, 256)) * 0.3 + signal) * 255, 0, 255).astype(np.uint8)
    f32 = np.stack(
        [
            torch.nn.functional.interpolate(
                torch.from_numpy(u8[i : i + 1, None].astype(np.float32) / 255), size=(224, 224)
            )[0, 0].numpy()
            for i in range(n)
        ]
    )
    splits = np.where(np.arange(n) % 4 == 0, "val", "train")
    cfg = TailConfig(
        base=FinetuneConfig(epochs=2, samples_per_epoch=128, batch_size=16, lr=3e-2), cut=1
    )
    torch.manual_seed(0)
    model = Tiny()
    trunk = build_trunk_cache(model, 1, 1, split, splits, f32, u8, tmp_path / "trunk", seed=0)
    assert len(trunk.views) == 2 and trunk.views[0].shape[0] == n
    assert np.abs(trunk.views[1][splits == "train"]).sum() > 0
    again = build_trunk_cache(model, 1, 1, split, splits, f32, u8, tmp_path / "trunk", seed=0)
    np.testing.assert_array_equal(trunk.views[1], again.views[1])  # reused, not recomputed
    assert trunk.valid[1].sum() == (splits == "train").sum() and trunk.valid[0].all()
    none = build_trunk_cache(
        model, 1, 1, split, splits, f32, u8, tmp_path / "t0", seed=0, aug_budget_s=0.0
    )
    assert not none.valid[1].any()  # budget spent: training falls back to the clean view
    derived = derive_trunk_cache(model, trunk, 1, 2, tmp_path / "cut2")
    with torch.no_grad():
        expect = model.features[1].eval()(
            torch.from_numpy(np.asarray(trunk.views[0][:4], np.float32))
        )
    np.testing.assert_allclose(derived.views[0][:4].astype(np.float32), expect.numpy(), atol=2e-2)
    stem = [p.detach().clone() for p in model.features[0].parameters()]
    run = train_tail(model, cfg, trunk, exclude=("b",))
    assert run.steps == cfg.base.total_steps and "b" not in run.sampler["source"]
    for before, after in zip(stem, model.features[0].parameters(), strict=True):
        assert torch.equal(before, after)  # the cached lower trunk stays frozen
    held = np.flatnonzero(np.isin(split.sources, ["a", "b"]))
    logits = tail_logits(model, 1, trunk.views[0][held])
    metrics = _fold_metrics(split.subset(held), logits, 0.5, 1.0, seed=0)
    assert set(metrics) == {"pooled", "a", "b"}
    assert metrics["pooled"]["auroc"] > 0.8 and metrics["b"]["auroc"] != metrics["b"]["auroc"]
    assert metrics["b"]["specificity"] >= 0.0
    keep = capped_positions(split, 10, seed=0)
    assert all((split.sources[keep] == s).sum() <= 10 for s in "abck")
    d, lo, hi = paired_difference_ci(
        split.labels[held], logits, np.zeros(len(held)), seed=0, n_boot=50
    )
    assert lo <= d <= hi
