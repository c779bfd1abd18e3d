"""The input suitability gate on every image endpoint (tiny models, rules-only gate).

F2 of the December security review: blank, tiny, noise, colour and text-page uploads used to get
confident "finding" answers. Each must now be refused with 422 not_a_chest_radiograph and a
reason code, before any model output is returned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from api.deps import get_report
from reporting.fake_backend import FakeBackend
from service.app import create_app
from service.report_usecase import ReportService, build_report_service
from service.settings import ReportSettings, Settings
from tests.factories import png_bytes, synthetic_chest
from training.hostile import non_radiographs

BLACK = png_bytes(np.zeros((512, 512), np.uint8))
CHEST = png_bytes(synthetic_chest(160, 136))
MODEL_FIELDS = ("probability_finding", "structures", "sections", "overlay_png", "zones")


def _findings(messages: Any, schema: Any) -> str:
    return json.dumps(
        {
            "findings": "The classifier reports an abnormal finding.",
            "interpretation": "Consistent with an abnormality.",
            "recommendations": "Radiologist review.",
        }
    )


@pytest.fixture(scope="module")
def client(tiny_weights) -> Iterator[TestClient]:
    settings = Settings(
        weights_dir=tiny_weights, report=ReportSettings(backend="disabled"), _env_file=None
    )  # type: ignore[call-arg]
    app = create_app(settings)
    services: dict[str, ReportService] = {}

    def with_fake_llm(request: Request) -> ReportService:
        base: ReportService = request.state.report
        if "svc" not in services:
            services["svc"] = build_report_service(
                base.registry, base.explain, base.settings, FakeBackend(_findings)
            )
        return services["svc"]

    app.dependency_overrides[get_report] = with_fake_llm
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _post(client: TestClient, route: str, data: bytes, **params: Any) -> Any:
    return client.post(route, params=params, files={"file": ("x.png", data, "image/png")})


def _assert_refused(r: Any, reason: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "not_a_chest_radiograph" and body["reason"] == reason
    assert not any(k in body for k in MODEL_FIELDS)
    return body  # type: ignore[no-any-return]


REFUSING_ROUTES = [
    ("/classify", {}),
    ("/segment", {}),
    ("/segment", {"format": "dicom-seg"}),
    ("/explain/gradcam", {}),
    ("/explain/lime", {"n_samples": 50}),
    ("/report", {"lime": "false"}),
    ("/report", {"lime": "true"}),
    ("/explain/report", {"lime": "false"}),
]
IMAGE_ROUTES = [r for r in REFUSING_ROUTES if "format" not in r[1]] + [
    ("/report/stream", {"lime": "false"})
]


@pytest.mark.parametrize(
    ("route", "params"), REFUSING_ROUTES, ids=[f"{r}{p}" for r, p in REFUSING_ROUTES]
)
def test_every_image_endpoint_refuses_a_blank_image(
    client: TestClient, route: str, params: dict[str, Any]
) -> None:
    _assert_refused(_post(client, route, BLACK, **params), "constant")


@pytest.mark.parametrize("lime", ["false", "true"])
def test_report_stream_refuses_before_the_stream_starts(client: TestClient, lime: str) -> None:
    """A refused image gets the same 422 problem+json as /report, not a 200 event stream
    whose only event is an error."""
    r = _post(client, "/report/stream", BLACK, lime=lime)
    assert not r.headers["content-type"].startswith("text/event-stream")
    assert _assert_refused(r, "constant")["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"", "image/png", 422, "empty_upload"),
        (b"not an image at all, just text", "text/plain", 415, "unsupported_format"),
        (CHEST[: len(CHEST) // 3], "image/png", 422, "corrupt_image"),
    ],
)
def test_report_stream_answers_an_invalid_upload_with_a_plain_problem(
    client: TestClient, data: bytes, content_type: str, status: int, code: str
) -> None:
    files = {"file": ("x.png", data, content_type)}
    r = client.post("/report/stream", params={"lime": "false"}, files=files)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


@pytest.mark.parametrize(
    ("route", "params"), IMAGE_ROUTES, ids=[f"{r}{p}" for r, p in IMAGE_ROUTES]
)
def test_every_image_endpoint_answers_a_chest_with_its_input_quality(
    client: TestClient, route: str, params: dict[str, Any]
) -> None:
    r = _post(client, route, CHEST, **params)
    assert r.status_code == 200, r.text
    if route == "/report/stream":
        first = r.text.split("\n\n")[0]
        body = json.loads(first.split("data: ", 1)[1])
        assert first.startswith("event: evidence")
    else:
        body = r.json()
    quality = body["evidence"]["input_quality"] if "evidence" in body else body["input_quality"]
    assert quality["gate"] == "rules" and quality["ood_score"] is None
    assert isinstance(quality["flags"], list)


def test_study_refuses_and_names_the_unsuitable_view(client: TestClient) -> None:
    files = [
        ("files", ("a.png", CHEST, "image/png")),
        ("files", ("b.png", BLACK, "image/png")),
    ]
    body = _assert_refused(client.post("/classify/study", files=files), "constant")
    assert body["view_index"] == 1


def test_lime_job_fails_with_the_gate_problem(client: TestClient) -> None:
    r = _post(client, "/explain/lime/jobs", BLACK, n_samples=50)
    assert r.status_code == 202, r.text
    url = r.json()["status_url"]
    for _ in range(200):
        job = client.get(url).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert job["state"] == "failed" and job["result"] is None
    assert job["error"]["code"] == "not_a_chest_radiograph" and job["error"]["reason"] == "constant"


# The review's table (F2), one request per case: every rules-level reason reaches the client.
F2_CASES = {
    "black-512": "constant",
    "white-512": "constant",
    "grey-512": "constant",
    "one-pixel": "too_small",
    "uniform-512": "noise",
    "strip-10000x3": "too_small",
    "text-page": "document",
    "colour-gradient": "colour",
    "horizontal": "featureless",
    "checkerboard": "graphic",
}


@pytest.mark.parametrize("name", sorted(F2_CASES))
def test_review_inputs_are_refused_on_classify(client: TestClient, name: str) -> None:
    case = next(c for c in non_radiographs() if c.name == name)
    _assert_refused(_post(client, "/classify", case.data), F2_CASES[name])


def test_wide_strip_is_refused_for_its_aspect_ratio(client: TestClient) -> None:
    strip = png_bytes(np.tile(synthetic_chest(160, 136), (1, 4)))  # 160 x 544
    _assert_refused(_post(client, "/classify", strip), "extreme_aspect_ratio")
