"""Use cases: decode -> infer -> post-process, run off the event loop behind the work gate.

Every use case works on the radiograph's bounded working copy (see ``inference.intake``) and
tells the gate what it costs (:func:`pixel_cost`), so that admission counts work, not requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from inference.anatomy import Anatomy
from inference.classify import Classification, ClassifierOutput, postprocess
from inference.errors import PixelBudgetExceeded
from inference.input_gate import InputQuality
from inference.intake import Limits, Radiograph, decode_upload, estimate_pixels
from inference.operating import Decision, Population, choose_population
from inference.render import anatomy_overlay, mask_png, radiograph_png
from service.gate import WorkGate
from service.registry import ModelRegistry

T = TypeVar("T")


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    inference_ms: float
    total_ms: float


@dataclass(frozen=True)
class ImageInfo:
    """The upload's size and encoding, and the size of the working copy the models saw."""

    width: int
    height: int
    format: str
    bits_stored: int
    photometric: str
    analysis_width: int
    analysis_height: int


@dataclass(frozen=True)
class ClassifyOutcome:
    classification: Classification
    image: ImageInfo
    timings: Timings
    input_quality: InputQuality = InputQuality()


@dataclass(frozen=True)
class StudyOutcome:
    """Per-view results plus the study decision: a finding in any view is a finding."""

    views: tuple[ClassifyOutcome, ...]
    probability_finding: float
    decision: Decision
    threshold: float
    classification: Classification


@dataclass(frozen=True)
class StructureOutcome:
    name: str
    mask_png: bytes
    area_fraction: float
    provenance: str


@dataclass(frozen=True)
class SegmentOutcome:
    structures: tuple[StructureOutcome, ...]
    overlay_png: bytes
    image: ImageInfo
    timings: Timings
    input_quality: InputQuality = InputQuality()


@dataclass(frozen=True)
class GatedClassification:
    """The classifier's raw output, its decision and the input gate's verdict on the image."""

    output: ClassifierOutput
    classification: Classification
    input_quality: InputQuality


def gated_classify(
    registry: ModelRegistry,
    radiographs: list[Radiograph],
    population: Population | None = None,
) -> list[GatedClassification]:
    """Input gate + one batched classifier pass (+ the population's operating point).

    The rules run before any model; the learned score runs on the same forward pass. Raises
    :class:`inference.errors.NotAChestRadiograph` (naming the view in a study) before any model
    output exists outside this function. Population: ``population`` (the request) > DICOM
    PatientAge of the first view that has one > the calibration's default.
    """
    gate = registry.input_gate
    many = len(radiographs) > 1
    pres = [gate.precheck(r, i if many else None) for i, r in enumerate(radiographs)]
    outputs = registry.classifier.predict([r.pixels for r in radiographs])
    qualities = [
        gate.finish(pre, out.pooled, i if many else None)
        for i, (pre, out) in enumerate(zip(pres, outputs, strict=True))
    ]
    calibration = registry.active_calibration
    age = next((r.patient_age_years for r in radiographs if r.patient_age_years is not None), None)
    pop, source = choose_population(population, age, calibration.points.default_population)
    return [
        GatedClassification(out, postprocess(out, calibration, pop, source), q)
        for out, q in zip(outputs, qualities, strict=True)
    ]


def image_info(r: Radiograph) -> ImageInfo:
    height, width = r.pixels.shape
    return ImageInfo(
        r.width, r.height, r.format.value, r.bits_stored, r.photometric, int(width), int(height)
    )


# Work per working-copy megapixel relative to a classification, and per upload megapixel for
# decoding (rough ratios from bench/RESULTS.md; the gate learns the seconds per unit).
CLASSIFY_WEIGHT = 1.0
SEGMENT_WEIGHT = 2.0
GRADCAM_WEIGHT = 4.0
DECODE_WEIGHT = 0.05
_BASE_MEGAPIXELS = 0.25  # fixed cost of a request: model runs at 224-512 px whatever the size


def pixel_cost(data: bytes, limits: Limits, weight: float) -> float:
    """Gate cost of running work of ``weight`` on an upload (from its header, not decoded)."""
    megapixels = estimate_pixels(data) / 1e6
    working = min(megapixels, limits.work_side**2 / 1e6)
    return weight * (_BASE_MEGAPIXELS + working) + DECODE_WEIGHT * megapixels


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def timed_pipeline(
    data: bytes, limits: Limits, work: Callable[[Radiograph], T]
) -> tuple[Radiograph, T, Timings]:
    """Decode, then run ``work`` on the radiograph; return both with their timings."""
    t0 = time.perf_counter()
    radiograph = decode_upload(data, limits)
    decode_ms = _ms(t0)
    t1 = time.perf_counter()
    result = work(radiograph)
    return radiograph, result, Timings(decode_ms, _ms(t1), _ms(t0))


class AnalysisService:
    """Classification and segmentation of uploaded radiographs."""

    def __init__(
        self,
        registry: ModelRegistry,
        gate: WorkGate,
        limits: Limits,
        max_study_pixels: int = 60_000_000,
    ) -> None:
        self.registry = registry
        self.gate = gate
        self.limits = limits
        self.max_study_pixels = max_study_pixels

    def _classify_sync(self, data: bytes, population: Population | None) -> ClassifyOutcome:
        def work(r: Radiograph) -> GatedClassification:
            return gated_classify(self.registry, [r], population)[0]

        radiograph, result, timings = timed_pipeline(data, self.limits, work)
        return ClassifyOutcome(
            result.classification, image_info(radiograph), timings, result.input_quality
        )

    def _study_sync(self, blobs: list[bytes], population: Population | None) -> StudyOutcome:
        decoded = []
        total_pixels = 0
        for data in blobs:
            t0 = time.perf_counter()
            radiograph = decode_upload(data, self.limits)
            # Headers were checked before admission; DICOM sizes are known only now.
            total_pixels += radiograph.width * radiograph.height
            if total_pixels > self.max_study_pixels:
                raise PixelBudgetExceeded()
            decoded.append((radiograph, _ms(t0)))
        t1 = time.perf_counter()
        # One batched forward pass for all views; any unsuitable view refuses the study.
        gated = gated_classify(self.registry, [r for r, _ in decoded], population)
        per_view_ms = round(_ms(t1) / len(decoded), 2)
        views = tuple(
            ClassifyOutcome(
                g.classification,
                image_info(r),
                Timings(decode_ms, per_view_ms, round(decode_ms + per_view_ms, 2)),
                g.input_quality,
            )
            for (r, decode_ms), g in zip(decoded, gated, strict=True)
        )
        top = max(views, key=lambda v: v.classification.probability_finding).classification
        return StudyOutcome(views, top.probability_finding, top.decision, top.threshold, top)

    def check_input(self, r: Radiograph) -> InputQuality:
        """The segmenter has no features of its own: the gate runs the classifier for them
        (rules alone when no learned gate is loaded)."""
        gate = self.registry.input_gate
        pre = gate.precheck(r)
        if gate.ood is None:
            return gate.finish(pre, None)
        out = self.registry.classifier.predict([r.pixels])[0]
        return gate.finish(pre, out.pooled)

    def _segment_sync(self, data: bytes) -> SegmentOutcome:
        def work(r: Radiograph) -> tuple[InputQuality, Anatomy]:
            quality = self.check_input(r)
            return quality, self.registry.segmenter.segment(r.pixels)

        radiograph, (quality, anatomy), timings = timed_pipeline(data, self.limits, work)
        structures = tuple(
            StructureOutcome(s.name, mask_png(s.mask), round(s.area_fraction, 6), s.provenance)
            for s in anatomy.structures
        )
        overlay = anatomy_overlay(radiograph.pixels, anatomy)
        return SegmentOutcome(structures, overlay, image_info(radiograph), timings, quality)

    def _render_sync(self, data: bytes, max_side: int | None) -> bytes:
        return radiograph_png(decode_upload(data, self.limits).pixels, max_side)

    async def render(self, data: bytes, max_side: int | None = None) -> bytes:
        """PNG of the decoded, windowed radiograph (what the models and overlays were made on)."""
        cost = pixel_cost(data, self.limits, DECODE_WEIGHT)
        return await self.gate.run(lambda: self._render_sync(data, max_side), cost)

    async def classify(self, data: bytes, population: Population | None = None) -> ClassifyOutcome:
        cost = pixel_cost(data, self.limits, CLASSIFY_WEIGHT)
        return await self.gate.run(lambda: self._classify_sync(data, population), cost)

    async def classify_study(
        self, blobs: list[bytes], population: Population | None = None
    ) -> StudyOutcome:
        if sum(estimate_pixels(b) for b in blobs) > self.max_study_pixels:
            raise PixelBudgetExceeded()  # refused from the headers, before any decoding
        cost = sum(pixel_cost(b, self.limits, CLASSIFY_WEIGHT) for b in blobs)
        return await self.gate.run(lambda: self._study_sync(blobs, population), cost)

    async def segment(self, data: bytes) -> SegmentOutcome:
        cost = pixel_cost(data, self.limits, SEGMENT_WEIGHT)
        return await self.gate.run(lambda: self._segment_sync(data), cost)
