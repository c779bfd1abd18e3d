"""``python -m service.openapi [PATH]``: write the OpenAPI contract (default ``openapi.yaml``).

The spec is generated from the app itself, so it cannot drift from the code; a test fails when
the committed file differs from what the app serves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from service.app import create_app
from service.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"


def current_spec() -> dict[str, Any]:
    # No lifespan runs here: building the schema needs no models.
    return create_app(Settings(_env_file=None)).openapi()


def render(spec: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
    return text


def main(argv: list[str]) -> None:
    # argparse so that "--help" prints usage instead of becoming a file named "--help".
    parser = argparse.ArgumentParser(prog="python -m service.openapi", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    path: Path = parser.parse_args(argv).path
    path.write_text(render(current_spec()), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
