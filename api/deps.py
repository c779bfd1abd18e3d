"""Dependency aliases: lifespan state injected into thin handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from inference.operating import Population
from service.explain_usecase import ExplainService
from service.interop_usecase import InteropService
from service.readiness import Readiness
from service.registry import ModelRegistry
from service.report_usecase import ReportService
from service.settings import Settings
from service.usecases import AnalysisService


def get_analysis(request: Request) -> AnalysisService:
    return request.state.analysis  # type: ignore[no-any-return]


def get_registry(request: Request) -> ModelRegistry:
    return request.state.registry  # type: ignore[no-any-return]


def get_readiness(request: Request) -> Readiness:
    return request.state.readiness  # type: ignore[no-any-return]


AnalysisDep = Annotated[AnalysisService, Depends(get_analysis)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]


def get_report(request: Request) -> ReportService:
    return request.state.report  # type: ignore[no-any-return]


ReportDep = Annotated[ReportService, Depends(get_report)]


def get_explain(request: Request) -> ExplainService:
    return request.state.explain  # type: ignore[no-any-return]


ExplainDep = Annotated[ExplainService, Depends(get_explain)]


PopulationQuery = Annotated[
    Population | None,
    Query(
        description="Operating point to apply: adult or pediatric. Default: from DICOM "
        "PatientAge when present (under 18 years: pediatric), else the calibration's default "
        "population (adult for the shipped model)."
    ),
]


def get_settings(request: Request) -> Settings:
    return request.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_interop(request: Request) -> InteropService:
    return request.state.interop  # type: ignore[no-any-return]


InteropDep = Annotated[InteropService, Depends(get_interop)]
