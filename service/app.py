"""Composition root: ``create_app(settings)`` builds the FastAPI application.

The only module that imports ``api``. Nothing is loaded here: models load in the lifespan.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.middleware import BodyDeadline, RequestContextMiddleware
from api.problems import install_problem_handlers
from api.routes import analysis, explain, health, report
from api.schemas.common import Problem
from service.lifespan import make_lifespan
from service.settings import Settings

API_DESCRIPTION = """\
Chest X-ray analysis: anatomy segmentation, calibrated finding / no-finding classification,
visual explanations and structured reports.

**Decision support only, never a diagnosis.** Every response must be reviewed by a physician.
Errors use RFC 9457 `application/problem+json` with a stable `code`.
"""


def _openapi_factory(app: FastAPI) -> Any:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="cxr-xai",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=make_lifespan(settings),
    )
    install_problem_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.limits.max_upload_bytes,
        body_deadline=BodyDeadline(
            settings.limits.body_timeout_s, settings.limits.body_min_rate_bytes_s
        ),
    )
    for module in (health, analysis, report, explain):
        app.include_router(module.router)
    app.openapi = _openapi_factory(app)  # type: ignore[method-assign]
    return app
