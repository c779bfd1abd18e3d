"""HTTP-level limits on a real uvicorn with the service's own options (security review F3, F5,
F9): request heads bounded in size, count and time; parser rejects as problem+json with an
audit record; forwarded headers believed only from configured proxies. Raw sockets, because
every HTTP client library refuses to send these requests."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import create_app, server_options
from service.auth import key_digest
from service.settings import AuthSettings, LimitSettings, Settings
from tests.live_server import serve_in_thread

KEY = "f5-valid-key-0123456789abcdef0123456789"


def _serve(settings: Settings) -> Iterator[int]:
    with serve_in_thread(create_app(settings), **server_options(settings)) as port:
        yield port


@pytest.fixture(scope="module")
def port(tiny_weights: Path) -> Iterator[int]:
    limits = LimitSettings(header_timeout_s=1.0)  # type: ignore[call-arg]
    auth = AuthSettings(api_keys=[f"tester:{key_digest(KEY)}"], max_failures=3)
    settings = Settings(weights_dir=tiny_weights, limits=limits, auth=auth, _env_file=None)  # type: ignore[call-arg]
    yield from _serve(settings)


@pytest.fixture(scope="module")
def proxied_port(tiny_weights: Path) -> Iterator[int]:
    settings = Settings(  # type: ignore[call-arg]
        weights_dir=tiny_weights, trusted_proxies=["127.0.0.1"], _env_file=None
    )
    yield from _serve(settings)


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``data`` (tolerating a reset once the server has answered) and read until closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        return _read(conn, timeout)


def _read(conn: socket.socket, timeout: float) -> tuple[bytes, bool]:
    conn.settimeout(timeout)
    out = b""
    try:
        while chunk := conn.recv(65536):
            out += chunk
    except ConnectionResetError:
        return out, True
    except TimeoutError:
        return out, False
    return out, True


def _problem(raw: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body), head


def _get(path: str = "/health/live", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


def test_a_megabyte_of_small_headers_is_431(port: int) -> None:
    """Before the fix uvicorn parsed 16 MiB of headers (RSS 1.4 GB with four connections)."""
    raw, closed = _exchange(port, _get(extra=b"X-H: v\r\n" * 131_072))
    status, body, _ = _problem(raw)
    assert status == 431 and body["code"] == "header_too_large" and closed
    assert "X-H" not in json.dumps(body)


def test_one_huge_header_value_is_431(port: int) -> None:
    raw, closed = _exchange(port, _get(extra=b"X-Big: " + b"a" * 300_000 + b"\r\n"))
    assert _problem(raw)[0] == 431 and closed


def test_too_many_headers_is_431(port: int) -> None:
    extra = b"".join(b"X-%d: v\r\n" % i for i in range(150))  # 1.5 KB, under the byte cap
    raw, closed = _exchange(port, _get(extra=extra))
    status, body, _ = _problem(raw)
    assert status == 431 and body["code"] == "header_too_large" and closed


def test_a_dripped_head_is_cut_off_with_408(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        for _ in range(8):  # one header line every 0.3 s, never finishing the head
            time.sleep(0.3)
            try:
                conn.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        raw, closed = _read(conn, 5.0)
    status, body, _ = _problem(raw)
    assert status == 408 and body["code"] == "header_timeout" and closed


def test_a_silent_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        raw, closed = _read(conn, 5.0)
    assert closed and _problem(raw)[0] == 408


def test_normal_keep_alive_requests_pass(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(3):
            conn.sendall(_get())
            reply = b""
            while b'"status":"ok"' not in reply and b"}" not in reply:
                reply += conn.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200"), reply
            time.sleep(0.5)  # within the keep-alive time, across the head timeout


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET /health/live HTTP/1.1\nHost: x\n\n",
        b"\x00\x01garbage\r\n\r\n",
    ],
    ids=["cl-and-te", "obs-fold", "bare-lf", "garbage"],
)
def test_parser_rejects_are_problem_json_and_audited(
    port: int, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """F9: uvicorn answered these with text/plain and wrote no audit record."""
    caplog.set_level(logging.INFO, logger="cxr.audit")
    raw, closed = _exchange(port, request_bytes)
    status, body, head = _problem(raw)
    assert status == 400 and body["code"] == "bad_request" and closed
    rid = body["request_id"]
    assert f"x-request-id: {rid}".encode() in head.lower()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cxr.audit"]
        mine = [r for r in records if r["request_id"] == rid]
        if mine:
            break
        time.sleep(0.02)
    assert len(mine) == 1 and mine[0]["status"] == 400 and mine[0]["src_ip"] == "127.0.0.1"


def test_forwarded_for_is_not_believed_by_default(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """F5: uvicorn trusted X-Forwarded-For from 127.0.0.1, so rotating it escaped the
    failed-key throttle (40 wrong keys, no 429) and spoofed the audit address."""
    caplog.set_level(logging.INFO, logger="cxr.audit")
    statuses = []
    for i in range(6):
        extra = (
            f"X-Forwarded-For: 10.0.0.{i + 1}\r\nAuthorization: Bearer wrong-{i}\r\n"
            "Connection: close\r\n"
        )
        raw, _ = _exchange(port, _get("/version", extra.encode()))
        statuses.append(int(raw.split(b" ", 2)[1]))
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429, 429]
    ips = {json.loads(r.getMessage())["src_ip"] for r in caplog.records if r.name == "cxr.audit"}
    assert ips == {"127.0.0.1"}
    extra = f"Authorization: Bearer {KEY}\r\nConnection: close\r\n".encode()
    good, _ = _exchange(port, _get("/version", extra))
    assert good.startswith(b"HTTP/1.1 200")  # a valid key passes the throttled address


def test_forwarded_for_is_believed_from_a_configured_proxy(
    proxied_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cxr.audit")
    extra = b"X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n"
    raw, _ = _exchange(proxied_port, _get("/health/live", extra))
    assert raw.startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 2
    ips: set[str] = set()
    while time.monotonic() < deadline and "203.0.113.9" not in ips:
        ips = {
            json.loads(r.getMessage())["src_ip"] for r in caplog.records if r.name == "cxr.audit"
        }
        time.sleep(0.02)
    assert "203.0.113.9" in ips


# ---- the connection cap (uvicorn limit_concurrency) -----------------------------------------

CAP = 2


@pytest.fixture(scope="module")
def capped_port(tiny_weights: Path) -> Iterator[int]:
    limits = LimitSettings(max_connections=CAP, header_timeout_s=30.0)  # type: ignore[call-arg]
    settings = Settings(weights_dir=tiny_weights, limits=limits, _env_file=None)  # type: ignore[call-arg]
    yield from _serve(settings)


def _status_when_free(port: int, deadline_s: float = 10.0) -> int:
    """The status of a plain GET once the server has noticed closed connections (it learns
    of a close asynchronously, so the first try may still count the old one)."""
    deadline = time.monotonic() + deadline_s
    while True:
        raw, _ = _exchange(port, _get(extra=b"Connection: close\r\n"))
        status = int(raw.split(b" ", 2)[1])
        if status != 503 or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_connection_cap_refuses_with_problem_json_and_retry_after(capped_port: int) -> None:
    """uvicorn's own refusal was a text/plain 503 without Retry-After."""
    assert _status_when_free(capped_port) == 200
    holders = [socket.create_connection(("127.0.0.1", capped_port)) for _ in range(CAP)]
    try:
        time.sleep(0.2)  # the server registers the idle connections
        raw, closed = _exchange(capped_port, _get())
        status, body, head = _problem(raw)
        assert status == 503 and closed
        assert body["code"] == "overloaded" and body["status"] == 503
        assert b"retry-after: 2\r\n" in head.lower()
        rid = head.lower().split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        assert body["request_id"] == rid
    finally:
        for conn in holders:
            conn.close()
    assert _status_when_free(capped_port) == 200  # the cap counts open connections only
