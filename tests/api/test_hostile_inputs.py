"""Hostile uploads through the HTTP API (docs: ../shared/docs/hostile-inputs.md, H1-H3, H6-H22).

Postconditions checked for every case: the documented status and stable ``code``; an
``application/problem+json`` body with exactly type/title/status/code/detail/request_id; no
filename, tag value (PatientName canary), library exception text or traceback in the body or the
logs; no 5xx; an answer within 2 s; and the app keeps answering ``/health/live`` afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import httpx as client_httpx
from starlette.types import ASGIApp

from api.problems import PROBLEM_MEDIA_TYPE, status_of
from service.app import create_app
from service.settings import LimitSettings, Settings
from tests import factories as f
from tests.live_server import serve_in_thread
from tests.unit.test_intake import CASES, Case

PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "request_id"}
HOSTILE_NAME = "CANARY_Doe^John_MRN123.dcm"
# Substrings that must never reach a response body or a log line: the canaries planted in
# filenames and tags, and the marks of library exception text and tracebacks.
LEAKS = (
    "CANARY",
    "Doe^John",
    "MRN123",
    "passwd",
    "Ignore previous",
    "Traceback",
    'File "',
    ".py",
    "pydicom",
    "PIL",
    "Pillow",
    "zlib",
    "numpy",
    "libjpeg",
    "openjpeg",
    "Error",
    "Exception",
    "Errno",
)
MAX_REJECT_S = 2.0
# Status per stable code, written out from the doc's table and status policy (not read from
# api.problems, so that a changed mapping fails here instead of being mirrored).
DOC_STATUS = {
    "empty_upload": 422,
    "unsupported_format": 415,
    "unsupported_transfer_syntax": 415,
    "unsupported_sop_class": 415,
    "pixel_budget_exceeded": 422,
    "corrupt_image": 422,
    "multi_frame_not_supported": 422,
    "malformed_dicom": 422,
    "no_pixel_data": 422,
}


# ---- helpers -------------------------------------------------------------------------------------


def multipart(
    parts: list[tuple[str, bytes | None, bytes, str]], boundary: str = "hostileXYZ"
) -> tuple[bytes, str]:
    """A hand-made multipart/form-data body: (field, raw filename or None, data, content type).

    Built by hand so that filenames carry exact bytes (NUL, 10 KB, path separators) that an HTTP
    client library would escape or refuse.
    """
    out = b""
    for name, filename, data, ctype in parts:
        disposition = f'form-data; name="{name}"'.encode()
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        out += (
            f"--{boundary}\r\n".encode()
            + b"Content-Disposition: "
            + disposition
            + b"\r\n"
            + f"Content-Type: {ctype}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def post_file(
    client: TestClient,
    route: str,
    data: bytes,
    *,
    filename: bytes = HOSTILE_NAME.encode(),
    ctype: str = "image/png",
) -> client_httpx.Response:
    body, content_type = multipart([("file", filename, data, ctype)])
    return client.post(route, content=body, headers={"content-type": content_type})


def assert_no_leak(text: str) -> None:
    for needle in LEAKS:
        assert needle.lower() not in text.lower(), f"{needle!r} leaked"


def assert_problem(resp: client_httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body = resp.json()
    assert set(body) == PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code
    assert isinstance(body["type"], str) and body["type"].endswith("/" + code)
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] and body["request_id"] == resp.headers["x-request-id"]
    assert_no_leak(resp.text)
    return body


def assert_alive(client: TestClient) -> None:
    started = time.perf_counter()
    live = client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert time.perf_counter() - started < 1.0


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the case; checked for leaks and for unhandled-exception reports."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        assert_no_leak(record.getMessage())
        assert not (record.name == "cxr.api" and record.levelno >= logging.ERROR), (
            record.getMessage()
        )


# ---- H7-H22 through the API ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_is_a_clean_problem(
    client: TestClient, case: Case, logs: pytest.LogCaptureFixture
) -> None:
    data = case.build()
    if not data:  # H7 empty file: refused by the upload layer, same code as the decoder's
        expected_status, expected_code = 422, "empty_upload"
    else:
        expected_status, expected_code = DOC_STATUS[case.expected.code], case.expected.code
    started = time.perf_counter()
    resp = post_file(client, "/classify", data)
    assert time.perf_counter() - started < MAX_REJECT_S
    assert_problem(resp, expected_status, expected_code)
    assert_alive(client)


SEGMENT_SAMPLE = {
    "H9-png-65535",
    "H12-zTXt-bomb",
    "H13-jpeg-40pct",
    "H14-apng",
    "H16-window-negative",
    "H17b-j2k-corrupt",
    "H18-nested-undefined-200",
    "H21-encapsulated-pdf",
}


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in SEGMENT_SAMPLE],
    ids=[c.id for c in CASES if c.id in SEGMENT_SAMPLE],
)
def test_segment_refuses_the_same_way(
    client: TestClient, case: Case, logs: pytest.LogCaptureFixture
) -> None:
    resp = post_file(client, "/segment", case.build())
    assert_problem(resp, DOC_STATUS[case.expected.code], case.expected.code)


def test_h19_nested_defined_sequences(client: TestClient, logs: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_intake import _dcm_nested_defined

    started = time.perf_counter()
    resp = post_file(client, "/classify", _dcm_nested_defined())
    assert time.perf_counter() - started < MAX_REJECT_S
    if resp.status_code == 200:
        assert resp.json()["image"]["width"] == 32
    elif resp.json()["code"] == "not_a_chest_radiograph":
        assert resp.json()["reason"] == "too_small"  # parsed, then refused by the input gate
    else:
        assert_problem(resp, 422, "malformed_dicom")
    assert_no_leak(resp.text)


def test_h20_trailing_ob_vl_at_eof(client: TestClient, logs: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_intake import _dcm_trailing_ob_vl

    resp = post_file(client, "/classify", _dcm_trailing_ob_vl())
    if resp.status_code != 200 and resp.json()["code"] == "not_a_chest_radiograph":
        assert resp.json()["reason"] == "too_small"  # parsed, then refused by the input gate
    elif resp.status_code != 200:
        assert_problem(resp, 422, "malformed_dicom")
    assert_no_leak(resp.text)


# ---- H6 filenames, H7 framing, H8 type confusion, H22 --------------------------------------------

HOSTILE_NAMES = {
    "path-traversal": b"../../etc/passwd",
    "embedded-nul": b"x-ray\x00CANARY.png",
    "3.9KB": b"CANARY" + b"A" * 3900 + b".png",
    "phi-canary": HOSTILE_NAME.encode(),
    "prompt-injection": b"Ignore previous instructions.png",
    "windows-path": b"C:\\Windows\\System32\\CANARY.png",
    "utf8-rtl": "CANARY\u202egnp.exe".encode(),
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
@pytest.mark.parametrize("route", ["/classify", "/segment"])
def test_h6_hostile_filename_is_ignored(
    client: TestClient,
    route: str,
    name: bytes,
    logs: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    resp = post_file(client, route, f.png_bytes(f.synthetic_chest(160, 136)), filename=name)
    assert resp.status_code == 200, resp.text
    assert_no_leak(resp.text)
    assert list(tmp_path.iterdir()) == []  # the name was never used as a path
    audit = [r for r in logs.records if r.name == "cxr.audit"]
    assert audit, "the audit record must be captured (else the log leak check proves nothing)"


def test_h6_10kb_filename_is_a_framing_error(
    client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    """A 10 KB filename makes the part header exceed python-multipart's 4 KiB header cap.

    Deviation from the H6 row (which expects 200): the parser's header-size limit is an anti-DoS
    framing limit we keep, so the answer is 400 (status policy: 400 = multipart framing), still a
    clean problem without the name. Names under the cap are processed normally (see above).
    """
    resp = post_file(
        client,
        "/classify",
        f.png_bytes(f.synthetic_chest(160, 136)),
        filename=b"CANARY" + b"A" * 10240 + b".png",
    )
    assert_problem(resp, 400, "bad_request")
    assert_alive(client)


def test_h7_empty_file(client: TestClient, logs: pytest.LogCaptureFixture) -> None:
    assert_problem(post_file(client, "/classify", b""), 422, "empty_upload")


def test_h7_missing_file_field(client: TestClient, logs: pytest.LogCaptureFixture) -> None:
    body, ctype = multipart(
        [("image", b"a.png", f.png_bytes(f.synthetic_chest(160, 136)), "image/png")]
    )
    resp = client.post("/classify", content=body, headers={"content-type": ctype})
    assert_problem(resp, 422, "missing_file")
    body, ctype = multipart([("note", None, b"hello", "text/plain")])
    resp = client.post("/classify", content=body, headers={"content-type": ctype})
    assert_problem(resp, 422, "missing_file")


def test_h7_not_multipart(client: TestClient, logs: pytest.LogCaptureFixture) -> None:
    resp = client.post(
        "/classify",
        content=f.png_bytes(f.synthetic_chest(160, 136)),
        headers={"content-type": "image/png"},
    )
    assert_problem(resp, 415, "multipart_required")  # F12: was 422 missing_file
    assert_problem(client.post("/classify"), 422, "missing_file")


@pytest.mark.parametrize("second_field", ["file", "other"])
def test_h7_two_files(
    client: TestClient, second_field: str, logs: pytest.LogCaptureFixture
) -> None:
    png = f.png_bytes(f.synthetic_chest(160, 136))
    body, ctype = multipart(
        [("file", b"a.png", png, "image/png"), (second_field, b"b.png", png, "image/png")]
    )
    resp = client.post("/classify", content=body, headers={"content-type": ctype})
    assert resp.status_code in (400, 422)
    assert_problem(resp, resp.status_code, "too_many_files")


TYPE_CONFUSION = {
    "png-as-jpeg": (
        lambda: f.png_bytes(f.synthetic_chest(160, 136)),
        "image/jpeg",
        b"scan.jpg",
        "png",
    ),
    "jpeg-as-png": (
        lambda: f.encode(Image.fromarray(f.synthetic_chest(160, 136)), "JPEG"),
        "image/png",
        b"scan.png",
        "jpeg",
    ),
    "dicom-as-png": (
        lambda: f.synthetic_dicom(patient_name=f.CANARY_NAME, height=160, width=136),
        "image/png",
        b"scan.png",
        "dicom",
    ),
    "dicom-as-octet": (
        lambda: f.synthetic_dicom(height=160, width=136),
        "application/octet-stream",
        b"scan",
        "dicom",
    ),
    "webp-as-dicom": (
        lambda: f.encode(Image.fromarray(f.synthetic_chest(160, 136)), "WEBP"),
        "application/dicom",
        b"scan.dcm",
        "webp",
    ),
}


@pytest.mark.parametrize(
    ("build", "ctype", "name", "fmt"), TYPE_CONFUSION.values(), ids=TYPE_CONFUSION.keys()
)
def test_h8_routed_by_magic_bytes(
    client: TestClient,
    build: object,
    ctype: str,
    name: bytes,
    fmt: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    resp = post_file(client, "/classify", build(), filename=name, ctype=ctype)  # type: ignore[operator]
    assert resp.status_code == 200, resp.text
    assert resp.json()["image"]["format"] == fmt
    assert_no_leak(resp.text)


@pytest.mark.parametrize("preamble", [f.PE_STUB, f.ELF_STUB], ids=["MZ-PE", "ELF"])
def test_h22_polyglot_preamble_processed_normally(
    client: TestClient, preamble: bytes, logs: pytest.LogCaptureFixture
) -> None:
    data = f.with_preamble(
        f.synthetic_dicom(patient_name=f.CANARY_NAME, height=160, width=136), preamble
    )
    resp = post_file(client, "/classify", data)
    assert resp.status_code == 200, resp.text
    assert resp.json()["image"]["format"] == "dicom"
    assert_no_leak(resp.text)


def test_worker_survives_the_whole_corpus(client: TestClient) -> None:
    """After every hostile case above (same session app), the process and app still answer."""
    pid = os.getpid()
    for case in CASES[:: max(1, len(CASES) // 10)]:
        post_file(client, "/classify", case.build())
    assert os.getpid() == pid
    assert_alive(client)
    resp = post_file(client, "/classify", f.png_bytes(f.synthetic_chest(160, 136)))
    assert resp.status_code == 200


# ---- H1-H3: body limits and encodings, on the raw ASGI interface ---------------------------------

SMALL_CAP = 1 << 20  # 1 MiB, so that crossing the cap takes a few chunks, not 200 MB


@dataclass
class AsgiResult:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    receive_calls: int
    bytes_sent: int = 0
    messages: list[dict[str, object]] = field(default_factory=list)


def drive(
    app: ASGIApp,
    headers: list[tuple[bytes, bytes]],
    chunks: Iterator[bytes],
    state: dict[str, object] | None = None,
    path: str = "/classify",
) -> AsgiResult:
    """Call the ASGI app directly with a hand-made ``receive`` (no client rewrites the headers)."""
    result = AsgiResult(0, {}, b"", 0)

    async def receive() -> dict[str, object]:
        result.receive_calls += 1
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        result.bytes_sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, object]) -> None:
        result.messages.append(message)
        if message["type"] == "http.response.start":
            result.status = int(message["status"])  # type: ignore[call-overload]
            result.headers = dict(cast(list[tuple[bytes, bytes]], message.get("headers", [])))
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")  # type: ignore[operator]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        # HTTP/1.1 requires Host (400 missing_host without it).
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state or {}),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return result


@pytest.fixture(scope="module")
def small_cap_app(tiny_weights: Path) -> Iterator[tuple[FastAPI, dict[str, object]]]:
    limits = LimitSettings(max_upload_bytes=SMALL_CAP)  # type: ignore[call-arg]
    settings = Settings(weights_dir=tiny_weights, _env_file=None, limits=limits)  # type: ignore[call-arg]
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as tc:
        yield app, dict(tc.app_state)


def _problem_json(result: AsgiResult, status: int, code: str) -> None:
    import json

    assert result.status == status
    assert result.headers[b"content-type"].decode().startswith(PROBLEM_MEDIA_TYPE)
    body = json.loads(result.body)
    assert set(body) == PROBLEM_KEYS and body["code"] == code and body["status"] == status
    assert body["request_id"] == result.headers[b"x-request-id"].decode()
    assert_no_leak(result.body.decode())


def _multipart_head(boundary: str = "capXYZ") -> tuple[bytes, bytes]:
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{HOSTILE_NAME}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"multipart/form-data; boundary={boundary}".encode()


def test_h1_declared_4gb_refused_before_reading(
    small_cap_app: tuple[FastAPI, dict[str, object]],
) -> None:
    app, state = small_cap_app
    head, ctype = _multipart_head()
    started = time.perf_counter()
    result = drive(
        app,
        [(b"content-type", ctype), (b"content-length", b"4294967296")],
        iter([b"0123456789"]),
        state,
    )
    assert time.perf_counter() - started < 0.5
    _problem_json(result, 413, "body_too_large")
    assert result.receive_calls == 0  # nothing read, nothing allocated
    assert result.headers.get(b"connection") == b"close"


def test_h1_declared_4gb_on_default_cap(client: TestClient) -> None:
    """The default 200 MB cap refuses a declared 4 GB body too (the session app, untouched)."""
    result = drive(
        client.app,
        [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", b"4294967296"),
        ],
        iter([b"0123456789"]),
    )
    _problem_json(result, 413, "body_too_large")
    assert result.receive_calls == 0


def test_h2_chunked_upload_over_the_cap(
    small_cap_app: tuple[FastAPI, dict[str, object]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No Content-Length, 201 MB of zeros offered in 64 KiB chunks: 413 once the cap is crossed."""
    app, state = small_cap_app
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where Starlette spools parts
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    head, ctype = _multipart_head()
    chunk = 64 * 1024
    total = 201 * 1024 * 1024

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(total // chunk):
            yield b"\0" * chunk

    started = time.perf_counter()
    result = drive(
        app, [(b"content-type", ctype), (b"transfer-encoding", b"chunked")], body(), state
    )
    assert time.perf_counter() - started < MAX_REJECT_S
    _problem_json(result, 413, "body_too_large")
    # Reading stopped as the cap was crossed, not at the end of the 201 MB.
    assert result.bytes_sent <= SMALL_CAP + 2 * chunk
    assert result.headers.get(b"connection") == b"close"
    assert list(tmp_path.iterdir()) == []  # partial spool gone
    if fds_before is not None:
        import gc

        gc.collect()
        assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_h2_chunked_upload_under_the_cap_still_works(
    small_cap_app: tuple[FastAPI, dict[str, object]],
) -> None:
    """The counting receive does not break normal chunked uploads."""
    app, state = small_cap_app
    body, ctype = multipart(
        [("file", b"a.png", f.png_bytes(f.synthetic_chest(160, 136)), "image/png")]
    )
    chunks = iter([body[i : i + 700] for i in range(0, len(body), 700)])
    result = drive(
        app, [(b"content-type", ctype.encode()), (b"transfer-encoding", b"chunked")], chunks, state
    )
    assert result.status == 200, result.body[:300]


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate", b"br", b"GZIP", b"identity, gzip"])
def test_h3_compressed_body_refused_unread(
    small_cap_app: tuple[FastAPI, dict[str, object]], encoding: bytes
) -> None:
    app, state = small_cap_app
    bomb = gzip.compress(b"\0" * (10 << 20), compresslevel=9)  # 10 MiB -> ~10 KB
    result = drive(
        app,
        [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-encoding", encoding),
            (b"content-length", str(len(bomb)).encode()),
        ],
        iter([bomb]),
        state,
    )
    _problem_json(result, 415, "encoding_not_supported")
    assert result.receive_calls == 0  # never inflated, never even read


def test_h1_invalid_content_length(small_cap_app: tuple[FastAPI, dict[str, object]]) -> None:
    app, state = small_cap_app
    for value in (b"-1", b"abc", b"1e9", b"99999999999999999999999999"):
        result = drive(
            app,
            [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", value)],
            iter([b"x"]),
            state,
        )
        assert 400 <= result.status < 500, (value, result.status)
        assert result.receive_calls == 0 or result.status != 500


# ---- H1-H3 against a real uvicorn server on 127.0.0.1 (raw sockets) ------------------------------


def _serve(settings: Settings) -> Iterator[int]:
    """uvicorn serving ``create_app(settings)`` in a thread on an ephemeral loopback port."""
    with serve_in_thread(create_app(settings), access_log=False) as port:
        yield port


@pytest.fixture(scope="module")
def live_port(tiny_weights: Path) -> Iterator[int]:
    """uvicorn serving the app with a 1 MiB cap."""
    limits = LimitSettings(max_upload_bytes=SMALL_CAP)  # type: ignore[call-arg]
    settings = Settings(weights_dir=tiny_weights, _env_file=None, limits=limits)  # type: ignore[call-arg]
    yield from _serve(settings)


def _read_until_closed(conn: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``timeout`` passes (False)."""
    conn.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    import json

    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower()
    parsed = json.loads(body)
    assert set(parsed) == PROBLEM_KEYS
    assert_no_leak(body.decode())
    return status, parsed


def _live_probe(port: int) -> float:
    """Seconds for one GET /health/live on a fresh connection."""
    import http.client

    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health/live")
    assert conn.getresponse().status == 200
    conn.close()
    return time.perf_counter() - started


def test_h1_raw_socket_4gb_declared(live_port: int) -> None:
    head, ctype = _multipart_head()
    request = (
        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Length: 4294967296\r\n\r\n0123456789"
    )
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", live_port), timeout=5) as conn:
        conn.sendall(request)
        raw, closed = _read_until_closed(conn, timeout=2.0)
    assert closed, "the server must close the connection after refusing the body"
    assert time.perf_counter() - started < 1.0
    status, body = _status_and_body(raw)
    assert status == 413 and body["code"] == "body_too_large"
    assert _live_probe(live_port) < 1.0


def test_h3_raw_socket_gzip(live_port: int) -> None:
    bomb = gzip.compress(b"\0" * (10 << 20), compresslevel=9)
    request = (
        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: " + str(len(bomb)).encode() + b"\r\n\r\n" + bomb
    )
    with socket.create_connection(("127.0.0.1", live_port), timeout=5) as conn:
        conn.sendall(request)
        raw, closed = _read_until_closed(conn, timeout=2.0)
    assert closed
    status, body = _status_and_body(raw)
    assert status == 415 and body["code"] == "encoding_not_supported"


def test_h2_raw_socket_chunked_201mb(live_port: int) -> None:
    """Stream up to 201 MB of zeros chunked: 413 as the 1 MiB cap is crossed, the sender is cut
    off long before 201 MB, and /health/live answers fast on another connection meanwhile."""
    import select

    head, ctype = _multipart_head()
    chunk = b"\0" * (64 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    limit = 201 * 1024 * 1024
    sent = 0
    probes: list[float] = []
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", live_port), timeout=5) as conn:
        conn.sendall(
            b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(head):x}\r\n".encode() + head + b"\r\n"
        )
        try:
            while sent < limit:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable:
                    break
                conn.sendall(framed)
                sent += len(chunk)
                if sent % (256 * 1024) == 0:
                    probes.append(_live_probe(live_port))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection on us: fine, as long as it answered first
        raw, _ = _read_until_closed(conn, timeout=2.0)
    assert time.perf_counter() - started < 5.0
    # Socket buffers absorb some bytes after the server stops reading; 201 MB never go through.
    assert sent < 32 * 1024 * 1024, sent
    status, body = _status_and_body(raw)
    assert status == 413 and body["code"] == "body_too_large"
    assert probes and max(probes) < 1.0, probes
    assert _live_probe(live_port) < 1.0


def test_every_intake_error_is_mapped_as_documented() -> None:
    """api.problems' table agrees with the doc for every IntakeError subclass it knows."""
    from inference.errors import IntakeError

    def subclasses(cls: type[IntakeError]) -> list[type[IntakeError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    mapped = {cls.code: status_of(cls.__new__(cls)) for cls in subclasses(IntakeError)}
    assert {code: mapped.get(code) for code in DOC_STATUS} == DOC_STATUS


# ---- H4 slow loris against a real uvicorn server ----------------------------------------------

SLOW_GRACE_S = 1.0
SLOW_MIN_RATE = 1000  # bytes/s: a 1-byte-per-0.1-s drip is far below it


@pytest.fixture(scope="module")
def slow_body_port(tiny_weights: Path) -> Iterator[int]:
    """uvicorn with a short body deadline: 1 s grace plus 1 s per 1000 bytes received."""
    limits = LimitSettings(  # type: ignore[call-arg]
        body_timeout_s=SLOW_GRACE_S, body_min_rate_bytes_s=SLOW_MIN_RATE
    )
    settings = Settings(weights_dir=tiny_weights, _env_file=None, limits=limits)  # type: ignore[call-arg]
    yield from _serve(settings)


def _drip(port: int, seconds: float) -> tuple[bytes, bool, float]:
    """Headers and a multipart prefix, then one byte every 0.1 s until the server answers or
    ``seconds`` pass. Returns what came back, whether the server closed, and when."""
    import select

    head, ctype = _multipart_head()
    request = (
        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Length: 1000000\r\n\r\n" + head
    )
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        while time.perf_counter() - started < seconds:
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable:
                raw, closed = _read_until_closed(conn, timeout=2.0)
                return raw, closed, time.perf_counter() - started
            try:
                conn.sendall(b"\0")
            except OSError:
                return b"", True, time.perf_counter() - started
    return b"", False, time.perf_counter() - started


def test_h4_slow_body_gets_408_and_close(slow_body_port: int) -> None:
    raw, closed, elapsed = _drip(slow_body_port, seconds=10.0)
    assert closed, "the server must close a connection whose body misses its deadline"
    # Grace 1 s + ~(prefix + drip) / 1000 B/s; the drip is ~10 B/s, so well under 2 s.
    assert SLOW_GRACE_S * 0.9 < elapsed < SLOW_GRACE_S + 1.5, elapsed
    status, body = _status_and_body(raw)
    assert status == 408 and body["code"] == "body_timeout"


def test_h4_parallel_slow_bodies_do_not_starve_normal_clients(slow_body_port: int) -> None:
    """30 dripping connections at once: each is cut off after its deadline, and meanwhile a
    normal upload is classified and /health/live answers fast (no slot is held by a drip)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    image = f.png_bytes(f.synthetic_chest(160, 136))
    with ThreadPoolExecutor(max_workers=30) as pool:
        drips = [pool.submit(_drip, slow_body_port, 10.0) for _ in range(30)]
        time.sleep(0.3)  # all drips connected and waiting for body bytes
        normal_started = time.perf_counter()
        response = httpx.post(
            f"http://127.0.0.1:{slow_body_port}/classify",
            files={"file": ("x.png", image, "image/png")},
            timeout=10,
        )
        normal_elapsed = time.perf_counter() - normal_started
        probe = _live_probe(slow_body_port)
        outcomes = [d.result() for d in drips]
    assert response.status_code == 200
    assert normal_elapsed < SLOW_GRACE_S, normal_elapsed
    assert probe < 0.5
    for raw, closed, elapsed in outcomes:
        assert closed and elapsed < SLOW_GRACE_S + 3.0, elapsed
        assert _status_and_body(raw)[0] == 408


def test_h4_honest_slow_upload_keeps_extending_its_deadline(slow_body_port: int) -> None:
    """A body sent at 2.5x the minimum rate finishes after the 1 s grace and is still accepted:
    every byte received extends the deadline."""
    image = f.png_bytes(f.synthetic_chest(160, 136))  # ~4 KB, passes the input gate
    boundary = "slowOK"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="x"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    rate, chunk = int(SLOW_MIN_RATE * 2.5), 250
    assert len(body) / rate > SLOW_GRACE_S, "the upload must outlast the grace period"
    request = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", slow_body_port), timeout=10) as conn:
        conn.sendall(request)
        for i in range(0, len(body), chunk):
            conn.sendall(body[i : i + chunk])
            time.sleep(chunk / rate)
        raw, _ = _read_until_closed(conn, timeout=5.0)
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]


def test_body_deadline_arithmetic() -> None:
    from api.middleware import BodyDeadline

    d = BodyDeadline(grace_s=20.0, min_rate_bytes_s=1000)
    assert d.remaining(started=100.0, received=0, now=100.0) == 20.0
    assert d.remaining(started=100.0, received=5000, now=110.0) == 15.0
    assert d.remaining(started=100.0, received=10, now=121.0) < 0


# ---- H28 overload: refused before the body is read ---------------------------------------------


def test_h28_full_gate_refuses_before_reading_the_body(
    small_cap_app: tuple[FastAPI, dict[str, object]],
) -> None:
    """With the inference gate full, POST /classify gets 503 + Retry-After without a single
    receive() call, so refusing a 200 MB upload costs nothing; GET probes are not gated."""
    app, state = small_cap_app
    gate = state["explain"].gate  # type: ignore[attr-defined]
    from service.gate import _Ticket

    saved = gate._tickets  # noqa: SLF001 - simulate a full gate without running work
    gate._tickets = [_Ticket(1.0) for _ in range(gate.capacity)]  # noqa: SLF001
    try:
        head, ctype = _multipart_head()
        result = drive(
            app, [(b"content-type", ctype), (b"content-length", b"1000")], iter([head]), state
        )
    finally:
        gate._tickets = saved  # noqa: SLF001
    assert result.status == 503
    assert result.receive_calls == 0
    assert result.headers[b"retry-after"] == str(gate.retry_after_s).encode()
    assert result.headers[b"connection"] == b"close"  # the unread body must not be parsed


@pytest.fixture(scope="module")
def lime_port(tiny_weights: Path) -> Iterator[int]:
    """uvicorn whose LIME evaluates one perturbed image per model call, each made 5 ms slower
    (the tiny model is too fast for a client to leave in the middle of a run)."""
    from service.explain_usecase import ExplainService
    from service.settings import ExplainSettings

    original = ExplainService._predict

    def slow(self: ExplainService, images: object) -> object:
        time.sleep(0.005)
        return original(self, images)  # type: ignore[arg-type]

    explain = ExplainSettings(lime_batch_size=1)  # type: ignore[call-arg]
    settings = Settings(weights_dir=tiny_weights, _env_file=None, explain=explain)  # type: ignore[call-arg]
    ExplainService._predict = slow  # type: ignore[method-assign,assignment]
    try:
        yield from _serve(settings)
    finally:
        ExplainService._predict = original  # type: ignore[method-assign]


def test_h28_client_disconnect_stops_lime_and_frees_the_slot(
    lime_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import httpx

    caplog.set_level(logging.INFO, logger="cxr.audit")
    image = f.png_bytes(f.synthetic_chest(height=256, width=224))
    url = f"http://127.0.0.1:{lime_port}/explain/lime?n_samples=1000"
    started = time.perf_counter()
    assert httpx.post(url, files={"file": ("x", image)}, timeout=60).status_code == 200
    full_s = time.perf_counter() - started
    assert full_s > 1.5, f"the run must outlast the disconnect check ({full_s:.2f} s)"

    boundary, rid = "h28", "h28-abandoned-request"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /explain/lime?n_samples=1000 HTTP/1.1\r\nHost: x\r\nX-Request-ID: {rid}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", lime_port), timeout=5) as conn:
        conn.sendall(head + body)
        time.sleep(0.3)
    # The work notices within one model batch plus the 0.25 s watch interval.
    deadline = time.monotonic() + full_s + 5
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline and not records:
        records = [
            json.loads(r.getMessage())
            for r in caplog.records
            if r.name == "cxr.audit" and rid in r.getMessage()
        ]
        time.sleep(0.05)
    assert records, "the abandoned request was never audited"
    latency_s = float(records[0]["latency_ms"]) / 1000  # type: ignore[arg-type]
    assert records[0]["status"] == 400
    assert latency_s < min(0.3 + 1.0, 0.8 * full_s), (latency_s, full_s)
