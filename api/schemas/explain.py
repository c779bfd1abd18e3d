"""Schemas for /explain/gradcam and /explain/lime."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from api.schemas.common import (
    DISCLAIMER,
    ImageInfoOut,
    InputQualityOut,
    JobFields,
    ModelInfo,
    OperatingPointOut,
)
from api.schemas.convert import b64, input_quality_out, operating_point_out
from explain import ExplanationQuality, SuperpixelWeight, ZoneDescriptor
from inference.vocabulary import BinaryDecision, Decision, ZoneId
from service.explain_usecase import LimeOutcome, RenderedGradCam

TargetOut = BinaryDecision


class ExplainZoneOut(BaseModel):
    """One lung zone (frontal radiographs show zones, not lobes); scores in [0, 1]."""

    zone_id: ZoneId = Field(description="Patient's side and third of that lung's height.")
    side: Literal["right", "left"]
    level: Literal["upper", "mid", "lower"]
    name_en: str = Field(description='e.g. "right mid zone".')
    name_ru: str = Field(description='e.g. "правая средняя зона".')
    area_fraction: float = Field(ge=0.0, le=1.0, description="Zone area / both lungs' area.")
    gradcam_mean: float | None = Field(description="Mean lung-restricted Grad-CAM in the zone.")
    gradcam_peak: float | None = Field(description="Peak lung-restricted Grad-CAM in the zone.")
    lime_intensity: float | None = Field(
        description="Mean positive LIME weight in the zone, relative to the strongest superpixel."
    )
    lime_positive_mass: float | None = Field(
        description="Share of all positive LIME weight that falls in the zone."
    )
    fused: float = Field(description="Zone intensity: mean of gradcam_mean and lime_intensity.")
    text_en: str = Field(description='Soft descriptor, e.g. "right mid zone: intensity 0.42".')
    text_ru: str


class DeletionOut(BaseModel):
    base_confidence: float = Field(description="Model confidence in the target, unmasked.")
    top_drop: float = Field(description="Confidence drop with the explanation's top cells masked.")
    random_drop: float = Field(description="Mean drop with random cells of the same area masked.")
    score: float = Field(description="top_drop - random_drop; > 0 means the regions matter.")
    fraction: float = Field(description="Share of the lung grid cells masked.")
    n_random: int


class QualityOut(BaseModel):
    confidence: float = Field(description="Calibrated probability of the explained target.")
    energy_in_lungs: float | None = Field(
        description="Share of the unrestricted Grad-CAM map inside the lungs."
    )
    agreement_iou: float | None = Field(
        description="IoU of the top-20 % areas of Grad-CAM and LIME (LIME endpoint only)."
    )
    deletion: DeletionOut | None
    weak: bool = Field(
        description="True when any score misses its threshold: reports should then avoid "
        "naming locations."
    )
    reasons: list[str] = Field(
        description="Failed checks: lungs_not_found, empty_map, low_confidence, "
        "heat_outside_lungs, gradcam_lime_disagree, deletion_not_better_than_random."
    )


class LowResHeatmap(BaseModel):
    height: int
    width: int
    values: list[list[float]] = Field(
        description="Lung-restricted Grad-CAM in [0, 1], row-major, the image's aspect ratio."
    )


class ExplainTimingsOut(BaseModel):
    decode_ms: float
    inference_ms: float = Field(description="Segmentation + classification.")
    explain_ms: float
    total_ms: float


class GradCamResponse(BaseModel):
    target: TargetOut = Field(description="Explained class (default: the model's decision).")
    probability_finding: float = Field(ge=0.0, le=1.0)
    decision: Decision
    operating_point: OperatingPointOut
    input_quality: InputQualityOut
    overlay_png: str = Field(
        description="Base64 RGB PNG at the working size (image.analysis_*; the upload's size "
        "unless it was scaled): jet colour map of the lung-restricted heat map over the "
        "radiograph."
    )
    heatmap_lungs_png: str = Field(
        description="Base64 8-bit grayscale PNG (0-255 = 0-1), working size: Grad-CAM times the "
        "softly dilated lung mask (spine and areas outside the chest removed)."
    )
    heatmap_full_png: str = Field(description="Base64 grayscale PNG: the unrestricted map.")
    low_res: LowResHeatmap
    zones: list[ExplainZoneOut] = Field(description="Sorted by fused intensity, highest first.")
    quality: QualityOut
    model: ModelInfo
    image: ImageInfoOut
    timings: ExplainTimingsOut
    disclaimer: str = DISCLAIMER


class SuperpixelOut(BaseModel):
    superpixel: int = Field(description="Superpixel id (index into the explanation).")
    weight: float = Field(description="LIME weight: change of P(target) when present.")
    area_fraction: float = Field(description="Share of the chest region's pixels.")
    centroid: list[float] = Field(description="[row, column] as fractions of height/width.")
    zone_id: str | None = Field(description="Lung zone it overlaps most (null: margin only).")


class LimeTimingOut(BaseModel):
    decode_ms: float
    inference_ms: float
    segmentation_ms: float = Field(description="Superpixels (SLIC inside the chest).")
    predict_ms: float = Field(description="Perturbed images through ONNX Runtime.")
    fit_ms: float
    render_ms: float
    explain_ms: float = Field(description="All explanation work incl. Grad-CAM and quality.")
    total_ms: float


class LimeResponse(BaseModel):
    target: TargetOut
    seed: int = Field(description="Seed used; the same seed gives the same explanation bytes.")
    n_samples: int
    n_superpixels: int
    probability_finding: float = Field(ge=0.0, le=1.0)
    decision: Decision
    operating_point: OperatingPointOut
    input_quality: InputQualityOut
    positive: list[SuperpixelOut] = Field(description="Strongest supporting superpixels.")
    negative: list[SuperpixelOut] = Field(description="Strongest opposing superpixels.")
    fit_r2: float = Field(description="Weighted R^2 of LIME's local linear model.")
    overlay_png: str = Field(
        description="Base64 RGB PNG, working size (image.analysis_*): top positive superpixels "
        "red, negative blue."
    )
    zones: list[ExplainZoneOut] = Field(description="Grad-CAM and LIME fused per zone, sorted.")
    quality: QualityOut
    model: ModelInfo
    image: ImageInfoOut
    timings: LimeTimingOut
    disclaimer: str = DISCLAIMER


# ---------------------------------------------------------------- conversions
def zone_out(d: ZoneDescriptor) -> ExplainZoneOut:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return ExplainZoneOut(
        zone_id=d.zone_id,
        side=d.side,
        level=d.level,
        name_en=d.name_en,
        name_ru=d.name_ru,
        area_fraction=round(d.area_fraction, 4),
        gradcam_mean=r(d.gradcam_mean),
        gradcam_peak=r(d.gradcam_peak),
        lime_intensity=r(d.lime_intensity),
        lime_positive_mass=r(d.lime_positive_mass),
        fused=round(d.fused, 4),
        text_en=d.text_en(),
        text_ru=d.text_ru(),
    )


def quality_out(q: ExplanationQuality) -> QualityOut:
    d = q.deletion
    deletion = None
    if d is not None:
        deletion = DeletionOut(
            base_confidence=round(d.base_confidence, 4),
            top_drop=round(d.top_drop, 4),
            random_drop=round(d.random_drop, 4),
            score=round(d.score, 4),
            fraction=round(d.fraction, 4),
            n_random=d.n_random,
        )
    return QualityOut(
        confidence=round(q.confidence, 4),
        energy_in_lungs=None if q.energy_in_lungs is None else round(q.energy_in_lungs, 4),
        agreement_iou=None if q.agreement_iou is None else round(q.agreement_iou, 4),
        deletion=deletion,
        weak=q.weak,
        reasons=list(q.reasons),
    )


def superpixel_out(s: SuperpixelWeight) -> SuperpixelOut:
    return SuperpixelOut(
        superpixel=s.superpixel,
        weight=round(s.weight, 6),
        area_fraction=round(s.area_fraction, 4),
        centroid=[round(s.centroid_yx[0], 4), round(s.centroid_yx[1], 4)],
        zone_id=s.zone_id,
    )


def gradcam_response(
    rendered: RenderedGradCam, model: ModelInfo, image: ImageInfoOut, gate: str
) -> GradCamResponse:
    out, pngs = rendered.outcome, rendered.images
    g, t = out.gradcam, out.timings
    return GradCamResponse(
        target=out.target,
        probability_finding=round(out.classification.probability_finding, 6),
        decision=out.classification.decision,
        operating_point=operating_point_out(out.classification),
        input_quality=input_quality_out(out.input_quality, gate),
        overlay_png=b64(pngs.overlay_png),
        heatmap_lungs_png=b64(pngs.lungs_png),
        heatmap_full_png=b64(pngs.full_png),
        low_res=LowResHeatmap(
            height=g.low_res.shape[0],
            width=g.low_res.shape[1],
            values=np.round(g.low_res, 4).tolist(),
        ),
        zones=[zone_out(z) for z in g.zones],
        quality=quality_out(out.quality),
        model=model,
        image=image,
        timings=ExplainTimingsOut(
            decode_ms=t.decode_ms,
            inference_ms=t.inference_ms,
            explain_ms=t.explain_ms,
            total_ms=t.total_ms,
        ),
    )


def lime_response(
    out: LimeOutcome, model: ModelInfo, image: ImageInfoOut, gate: str
) -> LimeResponse:
    lime, t, lt = out.lime, out.timings, out.lime.timing
    return LimeResponse(
        target=out.target,
        seed=lime.seed,
        n_samples=lime.n_samples,
        n_superpixels=lime.n_superpixels,
        probability_finding=round(out.classification.probability_finding, 6),
        decision=out.classification.decision,
        operating_point=operating_point_out(out.classification),
        input_quality=input_quality_out(out.input_quality, gate),
        positive=[superpixel_out(s) for s in lime.positive],
        negative=[superpixel_out(s) for s in lime.negative],
        fit_r2=round(lime.score, 4),
        overlay_png=b64(lime.overlay_png),
        zones=[zone_out(z) for z in out.zones],
        quality=quality_out(out.quality),
        model=model,
        image=image,
        timings=LimeTimingOut(
            decode_ms=t.decode_ms,
            inference_ms=t.inference_ms,
            segmentation_ms=round(lt.segmentation_s * 1000, 2),
            predict_ms=round(lt.predict_s * 1000, 2),
            fit_ms=round(lt.fit_s * 1000, 2),
            render_ms=round(lt.render_s * 1000, 2),
            explain_ms=t.explain_ms,
            total_ms=t.total_ms,
        ),
    )


class LimeJob(JobFields):
    """An asynchronous LIME explanation (POST /explain/lime/jobs)."""

    result: LimeResponse | None = Field(None, description="Set when state is succeeded.")
