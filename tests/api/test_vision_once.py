"""One vision pipeline per request: each route decodes its upload and runs each model once,
and encodes Grad-CAM PNGs only when its answer shows them (issue 14).

Counts are taken with spies on the model classes and on every ``decode_upload`` the service
modules imported, so they hold however the service code is arranged.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from explain import ExplanationQuality
from explain.zones import ZoneDescriptor
from inference.classify import Classification
from inference.models import Classifier, Segmenter
from reporting.fake_backend import FakeBackend
from service import batch
from service.app import create_app
from service.interop_usecase import InteropService
from service.report_usecase import build_report_service, to_evidence
from service.settings import ReportSettings, Settings
from tests.dicom_tools import parse_related
from tests.factories import grey_chest, png_bytes, synthetic_chest
from tests.fake_llm_services import REPLY, Swap


@pytest.fixture(scope="module")
def client(tiny_weights: Any) -> Iterator[TestClient]:
    settings = Settings(
        weights_dir=tiny_weights,
        report=ReportSettings(backend="disabled", lime_samples=50),
        _env_file=None,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    swap = Swap()
    swap.install(app)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@dataclass
class Calls:
    counts: dict[str, int] = field(default_factory=dict)

    def spy(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return original(*args, **kwargs)

        return counted

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    c = Calls()
    # The classifier's gated forward pass (LIME and the deletion test call probabilities()).
    monkeypatch.setattr(Classifier, "predict", c.spy("classify", Classifier.predict))
    monkeypatch.setattr(Segmenter, "segment", c.spy("segment", Segmenter.segment))
    for name, module in list(sys.modules.items()):
        if name.startswith(("service.", "api.")) and hasattr(module, "decode_upload"):
            monkeypatch.setattr(module, "decode_upload", c.spy("decode", module.decode_upload))
        if name.startswith(("service.", "explain.")):
            for encoder in ("encode_png", "encode_gray_png"):
                if hasattr(module, encoder):
                    original = getattr(module, encoder)
                    monkeypatch.setattr(module, encoder, c.spy("png", original))
    return c


def _post(client: TestClient, route: str, data: bytes, **params: str) -> Any:
    r = client.post(route, params=params, files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return r


def _once(calls: Calls) -> None:
    assert (calls["decode"], calls["classify"], calls["segment"]) == (1, 1, 1), calls.counts


@pytest.fixture(scope="module")
def chest() -> bytes:
    return png_bytes(synthetic_chest(160, 140))


@pytest.fixture(scope="module")
def no_lungs() -> bytes:
    return png_bytes(grey_chest())  # the tiny segmenter finds no lung in it


@pytest.mark.parametrize("lime", ["true", "false"])
def test_report_sees_the_upload_once_and_encodes_no_gradcam_png(
    client: TestClient, calls: Calls, chest: bytes, lime: str
) -> None:
    body = _post(client, "/report", chest, lime=lime).json()
    assert body["evidence"]["lime_used"] is (lime == "true")
    _once(calls)
    assert calls["png"] == 0


def test_report_without_lungs_runs_the_classifier_once(
    client: TestClient, calls: Calls, no_lungs: bytes
) -> None:
    """LIME asked, no lung found: Grad-CAM evidence from the same vision (this path used to
    catch LungsNotFound and decode and classify the upload a second time)."""
    body = _post(client, "/report", no_lungs, lime="true").json()
    assert body["evidence"]["lime_used"] is False
    _once(calls)
    assert calls["png"] == 0


def test_explain_lime_sees_the_upload_once(client: TestClient, calls: Calls, chest: bytes) -> None:
    _post(client, "/explain/lime", chest, n_samples="50")
    _once(calls)
    assert calls["png"] == 1  # LIME's overlay: the one picture this answer shows


def test_gradcam_json_encodes_its_three_pngs_once(
    client: TestClient, calls: Calls, chest: bytes
) -> None:
    _post(client, "/explain/gradcam", chest)
    _once(calls)
    assert calls["png"] == 3  # overlay, lung-restricted map, full map


def test_gradcam_sc_draws_the_overlay_without_a_png(
    client: TestClient, calls: Calls, chest: bytes
) -> None:
    _post(client, "/explain/gradcam", chest, format="dicom-sc")
    _once(calls)
    assert calls["png"] == 0


def test_report_sr_sees_the_upload_once(client: TestClient, calls: Calls, chest: bytes) -> None:
    _post(client, "/report", chest, lime="false", format="dicom-sr")
    _once(calls)
    assert calls["png"] == 0


@pytest.mark.parametrize("upload", ["chest", "no_lungs"])
def test_bundle_builds_every_object_from_one_vision(
    client: TestClient, calls: Calls, upload: str, request: pytest.FixtureRequest
) -> None:
    data: bytes = request.getfixturevalue(upload)
    r = _post(client, "/report", data, format="bundle")
    parts = parse_related(r.content, r.headers["content-type"])
    # SR, SEG, SC and GSPS (after the stand-in SC of a PNG), then the FHIR Bundle.
    assert [t for t, _ in parts].count("application/dicom") == 5, [t for t, _ in parts]
    _once(calls)
    assert calls["png"] == 0


def _descriptor(gradcam: float, lime: float | None, fused: float) -> ZoneDescriptor:
    return ZoneDescriptor(
        zone_id="right_lower",
        side="right",
        level="lower",
        name_en="right lower zone",
        name_ru="правая нижняя зона",
        area_fraction=0.1,
        gradcam_mean=gradcam,
        gradcam_peak=gradcam,
        lime_intensity=lime,
        lime_positive_mass=None,
        fused=fused,
    )


def test_zone_evidence_carries_the_gradcam_mean_as_its_gradcam_score() -> None:
    c = Classification(0.8, "finding", 0.5, 1.0, 1.4)
    quality = ExplanationQuality(0.8, 0.9, None, None, False, ())
    fused = _descriptor(gradcam=0.2, lime=0.9, fused=0.55)
    alone = _descriptor(gradcam=0.3, lime=None, fused=0.3)
    for d in (fused, alone):
        zone = to_evidence(c, (d,), quality.weak).zones[0]
        assert zone.gradcam == pytest.approx(d.gradcam_mean)
        assert zone.fused == pytest.approx(d.fused) == zone.intensity
        assert zone.lime_weight == d.lime_intensity


@pytest.mark.parametrize("report", [False, True])
def test_batch_dicom_output_sees_each_file_once(
    tiny_weights: Any, tmp_path: Any, calls: Calls, chest: bytes, report: bool
) -> None:
    """python -m service.batch --format dicom: SEG, SC, SR and the stand-in from one vision
    (it used to classify, run Grad-CAM, segment and decode again per file)."""
    settings = Settings(weights_dir=tiny_weights, _env_file=None)  # type: ignore[call-arg]
    s = batch.build_services(settings, with_llm=False)
    s.report = build_report_service(s.registry, s.explain, s.report.settings, FakeBackend(REPLY))
    s.interop = InteropService(s.analysis, s.explain, s.report, None)
    calls.counts.clear()  # loading warms the models up
    o = batch.Options(tmp_path, tmp_path / "out", "dicom", report, "en", False)
    row = asyncio.run(batch.analyse(s, chest, "ab" * 32, o))
    files = sorted(p.name for p in (tmp_path / "out" / row["dicom_dir"]).iterdir())
    assert files == ["sc.dcm", "seg.dcm", "source.dcm", "sr.dcm"]
    _once(calls)
    assert calls["png"] == 0


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/explain/gradcam", {"format": "dicom-sc"}),
        ("/segment", {"format": "dicom-seg"}),
        ("/report", {"format": "dicom-sr", "lime": "false"}),
    ],
)
def test_a_push_links_to_a_stand_in_made_from_the_same_decode(
    client: TestClient,
    calls: Calls,
    chest: bytes,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    params: dict[str, str],
) -> None:
    """push=true of one object from a PNG: the stand-in source image it references comes
    from the request's one decode (it used to decode the upload again)."""
    import api.routes.analysis
    import api.routes.explain
    import api.routes.report
    from interop.stow import PushResult

    pushed: list[list[str]] = []

    async def push(self: InteropService, objects: list[Any]) -> PushResult:
        pushed.append([o.role for o in objects])
        return PushResult("stored", len(objects), 1)

    monkeypatch.setattr(InteropService, "push", push)
    for module in (api.routes.analysis, api.routes.explain, api.routes.report):
        monkeypatch.setattr(module, "check_push", lambda *_: None)  # no PACS in this app
    _post(client, route, chest, push="true", **params)
    assert calls["decode"] == 1, calls.counts
    assert len(pushed) == 1 and pushed[0][0] == "source" and len(pushed[0]) == 2
