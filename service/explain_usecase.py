"""Explanation use cases: see the upload once -> Grad-CAM / LIME -> quality scores.

Every request starts from one :class:`service.vision.Vision` (one decode, one pass of each
model); Grad-CAM, LIME and the report's explanation are steps on it, and pictures are encoded
only for the answers that show them.

Blocking work runs behind work gates: Grad-CAM shares the inference gate (it costs about one
classification); LIME has its own small gate, so a burst of LIME requests is refused with 503
+ Retry-After instead of queueing behind each other or starving /classify.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from explain import (
    ExplanationQuality,
    GradCamImages,
    GradCamResult,
    LimeConfig,
    LimeSummary,
    Predict,
    Target,
    ZoneDescriptor,
    assess_quality,
    deletion_test,
    explain_gradcam,
    explain_lime,
    explanation_agreement,
    fused_descriptors,
    render_gradcam,
)
from inference.classify import Classification
from inference.errors import IntakeError
from inference.input_gate import InputQuality
from inference.intake import Limits
from inference.measure import ChestMeasurements
from inference.operating import Population
from service.gate import WorkGate
from service.jobs import JobControl
from service.registry import ModelRegistry
from service.usecases import GRADCAM_WEIGHT, ImageInfo, pixel_cost
from service.vision import Vision, see

log = logging.getLogger("cxr.service.explain")

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

    def plus(self, start: float) -> ExplainTimings:
        """These timings with the explanation work since ``start`` (perf_counter) added."""
        extra = _ms(start)
        return replace(
            self,
            explain_ms=round(self.explain_ms + extra, 2),
            total_ms=round(self.total_ms + extra, 2),
        )


class _FromVision:
    """What outcomes computed from one :class:`Vision` read from it."""

    vision: Vision

    @property
    def classification(self) -> Classification:
        return self.vision.classification

    @property
    def image(self) -> ImageInfo:
        return self.vision.image

    @property
    def chest(self) -> ChestMeasurements:
        return self.vision.chest

    @property
    def input_quality(self) -> InputQuality:
        return self.vision.input_quality


@dataclass(frozen=True)
class GradCamOutcome(_FromVision):
    """Grad-CAM on one upload, with the vision it was computed from (no encoded pictures:
    the report and the DICOM objects need none; see :class:`RenderedGradCam`)."""

    target: Target
    vision: Vision
    gradcam: GradCamResult
    quality: ExplanationQuality
    timings: ExplainTimings


@dataclass(frozen=True)
class RenderedGradCam:
    """A Grad-CAM outcome and its PNGs, for the answer that shows them (/explain/gradcam)."""

    outcome: GradCamOutcome
    images: GradCamImages


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
class Explanation(_FromVision):
    """What a report (and its SR, FHIR and bundle) is built from: the decided class explained by
    Grad-CAM fused with LIME when LIME ran, by Grad-CAM alone otherwise.

    Holds the vision and the Grad-CAM maps for the bundle's SEG and overlay; built per request
    and dropped once its evidence and pictures are taken (see ``report_usecase``).
    """

    target: Target
    vision: Vision
    gradcam: GradCamResult
    zones: tuple[ZoneDescriptor, ...]
    quality: ExplanationQuality
    lime_used: bool
    timings: ExplainTimings


@dataclass(frozen=True)
class _Fused:
    """LIME and Grad-CAM of one target on one vision, and their joint quality and zones."""

    lime: LimeSummary
    gradcam: GradCamResult
    zones: tuple[ZoneDescriptor, ...]
    quality: ExplanationQuality


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def _confidence(c: Classification, target: Target) -> float:
    return c.probability_finding if target == "finding" else 1.0 - c.probability_finding


def _timings(v: Vision, explain_start: float, start: float) -> ExplainTimings:
    return ExplainTimings(v.decode_ms, v.inference_ms, _ms(explain_start), _ms(start))


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
        cal = self.registry.active_calibration
        return self.registry.classifier.probabilities(images, cal.temperature, cal.offset)

    def _predictor(self, control: JobControl | None) -> Predict:
        """The model call of LIME and the deletion test; with a control, the job is marked
        started and a cancelled one stops between model batches."""
        if control is None:
            return self._predict
        control.started()

        def predict(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            control.check()
            return self._predict(images)

        return predict

    def _see(self, data: bytes, population: Population | None) -> Vision:
        return see(self.registry, data, self.limits, population)

    def _lime_cost(self, data: bytes, n_samples: int) -> float:
        return pixel_cost(data, self.limits, LIME_WEIGHT) * n_samples / 200

    # -- steps on one vision --------------------------------------------------------------

    def _gradcam_on(
        self, v: Vision, target: Target | None, predict: Predict, start: float
    ) -> GradCamOutcome:
        chosen = target or v.classification.side
        t1 = time.perf_counter()
        result = explain_gradcam(v.radiograph.pixels, v.gated.output.cam, v.lungs, chosen)
        deletion = None
        if v.lungs_found:
            deletion = deletion_test(
                v.radiograph.pixels, result.heatmap, v.lungs.both, predict, chosen
            )
        quality = assess_quality(
            _confidence(v.classification, chosen),
            energy_in_lungs=result.energy_in_lungs,
            deletion=deletion,
            empty_map=result.raw_peak <= 0.0,
            lungs_found=v.lungs_found,
        )
        return GradCamOutcome(chosen, v, result, quality, _timings(v, t1, start))

    def _fused_on(
        self,
        v: Vision,
        target: Target,
        n_samples: int,
        seed: int,
        predict: Predict,
        render: bool = False,
    ) -> _Fused:
        """LIME + Grad-CAM on a vision with lungs (LIME perturbs superpixels inside them);
        ``render``: with LIME's overlay PNG (only the /explain/lime answer shows it)."""
        config = LimeConfig(n_samples=n_samples, batch_size=self.lime_batch_size)
        pixels = v.radiograph.pixels
        lime = explain_lime(
            pixels, v.lungs, predict, target, seed=seed, config=config, render=render
        )
        gradcam = explain_gradcam(pixels, v.gated.output.cam, v.lungs, target)
        deletion = deletion_test(pixels, lime.signed_map, v.lungs.both, predict, target, seed=seed)
        quality = assess_quality(
            _confidence(v.classification, target),
            energy_in_lungs=gradcam.energy_in_lungs,
            agreement_iou=explanation_agreement(gradcam, lime),
            deletion=deletion,
            empty_map=not bool((lime.weights > 0).any()),
        )
        zones = fused_descriptors(v.lungs, gradcam, lime)
        return _Fused(lime.summary(), gradcam, zones, quality)

    # -- blocking use cases (run inside a gate) -------------------------------------------

    def _gradcam_sync(
        self, data: bytes, target: Target | None, population: Population | None = None
    ) -> GradCamOutcome:
        t0 = time.perf_counter()
        return self._gradcam_on(self._see(data, population), target, self._predict, t0)

    def _rendered_sync(
        self, data: bytes, target: Target | None, population: Population | None
    ) -> RenderedGradCam:
        out = self._gradcam_sync(data, target, population)
        t = time.perf_counter()
        images = render_gradcam(out.vision.radiograph.pixels, out.gradcam)
        return RenderedGradCam(replace(out, timings=out.timings.plus(t)), images)

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
        predict = self._predictor(control)
        v = self._see(data, population)
        if not v.lungs_found:
            raise LungsNotFound()  # the answer to /explain/lime: nothing to perturb
        chosen = target or v.classification.side
        t1 = time.perf_counter()
        f = self._fused_on(v, chosen, n_samples, seed, predict, render=True)
        return LimeOutcome(
            chosen,
            v.classification,
            f.lime,
            f.zones,
            f.quality,
            v.image,
            _timings(v, t1, t0),
            v.chest,
            v.input_quality,
        )

    def _explanation_sync(
        self,
        data: bytes,
        lime_samples: int | None,
        control: JobControl | None,
        population: Population | None,
        on_seen: Callable[[Vision], None] | None = None,
    ) -> Explanation:
        t0 = time.perf_counter()
        predict = self._predictor(control)
        v = self._see(data, population)
        if on_seen is not None:
            on_seen(v)  # e.g. the report's LLM reads the facts known now, while maps are made
        if lime_samples is not None and v.lungs_found:
            chosen = v.classification.side
            t1 = time.perf_counter()
            f = self._fused_on(v, chosen, lime_samples, 0, predict)
            return Explanation(chosen, v, f.gradcam, f.zones, f.quality, True, _timings(v, t1, t0))
        if lime_samples is not None:
            log.info("no lungs found: explanation by Grad-CAM alone")
        gc = self._gradcam_on(v, None, predict, t0)
        zones = gc.gradcam.zones
        return Explanation(gc.target, v, gc.gradcam, zones, gc.quality, False, gc.timings)

    # -- async entry points ---------------------------------------------------------------

    async def gradcam(
        self, data: bytes, target: Target | None, population: Population | None = None
    ) -> GradCamOutcome:
        """Grad-CAM without pictures (for the DICOM objects; see :meth:`rendered_gradcam`)."""
        cost = pixel_cost(data, self.limits, GRADCAM_WEIGHT)
        return await self.gate.run(lambda: self._gradcam_sync(data, target, population), cost)

    async def rendered_gradcam(
        self, data: bytes, target: Target | None, population: Population | None = None
    ) -> RenderedGradCam:
        """Grad-CAM and its overlay and heat-map PNGs (the /explain/gradcam JSON answer)."""
        cost = pixel_cost(data, self.limits, GRADCAM_WEIGHT)
        return await self.gate.run(lambda: self._rendered_sync(data, target, population), cost)

    async def lime(
        self,
        data: bytes,
        target: Target | None,
        n_samples: int,
        seed: int,
        control: JobControl | None = None,
        population: Population | None = None,
    ) -> LimeOutcome:
        return await self.lime_gate.run(
            lambda: self._lime_sync(data, target, n_samples, seed, control, population),
            self._lime_cost(data, n_samples),
        )

    async def explanation(
        self,
        data: bytes,
        lime_samples: int | None,
        control: JobControl | None = None,
        population: Population | None = None,
        on_seen: Callable[[Vision], None] | None = None,
    ) -> Explanation:
        """The decided class explained for a report, from one vision of the upload.

        ``on_seen`` is called (in the worker thread) with the vision before the explanation
        is computed.

        ``lime_samples`` None: Grad-CAM alone, behind the inference gate. A number: LIME (seed
        0) fused with Grad-CAM, behind LIME's gate; when the segmenter finds no lung the same
        vision is explained by Grad-CAM alone (no second decode or classification).
        """
        if lime_samples is None:
            cost = pixel_cost(data, self.limits, GRADCAM_WEIGHT)
            gate = self.gate
        else:
            cost, gate = self._lime_cost(data, lime_samples), self.lime_gate
        return await gate.run(
            lambda: self._explanation_sync(data, lime_samples, control, population, on_seen), cost
        )
