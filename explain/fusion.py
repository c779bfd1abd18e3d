"""Soft descriptors from both explainers: Grad-CAM and LIME fused per lung zone."""

from __future__ import annotations

from explain.gradcam import GradCamResult
from explain.lime import LimeResult
from explain.masks import LungMasks
from explain.zones import ZoneDescriptor, describe_zones, split_zones


def fused_descriptors(
    lungs: LungMasks, gradcam: GradCamResult | None = None, lime: LimeResult | None = None
) -> tuple[ZoneDescriptor, ...]:
    """Zone descriptors sorted by fused score (mean of Grad-CAM zone mean and LIME intensity).

    Either explanation may be None (then the other alone scores the zones); both None is an
    error. The results must come from the same image as ``lungs``.
    """
    return describe_zones(
        split_zones(lungs),
        gradcam=gradcam.restricted if gradcam is not None else None,
        lime=lime.zone_input if lime is not None else None,
    )
