"""The report as it is written: grounded sentences while the model is still generating.

The model writes one JSON object (``findings``, ``interpretation``, ``recommendations``, in that
order, enforced by the grammar). :class:`SectionStreamer` receives the raw text piece by piece,
re-parses the growing prefix with pydantic-core's partial JSON mode, and as soon as a sentence
is complete (the next sentence started, or its section closed) runs it through the same
grounding check the final report uses. Three kinds of :class:`StreamEvent`:

- ``draft``: the raw model text, unchecked (for debugging only; the API sends it only on
  request, never to a normal client);
- ``sentence``: one sentence that passed the grounding check, in order, per section;
- ``section``: the final text and provenance of each section, sent when the report is
  complete. A section that does not hold enough supported text is replaced by its template
  there, so a client replaces whatever sentences it showed for that section with this text.

Sentences are judged in the same order and with the same "seen" set as the final check, so
every ``sentence`` event is text the final report keeps (unless the section falls back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic_core import from_json

from reporting.evidence import Evidence, Language
from reporting.grounding import GroundingChecker, GroundingPolicy, Provenance, split_sentences
from reporting.schema import MAX_SECTION_CHARS, SECTION_NAMES, SectionName, Sections

EventKind = Literal["draft", "sentence", "section"]


@dataclass(frozen=True)
class StreamEvent:
    kind: EventKind
    section: SectionName | None
    text: str
    provenance: Provenance | None = None


class SectionStreamer:
    """Turns raw model text into :class:`StreamEvent` s (see the module docstring).

    native: False when the model writes another language than the report's (then only the
    final sections are sent, by :meth:`finish`).
    """

    def __init__(
        self,
        evidence: Evidence,
        language: Language,
        policy: GroundingPolicy,
        emit: Callable[[StreamEvent], None] | None,
        native: bool = True,
    ) -> None:
        self._checker = GroundingChecker(evidence, policy)
        self._language = language
        self._emit = emit
        self._native = native
        self._text = ""
        self._judged: dict[SectionName, int] = {n: 0 for n in SECTION_NAMES}
        self._seen: set[str] = set()
        self._sent_sections: set[SectionName] = set()

    def feed(self, piece: str) -> None:
        """Receive the next piece of raw model text."""
        if self._emit is None:
            return
        self._emit(StreamEvent("draft", None, piece))
        self._text += piece
        self._parse(final=False)

    def _parse(self, final: bool) -> None:
        if not self._native:
            return
        try:
            data = from_json(self._text, allow_partial="trailing-strings")
        except ValueError:
            return  # not JSON (yet, or at all): the final check decides
        if not isinstance(data, dict):
            return
        present = [n for n in SECTION_NAMES if isinstance(data.get(n), str)]
        for i, name in enumerate(present):
            closed = final or i + 1 < len(present)
            self._judge(name, data[name], closed)

    def _judge(self, name: SectionName, text: str, closed: bool) -> None:
        # The same normalisation and cap as parse_sections, so the sentences match.
        sentences = split_sentences(" ".join(text.split())[:MAX_SECTION_CHARS])
        complete = sentences if closed else sentences[:-1]
        for sentence in complete[self._judged[name] :]:
            key = " ".join(sentence.lower().split())
            if key in self._seen:
                continue
            kept = self._checker.judge(sentence, self._language).kept
            if kept is not None:
                self._seen.add(key)
                assert self._emit is not None
                self._emit(StreamEvent("sentence", name, kept))
        self._judged[name] = max(self._judged[name], len(complete))

    def finish(self, sections: Sections, provenance: Mapping[SectionName, Provenance]) -> None:
        """Send the final sections (all of them: the last one closes with the JSON)."""
        if self._emit is None:
            return
        self._parse(final=True)  # the last section's last sentence ends with the output
        for name in SECTION_NAMES:
            if name not in self._sent_sections:
                self._sent_sections.add(name)
                self._emit(StreamEvent("section", name, sections.get(name), provenance[name]))
