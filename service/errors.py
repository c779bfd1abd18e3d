"""The service's exception tree: every way a request, job or stream can fail on purpose.

Each error carries a stable machine-readable ``code``, a generic public ``detail`` (never
input data) and, when retrying later can help, ``retry_after_s``. Only the API layer turns them
into HTTP: one status table in ``api/problems.py`` (looked up along the MRO, so a subclass
inherits its parent's status) serves the routes, jobs, the SSE stream, the middleware and the
connection protocol alike. Upload decoding failures have a parallel root of the same shape in
the core package (``inference.errors.IntakeError``), which cannot import the service.

    ServiceError
    ├── BadRequest              the HTTP framing is ambiguous or invalid          400
    ├── JobCancelled            the client disconnected / the job was cancelled   400
    ├── Unauthenticated         no or invalid API key                             401
    ├── RequestTimeout          head or body did not arrive in time               408
    ├── PayloadTooLarge         the body exceeds the upload limit                 413
    ├── UnsupportedMediaType    wrong body encoding or media type                 415
    ├── InvalidRequest          missing/extra form fields, bad parameter values   422
    ├── TooManyAuthFailures     the address is throttled after failed keys        429 + Retry-After
    ├── HeadersTooLarge         request head over its byte or field limit         431
    ├── ServiceUnavailable      not ready, disk full, LLM down, worker lost       503 + Retry-After
    │   └── Overloaded          a work gate, job store or connection cap is full  503 + Retry-After
    └── UpstreamTimeout         a dependency (the LLM) missed its deadline        504 + Retry-After
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of the tree. Subclasses set the class defaults; an instance may narrow them with a
    more specific ``code``/``detail`` (constants only: both end up in responses and logs)."""

    code: str = "internal_error"
    detail: str = "An unexpected error occurred."
    default_retry_after_s: ClassVar[int | None] = None

    def __init__(
        self, code: str | None = None, detail: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(code or self.code)
        self.code = code or self.code
        self.detail = detail or self.detail
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s

    @property
    def public_detail(self) -> str:
        """The same name as on ``inference.errors.IntakeError``, the tree's core-side twin."""
        return self.detail

    def problem_extra(self) -> dict[str, str | int]:
        """Extra problem+json members (stable codes only, never input data)."""
        return {}


class BadRequest(ServiceError):
    code = "bad_request"
    detail = "The request is not valid HTTP/1.1."


class JobCancelled(ServiceError):
    """Raised inside the work when its job was cancelled or its client disconnected; nobody
    reads the answer, but it is not a server error."""

    code = "client_disconnected"
    detail = "The client closed the request early."


class Unauthenticated(ServiceError):
    code = "missing_credentials"
    detail = "Send a valid API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."


class RequestTimeout(ServiceError):
    code = "body_timeout"
    detail = "The request body did not arrive in time; send it again."


class PayloadTooLarge(ServiceError):
    code = "body_too_large"
    detail = "The request body exceeds the upload limit."


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"
    detail = "The request body's encoding or media type is not accepted."


class InvalidRequest(ServiceError):
    code = "invalid_request"
    detail = "The request is missing a part or has an invalid parameter."


class TooManyAuthFailures(ServiceError):
    code = "too_many_auth_failures"
    detail = "Too many failed authentication attempts; retry later."
    default_retry_after_s = 60


class HeadersTooLarge(ServiceError):
    code = "header_too_large"
    detail = "The request headers are too large or too many."


class ServiceUnavailable(ServiceError):
    """A component is not ready, draining, or a dependency is down."""

    code = "unavailable"
    detail = "The service is temporarily unavailable; retry later."
    default_retry_after_s = 5


class Overloaded(ServiceUnavailable):
    """All slots and queue places of ``resource`` are taken (a work gate, the job store, the
    connection cap)."""

    code = "overloaded"
    detail = "The service is at capacity; retry later."

    retry_after_s: int  # always set: a refusal without a retry hint invites a retry storm

    def __init__(self, resource: str, retry_after_s: int) -> None:
        super().__init__(retry_after_s=retry_after_s)
        self.resource = resource


class UpstreamTimeout(ServiceError):
    """A dependency answered too late (the report language model): 504, not 503, so a client
    can tell "slow, retry with patience" from "down"."""

    code = "upstream_timeout"
    detail = "A dependency did not answer in time; retry later."
    default_retry_after_s = 5
