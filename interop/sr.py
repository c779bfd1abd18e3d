"""Comprehensive SR following TID 1500 (Measurement Report) for one analysed radiograph.

Layout (every group has the algorithm identification and references the source image):

- group "classification": probability (UCUM "1"), threshold, CTR when measured, and the
  decision as a qualitative evaluation (SCT Normal / Abnormal);
- one group per lung zone: the zone as finding site and one measurement per explanation
  method (Grad-CAM, LIME, fused);
- the report's three sections as TEXT items (DCM Finding / Impression / Recommendation) in a
  container appended to the root, in the report's language (Language of Content Item).

VerificationFlag is UNVERIFIED and CompletionFlag PARTIAL: nobody has signed this report.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from interop import codes as cx
from interop.model import Algorithm, Findings, ReportText
from interop.source import MANUFACTURER, SourceImage


def algorithm_id(a: Algorithm) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=a.name,
        family=codes.DCM.ArtificialIntelligence,
        version=a.version,
        parameters=[f"sha256={a.sha256}"],
    )


def _number(
    name: object, value: float, alg: hd.sr.AlgorithmIdentification, **kw: object
) -> hd.sr.Measurement:
    unit = codes.UCUM.NoUnits
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=alg, **kw)  # type: ignore[arg-type]


def _classification_group(
    f: Findings, alg: hd.sr.AlgorithmIdentification, source: SourceImage
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        _number(cx.PROBABILITY, f.probability_finding, alg),
        _number(cx.THRESHOLD, f.threshold, alg),
    ]
    if f.ctr is not None:
        measurements.append(_number(cx.CTR, f.ctr, alg))
    evaluations = [hd.sr.QualitativeEvaluation(cx.DECISION, cx.decision_code(f.decision))]
    if f.explanation_weak:
        evaluations.append(hd.sr.QualitativeEvaluation(cx.EXPLANATION_WEAK, codes.SCT.Yes))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=source.uids.uid("sr.track.classification"), identifier="classification"
        ),
        algorithm_id=alg,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source.reference)],
    )


def _zone_groups(
    f: Findings, alg: hd.sr.AlgorithmIdentification, source: SourceImage
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    groups = []
    for z in f.zones:
        site = hd.sr.FindingSite(anatomic_location=cx.zone_code(z.zone_id))
        values = {"gradcam": z.gradcam, "lime": z.lime, "fused": z.fused}
        measurements = [
            _number(cx.ZONE_INTENSITY, v, alg, method=cx.METHODS[m])
            for m, v in values.items()
            if v is not None
        ]
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=source.uids.uid(f"sr.track.{z.zone_id}"), identifier=z.zone_id
                ),
                algorithm_id=alg,
                finding_sites=[site],
                measurements=measurements,
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(source.reference)
                ],
            )
        )
    return groups


def _sections(report: ReportText) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=codes.DCM.Findings, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=cx.SECTIONS[key],
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for key, text in (
                ("findings", report.findings),
                ("interpretation", report.interpretation),
                ("recommendations", report.recommendations),
            )
            if text
        ]
    )
    return container


def _library_ready(ref: Dataset) -> bool:
    """highdicom's Image Library entry for CR/DX needs orientation and imager spacing; an
    input without them is still referenced by every measurement group and the evidence."""
    if ref.get("Modality") not in ("CR", "DX", "MG", "IO", "PX", "RF", "XA", "RG"):
        return True
    orientation = ref.get("PatientOrientation")
    return bool(orientation) and len(orientation) == 2 and "ImagerPixelSpacing" in ref


def _coding_scheme() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = cx.SCHEME
    item.CodingSchemeName = cx.SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def build_sr(
    source: SourceImage,
    classifier: Algorithm,
    findings: Findings,
    report: ReportText | None,
    role: str = "sr",
) -> hd.sr.ComprehensiveSR:
    """The TID 1500 SR; ``role`` salts its UIDs (e.g. with the report language)."""
    alg = algorithm_id(classifier)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=source.uids.uid("device"),
            name=classifier.name,
            manufacturer_name=MANUFACTURER,
            model_name=f"{classifier.name} {classifier.version}",
        ),
    )
    language = cx.LANGUAGES.get(report.language if report else "en", cx.LANGUAGES["en"])
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=cx.PROCEDURE,
        imaging_measurements=[
            _classification_group(findings, alg, source),
            *_zone_groups(findings, alg, source),
        ],
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept(language.value, language.scheme_designator, language.meaning)
        ),
        referenced_images=[source.reference] if _library_ready(source.reference) else None,
    )
    if report is not None:
        content[0].ContentSequence.append(_sections(report))
    sr = hd.sr.ComprehensiveSR(
        evidence=[source.reference],
        content=content[0],
        series_instance_uid=source.uids.uid(f"{role}.series"),
        series_number=901,
        sop_instance_uid=source.uids.uid(f"{role}.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description="AI results (unverified, not for diagnosis)",
    )
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.CodingSchemeIdentificationSequence = [_coding_scheme()]
    return sr
