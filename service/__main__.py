"""``python -m service [--host H] [--port P]``: serve the API with the shipped weights."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address (default CXR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default CXR_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The access log would print query strings; the audit logger records what ops need.
        access_log=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
