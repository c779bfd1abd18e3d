"""Explanation use cases: decode -> segment + classify -> Grad-CAM / LIME -> quality scores.

Blocking work runs behind work gates: Grad-CAM shares the inference gate (it costs about one
classification); LIME has its own small gate, so a burst of LIME requests is refused with 503
+ Retry-After instead of queueing behind each other or starving /classify.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from explain import (
    ExplanationQuality,
    GradCamResult,
    LimeConfig,
    LimeSummary,
    LungMasks,
    Target,
    ZoneDescriptor,
    assess_quality,
    deletion_test,
    explain_gradcam,
    explain_lime,
    explanation_agreement,
    fused_descriptors,
)
from explain.render import encode_gray_png
from inference.classify import Classification
from inference.errors import IntakeError
from inference.input_gate import InputQuality
from inference.intake import Limits, Radiograph, decode_upload
from inference.measure import ChestMeasurements, measure_chest
from inference.operating import Population
from service.gate import WorkGate
from service.jobs import JobControl
from service.registry import ModelRegistry
from service.usecases import GRADCAM_WEIGHT, ImageInfo, gated_classify, image_info, pixel_cost

LIME_WEIGHT = 1.0  # LIME has a gate of its own: only LIME requests are compared


class LungsNotFound(IntakeError):
    """The segmenter found no lung: nothing to explain inside the chest (422)."""

    code = "lungs_not_found"
    detail = "No lung was found in the image; upload a frontal (PA/AP) chest radiograph."


@dataclass(frozen=True)
class ExplainTimings:
    decode_ms: float
    inference_ms: float
    explain_ms: float
    total_ms: float


@dataclass(frozen=True)
class GradCamOutcome:
    target: Target
    classification: Classification
    gradcam: GradCamResult
    heatmap_lungs_png: bytes
    heatmap_full_png: bytes
    quality: ExplanationQuality
    image: ImageInfo
    timings: ExplainTimings
    chest: ChestMeasurements
    input_quality: InputQuality = InputQuality()


@dataclass(frozen=True)
class LimeOutcome:
    """Holds no per-pixel arrays: LIME jobs keep outcomes for minutes."""

    target: Target
    classification: Classification
    lime: LimeSummary
    zones: tuple[ZoneDescriptor, ...]
    quality: ExplanationQuality
    image: ImageInfo
    timings: ExplainTimings
    chest: ChestMeasurements
    input_quality: InputQuality = InputQuality()


@dataclass(frozen=True)
class _Prepared:
    radiograph: Radiograph
    lungs: LungMasks
    classification: Classification
    cam: npt.NDArray[np.float32]
    decode_ms: float
    inference_ms: float
    chest: ChestMeasurements
    input_quality: InputQuality


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def _confidence(c: Classification, target: Target) -> float:
    return c.probability_finding if target == "finding" else 1.0 - c.probability_finding


class ExplainService:
    """Grad-CAM and LIME explanations of the classifier on one uploaded radiograph."""

    def __init__(
        self,
        registry: ModelRegistry,
        gate: WorkGate,
        lime_gate: WorkGate,
        limits: Limits,
        lime_batch_size: int = 32,
    ) -> None:
        self.registry = registry
        self.gate = gate
        self.lime_gate = lime_gate
        self.limits = limits
        self.lime_batch_size = lime_batch_size

    def _predict(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        t = self.registry.active_calibration.temperature
        return self.registry.classifier.probabilities(images, t)

    def _cancellable(
        self, control: JobControl
    ) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
        def predict(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            control.check()  # a cancelled job stops here, between model batches
            return self._predict(images)

        return predict

    def _prepare(self, data: bytes, population: Population | None) -> _Prepared:
        t0 = time.perf_counter()
        radiograph = decode_upload(data, self.limits)
        decode_ms = _ms(t0)
        t1 = time.perf_counter()
        # The input gate (inside gated_classify) refuses non-radiographs before the segmenter.
        gated = gated_classify(self.registry, [radiograph], population)[0]
        anatomy = self.registry.segmenter.segment(radiograph.pixels)
        lungs = LungMasks(right=anatomy.mask("right_lung"), left=anatomy.mask("left_lung"))
        chest = measure_chest(lungs.right, lungs.left, anatomy.mask("heart_mediastinum"))
        return _Prepared(
            radiograph=radiograph,
            lungs=lungs,
            classification=gated.classification,
            cam=gated.output.cam,
            decode_ms=decode_ms,
            inference_ms=_ms(t1),
            chest=chest,
            input_quality=gated.input_quality,
        )

    def _gradcam(self, p: _Prepared, target: Target) -> GradCamResult:
        return explain_gradcam(p.radiograph.pixels, p.cam, p.lungs, target)

    def _gradcam_sync(
        self, data: bytes, target: Target | None, population: Population | None = None
    ) -> GradCamOutcome:
        t0 = time.perf_counter()
        p = self._prepare(data, population)
        chosen = target or p.classification.side
        t1 = time.perf_counter()
        result = self._gradcam(p, chosen)
        deletion = None
        if p.lungs.both.any():
            deletion = deletion_test(
                p.radiograph.pixels, result.heatmap, p.lungs.both, self._predict, chosen
            )
        quality = assess_quality(
            _confidence(p.classification, chosen),
            energy_in_lungs=result.energy_in_lungs,
            deletion=deletion,
            empty_map=result.raw_peak <= 0.0,
            lungs_found=bool(p.lungs.both.any()),
        )
        lungs_png = encode_gray_png(result.restricted)
        full_png = encode_gray_png(result.heatmap)
        timings = ExplainTimings(p.decode_ms, p.inference_ms, _ms(t1), _ms(t0))
        return GradCamOutcome(
            chosen,
            p.classification,
            result,
            lungs_png,
            full_png,
            quality,
            image_info(p.radiograph),
            timings,
            p.chest,
            p.input_quality,
        )

    def _lime_sync(
        self,
        data: bytes,
        target: Target | None,
        n_samples: int,
        seed: int,
        control: JobControl | None = None,
        population: Population | None = None,
    ) -> LimeOutcome:
        t0 = time.perf_counter()
        predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] = self._predict
        if control is not None:
            control.started()
            predict = self._cancellable(control)
        p = self._prepare(data, population)
        if not p.lungs.both.any():
            raise LungsNotFound()
        chosen = target or p.classification.side
        t1 = time.perf_counter()
        config = LimeConfig(n_samples=n_samples, batch_size=self.lime_batch_size)
        lime = explain_lime(p.radiograph.pixels, p.lungs, predict, chosen, seed=seed, config=config)
        gradcam = self._gradcam(p, chosen)
        deletion = deletion_test(
            p.radiograph.pixels, lime.signed_map, p.lungs.both, predict, chosen, seed=seed
        )
        quality = assess_quality(
            _confidence(p.classification, chosen),
            energy_in_lungs=gradcam.energy_in_lungs,
            agreement_iou=explanation_agreement(gradcam, lime),
            deletion=deletion,
            empty_map=not bool((lime.weights > 0).any()),
        )
        zones = fused_descriptors(p.lungs, gradcam, lime)
        timings = ExplainTimings(p.decode_ms, p.inference_ms, _ms(t1), _ms(t0))
        return LimeOutcome(
            chosen,
            p.classification,
            lime.summary(),
            zones,
            quality,
            image_info(p.radiograph),
            timings,
            p.chest,
            p.input_quality,
        )

    async def gradcam(
        self, data: bytes, target: Target | None, population: Population | None = None
    ) -> GradCamOutcome:
        cost = pixel_cost(data, self.limits, GRADCAM_WEIGHT)
        return await self.gate.run(lambda: self._gradcam_sync(data, target, population), cost)

    async def lime(
        self,
        data: bytes,
        target: Target | None,
        n_samples: int,
        seed: int,
        control: JobControl | None = None,
        population: Population | None = None,
    ) -> LimeOutcome:
        cost = pixel_cost(data, self.limits, LIME_WEIGHT) * n_samples / 200
        return await self.lime_gate.run(
            lambda: self._lime_sync(data, target, n_samples, seed, control, population), cost
        )
