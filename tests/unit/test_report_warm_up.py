"""The prompt leads the LLM warm-up reads (service.report_usecase.usual_leads)."""

from __future__ import annotations

from inference.operating import OperatingPoint, OperatingPoints
from reporting.prompt import build_messages
from service.report_usecase import usual_leads

POINTS = OperatingPoints(
    adult=OperatingPoint(0.27, (0.17, 0.37)), pediatric=OperatingPoint(0.6, (0.5, 0.7))
)


def _lead(evidence, language) -> str:
    last = build_messages(evidence, (), language)[-1]
    return last.content[: last.fixed_chars]


def test_a_finding_a_borderline_result_and_no_finding_at_the_default_threshold() -> None:
    leads = usual_leads(POINTS)
    assert [(e.decision, e.indeterminate) for e in leads] == [
        ("finding", False),
        ("no_finding", True),  # 0.17: inside the band, below the threshold
        ("no_finding", False),
    ]
    assert {(e.threshold, e.band, e.population, e.population_assumed) for e in leads} == {
        (0.27, (0.17, 0.37), "adult", True)
    }
    assert [_lead(e, "en") for e in leads] == [
        "Facts:\n- Decision: " + decision + ".\n- Image quality flags: none.\n"
        "- Threshold 0.27 for adults (age not given).\n- Probability of a finding "
        for decision in ("abnormal finding", "borderline result", "no finding")
    ]
    assert _lead(leads[1], "ru") == (
        "Факты:\n- Решение: результат пограничный.\n- Замечаний к качеству изображения нет.\n"
        "- Порог 0,27 для взрослых (возраст не указан).\n- Вероятность находки "
    )


def test_the_default_population_decides_and_no_band_means_no_borderline_lead() -> None:
    points = OperatingPoints(
        adult=OperatingPoint(0.27, (0.27, 0.27)),
        pediatric=OperatingPoint(0.6, (0.6, 0.6)),
        default_population="pediatric",
    )
    leads = usual_leads(points)
    assert [e.decision for e in leads] == ["finding", "no_finding"]
    assert all(e.threshold == 0.6 and e.band is None and e.population == "pediatric" for e in leads)
    assert "- Threshold 0.60 for children (age not given)." in _lead(leads[0], "en")
