"""Greedy decoding with the grammar checked lazily vs llama-cpp-python's sampler chain.

    python bench/bench_greedy.py [--gguf PATH] [--threads 1] [--langs en,ru]

Same GGUF, context, prompt (a report prompt for a finding with two zones, CTR and lung areas;
the last 120 prompt tokens evaluated in both arms), JSON grammar, greedy decoding and repeat
penalty 1.1, back to back in one process: the chain (penalty, grammar over the whole
vocabulary, greedy) against :func:`reporting.greedy.greedy_tokens`. Prints the tokens, the
seconds and whether the texts are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import llama_cpp  # noqa: E402

from reporting.evidence import Evidence, Measurements, ZoneEvidence  # noqa: E402
from reporting.gguf import embedded_gguf_path  # noqa: E402
from reporting.greedy import GreedyConfig, greedy_tokens  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, default=None, help="default: the embedded SmolLM2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--langs", default="en")
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
    print(f"\n| {gguf.name}, {a.threads} thread(s) | chain | lazy check | same text |")
    print("|---|---|---|---|")
    for lang in a.langs.split(","):
        messages = build_messages(EVIDENCE, EVIDENCE.supported_zones(0.25), lang)  # type: ignore[arg-type]
        ids = llm.tokenize(chat.render(messages).encode(), add_bos=True, special=True)
        n = len(ids) - 120
        llm.reset()
        llm.eval(ids[:n])
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
        chain_s = time.perf_counter() - t
        chain = out["choices"][0]["text"]
        llm.n_tokens = n
        t = time.perf_counter()
        config = GreedyConfig(250, 1.1)
        tokens = list(greedy_tokens(llama_cpp, llm, ids[n:], config, chat.stop_ids, grammar))
        lazy_s = time.perf_counter() - t
        lazy = bytes(llm.detokenize(tokens)).decode()
        n_chain = out["usage"]["completion_tokens"]
        print(
            f"| {lang} | {n_chain} tokens in {chain_s:.1f} s | {len(tokens)} tokens in "
            f"{lazy_s:.1f} s ({lazy_s / chain_s - 1:+.0%}) | {'yes' if lazy == chain else 'no'} |"
        )


if __name__ == "__main__":
    main()
