"""Deterministic report rendering from Evidence, in English and Russian.

Used for every section the LLM could not support, and for all sections when the requested
language is one the model cannot write. Each sentence here passes the grounding check by
construction (a unit test enforces it for every decision/zone/weakness combination).
"""

from __future__ import annotations

from reporting.evidence import ZONE_NAMES, Evidence, Language, ZoneEvidence
from reporting.schema import Sections

MODERATE_CONFIDENCE = 0.75

DISCLAIMER: dict[Language, str] = {
    "en": (
        "Decision support, not a diagnosis: this text was generated automatically from a "
        "model's output and must be reviewed by a qualified clinician."
    ),
    "ru": (
        "Поддержка принятия решений, а не диагноз: текст сформирован автоматически по "
        "результатам модели и должен быть проверен квалифицированным врачом."
    ),
}


def fmt(value: float, language: Language) -> str:
    """Two-decimal number; Russian uses a decimal comma."""
    text = f"{value:.2f}"
    return text.replace(".", ",") if language == "ru" else text


def _zone_list(zones: tuple[ZoneEvidence, ...], language: Language) -> str:
    word = "intensity" if language == "en" else "интенсивность"
    items = [
        f"{ZONE_NAMES[language][z.zone_id]} ({word} {fmt(z.intensity, language)})" for z in zones
    ]
    if language == "en" and len(items) > 1:
        return ", ".join(items[:-1]) + " and " + items[-1]
    return ", ".join(items)


def _findings(e: Evidence, zones: tuple[ZoneEvidence, ...], lang: Language) -> str:
    p, t = fmt(e.probability_finding, lang), fmt(e.threshold, lang)
    if lang == "en":
        if e.decision == "no_finding":
            return (
                f"The classifier reports no finding (probability of a finding {p}; threshold {t})."
            )
        out = [f"The classifier reports an abnormal finding (probability {p}; threshold {t})."]
        if zones:
            out.append(f"Grad-CAM highlights the {_zone_list(zones, lang)}.")
            lime = [ZONE_NAMES[lang][z.zone_id] for z in zones if (z.lime_weight or 0) > 0]
            if lime:
                out.append("LIME agrees for: " + ", ".join(lime) + ".")
        else:
            out.append("The explanation maps do not single out a lung zone.")
        return " ".join(out)
    if e.decision == "no_finding":
        return f"Классификатор не выявил находок (вероятность находки {p}; порог {t})."
    out = [f"Классификатор выявил патологическую находку (вероятность {p}; порог {t})."]
    if zones:
        out.append(f"Grad-CAM выделяет: {_zone_list(zones, lang)}.")
        lime = [ZONE_NAMES[lang][z.zone_id] for z in zones if (z.lime_weight or 0) > 0]
        if lime:
            out.append("LIME подтверждает: " + ", ".join(lime) + ".")
    else:
        out.append("Карты объяснения не позволяют выделить отдельную зону лёгких.")
    return " ".join(out)


def _interpretation(e: Evidence, zones: tuple[ZoneEvidence, ...], lang: Language) -> str:
    if lang == "en":
        if e.decision == "no_finding":
            return "No abnormality was detected by the model; this does not exclude disease."
        where = " in the highlighted zones" if zones else "; the model cannot localise it reliably"
        return (
            f"The appearance is consistent with an abnormality such as an opacity{where}. "
            "The model does not determine its cause."
        )
    if e.decision == "no_finding":
        return "Модель не выявила патологических изменений; это не исключает заболевания."
    where = "в выделенных зонах" if zones else "без надёжной локализации"
    return (
        f"Картина соответствует патологическим изменениям, например затемнению, {where}. "
        "Модель не определяет их причину."
    )


def _recommendations(e: Evidence, lang: Language) -> str:
    moderate = e.confidence < MODERATE_CONFIDENCE
    if lang == "en":
        if e.decision == "no_finding":
            text = (
                "Correlate with the clinical picture; radiologist review is advised "
                "if symptoms persist."
            )
        else:
            text = (
                "Review of the image by a radiologist is recommended, with correlation "
                "to the clinical picture."
            )
        return text + (
            " The model's confidence is moderate; interpret with caution." if moderate else ""
        )
    if e.decision == "no_finding":
        text = (
            "Рекомендуется сопоставление с клинической картиной; при сохранении симптомов "
            "показана консультация рентгенолога."
        )
    else:
        text = (
            "Рекомендуется оценка изображения врачом-рентгенологом и сопоставление "
            "с клинической картиной."
        )
    return text + (
        " Уверенность модели умеренная; интерпретируйте с осторожностью." if moderate else ""
    )


def render_template(
    evidence: Evidence, zones: tuple[ZoneEvidence, ...], language: Language
) -> Sections:
    """All three sections for ``evidence``; ``zones`` are the supported zones to name."""
    return Sections(
        findings=_findings(evidence, zones, language),
        interpretation=_interpretation(evidence, zones, language),
        recommendations=_recommendations(evidence, language),
    )
