"""Shapley attributions with the FakeBackend's transparent scorer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reporting.attribution import ShapleyExplainer, continuation_with_spans, exact_shapley
from reporting.evidence import ZONE_IDS, Evidence, ZoneEvidence
from reporting.fake_backend import FakeBackend
from reporting.schema import Sections
from reporting.templates import render_template

EVIDENCE = Evidence(
    "finding",
    0.96,
    0.5,
    (ZoneEvidence("right_mid", 0.42), ZoneEvidence("left_lower", 0.31)),
)


def test_exact_shapley_on_a_known_game() -> None:
    # v(S) = 2*[a in S] + 3*[a in S and b in S]: phi_a = 2 + 1.5, phi_b = 1.5, phi_c = 0
    n = 3
    values = {
        m: np.array([2.0 * m[0] + 3.0 * (m[0] and m[1])])
        for m in itertools.product((False, True), repeat=n)
    }
    np.testing.assert_allclose(exact_shapley(values, n)[:, 0], [3.5, 1.5, 0.0])


def test_zone_words_are_credited_to_their_zone() -> None:
    zones = EVIDENCE.supported_zones(0.25)
    sections = render_template(EVIDENCE, zones, "en")
    attribution = ShapleyExplainer(FakeBackend("")).explain(EVIDENCE, zones, "en", sections)
    assert attribution.players == ("zone:right_mid", "zone:left_lower", "decision", "confidence")
    assert attribution.method == "exact" and attribution.evaluations == 16
    # efficiency: values add up to v(N) - v({})
    assert sum(attribution.values) == pytest.approx(
        attribution.logprob_full - attribution.logprob_empty
    )
    right = [t for t in attribution.tokens if t.text.strip() == "right"]
    assert right and all(t.values[0] > 0 and t.values[1] == 0 for t in right)
    lower = [t for t in attribution.tokens if t.text.strip() == "lower"]
    assert lower and all(t.values[1] > 0 and t.values[0] == 0 for t in lower)
    assert sum(attribution.section_values["findings"]) > 0
    # tokens tile the scored text, so a UI can highlight spans
    assert all(attribution.text[t.start : t.end] == t.text for t in attribution.tokens)


def test_kernel_shap_approximates_exact_and_is_reproducible() -> None:
    ev = Evidence(
        "finding", 0.9, 0.5, tuple(ZoneEvidence(z, 0.3 + 0.1 * i) for i, z in enumerate(ZONE_IDS))
    )
    zones = ev.supported_zones(0.25)
    sections = render_template(ev, zones, "en")
    exact = ShapleyExplainer(FakeBackend("")).explain(ev, zones, "en", sections)
    assert exact.method == "exact" and len(exact.players) == 8
    kernel = ShapleyExplainer(FakeBackend(""), exact_max_players=4, budget=200, seed=3)
    a = kernel.explain(ev, zones, "en", sections)
    b = kernel.explain(ev, zones, "en", sections)
    assert a.method == "kernel" and a.values == b.values
    assert sum(a.values) == pytest.approx(a.logprob_full - a.logprob_empty)
    np.testing.assert_allclose(a.values, exact.values, atol=0.15 * max(map(abs, exact.values)))


def test_section_spans_point_at_section_text() -> None:
    sections = Sections('Say "hi"', "Б", "c")
    text, spans = continuation_with_spans(sections)
    a, b = spans["findings"]
    assert text[a:b] == 'Say \\"hi\\"'
    a, b = spans["interpretation"]
    assert text[a:b] == "Б"
