"""Grounded sentences while the model writes (reporting/stream.py) with a scripted backend."""

from __future__ import annotations

import json
import threading

import pytest

from reporting.errors import GenerationCancelled
from reporting.evidence import Evidence, ZoneEvidence
from reporting.fake_backend import FakeBackend
from reporting.report import ReportGenerator
from reporting.stream import StreamEvent

EVIDENCE = Evidence("finding", 0.93, 0.7, (ZoneEvidence("right_lower", 0.6),))
REPLY = {
    "findings": "Opacity in the right lower zone. A left pleural effusion. Intensity 0.60.",
    "interpretation": "The appearance suggests an abnormality in the right lower zone.",
    "recommendations": "Radiologist review is recommended.",
}


def _run(reply: dict[str, str]) -> tuple[list[StreamEvent], object]:
    events: list[StreamEvent] = []
    report = ReportGenerator(FakeBackend(json.dumps(reply))).generate(
        EVIDENCE, "en", on_event=events.append
    )
    return events, report


def test_only_sentences_that_pass_the_check_are_streamed_in_order() -> None:
    events, report = _run(REPLY)
    sentences = [(e.section, e.text) for e in events if e.kind == "sentence"]
    assert sentences == [
        ("findings", "Opacity in the right lower zone."),
        ("findings", "Intensity 0.60."),
        ("interpretation", "The appearance suggests an abnormality in the right lower zone."),
        ("recommendations", "Radiologist review is recommended."),
    ]
    assert all("effusion" not in e.text for e in events if e.kind != "draft")
    # the sentence events come before the first final section, which follow in order
    kinds = [e.kind for e in events if e.kind != "draft"]
    assert kinds == ["sentence"] * 4 + ["section"] * 3
    finals = {e.section: e.text for e in events if e.kind == "section"}
    assert finals == {n: report.sections.get(n) for n in finals}  # type: ignore[attr-defined]


def test_a_sentence_is_streamed_without_its_rule_breaking_clause() -> None:
    """What streams is what the final report keeps: the clause naming what the evidence
    says nothing about is cut from its sentence in both."""
    reply = {
        **REPLY,
        "interpretation": "The model found an abnormality in the right lower zone; a small "
        "pleural effusion is present.",
    }
    events, report = _run(reply)
    streamed = [e.text for e in events if e.kind == "sentence" and e.section == "interpretation"]
    assert streamed == ["The model found an abnormality in the right lower zone."]
    assert report.sections.interpretation == streamed[0]  # type: ignore[attr-defined]
    assert report.provenance["interpretation"] == "llm_filtered"  # type: ignore[attr-defined]


def test_raw_text_arrives_as_draft_pieces() -> None:
    events, report = _run(REPLY)
    drafts = "".join(e.text for e in events if e.kind == "draft")
    assert drafts == report.generation.text  # type: ignore[attr-defined]
    assert len([e for e in events if e.kind == "draft"]) > 10  # word by word, not at once


def test_a_section_that_falls_back_is_replaced_by_its_template() -> None:
    reply = {**REPLY, "interpretation": "Radiologist review is advised."}  # states no decision
    events, report = _run(reply)
    final = next(e for e in events if e.kind == "section" and e.section == "interpretation")
    assert final.provenance == "template"
    assert final.text == report.sections.interpretation  # type: ignore[attr-defined]


def test_cancel_stops_generation_between_pieces() -> None:
    cancel = threading.Event()
    backend = FakeBackend(json.dumps(REPLY))
    seen: list[StreamEvent] = []

    def on_event(e: StreamEvent) -> None:
        seen.append(e)
        if e.kind == "sentence":
            cancel.set()  # the client left after the first sentence

    with pytest.raises(GenerationCancelled):
        ReportGenerator(backend).generate(EVIDENCE, "en", on_event=on_event, cancel=cancel)
    assert backend.cancelled == 1 and backend.completed == 0
    assert [e.kind for e in seen if e.kind != "draft"] == ["sentence"]
