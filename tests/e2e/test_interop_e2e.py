"""End-to-end: DICOM outputs and the batch CLI with the shipped weights on real radiographs."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service import batch
from service.app import create_app
from service.settings import DEFAULT_WEIGHTS, Settings
from tests.dicom_tools import dciodvfy_errors, read_dicom
from tests.factories import SHARED, radiograph_dicom, real_image_path

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real_client(shared_data: Path) -> Iterator[TestClient]:
    if not (DEFAULT_WEIGHTS / "classifier.manifest.json").is_file():
        pytest.skip("shipped weights are not in weights/ yet")
    with TestClient(create_app(Settings(_env_file=None)), raise_server_exceptions=False) as c:  # type: ignore[call-arg]
        yield c


def _post(client: TestClient, route: str, data: bytes, **params: str) -> bytes:
    r = client.post(route, params=params, files={"file": ("study", data)})
    assert r.status_code == 200, r.text
    return r.content


def test_seg_and_sc_of_a_real_radiograph_validate(real_client: TestClient) -> None:
    data = radiograph_dicom(real_image_path(), patient_name="E2E^PATIENT")
    body = real_client.post("/segment", files={"file": ("study", data)}).json()
    seg_bytes = _post(real_client, "/segment", data, format="dicom-seg")
    sc_bytes = _post(real_client, "/explain/gradcam", data, format="dicom-sc")
    assert dciodvfy_errors(seg_bytes) == [] and dciodvfy_errors(sc_bytes) == []
    source = read_dicom(data)
    seg = hd.seg.Segmentation.from_dataset(read_dicom(seg_bytes))
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID],
        segment_numbers=list(range(1, len(body["structures"]) + 1)),
        combine_segments=False,
    )[0]
    for i, s in enumerate(body["structures"]):
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask_png"])))) > 0
        assert png.any() or s["provenance"] == "derived"
        assert np.array_equal(masks[:, :, i].astype(bool), png), s["name"]
    assert read_dicom(sc_bytes).StudyInstanceUID == source.StudyInstanceUID


def test_batch_cli_equals_the_api_on_real_images(
    real_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CXR_WEIGHTS_DIR", raising=False)
    with (SHARED / "classification.csv").open() as fh:
        rows = list(csv.DictReader(fh))[::1500][:8]  # a fixed spread over the sources
    folder = tmp_path / "in"
    folder.mkdir()
    for r in rows:
        (folder / Path(r["image"]).name).symlink_to(SHARED / r["image"])
    out = tmp_path / "results.csv"
    assert batch.main([str(folder), "--out", str(out)]) == 0
    with out.open(encoding="utf-8", newline="") as fh:
        results = {r["path"]: r for r in csv.DictReader(fh)}
    for path in folder.iterdir():
        api = real_client.post("/classify", files={"file": ("x", path.read_bytes())}).json()
        row = results[path.name]
        assert float(row["probability_finding"]) == api["probability_finding"]
        assert row["decision"] == api["decision"]
