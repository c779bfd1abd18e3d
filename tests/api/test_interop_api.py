"""format=dicom-sr / dicom-seg / dicom-sc / fhir / bundle and push=true on the existing routes.

Tiny vision models and a fake LLM; every DICOM object goes through dciodvfy (0 errors) and is
re-read with pydicom/highdicom; the numbers must equal the JSON answer's for the same upload.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from service.app import create_app
from service.settings import PacsSettings, ReportSettings, Settings
from tests.dicom_tools import (
    dciodvfy_errors,
    elements_containing,
    fhir_problems,
    parse_related,
    read_dicom,
)
from tests.factories import dicom_bytes, dicom_dataset, png_bytes, synthetic_chest
from tests.fake_llm_services import Swap

CANARY = "CANARY^PHI^0001"


def _app(tiny_weights: Any, pacs: PacsSettings | None = None) -> tuple[Any, Swap]:
    settings = Settings(
        weights_dir=tiny_weights,
        report=ReportSettings(backend="disabled"),
        pacs=pacs or PacsSettings(),
        _env_file=None,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    swap = Swap()
    swap.install(app)
    return app, swap


@pytest.fixture(scope="module")
def api(tiny_weights: Any) -> Iterator[tuple[TestClient, Swap]]:
    app, swap = _app(tiny_weights)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, swap


def _dicom(name: str = CANARY) -> bytes:
    ds = dicom_dataset(synthetic_chest(160, 140, 12), bits_stored=12, patient_name=name)
    ds.AccessionNumber = "ACC-77"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    return dicom_bytes(ds)


def _png() -> bytes:
    return png_bytes(synthetic_chest(160, 140))


def _post(client: TestClient, path: str, data: bytes, **params: Any) -> Any:
    q = {"lime": "false", **params} if path == "/report" else params
    return client.post(path, params=q, files={"file": ("scan.bin", data)})


def _ok_dicom(r: Any) -> Any:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    assert dciodvfy_errors(r.content) == []
    return read_dicom(r.content)


def _code(seq: Any) -> str | None:
    """CodeValue, or LongCodeValue for values over 16 characters (PS3.3 8.8)."""
    return str(seq[0].get("CodeValue") or seq[0].get("LongCodeValue")) if seq else None


def _items(ds: Any) -> Iterator[Any]:
    """Every content item of an SR, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _concept(item: Any) -> str | None:
    return _code(item.get("ConceptNameCodeSequence"))


def _measurements(ds: Any) -> list[tuple[str, str | None, str | None, float]]:
    """(concept, method, finding site, value) of every NUM item in the SR."""
    out = []

    def walk(items: Any, site: str | None) -> None:
        for item in items:
            if item.ValueType == "CONTAINER":
                sites = [
                    _code(c.ConceptCodeSequence)
                    for c in item.get("ContentSequence", [])
                    if _concept(c) == "363698007"
                ]
                walk(item.get("ContentSequence", []), sites[0] if sites else site)
            elif item.ValueType == "NUM":
                method = [
                    _code(c.ConceptCodeSequence)
                    for c in item.get("ContentSequence", [])
                    if _concept(c) == "370129005"
                ]
                out.append(
                    (
                        _concept(item),
                        method[0] if method else None,
                        site,
                        float(item.MeasuredValueSequence[0].NumericValue),
                    )
                )

    walk(ds.ContentSequence, None)
    return out


def test_sr_round_trips_the_json_report_in_russian(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    data = _dicom()
    body = _post(client, "/report", data, lang="ru").json()
    sr = _ok_dicom(_post(client, "/report", data, lang="ru", format="dicom-sr"))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "PARTIAL"
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    values = _measurements(sr)
    ev = body["evidence"]
    prob = [v for c, _, _, v in values if c == "probability_finding"]
    assert prob and abs(prob[0] - ev["probability_finding"]) < 1e-6
    assert [v for c, _, _, v in values if c == "threshold"] == [ev["threshold"]]
    for zone in ev["zones"]:
        by_method = {m: v for c, m, s, v in values if s == zone["zone_id"]}
        assert abs(by_method["fused"] - zone["fused"]) < 1e-4
        if zone["gradcam_mean"] is not None:
            assert abs(by_method["gradcam"] - zone["gradcam_mean"]) < 1e-6
    decisions = [
        i.ConceptCodeSequence[0].CodeMeaning
        for i in _items(sr)
        if "ConceptCodeSequence" in i and _concept(i) == "decision"
    ]
    assert decisions == ["Abnormal" if ev["decision"] == "finding" else "Normal"]
    texts = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue
        for i in _items(sr)
        if i.ValueType == "TEXT" and "TextValue" in i
    }
    assert texts["Finding"] == body["sections"]["findings"]
    assert texts["Impression"] == body["sections"]["interpretation"]
    assert texts["Recommendation"] == body["sections"]["recommendations"]
    assert any("\u0400" <= ch <= "\u04ff" for ch in "".join(texts.values()))  # Cyrillic kept
    algorithm = {
        _concept(i): i.get("TextValue")
        for i in _items(sr)
        if _concept(i) in ("111001", "111003", "111002")
    }
    model = next(m for m in body["reproducibility"]["models"] if m["name"] == algorithm["111001"])
    assert algorithm["111003"] == model["version"]
    assert algorithm["111002"] == f"sha256={model['sha256']}"


def test_seg_frames_equal_the_segment_masks(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    data = _dicom()
    body = _post(client, "/segment", data).json()
    seg_ds = _ok_dicom(_post(client, "/segment", data, format="dicom-seg"))
    source = read_dicom(data)
    assert seg_ds.StudyInstanceUID == source.StudyInstanceUID
    assert seg_ds.SegmentationType == "BINARY"
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.get_source_image_uids()[0][2] == source.SOPInstanceUID
    numbers = list(range(1, len(body["structures"]) + 1))
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID],
        segment_numbers=numbers,
        combine_segments=False,
    )[0]
    for i, s in enumerate(body["structures"]):
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask_png"])))) > 0
        assert np.array_equal(masks[:, :, i].astype(bool), png), s["name"]
        label = seg_ds.SegmentSequence[i].SegmentLabel
        assert label.startswith(s["name"]) and (
            ("derived" in label) == (s["provenance"] == "derived")
        )


def test_sc_has_the_burned_in_label_and_links_to_the_source(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    data = _dicom()
    sc = _ok_dicom(_post(client, "/explain/gradcam", data, format="dicom-sc"))
    source = read_dicom(data)
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    band = sc.pixel_array[: max(12, sc.Rows // 20)]
    assert (band == 255).any() and (band == 0).mean() > 0.5  # white text on a black band


def test_fhir_bundle_parses_and_every_reference_resolves(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    data = _dicom()
    body = _post(client, "/report", data).json()
    r = _post(client, "/report", data, format="fhir")
    assert r.status_code == 200 and r.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(r.content)
    assert fhir_problems(bundle) == []
    types = [e.resource.get_resource_type() for e in bundle.entry]
    assert "ImagingStudy" in types and types.count("Device") == 3  # classifier, segmenter, LLM
    study = next(
        e.resource for e in bundle.entry if e.resource.get_resource_type() == "ImagingStudy"
    )
    assert study.identifier[0].value == f"urn:oid:{read_dicom(data).StudyInstanceUID}"
    prob = next(
        e.resource
        for e in bundle.entry
        if e.resource.get_resource_type() == "Observation"
        and e.resource.code.coding[0].code == "probability_finding"
    )
    assert abs(float(prob.valueQuantity.value) - body["evidence"]["probability_finding"]) < 1e-6
    # A non-DICOM upload: no ImagingStudy, an anonymous patient.
    png_bundle = Bundle.model_validate_json(_post(client, "/report", _png(), format="fhir").content)
    assert fhir_problems(png_bundle) == []
    kinds = {e.resource.get_resource_type(): e.resource for e in png_bundle.entry}
    assert "ImagingStudy" not in kinds and kinds["Patient"].name[0].text == "ANONYMOUS"


def test_bundle_of_a_png_is_one_new_study_with_stable_uids(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    data = _png()
    answers = [_post(client, "/report", data, format="bundle") for _ in range(2)]
    parts = [parse_related(a.content, a.headers["content-type"]) for a in answers]
    assert (
        answers[0].headers["content-type"].startswith('multipart/related; type="application/dicom"')
    )
    kinds = [ct for ct, _ in parts[0]]
    assert kinds == ["application/dicom"] * 5 + ["application/fhir+json"]
    datasets = [[read_dicom(b) for ct, b in p if ct == "application/dicom"] for p in parts]
    for body in (b for ct, b in parts[0] if ct == "application/dicom"):
        assert dciodvfy_errors(body) == []
    first = datasets[0]
    assert len({d.StudyInstanceUID for d in first}) == 1
    assert [str(d.PatientName) for d in first] == ["ANONYMOUS^"] * 5
    assert [d.Modality for d in first] == ["OT", "SR", "SEG", "OT", "PR"]
    gsps = first[4]  # outlines and the answer as graphics over the uploaded image
    annotation = gsps.GraphicAnnotationSequence[0]
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first[0].SOPInstanceUID
    assert "not for diagnosis" in annotation.TextObjectSequence[0].UnformattedTextValue
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in datasets[1]]
    # A different upload gets a different study.
    other = _post(client, "/report", png_bytes(synthetic_chest(168, 144)), format="bundle")
    other_ds = read_dicom(parse_related(other.content, other.headers["content-type"])[0][1])
    assert other_ds.StudyInstanceUID != first[0].StudyInstanceUID


def test_push_needs_a_dicom_format_and_a_configured_pacs(api: tuple[TestClient, Swap]) -> None:
    client, _ = api
    r = _post(client, "/report", _png(), format="bundle", push="true")
    assert r.status_code == 422 and r.json()["code"] == "push_not_configured"
    r = _post(client, "/segment", _png(), push="true")
    assert r.status_code == 422 and r.json()["code"] == "invalid_parameter"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failed_push_still_returns_the_analysis(tiny_weights: Any) -> None:
    pacs = PacsSettings(
        stow_url=f"http://127.0.0.1:{_closed_port()}/dicom-web", attempts=2, backoff_s=0.0
    )
    app, _ = _app(tiny_weights, pacs)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = _post(client, "/report", _png(), format="bundle", push="true")
        assert r.status_code == 200
        assert r.headers["x-cxr-push"] == "failed; code=pacs_unreachable; attempts=2"
        parts = parse_related(r.content, r.headers["content-type"])
        assert parts[-1][0] == "application/problem+json"
        problem = json.loads(parts[-1][1])
        assert problem["status"] == 502 and problem["code"] == "pacs_unreachable"
        assert sum(ct == "application/dicom" for ct, _ in parts) == 5
        seg = _post(client, "/segment", _png(), format="dicom-seg", push="true")
        assert seg.status_code == 200 and seg.headers["x-cxr-push"].startswith("failed;")
        assert dciodvfy_errors(seg.content) == []


@pytest.mark.parametrize("name", [CANARY, "CANARYSOLO"])
def test_canary_name_only_in_patient_fields(
    api: tuple[TestClient, Swap], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    client, swap = api
    swap.backend.prompts.clear()
    data = _dicom(name)
    family = name.split("^")[0]
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _post(client, "/report", data, format="bundle", lang="ru")
        body = _post(client, "/report", data).json()
    assert r.status_code == 200
    parts = parse_related(r.content, r.headers["content-type"])
    for ct, part in parts:
        if ct == "application/dicom":
            ds = read_dicom(part)
            assert str(ds.PatientName).rstrip("^") == name
            assert elements_containing(ds, family) == ["PatientName"]
        else:
            bundle = Bundle.model_validate_json(part)
            for e in bundle.entry:
                text = e.resource.model_dump_json()
                assert (family in text) == (e.resource.get_resource_type() == "Patient")
    assert swap.backend.prompts, "the fake LLM saw no prompt"
    assert all(family not in m.content for p in swap.backend.prompts for m in p)
    assert family not in json.dumps(body)
    assert family not in caplog.text
    assert not [w for w in caught if family in str(w.message)]


@pytest.mark.parametrize("uid", [None, "1.2.3.abc", "1.02.3"])
def test_dicom_without_valid_study_uid_is_422(
    api: tuple[TestClient, Swap], uid: str | None
) -> None:
    client, _ = api
    ds = dicom_dataset(synthetic_chest(160, 140, 12), bits_stored=12)
    if uid is None:
        del ds.StudyInstanceUID
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the invalid UID is the point
            ds.StudyInstanceUID = uid
    r = _post(client, "/segment", dicom_bytes(ds), format="dicom-seg")
    assert r.status_code == 422 and r.json()["code"] == "dicom_not_linkable"
    assert _post(client, "/segment", dicom_bytes(ds)).status_code == 200  # JSON still works
