"""Greedy decoding with the grammar checked lazily, the JSON scaffold and prompt-lookup
drafting vs llama-cpp-python's sampler chain.

    python bench/bench_greedy.py [--gguf PATH] [--threads 1] [--langs en,ru] [--runs 1]

Same GGUF, context, prompt (a report prompt for a finding with two zones, CTR and lung areas;
the last 120 prompt tokens evaluated in every arm), JSON grammar, greedy decoding and repeat
penalty 1.1, back to back in one process, arms interleaved per run: the chain (penalty,
grammar over the whole vocabulary, greedy), :func:`reporting.greedy.greedy_tokens` plain,
with the JSON scaffold, and with the scaffold and drafting (3 tokens a batch, the service default;
6 for comparison).
Prints the tokens, the median seconds and whether each arm's sections equal the chain's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import llama_cpp  # noqa: E402

from reporting.evidence import Evidence, Measurements, ZoneEvidence  # noqa: E402
from reporting.gguf import embedded_gguf_path  # noqa: E402
from reporting.greedy import GreedyConfig, greedy_tokens, scaffold_for  # noqa: E402
from reporting.llama_backend import GgufChatTemplate  # noqa: E402
from reporting.prompt import build_messages  # noqa: E402
from reporting.schema import REPORT_JSON_SCHEMA  # noqa: E402

EVIDENCE = Evidence(
    "finding",
    0.96,
    0.5,
    (ZoneEvidence("right_mid", 0.42, 0.1, 0.5), ZoneEvidence("left_lower", 0.31, None, 0.3)),
    measurements=Measurements(0.44, True, (), 0.53, 0.47, 53 / 47),
    population="adult",
    population_assumed=True,
)


ARMS = ("lazy check", "+ scaffold", "+ scaffold + draft 3", "+ scaffold + draft 6")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, default=None, help="default: the embedded SmolLM2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--langs", default="en")
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    gguf = a.gguf or embedded_gguf_path()
    llm = llama_cpp.Llama(
        model_path=str(gguf),
        n_ctx=2048,
        n_batch=256,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        verbose=False,
    )
    chat = GgufChatTemplate(llama_cpp, llm)
    schema = json.dumps(REPORT_JSON_SCHEMA, sort_keys=True)
    grammar = llama_cpp.LlamaGrammar.from_json_schema(schema, verbose=False)
    scaffold = scaffold_for(REPORT_JSON_SCHEMA)
    print(
        f"\n| {gguf.name}, {a.threads} thread(s), median of {a.runs} | chain | "
        + " | ".join(ARMS)
        + " |"
    )
    print("|---|---|" + "---|" * len(ARMS))
    for lang in a.langs.split(","):
        messages = build_messages(EVIDENCE, EVIDENCE.supported_zones(0.25), lang)  # type: ignore[arg-type]
        ids = llm.tokenize(chat.render(messages).encode(), add_bos=True, special=True)
        n = len(ids) - 120
        llm.reset()
        llm.eval(ids[:n])
        seconds: dict[str, list[float]] = {}
        texts: dict[str, str] = {}
        for _ in range(a.runs):
            llm.n_tokens = n
            t = time.perf_counter()
            out = llm.create_completion(
                ids,
                max_tokens=250,
                temperature=0.0,
                repeat_penalty=1.1,
                seed=0,
                stop=list(chat.stop),
                grammar=grammar,
            )
            seconds.setdefault("chain", []).append(time.perf_counter() - t)
            texts["chain"] = out["choices"][0]["text"]
            n_chain = out["usage"]["completion_tokens"]
            for arm, (draft, scaf) in zip(
                ARMS, ((0, None), (0, scaffold), (3, scaffold), (6, scaffold)), strict=True
            ):
                llm.n_tokens = n
                t = time.perf_counter()
                config = GreedyConfig(250, 1.1, draft=draft)
                tokens = list(
                    greedy_tokens(llama_cpp, llm, ids[n:], config, chat.stop_ids, grammar, scaf)
                )
                seconds.setdefault(arm, []).append(time.perf_counter() - t)
                texts[arm] = bytes(llm.detokenize(tokens)).decode()
        chain = json.loads(texts["chain"])
        cells = [f"{n_chain} tokens, {statistics.median(seconds['chain']):.1f} s"]
        base = statistics.median(seconds["chain"])
        for arm in ARMS:
            med = statistics.median(seconds[arm])
            same = "same sections" if json.loads(texts[arm]) == chain else "**other text**"
            cells.append(f"{med:.1f} s ({med / base - 1:+.0%}), {same}")
        print(f"| {lang} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
