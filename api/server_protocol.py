"""The HTTP/1.1 connection protocol: uvicorn's httptools protocol with bounded request heads.

uvicorn's httptools protocol puts no limit on request headers, and they are parsed before any
middleware (authentication included) runs. Four connections sending 16 MiB of small headers
took the server to 1.4 GB, and two 64 MiB header values blocked the event loop for 14 s
(security review F3). This subclass, before the app ever sees a request:

- counts the bytes of each request head as they arrive and refuses a head over
  ``max_header_bytes`` or with more than ``max_headers`` fields: 431 problem+json, connection
  closed (memory per connection stays at the limit plus one socket read);
- gives the head ``header_timeout_s`` from its first byte (from the connection's start for the
  first request): 408 problem+json and closed, so a client dripping header bytes cannot hold a
  connection open (the body has its own deadline, see :mod:`api.middleware`);
- refuses a request over the connection cap (``limit_concurrency``: open connections or running
  requests) with 503 problem+json + Retry-After, closed, where uvicorn would answer a plain-text
  503 without Retry-After; the condition is uvicorn's own, only the answer differs;
- answers the parser's own rejects (request smuggling shapes, bad chunk sizes, bare LF, ...)
  with 400 problem+json instead of uvicorn's text/plain, and writes the one audit record the
  request gets (review F9).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_for
from service.errors import BadRequest, HeadersTooLarge, Overloaded, RequestTimeout, ServiceError

audit_log = logging.getLogger("cxr.audit")


class HeaderTimeout(RequestTimeout):
    code = "header_timeout"
    detail = "The request headers did not arrive in time."


@dataclass(frozen=True)
class HeadLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    retry_after_s: int = 2  # sent with the connection cap's 503


class _Refused(Exception):
    """Raised from a parser callback to stop parsing (httptools re-raises it wrapped, and
    uvicorn then calls :meth:`GuardedHttpToolsProtocol.send_400_response`, which answers
    the refusal recorded in ``_refusal``)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: ServiceError | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # -- head deadline ----------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(HeaderTimeout())

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            self._arm_head_timer()
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(HeadersTooLarge())

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = HeadersTooLarge()
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_head_timer()
        if self._over_connection_cap():
            # Before uvicorn's own check would pick its plain-text 503 app for this request.
            self._refusal = Overloaded("connections", self.limits.retry_after_s)
            raise _Refused()
        super().on_headers_complete()

    def _over_connection_cap(self) -> bool:
        """uvicorn's ``limit_concurrency`` test (this connection counts among ``connections``)."""
        cap = self.limit_concurrency
        return cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # whatever follows on this connection is the next request's head

    # -- refusals ---------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every parser error (its ``msg`` is not sent)."""
        self._refuse(self._refusal or BadRequest())

    def _refuse(self, exc: ServiceError) -> None:
        rid = uuid.uuid4().hex
        p = problem_for(exc, rid)
        self.transport.write(raw_problem(p, rid, self.server_state.default_headers))
        self.transport.close()
        self._in_head = False
        self._disarm_head_timer()
        self._audit(rid, p.status, exc.code)

    def _audit(self, rid: str, status: int, code: str) -> None:
        """The same record as :class:`api.middleware.RequestContextMiddleware` writes; the
        request never reached the app, so method and path are unknown (never the raw bytes)."""
        record = {
            "ts_utc": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": rid,
            "client_request_id": None,
            "principal": None,
            "outcome": "error",
            "src_ip": self.client[0] if self.client else "",
            "action": f"- {code}",
            "upload_sha256": None,
            "model_versions": None,
            "status": status,
            "latency_ms": 0.0,
        }
        audit_log.info(json.dumps(record))


def raw_problem(p: Problem, rid: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response for ``p`` (connection closed), written to the socket directly
    by refusals that happen before the app sees the request."""
    body = p.encode()
    head = [
        b"HTTP/1.1 %d %s\r\n" % (p.status, HTTPStatus(p.status).phrase.encode()),
        *(name + b": " + value + b"\r\n" for name, value in default_headers),
        b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
        b"content-length: %d\r\n" % len(body),
        *(k.lower().encode() + b": " + v.encode() + b"\r\n" for k, v in p.headers.items()),
        b"x-request-id: " + rid.encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


def guarded_protocol(limits: HeadLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
