"""The viewer's server side: static files and their headers, offline docs, /limits, /render,
CORS, and static checks of the viewer's code and message catalogues (no browser needed)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.problems import _GENERIC_CODES
from api.routes.viewer import viewer_dir
from inference.errors import IntakeError
from service.app import create_app
from service.auth import key_digest
from service.settings import AuthSettings, CorsSettings, LimitSettings, Settings
from tests import factories as f

VIEWER = viewer_dir()
KEY = "viewer-test-key-0123456789abcdef"


def _png() -> bytes:
    return f.png_bytes(f.synthetic_chest(120, 100))


def _upload(data: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("x.bin", data, "application/octet-stream")}


# ---------------------------------------------------------------- static files and headers
def test_root_redirects_to_the_viewer_without_trusting_the_host(client: TestClient) -> None:
    for path in ("/", "/viewer"):
        r = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == "viewer/"  # relative: never names a host
    page = client.get("/")
    assert page.status_code == 200 and page.url.path == "/viewer/"
    # Folders without an index answer 404, never a redirect built from the Host header.
    sub = client.get("/viewer/js", headers={"host": "evil.example"}, follow_redirects=False)
    assert sub.status_code == 404
    assert "<title" in page.text


def test_viewer_has_a_strict_csp_and_no_inline_code(client: TestClient) -> None:
    r = client.get("/viewer/")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"

    class Inline(HTMLParser):
        problems: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            names = {k for k, _ in attrs}
            if tag == "script" and "src" not in names:
                self.problems.append("inline script")
            if tag == "style" or "style" in names:
                self.problems.append(f"inline style on <{tag}>")
            if any(k.startswith("on") for k in names):
                self.problems.append(f"event handler attribute on <{tag}>")
            for key, value in attrs:
                if key in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                    self.problems.append(f"external {key}: {value}")

    parser = Inline()
    parser.feed(r.text)
    assert parser.problems == []


def test_every_viewer_file_is_served_with_the_csp(client: TestClient) -> None:
    files = [p for p in VIEWER.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".html", ".css", ".js", ".json"}
    for p in files:
        r = client.get("/viewer/" + p.relative_to(VIEWER).as_posix())
        assert r.status_code == 200, p
        assert "connect-src 'self'" in r.headers["content-security-policy"], p
    js = client.get("/viewer/js/main.js").headers["content-type"]
    assert "javascript" in js


def test_viewer_code_never_parses_server_text_as_html() -> None:
    """Report text and DICOM-derived strings are untrusted: only textContent is used."""
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|DOMParser|https?://"
    )
    for p in sorted((VIEWER / "js").glob("*.js")):
        hits = [m.group() for m in forbidden.finditer(p.read_text(encoding="utf-8"))]
        assert hits == [], f"{p.name}: {hits}"


def test_viewer_calls_only_documented_endpoints(client: TestClient) -> None:
    spec_paths = set(client.get("/openapi.json").json()["paths"])
    code = "\n".join(p.read_text(encoding="utf-8") for p in (VIEWER / "js").glob("*.js"))
    called = set(re.findall(r'api\.(?:upload|getJson|postFile|deleteJson)\(\s*"([^"]+)"', code))
    assert called, "no API calls found: the pattern is out of date"
    for path in called:
        assert "/" + path in spec_paths, path


# ---------------------------------------------------------------- offline docs (F13)
@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ],
)
def test_docs_load_their_assets_from_this_service(
    client: TestClient, page: str, assets: list[str]
) -> None:
    html = client.get(page).text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, html
    assert not [r for r in refs if re.match(r"^(https?:)?//", r)], refs
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html
    for name in assets:
        assert f"/docs-assets/{name}" in refs
        r = client.get(f"/docs-assets/{name}")
        assert r.status_code == 200 and len(r.content) > 10_000


# ---------------------------------------------------------------- /limits and /render
def test_limits_report_the_configured_upload_cap(tiny_weights: Path) -> None:
    limits = LimitSettings(max_upload_bytes=12_345_678)  # type: ignore[call-arg]
    settings = Settings(weights_dir=tiny_weights, limits=limits, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        body = c.get("/limits").json()
    assert body["max_upload_bytes"] == 12_345_678
    assert (
        body["lime_samples"]["min"]
        <= body["lime_samples"]["default"]
        <= body["lime_samples"]["max"]
    )
    assert body["report_languages"] == ["en", "ru"]


def test_render_returns_the_decoded_radiograph(client: TestClient) -> None:
    pixels = f.synthetic_chest(120, 100)
    r = client.post("/render", files=_upload(f.png_bytes(pixels)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "L" and img.size == (100, 120)
    assert np.array_equal(np.asarray(img), pixels)  # an 8-bit upload comes back unchanged


def test_render_windows_dicom_and_inverts_monochrome1(client: TestClient) -> None:
    pixels = f.synthetic_chest(120, 100, bits=12)
    mono2 = f.dicom_bytes(f.dicom_dataset(pixels, bits_stored=12))
    mono1 = f.dicom_bytes(f.dicom_dataset(4095 - pixels, bits_stored=12, photometric="MONOCHROME1"))
    a = np.asarray(Image.open(io.BytesIO(client.post("/render", files=_upload(mono2)).content)))
    b = np.asarray(Image.open(io.BytesIO(client.post("/render", files=_upload(mono1)).content)))
    assert a.shape == (120, 100) and a.max() > 200 and a.min() < 50  # stretched to 8 bits
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_render_max_side_reduces_and_never_enlarges(client: TestClient) -> None:
    r = client.post("/render", params={"max_side": 64}, files=_upload(_png()))
    assert Image.open(io.BytesIO(r.content)).size == (53, 64)
    r = client.post("/render", params={"max_side": 4096}, files=_upload(_png()))
    assert Image.open(io.BytesIO(r.content)).size == (100, 120)
    bad = client.post("/render", params={"max_side": 8}, files=_upload(_png()))
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_parameter"


def test_render_refuses_what_the_other_endpoints_refuse(client: TestClient) -> None:
    r = client.post("/render", files=_upload(b"not an image at all"))
    assert r.status_code == 415
    assert r.headers["content-type"].startswith("application/problem+json")


# ---------------------------------------------------------------- auth and CORS
@pytest.fixture()
def secured_cors(tiny_weights: Path) -> Iterator[TestClient]:
    settings = Settings(  # type: ignore[call-arg]
        weights_dir=tiny_weights,
        _env_file=None,
        auth=AuthSettings(api_keys=[f"web:{key_digest(KEY)}"]),  # type: ignore[call-arg]
        cors=CorsSettings(allow_origins=["https://ris.example"]),  # type: ignore[call-arg]
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_viewer_and_docs_are_open_but_the_api_needs_the_key(secured_cors: TestClient) -> None:
    c = secured_cors
    for path in (
        "/viewer/",
        "/viewer/js/api.js",
        "/viewer/i18n/ru.json",
        "/docs",
        "/redoc",
        "/docs-assets/swagger-ui.css",
    ):
        assert c.get(path).status_code == 200, path
    assert c.get("/limits").status_code == 401
    ok = c.get("/limits", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


def test_cors_preflight_and_answers_for_a_configured_origin(secured_cors: TestClient) -> None:
    c = secured_cors
    pre = c.options(
        "/classify",
        headers={
            "Origin": "https://ris.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://ris.example"
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    # A refusal still carries CORS headers, so the SPA can read its problem+json.
    denied = c.get("/limits", headers={"Origin": "https://ris.example"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "https://ris.example"
    assert "retry-after" in denied.headers["access-control-expose-headers"].lower()
    other = c.get("/limits", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_by_default(client: TestClient) -> None:
    r = client.get("/version", headers={"Origin": "https://ris.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = client.options(
        "/classify",
        headers={
            "Origin": "https://ris.example",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert "access-control-allow-origin" not in pre.headers


# ---------------------------------------------------------------- message catalogues
def _catalogue(lang: str) -> dict[str, str]:
    return json.loads((VIEWER / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


def test_catalogues_have_identical_keys_and_placeholders() -> None:
    en, ru = _catalogue("en"), _catalogue("ru")
    assert sorted(en) == sorted(ru)
    for key in en:
        assert en[key].strip() and ru[key].strip(), key
        holes = re.compile(r"\{(\w+)\}")
        assert sorted(holes.findall(en[key])) == sorted(holes.findall(ru[key])), key
    # Russian really is Russian where the English is a sentence.
    cyrillic = [k for k in ru if re.search("[а-яё]", ru[k], re.IGNORECASE)]
    assert len(cyrillic) > 0.8 * len(ru)


def test_every_key_the_viewer_uses_exists() -> None:
    en = _catalogue("en")
    html = (VIEWER / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-aria-label|-title)?="([^"]+)"', html))
    code = "\n".join(p.read_text(encoding="utf-8") for p in (VIEWER / "js").glob("*.js"))
    used |= set(re.findall(r'\bt\(\s*"([a-z_]+\.[a-z_.]+)"', code))
    assert len(used) > 100, "the key pattern is out of date"
    assert sorted(used - set(en)) == []


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_problem_code_has_a_message() -> None:
    import service.explain_usecase  # noqa: F401  (registers LungsNotFound)

    codes = {c.code for c in _subclasses(IntakeError)} | set(_GENERIC_CODES.values())
    codes |= {
        "overloaded",
        "body_too_large",
        "body_timeout",
        "encoding_not_supported",
        "insufficient_storage",
        "llm_unavailable",
        "llm_timeout",
        "missing_credentials",
        "invalid_credentials",
        "too_many_auth_failures",
        "missing_file",
        "too_many_files",
        "invalid_parameter",
        "client_disconnected",
        "not_a_chest_radiograph",
    }
    en = _catalogue("en")
    assert sorted(c for c in codes if f"problem.{c}" not in en) == []
