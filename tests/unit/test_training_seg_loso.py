"""Segmenter held-out-source runs (training.seg_loso) on a tiny generated cache."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training import seg_eval, seg_loso
from training.dataset import SegSplit
from training.seg_loso import concat, fold_config, run_seg_loso, select
from training.seg_loso_card import seg_loso_section
from training.segmenter import SegmenterConfig

SIZE = 32
RIGHT = np.zeros((SIZE, SIZE), np.uint8)
RIGHT[8:24, 4:14] = 1
LEFT = np.zeros((SIZE, SIZE), np.uint8)
LEFT[8:24, 18:28] = 1
# (source, split): two images each
ROWS = [(s, sp) for s in ("jsrt", "kermany", "covidqu") for sp in ("train", "val", "test")]


def _cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    n = 2 * len(ROWS)
    np.save(cache / "seg256.npy", np.zeros((n, SIZE, SIZE), np.float32))
    targets = np.zeros((n, 4, SIZE, SIZE), np.uint8)
    targets[:, 0], targets[:, 1], targets[:, 3] = RIGHT, LEFT, RIGHT | LEFT
    targets[:, 2] = 255  # heart not drawn
    np.save(cache / "seg_targets.npy", targets)
    with (cache / "images.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "seg_index"])
        for i in range(n):
            source, split = ROWS[i // 2]
            w.writerow([f"/data/images/{source}/{i}.png", split, i])
    return cache


def test_select_and_concat_keep_rows_aligned() -> None:
    split = SegSplit(np.array([3, 4, 5]), np.array(["jsrt", "kermany", "jsrt"]), ("a", "b", "c"))
    held = select(split, ("jsrt",), keep=True)
    rest = select(split, ("jsrt",), keep=False)
    assert held.index.tolist() == [3, 5] and held.images == ("a", "c")
    assert rest.index.tolist() == [4] and rest.sources.tolist() == ["kermany"]
    both = concat([held, rest])
    assert both.index.tolist() == [3, 5, 4] and both.images == ("a", "c", "b")


def test_fold_config_drops_the_held_out_sources_shares() -> None:
    cfg = fold_config(SegmenterConfig(), ("ieee8023", "covidseg"))
    assert {s for s, _ in cfg.source_shares} == {"covidqu", "kermany", "jsrt"}
    with pytest.raises(ValueError, match="no training source"):
        fold_config(SegmenterConfig(source_shares=(("jsrt", 1.0),)), ("jsrt",))


def test_a_fold_trains_without_the_source_and_scores_all_of_its_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _cache(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    manifest = {"name": "cxr-segmenter", "version": "9.9.9", "sha256": "abc"}
    (weights / "segmenter.manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    seen: dict[str, Any] = {}

    def fake_fit(model, cfg, images, targets, train, out_dir, monitor=None):  # type: ignore[no-untyped-def]
        seen["train_sources"] = sorted(set(train.sources.tolist()))
        seen["shares"] = dict(cfg.source_shares)
        seen["fits"] = seen.get("fits", 0) + 1
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out_dir / "segmenter.pt")
        return out_dir / "segmenter.pt", 60.0, cfg.finetune_steps

    def perfect(x: np.ndarray) -> np.ndarray:
        logits = np.full((len(x), 3, SIZE, SIZE), -8.0, np.float32)
        logits[:, 0][:, RIGHT == 1] = 8.0
        logits[:, 1][:, LEFT == 1] = 8.0
        return logits

    def half(x: np.ndarray) -> np.ndarray:  # finds the right lung only
        logits = perfect(x)
        logits[:, 1] = -8.0
        return logits

    monkeypatch.setattr(seg_loso, "fit_segmenter", fake_fit)
    monkeypatch.setattr(seg_loso, "build_segmenter", lambda aspp_channels: torch.nn.Linear(1, 1))
    monkeypatch.setattr(seg_eval, "torch_predictor", lambda model: half)
    monkeypatch.setattr(seg_eval, "onnx_predictor", lambda path: perfect)
    cfg = SegmenterConfig(finetune_steps=3)
    out = run_seg_loso(cache, tmp_path / "work", weights, cfg, ["jsrt"], "python -m training x")
    doc = json.loads(out.read_text(encoding="utf-8"))
    fold = doc["folds"][0]
    assert seen["train_sources"] == ["covidqu", "kermany"]  # training split, jsrt left out
    assert "jsrt" not in seen["shares"]
    assert fold["train_images"] == 4
    every = fold["held_out_model"]["all"]
    assert set(every) == {"jsrt"} and every["jsrt"]["lungs"]["n"] == 6  # train+val+test
    assert fold["held_out_model"]["test"]["jsrt"]["lungs"]["n"] == 2
    assert every["jsrt"]["right_lung"]["dice"] == 1.0
    assert every["jsrt"]["left_lung"]["dice"] == 0.0
    assert fold["shipped_model_test"]["jsrt"]["left_lung"]["dice"] == 1.0
    assert fold["shipped_sha256"] == "abc" and fold["shipped"] == "cxr-segmenter 9.9.9"
    # a rerun of the fold replaces it; another fold is added beside it
    run_seg_loso(cache, tmp_path / "work", weights, cfg, ["jsrt", "kermany"], "cmd")
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [f["fold"] for f in doc["folds"]] == ["jsrt", "kermany"]
    text = seg_loso_section(weights)
    assert "| jsrt | jsrt | left_lung | 6 | 0.000 /" in text
    assert "| 2 | 0.000 | 1.000 |" in text
    # re-scoring a trained fold loads its saved model and keeps its training record
    run_seg_loso(cache, tmp_path / "work", weights, cfg, ["jsrt"], "rescore", evaluate_only=True)
    doc = json.loads(out.read_text(encoding="utf-8"))
    again = next(f for f in doc["folds"] if f["fold"] == "jsrt")
    assert seen["fits"] == 3 and again["wall_s"] == 60.0
    assert again["command"] == "cmd" and again["rescored_by"] == "rescore"
    with pytest.raises(SystemExit, match="another recipe"):
        other = SegmenterConfig(finetune_steps=4)
        run_seg_loso(cache, tmp_path / "work", weights, other, ["jsrt"], "x", evaluate_only=True)
    with pytest.raises(SystemExit, match="no trained fold"):
        run_seg_loso(cache, tmp_path / "w2", tmp_path / "weights", cfg, ["covidqu"], "x", True)
    with pytest.raises(SystemExit, match="unknown fold"):
        run_seg_loso(cache, tmp_path / "work", weights, cfg, ["nih"], "cmd")


def test_card_section_without_runs_says_so(tmp_path: Path) -> None:
    assert "evaluation was not run in this build" in seg_loso_section(tmp_path)
