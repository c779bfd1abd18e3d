"""Service settings, read from ``CXR_*`` environment variables and an optional ``.env`` file.

Constructed in the app factory (or by ``python -m service``), never at import. Nested groups use
``__`` as the delimiter, e.g. ``CXR_LIMITS__MAX_UPLOAD_BYTES=104857600``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Largest accepted request body in bytes (413 above)."
    )
    max_pixels: int = Field(
        40_000_000, ge=10_000, description="Pixel budget (width x height) checked from headers (422 above)."
    )
    max_side: int = Field(16_384, ge=64, description="Largest accepted image side in pixels.")


class ConcurrencySettings(BaseModel):
    inference_slots: int = Field(
        2, ge=1, le=64, description="Requests that run model inference at the same time."
    )
    max_queue: int = Field(
        32, ge=0, le=10_000, description="Requests allowed to wait for a slot; beyond this 503."
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime threads per call; default: CPU cores / inference_slots.",
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After seconds sent with 503 answers.")

    def threads_per_call(self) -> int:
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.inference_slots)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CXR_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="Address `python -m service` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m service` listens on.")
    weights_dir: Path = Field(DEFAULT_WEIGHTS, description="Folder with ONNX models and manifests.")
    classifier_manifest: str = Field("classifier.manifest.json", description="Classifier manifest file.")
    segmenter_manifest: str = Field("segmenter.manifest.json", description="Segmenter manifest file.")
    prefer_gpu: bool = Field(True, description="Use the CUDA provider when onnxruntime-gpu sees a GPU.")
    log_level: str = Field("info", description="Log level for the service loggers.")
    limits: LimitSettings = Field(default_factory=LimitSettings)
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)
