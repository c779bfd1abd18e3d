"""One upload, seen once: decode, input gate + classifier, segmenter, chest measurements.

Grad-CAM, LIME, the report and the interop bundle all start from the same :class:`Vision`, so a
request decodes its upload and runs each model exactly once however many outputs it combines
(the /report fallback without lungs used to decode and classify a second time). Blocking: the
caller runs :func:`see` inside a work gate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from explain import LungMasks
from inference.anatomy import Anatomy
from inference.classify import Classification
from inference.input_gate import InputQuality
from inference.intake import Limits, Radiograph, decode_upload
from inference.measure import ChestMeasurements, measure_chest
from inference.operating import Population
from service.registry import ModelRegistry
from service.usecases import GatedClassification, ImageInfo, gated_classify, image_info


@dataclass(frozen=True)
class Vision:
    """What the models saw and said about one upload (arrays at the working copy's [H, W]).

    Held while one request's answer is built; never kept by jobs (they keep encoded JSON).
    decode_ms: decoding the upload; inference_ms: input gate, classifier, segmenter and
    measurements together.
    """

    radiograph: Radiograph
    gated: GatedClassification
    anatomy: Anatomy
    lungs: LungMasks
    chest: ChestMeasurements
    decode_ms: float
    inference_ms: float

    @property
    def classification(self) -> Classification:
        return self.gated.classification

    @property
    def input_quality(self) -> InputQuality:
        return self.gated.input_quality

    @property
    def lungs_found(self) -> bool:
        """The segmenter found lung: LIME and the deletion test have a chest to work in."""
        return bool(self.lungs.both.any())

    @property
    def image(self) -> ImageInfo:
        return image_info(self.radiograph)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def see(
    registry: ModelRegistry, data: bytes, limits: Limits, population: Population | None
) -> Vision:
    """Decode ``data`` and run the input gate, the classifier and the segmenter once each.

    Raises what intake and the input gate raise (unreadable, too large, not a chest
    radiograph) before the segmenter runs; finding no lung is not an error here
    (:attr:`Vision.lungs_found` says so, and each caller decides what that means for it).
    """
    t0 = time.perf_counter()
    radiograph = decode_upload(data, limits)
    decode_ms = _ms(t0)
    t1 = time.perf_counter()
    gated = gated_classify(registry, [radiograph], population)[0]
    anatomy = registry.segmenter.segment(radiograph.pixels)
    lungs = LungMasks(right=anatomy.mask("right_lung"), left=anatomy.mask("left_lung"))
    chest = measure_chest(lungs.right, lungs.left, anatomy.mask("heart_mediastinum"))
    return Vision(radiograph, gated, anatomy, lungs, chest, decode_ms, _ms(t1))
