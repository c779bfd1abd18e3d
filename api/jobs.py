"""Shared pieces of the job routes (POST .../jobs, GET and DELETE .../jobs/{job_id})."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Request, Response
from pydantic import BaseModel

from api.problems import problem_responses
from inference.sniff import detect_format
from service.jobs import JobKind, JobSpec, JobStore, JobView, Params

JobIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job's id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[A-Za-z0-9._:-]{8,128}$",
        description="Client-chosen key (8-128 of A-Z a-z 0-9 . _ : -). A POST repeated with the "
        "same key by the same API key returns the job the first one created instead of running "
        "the work again (while that job is kept).",
    ),
]


def _store(request: Request) -> JobStore:
    return request.state.jobs  # type: ignore[no-any-return]


def _principal(request: Request) -> str | None:
    return getattr(request.state, "principal", None)


async def submit_job(
    request: Request,
    response: Response,
    kind: JobKind,
    params: Params,
    data: bytes,
    key: str | None,
    base: str,
) -> JobView:
    """Queue the job (the container format is checked now: 415 at submit rather than a failed
    job later) and point Location at it."""
    detect_format(data)
    view = await _store(request).submit(JobSpec(kind, params), data, _principal(request), key)
    response.headers["Location"] = f"{base}/{view.id}"
    return view


def _visible(view: JobView | None, kind: JobKind) -> JobView:
    if view is None or view.kind != kind:
        raise HTTPException(404)  # unknown, expired, another key's job or another kind's
    return view


async def read_job(request: Request, job_id: str, kind: JobKind) -> JobView:
    return _visible(await _store(request).get(job_id, _principal(request)), kind)


async def cancel_job(request: Request, job_id: str, kind: JobKind) -> JobView:
    # Check visibility first: another key must not be able to cancel (or probe) the job.
    _visible(await _store(request).get(job_id, _principal(request)), kind)
    return _visible(await _store(request).cancel(job_id, _principal(request)), kind)


def job_fields(view: JobView, request: Request, base: str) -> dict[str, Any]:
    """The fields every job response has; ``result`` is added by the route's schema."""
    error = None
    if view.state == "failed" and view.error is not None:
        error = view.error | {"request_id": getattr(request.state, "request_id", "")}
    return {
        "job_id": view.id,
        "state": view.state,
        "status_url": f"{base}/{view.id}",
        "created_utc": datetime.fromtimestamp(view.created_unix, UTC).isoformat(timespec="seconds"),
        "attempts": view.attempts,
        "result": view.result if view.state == "succeeded" else None,
        "error": error,
    }


JOB_ERRORS = problem_responses(404, 422, 500)


def add_job_routes(
    router: APIRouter,
    path: str,
    kind: JobKind,
    model: type[BaseModel],
    summaries: tuple[str, str],
    base: str | None = None,
) -> None:
    """Register GET ``{path}/{job_id}`` (state, and the answer once it has succeeded) and
    DELETE (cancel) for one job kind, with the stable operationIds ``get_{kind}_job`` and
    ``cancel_{kind}_job``. Every kind has the same two thin handlers; only the answer's schema
    differs. ``base`` is the jobs URL as clients see it (``path`` plus the router's prefix).
    """
    url = base or path

    async def get_job(request: Request, job_id: JobIdPath) -> Any:
        return model(**job_fields(await read_job(request, job_id, kind), request, url))

    async def delete_job(request: Request, job_id: JobIdPath) -> Any:
        return model(**job_fields(await cancel_job(request, job_id, kind), request, url))

    for method, endpoint, verb, summary in (
        ("GET", get_job, "get", summaries[0]),
        ("DELETE", delete_job, "cancel", summaries[1]),
    ):
        router.add_api_route(
            path + "/{job_id}",
            endpoint,
            methods=[method],
            operation_id=f"{verb}_{kind}_job",
            summary=summary,
            response_model=model,
            responses=JOB_ERRORS,
        )
