"""Report jobs, idempotency keys and per-kind job URLs (in-memory job store)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ReportSettings, Settings
from tests.factories import png_bytes, synthetic_chest


@pytest.fixture(scope="module")
def chest_png() -> bytes:
    return png_bytes(synthetic_chest(160, 140))


def _files(data: bytes) -> dict:
    return {"file": ("x.png", data, "image/png")}


def _settled(client: TestClient, url: str, timeout_s: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.1)
    raise AssertionError("job did not finish")


def test_report_job_answers_what_the_report_route_answers(
    client: TestClient, chest_png: bytes
) -> None:
    r = client.post("/report/jobs", params={"lime": "false"}, files=_files(chest_png))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["status_url"] == f"/report/jobs/{job['job_id']}"
    done = _settled(client, job["status_url"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    report = done["result"]
    assert set(report["sections"]) == {"findings", "interpretation", "recommendations"}
    assert report["evidence"]["lime_used"] is False and report["attributions"] is None
    # The id is bound to its kind: the same job is not found under another kind's URL.
    assert client.get(f"/explain/lime/jobs/{job['job_id']}").status_code == 404


def test_duplicate_post_with_the_same_idempotency_key_returns_the_same_job(
    client: TestClient, chest_png: bytes
) -> None:
    params = {"n_samples": 50, "seed": 3}
    first = client.post(
        "/explain/lime/jobs",
        params=params,
        files=_files(chest_png),
        headers={"Idempotency-Key": "pacs-retry-0001"},
    )
    again = client.post(
        "/explain/lime/jobs",
        params=params,
        files=_files(chest_png),
        headers={"Idempotency-Key": "pacs-retry-0001"},
    )
    other = client.post(
        "/explain/lime/jobs",
        params=params,
        files=_files(chest_png),
        headers={"Idempotency-Key": "pacs-retry-0002"},
    )
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"] != other.json()["job_id"]
    assert again.headers["location"] == first.headers["location"]
    for job in (first.json(), other.json()):
        assert _settled(client, job["status_url"])["state"] == "succeeded"


@pytest.mark.parametrize("key", ["short", "x" * 129, "has space 123"])
def test_malformed_idempotency_keys_are_refused(
    client: TestClient, chest_png: bytes, key: str
) -> None:
    r = client.post("/explain/lime/jobs", files=_files(chest_png), headers={"Idempotency-Key": key})
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameter"


def test_report_job_without_llm_fails_with_the_503_problem(tiny_weights, chest_png: bytes) -> None:
    settings = Settings(
        weights_dir=tiny_weights, report=ReportSettings(backend="disabled"), _env_file=None
    )  # type: ignore[call-arg]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        job = client.post(
            "/explain/report/jobs", params={"lime": "false"}, files=_files(chest_png)
        ).json()
        assert job["status_url"].startswith("/explain/report/jobs/")
        done = _settled(client, job["status_url"])
    assert done["state"] == "failed" and done["result"] is None
    assert done["error"]["status"] == 503 and done["error"]["code"] == "llm_unavailable"
    assert done["error"]["request_id"]  # the polling request's id


def test_cancelled_report_job_is_cancelled(client: TestClient, chest_png: bytes) -> None:
    job = client.post("/report/jobs", params={"lime": "true"}, files=_files(chest_png)).json()
    cancelled = client.delete(job["status_url"])
    assert cancelled.status_code == 200
    assert _settled(client, job["status_url"])["state"] in ("cancelled", "succeeded")


def test_bundle_job_holds_the_dicom_and_fhir_parts(client: TestClient, chest_png: bytes) -> None:
    import base64
    import io
    import json

    import pydicom

    r = client.post("/report/bundle/jobs", params={"lime": "false"}, files=_files(chest_png))
    assert r.status_code == 202, r.text
    assert r.headers["location"].startswith("/report/bundle/jobs/")
    done = _settled(client, r.json()["status_url"])
    assert done["state"] == "succeeded", done
    parts = {p["role"]: p for p in done["result"]["parts"]}
    assert {"sr", "seg", "fhir"} <= set(parts) and any(k.startswith("sc") for k in parts)
    sr = pydicom.dcmread(io.BytesIO(base64.b64decode(parts["sr"]["data_base64"])))
    assert sr.Modality == "SR" and parts["sr"]["content_type"] == "application/dicom"
    fhir = json.loads(base64.b64decode(parts["fhir"]["data_base64"]))
    assert fhir["resourceType"] == "Bundle"
    assert done["result"]["push"] is None


def test_bundle_job_push_without_pacs_is_refused_at_submit(
    client: TestClient, chest_png: bytes
) -> None:
    r = client.post("/report/bundle/jobs", params={"push": "true"}, files=_files(chest_png))
    assert r.status_code == 422 and r.json()["code"] == "push_not_configured"
