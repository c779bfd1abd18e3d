"""Tail-recipe options (--cut) and named LOSO experiments (paired variants, shipping rule)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.test_training_finetune import Tiny, _split
from training.__main__ import TAIL, TAIL_LOSO, _parser, _tail
from training.loso import Experiment, merge_experiment, verdict
from training.model_card import _loso_table, _verdicts
from training.tailtune import build_trunk_cache, derive_trunk_cache


def test_cut_option_reaches_the_tail_config_and_defaults_to_the_shipped_cut() -> None:
    parse = _parser().parse_args
    assert _tail(TAIL_LOSO, parse(["loso"])).cut == 6 == TAIL.cut  # 2.1.0 (tail-cut)
    seven = _tail(TAIL_LOSO, parse(["loso", "--cut", "7", "--epochs", "4", "--aug-budget-s", "0"]))
    assert (seven.cut, seven.base.epochs, seven.aug_budget_s) == (7, 4, 0.0)
    assert seven.base.samples_per_epoch == TAIL_LOSO.base.samples_per_epoch
    with pytest.raises(SystemExit):
        parse(["loso", "--cut", "5"])  # no trunk cache below stage 6


def _row(fold: str, config: dict[str, object]) -> dict[str, object]:
    return {"fold": fold, "init": "lite0", "config": config, "train_steps": 4, "wall_s": 60.0}


def test_experiment_variants_are_paired_on_the_same_images_and_judged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    index = np.arange(200)
    noise = rng.normal(0, 1, 200)
    scores = {"baseline": labels + noise, "better": 3 * labels + noise, "same": labels + noise}
    config = {"cut": 7, "size": 224, "epochs": 2, "samples_per_epoch": 64, "batch_size": 8}
    config["lr"] = 1e-3
    out = tmp_path / "loso.json"
    out.write_text(json.dumps({"runs": [_row("nih", config)]}), encoding="utf-8")
    for variant, z in scores.items():
        run_dir = tmp_path / "loso" / "cut" / f"{variant}-nih"
        run_dir.mkdir(parents=True)
        np.savez(run_dir / "logits.npz", held=z, index=index, labels=labels)
        row = _row("nih", config | {"seed": 1, "cut": 6 if variant == "better" else 7})
        row["metrics"] = {"nih": {"n": 200, "n_positive": 100, "auroc": 0.5}}
        row["metrics"]["nih"] |= {"auroc_ci95": [0.4, 0.6], "sensitivity": 0.5}
        row["metrics"]["nih"] |= {"specificity": 0.5}
        experiment = Experiment("cut", variant, f"cmd {variant}")
        result = merge_experiment(row, tmp_path, 0, out, experiment)
    assert len(result["runs"]) == 1  # the shipped LOSO runs are untouched
    (exp,) = result["experiments"]
    assert {r["variant"] for r in exp["runs"]} == set(scores)
    pairs = {p["a"]: p for p in exp["paired"]}
    assert set(pairs) == {"better", "same"} and pairs["better"]["ci95"][0] > 0
    assert pairs["same"]["auroc_diff"] == 0.0
    # better on nih, but the other folds were not run: no win yet
    assert exp["verdicts"]["better"]["better"] == ["nih"] and not exp["verdicts"]["better"]["wins"]
    assert "jsrt" in exp["verdicts"]["better"]["folds_missing"]
    assert "`better` = cut 6" in exp["what"]
    # a rerun of a variant's fold replaces it instead of adding a second row
    again = merge_experiment(row, tmp_path, 0, out, Experiment("cut", "same", "cmd same"))
    assert len(again["experiments"][0]["runs"]) == 3
    text = _loso_table(json.loads(out.read_text(encoding="utf-8")) | {"runs": [row]})
    assert "`better` vs `baseline` on 1 fold(s)" in text and "not run on covidqu" in text
    assert "`cmd better`" in text
    exp["note"] = "Trunk cache built once."
    assert "Trunk cache built once." in "\n".join(_verdicts(exp))


def test_the_shipping_rule_needs_a_win_and_no_measurable_loss() -> None:
    def pair(fold: str, lo: float, hi: float) -> dict[str, object]:
        return {"fold": fold, "a": "v", "b": "baseline", "auroc_diff": 0.0, "ci95": [lo, hi]}

    rest = [pair(f, -0.02, 0.02) for f in ("covidqu", "ieee8023+covid19rad")]
    assert verdict([pair("nih", 0.01, 0.05), pair("jsrt", -0.1, 0.1), *rest], "v")["wins"]
    assert not verdict([pair("nih", 0.01, 0.05), pair("jsrt", -0.1, -0.01), *rest], "v")["wins"]
    assert not verdict([pair("nih", -0.01, 0.05), pair("jsrt", -0.1, 0.1), *rest], "v")["wins"]
    assert not verdict([pair("nih", 0.01, 0.05), *rest], "v")["wins"]  # jsrt not run
    assert not verdict([], "v")["wins"]


def test_derived_cache_ignores_augmented_rows_added_to_the_lower_cache_later(
    tmp_path: Path,
) -> None:
    split = _split(4)
    n = len(split.labels)
    u8 = np.random.default_rng(0).integers(0, 255, (n, 256, 256), dtype=np.uint8)
    f32 = u8[:, 16:240, 16:240].astype(np.float32) / 255
    splits = np.where(np.arange(n) % 4 == 0, "val", "train")
    torch.manual_seed(0)
    model = Tiny()
    args = (model, 1, 1, split, splits, f32, u8, tmp_path / "lower")
    lower = build_trunk_cache(*args, seed=0, batch_size=8, aug_budget_s=0.0)
    assert not lower.valid[1].any()
    derived = derive_trunk_cache(model, lower, 1, 2, tmp_path / "cut2")
    grown = build_trunk_cache(*args, seed=0, batch_size=8)  # a later pass fills view 1
    assert grown.valid[1].any()
    again = derive_trunk_cache(model, grown, 1, 2, tmp_path / "cut2")
    assert not again.valid[1].any() and not derived.valid[1].any()
