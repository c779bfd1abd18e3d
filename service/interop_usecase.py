"""Results as DICOM (SR, SEG, SC), FHIR and one multipart bundle; optional STOW-RS push.

The analyses are the existing use cases (report, segmentation, Grad-CAM), so the numbers in
every format are the JSON API's numbers; this module only maps their outcomes to
:mod:`interop` inputs and links them to the source. A report's SR, FHIR Bundle and bundle are
built from the report's one vision of the upload (one decode, one pass of each model). UIDs
are seeded by the upload's sha256, the model versions and the options that change an object's
content (language, LIME), so a retried request re-creates the same instances. Patient
identifiers are read from the upload's header by :mod:`interop.source` only, into the objects'
patient fields; nothing here logs them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from anyio import to_thread
from pydicom.dataset import Dataset

from explain import GradCamResult, Target, gradcam_overlay
from explain.masks import resize_mask
from inference.anatomy import Anatomy
from inference.errors import IntakeError
from inference.intake import Radiograph, decode_upload
from inference.operating import Population
from inference.sessions import VerifiedModel
from inference.sniff import ImageFormat, detect_format
from interop.fhir import build_fhir
from interop.gsps import build_gsps
from interop.model import Algorithm, Findings, ReportText, Segment, ZoneFinding
from interop.multipart import Part, Related, encode_related
from interop.sc import build_sc
from interop.seg import build_seg
from interop.source import SourceImage, SourceNotLinkable, dicom_source, stand_in_source
from interop.sr import build_sr
from interop.stow import PushResult, StowConfig, push
from interop.uids import UidFactory
from reporting.evidence import Language
from service.errors import InvalidRequest
from service.explain_usecase import ExplainService, Explanation, GradCamOutcome
from service.jobs import JobControl
from service.report_usecase import ReportOutcome, ReportService, VisionEvidence, vision_evidence
from service.settings import PacsSettings
from service.usecases import AnalysisService
from service.vision import Vision

D = TypeVar("D")
DICOM = "application/dicom"
FHIR_JSON = "application/fhir+json"


class DicomNotLinkable(IntakeError):
    """A DICOM upload without valid Study/Series/SOP UIDs: results could not be filed (422)."""

    code = "dicom_not_linkable"
    detail = "The DICOM file lacks valid study, series or instance UIDs to link results to."


class PushNotConfigured(InvalidRequest):
    """push=true without CXR_PACS__STOW_URL (422)."""

    code = "push_not_configured"
    detail = "No PACS is configured (CXR_PACS__STOW_URL)."


@dataclass(frozen=True)
class DicomObject:
    role: str  # sr | seg | sc | source
    dataset: Dataset

    def encode(self) -> bytes:
        buf = io.BytesIO()
        self.dataset.save_as(buf, enforce_file_format=True)
        return buf.getvalue()


@dataclass(frozen=True)
class Linked:
    """One DICOM object and the source image it references (stored before it on a push)."""

    obj: DicomObject
    source: SourceImage


@dataclass(frozen=True)
class Bundle:
    """Everything one /report?format=bundle call returns, and the push outcome if asked."""

    objects: tuple[DicomObject, ...]
    fhir_json: bytes
    push: PushResult | None


@dataclass(frozen=True)
class Pictures:
    """What a vision's pixels add to a report: the SEG, the Grad-CAM overlay SC and the GSPS
    (outlines of the SEG's masks with the findings)."""

    seg: DicomObject
    sc: DicomObject
    gsps: DicomObject


@dataclass(frozen=True)
class Written(Generic[D]):
    """A report, the source it links to and what was drawn from the same vision of its upload
    (None, or :class:`Pictures`). Holds encoded objects only, no pixel arrays."""

    outcome: ReportOutcome
    source: SourceImage
    drawn: D


@dataclass(frozen=True)
class _Seen(Generic[D]):
    evidence: VisionEvidence
    source: SourceImage
    drawn: D


Draw = Callable[[SourceImage, Explanation, VisionEvidence], D]


def _nothing(source: SourceImage, e: Explanation, evidence: VisionEvidence) -> None:
    return None


def stow_config(s: PacsSettings) -> StowConfig | None:
    if not s.stow_url:
        return None
    return StowConfig(
        url=s.stow_url,
        timeout_s=s.timeout_s,
        attempts=s.attempts,
        backoff_s=s.backoff_s,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        bearer_token=s.bearer_token.get_secret_value() if s.bearer_token else None,
    )


def algorithm(m: VerifiedModel) -> Algorithm:
    return Algorithm(m.manifest.name, m.manifest.version, m.manifest.sha256)


def findings_of(o: ReportOutcome) -> Findings:
    return findings_of_vision(o.vision)


def findings_of_vision(v: VisionEvidence) -> Findings:
    """The report's findings; the classification and zones only, so known before the text."""
    return Findings(
        decision=v.classification.decision,
        probability_finding=float(v.classification.probability_finding),
        threshold=float(v.classification.threshold),
        zones=tuple(
            ZoneFinding(d.zone_id, d.name_en, d.gradcam_mean, d.lime_intensity, float(d.fused))
            for d in v.descriptors
        ),
        # Only a CTR that passed the mask plausibility checks goes into SR / FHIR.
        ctr=v.chest.ctr if v.chest.reliable else None,
        explanation_weak=v.quality.weak,
    )


def findings_of_gradcam(gc: GradCamOutcome) -> Findings:
    """Findings without a report: the classification and the Grad-CAM zone descriptors."""
    c = gc.classification
    return Findings(
        decision=c.decision,
        probability_finding=float(c.probability_finding),
        threshold=float(c.threshold),
        zones=tuple(
            ZoneFinding(z.zone_id, z.name_en, z.gradcam_mean, z.lime_intensity, float(z.fused))
            for z in gc.gradcam.zones
        ),
        ctr=gc.chest.ctr if gc.chest.reliable else None,
        explanation_weak=gc.quality.weak,
    )


def report_text_of(o: ReportOutcome) -> ReportText:
    r, rep = o.report, o.report.reproducibility
    return ReportText(
        language=r.language,
        findings=r.sections.findings,
        interpretation=r.sections.interpretation,
        recommendations=r.sections.recommendations,
        llm=Algorithm(rep.model, rep.backend, rep.model_sha256 or ""),
    )


def segments_of(anatomy: Anatomy, rows: int, cols: int) -> tuple[Segment, ...]:
    """Masks at the source image's [rows, cols]: segmentation ran on the bounded working copy,
    so a large DICOM source gets its masks scaled up here, for the SEG only (nearest)."""
    return tuple(
        Segment(s.name, resize_mask(s.mask, rows, cols), s.provenance) for s in anatomy.structures
    )


def sc_object(
    source: SourceImage, vision: Vision, target: Target, cam: GradCamResult
) -> DicomObject:
    """The Grad-CAM overlay as a Secondary Capture (drawn from the arrays, never via a PNG)."""
    overlay = gradcam_overlay(vision.radiograph.pixels, cam)
    return DicomObject("sc", build_sc(source, overlay, role=f"sc.{target}"))


class InteropService:
    """Builds the DICOM/FHIR answers from the analysis, explain and report use cases."""

    def __init__(
        self,
        analysis: AnalysisService,
        explain: ExplainService,
        report: ReportService,
        pacs: StowConfig | None,
    ) -> None:
        self.analysis = analysis
        self.explain = explain
        self.report_service = report
        self.pacs = pacs
        self.registry = analysis.registry

    # -- linkage --------------------------------------------------------------------------

    def uids(self, sha256: str) -> UidFactory:
        versions = "|".join(f"{k}={v}" for k, v in sorted(self.registry.versions().items()))
        return UidFactory(f"{sha256}|{versions}")

    def _source_sync(self, data: bytes, sha256: str, pixels: Radiograph | None) -> SourceImage:
        uids = self.uids(sha256)
        if detect_format(data) is ImageFormat.DICOM:
            try:
                return dicom_source(data, uids)
            except SourceNotLinkable as exc:
                raise DicomNotLinkable() from exc
        radiograph = pixels or decode_upload(data, self.analysis.limits)
        return stand_in_source(radiograph.pixels, uids)

    # -- single objects -------------------------------------------------------------------

    def _anatomy_sync(self, data: bytes) -> tuple[Radiograph, Anatomy]:
        radiograph = decode_upload(data, self.analysis.limits)
        self.analysis.check_input(radiograph)  # the input gate, as for JSON /segment
        return radiograph, self.registry.segmenter.segment(radiograph.pixels)

    async def seg(self, data: bytes, sha256: str) -> Linked:
        radiograph, anatomy = await self.analysis.gate.run(lambda: self._anatomy_sync(data))

        def build() -> Linked:
            source = self._source_sync(data, sha256, radiograph)
            return Linked(self._seg_of(source, anatomy)[0], source)

        return await to_thread.run_sync(build)

    def _seg_of(
        self, source: SourceImage, anatomy: Anatomy
    ) -> tuple[DicomObject, tuple[Segment, ...]]:
        """The SEG and its masks at the source's size (the GSPS outlines the same masks)."""
        rows, cols = int(source.reference.Rows), int(source.reference.Columns)
        segments = segments_of(anatomy, rows, cols)
        seg = build_seg(source, algorithm(self.registry.segmenter), segments)
        return DicomObject("seg", seg), segments

    async def sc(self, data: bytes, sha256: str, gc: GradCamOutcome) -> Linked:
        def build() -> Linked:
            source = self._source_sync(data, sha256, gc.vision.radiograph)
            return Linked(sc_object(source, gc.vision, gc.target, gc.gradcam), source)

        return await to_thread.run_sync(build)

    def sr_from(self, source: SourceImage, o: ReportOutcome, lime: bool) -> DicomObject:
        role = f"sr.{o.report.language}.{'lime' if lime else 'gradcam'}"
        classifier = algorithm(self.registry.classifier)
        return DicomObject(
            "sr", build_sr(source, classifier, findings_of(o), report_text_of(o), role=role)
        )

    def sr_from_gradcam(self, source: SourceImage, gc: GradCamOutcome) -> DicomObject:
        """An SR of the classification and Grad-CAM zones only (no report text)."""
        classifier = algorithm(self.registry.classifier)
        findings = findings_of_gradcam(gc)
        return DicomObject("sr", build_sr(source, classifier, findings, None, role="sr.gradcam"))

    def fhir_from(self, source: SourceImage, o: ReportOutcome, lime: bool) -> bytes:
        role = f"fhir.{o.report.language}.{'lime' if lime else 'gradcam'}"
        models = tuple(algorithm(m) for m in self.registry.models())
        bundle = build_fhir(source, models, findings_of(o), report_text_of(o), role=role)
        return bundle.model_dump_json(exclude_none=True).encode("utf-8")

    # -- a report with its DICOM context, from one vision -----------------------------------

    async def written(
        self,
        data: bytes,
        sha256: str,
        language: Language,
        lime: bool,
        attributions: bool = False,
        control: JobControl | None = None,
        population: Population | None = None,
    ) -> Written[None]:
        """The report and the source it links to (for its SR or FHIR Bundle)."""
        args = (data, sha256, language, lime, attributions, control, population)
        return await self._written(*args, draw=_nothing)

    async def pictured(
        self,
        data: bytes,
        sha256: str,
        language: Language,
        lime: bool,
        control: JobControl | None = None,
    ) -> Written[Pictures]:
        """The report, its source and the SEG, SC and GSPS of the same vision."""
        args = (data, sha256, language, lime, False, control, None)
        return await self._written(*args, draw=self._pictures_sync)

    async def _written(
        self,
        data: bytes,
        sha256: str,
        language: Language,
        lime: bool,
        attributions: bool,
        control: JobControl | None,
        population: Population | None,
        *,
        draw: Draw[D],
    ) -> Written[D]:
        """One vision of the upload for the report and whatever ``draw`` makes of it; the
        LLM's errors as in :meth:`ReportService.write`."""
        self.report_service.require_llm()  # fail fast, before any vision work
        t0 = time.perf_counter()
        seen = await self._seen(data, sha256, lime, control, population, draw)
        cancel = control.cancelled if control is not None else None
        vision_ms = round((time.perf_counter() - t0) * 1000.0, 2)
        outcome = await self.report_service.write(
            seen.evidence, language, attributions, vision_ms, cancel=cancel
        )
        return Written(outcome, seen.source, seen.drawn)

    async def _seen(
        self,
        data: bytes,
        sha256: str,
        lime: bool,
        control: JobControl | None,
        population: Population | None,
        draw: Draw[D],
    ) -> _Seen[D]:
        """The vision's arrays are dropped when this returns, before the report waits for the
        one LLM slot: only the evidence and the encoded objects are kept."""
        e = await self.report_service.explanation(data, lime, control, population)
        evidence = vision_evidence(e)

        def build() -> _Seen[D]:
            source = self._source_sync(data, sha256, e.vision.radiograph)
            return _Seen(evidence, source, draw(source, e, evidence))

        return await to_thread.run_sync(build)

    def _pictures_sync(
        self, source: SourceImage, e: Explanation, evidence: VisionEvidence
    ) -> Pictures:
        seg, segments = self._seg_of(source, e.vision.anatomy)
        segmenter = algorithm(self.registry.segmenter)
        gsps = build_gsps(source, segmenter, segments, findings_of_vision(evidence))
        sc = sc_object(source, e.vision, e.target, e.gradcam)
        return Pictures(seg, sc, DicomObject("gsps", gsps))

    async def gradcam_files(
        self, data: bytes, sha256: str, gc: GradCamOutcome
    ) -> tuple[SourceImage, list[DicomObject]]:
        """The source and the SEG, SC and SR of a Grad-CAM outcome's vision (the batch's DICOM
        output without a report): no further decode or model run."""

        def build() -> tuple[SourceImage, list[DicomObject]]:
            source = self._source_sync(data, sha256, gc.vision.radiograph)
            seg = self._seg_of(source, gc.vision.anatomy)[0]
            sc = sc_object(source, gc.vision, gc.target, gc.gradcam)
            return source, [seg, sc, self.sr_from_gradcam(source, gc)]

        return await to_thread.run_sync(build)

    # -- the bundle -----------------------------------------------------------------------

    async def bundle(
        self,
        data: bytes,
        sha256: str,
        language: Language,
        lime: bool,
        do_push: bool,
        control: JobControl | None = None,
    ) -> Bundle:
        if do_push and self.pacs is None:
            raise PushNotConfigured()
        w = await self.pictured(data, sha256, language, lime, control)
        p = w.drawn
        objects = [*stand_in_objects(w.source), self.sr_from(w.source, w.outcome, lime)]
        objects += [p.seg, p.sc, p.gsps]
        result = await self.push(objects) if do_push else None
        return Bundle(tuple(objects), self.fhir_from(w.source, w.outcome, lime), result)

    async def push(self, objects: list[DicomObject]) -> PushResult:
        if self.pacs is None:
            raise PushNotConfigured()
        cfg = self.pacs
        datasets = [o.dataset for o in objects]
        return await to_thread.run_sync(lambda: push(datasets, cfg))


def stand_in_objects(source: SourceImage) -> list[DicomObject]:
    """The Secondary Capture of a non-DICOM upload, which the results reference; [] for DICOM."""
    return [DicomObject("source", source.stand_in)] if source.stand_in is not None else []


def encode_bundle(b: Bundle, problem_json: bytes | None) -> Related:
    """multipart/related: the DICOM instances, then the FHIR Bundle, then a push problem."""
    parts = [Part(DICOM, o.encode(), o.role) for o in b.objects]
    parts.append(Part(FHIR_JSON, b.fhir_json, "fhir"))
    if problem_json is not None:
        parts.append(Part("application/problem+json", problem_json, "push"))
    return encode_related(parts)
