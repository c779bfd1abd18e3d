"""The model registry: every ONNX model, verified and warmed once at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from inference.errors import ModelError
from inference.input_gate import InputGate
from inference.models import Classifier, Segmenter
from inference.ood import OodModel, load_ood_model
from inference.operating import Calibration
from inference.sessions import RuntimeOptions, VerifiedModel
from inference.site_calibration import load_site_calibration
from inference.suitability import RuleConfig
from service.settings import Settings

log = logging.getLogger("cxr.service")


@dataclass(frozen=True)
class ModelRegistry:
    classifier: Classifier
    segmenter: Segmenter
    calibration: Calibration | None = None
    input_gate: InputGate = field(default_factory=InputGate)

    @property
    def active_calibration(self) -> Calibration:
        """The site calibration when one is configured, else the manifest's."""
        return self.calibration or self.classifier.calibration

    def models(self) -> tuple[VerifiedModel, ...]:
        return (self.classifier, self.segmenter)

    def versions(self) -> dict[str, str]:
        return {
            m.manifest.name: f"{m.manifest.version}+{m.manifest.sha256[:12]}" for m in self.models()
        }


def warm_up(registry: ModelRegistry) -> None:
    """One real inference per model, so the first request does not pay for lazy initialisation
    and a graph that loads but cannot run fails start-up instead of the first patient."""
    blank = np.full((256, 256), 0.5, dtype=np.float32)
    out = registry.classifier.predict([blank])[0]
    if not np.isfinite(out.logit) or not np.isfinite(out.cam).all():
        raise ModelError("classifier produced non-finite output during warm-up")
    ood = registry.input_gate.ood
    if ood is not None and out.pooled is not None and out.pooled.shape[0] != ood.feature_dim:
        raise ModelError("input gate does not match the classifier's feature size")
    registry.segmenter.segment(blank)


def _site_calibration(settings: Settings, classifier: Classifier) -> Calibration | None:
    if settings.calibration_file is None:
        return None
    return load_site_calibration(settings.calibration_file, classifier.manifest.sha256)


def _ood_model(settings: Settings, classifier: Classifier) -> OodModel | None:
    g = settings.input_gate
    path = settings.weights_dir / g.ood_manifest
    if not path.is_file():
        if g.ood_required:
            raise ModelError("input gate file missing (input_gate.ood_required is set)")
        log.warning("input gate: %s not found, gating with the rules alone", g.ood_manifest)
        return None
    return load_ood_model(
        path, classifier.manifest.sha256, classifier.gate_feature_dim, classifier.gate_role
    )


def load_registry(settings: Settings) -> ModelRegistry:
    """Load, verify (artifact and role contract) and warm every model; raise
    :class:`ModelError` on any problem."""
    options = RuntimeOptions(
        intra_op_threads=settings.concurrency.threads_per_call(), prefer_gpu=settings.prefer_gpu
    )
    classifier = Classifier.load(settings.weights_dir / settings.classifier_manifest, options)
    registry = ModelRegistry(
        classifier=classifier,
        segmenter=Segmenter.load(settings.weights_dir / settings.segmenter_manifest, options),
        calibration=_site_calibration(settings, classifier),
        input_gate=InputGate(
            RuleConfig(min_side=settings.input_gate.min_side), _ood_model(settings, classifier)
        ),
    )
    warm_up(registry)
    return registry
