"""Evaluate report writing on real test-split radiographs: who wrote each section, and is it
grounded.

    python bench/eval_reports.py --table runs/cache/images.csv [--gguf PATH --sha256 HEX]
        [--langs en,ru] [--n 20] [--threads 1] [--shard K/N] [--resume] [--out bench/eval_reports]
    python bench/eval_reports.py --merge OUT_0.json OUT_1.json --out OUT

Picks ``--n`` radiographs of the test split (the prepared table of ``python -m training
prepare``), balanced over both classes and over adults (NIH, JSRT, COVID-QU-Ex/RSNA) and
children (Kermany), deterministically, in an interleaved order (one per stratum in turn) so
that any prefix of the run is balanced over the classes. Without ``--gguf`` the embedded
SmolLM2 writes. Runs the service's own pipeline in process (shipped weights, Grad-CAM + LIME,
the CTR and lung areas) once per image, then writes the report in every language with the
chosen GGUF. Records per report: the provenance of each section (llm / llm_filtered /
template), the sentences the grounding check removed and why, the re-check of the final text
(unsupported claims left), the language mode, the prompt version and the timings.
``--resume`` keeps the reports already in ``OUT.json`` that were written with the same prompt
(sha256) and writes only the missing ones, so a long run can be stopped and continued. Writes
``OUT.json`` and ``OUT.md`` (every report in full, for
reading) and prints the per-language summary."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from reporting.prompt import DEFAULT_TEMPLATE  # noqa: E402
from reporting.schema import SECTION_NAMES  # noqa: E402
from service.app import create_app  # noqa: E402
from service.report_usecase import ReportService  # noqa: E402
from service.settings import ReportSettings, Settings  # noqa: E402

# (source, label, population, how many): 12 adults, 8 children, 10 positives, 10 negatives.
PLAN = (
    ("nih", "1", "adult", 3),
    ("nih", "0", "adult", 3),
    ("jsrt", "1", "adult", 2),
    ("jsrt", "0", "adult", 2),
    ("covidqu", "1", "adult", 1),
    ("covid19rad", "0", "adult", 1),
    ("kermany", "1", "child", 4),
    ("kermany", "0", "child", 4),
)


def pick(table: Path, n: int, seed: int = 11) -> list[dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as fh:
        rows = [
            r
            for r in csv.DictReader(fh)
            if r["split"] == "test"
            and int(r["cls_index"]) >= 0
            and not r["duplicate_of"]
            and r["label"] in ("0", "1")
        ]
    rng = random.Random(seed)
    strata: list[list[dict[str, str]]] = []
    for source, label, population, count in PLAN:
        pool = sorted(
            (r for r in rows if r["source"] == source and r["label"] == label),
            key=lambda r: r["image"],
        )
        strata.append([{**r, "population": population} for r in rng.sample(pool, count)])
    # round-robin over the strata: a run stopped early still covers both classes
    out = [s[i] for i in range(max(len(s) for s in strata)) for s in strata if i < len(s)]
    return out[:n]


def _record(row: dict[str, str], lang: str, o: Any, vision_ms: float) -> dict[str, Any]:
    r = o.report
    e = r.evidence
    m = e.measurements
    return {
        "image": Path(row["image"]).name,
        "source": row["source"],
        "label": int(row["label"]),
        "population": row["population"],
        "view": row["view"],
        "lang": lang,
        "decision": e.decision,
        "probability": e.probability_finding,
        "ctr": None if m is None else m.ctr,
        "ctr_reliable": None if m is None else m.ctr_reliable,
        "mode": r.language_mode,
        "prompt_version": r.reproducibility.prompt_template_version,
        "prompt_sha256": r.reproducibility.prompt_template_sha256,
        "provenance": dict(r.provenance),
        "sections": {n: r.sections.get(n) for n in SECTION_NAMES},
        "raw": r.generation.text,
        "removed": [
            {"section": x.section, "reason": x.reason, "detail": x.detail, "text": x.text}
            for x in r.grounding.removed
        ],
        "unsupported_claims_left": r.grounding.unsupported_claims_left,
        "vision_s": vision_ms / 1000,
        "llm_s": o.timings.llm_ms / 1000,
        "tokens": r.generation.tokens,
        "first_text_s": r.generation.first_text_seconds,
    }


def summarise(records: list[dict[str, Any]], lang: str) -> dict[str, Any]:
    rs = [r for r in records if r["lang"] == lang]
    prov = Counter(p for r in rs for p in r["provenance"].values())
    model = prov["llm"] + prov["llm_filtered"]
    total = sum(prov.values())
    return {
        "lang": lang,
        "reports": len(rs),
        "sections": total,
        "model_written_share": model / total if total else None,
        "llm": prov["llm"],
        "llm_filtered": prov["llm_filtered"],
        "template": prov["template"],
        "removed_sentences": sum(len(r["removed"]) for r in rs),
        "removal_reasons": dict(Counter(x["reason"] for r in rs for x in r["removed"])),
        "unsupported_claims_left": sum(r["unsupported_claims_left"] for r in rs),
        "native": sum(r["mode"] == "native" for r in rs),
        "llm_s_p50": statistics.median(r["llm_s"] for r in rs) if rs else None,
    }


def _markdown(records: list[dict[str, Any]]) -> str:
    out = []
    for r in records:
        out.append(
            f"### {r['image']} ({r['source']}, {r['population']}, label {r['label']}, "
            f"{r['view']}) — {r['lang']}\n"
        )
        out.append(
            f"decision {r['decision']}, p={r['probability']:.4f}, CTR {r['ctr']} "
            f"(reliable {r['ctr_reliable']}), mode {r['mode']}, LLM {r['llm_s']:.1f} s\n"
        )
        for name in SECTION_NAMES:
            out.append(f"- **{name}** ({r['provenance'][name]}): {r['sections'][name]}")
        for x in r["removed"]:
            out.append(f"  - removed [{x['section']}, {x['reason']}: {x['detail']}]: {x['text']}")
        out.append("")
    return "\n".join(out)


def merge(parts: list[Path], out: Path, langs: list[str]) -> None:
    """Combine shard outputs (``--shard``) into one summary, JSON and Markdown."""
    records: list[dict[str, Any]] = []
    for part in parts:
        data = json.loads(part.read_text())
        records += data["records"] if isinstance(data, dict) else data
    summary = [summarise(records, lang) for lang in langs]
    out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "records": records}, indent=1, ensure_ascii=False)
    )
    out.with_suffix(".md").write_text(_markdown(records), encoding="utf-8")
    for s in summary:
        print(json.dumps(s, ensure_ascii=False))


def _previous(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return list(data["records"] if isinstance(data, dict) else data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="shard JSONs to combine")
    ap.add_argument("--table", type=Path, default=None)
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--sha256", default=None)
    ap.add_argument("--langs", default="en,ru")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "eval_reports")
    ap.add_argument("--resume", action="store_true", help="keep OUT.json's reports, add the rest")
    ap.add_argument(
        "--shard", default="0/1", help="K/N: run every N-th picked image from the K-th (0-based)"
    )
    args = ap.parse_args(argv)
    langs = args.langs.split(",")
    if args.merge:
        merge(args.merge, args.out, langs)
        return 0
    if args.table is None:
        ap.error("--table is required")
    report = (
        ReportSettings(  # type: ignore[call-arg]
            backend="gguf",
            gguf_path=args.gguf,
            gguf_sha256=args.sha256,
            languages=["en", "ru"],
            n_threads=args.threads,
        )
        if args.gguf is not None
        else ReportSettings(n_threads=args.threads)  # type: ignore[call-arg]
    )
    settings = Settings(report=report, _env_file=None)  # type: ignore[call-arg]
    records = _previous(args.out.with_suffix(".json")) if args.resume else []
    with TestClient(create_app(settings)) as client:
        service: ReportService = client.app_state["report"]  # type: ignore[attr-defined]
        k, n_shards = (int(x) for x in args.shard.split("/"))
        sha = DEFAULT_TEMPLATE.sha256  # the template the service's generator uses
        records = [r for r in records if r.get("prompt_sha256") == sha]
        done = {(r["image"], r["lang"]) for r in records}
        for i, row in enumerate(pick(args.table, args.n)[k::n_shards]):
            todo = [lang for lang in langs if (Path(row["image"]).name, lang) not in done]
            if not todo:
                continue
            data = Path(row["image"]).read_bytes()
            t0 = time.perf_counter()
            vision = asyncio.run(service.evidence(data, True))
            vision_ms = (time.perf_counter() - t0) * 1000
            for lang in todo:
                o = asyncio.run(service.write(vision, lang, False, vision_ms))  # type: ignore[arg-type]
                records.append(_record(row, lang, o, vision_ms))
                rec = records[-1]
                print(
                    f"{i + 1:2d} {rec['image'][:24]:24s} {lang} {rec['decision']:10s} "
                    f"{'/'.join(p[:4] for p in rec['provenance'].values())} "
                    f"removed {len(rec['removed'])} llm {rec['llm_s']:.1f}s",
                    flush=True,
                )
            args.out.with_suffix(".json").write_text(
                json.dumps(records, indent=1, ensure_ascii=False)
            )
    summary = [summarise(records, lang) for lang in langs]
    args.out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "records": records}, indent=1, ensure_ascii=False)
    )
    args.out.with_suffix(".md").write_text(_markdown(records), encoding="utf-8")
    for s in summary:
        print(json.dumps(s, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
