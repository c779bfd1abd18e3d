"""interop core: deterministic UIDs, header filtering, multipart framing, STOW retry policy."""

from __future__ import annotations

import ast
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset

from interop import stow
from interop.multipart import Part, encode_related
from interop.source import dicom_source
from interop.uids import UidFactory
from tests.factories import dicom_bytes, dicom_dataset, synthetic_chest


def test_interop_is_a_core_package() -> None:
    """No FastAPI, settings or service imports: api -> service -> interop, never back."""
    root = Path(__file__).resolve().parents[2] / "interop"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"fastapi", "starlette", "service", "api"}, (path.name, name)


def test_uids_are_deterministic_per_seed_and_role() -> None:
    a, b = UidFactory("sha|m1"), UidFactory("sha|m1")
    assert a.uid("sr.instance") == b.uid("sr.instance")
    assert a.uid("sr.instance") != a.uid("seg.instance")
    assert a.uid("sr.instance") != UidFactory("sha|m2").uid("sr.instance")
    uid = a.uid("x")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert a.uuid_urn("x").startswith("urn:uuid:") and len(a.uuid_hex("x")) == 32


def test_only_linked_attributes_are_read_from_the_upload() -> None:
    ds = dicom_dataset(synthetic_chest(32, 32, 12), patient_name="Иванов^Иван")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstitutionName = "St Elsewhere"
    ds.add_new(0x00091010, "LO", "private secret")
    source = dicom_source(dicom_bytes(ds), UidFactory("s"))
    ref = source.reference
    assert str(ref.PatientName) == "Иванов^Иван" and ref.StudyInstanceUID == ds.StudyInstanceUID
    assert "InstitutionName" not in ref and 0x00091010 not in ref
    assert source.stand_in is None and source.is_dicom


def test_multipart_related_round_trips_through_a_mime_parser() -> None:
    bodies = [b"\x00DICM--binary", '{"ж": 1}'.encode()]
    related = encode_related(
        [Part("application/dicom", bodies[0]), Part("application/fhir+json", bodies[1])]
    )
    assert related.content_type.startswith('multipart/related; type="application/dicom"')
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {related.content_type}\r\n\r\n".encode() + related.body
    )
    assert [p.get_payload(decode=True) for p in msg.iter_parts()] == bodies


class _Client:
    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = errors
        self.calls = 0

    def store_instances(self, datasets: list[Dataset]) -> Dataset:
        self.calls += 1
        error = self.errors.pop(0)
        if error is not None:
            raise error
        return Dataset()


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(response=response)


@pytest.mark.parametrize(
    ("errors", "status", "calls", "code"),
    [
        ([requests.ConnectionError(), None], "stored", 2, None),
        ([_http_error(503), _http_error(503), _http_error(503)], "failed", 3, "pacs_rejected"),
        ([_http_error(400)], "failed", 1, "pacs_rejected"),
        ([requests.Timeout()] * 3, "failed", 3, "pacs_timeout"),
    ],
)
def test_push_retries_transient_failures_only(
    monkeypatch: pytest.MonkeyPatch, errors: list, status: str, calls: int, code: str | None
) -> None:
    fake = _Client(list(errors))
    monkeypatch.setattr(stow, "_client", lambda cfg: fake)
    waits: list[float] = []
    result = stow.push([Dataset()], stow.StowConfig("http://pacs", attempts=3), waits.append)
    assert (result.status, fake.calls, result.code) == (status, calls, code)
    assert waits == [0.5, 1.0][: calls - 1]


def test_ctr_reaches_the_sr_and_the_fhir_bundle_when_measured() -> None:
    import io

    from interop.fhir import build_fhir
    from interop.model import Algorithm, Findings, ZoneFinding
    from interop.sr import build_sr
    from tests.dicom_tools import dciodvfy_errors, read_dicom

    source = dicom_source(dicom_bytes(dicom_dataset(synthetic_chest(64, 48, 12))), UidFactory("c"))
    alg = Algorithm("classifier", "1.0.0", "a" * 64)
    zones = (ZoneFinding("right_lower", "right lower zone", 0.4, 0.2, 0.3),)
    for ctr in (0.47, None):
        findings = Findings("finding", 0.8, 0.7, zones, ctr=ctr)
        sr = build_sr(source, alg, findings, None)
        buf = io.BytesIO()
        sr.save_as(buf, enforce_file_format=True)
        assert dciodvfy_errors(buf.getvalue()) == []
        group = read_dicom(buf.getvalue()).ContentSequence[-1].ContentSequence[0]
        values = [
            float(i.MeasuredValueSequence[0].NumericValue)
            for i in group.ContentSequence
            if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].get("CodeValue") == "ctr"
        ]
        assert values == ([ctr] if ctr is not None else [])
        bundle = build_fhir(source, (alg,), findings, None)
        codes = [
            e.resource.code.coding[0].code
            for e in bundle.entry
            if e.resource.get_resource_type() == "Observation"
        ]
        assert ("ctr" in codes) == (ctr is not None)
