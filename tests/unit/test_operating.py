from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from inference.manifest import ManifestError, parse_manifest
from inference.operating import (
    OperatingPoint,
    OperatingPointError,
    choose_population,
    parse_operating_points,
    population_for_age,
)

POINTS = {
    "operating_points": {
        "adult": {"threshold": 0.6, "band": [0.5, 0.7], "basis": "test"},
        "pediatric": {"threshold": 0.8, "band": [0.75, 0.85]},
    },
    "default_population": "pediatric",
}


def test_band_gives_indeterminate_between_lo_and_hi() -> None:
    p = OperatingPoint(0.6, (0.5, 0.7))
    assert p.decide(0.49) == "no_finding"
    assert p.decide(0.5) == "indeterminate"
    assert p.decide(0.65) == "indeterminate"
    assert p.decide(0.6999) == "indeterminate"
    assert p.decide(0.7) == "finding"
    assert p.binary(0.59) == "no_finding" and p.binary(0.6) == "finding"


def test_zero_width_band_is_the_plain_threshold() -> None:
    p = OperatingPoint(0.6, (0.6, 0.6))
    assert p.decide(0.5999) == "no_finding" and p.decide(0.6) == "finding"


@pytest.mark.parametrize(
    "threshold,band", [(0.6, (0.65, 0.7)), (0.6, (0.5, 0.55)), (1.0, (0.5, 0.9)), (0.5, (0.0, 0.6))]
)
def test_invalid_points_are_refused(threshold: float, band: tuple[float, float]) -> None:
    with pytest.raises(OperatingPointError):
        OperatingPoint(threshold, band)


def test_parse_points_and_default_population() -> None:
    points = parse_operating_points(POINTS, 0.5)
    assert points.default_population == "pediatric"
    assert points.for_population("adult").threshold == 0.6
    assert points.for_population("pediatric").band == (0.75, 0.85)
    assert parse_operating_points(points.as_dict(), 0.5) == points  # round trip


def test_legacy_manifest_keeps_its_single_threshold() -> None:
    points = parse_operating_points({}, 0.7)
    assert points.default_population == "adult"
    for pop in ("adult", "pediatric"):
        p = points.for_population(pop)  # type: ignore[arg-type]
        assert p.threshold == 0.7 and p.band == (0.7, 0.7)


@pytest.mark.parametrize(
    "block",
    [
        {"adult": {"threshold": 0.5}},
        {"adult": {"threshold": 0.5}, "pediatric": {"threshold": "x"}},
        {"adult": {"threshold": 0.5}, "pediatric": {"threshold": 0.5, "band": [0.4]}},
        {"adult": {"threshold": 0.5}, "pediatric": {"threshold": 0.5}, "elderly": {}},
    ],
)
def test_malformed_blocks_are_refused(block: dict[str, Any]) -> None:
    with pytest.raises(OperatingPointError):
        parse_operating_points({"operating_points": block}, 0.5)


def test_population_selection_order() -> None:
    assert choose_population("adult", 5.0, "pediatric") == ("adult", "request")
    assert choose_population(None, 5.0, "adult") == ("pediatric", "dicom_age")
    assert choose_population(None, 40.0, "pediatric") == ("adult", "dicom_age")
    assert choose_population(None, None, "pediatric") == ("pediatric", "default")
    assert population_for_age(17.9) == "pediatric" and population_for_age(18.0) == "adult"


def test_manifest_reads_operating_points(tiny_weights: Path) -> None:
    good = json.loads((tiny_weights / "classifier.manifest.json").read_text())
    assert parse_manifest(good).operating.adult.threshold == good["threshold"]  # legacy
    m = parse_manifest(good | POINTS)
    assert m.operating.pediatric.threshold == 0.8 and m.operating.default_population == "pediatric"
    bad = copy.deepcopy(good | POINTS)
    bad["operating_points"]["adult"]["band"] = [0.7, 0.8]
    with pytest.raises(ManifestError):
        parse_manifest(bad)
