from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.errors import ModelError
from service.app import create_app
from service.settings import Settings
from tests.factories import gray_u8, png_bytes, radiograph_dicom, real_image_path


def _post(client: TestClient, route: str, data: bytes, name: str = "x.png") -> dict:
    r = client.post(route, files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_version(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    version = client.get("/version").json()
    assert {m["name"] for m in version["models"]} == {"tiny-classifier", "tiny-segmenter"}
    assert all(len(m["sha256"]) == 64 for m in version["models"])
    assert "CPUExecutionProvider" in version["providers"]


def test_classify_returns_calibrated_decision(client: TestClient, shared_data: Path) -> None:
    body = _post(client, "/classify", real_image_path().read_bytes(), "a.jpg")
    assert 0.0 <= body["probability_finding"] <= 1.0
    assert body["threshold"] == 0.4 and body["temperature"] == 1.5 and body["calibrated"] is True
    expected = "finding" if body["probability_finding"] >= 0.4 else "no_finding"
    assert body["decision"] == expected
    assert body["image"] == {
        "width": 512,
        "height": 512,
        "format": "jpeg",
        "bits_stored": 8,
        "photometric": "MONOCHROME2",
        "analysis_width": 512,
        "analysis_height": 512,
        "analysis_scale": 1.0,
    }
    assert "not a diagnosis" in body["disclaimer"]
    assert "x-request-id" in {k.lower() for k in client.post("/classify").headers}


def test_same_image_same_answer_across_formats(client: TestClient, shared_data: Path) -> None:
    gray = gray_u8(real_image_path())
    png = _post(client, "/classify", png_bytes(gray))
    dcm = _post(client, "/classify", radiograph_dicom(bits=16))
    mono1 = _post(client, "/classify", radiograph_dicom(bits=16, photometric="MONOCHROME1"))
    assert png["probability_finding"] == pytest.approx(dcm["probability_finding"], abs=1e-4)
    assert mono1["probability_finding"] == pytest.approx(png["probability_finding"], abs=1e-4)
    assert dcm["image"]["format"] == "dicom" and mono1["image"]["photometric"] == "MONOCHROME1"


def test_segment_masks_match_upload_size(client: TestClient, shared_data: Path) -> None:
    gray = gray_u8(real_image_path())[:400, :300]  # non-square on purpose
    body = _post(client, "/segment", png_bytes(gray))
    names = [s["name"] for s in body["structures"]]
    assert names == ["right_lung", "left_lung", "heart_mediastinum", "spine", "abdomen"]
    prov = {s["name"]: s["provenance"] for s in body["structures"]}
    assert prov["spine"] == prov["abdomen"] == "derived" and prov["right_lung"] == "predicted"
    for s in body["structures"]:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask_png"]))).convert("L")) > 0
        assert mask.shape == (400, 300)
        assert mask.mean() == pytest.approx(s["area_fraction"], abs=1e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.size == (300, 400) and overlay.mode == "RGB"


def test_validation_errors_are_problems_without_input_echo(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = client.put("/classify")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def _break(weights: Path, tmp_path: Path, how: str) -> Path:
    target = tmp_path / "w"
    shutil.copytree(weights, target)
    manifest = target / "classifier.manifest.json"
    data = json.loads(manifest.read_text())
    if how == "sha":
        data["sha256"] = "0" * 64
    elif how == "output":
        data["outputs"]["cam"] = "no_such_output"
    elif how == "traversal":
        data["file"] = "../classifier.onnx"
    elif how == "size":
        data["input"]["size"] = 256
    elif how == "missing":
        (target / "classifier.onnx").unlink()
    manifest.write_text(json.dumps(data))
    return target


@pytest.mark.parametrize("how", ["sha", "output", "traversal", "size", "missing"])
def test_startup_refuses_broken_models(tiny_weights: Path, tmp_path: Path, how: str) -> None:
    settings = Settings(weights_dir=_break(tiny_weights, tmp_path, how), _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ModelError), TestClient(create_app(settings)):
        pass


def test_study_classifies_every_view_in_one_batch(client: TestClient, shared_data: Path) -> None:
    views = [
        ("files", ("a.jpg", real_image_path().read_bytes(), "image/jpeg")),
        ("files", ("b.dcm", radiograph_dicom(bits=16), "application/dicom")),
        (
            "files",
            ("c.png", png_bytes(gray_u8(real_image_path("images/jsrt/JPCLN002.jpg"))), "image/png"),
        ),
    ]
    r = client.post("/classify/study", files=views)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["index"] for v in body["views"]] == [0, 1, 2]
    probs = [v["probability_finding"] for v in body["views"]]
    assert body["probability_finding"] == max(probs)
    assert probs[0] == pytest.approx(probs[1], abs=1e-4)  # same picture, JPEG and DICOM
    single = _post(client, "/classify", real_image_path().read_bytes())
    assert probs[0] == pytest.approx(single["probability_finding"], abs=1e-5)


def test_study_limits(client: TestClient) -> None:
    one = ("files", ("a.png", png_bytes(np.zeros((64, 64), np.uint8)), "image/png"))
    r = client.post("/classify/study", files=[one] * 7)
    assert r.status_code == 422 and r.json()["code"] == "too_many_files"
    r = client.post("/classify/study", files=[("file", one[1])])
    assert r.status_code == 422 and r.json()["code"] == "missing_file"


def test_full_temp_dir_is_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import tempfile

    import starlette.formparsers

    class FullDisk(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", FullDisk)
    r = client.post("/classify", files={"file": ("a.png", b"\x89PNG" + b"0" * 100, "image/png")})
    assert r.status_code == 503 and r.json()["code"] == "insufficient_storage"
    assert r.headers["retry-after"] == "30"


def test_ready_is_503_while_temp_storage_is_low_and_recovers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H27: readiness follows free space where uploads spool, checked on every probe."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 1 << 20))
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["components"]["temp_storage"] is False
    assert "retry-after" in r.headers
    monkeypatch.setattr(shutil, "disk_usage", real)
    r = client.get("/health/ready")
    assert r.status_code == 200 and r.json()["components"]["temp_storage"] is True
