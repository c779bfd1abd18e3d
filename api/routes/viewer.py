"""The physician viewer (static files in ``api/viewer``) and the API docs, all served offline.

The viewer is plain HTML, CSS and ES modules: no build step, nothing from a CDN. It is a client
of the public API only, so every call it makes is one a hospital frontend can make too. Its
responses carry a strict Content-Security-Policy (no inline script or style, network access to
this origin only). Swagger UI and ReDoc load their assets from the ``fastapi-offline`` wheel
instead of a CDN, so ``/docs`` works on a network without internet access.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

VIEWER_PREFIX = "/viewer"
DOCS_ASSETS_PREFIX = "/docs-assets"

VIEWER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)
# Swagger UI and ReDoc start from an inline script and inject styles, so their pages cannot
# be as strict as the viewer's; they still load and connect to this origin only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)
_COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def page_headers(csp: str) -> dict[str, str]:
    return {"content-security-policy": csp, **_COMMON_HEADERS}


class WithHeaders:
    """ASGI wrapper that adds fixed headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get(VIEWER_PREFIX)
async def viewer_entry() -> RedirectResponse:
    # Relative, so the redirect neither trusts the Host header nor breaks behind a path prefix.
    return RedirectResponse("viewer/", status_code=307)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="cxr-xai API",
        swagger_js_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png",
        # No badge that asks validator.swagger.io about our spec.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers.update(page_headers(DOCS_CSP))
    return page


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title="cxr-xai API",
        redoc_js_url=f"{DOCS_ASSETS_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(page_headers(DOCS_CSP))
    return page


def viewer_dir() -> Path:
    """The viewer's static files, shipped as package data of ``api``."""
    return Path(str(files("api") / "viewer"))


def docs_assets_dir() -> Path:
    """Swagger UI and ReDoc bundles (with their licences) from the fastapi-offline wheel."""
    return Path(str(files("fastapi_offline") / "static"))


def install_viewer(app: FastAPI) -> None:
    """Routes for /, /viewer/, /docs and /redoc, and the two static folders."""
    app.include_router(router)
    viewer_headers = page_headers(VIEWER_CSP) | {"cache-control": "no-cache"}
    app.mount(
        VIEWER_PREFIX,
        WithHeaders(StaticFiles(directory=viewer_dir(), html=True), viewer_headers),
        name="viewer",
    )
    docs_headers = page_headers(DOCS_CSP) | {"cache-control": "public, max-age=86400"}
    app.mount(
        DOCS_ASSETS_PREFIX,
        WithHeaders(StaticFiles(directory=docs_assets_dir()), docs_headers),
        name="docs-assets",
    )
