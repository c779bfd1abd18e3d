"""POST /report: radiograph -> vision evidence -> prompt -> LLM -> grounded report.

Vision (segmentation, classification, Grad-CAM, optional LIME, zone descriptors and the
"weak explanation" flag) is the explanation service's own pipeline, behind its gates, so a
report is built from exactly what /explain/* shows; without lungs (LIME impossible) the
report is built from Grad-CAM descriptors of the same vision (one decode, one pass of each
model either way). The LLM runs behind a one-slot gate because the in-process model is not
re-entrant. Only :class:`reporting.evidence.Evidence` crosses into the prompt: DICOM tags,
file names and request fields never reach the LLM. LLM errors become 503 (unavailable) or 504
(timeout) + Retry-After; the rest of the API is unaffected when the LLM is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from explain.quality import ExplanationQuality
from explain.zones import ZoneDescriptor
from inference.classify import Classification
from inference.input_gate import InputQuality
from inference.measure import ChestMeasurements
from inference.operating import OperatingPoints, Population
from reporting.attribution import ShapleyAttribution, ShapleyExplainer
from reporting.errors import GenerationCancelled, LLMError, LLMTimeout, LLMUnavailable
from reporting.evidence import LANGUAGES, Evidence, Language, Measurements, ZoneEvidence
from reporting.grounding import GroundingPolicy
from reporting.llama_backend import LlamaConfig, LlamaCppBackend, embedded_config
from reporting.llm import GenerationParams, LLMBackend
from reporting.remote_backend import RemoteConfig, RemoteOpenAIBackend
from reporting.report import GeneratorConfig, Report, ReportGenerator
from reporting.stream import StreamEvent
from service.errors import JobCancelled, ServiceUnavailable, UpstreamTimeout
from service.explain_usecase import ExplainService, Explanation
from service.gate import WorkGate
from service.jobs import JobControl
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import ReportSettings
from service.usecases import ImageInfo
from service.vision import Vision

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
    chest: ChestMeasurements
    input_quality: InputQuality = InputQuality()


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


def _unit(value: float | None) -> float | None:
    return None if value is None else min(1.0, max(0.0, float(value)))


def to_measurements(chest: ChestMeasurements) -> Measurements:
    return Measurements(
        ctr=chest.ctr,
        ctr_reliable=chest.reliable,
        ctr_notes=chest.notes,
        right_lung_share=chest.right_share,
        left_lung_share=chest.left_share,
        lung_ratio=chest.lung_ratio,
    )


def early_evidence(v: Vision) -> Evidence:
    """The Evidence known before any explanation (no zones): what the LLM may read ahead."""
    return to_evidence(v.classification, (), False, v.chest, v.input_quality)


def to_evidence(
    classification: Classification,
    descriptors: tuple[ZoneDescriptor, ...],
    weak: bool,
    chest: ChestMeasurements | None = None,
    input_quality: InputQuality | None = None,
) -> Evidence:
    """Map the explanation stage's outputs to the report's input contract.

    A zone's report intensity is the fused Grad-CAM/LIME score (the Grad-CAM mean when LIME did
    not run); its Grad-CAM mean and LIME intensity travel separately so the report can say
    where the two agree.
    """
    return Evidence(
        decision=classification.side,
        probability_finding=min(1.0, max(0.0, float(classification.probability_finding))),
        threshold=float(classification.threshold),
        zones=tuple(
            ZoneEvidence(
                d.zone_id,
                min(1.0, d.fused),
                lime_weight=_unit(d.lime_intensity),
                fused=min(1.0, d.fused),
                gradcam=_unit(d.gradcam_mean),
            )
            for d in descriptors
        ),
        explanation_weak=weak,
        view=None,  # never taken from DICOM tags: the prompt sees model outputs only
        measurements=to_measurements(chest) if chest is not None else None,
        # The population's borderline band and the input gate's flags (the report words them).
        band=classification.band if classification.band[0] < classification.band[1] else None,
        quality_flags=tuple(input_quality.flags) if input_quality is not None else (),
        # whose threshold this is, and whether it is the default for want of an age
        population=classification.population,
        population_assumed=classification.population_source == "default",
    )


def usual_leads(points: OperatingPoints) -> tuple[Evidence, ...]:
    """One Evidence per facts lead most requests share (:meth:`ReportGenerator.warm`): a
    finding, a borderline result (when the population has a band) and no finding, at the
    default population's threshold, its age not given, no quality flags. The probabilities
    are chosen clear of the threshold so it is printed with its usual two digits."""
    population = points.default_population
    point = points.for_population(population)
    lo, hi = point.band
    chosen = [(1.0 + max(hi, point.threshold)) / 2.0]
    if lo < hi:
        chosen.append(lo)  # inside the band: "borderline result" on either side
    chosen.append(min(lo, point.threshold) / 2.0)
    return tuple(
        Evidence(
            decision=point.binary(p),
            probability_finding=p,
            threshold=point.threshold,
            zones=(),
            band=point.band if lo < hi else None,
            population=population,
            population_assumed=True,
        )
        for p in chosen
    )


def vision_evidence(e: Explanation) -> VisionEvidence:
    """The report's view of an explanation: numbers only, no pixel arrays (a report waits for
    the one LLM slot with this in hand)."""
    return VisionEvidence(
        to_evidence(e.classification, e.zones, e.quality.weak, e.chest, e.input_quality),
        e.classification,
        e.zones,
        e.quality,
        e.lime_used,
        e.image,
        e.chest,
        e.input_quality,
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
            n_ctx=s.n_ctx,
            languages=frozenset(s.languages),
            prefix_cache=s.prefix_cache,
            draft=s.draft_tokens,
        )
    )


def _embedded(s: ReportSettings) -> LLMBackend:
    cfg = replace(
        embedded_config(n_threads=s.n_threads, n_ctx=s.n_ctx),
        expected_sha256=s.gguf_sha256,
        prefix_cache=s.prefix_cache,
        draft=s.draft_tokens,
    )
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
        explain: ExplainService,
        llm_gate: WorkGate,
        backend: LLMBackend | None,
        settings: ReportSettings,
        backend_error: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.registry = registry
        self.explain = explain
        self.llm_gate = llm_gate
        self.backend = backend
        self.settings = settings
        self.backend_error = backend_error
        self._stop_warm_up = threading.Event()
        self._warm_thread: threading.Thread | None = None
        self.warmed = threading.Event()  # set once the usual prompt leads are read
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

    def require_llm(self) -> ReportGenerator:
        """The loaded LLM, or ServiceUnavailable (503) now when none is configured or loaded."""
        if self.generator is None:
            raise ServiceUnavailable(
                "llm_unavailable",
                "The report language model is not available; other endpoints still work.",
                self.settings.retry_after_s,
            )
        return self.generator

    def model_hashes(self) -> dict[str, str]:
        return {m.manifest.name: m.manifest.sha256 for m in self.registry.models()}

    async def explanation(
        self,
        data: bytes,
        with_lime: bool,
        control: JobControl | None = None,
        population: Population | None = None,
        read_ahead: Language | None = None,
    ) -> Explanation:
        """The vision half with its maps (for the bundle's pictures); LIME when asked and the
        segmenter finds lungs, Grad-CAM alone otherwise, from one decode and one pass of each
        model. ``read_ahead``: the report's language, to let an idle LLM read the facts known
        before the explanations while they are computed (:meth:`_read_ahead`)."""
        samples = self.settings.lime_samples if with_lime else None
        on_seen = None
        if read_ahead is not None and self.generator is not None and self.settings.read_ahead:
            language: Language = read_ahead
            on_seen = lambda v: self._read_ahead(v, language)  # noqa: E731
        return await self.explain.explanation(data, samples, control, population, on_seen)

    async def evidence(
        self,
        data: bytes,
        with_lime: bool,
        control: JobControl | None = None,
        population: Population | None = None,
        read_ahead: Language | None = None,
    ) -> VisionEvidence:
        """The vision half of a report: what the prompt will be built from."""
        explanation = await self.explanation(data, with_lime, control, population, read_ahead)
        return vision_evidence(explanation)

    def _read_ahead(self, v: Vision, language: Language) -> None:
        """Start the LLM on the report's first facts (decision, probability, measurements,
        flags) in the background, so that once Grad-CAM and LIME are done it has only their
        lines left to read. Only when no report is being written or waiting: then the model
        would be busy, and what it read ahead would be overwritten before it is used."""
        generator = self.generator
        if generator is None or self.llm_gate.in_flight > 0:
            return
        early = early_evidence(v)

        def run() -> None:
            try:
                generator.prefill(early, language)
            except Exception:  # noqa: BLE001 - an optimisation: generate() reads it anyway
                log.warning("LLM read-ahead failed", exc_info=True)

        threading.Thread(target=run, name="llm-read-ahead", daemon=True).start()

    def _llm_sync(
        self,
        vision: VisionEvidence,
        language: Language,
        attributions: bool,
        on_event: Callable[[StreamEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[Report, ShapleyAttribution | None, float, float]:
        generator = self.require_llm()
        t0 = time.perf_counter()
        report = generator.generate(
            vision.evidence, language, self.model_hashes(), on_event=on_event, cancel=cancel
        )
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

    async def write(
        self,
        vision: VisionEvidence,
        language: Language,
        attributions: bool,
        vision_ms: float,
        on_event: Callable[[StreamEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ReportOutcome:
        """The language half: LLM, grounding, optional attributions. The LLM down raises
        ServiceUnavailable (503), too slow UpstreamTimeout (504).

        ``on_event`` is called from the worker thread as the report is written; ``cancel``
        stops the generation between tokens (GenerationCancelled)."""
        t0 = time.perf_counter()
        try:
            report, attribution, llm_ms, attr_ms = await self.llm_gate.run(
                lambda: self._llm_sync(vision, language, attributions, on_event, cancel)
            )
        except GenerationCancelled as exc:
            raise JobCancelled() from exc  # its client left; answered like a cancelled LIME
        except LLMTimeout as exc:
            raise UpstreamTimeout(
                "llm_timeout",
                "The report language model did not answer in time; retry later.",
                max(self.settings.retry_after_s, round(exc.retry_after)),
            ) from exc
        except LLMUnavailable as exc:
            raise ServiceUnavailable(
                "llm_unavailable",
                "The report language model did not answer; retry later.",
                max(self.settings.retry_after_s, round(exc.retry_after)),
            ) from exc
        if self.metrics is not None:
            self.metrics.generation(report.generation.tokens, report.generation.seconds)
        total = round(vision_ms + _ms(t0), 2)
        return ReportOutcome(
            report, vision, attribution, ReportTimings(vision_ms, llm_ms, attr_ms, total)
        )

    async def report(
        self,
        data: bytes,
        language: Language,
        with_lime: bool,
        attributions: bool,
        control: JobControl | None = None,
        population: Population | None = None,
    ) -> ReportOutcome:
        """``control`` lets the caller stop the LIME step (e.g. when its client has left)."""
        self.require_llm()  # fail fast, before any vision work
        t0 = time.perf_counter()
        vision = await self.evidence(data, with_lime, control, population, language)
        cancel = control.cancelled if control is not None else None
        return await self.write(vision, language, attributions, _ms(t0), cancel=cancel)

    def start_warm_up(self) -> None:
        """Read the usual prompt prefixes in the background (:meth:`warm_up`), when the
        in-process LLM is loaded and ``report.warm_up`` is set."""
        if self.generator is None or not self.settings.warm_up or self._warm_thread is not None:
            return
        self._warm_thread = threading.Thread(
            target=self.warm_up, args=(self._stop_warm_up,), name="llm-warm-up", daemon=True
        )
        self._warm_thread.start()

    def warm_up(self, stop: threading.Event) -> None:
        """Read the fixed prompt prefix and the usual facts leads (:func:`usual_leads`) in
        each report language, the site's first language first, so that the first reports
        after a start do not each read them (Qwen, Russian: ~1,700 tokens, ~85 s on one
        thread). Yields to reports: waits while one is written or queued, and reads one lead
        at a time (a report that arrives meanwhile waits for that read only)."""
        generator = self.generator
        if generator is None:
            return
        written = generator.backend.info.languages
        languages = [x for x in dict.fromkeys(self.settings.languages) if x in written]
        leads = usual_leads(self.registry.active_calibration.points)
        t0, read = time.perf_counter(), 0
        for language in languages or [LANGUAGES[0]]:
            for evidence in leads:
                while self.llm_gate.in_flight > 0 and not stop.is_set():
                    stop.wait(0.5)
                if stop.is_set():
                    return
                try:
                    generator.warm(evidence, language)
                except LLMError as exc:
                    log.warning("LLM warm-up stopped: %s", exc)
                    return
                read += 1
        self.warmed.set()
        log.info("LLM warm-up: %d prompt leads read in %.1f s", read, time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the warm-up (after the lead being read) and free the model."""
        self._stop_warm_up.set()
        if self._warm_thread is not None:
            self._warm_thread.join()
        if self.backend is not None:
            self.backend.close()


def build_report_service(
    registry: ModelRegistry,
    explain: ExplainService,
    settings: ReportSettings,
    backend: LLMBackend | None,
    backend_error: str | None = None,
    *,
    metrics: Metrics | None = None,
) -> ReportService:
    llm_gate = WorkGate("llm", 1, settings.max_queue, settings.retry_after_s, metrics=metrics)
    return ReportService(registry, explain, llm_gate, backend, settings, backend_error, metrics)
