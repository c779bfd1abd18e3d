"""Population operating points, the borderline band and site calibration files, over HTTP."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.factories import dicom_bytes, dicom_dataset, png_bytes, synthetic_chest
from tests.tiny_models import write_tiny_weights

CHEST = png_bytes(synthetic_chest(160, 136))


def _dicom(age: str | None) -> bytes:
    ds = dicom_dataset(synthetic_chest(160, 136, 12), bits_stored=12)
    if age is not None:
        ds.PatientAge = age
    return dicom_bytes(ds)


def _classify(client: TestClient, data: bytes, **params: Any) -> dict[str, Any]:
    r = client.post("/classify", params=params, files={"file": ("x", data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def probability(tiny_weights: Path) -> float:
    settings = Settings(weights_dir=tiny_weights, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        return float(_classify(c, CHEST)["probability_finding"])


@pytest.fixture(scope="module")
def banded(tmp_path_factory: pytest.TempPathFactory, probability: float) -> Iterator[TestClient]:
    """Adult band around the chest's probability; pediatric threshold far below it."""
    folder = write_tiny_weights(tmp_path_factory.mktemp("banded"))
    path = folder / "classifier.manifest.json"
    manifest = json.loads(path.read_text())
    p = probability
    assert 0.0 < p < 1.0
    manifest["operating_points"] = {
        "adult": {"threshold": p, "band": [0.5 * p, (1 + p) / 2]},
        "pediatric": {"threshold": 0.4 * p, "band": [0.3 * p, 0.45 * p]},
    }
    manifest["default_population"] = "adult"
    path.write_text(json.dumps(manifest))
    settings = Settings(weights_dir=folder, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        yield c


def test_borderline_probability_is_indeterminate(banded: TestClient) -> None:
    body = _classify(banded, CHEST)
    assert body["decision"] == "indeterminate"
    op = body["operating_point"]
    assert op["population"] == "adult" and op["population_source"] == "default"
    assert op["band"][0] < body["probability_finding"] < op["band"][1]
    assert op["calibration"]["source"] == "manifest"


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_population_query_beats_dicom_age_beats_default(banded: TestClient) -> None:
    child = _classify(banded, _dicom("005Y"))
    assert child["operating_point"]["population"] == "pediatric"
    assert child["operating_point"]["population_source"] == "dicom_age"
    assert child["decision"] == "finding"
    adult = _classify(banded, _dicom("045Y"))
    assert adult["operating_point"]["population_source"] == "dicom_age"
    assert adult["decision"] == "indeterminate"
    forced = _classify(banded, _dicom("005Y"), population="adult")
    assert forced["operating_point"] == adult["operating_point"] | {"population_source": "request"}
    assert _classify(banded, CHEST, population="pediatric")["decision"] == "finding"
    assert _classify(banded, _dicom(None))["operating_point"]["population_source"] == "default"
    assert _classify(banded, _dicom("bogus"))["operating_point"]["population_source"] == "default"


def test_unknown_population_is_a_parameter_error(banded: TestClient) -> None:
    r = banded.post("/classify", params={"population": "elderly"}, files={"file": ("x", CHEST)})
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameter"


def test_study_and_explanations_carry_the_band(banded: TestClient) -> None:
    files = [("files", ("a.png", CHEST, "image/png"))] * 2
    study = banded.post("/classify/study", files=files).json()
    assert study["decision"] == "indeterminate" and study["views"][0]["decision"] == "indeterminate"
    gc = banded.post("/explain/gradcam", files={"file": ("x.png", CHEST, "image/png")}).json()
    assert gc["decision"] == "indeterminate" and gc["target"] in ("finding", "no_finding")
    assert gc["operating_point"]["band"] == study["operating_point"]["band"]


def _site_file(folder: Path, sha: str, **overrides: Any) -> Path:
    doc = {
        "schema_version": 1,
        "kind": "site_calibration",
        "id": "test-site",
        "version": "2026-12-02T05:00:00Z",
        "model_sha256": sha,
        "temperature": 2.0,
        "operating_points": {
            "adult": {"threshold": 0.3, "band": [0.3, 0.3]},
            "pediatric": {"threshold": 0.3, "band": [0.3, 0.3]},
        },
        "default_population": "adult",
        "fit": {},
    } | overrides
    path = folder / "site.json"
    path.write_text(json.dumps(doc))
    return path


def test_site_calibration_is_applied_and_named(tiny_weights: Path, tmp_path: Path) -> None:
    sha = json.loads((tiny_weights / "classifier.manifest.json").read_text())["sha256"]
    site = _site_file(tmp_path, sha)
    settings = Settings(weights_dir=tiny_weights, calibration_file=site, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        version = c.get("/version").json()
        assert version["calibration"] == {
            "source": "site",
            "id": "test-site",
            "version": "2026-12-02T05:00:00Z",
        }
        body = _classify(c, CHEST)
        assert body["temperature"] == 2.0 and body["threshold"] == 0.3
        assert body["calibration_offset"] == 0.0
        assert body["operating_point"]["calibration"]["id"] == "test-site"
    # the same film under a Platt-scaled site file: sigmoid(logit / 2 - 1.5)
    site = _site_file(tmp_path, sha, offset=-1.5)
    settings = Settings(weights_dir=tiny_weights, calibration_file=site, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        shifted = _classify(c, CHEST)
    logit = math.log(body["probability_finding"] / (1 - body["probability_finding"]))
    expected = 1 / (1 + math.exp(-(logit - 1.5)))
    assert shifted["calibration_offset"] == -1.5 and shifted["calibrated"]
    assert shifted["probability_finding"] == pytest.approx(expected, abs=1e-5)


def test_calibration_file_for_another_model_stops_start_up(
    tiny_weights: Path, tmp_path: Path
) -> None:
    site = _site_file(tmp_path, "f" * 64)
    settings = Settings(weights_dir=tiny_weights, calibration_file=site, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(Exception, match="another classifier"), TestClient(create_app(settings)):
        pass


def test_learned_gate_for_another_classifier_stops_start_up(
    tiny_weights: Path, tmp_path: Path
) -> None:
    import numpy as np

    from inference.ood import save_ood_model
    from training.gate import VARIANTS, fit_gaussian

    folder = tmp_path / "weights"
    shutil.copytree(tiny_weights, folder)
    rng = np.random.default_rng(0)
    fitted, _ = fit_gaussian({k: rng.normal(0, 1, (50, 4)) for k in VARIANTS}, rank=2, threshold=3)
    save_ood_model(fitted, folder / "input_gate.manifest.json", "e" * 64)
    settings = Settings(weights_dir=folder, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(Exception, match="another classifier"), TestClient(create_app(settings)):
        pass
