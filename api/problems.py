"""RFC 9457 problem details: one format for every error the API returns.

One table (:data:`STATUS`) turns the service's exception tree (``service/errors.py``) and the
core's intake errors into status codes, and :func:`problem_for` builds the answer for routes,
jobs, the report stream, the middleware and the connection protocol alike. Bodies carry
``type``, ``title``, ``status``, a stable ``code``, a generic ``detail`` and the
``request_id``; never the filename, tag values, submitted input, library exception text or a
traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from inference.errors import (
    IntakeError,
    UnsupportedFormat,
    UnsupportedSopClass,
    UnsupportedTransferSyntax,
)
from service.errors import (
    BadRequest,
    HeadersTooLarge,
    InvalidRequest,
    JobCancelled,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    TooManyAuthFailures,
    Unauthenticated,
    UnsupportedMediaType,
    UpstreamTimeout,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_DETAIL_500 = "An unexpected error occurred."
TYPE_BASE = "https://cxr-xai.example/problems/"
log = logging.getLogger("cxr.api")

# The one status table. Looked up along the exception's MRO (as Starlette looks up handlers),
# so a subclass not listed gets its nearest listed ancestor's status: every IntakeError is a
# 422 unless it is about the format, every ServiceUnavailable (Overloaded included) a 503.
STATUS: dict[type[Exception], int] = {
    IntakeError: 422,
    UnsupportedFormat: 415,
    UnsupportedTransferSyntax: 415,
    UnsupportedSopClass: 415,
    BadRequest: 400,
    JobCancelled: 400,  # nobody reads it (the client left); not a server error either
    Unauthenticated: 401,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidRequest: 422,
    TooManyAuthFailures: 429,
    HeadersTooLarge: 431,
    ServiceUnavailable: 503,
    UpstreamTimeout: 504,
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Gateway timeout",
}
_GENERIC_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


def status_of(exc: BaseException) -> int:
    """The HTTP status for ``exc`` from :data:`STATUS` (500 for anything not in the tree)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


@dataclass(frozen=True)
class Problem:
    """An error as the API answers it: status, problem+json body and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    retry_after_s: int | None = None

    def encode(self) -> bytes:
        return json.dumps(self.body).encode()


def problem_body(status: int, code: str, detail: str, request_id: str | None) -> dict[str, Any]:
    return {
        "type": TYPE_BASE + code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        "request_id": request_id or "",
    }


def problem_bytes(status: int, code: str, detail: str, request_id: str | None) -> bytes:
    return json.dumps(problem_body(status, code, detail, request_id)).encode()


def problem_for(exc: BaseException, request_id: str | None) -> Problem:
    """What the API answers for ``exc``, wherever it surfaced: a route, a job's result, the
    report stream's error event, the middleware or the connection protocol. Errors outside
    the tree are a 500 whose body says nothing about them (the type alone is logged: exception
    text can quote input bytes or tag values)."""
    if isinstance(exc, ServiceError | IntakeError):
        status = status_of(exc)
        retry = exc.retry_after_s if isinstance(exc, ServiceError) else None
        body = problem_body(status, exc.code, exc.public_detail, request_id)
        body |= exc.problem_extra()
        headers = {} if retry is None else {"Retry-After": str(retry)}
        return Problem(status, body, headers, retry)
    log.error("unhandled %s", type(exc).__name__)
    return Problem(500, problem_body(500, "internal_error", _DETAIL_500, request_id), {})


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    body = problem_body(status, code, detail, rid) | (extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_response(p: Problem) -> JSONResponse:
    return JSONResponse(
        p.body, status_code=p.status, headers=p.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def refusal_reason(exc: BaseException) -> str:
    """The label a 503 is counted under in the metrics (overloaded_<gate>, llm_unavailable)."""
    if isinstance(exc, Overloaded):
        return f"overloaded_{exc.resource}"
    return str(getattr(exc, "code", "unavailable"))


async def _known(request: Request, exc: Exception) -> JSONResponse:
    p = problem_for(exc, getattr(request.state, "request_id", None))
    if p.status == 503:
        request.state.refusal = refusal_reason(exc)
    return problem_response(p)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what kind of error: FastAPI's default echoes the submitted ``input``.
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return problem(
        request,
        422,
        "invalid_parameter",
        "One or more parameters are missing or out of range.",
        extra={"errors": errors},
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first
    partially matching route's (``Allow: GET`` for a path that also takes DELETE, F10)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _GENERIC_CODES.get(status, "http_error")
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = allowed_methods(request)
    return problem(request, status, code, _TITLES.get(status, "Error"), headers=headers)


async def _disconnected(request: Request, exc: Exception) -> JSONResponse:
    # The client went away mid-upload; the same answer as for work it cancelled by leaving.
    return await _known(request, JobCancelled())


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Log the type only: exception text can quote input bytes or tag values.
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
    return problem(request, 500, "internal_error", _DETAIL_500)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IntakeError, _known)
    app.add_exception_handler(ServiceError, _known)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, _unexpected)


PROBLEM_SCHEMA: dict[str, Any] = {
    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"description": _TITLES.get(status, "Error"), **PROBLEM_SCHEMA}
    return out
