"""The physician viewer in headless Chromium against the real service (shipped weights, real
radiographs). Screenshots of the main states go to test-artifacts/viewer/ (not committed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import XSS, LiveServer, ViewerPage
from tests.factories import SHARED, radiograph_dicom

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PAGE_BUDGET_BYTES = 200 * 1024
CYRILLIC = re.compile("[А-Яа-яЁё]")


def _classify(server: LiveServer, data: bytes) -> dict[str, Any]:
    files = {"file": ("x", data, "application/octet-stream")}
    r = httpx.post(server.base_url + "/classify", files=files, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _open(v: ViewerPage) -> None:
    v.page.goto(v.server.base_url + "/")
    v.page.wait_for_selector("#limit-hint:not(:empty)")  # catalogue and /limits loaded


def _wait_views(v: ViewerPage) -> None:
    """Result, rendered image, anatomy and Grad-CAM are all on screen."""
    v.page.wait_for_selector("#decision:not(:empty)")
    v.page.wait_for_selector("#heat-gradcam-lungs:enabled", timeout=60_000)
    v.page.wait_for_selector("#layer-abdomen")
    v.page.wait_for_selector("#heat-canvas:not([hidden])")


def _upload(v: ViewerPage, path: Path) -> None:
    v.page.set_input_files("#file-input", str(path))
    _wait_views(v)


def _boxes(v: ViewerPage, selectors: list[str]) -> list[dict[str, float]]:
    return [v.page.locator(s).bounding_box() for s in selectors]


# ------------------------------------------------------------------------------------------
def test_page_load_is_small_offline_and_redirected(viewer: ViewerPage) -> None:
    _open(viewer)
    assert viewer.page.url == viewer.server.base_url + "/viewer/"
    transferred = viewer.page.evaluate(
        """() => performance.getEntriesByType('navigation')[0].transferSize +
              performance.getEntriesByType('resource').reduce((s, e) => s + e.transferSize, 0)"""
    )
    assert 10_000 < transferred <= PAGE_BUDGET_BYTES, transferred
    viewer.shot("01-start-en")


def test_png_upload_shows_classify_probability_and_aligned_overlays(viewer: ViewerPage) -> None:
    _open(viewer)
    page = viewer.page
    _upload(viewer, viewer.server.png)
    expected = _classify(viewer.server, viewer.server.png.read_bytes())
    shown = float(page.get_attribute("#probability", "data-value") or "nan")
    assert shown == expected["probability_finding"]
    assert page.text_content("#probability") == f"{expected['probability_finding'] * 100:.1f}%"
    decision = {"finding": "Finding", "no_finding": "No finding"}[expected["decision"]]
    assert page.text_content("#decision") == decision
    assert expected["model"]["version"] in (page.text_content("#model") or "")

    # One layer per structure; derived ones are marked; each toggles.
    assert page.locator("#anatomy-stack canvas").count() == 5
    for name in ("spine", "abdomen"):
        assert "derived" in (page.locator(f"label:has(#layer-{name})").text_content() or "")
    assert "derived" not in (page.locator("label:has(#layer-right_lung)").text_content() or "")
    stack = page.locator("#anatomy-stack canvas")
    for i, name in enumerate(["right_lung", "left_lung", "heart_mediastinum", "spine", "abdomen"]):
        page.uncheck(f"#layer-{name}")
        assert stack.nth(i).is_hidden()
        page.check(f"#layer-{name}")
        assert stack.nth(i).is_visible()

    # Lung-restricted vs whole-image Grad-CAM, with the colour legend.
    assert page.is_checked("#heat-gradcam-lungs") and page.is_visible("#legend-jet")
    page.check("#heat-gradcam-full")
    page.wait_for_selector("#heat-canvas:not([hidden])")

    # Opacity applies to the overlays.
    page.fill("#opacity", "30")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("() => document.getElementById('anatomy-stack').style.opacity") == "0.3"
    page.fill("#opacity", "60")
    page.dispatch_event("#opacity", "input")
    viewer.shot("02-png-result-en")

    # Zoom and pan move every layer together.
    layers = [
        "#base-image",
        "#heat-canvas",
        *[f"#anatomy-stack canvas >> nth={i}" for i in range(5)],
    ]
    before = _boxes(viewer, layers)
    page.click("#zoom-in")
    page.click("#zoom-in")
    page.focus("#viewport")
    page.keyboard.press("ArrowLeft")
    after = _boxes(viewer, layers)
    assert after[0]["width"] > before[0]["width"] * 1.5
    for box in after[1:]:
        for key in ("x", "y", "width", "height"):
            assert box[key] == pytest.approx(after[0][key], abs=0.5)
    viewer.shot("03-zoomed")
    page.click("#zoom-reset")
    assert _boxes(viewer, ["#base-image"])[0]["width"] == pytest.approx(before[0]["width"], abs=0.5)
    # A narrow window (tablet portrait): the panels stack; the image refits.
    page.set_viewport_size({"width": 800, "height": 1000})
    page.wait_for_timeout(200)
    assert _boxes(viewer, ["#base-image"])[0]["width"] <= 800
    viewer.shot("03b-narrow")


def test_dicom_upload_shows_the_server_rendering_and_classify_probability(
    viewer: ViewerPage, tmp_path: Path
) -> None:
    dcm = tmp_path / "chest.dcm"
    dcm.write_bytes(radiograph_dicom(SHARED / "images/jsrt/JPCLN001.jpg", bits=12))
    _open(viewer)
    _upload(viewer, dcm)
    expected = _classify(viewer.server, dcm.read_bytes())
    page = viewer.page
    assert (
        float(page.get_attribute("#probability", "data-value") or "nan")
        == (expected["probability_finding"])
    )
    assert "DICOM" in (page.text_content("#image-info") or "")
    natural = page.evaluate(
        "() => [document.getElementById('base-image').naturalWidth,"
        " document.getElementById('base-image').naturalHeight]"
    )
    assert natural == [expected["image"]["width"], expected["image"]["height"]]
    viewer.shot("04-dicom-result-en")


def test_tabs_lime_job_and_report_streams_in_both_languages(viewer: ViewerPage) -> None:
    _open(viewer)
    page = viewer.page
    _upload(viewer, viewer.server.png)

    # Grad-CAM: six zones with both languages' names, quality scores.
    rows = page.locator("#gradcam-zones tbody tr")
    assert rows.count() == 6
    assert CYRILLIC.search(rows.nth(0).locator("td").nth(1).text_content() or "")
    assert page.locator("#gradcam-quality dt").count() >= 3

    # LIME as a job: seed shown, overlay becomes available; a second job can be cancelled.
    page.click("#tab-lime")
    page.select_option("#lime-samples", "50")
    page.fill("#lime-seed", "7")
    page.click("#lime-start")
    page.wait_for_selector("#lime-body:not([hidden])", timeout=90_000)
    assert "Seed 7, 50 samples" in (page.text_content("#lime-summary") or "")
    assert page.is_checked("#heat-lime") and page.is_visible("#lime-image")
    assert page.locator("#lime-table tbody tr").count() > 0
    viewer.shot("05-lime-en")
    page.select_option("#lime-samples", "1000")
    page.click("#lime-start")
    page.wait_for_selector("#lime-cancel:enabled")
    page.click("#lime-cancel")
    page.wait_for_selector("#lime-status:text('Cancelled.')", timeout=30_000)

    # Report in English, streamed section by section, with provenance and grounding.
    page.click("#tab-report")
    page.check("#report-debug")  # removed sentences are listed only on request (F11)
    page.click("#report-start")
    page.wait_for_selector("#report-grounding:not([hidden])", timeout=90_000)
    sections = page.locator("#report-sections section")
    assert [sections.nth(i).get_attribute("data-section") for i in range(3)] == [
        "findings",
        "interpretation",
        "recommendations",
    ]
    text_en = page.text_content("#report-sections") or ""
    assert not CYRILLIC.search(text_en) and "Recommendations" in text_en
    assert page.locator("#report-sections .badge").count() == 3
    assert page.locator("#report-grounding-facts .badge").count() == 1

    # The model's markup is shown as text, never run or rendered.
    removed = page.locator("#report-removed")
    if removed.is_visible():
        page.click("#report-removed-summary")
    assert page.evaluate("() => window.__xss") is None
    assert page.locator('img[src="x"]').count() == 0
    assert XSS.split(" onerror")[0] in (page.text_content("#panel-report") or "")
    viewer.shot("06-report-en")

    # Russian without a reload; the report is requested in Russian.
    page.evaluate("() => { window.__sameDocument = true; }")
    page.select_option("#lang-select", "ru")
    page.wait_for_selector("#tab-report:text('Заключение')")
    assert page.evaluate("() => window.__sameDocument") is True
    page.click("#report-start")
    page.wait_for_selector('#report-sections[lang="ru"] section[data-section="recommendations"]')
    page.wait_for_selector("#report-grounding:not([hidden])", timeout=90_000)
    assert CYRILLIC.search(page.text_content("#report-sections") or "")
    assert any("/report/stream?lang=ru" in u for u in viewer.requests)
    assert any("/report/stream?lang=en" in u for u in viewer.requests)
    viewer.shot("07-report-ru")

    # Attributions as a table.
    page.click("#tab-attributions")
    page.click("#attr-start")
    page.wait_for_selector("#attr-body:not([hidden])", timeout=120_000)
    assert page.locator("#attr-table tbody tr").count() >= 2
    assert CYRILLIC.search(page.text_content("#attr-table") or "")
    viewer.shot("08-attributions-ru")
    page.click("#tab-gradcam")
    viewer.shot("09-gradcam-ru")


def _tabbable(page: Any) -> list[str]:
    """Ids of the controls a keyboard user must be able to reach now (radios: one per group)."""
    return page.evaluate(
        """() => {
          const sel = 'a[href], button, input, select, textarea, [tabindex]';
          const out = new Set();
          for (const el of document.querySelectorAll(sel)) {
            if (el.disabled || el.tabIndex < 0 || !el.checkVisibility()) continue;
            if (el.closest('fieldset:disabled')) continue;
            out.add(el.type === 'radio' ? 'radio:' + el.name : (el.id || el.textContent.trim()));
          }
          return [...out];
        }"""
    )


def _tab_through(page: Any, presses: int = 90) -> dict[str, str]:
    """Press Tab repeatedly from the top; the controls reached and their focus outline."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    reached: dict[str, str] = {}
    for _ in range(presses):
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => {
                 const el = document.activeElement;
                 if (!el || el === document.body) return ['', ''];
                 const s = getComputedStyle(el);
                 const name = el.type === 'radio' ? 'radio:' + el.name
                   : (el.id || el.textContent.trim());
                 return [name, s.outlineStyle + ' ' + s.outlineWidth];
               }"""
        )
        reached.setdefault(info[0], info[1])
    return reached


def test_keyboard_alone_reaches_every_control_with_visible_focus(viewer: ViewerPage) -> None:
    page = viewer.page
    # Intercept file choosers from the start (enabling it only around the key press raced
    # with the dialog now and then).
    chosen: list[Any] = []
    page.on("filechooser", lambda fc: (chosen.append(fc), fc.set_files(str(viewer.server.png))))
    _open(viewer)
    # Upload with the keyboard: Tab to the picker, Enter opens the file chooser.
    seen = []
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("() => document.activeElement.id"))
        if seen[-1] == "pick-file":
            break
    assert seen[-1] == "pick-file", seen
    page.keyboard.press("Enter")
    _wait_views(viewer)
    assert len(chosen) == 1
    # Each tab in turn (arrow keys on the tab list), then Tab through the whole page.
    for i, tab in enumerate(["tab-gradcam", "tab-lime", "tab-report", "tab-attributions"]):
        if i:
            page.focus('[role="tab"][aria-selected="true"]')
            page.keyboard.press("ArrowRight")
        assert page.get_attribute(f"#{tab}", "aria-selected") == "true"
        expected = set(_tabbable(page))
        reached = _tab_through(page)
        assert expected - set(reached) == set(), tab
        hidden_focus = {k: v for k, v in reached.items() if v.startswith("none") and k != ""}
        assert hidden_focus == {}, f"no visible focus: {hidden_focus}"
    # Keyboard zoom on the image.
    page.focus("#viewport")
    before = page.evaluate("() => document.getElementById('stage').style.transform")
    page.keyboard.press("+")
    assert page.evaluate("() => document.getElementById('stage').style.transform") != before
    # Radio groups are operated with arrow keys.
    page.focus("#heat-gradcam-lungs")
    page.keyboard.press("ArrowDown")
    assert page.is_checked("#heat-gradcam-full")


def test_axe_finds_no_violations_in_any_state(viewer: ViewerPage) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    _open(viewer)
    page = viewer.page
    start = axe.run(page)
    assert start.violations_count == 0, start.generate_report()
    _upload(viewer, viewer.server.png)
    for lang in ("en", "ru"):
        page.select_option("#lang-select", lang)
        for tab in ("tab-gradcam", "tab-lime", "tab-report", "tab-attributions"):
            page.click(f"#{tab}")
            result = axe.run(page)
            assert result.violations_count == 0, f"{lang} {tab}\n{result.generate_report()}"


def test_api_docs_work_offline(viewer: ViewerPage) -> None:
    page = viewer.page
    page.goto(viewer.server.base_url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "cxr-xai" in (page.text_content(".swagger-ui .info .title") or "")
    viewer.shot("10-docs")
    viewer.allow_csp_blocked = True  # ReDoc always asks cdn.redoc.ly for its logo
    page.goto(viewer.server.base_url + "/redoc")
    page.wait_for_selector("h1:text('cxr-xai')", timeout=60_000)


def _problem(status: int, code: str, retry_after: int | None = None) -> dict[str, Any]:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    body = {
        "type": f"about:{code}",
        "title": "x",
        "status": status,
        "code": code,
        "detail": "generic",
        "request_id": "abcdef0123456789",
    }
    return {
        "status": status,
        "headers": headers,
        "content_type": "application/problem+json",
        "body": json.dumps(body),
    }


def test_refusals_are_explained_in_the_interface_language(viewer: ViewerPage) -> None:
    """Answers the real service cannot be made to give on demand (a full gate, the input gate's
    codes before they land) are played by Playwright's router inside the browser."""
    page = viewer.page
    # The size check uses the limit the server states, before anything is sent.
    limits = httpx.get(viewer.server.base_url + "/limits").json() | {"max_upload_bytes": 1024}
    page.route("**/limits", lambda r: r.fulfill(json=limits))
    _open(viewer)
    page.set_input_files("#file-input", str(viewer.server.png))
    page.wait_for_selector("#error:not([hidden])")
    assert "this service accepts files up to 1 KB" in (page.text_content("#error") or "")
    assert not any(u.endswith("/classify") for u in viewer.requests)
    page.unroute("**/limits")

    page.route("**/classify", lambda r: r.fulfill(**_problem(422, "not_a_chest_radiograph")))
    page.reload()
    page.wait_for_selector("#limit-hint:not(:empty)")
    page.select_option("#lang-select", "ru")
    page.set_input_files("#file-input", str(viewer.server.png))
    page.wait_for_selector("#error:has-text('не похоже на рентгенограмму грудной клетки')")
    assert "abcdef0123456789" in (page.text_content("#error") or "")
    page.unroute("**/classify")

    # 503 + Retry-After: retried after the stated wait, then explained with the wait.
    busy: list[int] = []
    page.route(
        "**/classify", lambda r: (busy.append(1), r.fulfill(**_problem(503, "overloaded", 1)))
    )
    page.set_input_files("#file-input", str(viewer.server.png))
    page.wait_for_selector("#status:has-text('Сервис занят; повтор через 1 с')")
    page.wait_for_selector("#error:has-text('Повторить можно через 1 с.')")
    assert len(busy) == 3 and "Сервис перегружен." in (page.text_content("#error") or "")
    page.unroute("**/classify")
    viewer.shot("11-busy-ru")

    # The input gate's 'indeterminate' and quality flags, as the result panel shows them.
    real = _classify(viewer.server, viewer.server.png.read_bytes())
    flags = {"flags": ["inverted", "low_contrast"], "ood_score": 1.0, "ood_threshold": 1.5}
    gated = real | {"decision": "indeterminate", "input_quality": flags}
    page.route("**/classify", lambda r: r.fulfill(json=gated))
    page.set_input_files("#file-input", str(viewer.server.png))
    _wait_views(viewer)
    assert page.text_content("#decision") == "Неопределённо"
    shown = page.text_content("#quality") or ""
    assert "инвертированная шкала серого" in shown and "low_contrast" in shown  # unknown: raw code
    assert page.is_hidden("#error")


def test_api_key_stays_in_the_tab_and_travels_as_bearer(viewer: ViewerPage) -> None:
    page = viewer.page
    sent: dict[str, list[str | None]] = {"limits": [], "classify": []}

    def capture(name: str) -> Any:
        def handler(route: Any) -> None:
            sent[name].append(route.request.headers.get("authorization"))
            route.continue_()

        return handler

    page.route("**/limits", capture("limits"))
    page.route("**/classify", capture("classify"))
    _open(viewer)
    assert sent["limits"] == [None]
    page.fill("#api-key", "k-0123456789")
    page.click("#key-save")
    for _ in range(100):
        if len(sent["limits"]) == 2:
            break
        page.wait_for_timeout(50)
    assert sent["limits"][-1] == "Bearer k-0123456789"
    page.set_input_files("#file-input", str(viewer.server.png))
    page.wait_for_selector("#decision:not(:empty)")
    assert sent["classify"] == ["Bearer k-0123456789"]
    assert page.evaluate("() => sessionStorage.getItem('cxr.apiKey')") == "k-0123456789"
    assert page.evaluate("() => localStorage.length") == 0
    assert page.context.cookies() == []
    page.click("#key-clear")
    assert page.evaluate("() => sessionStorage.getItem('cxr.apiKey')") is None
