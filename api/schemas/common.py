"""Schemas shared by several routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inference.operating import Population
from inference.suitability import Flag, Reason

DISCLAIMER = (
    "Decision support only, not a diagnosis. Results must be reviewed by a qualified physician."
)


class Problem(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI identifying the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    code: str = Field(description="Stable machine-readable error code, e.g. corrupt_image.")
    detail: str = Field(description="Generic explanation; never echoes submitted data.")
    request_id: str = Field(description="Identifier of this request (also in X-Request-ID).")
    reason: Reason | None = Field(
        None,
        description="With code not_a_chest_radiograph: which check refused the upload "
        "(too_small, extreme_aspect_ratio, colour, constant, noise, document, featureless, "
        "graphic, out_of_distribution).",
    )
    view_index: int | None = Field(
        None, description="With not_a_chest_radiograph on /classify/study: the refused view."
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str


class ImageInfoOut(BaseModel):
    width: int = Field(description="Width of the uploaded image in pixels.")
    height: int = Field(description="Height of the uploaded image in pixels.")
    format: str = Field(description="Detected container format: png, jpeg, webp or dicom.")
    bits_stored: int = Field(description="Bit depth of the stored samples.")
    photometric: str = Field(description="Photometric interpretation before conversion.")
    analysis_width: int = Field(
        description="Width of the working copy the models ran on; masks, heat maps and "
        "overlays in the response have this size (uploads whose longer side exceeds "
        "CXR_LIMITS__WORK_MAX_SIDE are scaled down once at decode)."
    )
    analysis_height: int = Field(description="Height of the working copy.")
    analysis_scale: float = Field(
        gt=0.0,
        le=1.0,
        description="analysis_width / width: multiply upload pixel coordinates by this to "
        "index the returned maps (1.0 when the upload was not scaled).",
    )


class TimingsOut(BaseModel):
    decode_ms: float
    inference_ms: float
    total_ms: float


class InputQualityOut(BaseModel):
    """The input suitability gate's verdict on an accepted upload.

    Uploads that fail the gate never get here: they are answered 422 not_a_chest_radiograph
    with a ``reason``. Flags mark plausible but suspicious radiographs; explanations and reports
    built on a flagged image deserve extra caution.
    """

    flags: list[Flag] = Field(
        description="heavy_collimation, inverted (negative image), rotated (90/180/270 degrees), "
        "lateral_view (suspected lateral or half-chest view). Empty: nothing noticed."
    )
    ood_score: float | None = Field(
        description="Learned out-of-distribution score (about 1 for typical training "
        "radiographs); null when the service runs the rules alone."
    )
    ood_threshold: float | None = Field(description="Score above which uploads are refused.")
    gate: str = Field(description="Gate in use: 'rules' or 'rules+ood-<version>'.")


class CalibrationOut(BaseModel):
    source: Literal["manifest", "site"] = Field(
        description="manifest: shipped with the model; site: a local recalibration file."
    )
    id: str
    version: str


class OperatingPointOut(BaseModel):
    population: Population = Field(description="Population whose operating point was applied.")
    population_source: Literal["request", "dicom_age", "default"] = Field(
        description="request: the population query parameter; dicom_age: DICOM PatientAge "
        "(under 18 years: pediatric); default: the calibration's default population."
    )
    threshold: float = Field(description="Operating threshold on probability_finding.")
    band: list[float] = Field(
        description="Borderline band [lo, hi]: probabilities in [lo, hi) are answered "
        "'indeterminate'; lo == hi means no band."
    )
    calibration: CalibrationOut


class JobFields(BaseModel):
    """What every asynchronous job answers (POST .../jobs, GET and DELETE .../jobs/{job_id})."""

    job_id: str = Field(description="Opaque id; only the submitting API key can see the job.")
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    status_url: str = Field(description="Poll this URL (GET) for the state and the result.")
    created_utc: str
    attempts: int = Field(
        description="Times a worker started the job (2 when its first worker died mid-job)."
    )
    error: Problem | None = Field(
        None, description="Set when state is failed: the problem the synchronous call would answer."
    )
