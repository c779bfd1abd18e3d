"""POST /explain/gradcam and POST /explain/lime."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ExplainDep, RegistryDep
from api.problems import problem_responses
from api.schemas.convert import image_out, model_info
from api.schemas.explain import GradCamResponse, LimeResponse, gradcam_response, lime_response
from api.upload import UploadDep, upload_request_body
from explain import MAX_SAMPLES, LimeConfig, Target

router = APIRouter(prefix="/explain", tags=["explain"])
ERRORS = problem_responses(400, 408, 413, 415, 422, 500, 503)
DEFAULT_SAMPLES = LimeConfig().n_samples

TargetQuery = Annotated[
    Target | None,
    Query(description="Class to explain: finding or no_finding. Default: the model's decision."),
]


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
    upload: UploadDep,
    explainer: ExplainDep,
    registry: RegistryDep,
    target: TargetQuery = None,
    n_samples: Annotated[
        int,
        Query(
            ge=50,
            le=MAX_SAMPLES,
            description="Perturbed samples; 200 from the stability study in bench/RESULTS.md.",
        ),
    ] = DEFAULT_SAMPLES,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="Random seed, echoed.")] = 0,
) -> LimeResponse:
    out = await explainer.lime(upload.data, target, n_samples, seed)
    return lime_response(out, model_info(registry.classifier), image_out(out.image))
