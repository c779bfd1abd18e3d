"""End-to-end explanations: shipped weights, real radiographs (skipped until both exist)."""

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
from tests.factories import SHARED

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_client(shared_data: Path) -> Iterator[TestClient]:
    for name in ("classifier.manifest.json", "segmenter.manifest.json"):
        if not (DEFAULT_WEIGHTS / name).is_file():
            pytest.skip(f"shipped weights are not in weights/ yet ({name})")
    settings = Settings(_env_file=None, report={"backend": "disabled"})  # type: ignore[call-arg]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _finding_images(count: int) -> list[Path]:
    with (SHARED / "classification.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "nih" and r["label"] == "1"]
    return [SHARED / r["image"] for r in rows[:count]]


def _post(client: TestClient, route: str, data: bytes, **params: object) -> dict:
    r = client.post(route, params=params, files={"file": ("x", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_gradcam_stays_in_the_lungs_on_real_radiographs(e2e_client: TestClient) -> None:
    for path in _finding_images(2):
        data = path.read_bytes()
        body = _post(e2e_client, "/explain/gradcam", data, target="finding")
        with Image.open(path) as img:
            size = img.size
        overlay = _decode(body["overlay_png"])
        assert overlay.shape == (size[1], size[0], 3)
        restricted = _decode(body["heatmap_lungs_png"]).astype(np.float32) / 255
        structures = {
            s["name"]: _decode(s["mask_png"]) > 0
            for s in _post(e2e_client, "/segment", data)["structures"]
        }
        lungs = structures["right_lung"] | structures["left_lung"]
        assert restricted[~lungs].mean() < 0.05  # little heat outside the lungs' soft margin
        spine = structures["spine"] & ~lungs
        if spine.any():
            assert restricted[spine].mean() < 0.1
        assert len(body["zones"]) == 6


def test_lime_on_a_real_radiograph_is_reproducible(e2e_client: TestClient) -> None:
    data = _finding_images(1)[0].read_bytes()
    first = _post(e2e_client, "/explain/lime", data, seed=3, n_samples=100)
    again = _post(e2e_client, "/explain/lime", data, seed=3, n_samples=100)
    first.pop("timings"), again.pop("timings")
    assert first == again
    assert first["positive"] and first["quality"]["agreement_iou"] is not None
