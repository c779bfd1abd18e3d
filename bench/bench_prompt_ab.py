"""This checkout's report prompt against the one of an earlier git revision, same model, same run.

    python bench/bench_prompt_ab.py --gguf PATH --rev REV [--langs ru] [--runs 2] [--threads 1]

Loads ``reporting/prompt.py`` as it was at ``REV`` (``git show``) beside the current one and,
on one in-process llama.cpp backend (greedy, drafting and prefix reuse as shipped), writes
the report of two realistic evidences (a finding with two zones and a normal CTR; a no finding
with a weak map and a high CTR of unknown projection) with each template in turn (interleaved,
so load swings hit both). Like the service, it first reads the facts known before the
explanations (``ReportGenerator.prefill``) and then generates; it records the read-ahead time,
the time from ``generate`` to the first streamed model text and to the whole report, and the
number of generated tokens. Prints each report once and a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reporting.evidence import Evidence, Language, Measurements, ZoneEvidence  # noqa: E402
from reporting.llama_backend import LlamaCppBackend, embedded_config  # noqa: E402
from reporting.prompt import DEFAULT_TEMPLATE, PromptTemplate  # noqa: E402
from reporting.report import GeneratorConfig, ReportGenerator  # noqa: E402
from reporting.stream import StreamEvent  # noqa: E402

EVIDENCES = (
    Evidence(
        "finding",
        0.87,
        0.29,
        (ZoneEvidence("right_mid", 0.42, 0.3, 0.5), ZoneEvidence("left_lower", 0.31, 0.3, 0.3)),
        view="PA",
        measurements=Measurements(0.46, True, (), 0.53, 0.47, 53 / 47),
    ),
    Evidence(
        "no_finding",
        0.12,
        0.29,
        (),
        view="PA",
        measurements=Measurements(0.56, True, (), 0.52, 0.48, 52 / 48),
    ),
)


def template_at(rev: str) -> PromptTemplate:
    """DEFAULT_TEMPLATE of reporting/prompt.py at git revision ``rev``."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:reporting/prompt.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("prompt_at_rev")
    sys.modules[module.__name__] = module  # its dataclasses look their module up by name
    exec(compile(source, f"{rev}:reporting/prompt.py", "exec"), module.__dict__)
    template: PromptTemplate = module.DEFAULT_TEMPLATE
    return template


def timed(gen: ReportGenerator, ev: Evidence, lang: Language) -> tuple[dict[str, float], str]:
    t = time.perf_counter()
    gen.prefill(replace(ev, zones=()), lang)
    marks = {"read_ahead": time.perf_counter() - t}
    t0 = time.perf_counter()

    def on_event(event: StreamEvent) -> None:
        if event.kind == "draft":
            marks.setdefault("first", time.perf_counter() - t0)

    report = gen.generate(ev, lang, on_event=on_event)
    marks["full"] = time.perf_counter() - t0
    marks["tokens"] = float(report.generation.tokens)
    sections = report.sections
    return marks, " | ".join((sections.findings, sections.interpretation, sections.recommendations))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--rev", required=True, help="git revision of the baseline prompt")
    ap.add_argument("--langs", default="ru")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    langs = [cast(Language, x) for x in a.langs.split(",")]
    config = replace(
        embedded_config(n_threads=a.threads),
        model_path=a.gguf,
        expected_sha256=None,
        model_name=a.gguf.stem,
        languages=frozenset(langs),
    )
    backend = LlamaCppBackend(config)
    old = template_at(a.rev)
    arms = {
        f"v{old.version} ({a.rev})": ReportGenerator(backend, GeneratorConfig(template=old)),
        f"v{DEFAULT_TEMPLATE.version} (this checkout)": ReportGenerator(backend),
    }
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for lang in langs:
        for gen in arms.values():  # warm-up: each template's prefix read and saved once
            gen.generate(EVIDENCES[0], lang)
        for run in range(a.runs):
            for ev in EVIDENCES:
                for name, gen in arms.items():
                    marks, text = timed(gen, ev, lang)
                    results.setdefault((lang, ev.decision, name), []).append(marks)
                    if run == 0:
                        print(f"{lang} {ev.decision} {name}: {text}", file=sys.stderr)
    print(
        f"\n| {a.gguf.stem}, {a.threads} thread(s) | language | evidence | n | read-ahead p50 s "
        "| first text p50 s | full report p50 s | tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (language, decision, name), rs in results.items():

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        print(
            f"| {name} | {language} | {decision} | {len(rs)} | {med('read_ahead'):.2f} "
            f"| {med('first'):.2f} | {med('full'):.2f} | {med('tokens'):.0f} |"
        )


if __name__ == "__main__":
    main()
