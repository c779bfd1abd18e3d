"""Low findings of the December security review at the HTTP edge: Host allowlist and no
slash redirect (F8), HEAD on the probes and a complete Allow (F10), parser differentials
(F12). Each test failed on the code before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.factories import png_bytes, synthetic_chest


@pytest.fixture(scope="module")
def loopback_client(tiny_weights: Path) -> Iterator[TestClient]:
    """Anonymous on loopback with the default (automatic) Host allowlist."""
    settings = Settings(weights_dir=tiny_weights, trusted_hosts=None, _env_file=None)  # type: ignore[call-arg]
    with TestClient(
        create_app(settings), base_url="http://127.0.0.1:8000", raise_server_exceptions=False
    ) as c:
        yield c


def _chest() -> bytes:
    return png_bytes(synthetic_chest(160, 136))


def test_foreign_host_is_refused_on_the_anonymous_loopback_service(
    loopback_client: TestClient,
) -> None:
    """F8: DNS rebinding let a web page read the loopback service through its own name."""
    assert loopback_client.get("/version").status_code == 200
    assert loopback_client.get("/version", headers={"Host": "localhost:8000"}).status_code == 200
    r = loopback_client.get("/version", headers={"Host": "evil.example"})
    assert r.status_code == 400 and r.json()["code"] == "untrusted_host"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "evil" not in r.text


def test_configured_hosts_and_wildcard(tiny_weights: Path) -> None:
    named = Settings(weights_dir=tiny_weights, trusted_hosts=["cxr.example.org"], _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(named), base_url="http://cxr.example.org") as c:
        assert c.get("/health/live").status_code == 200
        assert c.get("/health/live", headers={"Host": "other.example"}).status_code == 400


def test_trailing_slash_is_not_redirected_to_the_clients_host(client: TestClient) -> None:
    """F8: GET /version/ with Host: evil.example answered 307 to http://evil.example/version."""
    r = client.get("/version/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_duplicate_credential_or_host_headers_are_400(client: TestClient) -> None:
    """F12: with two Authorization headers one parser takes the first, another the last."""
    for name in ("Authorization", "X-API-Key"):
        r = client.get(
            "/version",
            headers=[(name, "Bearer a"), (name, "Bearer b")],  # type: ignore[arg-type]
        )
        assert r.status_code == 400 and r.json()["code"] == "duplicate_header"


def test_repeated_query_parameters_are_422(client: TestClient) -> None:
    """F12: ?lang=en&lang=ru took the last value."""
    r = client.post(
        "/explain/lime?n_samples=50&n_samples=60", files={"file": ("x", _chest(), "image/png")}
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameter"
    ok = client.post("/explain/lime?n_samples=50", files={"file": ("x", _chest(), "image/png")})
    assert ok.status_code == 200


def test_raw_image_body_is_415_multipart_required(client: TestClient) -> None:
    """F12: a raw JPEG/PNG body got 422 missing_file."""
    r = client.post(
        "/classify", content=_chest(), headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 415 and r.json()["code"] == "multipart_required"


def test_multipart_charset_parameter_is_ignored(client: TestClient) -> None:
    """F12: charset=utf-16 before the boundary decoded the field name 'file' as UTF-16."""
    boundary = "cxrcharsetboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + _chest()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = f"multipart/form-data; charset=utf-16; boundary={boundary}"
    r = client.post("/classify", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_probes_answer_head(client: TestClient, path: str) -> None:
    """F10: HEAD answered 405, so load balancers probing with HEAD marked the service down."""
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""


def test_405_lists_every_allowed_method(client: TestClient) -> None:
    """F10 / schemathesis ST205: the job URL takes GET and DELETE; Allow said GET only."""
    r = client.put("/explain/lime/jobs/" + "0" * 32)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "DELETE"}
    assert r.headers["content-type"].startswith("application/problem+json")
