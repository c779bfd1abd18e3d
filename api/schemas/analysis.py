"""Schemas for /classify and /segment."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import (
    DISCLAIMER,
    ImageInfoOut,
    InputQualityOut,
    ModelInfo,
    OperatingPointOut,
    TimingsOut,
)
from api.schemas.convert import (
    b64,
    image_out,
    input_quality_out,
    operating_point_out,
    timings_out,
)
from inference.operating import Decision
from service.usecases import ClassifyOutcome, SegmentOutcome, StudyOutcome

DECISION_DOC = (
    "Decision at the population's operating point: finding at or above the band's upper end, "
    "no_finding below its lower end, indeterminate (borderline) in between."
)


class ClassifyResponse(BaseModel):
    probability_finding: float = Field(
        ge=0.0, le=1.0, description="Calibrated probability that a finding is present."
    )
    decision: Decision = Field(description=DECISION_DOC)
    threshold: float = Field(description="Operating threshold on probability_finding.")
    calibrated: bool = Field(description="True when the model ships a fitted temperature.")
    temperature: float = Field(description="Temperature applied to the logit before the sigmoid.")
    calibration_offset: float = Field(
        0.0,
        description="Added to logit / temperature before the sigmoid: 0 for the shipped "
        "calibration; a site recalibration fitted with Platt scaling may shift it.",
    )
    operating_point: OperatingPointOut
    input_quality: InputQualityOut
    model: ModelInfo
    image: ImageInfoOut
    timings: TimingsOut
    disclaimer: str = DISCLAIMER


class StudyViewOut(BaseModel):
    index: int = Field(description="Position of the view in the request's 'files' field.")
    probability_finding: float = Field(ge=0.0, le=1.0)
    decision: Decision
    input_quality: InputQualityOut
    image: ImageInfoOut
    timings: TimingsOut


class StudyResponse(BaseModel):
    probability_finding: float = Field(
        ge=0.0,
        le=1.0,
        description="Study probability: the highest calibrated probability of its views.",
    )
    decision: Decision = Field(description="The decision of the view with that probability.")
    threshold: float
    aggregation: Literal["max"] = "max"
    operating_point: OperatingPointOut
    views: list[StudyViewOut]
    model: ModelInfo
    disclaimer: str = DISCLAIMER


class StructureOut(BaseModel):
    name: Literal["right_lung", "left_lung", "heart_mediastinum", "spine", "abdomen"] = Field(
        description="Structure name; right/left are the patient's sides."
    )
    mask_png: str = Field(
        description="Base64 PNG mask (0 outside, 255/1 inside) at the working size "
        "(image.analysis_width x analysis_height; the upload's size unless it was scaled)."
    )
    area_fraction: float = Field(ge=0.0, le=1.0, description="Mask area / image area.")
    provenance: Literal["predicted", "derived"] = Field(
        description="predicted by the segmenter, or derived geometrically from predicted ones."
    )


class SegmentResponse(BaseModel):
    structures: list[StructureOut]
    overlay_png: str = Field(
        description="Base64 RGB PNG of all structures over the radiograph, at the working size."
    )
    input_quality: InputQualityOut
    model: ModelInfo
    image: ImageInfoOut
    timings: TimingsOut
    disclaimer: str = DISCLAIMER


# Outcome -> response, so the routes only call the use case and one of these.


def classify_response(out: ClassifyOutcome, model: ModelInfo, gate: str) -> ClassifyResponse:
    c = out.classification
    return ClassifyResponse(
        probability_finding=round(c.probability_finding, 6),
        decision=c.decision,
        threshold=c.threshold,
        calibrated=c.temperature != 1.0 or c.offset != 0.0,
        temperature=c.temperature,
        calibration_offset=c.offset,
        operating_point=operating_point_out(c),
        input_quality=input_quality_out(out.input_quality, gate),
        model=model,
        image=image_out(out.image),
        timings=timings_out(out.timings),
    )


def study_response(out: StudyOutcome, model: ModelInfo, gate: str) -> StudyResponse:
    views = [
        StudyViewOut(
            index=i,
            probability_finding=round(v.classification.probability_finding, 6),
            decision=v.classification.decision,
            input_quality=input_quality_out(v.input_quality, gate),
            image=image_out(v.image),
            timings=timings_out(v.timings),
        )
        for i, v in enumerate(out.views)
    ]
    return StudyResponse(
        probability_finding=round(out.probability_finding, 6),
        decision=out.decision,
        threshold=out.threshold,
        operating_point=operating_point_out(out.classification),
        views=views,
        model=model,
    )


def segment_response(out: SegmentOutcome, model: ModelInfo, gate: str) -> SegmentResponse:
    structures = [
        StructureOut(
            name=s.name,
            mask_png=b64(s.mask_png),
            area_fraction=s.area_fraction,
            provenance=s.provenance,
        )
        for s in out.structures
    ]
    return SegmentResponse(
        structures=structures,
        overlay_png=b64(out.overlay_png),
        input_quality=input_quality_out(out.input_quality, gate),
        model=model,
        image=image_out(out.image),
        timings=timings_out(out.timings),
    )
