"""The JSON scaffold of greedy decoding (reporting.greedy), without a model."""

from __future__ import annotations

import json

from reporting.greedy import JsonScaffold, closing_quote, scaffold_for
from reporting.schema import REPORT_JSON_SCHEMA, SECTION_NAMES


def test_the_report_schema_has_a_scaffold_in_section_order() -> None:
    scaffold = scaffold_for(REPORT_JSON_SCHEMA)
    assert scaffold is not None and scaffold == JsonScaffold(SECTION_NAMES)
    values = ["A.", 'B \\"quoted\\".', "C."]  # as written inside JSON strings
    text = scaffold.opening()
    for i, value in enumerate(values):
        text += value + scaffold.after(i)
    # exactly what json.dumps writes, i.e. the worked examples' answers the model imitates
    assert text == json.dumps(dict(zip(SECTION_NAMES, ["A.", 'B "quoted".', "C."], strict=True)))


def test_schemas_whose_json_is_not_fixed_get_no_scaffold() -> None:
    base = REPORT_JSON_SCHEMA
    assert scaffold_for(None) is None
    assert scaffold_for({**base, "additionalProperties": True}) is None
    assert scaffold_for({**base, "required": ["findings"]}) is None
    assert scaffold_for({**base, "required": list(reversed(SECTION_NAMES))}) is None
    numbers = {**base, "properties": {**base["properties"], "findings": {"type": "number"}}}
    assert scaffold_for(numbers) is None
    assert scaffold_for({"type": "array", "items": {"type": "string"}}) is None


def test_closing_quote_skips_escaped_quotes_also_across_tokens() -> None:
    assert closing_quote(b"lung.", False) == (None, False)
    assert closing_quote(b'.",', False) == (1, False)
    assert closing_quote(b'\\"x', False) == (None, False)  # an escaped quote stays inside
    assert closing_quote(b"a\\", False) == (None, True)  # the escape continues in the next token
    assert closing_quote(b'"', True) == (None, False)
    assert closing_quote(b'"}', False) == (0, False)
    assert closing_quote('правую"'.encode(), False) == (12, False)
