"""Report generation: Evidence -> prompt -> LLM -> grounding -> validated Report.

:class:`ReportGenerator` is the package's entry point. It is synchronous and thread-safe
(the backend serialises model access); the service runs it off the event loop.

Language handling: when the backend can write the requested language, the prompt and the
generation use it ("native"). Otherwise generation and grounding run in English and the
requested-language sections are the deterministic templates of the same evidence
("english_generation_template_rendering"); the grounded English text is returned beside
them so nothing is hidden.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reporting.errors import LLMError
from reporting.evidence import Evidence, Language, ZoneEvidence, ZoneId
from reporting.grounding import GroundingChecker, GroundingPolicy, Provenance, RemovedSentence
from reporting.llm import GenerationParams, GenerationResult, LLMBackend, Message
from reporting.prompt import DEFAULT_TEMPLATE, PromptTemplate, build_messages, early_facts
from reporting.schema import (
    REPORT_JSON_SCHEMA,
    SECTION_NAMES,
    OutputFormatError,
    SectionName,
    Sections,
    parse_sections,
)
from reporting.stream import SectionStreamer, StreamEvent
from reporting.templates import DISCLAIMER, render_template

LanguageMode = Literal["native", "english_generation_template_rendering"]

HEADINGS: dict[Language, dict[SectionName, str]] = {
    "en": {
        "findings": "Radiological findings",
        "interpretation": "Interpretation",
        "recommendations": "Recommendations",
    },
    "ru": {
        "findings": "Рентгенологические находки",
        "interpretation": "Интерпретация",
        "recommendations": "Рекомендации",
    },
}


@dataclass(frozen=True)
class GroundingResult:
    """What the check did. ``unsupported_claims_left`` re-checks the final text (expect 0)."""

    supported_zones: tuple[ZoneId, ...]
    removed: tuple[RemovedSentence, ...]
    fallback_reasons: Mapping[SectionName, str]
    llm_output_valid: bool
    unsupported_claims_left: int

    @property
    def passed(self) -> bool:
        return self.unsupported_claims_left == 0


@dataclass(frozen=True)
class Reproducibility:
    backend: str
    model: str
    model_sha256: str | None
    prompt_template_version: str
    prompt_template_sha256: str
    seed: int
    sampling: Mapping[str, float | int]
    upstream_model_hashes: Mapping[str, str] = field(default_factory=dict)
    backend_extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """A validated report. ``sections`` are in ``language``; ``generated`` is the grounded
    text in ``generation_language`` (the same as ``sections`` in native mode)."""

    language: Language
    generation_language: Language
    language_mode: LanguageMode
    sections: Sections
    provenance: Mapping[SectionName, Provenance]
    generated: Sections
    generated_provenance: Mapping[SectionName, Provenance]
    evidence: Evidence
    prompt_zones: tuple[ZoneEvidence, ...]
    messages: tuple[Message, ...]
    grounding: GroundingResult
    disclaimer: str
    reproducibility: Reproducibility
    generation: GenerationResult

    def render_text(self) -> str:
        """Plain text with headings in the report language, ending with the disclaimer."""
        h = HEADINGS[self.language]
        parts = [f"{h[n]}:\n{self.sections.get(n)}" for n in SECTION_NAMES]
        return "\n\n".join([*parts, self.disclaimer])

    def render_html(self) -> str:
        """HTML fragment; every piece of text is escaped (model output is untrusted)."""
        h = HEADINGS[self.language]
        parts = [
            f"<h3>{html.escape(h[n])}</h3><p>{html.escape(self.sections.get(n))}</p>"
            for n in SECTION_NAMES
        ]
        return "".join(parts) + f"<p><em>{html.escape(self.disclaimer)}</em></p>"


@dataclass(frozen=True)
class GeneratorConfig:
    params: GenerationParams = GenerationParams()
    policy: GroundingPolicy = GroundingPolicy()
    max_prompt_zones: int = 4
    template: PromptTemplate = DEFAULT_TEMPLATE


def _ground(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    raw: str,
    lang: Language,
    policy: GroundingPolicy,
) -> tuple[
    Sections, dict[SectionName, Provenance], list[RemovedSentence], dict[SectionName, str], bool
]:
    """Filter the model output section by section; template any section that cannot stand."""
    fallback = render_template(evidence, zones, lang)
    try:
        parsed = parse_sections(raw)
    except OutputFormatError as exc:
        reason = f"invalid model output: {exc}"
        prov: dict[SectionName, Provenance] = {n: "template" for n in SECTION_NAMES}
        return fallback, prov, [], {n: reason for n in SECTION_NAMES}, False
    checker = GroundingChecker(evidence, policy)
    seen: set[str] = set()
    texts: dict[str, str] = {}
    prov = {}
    removed: list[RemovedSentence] = []
    reasons: dict[SectionName, str] = {}
    for name in SECTION_NAMES:
        check = checker.check_section(name, parsed.get(name), lang, seen)
        removed += check.removed
        if checker.enough(name, check):
            texts[name] = " ".join(check.kept)
            prov[name] = "llm_filtered" if check.removed else "llm"
        else:
            texts[name] = fallback.get(name)
            prov[name] = "template"
            reasons[name] = "too little supported text survived the grounding check"
    return Sections(**texts), prov, removed, reasons, True


class ReportGenerator:
    """Builds reports with one backend. Thread-safe if the backend is."""

    def __init__(self, backend: LLMBackend, config: GeneratorConfig = GeneratorConfig()) -> None:
        self._backend = backend
        self._config = config

    @property
    def config(self) -> GeneratorConfig:
        return self._config

    @property
    def backend(self) -> LLMBackend:
        return self._backend

    def prompt_for(
        self, evidence: Evidence, language: Language
    ) -> tuple[Language, tuple[ZoneEvidence, ...], tuple[Message, ...]]:
        """(generation language, prompt zones, messages) for a request.

        A "no finding" prompt names no zone: maps explaining normality point at healthy lung,
        and a small model reads a named zone as the place of a lesion.
        """
        cfg = self._config
        gen_lang: Language = language if language in self._backend.info.languages else "en"
        zones = evidence.supported_zones(cfg.policy.min_intensity, cfg.max_prompt_zones)
        if evidence.decision == "no_finding" and not evidence.indeterminate:
            zones = ()
        return gen_lang, zones, build_messages(evidence, zones, gen_lang, cfg.template)

    def prefill(self, early: Evidence, language: Language) -> None:
        """Let the model read the part of the prompt that does not depend on the
        explanations (decision, probability, measurements, flags) while they are computed.

        ``early``: the Evidence without its explanation (no zones); a later :meth:`generate`
        for an Evidence with the same decision, probability, measurements and flags starts
        from there instead of reading those facts itself."""
        if early.unsuitable:
            return
        gen_lang, _, messages = self.prompt_for(early, language)
        self._backend.prefill(messages, early_facts(early, gen_lang, self._config.template))

    def warm(self, evidence: Evidence, language: Language) -> None:
        """Read the fixed prompt prefix with ``evidence``'s facts lead (decision, quality
        flags, threshold: see :func:`reporting.prompt.build_messages`), so that the first
        request with that lead after a start does not read it itself: the rules and worked
        examples are ~1,200-1,700 Qwen tokens, over a minute on one thread. The in-process
        backend keeps a copy per lead (``SAVED_PREFIXES``)."""
        _, _, messages = self.prompt_for(evidence, language)
        last = messages[-1]
        self._backend.prefill(messages, last.content[: last.fixed_chars])

    def generate(
        self,
        evidence: Evidence,
        language: Language,
        upstream_model_hashes: Mapping[str, str] | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Report:
        """Raises LLMUnavailable / LLMTimeout when the backend cannot answer, and
        GenerationCancelled soon after ``cancel`` is set.

        ``on_event`` receives the report as it is written (see :mod:`reporting.stream`):
        raw model text as ``draft`` events, each sentence that passed the grounding check,
        and the final sections at the end. An image the input gate marked
        unsuitable gets the "unsuitable" report without calling the model.
        """
        cfg = self._config
        gen_lang, zones, messages = self.prompt_for(evidence, language)
        if evidence.unsuitable:
            return self._unsuitable(evidence, language, messages, on_event, upstream_model_hashes)
        native = gen_lang == language
        streamer = SectionStreamer(evidence, gen_lang, cfg.policy, on_event, native)
        result = self._backend.generate(
            messages,
            REPORT_JSON_SCHEMA,
            cfg.params,
            on_text=streamer.feed,
            cancel=cancel,
            checkpoint=early_facts(evidence, gen_lang, cfg.template),
        )
        generated, gen_prov, removed, reasons, valid = _ground(
            evidence, zones, result.text, gen_lang, cfg.policy
        )
        mode: LanguageMode
        if native:
            sections, prov, mode = generated, gen_prov, "native"
        else:
            all_zones = evidence.supported_zones(cfg.policy.min_intensity)
            sections = render_template(evidence, all_zones, language)
            prov = {n: "template" for n in SECTION_NAMES}
            mode = "english_generation_template_rendering"
        streamer.finish(sections, prov)
        left = GroundingChecker(evidence, cfg.policy).count_violations(sections, language)
        grounding = GroundingResult(
            supported_zones=tuple(sorted(GroundingChecker(evidence, cfg.policy).supported)),
            removed=tuple(removed),
            fallback_reasons=reasons,
            llm_output_valid=valid,
            unsupported_claims_left=left,
        )
        return Report(
            language=language,
            generation_language=gen_lang,
            language_mode=mode,
            sections=sections,
            provenance=prov,
            generated=generated,
            generated_provenance=gen_prov,
            evidence=evidence,
            prompt_zones=zones,
            messages=messages,
            grounding=grounding,
            disclaimer=DISCLAIMER[language],
            reproducibility=self._reproducibility(upstream_model_hashes or {}),
            generation=result,
        )

    def _unsuitable(
        self,
        evidence: Evidence,
        language: Language,
        messages: tuple[Message, ...],
        on_event: Callable[[StreamEvent], None] | None,
        upstream: Mapping[str, str] | None,
    ) -> Report:
        sections = render_template(evidence, (), language)
        prov: dict[SectionName, Provenance] = {n: "template" for n in SECTION_NAMES}
        if on_event is not None:
            for name in SECTION_NAMES:
                on_event(StreamEvent("section", name, sections.get(name), "template"))
        checker = GroundingChecker(evidence, self._config.policy)
        grounding = GroundingResult(
            supported_zones=(),
            removed=(),
            fallback_reasons={n: "the image is unsuitable for analysis" for n in SECTION_NAMES},
            llm_output_valid=False,
            unsupported_claims_left=checker.count_violations(sections, language),
        )
        return Report(
            language=language,
            generation_language=language,
            language_mode="native",
            sections=sections,
            provenance=prov,
            generated=sections,
            generated_provenance=prov,
            evidence=evidence,
            prompt_zones=(),
            messages=messages,
            grounding=grounding,
            disclaimer=DISCLAIMER[language],
            reproducibility=self._reproducibility(upstream or {}),
            generation=GenerationResult("", 0, 0, 0.0, "not_run"),
        )

    def _reproducibility(self, upstream: Mapping[str, str]) -> Reproducibility:
        info = self._backend.info
        cfg = self._config
        return Reproducibility(
            backend=info.backend,
            model=info.model,
            model_sha256=info.model_sha256,
            prompt_template_version=cfg.template.version,
            prompt_template_sha256=cfg.template.sha256,
            seed=cfg.params.seed,
            sampling=cfg.params.as_dict(),
            upstream_model_hashes=dict(upstream),
            backend_extra=dict(info.extra),
        )


__all__ = ["LLMError", "Report", "ReportGenerator", "GeneratorConfig", "GroundingResult"]
