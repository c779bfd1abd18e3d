"""POST /explain/gradcam and POST /explain/lime."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from api.deps import ExplainDep, InteropDep, PopulationQuery, RegistryDep
from api.disconnect import cancel_on_disconnect
from api.interop import PushQuery, check_push, dicom_answer, format_query, format_responses
from api.jobs import IdempotencyKey, add_job_routes, job_fields, submit_job
from api.problems import problem_responses
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


@router.post(
    "/gradcam",
    operation_id="explain_gradcam",
    summary="Grad-CAM heat map restricted to the lungs, zone descriptors and quality scores",
    description="Exact Grad-CAM at the classifier's last convolutional block, computed from the "
    "ONNX Runtime feature-map output without a backward pass (equals captum's LayerGradCam).",
    response_model=GradCamResponse,
    responses={**ERRORS, **format_responses("dicom-sc")},
    openapi_extra=upload_request_body(),
)
async def explain_gradcam(
    upload: UploadDep,
    explainer: ExplainDep,
    registry: RegistryDep,
    interop: InteropDep,
    target: TargetQuery = None,
    fmt: Annotated[Literal["json", "dicom-sc"], format_query("dicom-sc")] = "json",
    push: PushQuery = False,
    population: PopulationQuery = None,
) -> GradCamResponse | Response:
    check_push(push, fmt, interop)
    if fmt == "dicom-sc":  # the overlay is drawn into the SC: no PNG is encoded
        out = await explainer.gradcam(upload.data, target, population)
        return await dicom_answer(interop, await interop.sc(upload.data, upload.sha256, out), push)
    rendered = await explainer.rendered_gradcam(upload.data, target, population)
    info = model_info(registry.classifier)
    image = image_out(rendered.outcome.image)
    return gradcam_response(rendered, info, image, registry.input_gate.version)


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
    population: PopulationQuery = None,
) -> LimeResponse:
    async with cancel_on_disconnect(request) as control:
        out = await explainer.lime(upload.data, target, n_samples, seed, control, population)
    info = model_info(registry.classifier)
    return lime_response(out, info, image_out(out.image), registry.input_gate.version)


LIME_JOBS = "/explain/lime/jobs"


@router.post(
    "/lime/jobs",
    operation_id="submit_lime_job",
    summary="Queue a LIME explanation and answer at once (202 + job URL)",
    description="For large uploads or busy servers: the same explanation as POST /explain/lime, "
    "computed in the background (by a worker process when CXR_JOBS__BACKEND=redis). Poll the "
    "job URL; results are kept for CXR_EXPLAIN__JOB_TTL_S seconds. At most "
    "CXR_EXPLAIN__JOB_CAPACITY jobs queued or running: 503 + Retry-After beyond.",
    status_code=202,
    response_model=LimeJob,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def submit_lime_job(
    request: Request,
    response: Response,
    upload: UploadDep,
    idempotency_key: IdempotencyKey = None,
    target: TargetQuery = None,
    n_samples: SamplesQuery = DEFAULT_SAMPLES,
    seed: SeedQuery = 0,
    population: PopulationQuery = None,
) -> LimeJob:
    params = {
        "target": target,
        "n_samples": n_samples,
        "seed": seed,
        "population": population,
    }
    view = await submit_job(
        request, response, "lime", params, upload.data, idempotency_key, LIME_JOBS
    )
    return LimeJob(**job_fields(view, request, LIME_JOBS))


add_job_routes(
    router,
    "/lime/jobs",
    "lime",
    LimeJob,
    (
        "State of a LIME job, with its result once it has succeeded",
        "Cancel a LIME job (a running one stops within one model batch)",
    ),
    base=LIME_JOBS,
)
