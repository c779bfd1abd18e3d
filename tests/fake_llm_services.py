"""An app's report and interop services rebuilt around a fake LLM, for API tests that need a
report without a real model (the fake records its prompts)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from api.deps import get_interop, get_report
from reporting.fake_backend import FakeBackend
from service.interop_usecase import InteropService
from service.report_usecase import ReportService, build_report_service

REPLY = json.dumps(
    {
        "findings": "There is increased opacity in the right lower zone.",
        "interpretation": "The appearance is consistent with an abnormality.",
        "recommendations": "Radiologist review is recommended.",
    }
)


class Swap:
    """Dependency overrides that build the report and interop services once, lazily, from the
    app's own (so they share its registry, gates and settings) with ``backend`` as the LLM."""

    def __init__(self, backend: FakeBackend | None = None) -> None:
        self.backend = backend or FakeBackend(REPLY)
        self.report: ReportService | None = None
        self.interop: InteropService | None = None

    def get_report(self, request: Request) -> ReportService:
        if self.report is None:
            base: ReportService = request.state.report
            self.report = build_report_service(
                base.registry, base.explain, base.settings, self.backend
            )
        return self.report

    def get_interop(self, request: Request) -> InteropService:
        if self.interop is None:
            i: InteropService = request.state.interop
            self.interop = InteropService(i.analysis, i.explain, self.get_report(request), i.pacs)
        return self.interop

    def install(self, app: Any) -> None:
        app.dependency_overrides[get_report] = self.get_report
        app.dependency_overrides[get_interop] = self.get_interop
