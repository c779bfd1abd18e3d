"""Template wording: honest precision, the borderline band, the unsuitable image, new evidence."""

from __future__ import annotations

import itertools
import json

import pytest

from reporting.evidence import Evidence, Language, Measurements, ZoneEvidence
from reporting.fake_backend import FakeBackend
from reporting.grounding import GroundingChecker, GroundingPolicy, split_sentences
from reporting.prompt import DEFAULT_TEMPLATE, build_messages
from reporting.report import ReportGenerator
from reporting.schema import SECTION_NAMES
from reporting.templates import probability_pair, render_template

T = 0.7013
NORMAL_HEART = Measurements(0.42, True, (), 0.55, 0.45, 55 / 45)
ZONES = (ZoneEvidence("right_lower", 0.6, 0.5, 0.6, 0.7), ZoneEvidence("left_mid", 0.3))


def _ev(p: float, **kw: object) -> Evidence:
    return Evidence("finding" if p >= T else "no_finding", p, T, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("p", "t", "lang", "expected"),
    [
        (0.99996, T, "en", ("above 0.99", "0.70")),
        (0.00002, T, "en", ("below 0.01", "0.70")),
        (0.7049, T, "en", ("0.705", "0.701")),
        (0.70131, T, "ru", ("0,7013", "0,7013")),  # 4 digits at most
        (0.93, T, "ru", ("0,93", "0,70")),
    ],
)
def test_probability_is_never_rounded_into_certainty_or_onto_the_threshold(
    p: float, t: float, lang: Language, expected: tuple[str, str]
) -> None:
    assert probability_pair(p, t, lang) == expected


def test_no_template_says_probability_1_00_or_repeats_the_threshold() -> None:
    for p in (0.99996, 0.9951, 0.7049, 0.70135, 0.69):
        text = render_template(_ev(p, zones=ZONES), ZONES, "en").findings
        assert "1.00" not in text and "0.70 " not in text.replace("threshold 0.70)", "")


def test_borderline_band_gets_its_own_sentence_and_interpretation() -> None:
    ev = _ev(0.72, zones=ZONES, band=(0.6, 0.8))
    assert ev.indeterminate and ev.decision_band == "indeterminate"
    en = render_template(ev, ZONES, "en")
    assert "borderline band from 0.60 to 0.80" in en.findings
    assert en.interpretation.startswith("Borderline result")
    ru = render_template(ev, ZONES, "ru")
    assert "пограничном диапазоне" in ru.findings and "Пограничный" in ru.interpretation
    # outside the band nothing is called borderline, and the checker removes such a claim
    out = _ev(0.9, zones=ZONES, band=(0.6, 0.8))
    assert "orderline" not in render_template(out, ZONES, "en").interpretation
    checker = GroundingChecker(out, GroundingPolicy())
    assert checker.violation("The result is borderline.", "en") == (
        "unsupported_borderline",
        "the probability is outside the borderline band",
    )


def test_unsuitable_image_report_says_so_and_nothing_else() -> None:
    ev = _ev(0.95, zones=ZONES, unsuitable=("lateral_view",))
    backend = FakeBackend("{}")
    report = ReportGenerator(backend).generate(ev, "en")
    assert backend.prompts == []  # the model is not asked
    assert "not suitable for automated analysis (lateral view)" in report.sections.findings
    assert "no decision" in report.sections.interpretation
    assert "right lower" not in report.render_text()
    assert report.grounding.unsupported_claims_left == 0


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_template_sentence_passes_the_check(lang: Language) -> None:
    measurements = [
        None,
        NORMAL_HEART,
        Measurements(0.49, True, (), 0.55, 0.45, 1.2),
        Measurements(0.58, True, ()),
        Measurements(0.58, True, (), view_pa=True),
        Measurements(0.6, False, ("ap_view",)),
    ]
    combos = itertools.product(
        (0.99996, 0.7049, 0.69, 0.2), measurements, ((), ZONES), (None, (0.6, 0.8)), (0, 1)
    )
    for p, m, zones, band, weak in combos:
        ev = _ev(
            p,
            zones=zones,
            band=band,
            measurements=m,
            explanation_weak=bool(weak),
            quality_flags=("rotated",) if weak else (),
        )
        sections = render_template(ev, ev.supported_zones(0.25), lang)
        checker = GroundingChecker(ev, GroundingPolicy())
        for name in SECTION_NAMES:
            for sentence in split_sentences(sections.get(name)):
                assert checker.violation(sentence, lang) is None, (sentence, ev)
        assert any(checker.states_decision(s) for s in split_sentences(sections.interpretation))


@pytest.mark.parametrize(
    ("m", "normal_ok", "enlarged_ok"),
    [
        (NORMAL_HEART, True, False),
        (Measurements(0.58, True, (), view_pa=True), False, True),
        # projection unknown: AP magnifies the heart, so a high CTR calls nothing
        (Measurements(0.58, True, ()), False, False),
        (Measurements(0.49, True, ()), False, False),  # within the measurement error of 0.5
        (Measurements(0.42, False, ("ap_view",)), False, False),
        (None, False, False),
    ],
)
def test_heart_claims_need_a_reliable_ctr_on_their_side_of_0_5(
    m: Measurements | None, normal_ok: bool, enlarged_ok: bool
) -> None:
    checker = GroundingChecker(_ev(0.9, zones=ZONES, measurements=m), GroundingPolicy())
    assert (checker.violation("Heart size within normal limits.", "en") is None) == normal_ok
    assert (checker.violation("Размер сердца в пределах нормы.", "ru") is None) == normal_ok
    assert (checker.violation("The heart is enlarged.", "en") is None) == enlarged_ok
    assert checker.violation("The heart border is obscured.", "en") is not None
    # a normal heart is not a normal lung: no contradiction with the finding
    if normal_ok:
        assert checker.violation("Cardiothoracic ratio 0.42: heart size normal.", "en") is None
    # the Russian prompt's abbreviation (КТИ = кардиоторакальный индекс) makes the same claim
    if m is not None and m.ctr is not None:
        kti = f"КТИ {m.ctr:.2f}".replace(".", ",") + ": размер сердца в пределах нормы."
        assert (checker.violation(kti, "ru") is None) == normal_ok


EXAMPLE_EVIDENCE = (
    # the abnormal finding with two zones and a normal heart
    Evidence(
        "finding",
        0.87,
        0.64,
        (ZoneEvidence("left_lower", 0.58, 0.5, 0.58, 0.66), ZoneEvidence("left_mid", 0.33)),
        measurements=Measurements(0.44, True, (), 0.53, 0.47, 53 / 47),
        population="adult",
    ),
    # a finding with a weak map and a CTR above 0.5 of unknown projection
    Evidence(
        "finding",
        0.71,
        0.29,
        (),
        explanation_weak=True,
        measurements=Measurements(0.56, True, (), 0.51, 0.49, 51 / 49),
        population="adult",
        population_assumed=True,
    ),
    # borderline (inside the band), weak map, a normal CTR (v2.7: without it both borderline
    # test films were written "Borderline (indeterminate) (probability ...)")
    Evidence(
        "finding",
        0.33,
        0.29,
        (),
        explanation_weak=True,
        band=(0.17, 0.37),
        measurements=Measurements(0.46, True, (), 0.52, 0.48, 52 / 48),
        population="adult",
        population_assumed=True,
    ),
    # no finding, weak map, a normal CTR, the adult threshold taken for want of an age (the
    # common case: v2.2's "too close to 0.5" example was copied onto CTRs of 0.37-0.40)
    Evidence(
        "no_finding",
        0.21,
        0.58,
        (),
        explanation_weak=True,
        measurements=Measurements(0.41, True, (), 0.55, 0.45, 55 / 45),
        population="adult",
        population_assumed=True,
    ),
)


@pytest.mark.parametrize("lang", ["en", "ru"])
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_each_worked_example_passes_the_check_for_its_own_facts(lang: Language, index: int) -> None:
    """The examples teach the model; each must itself be a report the check keeps whole, and
    its facts must be exactly what the prompt writes for that evidence."""
    ev = EXAMPLE_EVIDENCE[index]
    example = DEFAULT_TEMPLATE.texts[lang].examples[index]
    checker = GroundingChecker(ev, GroundingPolicy())
    seen: set[str] = set()
    for name in SECTION_NAMES:
        check = checker.check_section(name, example.answer[name], lang, seen)
        assert check.removed == () and checker.enough(name, check), name
    assert json.loads(json.dumps(example.answer, ensure_ascii=False)) == example.answer
    facts = build_messages(ev, ev.supported_zones(0.25), lang)[-1].content
    assert facts == example.facts


def test_prompt_has_a_finding_and_a_no_finding_example_before_the_case() -> None:
    ev = EXAMPLE_EVIDENCE[0]
    for lang in ("en", "ru"):
        messages = build_messages(ev, ev.supported_zones(0.25), lang)  # type: ignore[arg-type]
        roles = [m.role for m in messages]
        assert roles == ["system", *["user", "assistant"] * 4, "user"]
        examples = [m.content for m in messages[1:9:2]]
        assert any("abnormal finding" in e or "патологическая" in e for e in examples)
        assert any("no finding" in e or "находок нет" in e for e in examples)
        assert any("borderline result" in e or "пограничный" in e for e in examples)


def test_russian_zone_facts_copy_grammatically() -> None:
    """Copying a Russian zone line after "указывают на" keeps the accusative agreement."""
    ev = Evidence("finding", 0.9, T, ZONES)
    text = "\n".join(build_messages(ev, ZONES, "ru")[-1].content.splitlines())
    assert "указывают на правую нижнюю зону (интенсивность 0,60)" in text
    assert "правая" not in text and "правую нижнюю зона" not in text


def test_zone_lists_read_as_prose_in_russian() -> None:
    """Russian lists zones as "A, B и C" (v2.6's ";" read as a copied table); English keeps
    its "; " list, whose evaluation was already clean."""
    three = (*ZONES, ZoneEvidence("left_upper", 0.28))
    ev = Evidence("finding", 0.9, T, three)
    ru = build_messages(ev, three, "ru")[-1].content
    assert (
        "на правую нижнюю зону (интенсивность 0,60), левую среднюю зону (интенсивность 0,30) "
        "и левую верхнюю зону (интенсивность 0,28)."
    ) in ru
    one = build_messages(ev, ZONES[:1], "ru")[-1].content
    assert "на правую нижнюю зону (интенсивность 0,60).\n" in one + "\n"
    en = build_messages(ev, three, "en")[-1].content
    assert "right lower zone (intensity 0.60); left mid zone (intensity 0.30); left upper" in en


@pytest.mark.parametrize(
    ("sentence", "lang"),
    [
        ("No further action is required.", "en"),
        ("Follow-up imaging is not needed.", "en"),
        ("Дальнейшее обследование не требуется.", "ru"),
    ],
)
def test_a_model_cannot_clear_the_patient(sentence: str, lang: Language) -> None:
    checker = GroundingChecker(_ev(0.1, zones=()), GroundingPolicy())
    found = checker.violation(sentence, lang)
    assert found is not None and found[0] == "out_of_scope"


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_high_ctr_of_unknown_projection_is_reported_without_a_size_call(lang: str) -> None:
    from reporting.templates import ctr_sentence

    unknown = ctr_sentence(Measurements(0.72, True, ()), lang)  # type: ignore[arg-type]
    pa = ctr_sentence(Measurements(0.72, True, (), view_pa=True), lang)  # type: ignore[arg-type]
    assert unknown is not None and pa is not None
    assert "enlarged" not in unknown and "увелич" not in unknown
    assert ("enlarged" in pa) if lang == "en" else ("увеличенным" in pa)


@pytest.mark.parametrize(
    ("m", "close_ok", "unreliable_ok"),
    [
        (NORMAL_HEART, False, False),
        (Measurements(0.49, True, ()), True, False),
        (Measurements(0.47, True, ()), True, False),  # the margin's edge, as the prompt calls it
        (Measurements(0.58, True, (), view_pa=True), False, False),
        (Measurements(0.42, False, ("ap_view",)), False, True),
    ],
)
def test_statements_about_the_ctr_itself_need_that_state(
    m: Measurements, close_ok: bool, unreliable_ok: bool
) -> None:
    """ "Too close to 0.5" and "not reliable" are claims: copied onto another CTR they go."""
    checker = GroundingChecker(_ev(0.2, zones=(), measurements=m), GroundingPolicy())
    value = f"{m.ctr:.2f}"
    close = (
        (
            f"Cardiothoracic ratio {value}, too close to 0.5: heart size is not called from it.",
            "en",
        ),
        (
            f"Кардиоторакальный индекс {value.replace('.', ',')} слишком близок к 0,5: размер "
            "сердца по нему не оценивается.",
            "ru",
        ),
    )
    unreliable = (
        (
            f"Cardiothoracic ratio {value}, not reliable on this image: heart size is not "
            "assessed.",
            "en",
        ),
        (
            f"Кардиоторакальный индекс {value.replace('.', ',')} недостоверен на этом снимке: "
            "размер сердца не оценивается.",
            "ru",
        ),
    )
    for sentence, lang in close:
        found = checker.violation(sentence, lang)  # type: ignore[arg-type]
        assert (found is None) == close_ok, (sentence, found)
        assert found is None or found[0] == "unsupported_heart"
    for sentence, lang in unreliable:
        found = checker.violation(sentence, lang)  # type: ignore[arg-type]
        assert (found is None) == unreliable_ok, (sentence, found)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_the_threshold_names_its_population_and_a_default_is_said(lang: Language) -> None:
    child = _ev(0.2, zones=(), population="pediatric")
    assumed = _ev(0.2, zones=(), population="adult", population_assumed=True)
    kid = render_template(child, (), lang).findings or ""
    adult = render_template(assumed, (), lang).findings or ""
    facts = build_messages(assumed, (), lang)[-1].content
    if lang == "en":
        assert "threshold 0.70 for children)" in kid
        assert "threshold 0.70 for adults (age not given)" in adult
        assert "- Threshold 0.70 for adults (age not given).\n" in facts
    else:
        assert "порог 0,70 для детей)" in kid
        assert "порог 0,70 для взрослых (возраст не указан)" in adult
        assert "- Порог 0,70 для взрослых (возраст не указан).\n" in facts
    for ev, text in ((child, kid), (assumed, adult)):
        checker = GroundingChecker(ev, GroundingPolicy())
        assert all(checker.violation(s, lang) is None for s in split_sentences(text))


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_early_facts_start_every_prompt_and_need_no_explanation(lang: Language) -> None:
    """What prefill() reads while Grad-CAM and LIME run must be exactly the start of the
    final facts, whatever the explanations then add (zones, agreement, a weak map)."""
    from dataclasses import replace

    from reporting.prompt import early_facts

    for p, m, zones, band, weak in itertools.product(
        (0.99996, 0.7049, 0.2), (None, NORMAL_HEART), ((), ZONES), (None, (0.6, 0.8)), (0, 1)
    ):
        ev = _ev(p, zones=zones, band=band, measurements=m, explanation_weak=bool(weak))
        early = replace(ev, zones=(), explanation_weak=False)
        head = early_facts(early, lang)
        assert head == early_facts(ev, lang)
        facts = build_messages(ev, ev.supported_zones(0.25), lang)[-1].content
        assert facts.startswith(head) and len(facts) > len(head)
        gen = ReportGenerator(FakeBackend("{}", languages=frozenset({"en", "ru"})))
        gen.prefill(early, lang)
        gen.generate(ev, lang)
        backend = gen.backend
        assert isinstance(backend, FakeBackend)
        assert backend.prefills[-1][1] == head == backend.checkpoints[-1]
