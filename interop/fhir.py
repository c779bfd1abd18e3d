"""FHIR R4B Bundle of one analysis: DiagnosticReport, Observations, Devices, Provenance.

Resources (every reference resolves inside the Bundle, ids are derived from the same seed as
the DICOM UIDs, so a retry produces the same ids):

- Patient: the DICOM input's PatientID / PatientName, or an anonymous patient;
- ImagingStudy (DICOM input only): the source study, series and instance by UID;
- Device per model (classifier, segmenter, LLM): name, version, sha256 identifier;
- Observations (status ``preliminary``): decision, calibrated probability, CTR when measured,
  zone intensities (one component per zone and method);
- DiagnosticReport (status ``preliminary``, LOINC 18748-4, category RAD): results, conclusion,
  the report text as presentedForm with the disclaimer;
- Provenance: the report and observations were produced by the devices from the source.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from interop.model import Algorithm, Findings, ReportText
from interop.source import SourceImage

JSON = dict[str, Any]
DISCLAIMER = "AI-generated, unverified decision support; not a diagnosis."
LOCAL = "https://cxr-xai.example/fhir/CodeSystem/results"
SHA256_SYSTEM = "https://cxr-xai.example/fhir/NamingSystem/sha256"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DICOM_UID = "urn:dicom:uid"
DECISIONS = {"finding": ("263654008", "Abnormal"), "no_finding": ("17621005", "Normal")}


def _local(code: str, display: str) -> JSON:
    return {"coding": [{"system": LOCAL, "code": code, "display": display}], "text": display}


def _ratio(value: float) -> JSON:
    return {
        "value": round(float(value), 6),
        "unit": "1",
        "system": "http://unitsofmeasure.org",
        "code": "1",
    }


class _Builder:
    def __init__(self, source: SourceImage, role: str) -> None:
        self.source = source
        self.role = role
        self.entries: list[JSON] = []

    def add(self, name: str, resource: JSON) -> str:
        """Add ``resource`` under a deterministic id; return its fullUrl (the reference)."""
        resource["id"] = self.source.uids.uuid_hex(f"{self.role}.{name}")
        url = self.source.uids.uuid_urn(f"{self.role}.{name}")
        self.entries.append({"fullUrl": url, "resource": resource})
        return url


def _patient(ref: Any) -> JSON:
    name = str(ref.get("PatientName") or "")
    resource: JSON = {"resourceType": "Patient"}
    if ref.get("PatientID"):
        resource["identifier"] = [{"value": str(ref.PatientID)}]
    if name:
        family, _, given = name.partition("^")
        human: JSON = {"text": name.replace("^", " ").strip()}
        if family:
            human["family"] = family
        given_names = [g for g in given.split("^")[:1] if g]
        if given_names:
            human["given"] = given_names
        resource["name"] = [human]
    return resource


def _imaging_study(source: SourceImage, patient: str) -> JSON:
    ref = source.reference
    study: JSON = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": patient},
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{ref.StudyInstanceUID}"}],
        "series": [
            {
                "uid": str(ref.SeriesInstanceUID),
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": str(ref.get("Modality") or "OT"),
                },
                "instance": [
                    {
                        "uid": str(ref.SOPInstanceUID),
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": f"urn:oid:{ref.SOPClassUID}",
                        },
                    }
                ],
            }
        ],
    }
    if ref.get("AccessionNumber"):
        study["identifier"].append(
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": str(ref.AccessionNumber),
            }
        )
    return study


def _device(a: Algorithm) -> JSON:
    return {
        "resourceType": "Device",
        "identifier": [{"system": SHA256_SYSTEM, "value": a.sha256}] if a.sha256 else [],
        "deviceName": [{"name": a.name, "type": "model-name"}],
        "version": [{"value": a.version}],
    }


def _observation(code: JSON, subject: str, device: str, study: str | None, **value: Any) -> JSON:
    obs: JSON = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": subject},
        "device": {"reference": device},
        **value,
    }
    if study:
        obs["derivedFrom"] = [{"reference": study}]
    return obs


def _observations(
    b: _Builder, f: Findings, subject: str, device: str, study: str | None
) -> list[str]:
    code, display = DECISIONS.get(f.decision, (None, f.decision))
    decision_value = (
        {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": f.decision}
        if code
        else _local(f.decision, f.decision)
    )
    refs = [
        b.add(
            "obs.decision",
            _observation(
                _local("decision", "Decision at the operating threshold"),
                subject,
                device,
                study,
                valueCodeableConcept=decision_value,
                referenceRange=[{"text": f"operating threshold {f.threshold:.6g}"}],
            ),
        ),
        b.add(
            "obs.probability",
            _observation(
                _local("probability_finding", "Calibrated probability of a finding"),
                subject,
                device,
                study,
                valueQuantity=_ratio(f.probability_finding),
            ),
        ),
        b.add(
            "obs.threshold",
            _observation(
                _local("threshold", "Operating threshold"),
                subject,
                device,
                study,
                valueQuantity=_ratio(f.threshold),
            ),
        ),
    ]
    if f.ctr is not None:
        refs.append(
            b.add(
                "obs.ctr",
                _observation(
                    _local("ctr", "Cardiothoracic ratio"),
                    subject,
                    device,
                    study,
                    valueQuantity=_ratio(f.ctr),
                ),
            )
        )
    if f.zones:
        components = [
            {
                "code": _local(f"{z.zone_id}.{method}", f"{z.zone_id} {method}"),
                "valueQuantity": _ratio(value),
            }
            for z in f.zones
            for method, value in (("gradcam", z.gradcam), ("lime", z.lime), ("fused", z.fused))
            if value is not None
        ]
        refs.append(
            b.add(
                "obs.zones",
                _observation(
                    _local("zone_intensities", "Explanation intensity per lung zone"),
                    subject,
                    device,
                    study,
                    component=components,
                ),
            )
        )
    return refs


def _presented_form(report: ReportText) -> JSON:
    text = "\n\n".join([report.findings, report.interpretation, report.recommendations, DISCLAIMER])
    return {
        "contentType": "text/plain; charset=utf-8",
        "language": report.language,
        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        "title": "AI report (unverified)",
    }


def build_fhir(
    source: SourceImage,
    algorithms: tuple[Algorithm, ...],
    findings: Findings,
    report: ReportText | None,
    role: str = "fhir",
    now: datetime | None = None,
) -> Bundle:
    """The Bundle (type ``collection``), validated by fhir.resources on construction."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    b = _Builder(source, role)
    patient = b.add("patient", _patient(source.reference))
    study = b.add("study", _imaging_study(source, patient)) if source.is_dicom else None
    models = list(algorithms) + ([report.llm] if report and report.llm else [])
    devices = [b.add(f"device.{i}", _device(a)) for i, a in enumerate(models)]
    results = _observations(b, findings, patient, devices[0], study)
    dr: JSON = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]
        },
        "subject": {"reference": patient},
        "issued": stamp,
        "performer": [{"reference": devices[0], "display": "AI (unverified)"}],
        "result": [{"reference": r} for r in results],
    }
    if study:
        dr["imagingStudy"] = [{"reference": study}]
    if report is not None:
        dr["conclusion"] = report.interpretation
        dr["presentedForm"] = [_presented_form(report)]
    report_ref = b.add("report", dr)
    provenance: JSON = {
        "resourceType": "Provenance",
        "target": [{"reference": report_ref}, *({"reference": r} for r in results)],
        "recorded": stamp,
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"reference": d},
            }
            for d in devices
        ],
        "entity": [{"role": "source", "what": {"reference": study}}] if study else [],
    }
    b.add("provenance", provenance)
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "id": source.uids.uuid_hex(f"{role}.bundle"),
            "type": "collection",
            "timestamp": stamp,
            "entry": b.entries,
        }
    )
