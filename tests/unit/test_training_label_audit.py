"""Label audit (training.label_audit) on tiny hand-made label tables."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from training import label_audit
from training.label_audit import (
    Adjudicated,
    negatives,
    nodule_counts,
    read_adjudicated,
    reader_ceiling,
    same_hospital,
    subset_overlap,
    text_mined_class,
)
from training.label_audit_card import label_audit_section


def _film(i: int, text_mined: int | None, opacity: bool, patient: str | None = None) -> Adjudicated:
    return Adjudicated(f"{i:08d}_000.png", patient or str(i), text_mined, opacity, "test")


def test_text_mined_class_is_the_nih_sources_rule() -> None:
    assert text_mined_class("Pneumonia") == 1
    assert text_mined_class("Infiltration|Pneumonia") == 1
    assert text_mined_class("No Finding") == 0
    # films the source does not hold: another finding without pneumonia
    assert text_mined_class("Effusion") is None
    assert text_mined_class("Pneumothorax|Effusion") is None


def test_read_adjudicated_parses_the_wheels_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv.gz"
    fields = ["Image Index", "Finding Labels", "Patient ID", "Airspace opacity", "Set Id"]
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        w.writerow(["00000001_000.png", "No Finding", "1", "YES", "test"])
        w.writerow(["00000002_001.png", "Atelectasis|Pneumonia", "2", "NO", "validation"])
    rows = read_adjudicated(path)
    assert rows == [
        Adjudicated("00000001_000.png", "1", 0, True, "test"),
        Adjudicated("00000002_001.png", "2", 1, False, "validation"),
    ]


def test_reader_ceiling_matches_the_closed_form() -> None:
    # 3 of 4 text-mined positives and 1 of 4 negatives carry an opacity: a reader scoring the
    # opacity call ranks a positive above a negative with probability
    # a(1-b) + (ab + (1-a)(1-b)) / 2 = 0.5625 + 0.1875 = 0.75
    rows = [_film(i, 1, i < 3) for i in range(4)] + [_film(10 + i, 0, i < 1) for i in range(4)]
    rows.append(_film(99, None, True))  # another finding: not in the source, left out
    c = reader_ceiling(rows, resamples=200, seed=0)
    assert (c["n_positive"], c["n_negative"]) == (4, 4)
    assert (c["positive_with_opacity"], c["negative_with_opacity"]) == (3, 1)
    assert c["reader_auroc"] == pytest.approx(0.75)
    # only the (clear positive, opaque negative) pairs stay wrong: 1 - 1/4 * 1/4
    assert c["tie_break_bound"] == pytest.approx(1 - 0.25 * 0.25)
    assert c["positive_opacity_rate"]["value"] == pytest.approx(0.75)
    lo, hi = c["reader_auroc_ci95"]
    assert lo <= 0.75 <= hi and lo < hi


def test_reader_ceiling_of_labels_that_agree_is_one() -> None:
    rows = [_film(i, i % 2, bool(i % 2)) for i in range(20)]
    c = reader_ceiling(rows, resamples=100, seed=0)
    assert c["reader_auroc"] == 1.0
    assert c["reader_auroc_ci95"] == [1.0, 1.0]


def test_the_bootstrap_resamples_patients_not_films() -> None:
    # one patient holds every film: each resample draws that patient and all of its films,
    # so the interval collapses to the point estimate
    rows = [_film(i, i % 2, i in (1, 2, 3), patient="p") for i in range(8)]
    c = reader_ceiling(rows, resamples=50, seed=0)
    assert c["reader_auroc_ci95"] == [c["reader_auroc"], c["reader_auroc"]]


def test_subset_overlap_matches_by_stem() -> None:
    adjudicated = [_film(1, 1, False), _film(2, 0, True), _film(3, 0, False)]
    subset = [("images/nih/00000001_000.jpg", 1), ("images/nih/00000002_000.jpg", 0)]
    subset.append(("images/nih/00000777_000.jpg", 0))
    assert subset_overlap(subset, adjudicated) == {"0/yes": 1, "1/no": 1}


def test_nodule_counts_per_source() -> None:
    rows = [
        {"source": "jsrt", "findings": "Nodule"},
        {"source": "jsrt", "findings": "No Finding"},
        {"source": "nih", "findings": "Nodule; Pneumonia"},
        {"source": "nih", "findings": "Mass; Nodule; Pneumonia"},
        {"source": "nih", "findings": "Pneumonia"},
    ]
    assert nodule_counts(rows) == {
        "jsrt": {"images": 1, "with_other_findings": 0},
        "nih": {"images": 2, "with_other_findings": 2},
    }


def test_negatives_count_the_shared_data_and_the_test_split() -> None:
    table = [{"source": "ieee8023", "label": v} for v in ("0", "0", "1", "-1")]
    got = negatives(table, np.array(["ieee8023", "ieee8023"]), np.array([0, 1]))
    assert got == {"ieee8023": {"all": 2, "test": 1}}


def test_same_hospital_keeps_covidqus_rsna_films_only() -> None:
    findings = ["Pneumonia", "No Finding", "Non-COVID pneumonia / lung opacity", "No Finding"]
    findings += ["COVID-19", "No Finding"]
    sources = np.array(["nih", "nih", "covidqu", "covidqu", "covidqu", "kermany"])
    labels = np.array([1, 0, 1, 0, 1, 0])
    logits = np.array([2.0, -1.0, 1.0, 3.0, 5.0, 0.0])
    got = same_hospital(findings, sources, labels, logits, seed=0)
    assert got["nih_text_mined"]["n"] == 2 and got["nih_text_mined"]["auroc"] == 1.0
    rsna = got["covidqu_rsna_radiologists"]
    # the COVID-19 film (other hospitals) is left out; the RSNA normal outranks the opacity
    assert (rsna["n"], rsna["n_positive"], rsna["auroc"]) == (2, 1, 0.0)


def test_same_hospital_refuses_labels_that_contradict_the_findings() -> None:
    with pytest.raises(ValueError, match="disagree"):
        same_hospital(["No Finding"], np.array(["covidqu"]), np.array([1]), np.array([0.0]), seed=0)


def test_without_the_wheel_the_audit_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(label_audit.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="torchxrayvision"):
        label_audit.google_2019_path()


def _audit() -> dict:
    ceiling = {
        "n_positive": 76,
        "n_negative": 2090,
        "positive_with_opacity": 59,
        "negative_with_opacity": 599,
        "positive_opacity_rate": {"value": 59 / 76, "ci95": [0.67, 0.86]},
        "negative_opacity_rate": {"value": 599 / 2090, "ci95": [0.27, 0.31]},
        "reader_auroc": 0.745,
        "reader_auroc_ci95": [0.70, 0.79],
        "tie_break_bound": 0.936,
    }
    row = {"n": 100, "n_positive": 50, "auroc": 0.9, "auroc_ci95": [0.85, 0.95]}
    return {
        "reader_ceiling": {"all": ceiling, "test": ceiling},
        "nih_subset_overlap": {"0/no": 6, "0/yes": 2, "1/no": 8, "1/yes": 11},
        "same_hospital_test": {"nih_text_mined": row, "covidqu_rsna_radiologists": row},
        "nodule_images": {"jsrt": {"images": 127}, "nih": {"images": 9, "with_other_findings": 9}},
        "negatives": {"ieee8023": {"all": 17, "test": 2}},
        "command": "python -m training label-audit",
        "classifier": "cxr-classifier 9.9.9",
    }


def test_card_section_renders_the_measurements(tmp_path: Path) -> None:
    assert "was not run" in label_audit_section(tmp_path)
    (tmp_path / "label_audit.json").write_text(json.dumps(_audit()), encoding="utf-8")
    text = label_audit_section(tmp_path)
    assert "**0.745** [0.700, 0.790] | 0.936 |" in text
    assert "answered yes / no would score about 0.7" in text and "(bound 0.936)" in text
    assert 'of its 19 "Pneumonia" films the radiologists called 8 free' in text
    assert "jsrt 127" in text and "nih: 9 (9 of them also labelled" in text
    assert "holds 17 negatives in all, 2 of them" in text
    assert "cxr-classifier 9.9.9" in text
