"""Explanations for the chest X-ray classifier: exact Grad-CAM, chest-restricted LIME,
lung-zone soft descriptors and explanation-quality scores.

Pure numpy/Pillow/scikit-image; no torch, no ONNX sessions, no FastAPI. Callers pass
arrays (image float32 [H, W] in [0, 1], bool lung masks at [H, W], the classifier's ``cam``
output) and, for LIME and the deletion test, a ``predict`` callable
(float32 [N, h, w] in [0, 1] -> float32 [N] calibrated P(finding)).
"""

from __future__ import annotations

from explain.fusion import fused_descriptors
from explain.gradcam import (
    GradCamImages,
    GradCamResult,
    Target,
    explain_gradcam,
    gradcam_grid,
    gradcam_overlay,
    render_gradcam,
)
from explain.lime import (
    MAX_SAMPLES,
    LimeConfig,
    LimeResult,
    LimeSummary,
    LimeTiming,
    Predict,
    SuperpixelWeight,
    explain_lime,
)
from explain.masks import LungMasks
from explain.quality import (
    DeletionResult,
    ExplanationQuality,
    QualityThresholds,
    agreement_iou,
    assess_quality,
    deletion_test,
    explanation_agreement,
)
from explain.zones import ZONE_INFOS, ZoneDescriptor, ZoneId, ZoneInfo, split_zones

__all__ = [
    "MAX_SAMPLES",
    "ZONE_INFOS",
    "DeletionResult",
    "ExplanationQuality",
    "GradCamImages",
    "GradCamResult",
    "LimeConfig",
    "LimeResult",
    "LimeSummary",
    "LimeTiming",
    "LungMasks",
    "Predict",
    "QualityThresholds",
    "SuperpixelWeight",
    "Target",
    "ZoneDescriptor",
    "ZoneId",
    "ZoneInfo",
    "agreement_iou",
    "assess_quality",
    "deletion_test",
    "explain_gradcam",
    "explain_lime",
    "explanation_agreement",
    "fused_descriptors",
    "gradcam_grid",
    "gradcam_overlay",
    "render_gradcam",
    "split_zones",
]
