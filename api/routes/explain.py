"""POST /explain/gradcam and POST /explain/lime."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from api.deps import ExplainDep, RegistryDep
from api.disconnect import cancel_on_disconnect
from api.problems import problem_for_exception, problem_responses
from api.schemas.convert import image_out, model_info
from api.schemas.explain import (
    GradCamResponse,
    LimeJob,
    LimeResponse,
    gradcam_response,
    lime_response,
)
from api.upload import UploadDep, upload_request_body
from explain import MAX_SAMPLES, LimeConfig, Target
from service.explain_usecase import LimeOutcome
from service.jobs import Job, JobQueue

router = APIRouter(prefix="/explain", tags=["explain"])
ERRORS = problem_responses(400, 408, 413, 415, 422, 500, 503)
DEFAULT_SAMPLES = LimeConfig().n_samples
MIN_SAMPLES = 50  # below this LIME's fit is noise on ~100 superpixels (bench/RESULTS.md)

TargetQuery = Annotated[
    Target | None,
    Query(description="Class to explain: finding or no_finding. Default: the model's decision."),
]
SamplesQuery = Annotated[
    int,
    Query(
        ge=MIN_SAMPLES,
        le=MAX_SAMPLES,
        description="Perturbed samples; 200 from the stability study in bench/RESULTS.md.",
    ),
]
SeedQuery = Annotated[int, Query(ge=0, le=2**31 - 1, description="Random seed, echoed.")]
JobIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job's id.")]


@router.post(
    "/gradcam",
    operation_id="explain_gradcam",
    summary="Grad-CAM heat map restricted to the lungs, zone descriptors and quality scores",
    description="Exact Grad-CAM at the classifier's last convolutional block, computed from the "
    "ONNX Runtime feature-map output without a backward pass (equals captum's LayerGradCam).",
    response_model=GradCamResponse,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def explain_gradcam(
    upload: UploadDep, explainer: ExplainDep, registry: RegistryDep, target: TargetQuery = None
) -> GradCamResponse:
    out = await explainer.gradcam(upload.data, target)
    return gradcam_response(out, model_info(registry.classifier), image_out(out.image))


@router.post(
    "/lime",
    operation_id="explain_lime",
    summary="LIME superpixel explanation inside the chest, reproducible by seed",
    description="LIME (the lime package's algorithm) on SLIC superpixels inside the lungs plus a "
    "margin, perturbed images evaluated in large batches. The same seed gives the same "
    "explanation bytes (timings aside). Runs behind its own small limiter: 503 + Retry-After "
    "when busy.",
    response_model=LimeResponse,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def explain_lime(
    request: Request,
    upload: UploadDep,
    explainer: ExplainDep,
    registry: RegistryDep,
    target: TargetQuery = None,
    n_samples: SamplesQuery = DEFAULT_SAMPLES,
    seed: SeedQuery = 0,
) -> LimeResponse:
    async with cancel_on_disconnect(request) as control:
        out = await explainer.lime(upload.data, target, n_samples, seed, control)
    return lime_response(out, model_info(registry.classifier), image_out(out.image))


def _jobs(request: Request) -> JobQueue:
    return request.state.jobs  # type: ignore[no-any-return]


def _principal(request: Request) -> str | None:
    return getattr(request.state, "principal", None)


def _job_out(job: Job, request: Request, registry: RegistryDep) -> LimeJob:
    result = None
    if job.state == "succeeded" and isinstance(job.result, LimeOutcome):
        out = job.result
        result = lime_response(out, model_info(registry.classifier), image_out(out.image))
    error = None
    if job.state == "failed" and job.error is not None:
        error = problem_for_exception(job.error, getattr(request.state, "request_id", None))
    return LimeJob(
        job_id=job.id,
        state=job.state,
        status_url=f"/explain/lime/jobs/{job.id}",
        created_utc=datetime.fromtimestamp(job.created_unix, UTC).isoformat(timespec="seconds"),
        result=result,
        error=error,  # type: ignore[arg-type]
    )


JOB_ERRORS = problem_responses(404, 422, 500)


def _found(job: Job | None) -> Job:
    if job is None:
        raise HTTPException(404)  # unknown, expired, or another key's job
    return job


@router.post(
    "/lime/jobs",
    operation_id="submit_lime_job",
    summary="Queue a LIME explanation and answer at once (202 + job URL)",
    description="For large uploads or busy servers: the same explanation as POST /explain/lime, "
    "computed in the background. Poll the job URL; results are kept for "
    "CXR_EXPLAIN__JOB_TTL_S seconds. At most CXR_EXPLAIN__JOB_CAPACITY jobs queued or running: "
    "503 + Retry-After beyond.",
    status_code=202,
    response_model=LimeJob,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def submit_lime_job(
    request: Request,
    response: Response,
    upload: UploadDep,
    explainer: ExplainDep,
    registry: RegistryDep,
    target: TargetQuery = None,
    n_samples: SamplesQuery = DEFAULT_SAMPLES,
    seed: SeedQuery = 0,
) -> LimeJob:
    job = explainer.submit_lime(
        _jobs(request), _principal(request), upload.data, target, n_samples, seed
    )
    response.headers["Location"] = f"/explain/lime/jobs/{job.id}"
    return _job_out(job, request, registry)


@router.get(
    "/lime/jobs/{job_id}",
    operation_id="get_lime_job",
    summary="State of a LIME job, with its result once it has succeeded",
    response_model=LimeJob,
    responses=JOB_ERRORS,
)
async def get_lime_job(request: Request, registry: RegistryDep, job_id: JobIdPath) -> LimeJob:
    return _job_out(_found(_jobs(request).get(job_id, _principal(request))), request, registry)


@router.delete(
    "/lime/jobs/{job_id}",
    operation_id="cancel_lime_job",
    summary="Cancel a LIME job (a running one stops within one model batch)",
    response_model=LimeJob,
    responses=JOB_ERRORS,
)
async def cancel_lime_job(request: Request, registry: RegistryDep, job_id: JobIdPath) -> LimeJob:
    return _job_out(_found(_jobs(request).cancel(job_id, _principal(request))), request, registry)
