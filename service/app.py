"""Composition root: ``create_app(settings)`` builds the FastAPI application.

The only module that imports ``api``. Nothing is loaded here: models load in the lifespan.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.routing import Match
from starlette.types import Scope

from api.job_kinds import JOB_KINDS
from api.middleware import BodyDeadline, RequestContextMiddleware, is_public
from api.problems import install_problem_handlers, problem_responses
from api.routes import analysis, explain, health, metrics, report
from api.routes.viewer import install_viewer
from api.schemas.common import Problem
from api.server_protocol import HeadLimits, guarded_protocol
from service.auth import ApiKeyAuthenticator, FailureThrottle, parse_key_specs
from service.lifespan import make_lifespan, refusing_gate
from service.metrics import Metrics
from service.settings import AuthSettings, CorsSettings, Settings

API_DESCRIPTION = """\
Chest X-ray analysis: anatomy segmentation, calibrated finding / no-finding classification,
visual explanations and structured reports.

**Decision support only, never a diagnosis.** Every response must be reviewed by a physician.
Errors use RFC 9457 `application/problem+json` with a stable `code`.
"""


SECURITY_SCHEMES = {
    "bearerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "API key as a bearer token (required when the deployment sets "
        "CXR_AUTH__API_KEYS).",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _document_security(schema: dict[str, Any]) -> None:
    """Every operation except the health probes takes an API key (either scheme) and may answer
    401 (missing or wrong key) or 429 (too many failed attempts)."""
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if is_public(path):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearerKey": []}, {"apiKeyHeader": []}]
            operation.setdefault("responses", {}).update(
                {str(k): v for k, v in problem_responses(401, 429).items()}
            )


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
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        _document_security(schema)
        app.openapi_schema = schema
        return schema

    return openapi


def make_authenticator(auth: AuthSettings) -> ApiKeyAuthenticator | None:
    """None when no keys are configured (anonymous service: loopback or behind a proxy)."""
    if not auth.api_keys:
        return None
    throttle = FailureThrottle(auth.max_failures, auth.failure_window_s)
    return ApiKeyAuthenticator(parse_key_specs(auth.api_keys), throttle)


def add_cors(app: FastAPI, cors: CorsSettings) -> None:
    """CORS for frontends served from other origins; nothing at all when none is configured.

    Added after the request-context middleware, so it wraps it: preflights (which carry no
    credentials) are answered here, and refusals (401, 413, 503) still carry CORS headers so a
    browser app can read their problem+json and Retry-After.
    """
    if not cors.allow_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors.allow_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
        expose_headers=["Retry-After", "X-Request-ID", "Location", "WWW-Authenticate"],
        allow_credentials=False,  # keys travel in a header, never in cookies
        max_age=cors.max_age_s,
    )


def route_finder(app: FastAPI) -> Callable[[Scope], str]:
    """The template of the route a request would reach, for requests refused before routing
    (401, 413, early 503), so their metrics land on the route and not on a raw path."""

    def route_of(scope: Scope) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"

    return route_of


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted_hosts(settings: Settings) -> frozenset[str] | None:
    """Host names to answer to, or None for any (see ``Settings.trusted_hosts``)."""
    configured = settings.trusted_hosts
    if configured is not None:
        return None if "*" in configured else frozenset(h.lower() for h in configured)
    if is_loopback(settings.host) and not settings.auth.api_keys:
        return LOOPBACK_NAMES
    return None


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments that enforce the HTTP-level limits (review F3, F5, F9):
    bounded request heads (431/408 problem+json, see api/server_protocol.py), a connection
    cap, and forwarded headers believed only from configured proxies (uvicorn's default
    trusts X-Forwarded-For from 127.0.0.1, so any local process could pick its address)."""
    lim = settings.limits
    head = HeadLimits(
        lim.max_header_bytes,
        lim.max_headers,
        lim.header_timeout_s,
        settings.concurrency.retry_after_s,
    )
    proxies = settings.trusted_proxies
    return {
        "http": guarded_protocol(head),
        "limit_concurrency": lim.max_connections,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": list(proxies) if proxies else None,
        # The access log would print query strings; the audit logger records what ops need.
        "access_log": False,
        "timeout_graceful_shutdown": 30,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app_metrics = Metrics()
    app = FastAPI(
        title="cxr-xai",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=make_lifespan(settings, JOB_KINDS, app_metrics),
        docs_url=None,  # served offline by api.routes.viewer
        redoc_url=None,
        # No 307 to http://<client's Host>/path/ (an open redirect with a forged Host, F8).
        redirect_slashes=False,
    )
    install_problem_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        authenticator=make_authenticator(settings.auth),
        admission=refusing_gate,
        max_body_bytes=settings.limits.max_upload_bytes,
        body_deadline=BodyDeadline(
            settings.limits.body_timeout_s, settings.limits.body_min_rate_bytes_s
        ),
        metrics=app_metrics,
        route_of=route_finder(app),
        trusted_hosts=trusted_hosts(settings),
    )
    add_cors(app, settings.cors)
    for module in (health, analysis, report, explain, metrics):
        app.include_router(module.router)
    install_viewer(app)
    app.openapi = _openapi_factory(app)  # type: ignore[method-assign]
    return app
