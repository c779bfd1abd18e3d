"""Use cases: decode -> infer -> post-process, run off the event loop behind the work gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from inference.anatomy import Anatomy, segment
from inference.classify import Classification, decide, postprocess, run_classifier
from inference.intake import Limits, Radiograph, decode_upload
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
    width: int
    height: int
    format: str
    bits_stored: int
    photometric: str


@dataclass(frozen=True)
class ClassifyOutcome:
    classification: Classification
    image: ImageInfo
    timings: Timings


@dataclass(frozen=True)
class StudyOutcome:
    """Per-view results plus the study decision: a finding in any view is a finding."""

    views: tuple[ClassifyOutcome, ...]
    probability_finding: float
    decision: str
    threshold: float


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


def image_info(r: Radiograph) -> ImageInfo:
    return ImageInfo(r.width, r.height, r.format.value, r.bits_stored, r.photometric)


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

    def __init__(self, registry: ModelRegistry, gate: WorkGate, limits: Limits) -> None:
        self.registry = registry
        self.gate = gate
        self.limits = limits

    def _classify_sync(self, data: bytes) -> ClassifyOutcome:
        def work(r: Radiograph) -> Classification:
            out = run_classifier(self.registry.classifier, [r.pixels])[0]
            return postprocess(out, self.registry.classifier)

        radiograph, result, timings = timed_pipeline(data, self.limits, work)
        return ClassifyOutcome(result, image_info(radiograph), timings)

    def _study_sync(self, blobs: list[bytes]) -> StudyOutcome:
        decoded = []
        for data in blobs:
            t0 = time.perf_counter()
            decoded.append((decode_upload(data, self.limits), _ms(t0)))
        t1 = time.perf_counter()
        # One batched forward pass for all views.
        outputs = run_classifier(self.registry.classifier, [r.pixels for r, _ in decoded])
        per_view_ms = round(_ms(t1) / len(decoded), 2)
        views = tuple(
            ClassifyOutcome(
                postprocess(out, self.registry.classifier),
                image_info(r),
                Timings(decode_ms, per_view_ms, round(decode_ms + per_view_ms, 2)),
            )
            for (r, decode_ms), out in zip(decoded, outputs, strict=True)
        )
        top = max(v.classification.probability_finding for v in views)
        threshold = self.registry.classifier.manifest.threshold
        return StudyOutcome(views, top, decide(top, threshold), threshold)

    def _segment_sync(self, data: bytes) -> SegmentOutcome:
        def work(r: Radiograph) -> Anatomy:
            return segment(self.registry.segmenter, r.pixels)

        radiograph, anatomy, timings = timed_pipeline(data, self.limits, work)
        structures = tuple(
            StructureOutcome(s.name, mask_png(s.mask), round(s.area_fraction, 6), s.provenance)
            for s in anatomy.structures
        )
        overlay = anatomy_overlay(radiograph.pixels, anatomy)
        return SegmentOutcome(structures, overlay, image_info(radiograph), timings)

    def _render_sync(self, data: bytes, max_side: int | None) -> bytes:
        return radiograph_png(decode_upload(data, self.limits).pixels, max_side)

    async def render(self, data: bytes, max_side: int | None = None) -> bytes:
        """PNG of the decoded, windowed radiograph (what the models and overlays were made on)."""
        return await self.gate.run(lambda: self._render_sync(data, max_side))

    async def classify(self, data: bytes) -> ClassifyOutcome:
        return await self.gate.run(lambda: self._classify_sync(data))

    async def classify_study(self, blobs: list[bytes]) -> StudyOutcome:
        return await self.gate.run(lambda: self._study_sync(blobs))

    async def segment(self, data: bytes) -> SegmentOutcome:
        return await self.gate.run(lambda: self._segment_sync(data))
