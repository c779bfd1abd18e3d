"""H26 / G10: API keys, the failed-attempt throttle, the audit record and the startup refusal."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.__main__ import anonymous_exposure
from service.app import create_app
from service.auth import ApiKeyAuthenticator, FailureThrottle, key_digest, parse_key_specs
from service.settings import AuthSettings, Settings
from tests import factories as f

KEY = "s3cret-key-for-tests-0123456789abcdef"
OTHER_KEY = "another-key-for-the-ris-0123456789"
PROTECTED = [
    ("post", "/classify"),
    ("post", "/classify/study"),
    ("post", "/segment"),
    ("post", "/render"),
    ("get", "/limits"),
    ("post", "/explain/gradcam"),
    ("post", "/explain/lime"),
    ("post", "/report"),
    ("post", "/report/stream"),
    ("post", "/explain/report"),
    ("get", "/version"),
    ("post", "/explain/lime/jobs"),
    ("get", "/explain/lime/jobs/" + "0" * 32),
    ("delete", "/explain/lime/jobs/" + "0" * 32),
]


def _settings(tiny_weights: Path, **auth: object) -> Settings:
    keys = [f"pacs:{key_digest(KEY)}", f"ris:{key_digest(OTHER_KEY)}"]
    return Settings(  # type: ignore[call-arg]
        weights_dir=tiny_weights,
        _env_file=None,
        auth=AuthSettings(api_keys=keys, **auth),  # type: ignore[arg-type]
    )


@pytest.fixture()
def secured(tiny_weights: Path) -> Iterator[TestClient]:
    # A fresh app per test: the failure throttle is per app and must start empty.
    with TestClient(create_app(_settings(tiny_weights)), raise_server_exceptions=False) as c:
        yield c


def _upload() -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("x.png", f.png_bytes(f.synthetic_chest(160, 136)), "image/png")}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_operation_refuses_a_missing_key(secured: TestClient, method: str, path: str) -> None:
    resp = secured.request(method.upper(), path)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["code"] == "missing_credentials"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"X-API-Key": KEY.upper()},
    ],
)
def test_wrong_keys_get_401_invalid_token(secured: TestClient, headers: dict[str, str]) -> None:
    resp = secured.post("/classify", files=_upload(), headers=headers)
    assert resp.status_code == 401
    assert KEY not in resp.text
    if headers.get("Authorization", "").startswith("Basic"):
        assert resp.json()["code"] == "missing_credentials"  # not a bearer token at all
    else:
        assert 'error="invalid_token"' in resp.headers["www-authenticate"]


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": OTHER_KEY}])
def test_valid_key_by_either_scheme(secured: TestClient, headers: dict[str, str]) -> None:
    resp = secured.post("/classify", files=_upload(), headers=headers)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/openapi.json"])
def test_probes_and_contract_stay_open(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_repeated_failures_are_throttled_but_a_valid_key_still_gets_through(
    secured: TestClient,
) -> None:
    """F5: the throttle slows guessing; it must not lock out key holders that share the
    address (a proxy, the compose bridge). Before the fix the valid key got 429 here."""
    for _ in range(10):
        assert secured.get("/version", headers={"X-API-Key": "guess"}).status_code == 401
    resp = secured.get("/version", headers={"X-API-Key": "guess-again"})
    assert resp.status_code == 429
    assert resp.json()["code"] == "too_many_auth_failures"
    assert 1 <= int(resp.headers["retry-after"]) <= 61
    assert secured.get("/version", headers={"X-API-Key": KEY}).status_code == 200
    assert secured.get("/version").status_code == 429  # no key: still throttled


def test_audit_names_the_principal_never_the_key(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cxr.audit")
    secured.post("/classify", files=_upload(), headers={"Authorization": f"Bearer {KEY}"})
    secured.post("/classify", files=_upload(), headers={"Authorization": "Bearer nope"})
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cxr.audit"]
    assert [(r["principal"], r["outcome"], r["status"]) for r in records] == [
        ("pacs", "ok", 200),
        (None, "denied", 401),
    ]
    text = caplog.text
    assert KEY not in text and "nope" not in text and key_digest(KEY) not in text


def test_client_request_ids_never_become_the_audit_id(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """F7: one client-chosen id appeared on three audit lines of different principals. The
    server now always mints its own id and logs the client's next to it."""
    caplog.set_level(logging.INFO, logger="cxr.audit")
    chosen = {"X-Request-ID": "victim-req-000042"}
    answers = [
        secured.get("/version", headers={**chosen, "Authorization": f"Bearer {KEY}"}),
        secured.get("/version", headers=chosen),  # denied
        secured.get("/version", headers={**chosen, "X-API-Key": OTHER_KEY}),
    ]
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cxr.audit"]
    ids = [r["request_id"] for r in records]
    assert len(set(ids)) == 3 and "victim-req-000042" not in ids
    assert [r["client_request_id"] for r in records] == ["victim-req-000042"] * 3
    assert [a.headers["x-request-id"] for a in answers] == ids
    odd = secured.get("/version", headers={"X-Request-ID": "bad id with spaces"})
    assert json.loads(caplog.records[-1].getMessage())["client_request_id"] is None
    assert odd.headers["x-request-id"] != "bad id with spaces"


def test_without_keys_the_loopback_service_is_open(client: TestClient) -> None:
    assert client.get("/version").status_code == 200  # no keys configured: open (loopback)


def test_openapi_documents_both_schemes(secured: TestClient) -> None:
    spec = secured.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearerKey", "apiKeyHeader"}
    assert spec["paths"]["/classify"]["post"]["security"] == [
        {"bearerKey": []},
        {"apiKeyHeader": []},
    ]
    assert "401" in spec["paths"]["/classify"]["post"]["responses"]
    assert "security" not in spec["paths"]["/health/ready"]["get"]


@pytest.mark.parametrize(
    ("host", "auth", "refused"),
    [
        ("127.0.0.1", {}, False),
        ("localhost", {}, False),
        ("::1", {}, False),
        ("0.0.0.0", {}, True),
        ("10.1.2.3", {}, True),
        ("0.0.0.0", {"allow_anonymous": True}, False),
        ("0.0.0.0", {"api_keys": [f"pacs:{key_digest(KEY)}"]}, False),
    ],
)
def test_startup_refuses_unauthenticated_exposure(
    host: str, auth: dict[str, object], refused: bool
) -> None:
    settings = Settings(host=host, auth=AuthSettings(**auth), _env_file=None)  # type: ignore[arg-type,call-arg]
    assert (anonymous_exposure(settings) is not None) == refused


@pytest.mark.parametrize("entry", ["pacs", "pacs:abc", "pa cs:" + "0" * 64, KEY, "x:" + "g" * 64])
def test_malformed_key_entries_are_refused_without_echo(entry: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_key_specs([entry])
    assert entry not in str(err.value)


def test_throttle_window_and_memory_bound() -> None:
    now = [0.0]
    throttle = FailureThrottle(max_failures=3, window_s=10.0, max_clients=2, clock=lambda: now[0])
    auth = ApiKeyAuthenticator(parse_key_specs([f"a:{key_digest(KEY)}"]), throttle)
    for _ in range(3):
        assert auth.check("1.1.1.1", "bad").status == 401
    assert auth.check("1.1.1.1", "bad").status == 429
    assert auth.check("1.1.1.1", KEY).principal == "a"  # a valid key is never throttled
    now[0] = 10.5
    assert auth.check("1.1.1.1", "bad").status == 401  # the window has passed
    for client in ("2.2.2.2", "3.3.3.3", "4.4.4.4"):
        throttle.record_failure(client)
    assert len(throttle._failures) == 2  # noqa: SLF001 - the bound is the point
