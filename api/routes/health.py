"""Health and version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.deps import ReadinessDep, RegistryDep, SettingsDep
from api.problems import problem_responses
from api.routes.explain import DEFAULT_SAMPLES, MIN_SAMPLES
from api.schemas.health import (
    LimitsInfo,
    Liveness,
    Readiness,
    SampleRange,
    VersionInfo,
    version_info,
)
from api.upload import MAX_STUDY_IMAGES
from explain import MAX_SAMPLES

router = APIRouter(tags=["health"])


@router.get("/health/live", operation_id="health_live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness()


# HEAD for load balancers that probe with it (they got 405 and marked the service down, F10).
@router.head("/health/live", include_in_schema=False)
async def live_head() -> Response:
    return Response()


@router.head("/health/ready", include_in_schema=False)
async def ready_head(readiness: ReadinessDep) -> Response:
    if readiness.ready:
        return Response()
    return Response(status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/health/ready",
    operation_id="health_ready",
    response_model=Readiness,
    responses={503: {"description": "Not ready", "model": Readiness}},
)
async def ready(request: Request, readiness: ReadinessDep) -> JSONResponse:
    body = Readiness(
        status="ready" if readiness.ready else "not_ready", components=readiness.snapshot()
    )
    status = 200 if readiness.ready else 503
    headers = None if readiness.ready else {"Retry-After": "5"}
    if not readiness.ready:
        request.state.refusal = "not_ready"
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


@router.get(
    "/version", operation_id="version", response_model=VersionInfo, responses=problem_responses(500)
)
async def get_version(registry: RegistryDep) -> VersionInfo:
    return version_info(registry, _package_version())


def _package_version() -> str:
    try:
        return version("cxr-xai")
    except PackageNotFoundError:
        return "0+unknown"


@router.get(
    "/limits",
    operation_id="limits",
    summary="Upload and parameter limits, for checks in the client before it sends anything",
    response_model=LimitsInfo,
    responses=problem_responses(500),
)
async def get_limits(settings: SettingsDep) -> LimitsInfo:
    lim = settings.limits
    return LimitsInfo(
        max_upload_bytes=lim.max_upload_bytes,
        max_pixels=lim.max_pixels,
        max_side=lim.max_side,
        max_study_images=MAX_STUDY_IMAGES,
        lime_samples=SampleRange(min=MIN_SAMPLES, max=MAX_SAMPLES, default=DEFAULT_SAMPLES),
        report_languages=["en", "ru"],
    )
