"""RFC 9457 problem details: one format for every error the API returns.

One mapping table turns domain exceptions into status codes. Bodies carry ``type``, ``title``,
``status``, a stable ``code``, a generic ``detail`` and the ``request_id``; never the filename,
tag values, submitted input, library exception text or a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from api.upload import UploadProblem
from inference.errors import (
    CorruptImage,
    EmptyUpload,
    IntakeError,
    MalformedDicom,
    MultiFrameNotSupported,
    NoPixelData,
    PixelBudgetExceeded,
    UnsupportedFormat,
    UnsupportedSopClass,
    UnsupportedTransferSyntax,
)
from inference.suitability import NotAChestRadiograph
from service.errors import ServiceUnavailable
from service.gate import Overloaded
from service.jobs import JobCancelled

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://cxr-xai.example/problems/"
log = logging.getLogger("cxr.api")

INTAKE_STATUS: dict[type[IntakeError], int] = {
    EmptyUpload: 422,
    UnsupportedFormat: 415,
    UnsupportedTransferSyntax: 415,
    UnsupportedSopClass: 415,
    PixelBudgetExceeded: 422,
    CorruptImage: 422,
    MultiFrameNotSupported: 422,
    MalformedDicom: 422,
    NoPixelData: 422,
    NotAChestRadiograph: 422,
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
    500: "Internal server error",
    503: "Service unavailable",
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


def problem_for_exception(exc: BaseException, request_id: str | None) -> dict[str, Any]:
    """The problem body a request would have got for ``exc`` (for failed background jobs)."""
    if isinstance(exc, IntakeError):
        status = next((s for cls, s in INTAKE_STATUS.items() if isinstance(exc, cls)), 422)
        return problem_body(status, exc.code, exc.public_detail, request_id) | exc.problem_extra()
    if isinstance(exc, ServiceUnavailable):
        body = problem_body(503, exc.code, exc.detail, request_id)
        return body | {"retry_after_s": exc.retry_after_s}
    log.error("job failed with %s", type(exc).__name__)  # the type only, as for requests
    return problem_body(500, "internal_error", "An unexpected error occurred.", request_id)


async def _intake(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntakeError)
    status = next((s for cls, s in INTAKE_STATUS.items() if isinstance(exc, cls)), 422)
    return problem(request, status, exc.code, exc.public_detail, extra=exc.problem_extra())


async def _upload(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadProblem)
    return problem(request, exc.status, exc.code, exc.detail)


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    request.state.refusal = f"overloaded_{exc.resource}"  # the 503's reason, for metrics
    return problem(
        request,
        503,
        "overloaded",
        "The service is at capacity; retry later.",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceUnavailable)
    request.state.refusal = exc.code
    return problem(
        request, 503, exc.code, exc.detail, headers={"Retry-After": str(exc.retry_after_s)}
    )


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


async def _cancelled(request: Request, exc: Exception) -> JSONResponse:
    # Work stopped because its client disconnected; nobody reads this answer.
    return problem(request, 400, "client_disconnected", "The client closed the request early.")


async def _disconnected(request: Request, exc: Exception) -> JSONResponse:
    # The client went away mid-upload; nobody will read this, but it is not a server error.
    return problem(request, 400, "client_disconnected", "The client closed the request early.")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Log the type only: exception text can quote input bytes or tag values.
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
    return problem(request, 500, "internal_error", "An unexpected error occurred.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IntakeError, _intake)
    app.add_exception_handler(UploadProblem, _upload)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(JobCancelled, _cancelled)
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
