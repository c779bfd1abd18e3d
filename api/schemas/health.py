"""Schemas for health and version."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import CalibrationOut, ModelInfo
from api.schemas.convert import model_info
from service.registry import ModelRegistry


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    components: dict[str, bool] = Field(description="Readiness of each component.")


class VersionInfo(BaseModel):
    package: str
    version: str
    models: list[ModelInfo]
    providers: list[str] = Field(description="ONNX Runtime execution providers in use.")
    calibration: CalibrationOut = Field(
        description="Calibration in use: the classifier manifest's, or a site file."
    )
    input_gate: str = Field(description="Input suitability gate: 'rules' or 'rules+ood-<ver>'.")


class SampleRange(BaseModel):
    min: int
    max: int
    default: int


class LimitsInfo(BaseModel):
    """What a client should check before it uploads (the server enforces the same values)."""

    max_upload_bytes: int = Field(description="Largest request body; larger answers 413.")
    max_pixels: int = Field(description="Largest width x height; larger answers 422.")
    max_side: int = Field(description="Largest image side in pixels; larger answers 422.")
    max_study_images: int = Field(description="Most files in one /classify/study request.")
    lime_samples: SampleRange = Field(description="n_samples accepted by the LIME endpoints.")
    report_languages: list[Literal["en", "ru"]] = Field(
        description="Values of the report endpoints' lang parameter."
    )


def version_info(registry: ModelRegistry, package_version: str) -> VersionInfo:
    calibration = registry.active_calibration
    return VersionInfo(
        package="cxr-xai",
        version=package_version,
        models=[model_info(m) for m in registry.models()],
        providers=list(registry.classifier.providers),
        calibration=CalibrationOut(
            source=calibration.source, id=calibration.id, version=calibration.version
        ),
        input_gate=registry.input_gate.version,
    )
