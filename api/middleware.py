"""Pure ASGI middleware: request id, body limits, encoding refusal and the audit record.

Limits are enforced on the raw byte stream, before multipart parsing spools anything to disk:
a declared ``Content-Length`` over the cap is refused before reading, and a chunked body is
counted as it arrives (FastAPI parses forms before dependencies run, so a check in a route would
come too late). A body that arrives too slowly (slow loris) gets 408 and the connection closed;
the body is read before a request takes an inference slot, so no slot is held meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_MEDIA_TYPE, problem_for
from service.auth import ApiKeyAuthenticator
from service.errors import (
    BadRequest,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    TooManyAuthFailures,
    Unauthenticated,
    UnsupportedMediaType,
)
from service.gate import WorkGate
from service.metrics import Metrics

# Given the request's lifespan state and path: the gate that would refuse it now, if any.
Admission = Callable[[dict[str, Any], str], WorkGate | None]
# The route template a request matches ("/explain/lime/jobs/{job_id}"), or "unmatched".
RouteOf = Callable[[Scope], str]

audit_log = logging.getLogger("cxr.audit")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Open without credentials: orchestrator probes, the API contract and its docs, and the
# viewer's static files (the viewer asks for a key before it calls anything else).
PUBLIC_PATHS = frozenset(
    {"/health/live", "/health/ready", "/openapi.json", "/docs", "/redoc", "/", "/viewer"}
)
PUBLIC_PREFIXES = ("/viewer/", "/docs-assets/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, if any."""
    auth = _header(scope, b"authorization")
    if auth:
        m = _BEARER.match(auth)
        return m.group(1) if m else None
    return _header(scope, b"x-api-key") or None


# Signals raised from ``receive``, deliberately outside the service's error tree: the app's
# problem handlers must not answer them (this middleware does, and closes the connection).
class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body crosses the cap."""


class BodyTooSlow(Exception):
    """Raised from ``receive`` when the body misses its deadline."""


Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class BodyDeadline:
    """Apache ``mod_reqtimeout``-style body deadline: ``grace_s`` seconds from the start of the
    request, extended by one second per ``min_rate_bytes_s`` bytes received. A per-read idle
    timeout would not stop a client that sends one byte a second; this does, while a large
    upload on a slow but honest link keeps extending its own deadline."""

    grace_s: float = 20.0
    min_rate_bytes_s: int = 64 * 1024

    def remaining(self, started: float, received: int, now: float) -> float:
        return started + self.grace_s + received / self.min_rate_bytes_s - now


def host_name(host: str) -> str:
    """The name part of a Host header value, lower-case: 'Example:80' -> 'example',
    '[::1]:8000' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_deadline: BodyDeadline | None = None,
        authenticator: ApiKeyAuthenticator | None = None,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
        route_of: RouteOf | None = None,
        trusted_hosts: frozenset[str] | None = None,
    ) -> None:
        self.trusted_hosts = trusted_hosts  # None: any Host
        self.metrics = metrics
        self.route_of = route_of or (lambda scope: "unmatched")
        self.app = app
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.body_deadline = body_deadline or BodyDeadline()
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Always the server's own id: a client-chosen one made request ids collide across
        # principals in the audit log (review F7). The client's, when well-formed, is logged
        # next to it for correlation.
        rid = uuid.uuid4().hex
        incoming = _header(scope, b"x-request-id")
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["client_request_id"] = (
            incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else None
        )
        started = time.perf_counter()
        status_holder = {"status": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            framing = self._framing(scope)
            if framing is not None:
                state["principal"] = None
                await self._send_problem(send_with_id, framing, rid)
                return
            denial = self._authenticate(scope)
            if denial is not None:
                await self._send_problem(send_with_id, denial[0], rid, denial[1])
                return
            refusal = self._refusal(scope)
            if refusal is not None:
                await self._send_problem(send_with_id, refusal, rid)
                return
            gate = self._full_gate(scope)
            if gate is not None:
                scope["state"]["refusal"] = f"overloaded_{gate.resource}"
                # Refused before a byte of the body is read (and the connection closed, since
                # the body stays unread): ~1 ms instead of receiving and parsing the upload.
                overloaded = Overloaded(gate.resource, gate.retry_after_s)
                await self._send_problem(send_with_id, overloaded, rid)
                return
            counted = self._counting_receive(receive, started)
            try:
                await self.app(scope, counted, send_with_id)
            except BodyTooLarge:
                if status_holder["status"] == 0:
                    await self._send_problem(send_with_id, PayloadTooLarge(), rid)
            except BodyTooSlow:
                if status_holder["status"] == 0:
                    await self._send_problem(send_with_id, RequestTimeout(), rid)
        finally:
            self._audit(scope, rid, status_holder["status"], started)
            self._measure(scope, status_holder["status"], started)

    def _measure(self, scope: Scope, status: int, started: float) -> None:
        if self.metrics is None:
            return
        route = scope.get("route")
        # The template, never the raw path (ids, probes of random paths: unbounded labels).
        template = getattr(route, "path", None) or self.route_of(scope)
        method = str(scope.get("method", ""))
        self.metrics.request(method, template, status, time.perf_counter() - started)
        if status == 503:
            self.metrics.refused(str(scope.get("state", {}).get("refusal", "unavailable")))

    def _authenticate(self, scope: Scope) -> tuple[ServiceError, Headers] | None:
        """None when the request may go on (principal recorded), else the denial to send.
        Runs before any body byte is read, so an anonymous client cannot make us read 200 MB."""
        state = scope["state"]
        if self.authenticator is None:
            state["principal"] = "anonymous"
            return None
        if is_public(scope.get("path", "")):
            state["principal"] = "public"
            return None
        client = (scope.get("client") or ("unknown", 0))[0]
        decision = self.authenticator.check(client, presented_key(scope))
        if decision.status == 0:
            state["principal"] = decision.principal
            return None
        state["principal"] = None
        state["denied"] = True
        if decision.status == 429:
            return TooManyAuthFailures(decision.code, None, decision.retry_after_s), []
        challenge = b'Bearer realm="cxr-xai"'
        if decision.code == "invalid_credentials":
            challenge += b', error="invalid_token"'
        return Unauthenticated(decision.code), [(b"www-authenticate", challenge)]

    def _full_gate(self, scope: Scope) -> WorkGate | None:
        if self.admission is None or scope.get("method") != "POST":
            return None
        return self.admission(scope.get("state", {}), scope.get("path", ""))

    def _framing(self, scope: Scope) -> BadRequest | None:
        """400 for a request whose meaning depends on which parser reads it (review F8, F12):
        a repeated Host or credential header (one parser takes the first, another the last),
        an HTTP/1.1 request without Host (RFC 9112 3.2), or a Host this service does not
        answer to (DNS rebinding of the anonymous loopback mode)."""
        names = [name.lower() for name, _ in scope.get("headers", [])]
        for name in (b"host", b"authorization", b"x-api-key"):
            if names.count(name) > 1:
                detail = "Send Host, Authorization and X-API-Key once."
                return BadRequest("duplicate_header", detail)
        host = _header(scope, b"host")
        if host is None:
            if scope.get("http_version") == "1.1":
                return BadRequest("missing_host", "HTTP/1.1 requests must send a Host header.")
            return None
        if self.trusted_hosts is not None and host_name(host) not in self.trusted_hosts:
            return BadRequest("untrusted_host", "This service does not answer to that Host.")
        return None

    def _refusal(self, scope: Scope) -> ServiceError | None:
        query = scope.get("query_string", b"").decode("latin-1")
        names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
        if len(names) != len(set(names)):
            # Every parameter is a scalar; FastAPI would silently take the last value
            # (?lang=en&lang=ru wrote Russian), another parser the first (review F12).
            return InvalidRequest("invalid_parameter", "Send each query parameter at most once.")
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Never inflate: a 10 MB gzip body can expand to 10 GB.
            return UnsupportedMediaType(
                "encoding_not_supported", "Compressed request bodies are not accepted."
            )
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return BadRequest("bad_request", "Invalid Content-Length header.")
            if declared > self.max_body_bytes:
                return PayloadTooLarge()
        return None

    def _counting_receive(self, receive: Receive, started: float) -> Receive:
        total = 0
        complete = False

        async def counted() -> Message:
            nonlocal total, complete
            if complete:
                # After the body only a disconnect can come; no deadline applies to waiting for it.
                return await receive()
            remaining = self.body_deadline.remaining(started, total, time.perf_counter())
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow() from None
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body_bytes:
                    raise BodyTooLarge()
                complete = not message.get("more_body", False)
            return message

        return counted

    @staticmethod
    async def _send_problem(
        send: Send, exc: ServiceError, rid: str, extra: Headers | None = None
    ) -> None:
        """Answer ``exc`` as the routes would, and close: these refusals leave the body unread."""
        p = problem_for(exc, rid)
        body = p.encode()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in p.headers.items()),
            *(extra or []),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": p.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _audit(scope: Scope, rid: str, status: int, started: float) -> None:
        state: dict[str, Any] = scope.get("state", {})
        client = scope.get("client") or ("", 0)
        record = {
            "ts_utc": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": rid,
            "client_request_id": state.get("client_request_id"),
            "principal": state.get("principal"),
            "outcome": "denied" if state.get("denied") else ("ok" if status < 400 else "error"),
            "src_ip": client[0],
            "action": f"{scope.get('method', '')} {scope.get('path', '')}",
            "upload_sha256": state.get("upload_sha256"),
            "model_versions": state.get("model_versions"),
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
        }
        audit_log.info(json.dumps(record))
