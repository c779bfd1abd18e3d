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
from inference.operating import Decision

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
