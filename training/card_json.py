"""A MODEL_CARD.md section rendered from its JSON record, or the line that says it was not made."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def card_section(
    weights: Path, name: str, what: str, step: str, render: Callable[[dict[str, Any]], str]
) -> str:
    """``render`` of ``weights/<name>``, or an italic note that ``what`` was not run in this
    build (with the ``python -m training <step>`` that makes it)."""
    path = weights / name
    if not path.exists():
        return f"_{what} not run in this build (`python -m training {step}`)._"
    return render(json.loads(path.read_text(encoding="utf-8")))
