"""``python -m service [--host H] [--port P]``: serve the API with the shipped weights."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from service.app import create_app, is_loopback, server_options
from service.settings import Settings


def anonymous_exposure(settings: Settings) -> str | None:
    """Why serving would expose an unauthenticated API, or None when it is fine."""
    auth = settings.auth
    if auth.api_keys or auth.allow_anonymous or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve without authentication on {settings.host}: set CXR_AUTH__API_KEYS "
        "(create one with `python -m service.keygen NAME`) or, behind an authenticating proxy, "
        "CXR_AUTH__ALLOW_ANONYMOUS=true"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address (default CXR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default CXR_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    refusal = anonymous_exposure(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        **server_options(settings),
    )


if __name__ == "__main__":
    main()
