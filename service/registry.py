"""The model registry: every ONNX model, verified and warmed once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.anatomy import segment
from inference.classify import run_classifier
from inference.errors import ModelError
from inference.sessions import RuntimeOptions, VerifiedModel, load_verified_model
from service.settings import Settings

SEGMENTER_LABELS = frozenset({"right_lung", "left_lung", "heart_mediastinum"})


@dataclass(frozen=True)
class ModelRegistry:
    classifier: VerifiedModel
    segmenter: VerifiedModel

    def models(self) -> tuple[VerifiedModel, ...]:
        return (self.classifier, self.segmenter)

    def versions(self) -> dict[str, str]:
        return {
            m.manifest.name: f"{m.manifest.version}+{m.manifest.sha256[:12]}" for m in self.models()
        }


def _check_roles(registry: ModelRegistry) -> None:
    if registry.classifier.manifest.kind != "classifier":
        raise ModelError("classifier manifest is not of kind 'classifier'")
    if registry.segmenter.manifest.kind != "segmenter":
        raise ModelError("segmenter manifest is not of kind 'segmenter'")
    if not set(registry.segmenter.manifest.labels) >= SEGMENTER_LABELS:
        raise ModelError("segmenter labels must include right_lung, left_lung, heart_mediastinum")


def warm_up(registry: ModelRegistry) -> None:
    """One real inference per model, so the first request does not pay for lazy initialisation
    and a graph that loads but cannot run fails start-up instead of the first patient."""
    blank = np.full((256, 256), 0.5, dtype=np.float32)
    out = run_classifier(registry.classifier, [blank])[0]
    if not np.isfinite(out.logit) or not np.isfinite(out.cam).all():
        raise ModelError("classifier produced non-finite output during warm-up")
    segment(registry.segmenter, blank)


def load_registry(settings: Settings) -> ModelRegistry:
    """Load, verify and warm every model; raise :class:`ModelError` on any problem."""
    options = RuntimeOptions(
        intra_op_threads=settings.concurrency.threads_per_call(), prefer_gpu=settings.prefer_gpu
    )
    registry = ModelRegistry(
        classifier=load_verified_model(
            settings.weights_dir / settings.classifier_manifest, options
        ),
        segmenter=load_verified_model(settings.weights_dir / settings.segmenter_manifest, options),
    )
    _check_roles(registry)
    warm_up(registry)
    return registry
