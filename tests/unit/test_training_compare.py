"""Comparison helpers on a tiny network and a synthetic cache (no real data, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from training.compare import _train_budget, model_cost, ort_latencies
from training.dataset import ClsSplit


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(4, 1),
    )


def test_model_cost_counts_params_flops_and_latency() -> None:
    cost = model_cost(_tiny(), size=32)
    assert cost["params_m"] == pytest.approx((3 * 4 * 9 + 4 + 4 + 1) / 1e6)
    assert cost["gflops_224"] > 0
    latency = ort_latencies({"a": _tiny(), "b": _tiny()}, size=32, repeats=3)
    assert set(latency) == {"a", "b"} and min(latency.values()) > 0


def test_train_budget_learns_an_easy_signal() -> None:
    rng = np.random.default_rng(0)
    n = 64
    labels = np.arange(n) % 2
    cache = (rng.random((n, 32, 32)) * 0.2 + labels[:, None, None] * 0.6).astype(np.float32)
    split = ClsSplit(
        np.arange(n), labels.astype(np.int64), np.array(["a", "b"] * (n // 2)), tuple(), tuple()
    )
    # 8 s leaves room for a loaded machine (3 s failed once under load).
    result = _train_budget(_tiny(), cache, split, split, size=32, budget_s=8.0, seed=0)
    assert result["train_steps"] > 0
    assert result["val_auroc"] > 0.9
