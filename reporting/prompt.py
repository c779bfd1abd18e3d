"""Prompt construction from Evidence only.

The prompt is a pure function of (Evidence, language, included descriptors, template): no
request text, file name or DICOM tag can reach it, which is what closes the prompt-injection
path. The template text is versioned and hashed so a report can state exactly which prompt
produced it.

Descriptors ("players" for attributions) are the prompt's independent facts: one per
mentioned zone (``zone:<zone_id>``), the decision (``decision``) and the confidence
(``confidence``). Leaving a player out removes its line, which is how attributions ask
"what would the model have said without this fact".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass

from reporting.evidence import ZONE_NAMES, Evidence, Language, ZoneEvidence
from reporting.llm import Message

PLAYER_DECISION = "decision"
PLAYER_CONFIDENCE = "confidence"


def zone_player(zone_id: str) -> str:
    return f"zone:{zone_id}"


@dataclass(frozen=True)
class PromptTexts:
    """All fixed prompt text for one language. ``{...}`` fields are filled from Evidence."""

    system: str
    header: str
    zone_item: str
    no_zones: str
    weak: str
    decision_finding: str
    decision_no_finding: str
    confidence: str
    instruction: str


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    texts: dict[str, PromptTexts]

    @property
    def sha256(self) -> str:
        payload = {"version": self.version, "texts": {k: asdict(v) for k, v in self.texts.items()}}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()


DEFAULT_TEMPLATE = PromptTemplate(
    version="1.0",
    texts={
        "en": PromptTexts(
            system=(
                "You are a radiology assistant writing a short chest X-ray report for a "
                "radiologist. Use only the facts given. Do not name lung zones that are not "
                "listed. Do not invent findings. Reply with JSON only, with the keys "
                '"findings", "interpretation" and "recommendations".'
            ),
            header="Chest X-ray analysis based on Grad-CAM: highlighted areas in: ",
            zone_item="{zone} (intensity {intensity:.2f})",
            no_zones="none reported",
            weak="The explanation map is weak; no zone can be singled out.",
            decision_finding="Classifier decision: abnormal finding present.",
            decision_no_finding="Classifier decision: no finding.",
            confidence="Confidence {confidence:.2f}.",
            instruction=(
                "Provide a detailed radiological description in three sections: "
                "findings, interpretation, recommendations."
            ),
        ),
        "ru": PromptTexts(
            system=(
                "Ты ассистент рентгенолога и пишешь краткое заключение по рентгенограмме "
                "грудной клетки. Используй только приведённые факты. Не называй зоны лёгких, "
                "которых нет в списке. Не придумывай находки. Ответь только JSON с ключами "
                '"findings", "interpretation" и "recommendations".'
            ),
            header="Анализ рентгенограммы грудной клетки по Grad-CAM: выделенные области: ",
            zone_item="{zone} (интенсивность {intensity:.2f})",
            no_zones="не указаны",
            weak="Карта объяснения слабая; выделить отдельную зону нельзя.",
            decision_finding="Решение классификатора: патологическая находка.",
            decision_no_finding="Решение классификатора: находок нет.",
            confidence="Уверенность {confidence:.2f}.",
            instruction=(
                "Дай подробное рентгенологическое описание в трёх разделах: находки, "
                "интерпретация, рекомендации."
            ),
        ),
    },
)


def players_for(evidence: Evidence, zones: tuple[ZoneEvidence, ...]) -> tuple[str, ...]:
    """The descriptors a prompt built from ``zones`` contains, in prompt order."""
    return (*[zone_player(z.zone_id) for z in zones], PLAYER_DECISION, PLAYER_CONFIDENCE)


def build_messages(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    language: Language,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    include: Collection[str] | None = None,
) -> tuple[Message, ...]:
    """System + user messages for ``evidence``.

    zones: the zones to mention (normally ``evidence.supported_zones(...)``), in order.
    include: the players to keep (None = all); others are left out of the user message.
    """
    t = template.texts[language]
    keep = set(players_for(evidence, zones)) if include is None else set(include)
    items = [
        t.zone_item.format(zone=ZONE_NAMES[language][z.zone_id], intensity=z.intensity)
        for z in zones
        if zone_player(z.zone_id) in keep
    ]
    lines = [t.header + ("; ".join(items) if items else t.no_zones) + "."]
    if evidence.explanation_weak:
        lines.append(t.weak)
    if PLAYER_DECISION in keep:
        finding = evidence.decision == "finding"
        lines.append(t.decision_finding if finding else t.decision_no_finding)
    if PLAYER_CONFIDENCE in keep:
        lines.append(t.confidence.format(confidence=evidence.confidence))
    lines.append(t.instruction)
    return (Message("system", t.system), Message("user", "\n".join(lines)))


def player_texts(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    language: Language,
    template: PromptTemplate = DEFAULT_TEMPLATE,
) -> dict[str, str]:
    """The exact prompt text each player contributes (to locate it for highlighting)."""
    t = template.texts[language]
    out = {
        zone_player(z.zone_id): t.zone_item.format(
            zone=ZONE_NAMES[language][z.zone_id], intensity=z.intensity
        )
        for z in zones
    }
    finding = evidence.decision == "finding"
    out[PLAYER_DECISION] = t.decision_finding if finding else t.decision_no_finding
    out[PLAYER_CONFIDENCE] = t.confidence.format(confidence=evidence.confidence)
    return out
