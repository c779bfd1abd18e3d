"""POST /classify and POST /segment."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import AnalysisDep, InteropDep, PopulationQuery, RegistryDep
from api.interop import PushQuery, check_push, dicom_answer, format_query, format_responses
from api.problems import problem_responses
from api.schemas.analysis import (
    ClassifyResponse,
    SegmentResponse,
    StudyResponse,
    classify_response,
    segment_response,
    study_response,
)
from api.schemas.convert import model_info
from api.upload import StudyDep, UploadDep, study_request_body, upload_request_body

router = APIRouter(tags=["analysis"])
ERRORS = problem_responses(400, 408, 413, 415, 422, 500, 503)


@router.post(
    "/classify",
    operation_id="classify",
    summary="Finding / no-finding classification of one radiograph",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=upload_request_body(),
)
async def classify(
    upload: UploadDep,
    analysis: AnalysisDep,
    registry: RegistryDep,
    population: PopulationQuery = None,
) -> ClassifyResponse:
    out = await analysis.classify(upload.data, population)
    return classify_response(out, model_info(registry.classifier), registry.input_gate.version)


@router.post(
    "/classify/study",
    operation_id="classify_study",
    summary="Classify a study of several views in one request (batched)",
    response_model=StudyResponse,
    responses=ERRORS,
    openapi_extra=study_request_body(),
)
async def classify_study(
    uploads: StudyDep,
    analysis: AnalysisDep,
    registry: RegistryDep,
    population: PopulationQuery = None,
) -> StudyResponse:
    out = await analysis.classify_study([u.data for u in uploads], population)
    return study_response(out, model_info(registry.classifier), registry.input_gate.version)


@router.post(
    "/segment",
    operation_id="segment",
    summary="Anatomy segmentation: lungs, heart/mediastinum, derived spine and abdomen",
    response_model=SegmentResponse,
    responses={**ERRORS, **format_responses("dicom-seg")},
    openapi_extra=upload_request_body(),
)
async def segment(
    upload: UploadDep,
    analysis: AnalysisDep,
    registry: RegistryDep,
    interop: InteropDep,
    fmt: Annotated[Literal["json", "dicom-seg"], format_query("dicom-seg")] = "json",
    push: PushQuery = False,
) -> SegmentResponse | Response:
    check_push(push, fmt, interop)
    if fmt == "dicom-seg":
        return await dicom_answer(interop, await interop.seg(upload.data, upload.sha256), push)
    out = await analysis.segment(upload.data)
    return segment_response(out, model_info(registry.segmenter), registry.input_gate.version)


MaxSideQuery = Annotated[
    int | None,
    Query(
        ge=64,
        le=16_384,
        description="Reduce the longer side to at most this many pixels (never enlarged). "
        "Default: the upload's size.",
    ),
]


@router.post(
    "/render",
    operation_id="render",
    summary="The radiograph as the service decoded and windowed it, as an 8-bit PNG",
    description="What every model and overlay was computed on: DICOM VOI LUT / window and "
    "rescale applied, MONOCHROME1 inverted, deep PNGs stretched. Masks and heat maps of the "
    "other endpoints align with it pixel for pixel (scaled by max_side when given). Viewers "
    "show this instead of decoding DICOM themselves.",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "Grayscale PNG."}, **ERRORS},
    openapi_extra=upload_request_body(),
)
async def render(
    upload: UploadDep, analysis: AnalysisDep, max_side: MaxSideQuery = None
) -> Response:
    png = await analysis.render(upload.data, max_side)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
