"""End-to-end: the shipped weights behind the real app, fed real radiographs from ../shared."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import DEFAULT_WEIGHTS, Settings
from tests.factories import SHARED, radiograph_dicom

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_client(shared_data: Path) -> Iterator[TestClient]:
    if not (DEFAULT_WEIGHTS / "classifier.manifest.json").is_file():
        pytest.skip("shipped weights are not in weights/ yet")
    with TestClient(create_app(Settings(_env_file=None)), raise_server_exceptions=False) as c:  # type: ignore[call-arg]
        yield c


def _rows(source: str, label: str, n: int) -> list[dict[str, str]]:
    with (SHARED / "classification.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == source and r["label"] == label]
    return rows[-n:]  # the tail of each source: a fixed, arbitrary choice


def _post(client: TestClient, route: str, data: bytes) -> dict:
    r = client.post(route, files={"file": ("study", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


def _prob(client: TestClient, image: str) -> float:
    return float(_post(client, "/classify", (SHARED / image).read_bytes())["probability_finding"])


@pytest.mark.parametrize("source", ["kermany", "nih"])
def test_findings_score_higher_than_normals(real_client: TestClient, source: str) -> None:
    positives = [_prob(real_client, r["image"]) for r in _rows(source, "1", 8)]
    negatives = [_prob(real_client, r["image"]) for r in _rows(source, "0", 8)]
    # Pairwise ranking (AUROC on 64 pairs) well above chance; a sanity check, not the evaluation.
    pairs = [p > n for p in positives for n in negatives]
    assert np.mean(pairs) >= 0.7, (positives, negatives)


def _mask(s: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask_png"]))).convert("L")) > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_segmentation_overlaps_human_lung_masks(real_client: TestClient) -> None:
    image = "images/jsrt/JPCLN001.jpg"
    body = _post(real_client, "/segment", (SHARED / image).read_bytes())
    masks = {s["name"]: _mask(s) for s in body["structures"]}
    for side in ("right_lung", "left_lung"):
        truth = np.asarray(Image.open(SHARED / f"masks/jsrt/JPCLN001__{side}.png")) > 0
        assert _dice(masks[side], truth) >= 0.85, side
    # The patient's right lung is on the image's left.
    right_x = np.flatnonzero(masks["right_lung"].any(axis=0)).mean()
    left_x = np.flatnonzero(masks["left_lung"].any(axis=0)).mean()
    assert right_x < left_x
    spine_cols = np.flatnonzero(masks["spine"].any(axis=0))
    assert np.flatnonzero(masks["right_lung"].any(axis=0)).max() <= spine_cols.mean()


def test_dicom_and_jpeg_agree(real_client: TestClient) -> None:
    path = SHARED / "images/jsrt/JPCLN001.jpg"
    jpeg = _post(real_client, "/classify", path.read_bytes())
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        dcm = _post(
            real_client, "/classify", radiograph_dicom(path, bits=12, photometric=photometric)
        )
        assert dcm["probability_finding"] == pytest.approx(jpeg["probability_finding"], abs=0.02)
