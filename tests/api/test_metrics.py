"""GET /metrics: valid exposition (promtool), bounded labels, counters that move."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import png_bytes, synthetic_chest


def _samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def promtool_or_skip() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (Debian package prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return tool


def check_with_promtool(text: str) -> None:
    done = subprocess.run(
        [promtool_or_skip(), "check", "metrics"], input=text.encode(), capture_output=True
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_counters_move_per_route_template(client: TestClient) -> None:
    before = _samples(client)
    png = png_bytes(synthetic_chest(160, 136))
    assert client.post("/classify", files={"file": ("x.png", png, "image/png")}).status_code == 200
    assert client.get("/explain/lime/jobs/" + "0" * 32).status_code == 404
    assert client.get("/no/such/patient-1234").status_code == 404
    after = _samples(client)
    total = "cxr_http_requests_total"
    ok = {"method": "POST", "route": "/classify", "status": "200"}
    assert _value(after, total, **ok) == _value(before, total, **ok) + 1
    templ = {"method": "GET", "route": "/explain/lime/jobs/{job_id}", "status": "404"}
    assert _value(after, total, **templ) == _value(before, total, **templ) + 1
    lost = {"method": "GET", "route": "unmatched", "status": "404"}
    assert _value(after, total, **lost) == _value(before, total, **lost) + 1
    count = "cxr_http_request_duration_seconds_count"
    timed = {"method": "POST", "route": "/classify"}
    assert _value(after, count, **timed) == _value(before, count, **timed) + 1
    work = "cxr_gate_work_seconds_count"
    assert _value(after, work, gate="inference") > _value(before, work, gate="inference")
    text = client.get("/metrics").text
    assert "patient-1234" not in text and "0" * 32 not in text  # no raw paths or ids


def test_job_states_are_counted(client: TestClient) -> None:
    before = _samples(client)
    png = png_bytes(synthetic_chest(160, 136))
    job = client.post(
        "/explain/lime/jobs", params={"n_samples": 50}, files={"file": ("x.png", png, "image/png")}
    ).json()
    deadline = time.monotonic() + 120  # generous: the job runs on a loaded 2-core machine
    while client.get(job["status_url"]).json()["state"] != "succeeded":
        assert time.monotonic() < deadline, "LIME job did not finish"
        time.sleep(0.05)
    after = _samples(client)
    name = "cxr_job_transitions_total"
    for state in ("queued", "running", "succeeded"):
        moved = _value(after, name, kind="lime", state=state) - _value(
            before, name, kind="lime", state=state
        )
        assert moved == 1, state


def test_exposition_passes_promtool(client: TestClient) -> None:
    client.get("/health/ready")
    check_with_promtool(client.get("/metrics").text)


def test_503s_are_counted_by_reason(tiny_weights) -> None:
    from service.app import create_app
    from service.settings import ReportSettings, Settings

    settings = Settings(
        weights_dir=tiny_weights, report=ReportSettings(backend="disabled"), _env_file=None
    )  # type: ignore[call-arg]
    png = png_bytes(synthetic_chest(96, 80))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        before = _samples(client)
        r = client.post("/report", files={"file": ("x.png", png, "image/png")})
        assert r.status_code == 503 and r.json()["code"] == "llm_unavailable"
        after = _samples(client)
    name = "cxr_http_refusals_total"
    moved = _value(after, name, reason="llm_unavailable") - _value(
        before, name, reason="llm_unavailable"
    )
    assert moved == 1
    route = {"method": "POST", "route": "/report", "status": "503"}
    assert _value(after, "cxr_http_requests_total", **route) == 1
