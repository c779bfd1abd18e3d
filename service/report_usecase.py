"""POST /report: radiograph -> vision evidence -> prompt -> LLM -> grounded report.

Vision (segmentation, classification, Grad-CAM, optional LIME, zone descriptors) runs behind
the inference gate (LIME behind its own one-slot gate); the LLM runs behind a one-slot gate
because the in-process model is not re-entrant. Only :class:`reporting.evidence.Evidence`
crosses into the prompt: DICOM tags, file names and request fields never reach the LLM.
LLM errors become 503 + Retry-After; the rest of the API is unaffected when the LLM is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from explain.fusion import fused_descriptors
from explain.gradcam import GradCamResult, explain_gradcam
from explain.lime import LimeConfig, LimeResult, explain_lime
from explain.masks import LungMasks
from explain.quality import ExplanationQuality, assess_quality, explanation_agreement
from explain.zones import ZoneDescriptor
from inference.anatomy import segment
from inference.classify import Classification, postprocess, predict_probabilities, run_classifier
from inference.intake import Limits, Radiograph, decode_upload
from reporting.attribution import ShapleyAttribution, ShapleyExplainer
from reporting.errors import LLMError, LLMTimeout, LLMUnavailable
from reporting.evidence import Evidence, Language, ZoneEvidence
from reporting.grounding import GroundingPolicy
from reporting.llama_backend import LlamaConfig, LlamaCppBackend, embedded_config
from reporting.llm import GenerationParams, LLMBackend
from reporting.remote_backend import RemoteConfig, RemoteOpenAIBackend
from reporting.report import GeneratorConfig, Report, ReportGenerator
from service.errors import ServiceUnavailable
from service.gate import WorkGate
from service.registry import ModelRegistry
from service.settings import ReportSettings
from service.usecases import ImageInfo, image_info

log = logging.getLogger("cxr.service.report")


@dataclass(frozen=True)
class VisionEvidence:
    """What the report was built from, with the explanation details the response shows."""

    evidence: Evidence
    classification: Classification
    descriptors: tuple[ZoneDescriptor, ...]
    quality: ExplanationQuality
    lime_used: bool
    image: ImageInfo


@dataclass(frozen=True)
class ReportTimings:
    vision_ms: float
    llm_ms: float
    attribution_ms: float
    total_ms: float


@dataclass(frozen=True)
class ReportOutcome:
    report: Report
    vision: VisionEvidence
    attribution: ShapleyAttribution | None
    timings: ReportTimings


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def vision_evidence(
    registry: ModelRegistry, radiograph: Radiograph, with_lime: bool, lime_config: LimeConfig
) -> VisionEvidence:
    """Segment, classify, explain (Grad-CAM, optionally LIME) and map to Evidence."""
    pixels = radiograph.pixels
    anatomy = segment(registry.segmenter, pixels)
    lungs = LungMasks(right=anatomy.mask("right_lung"), left=anatomy.mask("left_lung"))
    out = run_classifier(registry.classifier, [pixels])[0]
    cls = postprocess(out, registry.classifier)
    target = cls.decision
    gc: GradCamResult = explain_gradcam(pixels, out.cam, lungs, target)
    lime: LimeResult | None = None
    if with_lime:
        lime = explain_lime(
            pixels,
            lungs,
            lambda batch: predict_probabilities(registry.classifier, batch),
            target,
            seed=0,
            config=lime_config,
        )
    descriptors = fused_descriptors(lungs, gc, lime)
    confidence = cls.probability_finding if target == "finding" else 1 - cls.probability_finding
    quality = assess_quality(
        confidence,
        energy_in_lungs=gc.energy_in_lungs,
        agreement_iou=explanation_agreement(gc, lime) if lime is not None else None,
        empty_map=gc.raw_peak <= 0.0,
    )
    evidence = Evidence(
        decision=cls.decision,
        probability_finding=min(1.0, max(0.0, float(cls.probability_finding))),
        threshold=float(cls.threshold),
        zones=tuple(
            ZoneEvidence(d.zone_id, min(1.0, d.fused), d.lime_intensity, min(1.0, d.fused))
            for d in descriptors
        ),
        explanation_weak=quality.weak,
        view=None,  # never taken from DICOM tags: the prompt sees model outputs only
    )
    return VisionEvidence(
        evidence, cls, descriptors, quality, lime is not None, image_info(radiograph)
    )


def _remote(s: ReportSettings) -> LLMBackend:
    if not s.remote_url:
        raise LLMUnavailable("report.remote_url is not set", retry_after=3600)
    return RemoteOpenAIBackend(
        RemoteConfig(
            base_url=s.remote_url,
            model=s.remote_model,
            timeout=s.remote_timeout_s,
            max_retries=s.remote_retries,
            languages=frozenset(s.languages),
            model_sha256=s.gguf_sha256,
            failure_threshold=s.breaker_failures,
            reset_after=s.breaker_reset_s,
        )
    )


def _gguf(s: ReportSettings) -> LLMBackend:
    if s.gguf_path is None:
        raise LLMUnavailable("report.gguf_path is not set", retry_after=3600)
    return LlamaCppBackend(
        LlamaConfig(
            model_path=s.gguf_path,
            expected_sha256=s.gguf_sha256,
            model_name=s.gguf_path.stem,
            n_threads=s.n_threads,
            languages=frozenset(s.languages),
        )
    )


def _embedded(s: ReportSettings) -> LLMBackend:
    cfg = replace(embedded_config(n_threads=s.n_threads), expected_sha256=s.gguf_sha256)
    return LlamaCppBackend(cfg)


BACKENDS: dict[str, Callable[[ReportSettings], LLMBackend]] = {
    "embedded": _embedded,
    "gguf": _gguf,
    "remote": _remote,
}


LoadedBackend = tuple[LLMBackend | None, str | None]


def load_backend(s: ReportSettings) -> LoadedBackend:
    """(backend, None) or (None, reason). Never raises: the API must start without an LLM."""
    if s.backend == "disabled":
        return None, "the report LLM is disabled (report.backend=disabled)"
    try:
        return BACKENDS[s.backend](s), None
    except LLMError as exc:
        log.warning("report LLM unavailable: %s", exc)
        return None, str(exc)


class ReportService:
    """Builds grounded reports; see the module docstring for the flow."""

    def __init__(
        self,
        registry: ModelRegistry,
        vision_gate: WorkGate,
        lime_gate: WorkGate,
        llm_gate: WorkGate,
        limits: Limits,
        backend: LLMBackend | None,
        settings: ReportSettings,
        backend_error: str | None = None,
    ) -> None:
        self.registry = registry
        self.vision_gate = vision_gate
        self.lime_gate = lime_gate
        self.llm_gate = llm_gate
        self.limits = limits
        self.backend = backend
        self.settings = settings
        self.backend_error = backend_error
        self.lime_config = LimeConfig(n_samples=settings.lime_samples)
        self.generator = (
            ReportGenerator(
                backend,
                GeneratorConfig(
                    params=GenerationParams(max_tokens=settings.max_tokens, seed=settings.seed),
                    policy=GroundingPolicy(min_intensity=settings.min_zone_intensity),
                ),
            )
            if backend is not None
            else None
        )

    def _require_llm(self) -> ReportGenerator:
        if self.generator is None:
            raise ServiceUnavailable(
                "llm_unavailable",
                "The report language model is not available; other endpoints still work.",
                self.settings.retry_after_s,
            )
        return self.generator

    def model_hashes(self) -> dict[str, str]:
        return {m.manifest.name: m.manifest.sha256 for m in self.registry.models()}

    def _vision_sync(self, data: bytes, with_lime: bool) -> VisionEvidence:
        radiograph = decode_upload(data, self.limits)
        return vision_evidence(self.registry, radiograph, with_lime, self.lime_config)

    def _llm_sync(
        self, vision: VisionEvidence, language: Language, attributions: bool
    ) -> tuple[Report, ShapleyAttribution | None, float, float]:
        generator = self._require_llm()
        t0 = time.perf_counter()
        report = generator.generate(vision.evidence, language, self.model_hashes())
        llm_ms = _ms(t0)
        attribution = None
        t1 = time.perf_counter()
        if attributions:
            explainer = ShapleyExplainer(
                generator.backend, budget=self.settings.attribution_budget, seed=0
            )
            attribution = explainer.explain(
                vision.evidence, report.prompt_zones, report.generation_language, report.generated
            )
        return report, attribution, llm_ms, _ms(t1) if attributions else 0.0

    async def report(
        self, data: bytes, language: Language, with_lime: bool, attributions: bool
    ) -> ReportOutcome:
        self._require_llm()  # fail fast, before any vision work
        t0 = time.perf_counter()
        gate = self.lime_gate if with_lime else self.vision_gate
        vision = await gate.run(lambda: self._vision_sync(data, with_lime))
        vision_ms = _ms(t0)
        try:
            report, attribution, llm_ms, attr_ms = await self.llm_gate.run(
                lambda: self._llm_sync(vision, language, attributions)
            )
        except (LLMUnavailable, LLMTimeout) as exc:
            code = "llm_timeout" if isinstance(exc, LLMTimeout) else "llm_unavailable"
            raise ServiceUnavailable(
                code,
                "The report language model did not answer; retry later.",
                max(self.settings.retry_after_s, round(exc.retry_after)),
            ) from exc
        return ReportOutcome(
            report, vision, attribution, ReportTimings(vision_ms, llm_ms, attr_ms, _ms(t0))
        )

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def build_report_service(
    registry: ModelRegistry,
    vision_gate: WorkGate,
    limits: Limits,
    settings: ReportSettings,
    backend: LLMBackend | None,
    backend_error: str | None = None,
) -> ReportService:
    lime_gate = WorkGate("lime", 1, settings.max_queue, settings.retry_after_s)
    llm_gate = WorkGate("llm", 1, settings.max_queue, settings.retry_after_s)
    return ReportService(
        registry, vision_gate, lime_gate, llm_gate, limits, backend, settings, backend_error
    )
