"""The JSON scaffold and the drafting of greedy decoding (reporting.greedy), without a model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from reporting.greedy import (
    GreedyConfig,
    JsonScaffold,
    _Decoder,
    closing_quote,
    lookup_draft,
    scaffold_for,
)
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


def test_lookup_draft_copies_what_followed_the_latest_earlier_occurrence() -> None:
    context = np.array([5, 1, 2, 7, 8, 9, 1, 2, 3, 4, 0, 1, 2], dtype=np.intc)
    # "1 2" last occurred at 6..7 (before the tail), followed by 3 4 0
    assert lookup_draft(context, 3) == [3, 4, 0]
    assert lookup_draft(context, 10) == [3, 4, 0, 1, 2]  # up to the end of the context
    assert lookup_draft(context, 0) == []
    assert lookup_draft(np.array([1, 2, 3], dtype=np.intc), 4) == []  # no earlier occurrence
    assert lookup_draft(np.array([9, 1, 2, 3, 1, 2], dtype=np.intc), 2, ngram=3) == []


def test_a_draft_is_config_draft_tokens_fewer_only_at_the_end() -> None:
    """Always the same length (a batch of 4 is what llama.cpp's repacked Q4_K product reads
    at the cost of ~2 single steps: module docstring), cut by the room left."""
    decoder = _Decoder.__new__(_Decoder)
    decoder.config = GreedyConfig(10, draft=3)
    decoder.llm = SimpleNamespace(input_ids=np.array([5, 1, 2, 3, 4, 0, 9, 1], np.intc), n_tokens=8)
    decoder.generated = [7] * 5
    assert decoder.draft(2) == [3, 4, 0]  # "1 2" occurred before, followed by 3 4 0
    decoder.generated = [7] * 8
    assert decoder.draft(2) == [3, 4]  # two tokens of room left
    decoder.config = GreedyConfig(10, draft=0)
    assert decoder.draft(2) == []
