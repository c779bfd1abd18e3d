"""Grounding check: keep only what the evidence supports; fall back to templates.

For each LLM section the text is split into sentences and every sentence is checked against
the Evidence (see :mod:`reporting.claims`). A sentence is removed when it

- names a zone that is not supported (supported = intensity >= ``min_intensity`` and the
  explanation is not weak),
- contradicts the classifier's decision (normality when the decision is "finding";
  an abnormality when it is "no_finding"),
- names a pathology or structure the descriptors say nothing about,
- quotes a number that matches no evidence value,
- is not plain prose (URL, markup), is in the wrong script, repeats an earlier sentence or
  loops on itself.

A section whose survivors are too few (no sentence, too short, too small a fraction) or,
for the interpretation, that no longer states the decision, is replaced by the deterministic
template rendering of the same evidence. Provenance per section says which path ran.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from reporting.claims import Claims, extract_claims
from reporting.evidence import Evidence, Language, ZoneId
from reporting.schema import SECTION_NAMES, SectionName, Sections, is_plain_prose

Provenance = Literal["llm", "llm_filtered", "template"]
RemovalReason = Literal[
    "unsupported_zone",
    "contradicts_decision",
    "out_of_scope",
    "unsupported_number",
    "not_plain_prose",
    "wrong_language",
    "duplicate",
    "repetitive",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])")
_CYRILLIC = re.compile(r"[а-яё]", re.I)
_LETTERS = re.compile(r"[^\W\d_]+")
_LATIN_WORD = re.compile(r"\b[a-z]{4,}\b", re.I)


@dataclass(frozen=True)
class GroundingPolicy:
    """Thresholds of the check. Defaults are deliberately strict."""

    min_intensity: float = 0.25
    number_tolerance: float = 0.006
    min_kept_sentences: int = 1
    min_kept_chars: int = 30
    min_kept_fraction: float = 0.34


@dataclass(frozen=True)
class RemovedSentence:
    section: SectionName
    text: str
    reason: RemovalReason
    detail: str


@dataclass(frozen=True)
class SectionCheck:
    kept: tuple[str, ...]
    removed: tuple[RemovedSentence, ...]
    total: int


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (terminal punctuation followed by whitespace ends one)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _evidence_numbers(evidence: Evidence) -> list[float]:
    values = [evidence.probability_finding, evidence.confidence, evidence.threshold]
    for z in evidence.zones:
        values += [z.intensity, z.fused]
        if z.lime_weight is not None:
            values.append(abs(z.lime_weight))
    return values


def _repetitive(sentence: str) -> bool:
    """A 4-word phrase (letters only, so listed values do not count) occurring 3+ times."""
    words = _LETTERS.findall(sentence.lower())
    grams = Counter(zip(words, words[1:], words[2:], words[3:], strict=False))
    return bool(grams) and max(grams.values()) >= 3


def _wrong_script(sentence: str, language: Language) -> bool:
    if language == "en":
        return _CYRILLIC.search(sentence) is not None
    return _CYRILLIC.search(sentence) is None or len(_LATIN_WORD.findall(sentence)) > 3


class GroundingChecker:
    """Checks sentences against one Evidence under one policy."""

    def __init__(self, evidence: Evidence, policy: GroundingPolicy) -> None:
        self.evidence = evidence
        self.policy = policy
        zones = evidence.supported_zones(policy.min_intensity)
        self.supported: frozenset[ZoneId] = frozenset(z.zone_id for z in zones)
        self._numbers = _evidence_numbers(evidence)

    def _number_ok(self, value: float) -> bool:
        return any(abs(value - n) <= self.policy.number_tolerance for n in self._numbers)

    def violation(self, sentence: str, language: Language) -> tuple[RemovalReason, str] | None:
        """The first rule ``sentence`` breaks, with a short detail, or None."""
        if not is_plain_prose(sentence):
            return "not_plain_prose", "URL, markup or template syntax"
        if _wrong_script(sentence, language):
            return "wrong_language", f"expected {language}"
        if _repetitive(sentence):
            return "repetitive", "a four-word phrase repeats three or more times"
        claims: Claims = extract_claims(sentence)
        for req in claims.zone_requirements:
            if not req & self.supported:
                return "unsupported_zone", ",".join(sorted(req))
        finding = self.evidence.decision == "finding"
        if finding and claims.states_normal:
            return "contradicts_decision", "states normality; the decision is finding"
        if not finding and claims.states_abnormal:
            return "contradicts_decision", "states an abnormality; the decision is no_finding"
        if claims.out_of_scope:
            return "out_of_scope", ",".join(claims.out_of_scope)
        for value in (*claims.decimals, *claims.percents):
            if not self._number_ok(value):
                return "unsupported_number", f"{value:g}"
        if claims.integers:
            return "unsupported_number", f"{claims.integers[0]}"
        return None

    def states_decision(self, sentence: str) -> bool:
        """True when ``sentence`` affirms the classifier's decision."""
        claims = extract_claims(sentence)
        if self.evidence.decision == "finding":
            return claims.states_abnormal and not claims.states_normal
        return claims.states_normal and not claims.states_abnormal

    def check_section(
        self, name: SectionName, text: str, language: Language, seen: set[str]
    ) -> SectionCheck:
        """Filter one section. ``seen`` (normalised sentences so far) is updated in place."""
        kept: list[str] = []
        removed: list[RemovedSentence] = []
        sentences = split_sentences(text)
        for sentence in sentences:
            key = " ".join(sentence.lower().split())
            found: tuple[RemovalReason, str] | None = (
                ("duplicate", "repeats an earlier sentence") if key in seen else None
            )
            found = found or self.violation(sentence, language)
            if found is None:
                kept.append(sentence)
                seen.add(key)
            else:
                removed.append(RemovedSentence(name, sentence, found[0], found[1]))
        return SectionCheck(tuple(kept), tuple(removed), len(sentences))

    def enough(self, name: SectionName, check: SectionCheck) -> bool:
        """Whether a filtered section can stand on its own."""
        p = self.policy
        if len(check.kept) < p.min_kept_sentences:
            return False
        if sum(len(s) for s in check.kept) < p.min_kept_chars:
            return False
        if check.total and len(check.kept) / check.total < p.min_kept_fraction:
            return False
        return name != "interpretation" or any(self.states_decision(s) for s in check.kept)

    def count_violations(self, sections: Sections, language: Language) -> int:
        """Unsupported sentences left in final text (0 for any report this package emits)."""
        return sum(
            self.violation(s, language) is not None
            for name in SECTION_NAMES
            for s in split_sentences(sections.get(name))
        )
