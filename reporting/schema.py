"""The structured output contract of the LLM: three sections, always present.

The schema is passed to the backend as a grammar / response_format so generation cannot
omit a section; :func:`parse_sections` re-validates anyway (a remote server may ignore the
constraint, and max_tokens can truncate JSON). Text that is not plain prose (URLs, markup,
code fences) is rejected here, before grounding.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

SectionName = Literal["findings", "interpretation", "recommendations"]
SECTION_NAMES: tuple[SectionName, ...] = get_args(SectionName)
MAX_SECTION_CHARS = 1200

# No maxLength here: llama.cpp expands maxLength into one nested optional rule per character
# and refuses (then crashes on) a 1200-deep grammar. Length is bounded by max_tokens during
# generation and by MAX_SECTION_CHARS in parse_sections.
REPORT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: {"type": "string", "minLength": 1} for name in SECTION_NAMES},
    "required": list(SECTION_NAMES),
    "additionalProperties": False,
}

_UNSAFE = re.compile(r"(https?://|www\.|<[a-zA-Z/!]|```|\{\{|\[[^\]]*\]\()", re.IGNORECASE)


class OutputFormatError(ValueError):
    """The model's output is not a JSON object with three string sections."""


@dataclass(frozen=True)
class Sections:
    findings: str
    interpretation: str
    recommendations: str

    def get(self, name: SectionName) -> str:
        return str(getattr(self, name))

    def to_json(self) -> str:
        """Canonical JSON (the form the model was asked to produce)."""
        return json.dumps(
            {n: self.get(n) for n in SECTION_NAMES}, ensure_ascii=False, separators=(", ", ": ")
        )


def parse_sections(text: str) -> Sections:
    """Parse model output into Sections. Raises OutputFormatError on any contract breach."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputFormatError(f"output is not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise OutputFormatError("output is not a JSON object")
    values: dict[str, str] = {}
    for name in SECTION_NAMES:
        value = data.get(name)
        if not isinstance(value, str):
            raise OutputFormatError(f"section missing or not a string: {name}")
        values[name] = " ".join(value.split())[:MAX_SECTION_CHARS]
    return Sections(**values)


def is_plain_prose(sentence: str) -> bool:
    """False for sentences carrying URLs, HTML/markup, code fences or template syntax."""
    return _UNSAFE.search(sentence) is None
