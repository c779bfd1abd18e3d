"""Prompt construction from Evidence only.

The prompt is a pure function of (Evidence, language, included descriptors, template): no
request text, file name or DICOM tag can reach it, which is what closes the prompt-injection
path. The template text is versioned and hashed so a report can state exactly which prompt
produced it.

Shape (chosen for small instruction models, measured in bench/RESULTS.md "Report prompts"):
a system turn with the rules *in the target language*, four worked examples (each a user turn
of facts and the assistant's JSON answer: an abnormal finding with zones, an abnormal finding
with a weak map, a borderline result, a no finding, so the model sees each shape and does not
carry one decision's wording into another: with only the first and last, a finding with a weak
map borrowed the no-finding "this does not exclude disease", and without the borderline one
(before v2.7) borderline films got "Borderline (indeterminate) (probability ...)" and an
interpretation asserting an abnormality. How the example states the band was chosen by the
20-film evaluation: inside the decision's parentheses the model appended the CTR there on other
films; as a sentence of its own, Russian reports of confident findings grew an invented band
sentence, so the Russian example leaves the band to the facts and the response's decision
block), then the user turn with this image's facts.
Everything before that last turn is fixed per language, and so is the start of the facts up to
the probability's value for a given decision, quality flags and threshold, so its KV state is
reused across requests (:mod:`reporting.llama_backend`): v2.8 puts the quality flags and the
threshold before the probability for that reason (v2.7 read them after it, ~35 Russian tokens
more per request while Grad-CAM and LIME share the CPU). Numbers are written exactly as the
templates write them (:func:`reporting.templates.probability_pair`), so the model copies honest
precision.
Fact lines are worded so that copying them verbatim into the answer is grammatical: Russian
zone names appear in the accusative the sentence "Карты объяснения указывают на ..." needs
(small models copied the nominative and broke the agreement). Russian text is kept short
because every token is read or written on one CPU thread and Qwen's tokenizer spends about
1.5x as many tokens on Russian as on English: v2.6 writes the radiologists' abbreviation КТИ
(кардиоторакальный индекс, named in the rules) and a shorter interpretation and
recommendation (measured in bench/RESULTS.md: -8 % generated tokens per Russian report);
v2.7 states an unknown projection in three words ("при неизвестной проекции", 14 tokens fewer
on a CTR above 0.5) and lists zones as "A, B и C".

Descriptors ("players" for attributions) are the prompt's independent facts: one per
mentioned zone (``zone:<zone_id>``), the decision (``decision``) and the probability
(``confidence``). Leaving a player out removes its line, which is how attributions ask
"what would the model have said without this fact".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass

from reporting.evidence import (
    AGREEMENT_MIN,
    ZONE_NAMES,
    Evidence,
    Language,
    Measurements,
    ZoneEvidence,
    ZoneId,
    flag_name,
)
from reporting.llm import Message
from reporting.templates import fmt, percent, population_text, probability_pair

PLAYER_DECISION = "decision"
PLAYER_CONFIDENCE = "confidence"


def zone_player(zone_id: str) -> str:
    return f"zone:{zone_id}"


@dataclass(frozen=True)
class WorkedExample:
    """One fixed user turn of facts and the assistant's JSON answer to it."""

    facts: str
    answer: dict[str, str]


@dataclass(frozen=True)
class PromptTexts:
    """All fixed prompt text for one language. ``{...}`` fields are filled from Evidence."""

    system: str
    facts: str
    decision_finding: str
    decision_no_finding: str
    decision_borderline: str
    threshold: str
    probability: str
    band: str
    zones: str
    zone_item: str
    zone_sep: str
    zone_last_sep: str
    no_zones: str
    agree: str
    weak: str
    ctr_normal: str
    ctr_enlarged: str
    ctr_projection: str
    ctr_close: str
    ctr_unreliable: str
    ctr_missing: str
    lungs: str
    flags: str
    no_flags: str
    zone_names: dict[ZoneId, str]
    examples: tuple[WorkedExample, ...]


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    texts: dict[str, PromptTexts]

    @property
    def sha256(self) -> str:
        payload = {"version": self.version, "texts": {k: asdict(v) for k, v in self.texts.items()}}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()


_EN = PromptTexts(
    system=(
        "You assist a radiologist. From the facts that an image-analysis model measured on a "
        'chest X-ray, write a short report as JSON with the keys "findings", '
        '"interpretation" and "recommendations", one to three sentences each.\n'
        "Rules:\n"
        "- Use only the facts given. Name only the lung zones listed in the facts.\n"
        "- Do not name diseases (pneumonia, effusion, nodule, tumour...) or any structure "
        "other than the lungs; mention the heart only as the cardiothoracic ratio says.\n"
        "- Copy numbers exactly as they are written in the facts; write no other numbers.\n"
        "- findings: the model's decision with its probability, where the explanation maps "
        "point, and the measurements.\n"
        "- interpretation: say plainly whether the model found an abnormality or no "
        "abnormality; if the decision is borderline, say the result is borderline. Do not "
        "guess what kind of abnormality it is (opacity, mass, fluid...): the model does not "
        "know. If the decision is no finding, describe no lesion and name no zone.\n"
        "- recommendations: what the reader should do next, without time intervals; never "
        "write that no further action is needed.\n"
        "- Never mention history, symptoms, previous images or comparisons."
    ),
    facts="Facts:\n",
    decision_finding="- Decision: abnormal finding.",
    decision_no_finding="- Decision: no finding.",
    decision_borderline="- Decision: borderline result.",
    threshold="- Threshold {t}.",
    probability="- Probability of a finding {p}.",
    band="- Borderline band from {lo} to {hi}.",
    zones="- Lung zones highlighted by the explanation maps: {items}.",
    zone_item="{zone} (intensity {intensity})",
    zone_sep="; ",
    zone_last_sep="; ",
    no_zones="- No lung zone is highlighted.",
    agree="- Grad-CAM and LIME agree on: {names}.",
    weak="- The explanation map is weak; no zone can be singled out.",
    ctr_normal="- Cardiothoracic ratio {ctr} (below {limit}): heart size within normal limits.",
    ctr_enlarged="- Cardiothoracic ratio {ctr} (at or above {limit}) on a PA view: the heart "
    "appears enlarged.",
    ctr_close="- Cardiothoracic ratio {ctr}, too close to {limit}: heart size is not called from "
    "it.",
    ctr_projection="- Cardiothoracic ratio {ctr}, above {limit}, projection unknown (an AP view "
    "overstates the ratio): heart size is not called.",
    ctr_unreliable="- Cardiothoracic ratio {ctr}, not reliable on this image: heart size is not "
    "assessed.",
    ctr_missing="- Cardiothoracic ratio not measured: heart size is not assessed.",
    lungs="- Share of the total lung area: right {right}, left {left}.",
    flags="- Image quality flags: {names}.",
    no_flags="- Image quality flags: none.",
    zone_names=ZONE_NAMES["en"],
    examples=(
        WorkedExample(
            facts=(
                "Facts:\n"
                "- Decision: abnormal finding.\n"
                "- Image quality flags: none.\n"
                "- Threshold 0.64 for adults.\n"
                "- Probability of a finding 0.87.\n"
                "- Cardiothoracic ratio 0.44 (below 0.5): heart size within normal limits.\n"
                "- Share of the total lung area: right 53 %, left 47 %.\n"
                "- Lung zones highlighted by the explanation maps: left lower zone (intensity "
                "0.58); left mid zone (intensity 0.33).\n"
                "- Grad-CAM and LIME agree on: left lower zone."
            ),
            answer={
                "findings": (
                    "Abnormal finding (probability 0.87, threshold 0.64 for adults). The maps "
                    "point to the left lower zone (intensity 0.58) and, less strongly, the left "
                    "mid zone (intensity 0.33); Grad-CAM and LIME agree on the left lower zone. "
                    "Cardiothoracic ratio 0.44: heart size within normal limits."
                ),
                "interpretation": (
                    "The model found an abnormality; its type and cause are for the "
                    "radiologist to determine."
                ),
                "recommendations": (
                    "Radiologist review of the image with the clinical picture is recommended."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Facts:\n"
                "- Decision: abnormal finding.\n"
                "- Image quality flags: none.\n"
                "- Threshold 0.29 for adults (age not given).\n"
                "- Probability of a finding 0.71.\n"
                "- Cardiothoracic ratio 0.56, above 0.5, projection unknown (an AP view "
                "overstates the ratio): heart size is not called.\n"
                "- Share of the total lung area: right 51 %, left 49 %.\n"
                "- The explanation map is weak; no zone can be singled out."
            ),
            answer={
                "findings": (
                    "Abnormal finding (probability 0.71, threshold 0.29 for adults, age not "
                    "given). The explanation map is weak; no zone can be singled out. "
                    "Cardiothoracic ratio 0.56, projection unknown: heart size is not called."
                ),
                "interpretation": (
                    "The model found an abnormality but cannot localise it; its type and "
                    "cause are for the radiologist to determine."
                ),
                "recommendations": (
                    "Radiologist review of the image with the clinical picture is recommended."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Facts:\n"
                "- Decision: borderline result.\n"
                "- Image quality flags: none.\n"
                "- Threshold 0.29 for adults (age not given).\n"
                "- Probability of a finding 0.33.\n"
                "- Borderline band from 0.17 to 0.37.\n"
                "- Cardiothoracic ratio 0.46 (below 0.5): heart size within normal limits.\n"
                "- Share of the total lung area: right 52 %, left 48 %.\n"
                "- The explanation map is weak; no zone can be singled out."
            ),
            answer={
                "findings": (
                    "Borderline result (probability 0.33, threshold 0.29 for adults, age not "
                    "given). The probability lies in the borderline band from 0.17 to 0.37. The "
                    "explanation map is weak; no zone can be singled out. Cardiothoracic ratio "
                    "0.46: heart size within normal limits."
                ),
                "interpretation": (
                    "The result is borderline: the model cannot tell reliably whether an "
                    "abnormality is present."
                ),
                "recommendations": (
                    "Radiologist review of the image with the clinical picture is recommended."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Facts:\n"
                "- Decision: no finding.\n"
                "- Image quality flags: none.\n"
                "- Threshold 0.58 for adults (age not given).\n"
                "- Probability of a finding 0.21.\n"
                "- Cardiothoracic ratio 0.41 (below 0.5): heart size within normal limits.\n"
                "- Share of the total lung area: right 55 %, left 45 %.\n"
                "- The explanation map is weak; no zone can be singled out."
            ),
            answer={
                "findings": (
                    "No finding (probability 0.21, threshold 0.58 for adults, age not given). "
                    "The explanation map is weak; no zone can be singled out. Cardiothoracic "
                    "ratio 0.41: heart size within normal limits."
                ),
                "interpretation": (
                    "The model found no abnormality; this does not exclude disease."
                ),
                "recommendations": (
                    "Radiologist review of the image with the clinical picture is recommended."
                ),
            },
        ),
    ),
)

# Accusative, as "Карты объяснения указывают на ..." needs, so a copied fact line stays grammatical.
_ZONES_ACCUSATIVE_RU: dict[ZoneId, str] = {
    "right_upper": "правую верхнюю зону",
    "right_mid": "правую среднюю зону",
    "right_lower": "правую нижнюю зону",
    "left_upper": "левую верхнюю зону",
    "left_mid": "левую среднюю зону",
    "left_lower": "левую нижнюю зону",
}

_RU = PromptTexts(
    system=(
        "Ты помогаешь врачу-рентгенологу. По фактам, которые модель анализа изображений "
        "получила на рентгенограмме грудной клетки, напиши краткое заключение на русском "
        'языке в виде JSON с ключами "findings", "interpretation" и "recommendations", '
        "по одному-три предложения в каждом.\n"
        "Правила:\n"
        "- Используй только приведённые факты. Называй только зоны лёгких из фактов.\n"
        "- Не называй заболевания (пневмония, выпот, узел, опухоль...) и другие структуры, "
        "кроме лёгких; о сердце пиши только то, что следует из кардиоторакального индекса (КТИ).\n"
        "- Переписывай числа точно так, как они записаны в фактах; других чисел не пиши.\n"
        "- findings: решение модели с вероятностью, куда указывают карты объяснения, "
        "измерения.\n"
        "- interpretation: прямо скажи, выявила ли модель патологические изменения или нет; "
        "если решение пограничное, скажи, что результат пограничный. Не угадывай вид "
        "изменений (затемнение, образование, жидкость...): модель его не знает. Если "
        "находок нет, не описывай изменений и не называй зон.\n"
        "- recommendations: что делать дальше, без сроков; никогда не пиши, что дальнейшие "
        "действия не нужны.\n"
        "- Не упоминай анамнез, симптомы, прежние снимки и сравнения.\n"
        "Пиши только по-русски."
    ),
    facts="Факты:\n",
    decision_finding="- Решение: патологическая находка.",
    decision_no_finding="- Решение: находок нет.",
    decision_borderline="- Решение: результат пограничный.",
    threshold="- Порог {t}.",
    probability="- Вероятность находки {p}.",
    band="- Пограничный диапазон от {lo} до {hi}.",
    zones="- Карты объяснения указывают на {items}.",
    zone_item="{zone} (интенсивность {intensity})",
    zone_sep=", ",
    zone_last_sep=" и ",
    no_zones="- Ни одна зона лёгких не выделена.",
    agree="- Grad-CAM и LIME согласованно указывают на {names}.",
    weak="- Карта объяснения слабая; выделить отдельную зону нельзя.",
    ctr_normal="- КТИ {ctr} (меньше {limit}): размер сердца в пределах нормы.",
    ctr_enlarged="- КТИ {ctr} (не меньше {limit}) в задне-передней проекции: сердце выглядит "
    "увеличенным.",
    ctr_close="- КТИ {ctr} слишком близок к {limit}: размер сердца по нему не оценивается.",
    ctr_projection="- КТИ {ctr} больше {limit} при неизвестной проекции: размер сердца не "
    "оценивается.",
    ctr_unreliable="- КТИ {ctr} недостоверен на этом снимке: размер сердца не оценивается.",
    ctr_missing="- КТИ не измерен: размер сердца не оценивается.",
    lungs="- Доля общей площади лёгких: справа {right}, слева {left}.",
    flags="- Замечания к качеству изображения: {names}.",
    no_flags="- Замечаний к качеству изображения нет.",
    zone_names=_ZONES_ACCUSATIVE_RU,
    examples=(
        WorkedExample(
            facts=(
                "Факты:\n"
                "- Решение: патологическая находка.\n"
                "- Замечаний к качеству изображения нет.\n"
                "- Порог 0,64 для взрослых.\n"
                "- Вероятность находки 0,87.\n"
                "- КТИ 0,44 (меньше 0,5): размер сердца в пределах нормы.\n"
                "- Доля общей площади лёгких: справа 53 %, слева 47 %.\n"
                "- Карты объяснения указывают на левую нижнюю зону (интенсивность 0,58) и "
                "левую среднюю зону (интенсивность 0,33).\n"
                "- Grad-CAM и LIME согласованно указывают на левую нижнюю зону."
            ),
            answer={
                "findings": (
                    "Патологическая находка (вероятность 0,87, порог 0,64 для взрослых). Карты "
                    "указывают на левую нижнюю зону (интенсивность 0,58) и, слабее, на левую "
                    "среднюю зону (интенсивность 0,33); Grad-CAM и LIME согласованно указывают "
                    "на левую нижнюю зону. КТИ 0,44: размер сердца в пределах нормы."
                ),
                "interpretation": (
                    "Модель выявила патологические изменения; их характер определяет врач."
                ),
                "recommendations": (
                    "Рекомендуется оценка рентгенологом с учётом клинической картины."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Факты:\n"
                "- Решение: патологическая находка.\n"
                "- Замечаний к качеству изображения нет.\n"
                "- Порог 0,29 для взрослых (возраст не указан).\n"
                "- Вероятность находки 0,71.\n"
                "- КТИ 0,56 больше 0,5 при неизвестной проекции: размер сердца не "
                "оценивается.\n"
                "- Доля общей площади лёгких: справа 51 %, слева 49 %.\n"
                "- Карта объяснения слабая; выделить отдельную зону нельзя."
            ),
            answer={
                "findings": (
                    "Патологическая находка (вероятность 0,71, порог 0,29 для взрослых, "
                    "возраст не указан). Карта объяснения слабая; выделить отдельную зону "
                    "нельзя. КТИ 0,56 при неизвестной проекции: размер сердца не оценивается."
                ),
                "interpretation": (
                    "Модель выявила патологические изменения, но не может их локализовать; их "
                    "характер определяет врач."
                ),
                "recommendations": (
                    "Рекомендуется оценка рентгенологом с учётом клинической картины."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Факты:\n"
                "- Решение: результат пограничный.\n"
                "- Замечаний к качеству изображения нет.\n"
                "- Порог 0,29 для взрослых (возраст не указан).\n"
                "- Вероятность находки 0,33.\n"
                "- Пограничный диапазон от 0,17 до 0,37.\n"
                "- КТИ 0,46 (меньше 0,5): размер сердца в пределах нормы.\n"
                "- Доля общей площади лёгких: справа 52 %, слева 48 %.\n"
                "- Карта объяснения слабая; выделить отдельную зону нельзя."
            ),
            answer={
                "findings": (
                    "Результат пограничный (вероятность 0,33, порог 0,29 для взрослых, возраст "
                    "не указан). Карта объяснения слабая; выделить отдельную зону нельзя. КТИ "
                    "0,46: размер сердца в пределах нормы."
                ),
                "interpretation": (
                    "Результат пограничный: модель не может надёжно определить, есть ли патология."
                ),
                "recommendations": (
                    "Рекомендуется оценка рентгенологом с учётом клинической картины."
                ),
            },
        ),
        WorkedExample(
            facts=(
                "Факты:\n"
                "- Решение: находок нет.\n"
                "- Замечаний к качеству изображения нет.\n"
                "- Порог 0,58 для взрослых (возраст не указан).\n"
                "- Вероятность находки 0,21.\n"
                "- КТИ 0,41 (меньше 0,5): размер сердца в пределах нормы.\n"
                "- Доля общей площади лёгких: справа 55 %, слева 45 %.\n"
                "- Карта объяснения слабая; выделить отдельную зону нельзя."
            ),
            answer={
                "findings": (
                    "Находок нет (вероятность 0,21, порог 0,58 для взрослых, возраст не "
                    "указан). Карта объяснения слабая; выделить отдельную зону нельзя. "
                    "КТИ 0,41: размер сердца в пределах нормы."
                ),
                "interpretation": (
                    "Модель не выявила патологических изменений; это не исключает заболевания."
                ),
                "recommendations": (
                    "Рекомендуется оценка рентгенологом с учётом клинической картины."
                ),
            },
        ),
    ),
)

DEFAULT_TEMPLATE = PromptTemplate(version="2.8", texts={"en": _EN, "ru": _RU})


def players_for(evidence: Evidence, zones: tuple[ZoneEvidence, ...]) -> tuple[str, ...]:
    """The descriptors a prompt built from ``zones`` contains: zones, decision, probability."""
    return (*[zone_player(z.zone_id) for z in zones], PLAYER_DECISION, PLAYER_CONFIDENCE)


def _zone_text(z: ZoneEvidence, language: Language, t: PromptTexts) -> str:
    return t.zone_item.format(zone=t.zone_names[z.zone_id], intensity=fmt(z.intensity, language))


def _join(items: list[str], sep: str, last_sep: str) -> str:
    """Zones as "a, b и c" in Russian, the way a radiologist lists them (v2.6 joined them
    with ";", which read as a copied table)."""
    if len(items) < 2:
        return "".join(items)
    return sep.join(items[:-1]) + last_sep + items[-1]


def _decision_text(evidence: Evidence, t: PromptTexts) -> str:
    if evidence.indeterminate:
        return t.decision_borderline
    return t.decision_finding if evidence.decision == "finding" else t.decision_no_finding


def _confidence_lines(evidence: Evidence, language: Language, t: PromptTexts) -> list[str]:
    """The threshold (with the population it is for), then the probability: the threshold
    first, because it is the same for most requests and can stay in the cached prefix."""
    p, thr = probability_pair(evidence.probability_finding, evidence.threshold, language)
    return [
        t.threshold.format(t=thr + population_text(evidence, language)),
        t.probability.format(p=p),
    ]


def _measurement_lines(m: Measurements | None, language: Language, t: PromptTexts) -> list[str]:
    if m is None or m.ctr is None:
        lines = [t.ctr_missing]
    elif m.projection_unknown_high:
        lines = [t.ctr_projection.format(ctr=fmt(m.ctr, language), limit=fmt(0.5, language, 1))]
    elif m.ctr_reliable and m.heart_normal is not None:
        text = t.ctr_normal if m.heart_normal else t.ctr_enlarged
        lines = [text.format(ctr=fmt(m.ctr, language), limit=fmt(0.5, language, 1))]
    elif m.ctr_close:
        lines = [t.ctr_close.format(ctr=fmt(m.ctr, language), limit=fmt(0.5, language, 1))]
    else:
        lines = [t.ctr_unreliable.format(ctr=fmt(m.ctr, language))]
    if m is not None and m.right_lung_share is not None and m.left_lung_share is not None:
        right, left = percent(m.right_lung_share, language), percent(m.left_lung_share, language)
        lines.append(t.lungs.format(right=right, left=left))
    return lines


def _early_lines(
    evidence: Evidence, language: Language, keep: set[str], t: PromptTexts
) -> list[str]:
    """The fact lines known before the explanations: decision, quality flags, threshold,
    probability, band and the measurements (classifier, gate and segmenter outputs only)."""
    return [*_lead_lines(evidence, language, keep, t), *_after_lead(evidence, language, keep, t)]


def _lead_lines(
    evidence: Evidence, language: Language, keep: Collection[str], t: PromptTexts
) -> list[str]:
    """The lines that most requests share given the decision (v2.8 order: decision, quality
    flags, threshold, then the probability's own line; see :func:`_fixed_lead`)."""
    lines = [_decision_text(evidence, t)] if PLAYER_DECISION in keep else []
    flags = ", ".join(flag_name(f, language) for f in evidence.quality_flags)
    lines.append(t.flags.format(names=flags) if flags else t.no_flags)
    if PLAYER_CONFIDENCE in keep:
        lines.append(_confidence_lines(evidence, language, t)[0])
    return lines


def _after_lead(
    evidence: Evidence, language: Language, keep: Collection[str], t: PromptTexts
) -> list[str]:
    lines = []
    if PLAYER_CONFIDENCE in keep:
        lines.append(_confidence_lines(evidence, language, t)[1])
    if evidence.indeterminate and evidence.band is not None:
        lo, hi = (fmt(v, language) for v in evidence.band)
        lines.append(t.band.format(lo=lo, hi=hi))
    lines += _measurement_lines(evidence.measurements, language, t)
    return lines


def facts_lines(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    language: Language,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    include: Collection[str] | None = None,
) -> list[str]:
    """The fact lines of the last user turn (players not in ``include`` left out).

    The explanation's lines come last, so that everything before them can be read by the
    model while Grad-CAM and LIME still run (:func:`early_facts`)."""
    t = template.texts[language]
    keep = set(players_for(evidence, zones)) if include is None else set(include)
    lines = _early_lines(evidence, language, keep, t)
    named = tuple(z for z in zones if zone_player(z.zone_id) in keep)
    if evidence.explanation_weak:
        lines.append(t.weak)
    elif named:
        items = [_zone_text(z, language, t) for z in named]
        lines.append(t.zones.format(items=_join(items, t.zone_sep, t.zone_last_sep)))
        agreed = [t.zone_names[z.zone_id] for z in named if z.agreed(AGREEMENT_MIN)]
        if agreed:
            lines.append(t.agree.format(names=", ".join(agreed)))
    else:
        lines.append(t.no_zones)
    return lines


def early_facts(
    evidence: Evidence, language: Language, template: PromptTemplate = DEFAULT_TEMPLATE
) -> str:
    """The start of the last user turn that does not depend on the explanations: with every
    player kept, the facts of any Evidence with these decision, probability, band,
    measurements and flags begin with exactly this text."""
    t = template.texts[language]
    keep = {PLAYER_DECISION, PLAYER_CONFIDENCE}
    return t.facts + "\n".join(_early_lines(evidence, language, keep, t)) + "\n"


def build_messages(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    language: Language,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    include: Collection[str] | None = None,
) -> tuple[Message, ...]:
    """System turn, the worked examples (user + assistant each), and this image's facts.

    zones: the zones to mention (normally ``evidence.supported_zones(...)``), in order.
    include: the players to keep (None = all); others are left out of the last user turn.
    """
    t = template.texts[language]
    examples = [
        turn
        for ex in t.examples
        for turn in (
            Message("user", ex.facts),
            Message("assistant", json.dumps(ex.answer, ensure_ascii=False)),
        )
    ]
    facts = t.facts + "\n".join(facts_lines(evidence, zones, language, template, include))
    keep = set(players_for(evidence, zones)) if include is None else set(include)
    lead = _fixed_lead(evidence, language, t, keep)
    return (Message("system", t.system), *examples, Message("user", facts, len(lead)))


def _fixed_lead(
    evidence: Evidence, language: Language, t: PromptTexts, keep: Collection[str]
) -> str:
    """The start of the facts turn up to the probability's value ("Facts:\n- Decision:
    abnormal finding.\n- Image quality flags: none.\n- Threshold 0.27 for adults (age not
    given).\n- Probability of a finding "): the same for every request with this decision,
    these flags and this threshold, so the in-process backend keeps it with the system turn
    and the worked examples, one saved prefix per such lead (most sites see a handful), and a
    request reads ~35 Russian / ~25 English tokens fewer. Those are read while Grad-CAM and
    LIME run, sharing the CPU with them, which is what delays the first text. Without the
    decision line (an attribution's coalition) only "Facts:\n" is fixed."""
    if PLAYER_DECISION not in keep:
        return t.facts
    lead = t.facts + "\n".join(_lead_lines(evidence, language, keep, t)) + "\n"
    if PLAYER_CONFIDENCE in keep:
        lead += t.probability.split("{p}")[0]
    return lead


def player_texts(
    evidence: Evidence,
    zones: tuple[ZoneEvidence, ...],
    language: Language,
    template: PromptTemplate = DEFAULT_TEMPLATE,
) -> dict[str, str]:
    """The exact prompt text each player contributes (to locate it for highlighting)."""
    t = template.texts[language]
    out = {zone_player(z.zone_id): _zone_text(z, language, t) for z in zones}
    out[PLAYER_DECISION] = _decision_text(evidence, t)
    out[PLAYER_CONFIDENCE] = _confidence_lines(evidence, language, t)[1]
    return out
