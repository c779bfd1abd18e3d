"""Source adapters on tiny fixtures written in each dataset's native layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.adapters import UncertainPolicy, read_chexpert, read_nih, read_shared
from training.records import frontal_only, read_table, write_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training"


def test_nih_native_layout_reads_all_image_folders_and_skips_missing_files() -> None:
    records = read_nih(FIXTURES / "nih")
    names = {Path(r.image).name for r in records}
    assert names == {
        "00000001_000.png",
        "00000001_001.png",
        "00000002_000.png",
        "00000003_000.png",
        "00000004_000.png",
    }
    by = {Path(r.image).name: r for r in records}
    assert by["00000001_001.png"].label == 1
    assert by["00000001_001.png"].findings == "Cardiomegaly; Pneumonia"
    assert by["00000002_000.png"].label == 0
    assert by["00000001_000.png"].patient_id == by["00000001_001.png"].patient_id == "nih:1"
    assert by["00000003_000.png"].age_group == "pediatric"
    assert all(Path(r.image).is_file() for r in records)
    assert {Path(r.image).name for r in frontal_only(records)} == names - {"00000004_000.png"}


def test_nih_positive_subset_drops_other_findings() -> None:
    records = read_nih(FIXTURES / "nih", positives=frozenset({"Pneumonia"}))
    assert "00000001_000.png" not in {Path(r.image).name for r in records}
    assert {r.label for r in records if "Pneumonia" in r.findings} == {1}


def test_nih_without_label_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_nih(tmp_path)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (UncertainPolicy.IGNORE, {"patient00001": 0, "patient00002": 1, "patient64541": 1}),
        (
            UncertainPolicy.ONES,
            {"patient00001": 0, "patient00002": 1, "patient00003": 1, "patient64541": 1},
        ),
        (
            UncertainPolicy.ZEROS,
            {
                "patient00001": 0,
                "patient00002": 1,
                "patient00003": 0,
                "patient00004": 0,
                "patient64541": 1,
            },
        ),
    ],
)
def test_chexpert_uncertainty_policies(policy: UncertainPolicy, expected: dict[str, int]) -> None:
    frontal = frontal_only(read_chexpert(FIXTURES / "chexpert" / "CheXpert-v1.0-small", policy))
    got = {r.patient_id.split(":")[1]: r.label for r in frontal}
    assert got == expected
    assert all(r.source == "chexpert" and Path(r.image).is_file() for r in frontal)


def test_chexpert_keeps_laterals_until_frontal_filter_and_ignores_support_devices() -> None:
    records = read_chexpert(FIXTURES / "chexpert" / "CheXpert-v1.0-small")
    views = {(r.patient_id, r.view) for r in records}
    assert ("chexpert:patient00002", "LATERAL") in views
    no_finding = next(r for r in records if r.patient_id == "chexpert:patient00001")
    assert (no_finding.label, no_finding.findings) == (0, "No Finding")
    opacity = next(r for r in records if r.patient_id == "chexpert:patient00002" and r.view == "AP")
    assert opacity.findings == "Lung Opacity"  # the uncertain pneumonia is not a positive finding


def test_shared_table_roundtrip_and_frontal_filter(tmp_path: Path) -> None:
    records = read_shared(FIXTURES / "shared")
    assert len(records) == 4
    assert all(Path(r.image).is_absolute() and Path(r.image).is_file() for r in records)
    frontal = frontal_only(records)
    assert [r.view for r in frontal] == ["AP", "AP", "PA"]
    write_table(frontal, tmp_path / "t.csv", extra={"split": ["train", "val", "test"]})
    back, extra = read_table(tmp_path / "t.csv")
    assert back == frontal
    assert extra == {"split": ["train", "val", "test"]}


def test_finding_type_and_population_of_shared_rows() -> None:
    from training.adapters import finding_type, population, source_generation

    assert finding_type(0, "No Finding") == "normal"
    assert finding_type(1, "COVID-19, ARDS") == "covid"
    assert finding_type(1, "Non-COVID pneumonia / lung opacity") == "pneumonia"
    assert finding_type(1, "bacterial pneumonia") == "pneumonia"
    assert finding_type(1, "Edema; Infiltration; Pneumonia") == "pneumonia"
    assert finding_type(1, "Nodule") == "nodule"
    assert finding_type(1, "Klebsiella") == "other"
    assert population("pediatric") == "pediatric"
    assert population("") == population("adult") == "adult"
    assert source_generation("covidqu") == source_generation("covid19rad") == 1
    assert source_generation("kermany") == 0
