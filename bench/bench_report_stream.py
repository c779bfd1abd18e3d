"""Time to the first report text in the running service, LLM read-ahead (or drafting) on vs off.

    python bench/bench_report_stream.py --gguf PATH --sha256 HEX [--images 4] [--langs en,ru]
        [--threads 1] [--runs 1] [--compare read-ahead|draft] [--draft-off N]

Two instances of the service (uvicorn on loopback in this process, shipped weights, the same
GGUF, ``--threads`` llama.cpp threads, default settings otherwise: LIME on) differ only in
``report.read_ahead`` (``--compare read-ahead``, the default) or in ``report.draft_tokens``
(``--compare draft``: the default 3 vs ``--draft-off``, 0 unless given). Each instance's
start-up warm-up (``report.warm_up``: the usual prompt leads) is waited for, then one
request per language warms what is left. For each real radiograph (NIH films from
../shared/data/cxr, findings and no findings), language and instance in turn (interleaved,
so load swings hit both), the script POSTs ``/report/stream?debug=true`` and records, from
the start of the request, when the ``evidence`` event (vision done), the first ``draft``
event (first model text), the first ``sentence`` (first grounded text a client shows) and
the ``report`` event arrive (one language after the other: see the comment in ``main``).
The reports' latency goal is measured after the vision evidence: first draft minus evidence.
Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.app import create_app  # noqa: E402
from service.settings import ReportSettings, Settings  # noqa: E402
from tests.live_server import serve_in_thread  # noqa: E402

EVENTS = ("evidence", "draft", "sentence", "report")


def pick_images(n: int) -> list[Path]:
    shared = REPO.parent / "shared" / "data" / "cxr"
    with (shared / "classification.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "nih"]
    positives = [r for r in rows if r["label"] == "1"][: n - n // 2]
    negatives = [r for r in rows if r["label"] == "0"][: n // 2]
    return [shared / r["image"] for pair in zip(positives, negatives, strict=False) for r in pair]


def timed_stream(port: int, image: Path, lang: str) -> dict[str, float]:
    """Seconds from the request's start to the first event of each kind."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    with httpx.stream(
        "POST",
        f"http://127.0.0.1:{port}/report/stream",
        params={"lang": lang, "debug": "true"},
        files={"file": (image.name, image.read_bytes(), "image/jpeg")},
        timeout=600,
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                marks.setdefault(line[7:].strip(), time.perf_counter() - t0)
    if "error" in marks:
        raise RuntimeError(f"the stream ended with an error event: {image.name}")
    return marks


def wait_for_warm_up(port: int, timeout_s: float = 900.0) -> None:
    """Until the instance's background LLM warm-up has read the usual prompt leads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        components = httpx.get(f"http://127.0.0.1:{port}/health/ready").json()["components"]
        if components.get("llm_prompt_cache", True):
            return
        time.sleep(1.0)
    raise TimeoutError("the LLM warm-up did not finish")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--langs", default="en,ru")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--compare", choices=("read-ahead", "draft"), default="read-ahead")
    ap.add_argument("--draft-off", type=int, default=0, help="draft_tokens of the 'off' run")
    a = ap.parse_args()
    langs = a.langs.split(",")
    images = pick_images(a.images)
    ports: dict[bool, int] = {}
    with ExitStack() as stack:
        for ahead in (True, False):  # "on" / "off" of the compared setting
            variant = {"read_ahead": ahead} if a.compare == "read-ahead" else {}
            if a.compare == "draft":
                variant = {"draft_tokens": ReportSettings().draft_tokens if ahead else a.draft_off}
            report = ReportSettings(
                backend="gguf",
                gguf_path=a.gguf,
                gguf_sha256=a.sha256,
                n_threads=a.threads,
                languages=langs,
                **variant,
            )
            app = create_app(Settings(report=report, _env_file=None))  # type: ignore[call-arg]
            ports[ahead] = stack.enter_context(serve_in_thread(app, start_timeout_s=300))
        for port in ports.values():  # warm-up: model load and the prefix cache
            wait_for_warm_up(port)
            for lang in langs:
                timed_stream(port, images[0], lang)
        results: dict[str, list[dict[str, float]]] = {}
        # Language outermost: the in-process model keeps the KV state of one prompt prefix
        # (rules and worked examples, one per language), so alternating languages re-reads
        # ~900-1,300 prefix tokens on every request (measured: +40-60 s with Qwen on 1 thread).
        for _ in range(a.runs):
            for lang in langs:
                for image in images:
                    for ahead, port in ports.items():
                        key = f"{lang}, {a.compare} {'on' if ahead else 'off'}"
                        marks = timed_stream(port, image, lang)
                        results.setdefault(key, []).append(marks)
                        print(  # each request, for the spread behind the medians
                            f"{key}, {image.name}: "
                            + ", ".join(f"{k} {v:.2f}" for k, v in marks.items() if k in EVENTS),
                            file=sys.stderr,
                            flush=True,
                        )
    print(
        f"\n| {a.gguf.stem}, {a.threads} LLM thread(s), LIME on | n | vision (evidence) p50 s "
        "| first text after evidence p50 s | first grounded sentence after evidence p50 s "
        "| full report after evidence p50 s | whole request p50 s |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, rs in results.items():

        def med(f: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[f] - (r["evidence"] if f != "evidence" else 0) for r in rs)

        whole = statistics.median(r["report"] for r in rs)
        print(
            f"| {key} | {len(rs)} | {med('evidence'):.2f} | {med('draft'):.2f} "
            f"| {med('sentence'):.2f} | {med('report'):.2f} | {whole:.2f} |"
        )


if __name__ == "__main__":
    main()
