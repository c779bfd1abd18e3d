"""Site recalibration: temperature, thresholds with Wilson intervals, minimum counts, file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from inference.errors import ModelError
from inference.operating import OperatingPoint, parse_operating_points
from inference.site_calibration import calibration_document, load_site_calibration
from tests.factories import png_bytes, synthetic_chest
from training.__main__ import main
from training.operating_points import (
    PointRule,
    TooFewCases,
    fit_point,
    threshold_at_sensitivity,
    threshold_at_specificity,
    wilson,
)
from training.recalibrate import fit_scale, fit_temperature

SHA = "c" * 64


def test_temperature_is_recovered() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-logits / 2.5))).astype(int)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, abs=0.15)


def test_platt_scaling_recovers_a_shift_a_temperature_cannot() -> None:
    # a site whose prevalence moves every score: sigmoid(logit / 2 - 1.5)
    rng = np.random.default_rng(3)
    logits = rng.normal(1.0, 4, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(logits / 2 - 1.5)))).astype(int)
    t, b, how = fit_scale(logits, labels, "platt")
    assert t == pytest.approx(2.0, abs=0.15) and b == pytest.approx(-1.5, abs=0.1)
    assert "Platt" in how
    assert fit_scale(logits, labels, "temperature")[1] == 0.0
    with pytest.raises(TooFewCases, match="do not separate"):  # scores that rank backwards
        fit_scale(-logits, labels, "platt")


def test_thresholds_meet_their_targets() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.random(101), rng.random(97)
    t = threshold_at_sensitivity(pos, 0.9)
    assert (pos >= t).mean() >= 0.9 and (pos >= np.nextafter(t, 2)).mean() < 0.9
    s = threshold_at_specificity(neg, 0.95)
    assert (neg < s).mean() >= 0.95


def test_wilson_interval_matches_the_formula() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == [0.0, 1.0]


def test_point_needs_enough_cases_of_each_class() -> None:
    rng = np.random.default_rng(2)
    probs = rng.random(60)
    labels = np.r_[np.ones(50, int), np.zeros(10, int)]
    with pytest.raises(TooFewCases):
        fit_point(probs, labels, PointRule(min_per_class=30), "x")
    point = fit_point(probs, labels, PointRule(min_per_class=10), "x")
    lo, hi = point.band
    assert lo <= point.threshold <= hi


def test_calibration_file_round_trip_and_model_binding(tmp_path: Path) -> None:
    points = parse_operating_points({}, 0.5)
    points = type(points)(OperatingPoint(0.4, (0.3, 0.6)), OperatingPoint(0.7, (0.7, 0.7)))
    doc = calibration_document(
        calibration_id="site-a",
        version="v7",
        model_sha256=SHA,
        temperature=1.7,
        points=points.as_dict(),
        fit={"n": 1},
    )
    path = tmp_path / "site.json"
    path.write_text(json.dumps(doc))
    cal = load_site_calibration(path, SHA)
    assert cal.points == points and cal.temperature == 1.7
    assert (cal.source, cal.id, cal.version) == ("site", "site-a", "v7")
    with pytest.raises(ModelError, match="another classifier"):
        load_site_calibration(path, "d" * 64)
    path.write_text(json.dumps(doc | {"temperature": 0}))
    with pytest.raises(ModelError):
        load_site_calibration(path, SHA)
    assert cal.offset == 0.0
    path.write_text(json.dumps(doc | {"offset": -0.8}))
    assert load_site_calibration(path, SHA).offset == -0.8
    for bad in (11, "1", True):
        path.write_text(json.dumps(doc | {"offset": bad}))
        with pytest.raises(ModelError, match="offset"):
            load_site_calibration(path, SHA)


def _labelled_set(folder: Path, n: int, darker: bool = False, flip: float = 0.0) -> Path:
    """Radiograph-like images whose brightness moves the tiny classifier's logit; label = the
    brighter half (``darker``: the darker half; ``flip``: that share of labels flipped at
    random, so the classes overlap), two images per patient."""
    rng = np.random.default_rng(0)
    rows = []
    base = synthetic_chest(160, 136).astype(np.float64)
    gains = rng.uniform(0.6, 1.0, n)
    cut = np.median(gains)
    for i, g in enumerate(gains):
        name = f"img{i:03d}.png"
        (folder / name).write_bytes(png_bytes(np.clip(base * g, 0, 255).astype(np.uint8)))
        label = int((g < cut) if darker else (g > cut)) ^ int(rng.random() < flip)
        rows.append({"image": name, "label": label, "patient_id": f"p{i // 2}"})
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return labels


def test_recalibrate_command_writes_a_file_the_service_accepts(
    tiny_weights: Path, tmp_path: Path
) -> None:
    labels = _labelled_set(tmp_path, 60)
    out = tmp_path / "site.json"
    argv = ["recalibrate", "--labels", str(labels), "--images", str(tmp_path)]
    argv += ["--weights", str(tiny_weights), "--out", str(out), "--bootstrap", "50"]
    argv += ["--min-per-class", "20", "--calibration-id", "unit-site"]
    assert main(argv) == 0
    sha = json.loads((tiny_weights / "classifier.manifest.json").read_text())["sha256"]
    cal = load_site_calibration(out, sha)
    assert cal.id == "unit-site" and 0.05 <= cal.temperature <= 20
    fit = json.loads(out.read_text())["fit"]
    adult = fit["populations"]["adult"]
    assert adult["fitted"] and adult["n_positive"] == 30 and adult["sensitivity"] >= 0.9
    assert len(adult["sensitivity_ci95"]) == 2 and len(adult["threshold_ci95"]) == 2
    assert fit["bootstrap"]["unit"] == "patient" and fit["patients"] == 30
    assert not fit["populations"]["pediatric"]["fitted"]  # no children: manifest point kept
    with pytest.raises(SystemExit, match="refused"):
        main(argv[:-4] + ["--min-per-class", "40"])
    assert json.loads(out.read_text())["offset"] == 0.0


def test_recalibrate_with_platt_scaling_writes_an_offset(
    tiny_weights: Path, tmp_path: Path
) -> None:
    labels = _labelled_set(tmp_path, 80, darker=True, flip=0.2)
    out = tmp_path / "site.json"
    argv = ["recalibrate", "--labels", str(labels), "--images", str(tmp_path), "--method"]
    argv += ["platt", "--weights", str(tiny_weights), "--out", str(out), "--bootstrap", "50"]
    argv += ["--min-per-class", "20"]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["fit"]["temperature_method"].startswith("Platt")
    sha = json.loads((tiny_weights / "classifier.manifest.json").read_text())["sha256"]
    cal = load_site_calibration(out, sha)
    assert cal.offset == doc["offset"] and cal.offset != 0.0
