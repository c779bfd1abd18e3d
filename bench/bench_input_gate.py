"""Cost of the input suitability gate per image (issue 9 goal: <= 5 ms).

    python bench/bench_input_gate.py [--images 300] [--rounds 3]

Times, on real radiographs from ../shared/data/cxr decoded beforehand:

* rules: ``InputGate.precheck`` (working copy, histogram, correlation, document check, ...);
* learned score: ``InputGate.finish`` on the pooled features of the classifier pass that
  /classify, /explain/* and /report run anyway;
* gate total = rules + score (the gate's own cost on those routes);
* /segment also pays one classifier pass for the features (no features of its own): timed too.

Prints a Markdown table for bench/RESULTS.md. The shipped weights must include the fitted gate.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.classify import run_classifier  # noqa: E402
from inference.intake import decode_upload  # noqa: E402
from inference.suitability import NotAChestRadiograph  # noqa: E402
from service.registry import load_registry  # noqa: E402
from service.settings import Settings  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "cxr"


def _images(n: int) -> list[Path]:
    with (SHARED / "classification.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    return [SHARED / rows[i]["image"] for i in rng.choice(len(rows), n, replace=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    registry = load_registry(Settings(_env_file=None))  # type: ignore[call-arg]
    gate = registry.input_gate
    if gate.ood is None:
        raise SystemExit("the weights folder has no fitted input gate (python -m training gate)")
    radiographs = [decode_upload(p.read_bytes()) for p in _images(args.images)]
    pooled = [run_classifier(registry.classifier, [r.pixels])[0].pooled for r in radiographs]
    rules, score, forward = [], [], []
    refused: Counter[str] = Counter()
    for _ in range(args.rounds):
        for r, feats in zip(radiographs, pooled, strict=True):
            t0 = time.perf_counter()
            try:  # a refusal costs the same checks; count it and keep timing
                pre = gate.precheck(r)
                t1 = time.perf_counter()
                gate.finish(pre, feats)
            except NotAChestRadiograph as exc:
                t1 = time.perf_counter()
                refused[exc.reason] += 1
            t2 = time.perf_counter()
            run_classifier(registry.classifier, [r.pixels])
            t3 = time.perf_counter()
            rules.append(t1 - t0)
            score.append(t2 - t1)
            forward.append(t3 - t2)
    total = np.asarray(rules) + np.asarray(score)
    sizes = sorted({f"{r.width}x{r.height}" for r in radiographs})
    print(
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f} at the end."
    )
    print(
        f"Command: `python bench/bench_input_gate.py --images {args.images} --rounds "
        f"{args.rounds}`; {len(radiographs)} real radiographs, {len(sizes)} distinct sizes "
        f"(up to 512 px)."
    )
    print(f"Refusals among these real films (per round): {dict(refused)} / {args.rounds}")
    print()
    print("| what | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, xs in (
        ("rules (precheck)", rules),
        ("learned score (finish)", score),
        ("gate total (rules + score)", total),
        ("classifier pass (paid again by /segment only)", forward),
    ):
        ms = np.asarray(xs) * 1e3
        print(f"| {name} | {np.median(ms):.2f} | {np.percentile(ms, 95):.2f} | {ms.max():.2f} |")


if __name__ == "__main__":
    main()
