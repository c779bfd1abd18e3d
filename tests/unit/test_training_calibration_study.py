"""Calibration study (training.calibration_study) on tiny synthetic logits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.operating import OperatingPoint, OperatingPoints
from training.calibration_card import calibration_section
from training.calibration_study import (
    Scored,
    StudyConfig,
    ece_by_group,
    fit_platt,
    paired_difference,
    population_experiment,
    probabilities,
    run_study,
    site_row,
)
from training.metrics import sigmoid
from training.recalibrate import RecalibrationConfig

SHIPPED = OperatingPoints(OperatingPoint(0.3, (0.2, 0.4)), OperatingPoint(0.8, (0.7, 0.8)))
FAST = StudyConfig(bootstrap=200, seed=0, site=RecalibrationConfig(bootstrap=20))


def _split(
    seed: int, n_adult: int, n_child: int, t_adult: float, t_child: float, source: str = "nih"
) -> Scored:
    """Logits whose true probability is sigmoid(logit / T_population): a model over-confident
    on adults by ``t_adult`` and on children by ``t_child``. Two images per group."""
    rng = np.random.default_rng(seed)
    n = n_adult + n_child
    logits = rng.normal(0.0, 3.0, n)
    t = np.r_[np.full(n_adult, t_adult), np.full(n_child, t_child)]
    labels = (rng.random(n) < sigmoid(logits / t)).astype(np.int_)
    pops = np.array(["adult"] * n_adult + ["pediatric"] * n_child)
    sources = np.array([source] * n_adult + ["kermany"] * n_child)
    groups = np.array([f"g{i // 2}" for i in range(n)])
    return Scored(logits, labels, sources, pops, groups)


def test_probabilities_use_each_population_temperature() -> None:
    s = _split(0, 4, 4, 1.0, 1.0)
    p = probabilities(s, {"adult": 2.0, "pediatric": 0.5})
    assert p[:4] == pytest.approx(sigmoid(s.logits[:4] / 2.0))
    assert p[4:] == pytest.approx(sigmoid(s.logits[4:] / 0.5))


def test_ece_groups_are_the_model_card_rows() -> None:
    s = _split(0, 40, 40, 1.0, 1.0)
    names = set(ece_by_group(s, sigmoid(s.logits)))
    assert names == {"all", "population:adult", "population:pediatric", "nih", "kermany"}


def test_paired_difference_of_identical_arms_is_zero() -> None:
    s = _split(1, 60, 60, 2.0, 1.0)
    p = sigmoid(s.logits)
    out = paired_difference(s, p, p, 50, 0)
    assert out["difference"] == 0.0 and out["ci95"] == [0.0, 0.0]
    assert out["clusters"] == 60  # two images per group: groups are resampled, not images


def test_per_population_temperature_pays_when_populations_differ() -> None:
    val, test = _split(2, 3000, 3000, 3.0, 0.6), _split(3, 3000, 3000, 3.0, 0.6)
    out = population_experiment(val, test, FAST)
    t = out["temperatures"]["per_population"]
    assert t["adult"] == pytest.approx(3.0, rel=0.15) and t["pediatric"] == pytest.approx(
        0.6, rel=0.15
    )
    assert out["pays"] and out["pooled_difference_single_minus_per_population"]["ci95"][0] > 0
    assert set(out["pooled_difference_other_bins"]) == {"10", "20"}
    assert out["pooled_nll_difference_single_minus_per_population"]["ci95"][0] > 0
    ece = out["test_ece"]
    assert ece["per_population"]["all"] < ece["single"]["all"]


def test_per_population_temperature_does_not_pay_when_they_agree() -> None:
    val, test = _split(4, 400, 400, 1.5, 1.5), _split(5, 400, 400, 1.5, 1.5)
    out = population_experiment(val, test, FAST)
    lo, hi = out["pooled_difference_single_minus_per_population"]["ci95"]
    assert not out["pays"] and lo <= 0.0


def test_site_row_fits_with_the_recalibrate_core_and_scores_test() -> None:
    val, test = _split(6, 400, 0, 2.5, 1.0), _split(7, 400, 0, 2.5, 1.0)
    row = site_row("nih", val, test, 1.0, SHIPPED, FAST)
    assert row["tool"] == "fitted" and row["temperature"] == pytest.approx(2.5, rel=0.2)
    assert row["ece_site"] < row["ece_shipped"]
    assert row["at_site"]["n_positive"] == int(test.labels.sum())
    assert row["threshold"] != SHIPPED.adult.threshold


def test_site_row_says_when_the_tool_would_refuse() -> None:
    val, test = _split(8, 40, 0, 2.0, 1.0), _split(9, 40, 0, 2.0, 1.0)
    row = site_row("jsrt", val, test, 1.0, SHIPPED, FAST)  # < 30 of a class
    assert row["tool"] == "refused" and row["temperature_only"]
    assert row["threshold"] == SHIPPED.adult.threshold
    negatives = replace(val, labels=np.zeros_like(val.labels))
    row = site_row("covid19rad", negatives, test, 1.0, SHIPPED, FAST)
    assert (row["tool"], row["reason"]) == ("refused", "validation images of one class only")
    assert "ece_site" not in row
    empty = val.subset(np.zeros(len(val.labels), dtype=bool))
    assert site_row("nih", empty, test, 1.0, SHIPPED, FAST)["tool"] == "refused"


def test_platt_fit_recovers_scale_and_offset() -> None:
    rng = np.random.default_rng(12)
    z = rng.normal(0, 3, 20_000)
    y = (rng.random(len(z)) < sigmoid(0.5 * z + 1.0)).astype(np.int_)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(1.0, abs=0.1)


def _with_nih_children(s: Scored, n: int) -> Scored:
    """The first ``n`` pediatric rows relabelled as nih films (a site with some children)."""
    sources = s.sources.copy()
    sources[np.flatnonzero(s.populations == "pediatric")[:n]] = "nih"
    return replace(s, sources=sources)


def test_run_study_reproduces_the_manifest_numbers_it_is_given(tmp_path: Path) -> None:
    val = _with_nih_children(_split(10, 300, 300, 1.4, 1.4), 5)
    test = _with_nih_children(_split(11, 300, 300, 1.4, 1.4), 7)
    manifest_test = {
        k: {"ece_calibrated": v} for k, v in ece_by_group(test, sigmoid(test.logits / 1.4)).items()
    }
    out = run_study(val, test, 1.4, SHIPPED, manifest_test, FAST)
    assert out["reproduction"]["max_abs_difference"] == 0.0
    assert out["reproduction"]["temperature_refit"] == pytest.approx(1.4, rel=0.2)
    (site,) = out["site_recalibration"]
    assert site["source"] == "nih" and site["tool"] == "fitted"
    # the site is fitted and scored on its adults; its children are counted, not used
    assert (site["fit_n"], site["test_n"]) == (300, 300)
    assert site["children_left_out"] == {"val": 5, "test": 7}
    assert not out["population_temperature"]["pays"]
    (tmp_path / "calibration_study.json").write_text(
        json.dumps(out | {"command": "python -m training calibration-study", "classifier": "x"})
    )
    card = calibration_section(tmp_path)
    assert "**Does not pay**" in card and "| nih | 300 (" in card
    assert "nih 5 / 7" in card


def test_card_says_when_the_study_was_not_run(tmp_path: Path) -> None:
    assert "not run in this build" in calibration_section(tmp_path)
