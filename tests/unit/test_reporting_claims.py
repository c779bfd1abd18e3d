"""Claim extraction on real radiology phrasing (Indiana University reports, Open-i) and
Russian equivalents."""

from __future__ import annotations

import pytest

from reporting.claims import extract_claims


@pytest.mark.parametrize(
    "sentence",
    [
        "The lungs are clear, and without focal airspace opacity.",
        "No acute cardiopulmonary abnormality.",
        "No acute disease.",
        "Lungs are clear bilaterally.",
        "Патологических изменений не выявлено.",
        "Лёгкие без очаговых и инфильтративных изменений.",
    ],
)
def test_normal_statements(sentence: str) -> None:
    claims = extract_claims(sentence)
    assert claims.states_normal
    assert not claims.states_abnormal


@pytest.mark.parametrize(
    "sentence",
    [
        "There is patchy opacity in the right mid zone.",
        "Consolidation in the left lower zone.",
        "Затемнение в правой средней зоне.",
        "The lungs are not normal.",
    ],
)
def test_abnormal_statements(sentence: str) -> None:
    assert extract_claims(sentence).states_abnormal


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Opacity in the right mid zone.", [{"right_mid"}]),
        ("Right lower lobe airspace disease.", [{"right_lower"}]),
        ("Patchy opacity in the left lung base.", [{"left_lower"}]),
        ("Upper zone of the left lung.", [{"left_upper"}]),
        ("Bibasilar opacities.", [{"right_lower"}, {"left_lower"}]),
        ("The right and left lower zones are involved.", [{"right_lower"}, {"left_lower"}]),
        ("The left lung is clear.", [{"left_upper", "left_mid", "left_lower"}]),
        ("Basilar opacity.", [{"right_lower", "left_lower"}]),
        ("Инфильтрация в нижней зоне правого лёгкого.", [{"right_lower"}]),
        ("Левая верхняя зона.", [{"left_upper"}]),
        ("The classifier reports an abnormal finding.", []),
    ],
)
def test_zone_requirements(sentence: str, expected: list[set[str]]) -> None:
    assert [set(r) for r in extract_claims(sentence).zone_requirements] == expected


def test_two_zones_in_one_sentence_are_paired_with_their_own_side() -> None:
    claims = extract_claims("LIME agrees for the right mid zone and the left lower zone.")
    assert [set(r) for r in claims.zone_requirements] == [{"right_mid"}, {"left_lower"}]


def test_out_of_scope_and_numbers() -> None:
    claims = extract_claims(
        "Small left pleural effusion (probability 0.96, 42%), follow-up in 6 weeks."
    )
    assert "effusion" in claims.out_of_scope and "pleural" in claims.out_of_scope
    assert claims.decimals == (0.96,)
    assert claims.percents == (0.42,)
    assert claims.integers == (6,)
    assert extract_claims("Вероятность 0,42.").decimals == (0.42,)


@pytest.mark.parametrize(
    ("sentence", "abnormal", "normal"),
    [
        ("This finding is an abnormality and should not be overlooked.", True, False),
        ("Consolidation is not seen.", False, True),
        ("Opacity is absent.", False, True),
        ("There is no evidence of consolidation.", False, True),
        ("No focal opacity; the right mid zone shows consolidation.", True, True),
        ("Очаговых и инфильтративных изменений не выявлено.", False, True),
    ],
)
def test_negation_scope(sentence: str, abnormal: bool, normal: bool) -> None:
    claims = extract_claims(sentence)
    assert (claims.states_abnormal, claims.states_normal) == (abnormal, normal)


@pytest.mark.parametrize(
    "sentence",
    [
        "Based on the clinical data, no findings were reported.",
        "Unchanged compared with the prior radiograph.",
        "The opacity is stable since the previous study.",
        "По сравнению с предыдущим снимком без динамики.",
    ],
)
def test_claims_about_sources_the_report_lacks_are_out_of_scope(sentence: str) -> None:
    assert extract_claims(sentence).out_of_scope


@pytest.mark.parametrize(
    "sentence",
    [
        # v2.5 evaluation, a borderline NIH film: a radiologist would strike the biopsy
        "Radiologist review of the image with the clinical picture and possibly a biopsy is "
        "recommended.",
        "Antibiotic treatment should be considered.",
        "Рекомендуется биопсия.",
        "Показано лечение антибиотиками.",
    ],
)
def test_procedures_and_treatment_are_out_of_scope(sentence: str) -> None:
    assert extract_claims(sentence).out_of_scope


def test_the_usual_recommendation_is_in_scope() -> None:
    for sentence in (
        "Radiologist review of the image with the clinical picture is recommended.",
        "Рекомендуется оценка снимка рентгенологом с учётом клинической картины.",
    ):
        assert extract_claims(sentence).out_of_scope == ()


@pytest.mark.parametrize(
    "sentence",
    [
        "Borderline result: an abnormality cannot be excluded.",
        "Borderline result: the model cannot tell reliably whether an abnormality is present.",
        "The result is borderline; a possible abnormality.",
        "Пограничный результат: модель не может надёжно определить, есть ли патология.",
        "Результат пограничный; патологические изменения не исключены.",
    ],
)
def test_a_hedged_borderline_sentence_asserts_neither_side(sentence: str) -> None:
    claims = extract_claims(sentence)
    assert claims.states_borderline
    assert not claims.states_abnormal and not claims.states_normal


@pytest.mark.parametrize(
    ("sentence", "abnormal"),
    [
        # v2.5 evaluation, a borderline NIH film: "found an abnormality" is a definite claim
        # however the sentence ends
        (
            "The model found an abnormality but cannot determine its type or cause; "
            "it is borderline.",
            True,
        ),
        ("Модель выявила патологические изменения, но результат пограничный.", True),
        ("The result is borderline, and the lungs are normal.", False),
    ],
)
def test_a_definite_clause_in_a_borderline_sentence_is_still_a_claim(
    sentence: str, abnormal: bool
) -> None:
    claims = extract_claims(sentence)
    assert claims.states_borderline
    assert claims.states_abnormal is abnormal
    assert claims.states_normal is not abnormal


def test_a_hedge_outside_a_borderline_sentence_still_leans() -> None:
    # after a no-finding decision "cannot be excluded" speaks of an abnormality
    assert extract_claims("An abnormality cannot be excluded.").states_abnormal
