"""Schemas of POST /report and POST /explain/report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import (
    ImageInfoOut,
    InputQualityOut,
    JobFields,
    ModelInfo,
    OperatingPointOut,
)
from api.schemas.convert import b64
from inference.vocabulary import BinaryDecision, Decision
from service.interop_usecase import DICOM, FHIR_JSON, Bundle

SectionProvenance = Literal["llm", "llm_filtered", "template"]


class SectionsOut(BaseModel):
    findings: str = Field(description="Radiological findings.")
    interpretation: str = Field(description="Interpretation, consistent with the decision.")
    recommendations: str = Field(description="Recommendations.")


class ProvenanceOut(BaseModel):
    """Which path produced each section: the model verbatim, the model with unsupported
    sentences (or clauses of a sentence joined by ';') removed, or the deterministic
    template."""

    findings: SectionProvenance
    interpretation: SectionProvenance
    recommendations: SectionProvenance


class SectionEventOut(BaseModel):
    """One grounded report section, as sent by the ``section`` event of /report/stream."""

    name: Literal["findings", "interpretation", "recommendations"]
    heading: str = Field(description="Section heading in the report language.")
    text: str = Field(description="Grounded section text (plain text; escape to display).")
    provenance: SectionProvenance


class RemovedSentenceOut(BaseModel):
    section: str
    text: str = Field(
        description="The removed model sentence, or the removed clause of a sentence whose "
        "other ';'-joined clauses were kept (plain text; escape to display)."
    )
    reason: str = Field(description="unsupported_zone, contradicts_decision, out_of_scope, ...")
    detail: str


class GroundingOut(BaseModel):
    passed: bool = Field(description="True when no unsupported claim is left in the text.")
    unsupported_claims_left: int = Field(description="Re-check of the final text (expect 0).")
    supported_zones: list[str] = Field(description="Zones the text may name.")
    llm_output_valid: bool = Field(description="The model's output parsed as the JSON schema.")
    removed_count: int = Field(description="Model sentences (or clauses) the check removed.")
    removed: list[RemovedSentenceOut] = Field(
        description="The removed sentences themselves: only with debug=true (they are "
        "unsupported model text and must not reach a reader by default); empty otherwise."
    )
    fallback_reasons: dict[str, str] = Field(description="Why a section fell back to template.")


class ZoneOut(BaseModel):
    zone_id: str
    name: str = Field(description="Zone name in the report language.")
    fused: float = Field(description="Fused intensity in [0, 1] (the prompt's 'intensity').")
    gradcam_mean: float | None
    lime_intensity: float | None
    methods_agree: bool = Field(
        description="Grad-CAM and LIME both score this zone at least 0.25 (and it is "
        "strong enough to be named)."
    )


class MeasurementsOut(BaseModel):
    """Measured on the segmentation masks (bench/RESULTS.md: CTR vs human JSRT/SCR masks)."""

    ctr: float | None = Field(
        description="Cardiothoracic ratio: widest horizontal extent of the heart/mediastinum "
        "mask / widest internal thoracic width between the lung masks' outer borders."
    )
    ctr_reliable: bool = Field(description="Masks plausible and the view not AP.")
    ctr_notes: list[str] = Field(
        description="Why the CTR is not reliable: lung_missing, heart_missing, "
        "heart_outside_chest, implausible_ctr, unequal_lungs, ap_view."
    )
    heart_size: Literal["normal", "enlarged", "not_assessed"] = Field(
        description="normal / enlarged when a reliable CTR is below 0.47 / at least 0.53; "
        "not_assessed otherwise (unreliable, or too close to 0.5 for the measurement's error)."
    )
    right_lung_share: float | None = Field(description="Right lung / total lung mask area.")
    left_lung_share: float | None = Field(description="Left lung / total lung mask area.")
    lung_ratio: float | None = Field(description="Right / left lung mask area.")


class EvidenceOut(BaseModel):
    decision: BinaryDecision = Field(
        description="The side of the threshold (what the explanations explain)."
    )
    decision_band: Decision = Field(
        description="indeterminate when the probability lies inside the borderline band."
    )
    operating_point: OperatingPointOut
    input_quality: InputQualityOut
    probability_finding: float
    threshold: float
    band: list[float] | None = Field(description="Borderline band [lo, hi], if any.")
    confidence: float = Field(description="Probability of the decided class.")
    zones: list[ZoneOut] = Field(description="Zone descriptors, strongest first.")
    agreed_zones: list[str] = Field(description="Named zones where Grad-CAM and LIME agree.")
    explanation_weak: bool
    weak_reasons: list[str]
    lime_used: bool
    measurements: MeasurementsOut | None
    quality_flags: list[str] = Field(description="Soft input-gate observations.")
    unsuitable: list[str] = Field(
        description="Why the image cannot be analysed (then the report says only that)."
    )


class LanguageOut(BaseModel):
    requested: Literal["en", "ru"]
    generation_language: Literal["en", "ru"]
    mode: Literal["native", "english_generation_template_rendering"] = Field(
        description="native: the model wrote the requested language; otherwise English "
        "generation was grounded and the sections are rendered from the Russian templates."
    )


class ReproducibilityOut(BaseModel):
    models: list[ModelInfo] = Field(description="Vision models (name, version, sha256).")
    llm_backend: str
    llm_model: str
    gguf_sha256: str | None
    prompt_template_version: str
    prompt_template_sha256: str
    seed: int
    sampling: dict[str, float]
    backend_details: dict[str, str]


class GenerationOut(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    seconds: float
    tokens_per_second: float
    finish_reason: str


class TokenAttributionOut(BaseModel):
    text: str
    start: int = Field(description="Offset in AttributionsOut.text.")
    end: int
    section: str | None
    values: list[float] = Field(description="Shapley value per player, in players order.")


class AttributionsOut(BaseModel):
    """Shapley values (nats of log-probability) of each prompt descriptor for the report."""

    players: list[str]
    values: list[float] = Field(description="Whole-report value per player.")
    section_values: dict[str, list[float]]
    tokens: list[TokenAttributionOut]
    text: str = Field(description="The scored report (JSON the model would write).")
    method: Literal["exact", "kernel"]
    evaluations: int
    logprob_empty: float
    logprob_full: float
    seconds: float


class ReportTimingsOut(BaseModel):
    vision_ms: float
    llm_ms: float
    attribution_ms: float
    total_ms: float


class ReportResponse(BaseModel):
    language: Literal["en", "ru"]
    sections: SectionsOut = Field(description="The report in the requested language.")
    provenance: ProvenanceOut
    text: str = Field(description="Rendered plain text with headings and the disclaimer.")
    html: str = Field(description="Rendered HTML fragment; all text is escaped.")
    generated_sections: SectionsOut = Field(
        description="The grounded model text in the generation language."
    )
    generated_provenance: ProvenanceOut
    evidence: EvidenceOut
    grounding: GroundingOut
    language_info: LanguageOut
    disclaimer: str
    reproducibility: ReproducibilityOut
    generation: GenerationOut
    attributions: AttributionsOut | None = None
    image: ImageInfoOut
    timings: ReportTimingsOut


class ReportJob(JobFields):
    """An asynchronous report (POST /report/jobs or /explain/report/jobs)."""

    result: ReportResponse | None = Field(None, description="Set when state is succeeded.")


class BundlePartOut(BaseModel):
    role: str = Field(description="source (stand-in for a non-DICOM upload), sr, seg, sc, fhir.")
    content_type: str = Field(description="application/dicom or application/fhir+json.")
    data_base64: str = Field(description="The part's bytes (a DICOM file or the FHIR JSON).")


class PushOut(BaseModel):
    status: Literal["stored", "failed"]
    instances: int = Field(description="Instances the PACS confirmed.")
    attempts: int
    code: str | None = Field(None, description="pacs_unreachable, pacs_rejected, ...")
    detail: str | None = None
    http_status: int | None = None


class BundleResult(BaseModel):
    """The parts POST /report?format=bundle answers as multipart/related, base64-encoded."""

    parts: list[BundlePartOut]
    push: PushOut | None = Field(None, description="Set when push=true was asked.")


class BundleJob(JobFields):
    """An asynchronous DICOM SR/SEG/SC + FHIR bundle (POST /report/bundle/jobs)."""

    result: BundleResult | None = Field(None, description="Set when state is succeeded.")


def bundle_result(b: Bundle) -> BundleResult:
    parts = [
        BundlePartOut(role=o.role, content_type=DICOM, data_base64=b64(o.encode()))
        for o in b.objects
    ]
    parts.append(BundlePartOut(role="fhir", content_type=FHIR_JSON, data_base64=b64(b.fhir_json)))
    push = None
    if b.push is not None:
        push = PushOut(
            status=b.push.status,
            instances=b.push.instances,
            attempts=b.push.attempts,
            code=b.push.code,
            detail=b.push.detail,
            http_status=b.push.http_status,
        )
    return BundleResult(parts=parts, push=push)
