"""Per-population operating points, per-source metrics and the model card's new sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.dataset import ClsSplit
from training.evaluate import (
    calibrate,
    per_source_metrics,
    population_points,
    sensitivity_at_specificity,
)
from training.pipeline import operating_points_block


def _val(seed: int = 0) -> tuple[ClsSplit, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 400
    sources = np.array(["kermany"] * 200 + ["covidqu"] * 150 + ["covid19rad"] * 50)
    ages = tuple("pediatric" if s == "kermany" else "adult" for s in sources)
    labels = np.where(sources == "covid19rad", 0, rng.integers(0, 2, n)).astype(np.int64)
    # children are easier and score higher: one pooled threshold would not fit both
    shift = np.where(sources == "kermany", 1.5, 0.0)
    logits = labels * 2.0 + shift + rng.normal(0, 1, n)
    split = ClsSplit(np.arange(n), labels, sources, tuple(map(str, range(n))), ("",) * n, ages)
    return split, logits


def test_population_points_differ_and_bands_bracket_the_threshold() -> None:
    split, logits = _val()
    cal = calibrate(split, logits)
    points = population_points(split, logits, cal.temperature)
    assert set(points) == {"adult", "pediatric"}
    for p in points.values():
        lo, hi = p["band"]
        assert 0 < lo <= p["threshold"] <= hi < 1
        assert p["validation_sensitivity"] >= 0.9
    assert points["pediatric"]["threshold"] > points["adult"]["threshold"]
    block = operating_points_block(points)
    assert block["default_population"] == "adult"
    assert set(block["operating_points"]["adult"]) == {"threshold", "band", "basis"}


def test_per_source_metrics_use_each_population_threshold() -> None:
    split, logits = _val(1)
    cal = calibrate(split, logits)
    points = population_points(split, logits, cal.temperature)
    metrics = per_source_metrics(split, logits, cal, seed=0, points=points)
    assert {"all", "population:adult", "population:pediatric", "covid19rad"} <= set(metrics)
    kermany = metrics["kermany"]
    assert kermany["sensitivity"] == kermany["sens_at_pediatric_thr"]
    assert metrics["covidqu"]["sensitivity"] == metrics["covidqu"]["sens_at_adult_thr"]
    assert np.isnan(metrics["covid19rad"]["auroc"])  # one class: specificity is the measure
    assert 0.0 <= metrics["covid19rad"]["specificity"] <= 1.0


def test_sensitivity_at_specificity_is_a_roc_point() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10), np.arange(10) + 5.0])
    # specificity >= 0.8 needs a threshold at or above the 8th negative (score 7)
    assert sensitivity_at_specificity(labels, scores, 0.8) == 0.7
    assert np.isnan(sensitivity_at_specificity(np.zeros(5, dtype=np.int64), scores[:5], 0.8))


def test_model_card_renders_loso_goals_and_operating_points(tmp_path: Path) -> None:
    from training.model_card import write_model_card

    split, logits = _val(2)
    cal = calibrate(split, logits)
    points = population_points(split, logits, cal.temperature)
    metrics = per_source_metrics(split, logits, cal, seed=0, points=points)
    manifest = {
        "temperature": cal.temperature,
        "threshold": points["adult"]["threshold"],
        **operating_points_block(points),
        "extra": {
            "metrics": {"test": metrics, "validation": metrics},
            "youden_threshold": cal.youden_threshold,
            "architecture": "efficientnet-lite0",
            "init": "lite0",
            "training_wall_s": 60.0,
            "training_data": {},
            "data_sources": [],
            "training_command": "python -m training classifier",
            "seed": 1,
            "training_config": {"cut": 7},
            "operating_points_validation": points,
            "sampler": {"adult_per_batch": 20},
            "recipe": "tail",
        },
    }
    (tmp_path / "classifier.manifest.json").write_text(json.dumps(manifest))
    held = {"n": 50, "n_positive": 20, "auroc": 0.8, "auroc_ci95": [0.7, 0.9]}
    loso = {
        "runs": [
            {
                "fold": "covidqu",
                "init": "lite0",
                "wall_s": 60.0,
                "train_steps": 55,
                "config": {"size": 224, "epochs": 3, "samples_per_epoch": 4096, "batch_size": 64},
                "metrics": {"covidqu": held | {"sensitivity": 0.9, "specificity": 0.5}},
            }
        ],
        "paired": [],
        "previous_release": {
            "trained_on": ["kermany", "nih"],
            "folds": {"covidqu": {"covidqu": held | {"sensitivity": 0.8, "specificity": 0.5}}},
        },
    }
    (tmp_path / "loso.json").write_text(json.dumps(loso))
    card = write_model_card(tmp_path, tmp_path / "work").read_text(encoding="utf-8")
    assert "0.800 [0.700, 0.900]" in card
    assert "LOSO AUROC ≥ 0.85: covidqu (held out: covidqu) | 0.800 | **not met**" in card
    assert "(55 steps done)" in card and "Previous release on the same held-out rows" in card
    assert "| adult |" in card and "| pediatric |" in card
    for key in ("loso", "goals", "op_points", "cls_test", "sampler", "cls_recipe_note"):
        assert "{{" + key + "}}" not in card
