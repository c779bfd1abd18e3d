"""ReportOutcome -> ReportResponse (and the stream's EvidenceOut): the report routes, the report
jobs and the stream all answer through these, so a report reads the same whichever way it was
asked for."""

from __future__ import annotations

from typing import Literal

from api.schemas.common import ModelInfo
from api.schemas.convert import image_out, input_quality_out, operating_point_out
from api.schemas.report import (
    AttributionsOut,
    EvidenceOut,
    GenerationOut,
    GroundingOut,
    LanguageOut,
    MeasurementsOut,
    ProvenanceOut,
    RemovedSentenceOut,
    ReportResponse,
    ReportTimingsOut,
    ReproducibilityOut,
    SectionsOut,
    TokenAttributionOut,
    ZoneOut,
)
from reporting.attribution import ShapleyAttribution
from reporting.evidence import AGREEMENT_MIN, ZONE_NAMES, Measurements
from reporting.schema import Sections
from service.report_usecase import ReportOutcome, ReportService, VisionEvidence


def _sections(s: Sections) -> SectionsOut:
    return SectionsOut(
        findings=s.findings, interpretation=s.interpretation, recommendations=s.recommendations
    )


def _attributions(a: ShapleyAttribution) -> AttributionsOut:
    return AttributionsOut(
        players=list(a.players),
        values=[round(v, 6) for v in a.values],
        section_values={k: [round(x, 6) for x in v] for k, v in a.section_values.items()},
        tokens=[
            TokenAttributionOut(
                text=t.text,
                start=t.start,
                end=t.end,
                section=t.section,
                values=[round(v, 6) for v in t.values],
            )
            for t in a.tokens
        ],
        text=a.text,
        method=a.method,
        evaluations=a.evaluations,
        logprob_empty=round(a.logprob_empty, 6),
        logprob_full=round(a.logprob_full, 6),
        seconds=round(a.seconds, 3),
    )


def _measurements_out(m: Measurements) -> MeasurementsOut:
    size = {True: "normal", False: "enlarged", None: "not_assessed"}[m.heart_normal]
    return MeasurementsOut(
        ctr=None if m.ctr is None else round(m.ctr, 4),
        ctr_reliable=m.ctr_reliable,
        ctr_notes=list(m.ctr_notes),
        heart_size=size,
        right_lung_share=None if m.right_lung_share is None else round(m.right_lung_share, 4),
        left_lung_share=None if m.left_lung_share is None else round(m.left_lung_share, 4),
        lung_ratio=None if m.lung_ratio is None else round(m.lung_ratio, 4),
    )


def evidence_out(v: VisionEvidence, lang: Literal["en", "ru"], gate: str) -> EvidenceOut:
    e = v.evidence
    agreed = {z.zone_id for z in e.agreed_zones(AGREEMENT_MIN)}
    return EvidenceOut(
        decision=e.decision,
        decision_band=e.decision_band,
        operating_point=operating_point_out(v.classification),
        input_quality=input_quality_out(v.input_quality, gate),
        probability_finding=round(e.probability_finding, 6),
        threshold=e.threshold,
        band=list(e.band) if e.band is not None else None,
        confidence=round(e.confidence, 6),
        zones=[
            ZoneOut(
                zone_id=d.zone_id,
                name=ZONE_NAMES[lang][d.zone_id],
                fused=round(d.fused, 4),
                gradcam_mean=d.gradcam_mean,
                lime_intensity=d.lime_intensity,
                methods_agree=d.zone_id in agreed,
            )
            for d in v.descriptors
        ],
        agreed_zones=sorted(agreed),
        explanation_weak=e.explanation_weak,
        weak_reasons=list(v.quality.reasons),
        lime_used=v.lime_used,
        measurements=_measurements_out(e.measurements) if e.measurements else None,
        quality_flags=list(e.quality_flags),
        unsuitable=list(e.unsuitable),
    )


def report_response(
    o: ReportOutcome, service: ReportService, debug: bool = False
) -> ReportResponse:
    """The response; removed (unsupported) model sentences only with ``debug``."""
    r, g, rep = o.report, o.report.grounding, o.report.reproducibility
    return ReportResponse(
        language=r.language,
        sections=_sections(r.sections),
        provenance=ProvenanceOut.model_validate(dict(r.provenance)),
        text=r.render_text(),
        html=r.render_html(),
        generated_sections=_sections(r.generated),
        generated_provenance=ProvenanceOut.model_validate(dict(r.generated_provenance)),
        evidence=evidence_out(o.vision, o.report.language, service.registry.input_gate.version),
        grounding=GroundingOut(
            passed=g.passed,
            unsupported_claims_left=g.unsupported_claims_left,
            supported_zones=list(g.supported_zones),
            llm_output_valid=g.llm_output_valid,
            removed_count=len(g.removed),
            removed=[
                RemovedSentenceOut(section=x.section, text=x.text, reason=x.reason, detail=x.detail)
                for x in g.removed
            ]
            if debug
            else [],
            fallback_reasons={str(k): v for k, v in g.fallback_reasons.items()},
        ),
        language_info=LanguageOut(
            requested=r.language, generation_language=r.generation_language, mode=r.language_mode
        ),
        disclaimer=r.disclaimer,
        reproducibility=ReproducibilityOut(
            models=[
                ModelInfo(
                    name=m.manifest.name, version=m.manifest.version, sha256=m.manifest.sha256
                )
                for m in service.registry.models()
            ],
            llm_backend=rep.backend,
            llm_model=rep.model,
            gguf_sha256=rep.model_sha256,
            prompt_template_version=rep.prompt_template_version,
            prompt_template_sha256=rep.prompt_template_sha256,
            seed=rep.seed,
            sampling={k: float(v) for k, v in rep.sampling.items()},
            backend_details={k: str(v) for k, v in rep.backend_extra.items()},
        ),
        generation=GenerationOut(
            completion_tokens=r.generation.tokens,
            prompt_tokens=r.generation.prompt_tokens,
            seconds=round(r.generation.seconds, 4),
            tokens_per_second=round(r.generation.tokens_per_second, 2),
            finish_reason=r.generation.finish_reason,
        ),
        attributions=_attributions(o.attribution) if o.attribution is not None else None,
        image=image_out(o.vision.image),
        timings=ReportTimingsOut(**o.timings.__dict__),
    )
