"""MODEL_CARD.md section for the calibration study (``weights/calibration_study.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.card_json import card_section

T_BOUND = 20.0  # training.recalibrate.fit_temperature's upper bound


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:.{nd}f}"


def _ci(d: dict[str, Any], nd: int = 3) -> str:
    lo, hi = d["ci95"]
    return f"{d['difference']:+.{nd}f} [{lo:+.{nd}f}, {hi:+.{nd}f}]"


def _rates(r: dict[str, Any]) -> str:
    return f"{_f(r['sensitivity'])} / {_f(r['specificity'])}"


def _verdict(pays: bool, ci: list[float]) -> str:
    if pays:
        return "**Pays**: the interval lies above 0."
    where = "lies below 0" if ci[1] < 0 else "includes 0"
    return (
        f"**Does not pay** (rule: the interval must lie above 0; it {where}): the "
        "per-population temperature is not implemented, one temperature stays."
    )


def _platt(d: dict[str, Any]) -> str:
    return f"{_f(d['ece'])} (a = {d['slope']:.2f}, b = {d['offset']:+.2f})"


def _population_part(study: dict[str, Any]) -> list[str]:
    rep, exp = study["reproduction"], study["population_temperature"]
    t = exp["temperatures"]
    single, pop = exp["test_ece"]["single"], exp["test_ece"]["per_population"]
    diff = exp["pooled_difference_single_minus_per_population"]
    lines = [
        f"Reproduction: the temperature refitted on the validation logits of the shipped file is "
        f"{rep['temperature_refit']:.3f} (manifest {rep['temperature_manifest']:.3f}); test ECE "
        f"per row matches the table above within {rep['max_abs_difference']:.4f}.",
        "",
        f"One temperature (T = {t['single']:.3f}, all validation images) against one per "
        f"population (T_adult = {t['per_population']['adult']:.3f} on "
        f"{exp['validation_n']['adult']} adult validation images, T_pediatric = "
        f"{t['per_population']['pediatric']:.3f} on {exp['validation_n']['pediatric']}), "
        "internal test split:",
        "",
        "| test rows | n | ECE, one T | ECE, T per population |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {rep['test_n'].get(name, '')} | {_f(single[name])} | {_f(pop[name])} |"
        for name in single
    ]
    nll = exp["test_nll_pooled"]
    bins = exp.get("pooled_difference_other_bins", {})
    other = "; ".join(f"{b} bins {_ci(d, 4)}" for b, d in bins.items())
    nll_diff = exp.get("pooled_nll_difference_single_minus_per_population")
    lines += [
        "",
        f"Pooled test ECE(one T) − ECE(T per population) = {_ci(diff, 4)} (15 bins, as every ECE "
        f"in this card; paired bootstrap, {diff['resamples']} resamples of the split's "
        f"{diff['clusters']} patient groups). " + _verdict(exp["pays"], diff["ci95"]),
        "",
        f"How much that leans on the metric: the same difference with {other or 'n/a'}; "
        f"pooled test NLL {nll['single']:.4f} vs {nll['per_population']:.4f}"
        + (f", difference {_ci(nll_diff, 4)}" if nll_diff else "")
        + ". The rule and its metric were fixed before the first run.",
    ]
    return lines


def _site_part(study: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "What a site recalibration buys (**needs the site's own labelled images**): for each "
        "adult source, the fitting core of `python -m training recalibrate` "
        "(`training.recalibrate.fit_site`: maximum-likelihood temperature, adult threshold at "
        "sensitivity ≥ 0.90, at least 30 positives and 30 negatives) fitted on that source's "
        "adult validation images only, scored on its adult test images. ECE difference = "
        "shipped − site (paired bootstrap over patient groups).",
        "",
        "| source | fitted on n (pos) | tool | site T | test n (pos) | ECE shipped → site "
        "| ECE difference [95 % CI] | sens / spec @ shipped adult thr | sens / spec @ site thr "
        "| ECE, T + offset (`--method platt`) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in study["site_recalibration"]:
        head = f"| {r['source']} | {r['fit_n']} ({r['fit_positive']}) | "
        count = f"{r['test_n']} ({r['test_positive']})"
        if "ece_site" not in r:
            lines.append(head + f"refused: {r['reason']} | — | {count} | — | — | — | — | — |")
            continue
        tool = (
            "fitted"
            if r["tool"] == "fitted"
            else "refused (too few cases); temperature alone shown, not written by the tool"
        )
        site_thr = _rates(r["at_site"]) + f" (t = {r['threshold']:.3f})"
        lines.append(
            head
            + f"{tool} | {r['temperature']:.3f} | {count} | "
            + f"{_f(r['ece_shipped'])} → {_f(r['ece_site'])} | "
            + f"{_ci(r['ece_difference_shipped_minus_site'])} | "
            + f"{_rates(r['at_shipped'])} | {site_thr} | {_platt(r['platt_diagnostic'])} |"
        )
    left_out = {r["source"]: r.get("children_left_out", {}) for r in study["site_recalibration"]}
    kids = ", ".join(
        f"{src} {d['val']} / {d['test']}" for src, d in left_out.items() if sum(d.values())
    )
    few = ", ".join(
        f"{r['source']} {r['fit_n'] - r['fit_positive']} / {r['test_n'] - r['test_positive']}"
        for r in study["site_recalibration"]
        if "ece_site" in r
        and min(r["fit_n"] - r["fit_positive"], r["test_n"] - r["test_positive"]) < 10
    )
    lines += [
        "",
        "Adult films only (children of a source, validation / test, left out: "
        f'{kids or "none"}). "T + offset" is `sigmoid(a · logit + b)` fitted on the same '
        "validation images (Platt scaling), what `python -m training recalibrate --method "
        "platt` fits (a = 1 / T; it refuses a slope outside [0.05, 20], a model that does not "
        "rank the site's cases), against the temperature alone (the default method, "
        "a = 1 / T, b = 0). A site temperature at the upper bound "
        f"({T_BOUND:g}) means the model does not separate that site's classes: every "
        "probability moves towards the site's prevalence, which lowers ECE without any "
        "discrimination."
        + (f" Fewer than 10 negatives (fitted on / tested on): {few}." if few else ""),
    ]
    return lines


def calibration_section(weights: Path) -> str:
    return card_section(
        weights, "calibration_study.json", "The calibration study was", "calibration-study", _render
    )


def _render(study: dict[str, Any]) -> str:
    lines = _population_part(study) + _site_part(study)
    lines += ["", f"Command: `{study['command']}` ({study['classifier']})."]
    return "\n".join(lines)
