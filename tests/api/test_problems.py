"""api.problems: one status table for the service's exception tree and the intake errors."""

from __future__ import annotations

import pytest

from api.problems import PROBLEM_MEDIA_TYPE, STATUS, problem_for, status_of
from inference.errors import CorruptImage, IntakeError, UnsupportedFormat
from inference.suitability import NotAChestRadiograph
from service.errors import (
    InvalidRequest,
    JobCancelled,
    Overloaded,
    ServiceError,
    ServiceUnavailable,
    UpstreamTimeout,
)


def _tree(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_tree(sub))]


def test_every_service_error_has_a_status_and_a_code() -> None:
    import api.middleware  # noqa: F401  (registers its subclasses)
    import api.server_protocol  # noqa: F401
    import service.interop_usecase  # noqa: F401

    for cls in _tree(ServiceError):
        assert status_of(cls.__new__(cls)) != 500, cls
        assert cls.code != ServiceError.code, cls
    assert all(400 <= s < 600 for s in STATUS.values())


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry"),
    [
        (UpstreamTimeout("llm_timeout", "late", 7), 504, "llm_timeout", 7),
        (ServiceUnavailable("llm_unavailable", "down", 30), 503, "llm_unavailable", 30),
        (Overloaded("lime", 3), 503, "overloaded", 3),
        (InvalidRequest("missing_file", "send it"), 422, "missing_file", None),
        (JobCancelled(), 400, "client_disconnected", None),
        (UnsupportedFormat(), 415, "unsupported_format", None),
        (CorruptImage(), 422, "corrupt_image", None),
    ],
)
def test_problem_for_maps_status_code_and_retry_after(
    exc: Exception, status: int, code: str, retry: int | None
) -> None:
    p = problem_for(exc, "rid-1")
    assert (p.status, p.body["status"], p.body["code"]) == (status, status, code)
    assert p.body["request_id"] == "rid-1" and p.body["type"].endswith("/" + code)
    assert p.retry_after_s == retry
    assert p.headers == ({} if retry is None else {"Retry-After": str(retry)})


def test_subclass_inherits_its_parents_status() -> None:
    class Drained(ServiceUnavailable):
        code = "draining"

    assert problem_for(Drained(), None).status == 503
    assert problem_for(NotAChestRadiograph("noise"), None).body["reason"] == "noise"
    assert isinstance(NotAChestRadiograph("noise"), IntakeError)


def test_unknown_errors_are_a_generic_500_that_quotes_nothing() -> None:
    p = problem_for(ValueError("PATIENT^NAME in a message"), "r")
    assert p.status == 500 and p.body["code"] == "internal_error"
    assert "PATIENT" not in p.encode().decode()
    assert PROBLEM_MEDIA_TYPE == "application/problem+json"
