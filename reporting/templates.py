"""Deterministic report rendering from Evidence, in English and Russian.

Used for every section the LLM could not support, and for all sections when the requested
language is one the model cannot write. Each sentence here passes the grounding check by
construction (a unit test enforces it for every decision/zone/weakness/band combination).

Numbers are shown with enough precision to be honest: a probability is never rounded to
"1.00" or "0.00", and never to the same figure as the threshold it is compared with
(:func:`probability_pair`). The same formatting feeds the prompt, so the model copies it.
"""

from __future__ import annotations

from reporting.evidence import (
    AGREEMENT_MIN,
    CTR_UPPER_NORMAL,
    ZONE_NAMES,
    Evidence,
    Language,
    Measurements,
    ZoneEvidence,
    flag_name,
)
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


def fmt(value: float, language: Language, digits: int = 2) -> str:
    """Fixed-point number; Russian uses a decimal comma."""
    text = f"{value:.{digits}f}"
    return text.replace(".", ",") if language == "ru" else text


def fmt_probability(value: float, language: Language, digits: int = 2) -> str:
    """A probability that never reads as certainty: "above 0.99" / "below 0.01" at the ends."""
    top = 1.0 - 0.5 * 10.0**-digits
    if value >= top:
        limit = fmt(1.0 - 10.0**-digits, language, digits)
        return f"above {limit}" if language == "en" else f"выше {limit}"
    if value < 0.5 * 10.0**-digits:
        limit = fmt(10.0**-digits, language, digits)
        return f"below {limit}" if language == "en" else f"ниже {limit}"
    return fmt(value, language, digits)


def probability_pair(p: float, threshold: float, language: Language) -> tuple[str, str]:
    """(probability, threshold) rendered with the fewest digits (2-4) that tell them apart."""
    digits = 2
    while digits < 4 and f"{p:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1
    return fmt_probability(p, language, digits), fmt(threshold, language, digits)


def percent(value: float, language: Language) -> str:
    return f"{round(value * 100)} %"


def _zone_list(zones: tuple[ZoneEvidence, ...], language: Language) -> str:
    word = "intensity" if language == "en" else "интенсивность"
    items = [
        f"{ZONE_NAMES[language][z.zone_id]} ({word} {fmt(z.intensity, language)})" for z in zones
    ]
    if language == "en" and len(items) > 1:
        return ", ".join(items[:-1]) + " and " + items[-1]
    return ", ".join(items)


def _names(zones: tuple[ZoneEvidence, ...], language: Language) -> str:
    return ", ".join(ZONE_NAMES[language][z.zone_id] for z in zones)


_POPULATION: dict[Language, dict[str, str]] = {
    "en": {"adult": " for adults", "pediatric": " for children", "assumed": " (age not given)"},
    "ru": {"adult": " для взрослых", "pediatric": " для детей", "assumed": " (возраст не указан)"},
}


def population_text(e: Evidence, lang: Language) -> str:
    """Whose threshold it is (" for adults (age not given)"), or "" when Evidence does not say.

    A threshold is a population's operating point: the reader must see which one was used,
    and that it was a default when the patient's age was not supplied."""
    if e.population is None:
        return ""
    words = _POPULATION[lang]
    return words[e.population] + (words["assumed"] if e.population_assumed else "")


def decision_sentence(e: Evidence, lang: Language) -> str:
    p, thr = probability_pair(e.probability_finding, e.threshold, lang)
    t = thr + population_text(e, lang)
    if e.indeterminate and e.band is not None:
        lo, hi = (fmt(v, lang) for v in e.band)
        if lang == "en":
            return (
                f"The probability of a finding ({p}) lies in the borderline band from {lo} to "
                f"{hi} around the threshold {t}: the result is indeterminate."
            )
        return (
            f"Вероятность находки ({p}) лежит в пограничном диапазоне от {lo} до {hi} вокруг "
            f"порога {t}: результат неопределённый."
        )
    if lang == "en":
        if e.decision == "no_finding":
            return (
                f"The classifier reports no finding (probability of a finding {p}; threshold {t})."
            )
        return f"The classifier reports an abnormal finding (probability {p}; threshold {t})."
    if e.decision == "no_finding":
        return f"Классификатор не выявил находок (вероятность находки {p}; порог {t})."
    return f"Классификатор выявил патологическую находку (вероятность {p}; порог {t})."


def ctr_sentence(m: Measurements, lang: Language) -> str | None:
    """The CTR as a sentence, or None when it was not measured."""
    if m.ctr is None:
        return None
    value, limit = fmt(m.ctr, lang), fmt(CTR_UPPER_NORMAL, lang, 1)
    if not m.ctr_reliable:
        if lang == "en":
            return (
                f"Cardiothoracic ratio {value} from the segmentation masks, not reliable on "
                "this image; heart size is not assessed."
            )
        return (
            f"Кардиоторакальный индекс {value} по маскам сегментации недостоверен на этом "
            "снимке; размер сердца не оценивается."
        )
    if m.heart_normal is True:
        if lang == "en":
            return f"Cardiothoracic ratio {value} (below {limit}): heart size within normal limits."
        return f"Кардиоторакальный индекс {value} (меньше {limit}): размер сердца в пределах нормы."
    if m.projection_unknown_high:
        if lang == "en":
            return (
                f"Cardiothoracic ratio {value} (above {limit}) on a film of unknown projection, "
                "where an AP view would overstate the ratio: heart size is not called."
            )
        return (
            f"Кардиоторакальный индекс {value} (больше {limit}) при неизвестной проекции, а "
            "переднезадняя проекция завышает индекс: размер сердца не оценивается."
        )
    if m.heart_normal is None:
        if lang == "en":
            return (
                f"Cardiothoracic ratio {value} (close to {limit}): heart size is not called by "
                "this measurement."
            )
        return (
            f"Кардиоторакальный индекс {value} (близок к {limit}): размер сердца по этому "
            "измерению не оценивается."
        )
    if lang == "en":
        return f"Cardiothoracic ratio {value} (at or above {limit}): the heart appears enlarged."
    return f"Кардиоторакальный индекс {value} (не меньше {limit}): сердце выглядит увеличенным."


def lungs_sentence(m: Measurements, lang: Language) -> str | None:
    if m.right_lung_share is None or m.left_lung_share is None:
        return None
    r, le = percent(m.right_lung_share, lang), percent(m.left_lung_share, lang)
    if lang == "en":
        return f"Share of the total lung area: right {r}, left {le}."
    return f"Доля общей площади лёгких: справа {r}, слева {le}."


def _zones_sentences(e: Evidence, zones: tuple[ZoneEvidence, ...], lang: Language) -> list[str]:
    if not zones:
        if lang == "en":
            return ["The explanation maps do not single out a lung zone."]
        return ["Карты объяснения не позволяют выделить отдельную зону лёгких."]
    if lang == "en":
        out = [f"The explanation maps highlight the {_zone_list(zones, lang)}."]
    else:
        out = [f"Карты объяснения выделяют: {_zone_list(zones, lang)}."]
    agreed = tuple(z for z in zones if z.agreed(AGREEMENT_MIN))
    if agreed:
        if lang == "en":
            out.append(f"Grad-CAM and LIME agree on the {_names(agreed, lang)}.")
        else:
            out.append(f"Grad-CAM и LIME согласны: {_names(agreed, lang)}.")
    return out


def _quality_sentence(e: Evidence, lang: Language) -> str | None:
    if not e.quality_flags:
        return None
    names = ", ".join(flag_name(f, lang) for f in e.quality_flags)
    if lang == "en":
        return f"Image quality flags: {names}; interpret with caution."
    return f"Замечания к качеству изображения: {names}; интерпретируйте с осторожностью."


def _findings(e: Evidence, zones: tuple[ZoneEvidence, ...], lang: Language) -> str:
    out = [decision_sentence(e, lang)]
    if e.decision == "finding" or e.indeterminate:
        out += _zones_sentences(e, zones, lang)
    if e.measurements is not None:
        out += [s for s in (ctr_sentence(e.measurements, lang),) if s]
        out += [s for s in (lungs_sentence(e.measurements, lang),) if s]
    quality = _quality_sentence(e, lang)
    if quality:
        out.append(quality)
    return " ".join(out)


def _interpretation(e: Evidence, zones: tuple[ZoneEvidence, ...], lang: Language) -> str:
    if e.indeterminate:
        if lang == "en":
            return (
                "Borderline result: the model cannot tell reliably whether an abnormality "
                "is present."
            )
        return "Пограничный результат: модель не может надёжно определить, есть ли патология."
    if lang == "en":
        if e.decision == "no_finding":
            return "No abnormality was detected by the model; this does not exclude disease."
        where = " in the highlighted zones" if zones else "; the model cannot localise it reliably"
        return (
            f"The appearance is consistent with an abnormality{where}. Its type and cause are "
            "for the radiologist to determine."
        )
    if e.decision == "no_finding":
        return "Модель не выявила патологических изменений; это не исключает заболевания."
    # The comma keeps "без" (a negation cue for the whole clause) away from "изменениям".
    where = " в выделенных зонах" if zones else ", без надёжной локализации"
    return (
        f"Картина соответствует патологическим изменениям{where}. Их характер и причину "
        "определяет врач."
    )


def _recommendations(e: Evidence, lang: Language) -> str:
    moderate = e.confidence < MODERATE_CONFIDENCE and not e.indeterminate
    if lang == "en":
        if e.indeterminate:
            text = "Review of the image by a radiologist is needed to decide."
        elif e.decision == "no_finding":
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
    if e.indeterminate:
        text = "Для решения необходима оценка изображения врачом-рентгенологом."
    elif e.decision == "no_finding":
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


def render_unsuitable(evidence: Evidence, language: Language) -> Sections:
    """The whole report for an image the input gate marked unsuitable: no decision at all."""
    reasons = ", ".join(flag_name(f, language) for f in evidence.unsuitable)
    if language == "en":
        return Sections(
            findings=f"The image is not suitable for automated analysis ({reasons}).",
            interpretation="The model gives no decision for this image.",
            recommendations=(
                "Obtain a frontal chest radiograph of diagnostic quality, or have a "
                "radiologist read this image directly."
            ),
        )
    return Sections(
        findings=f"Изображение непригодно для автоматического анализа ({reasons}).",
        interpretation="Модель не выносит решения по этому изображению.",
        recommendations=(
            "Получите прямую рентгенограмму грудной клетки диагностического качества или "
            "передайте это изображение на чтение врачу-рентгенологу."
        ),
    )


def render_template(
    evidence: Evidence, zones: tuple[ZoneEvidence, ...], language: Language
) -> Sections:
    """All three sections for ``evidence``; ``zones`` are the supported zones to name."""
    if evidence.unsuitable:
        return render_unsuitable(evidence, language)
    return Sections(
        findings=_findings(evidence, zones, language),
        interpretation=_interpretation(evidence, zones, language),
        recommendations=_recommendations(evidence, language),
    )
