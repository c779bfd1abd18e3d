"""Conversions from service outcomes to response schemas."""

from __future__ import annotations

import base64

from api.schemas.common import (
    CalibrationOut,
    ImageInfoOut,
    InputQualityOut,
    ModelInfo,
    OperatingPointOut,
    TimingsOut,
)
from inference.classify import Classification
from inference.input_gate import InputQuality
from inference.sessions import VerifiedModel
from service.usecases import ImageInfo, Timings


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def model_info(model: VerifiedModel) -> ModelInfo:
    m = model.manifest
    return ModelInfo(name=m.name, version=m.version, sha256=m.sha256)


def image_out(info: ImageInfo) -> ImageInfoOut:
    return ImageInfoOut(
        width=info.width,
        height=info.height,
        format=info.format,
        bits_stored=info.bits_stored,
        photometric=info.photometric,
        analysis_width=info.analysis_width,
        analysis_height=info.analysis_height,
        analysis_scale=round(info.analysis_width / info.width, 6),
    )


def timings_out(t: Timings) -> TimingsOut:
    return TimingsOut(decode_ms=t.decode_ms, inference_ms=t.inference_ms, total_ms=t.total_ms)


def input_quality_out(q: InputQuality, gate: str) -> InputQualityOut:
    return InputQualityOut(
        flags=list(q.flags), ood_score=q.ood_score, ood_threshold=q.ood_threshold, gate=gate
    )


def operating_point_out(c: Classification) -> OperatingPointOut:
    return OperatingPointOut(
        population=c.population,
        population_source=c.population_source,
        threshold=c.threshold,
        band=[c.band[0], c.band[1]],
        calibration=CalibrationOut(
            source=c.calibration_source,
            id=c.calibration_id,
            version=c.calibration_version,
        ),
    )
