"""A real uvicorn server with the shipped weights, and Debian's chromium driven by Playwright.

Playwright's own browser download (`playwright install`) is never used: the tests launch
`/usr/bin/chromium` (scripts/system_deps.sh installs it) through `executable_path`. Without
chromium, Playwright, the shipped weights or ../shared the tests skip, except under CI, where
the same absence fails them. The report's language model is a scripted fake (its reply carries
markup, to check that the viewer shows model text as text); everything else is the real service.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import Request
from PIL import Image

from api.deps import get_report
from reporting.fake_backend import FakeBackend
from reporting.llm import Message
from service.app import create_app
from service.report_usecase import ReportService, build_report_service
from service.settings import DEFAULT_WEIGHTS, ReportSettings, Settings
from tests.factories import REPO, SHARED
from tests.live_server import serve_in_thread

CHROMIUM = Path(os.environ.get("CXR_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "viewer"
XSS = '<img src=x onerror="window.__xss=1">'
IMAGE = "images/jsrt/JPCLN001.jpg"


def require(condition: bool, reason: str) -> None:
    """Skip without the tool; under CI (which installs everything) fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def hostile_reply(messages: Sequence[Message], schema: Mapping[str, Any] | None) -> str:
    """A model that writes markup into its findings (the viewer must show it as text)."""
    return json.dumps(
        {
            "findings": f"Increased opacity is noted. {XSS} The heart is normal in size.",
            "interpretation": "The appearance is consistent with an abnormality.",
            "recommendations": "Radiologist review is recommended.",
        }
    )


class FakeReports:
    """Dependency override: the app's ReportService around the scripted fake model."""

    def __init__(self) -> None:
        self._service: ReportService | None = None

    def __call__(self, request: Request) -> ReportService:
        if self._service is None:
            base: ReportService = request.state.report
            self._service = build_report_service(
                base.registry, base.explain, base.settings, FakeBackend(hostile_reply)
            )
        return self._service


@dataclass
class LiveServer:
    base_url: str
    png: Path
    origin: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing (Debian package chromium)")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    require((SHARED / IMAGE).is_file(), "../shared/data/cxr is not present")
    require((DEFAULT_WEIGHTS / "classifier.manifest.json").is_file(), "shipped weights missing")

    png = tmp_path_factory.mktemp("viewer") / "chest.png"
    Image.open(SHARED / IMAGE).convert("L").save(png)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        report=ReportSettings(backend="disabled", lime_samples=50),  # type: ignore[call-arg]
    )
    app = create_app(settings)
    app.dependency_overrides[get_report] = FakeReports()
    with serve_in_thread(app, start_timeout_s=120, access_log=False) as port:
        yield LiveServer(f"http://127.0.0.1:{port}", png)


@pytest.fixture(scope="module")
def browser(live_server: LiveServer) -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an asyncio loop running in this thread while it
    # is open, and later tests that call asyncio.run() would fail.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield b
        finally:
            b.close()


@dataclass
class ViewerPage:
    page: Any
    server: LiveServer
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp_blocked: list[str] = field(default_factory=list)
    # Third-party pages (ReDoc's hard-wired logo) may try; the CSP must stop them. The
    # viewer itself may not even try.
    allow_csp_blocked: bool = False

    def foreign_requests(self) -> list[str]:
        stopped = set(self.csp_blocked) if self.allow_csp_blocked else set()
        return [
            u
            for u in self.requests
            if not u.startswith(self.server.origin + "/")
            and not u.startswith(("blob:", "data:"))
            and u not in stopped
        ]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture()
def viewer(browser: Any, live_server: LiveServer) -> Iterator[ViewerPage]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    vp = ViewerPage(page, live_server)
    page.on("request", lambda r: vp.requests.append(r.url))
    page.on("pageerror", lambda e: vp.errors.append(str(e)))
    page.on(
        "requestfailed",
        lambda r: (
            (r.failure or "").lower() in ("csp", "net::err_blocked_by_csp")
            and vp.csp_blocked.append(r.url)
        ),
    )
    try:
        yield vp
        # Every test: nothing left the service's origin, and no script error happened.
        assert vp.foreign_requests() == []
        assert vp.errors == []
    finally:
        context.close()
