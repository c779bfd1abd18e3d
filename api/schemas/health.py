"""Schemas for health and version."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import CalibrationOut, ModelInfo


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
