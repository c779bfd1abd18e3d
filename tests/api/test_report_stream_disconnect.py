"""F6: a client that leaves /report/stream stops the generation (live uvicorn, raw socket).

The report's model is a FakeBackend that streams 400 words 0.05 s apart (20 s in all). The
client reads the ``evidence`` event and the first sentence, then closes its socket. The
generation must end by its cancel flag, not run to the end; the next report then gets the
LLM slot and completes. Before the fix the stream generator kept the worker thread busy
(``completed`` became 1, ``cancelled`` stayed 0).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Request

from api.deps import get_report
from reporting.fake_backend import FakeBackend
from service.app import create_app
from service.report_usecase import ReportService, build_report_service
from service.settings import ReportSettings, Settings
from tests.factories import png_bytes, synthetic_chest
from tests.live_server import serve_in_thread

WORDS = 400
REPLY = json.dumps(
    {
        "findings": " ".join(["The classifier reports an abnormal finding."] * (WORDS // 6)),
        "interpretation": "The appearance is consistent with an abnormality.",
        "recommendations": "Radiologist review is recommended.",
    }
)


@pytest.fixture(scope="module")
def backend() -> FakeBackend:
    return FakeBackend(REPLY, delay_s=0.05)


@pytest.fixture(scope="module")
def port(tiny_weights: Path, backend: FakeBackend) -> Iterator[int]:
    settings = Settings(  # type: ignore[call-arg]
        weights_dir=tiny_weights, report=ReportSettings(backend="disabled"), _env_file=None
    )
    app = create_app(settings)
    services: list[ReportService] = []

    def swap(request: Request) -> ReportService:
        if not services:
            base: ReportService = request.state.report
            services.append(
                build_report_service(base.registry, base.explain, base.settings, backend)
            )
        return services[0]

    app.dependency_overrides[get_report] = swap
    with serve_in_thread(app, access_log=False) as port:
        yield port


def _request(image: bytes) -> bytes:
    boundary = "f6"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /report/stream?lime=false HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _read_until(conn: socket.socket, marker: bytes, timeout: float) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_leaving_the_stream_stops_generation_and_frees_the_llm(
    port: int, backend: FakeBackend
) -> None:
    image = png_bytes(synthetic_chest(160, 140))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(_request(image))
        seen = _read_until(conn, b"event: sentence", timeout=30)
        assert b"event: evidence" in seen and b"event: sentence" in seen
    # The whole generation would take WORDS * 0.05 = 20 s; wait for either outcome.
    deadline = time.monotonic() + 25
    while backend.cancelled + backend.completed == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (backend.cancelled, backend.completed) == (1, 0)

    # The LLM slot is free again: the next stream runs to its report.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(_request(image))
        seen = _read_until(conn, b"event: report", timeout=60)
    assert b"event: report" in seen
    assert backend.completed == 1
