"""Grounding check: keep only what the evidence supports; fall back to templates.

For each LLM section the text is split into sentences and every sentence is checked against
the Evidence (see :mod:`reporting.claims`). A sentence is removed when it

- names a zone that is not supported (supported = intensity >= ``min_intensity`` and the
  explanation is not weak),
- contradicts the classifier's decision (normality when the decision is "finding";
  an abnormality when it is "no_finding"; either, when the probability is inside the
  borderline band), or calls the result borderline when it is not,
- says something about the heart the measured cardiothoracic ratio does not support
  ("normal heart size" needs a reliable CTR below 0.5, "enlarged" one of 0.5 or more),
- says Grad-CAM and LIME agree where they do not (every zone it names must be one where both
  are strong; naming none, it speaks of the zones just described, so all of them must be) or
  disagree where they do (or when LIME did not run),
- names a pathology or structure the descriptors say nothing about,
- quotes a number that matches no evidence value,
- is not plain prose (URL, markup), is in the wrong script, repeats an earlier sentence or
  loops on itself.

A sentence that joins clauses with semicolons and breaks a rule in some of them only keeps
the clauses that break none (each clause is judged as a sentence of its own, and what is kept
is judged again as a whole): "The model found changes; this does not rule out disease" keeps
its first half under a finding instead of losing the section to the template.

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
from reporting.evidence import CTR_UPPER_NORMAL, Evidence, Language, ZoneId
from reporting.schema import SECTION_NAMES, SectionName, Sections, is_plain_prose

Provenance = Literal["llm", "llm_filtered", "template"]
RemovalReason = Literal[
    "unsupported_zone",
    "unsupported_heart",
    "unsupported_borderline",
    "unsupported_agreement",
    "contradicts_decision",
    "out_of_scope",
    "unsupported_number",
    "not_plain_prose",
    "wrong_language",
    "duplicate",
    "repetitive",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])")
_CLAUSE_SEP = re.compile(r"\s*;\s+")
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
class Judgement:
    """What may stand of one sentence: ``kept`` (the sentence, its clauses that break no
    rule, or None) and each removed part with (text, reason, detail)."""

    kept: str | None
    removed: tuple[tuple[str, RemovalReason, str], ...] = ()


@dataclass(frozen=True)
class SectionCheck:
    kept: tuple[str, ...]
    removed: tuple[RemovedSentence, ...]
    total: int


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (terminal punctuation followed by whitespace ends one)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _rejoin(clauses: list[str], sentence: str) -> str:
    """Kept clauses as one sentence: capitalised, ending as ``sentence`` ends."""
    text = "; ".join(clauses).rstrip(" ,;:")
    end = sentence[-1] if sentence[-1] in ".!?" else "."
    text = text if text[-1] in ".!?" else text + end
    return text[0].upper() + text[1:]


def _evidence_numbers(evidence: Evidence) -> list[float]:
    values = [evidence.probability_finding, evidence.confidence, evidence.threshold]
    # "above 0.99" / "below 0.01": the bound the text shows instead of a rounded 1.00 / 0.00
    values += [min(v, 0.99) for v in values[:2]] + [max(v, 0.01) for v in values[:2]]
    if evidence.band is not None:
        values += list(evidence.band)
    for z in evidence.zones:
        values += [z.intensity, z.fused]
        values += [v for v in (z.gradcam, z.lime_weight) if v is not None]
    m = evidence.measurements
    if m is not None:
        if m.ctr is not None:
            values += [m.ctr, CTR_UPPER_NORMAL]
        values += [v for v in (m.right_lung_share, m.left_lung_share, m.lung_ratio) if v]
    return values


def _heart_violation(claims: Claims, evidence: Evidence) -> str | None:
    """Why a cardiac claim is unsupported, or None. Size claims need a reliable CTR on the
    matching side of 0.5; naming the ratio needs a measured one; anything else (borders,
    shape) nothing here measures."""
    m = evidence.measurements
    for claim in claims.cardiac:
        if claim == "other":
            return "a statement about the heart that no measurement supports"
        if m is None or m.ctr is None:
            return "no cardiothoracic ratio was measured"
        if claim == "normal" and m.heart_normal is not True:
            return "normal heart size needs a reliable CTR below 0.5"
        if claim == "enlarged" and m.heart_normal is not False:
            return "an enlarged heart needs a reliable CTR of 0.5 or more"
        if claim == "close" and not m.ctr_close:
            return "the CTR is not within the margin around 0.5"
        if claim == "unreliable" and m.ctr_reliable:
            return "the CTR is reliable on this image"
    return None


def _agreement_violation(
    claims: Claims, supported: frozenset[ZoneId], agreed: frozenset[ZoneId], lime_ran: bool
) -> str | None:
    """``supported``: zones the report may name; ``agreed``: those where both maps are strong."""
    if not claims.agreements:
        return None
    if not lime_ran:
        return "LIME did not run"
    for statement in claims.agreements:
        if statement.claim == "disagree":
            if supported and supported <= agreed:
                return "the maps agree on every zone described"
            continue
        if not agreed:
            return "the maps agree on no zone"
        if not statement.zone_requirements and not supported <= agreed:
            return "the maps agree on only some of the zones described"
        for req in statement.zone_requirements:
            if not req & agreed:
                return f"the maps do not agree on {','.join(sorted(req))}"
    return None


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
        self._agreed = frozenset(z.zone_id for z in evidence.agreed_zones(policy.min_intensity))
        self._lime_ran = any(z.lime_weight is not None for z in evidence.zones)
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
        heart = _heart_violation(claims, self.evidence)
        if heart is not None:
            return "unsupported_heart", heart
        agreement = _agreement_violation(claims, self.supported, self._agreed, self._lime_ran)
        if agreement is not None:
            return "unsupported_agreement", agreement
        if claims.states_borderline and not self.evidence.indeterminate:
            return "unsupported_borderline", "the probability is outside the borderline band"
        finding = self.evidence.decision == "finding"
        if self.evidence.indeterminate and (claims.states_normal or claims.states_abnormal):
            return "contradicts_decision", "states a definite result; the result is borderline"
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

    def judge(self, sentence: str, language: Language) -> Judgement:
        """``sentence`` whole when it breaks no rule; else, when semicolons join clauses,
        the clauses that break none, if the kept text passes as a whole; else nothing."""
        found = self.violation(sentence, language)
        if found is None:
            return Judgement(sentence)
        clauses = _CLAUSE_SEP.split(sentence)
        if len(clauses) > 1:
            verdicts = [(c, self.violation(c, language)) for c in clauses]
            kept = [c for c, v in verdicts if v is None]
            if kept and len(kept) < len(clauses):
                text = _rejoin(kept, sentence)
                if self.violation(text, language) is None:
                    removed = tuple((c, *v) for c, v in verdicts if v is not None)
                    return Judgement(text, removed)
        return Judgement(None, ((sentence, *found),))

    def states_decision(self, sentence: str) -> bool:
        """True when ``sentence`` affirms the classifier's decision (inside the borderline
        band: that the result is borderline)."""
        claims = extract_claims(sentence)
        if self.evidence.indeterminate:
            return claims.states_borderline
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
            if key in seen:
                judged = Judgement(None, ((sentence, "duplicate", "repeats an earlier sentence"),))
            else:
                judged = self.judge(sentence, language)
            if judged.kept is not None:
                kept.append(judged.kept)
                seen.add(key)
            removed += [RemovedSentence(name, *part) for part in judged.removed]
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
