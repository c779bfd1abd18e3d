"""Batch CLI throughput and agreement with the API (issue 12).

    python bench/bench_batch.py [--images 200] [--out]

Takes ``--images`` real radiographs from ../shared/data/cxr (every k-th row of
classification.csv, so all sources appear), links them into a temporary folder and:

1. runs ``python -m service.batch DIR --out results.csv`` as a subprocess (wall time includes
   interpreter start, model loading and warm-up);
2. runs the same batch in process, timing only the loop (``service.batch.run``), for the
   steady-state images/s;
3. posts every image to the API's ``/classify`` (in-process ASGI client, shipped weights) and
   checks that probability, decision and threshold equal the CSV's for every file.

Prints a markdown summary; ``--out`` appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "data" / "cxr").resolve()
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from service import batch  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402


def pick(n: int) -> list[Path]:
    with (SHARED / "classification.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // n)
    return [SHARED / r["image"] for r in rows[::step][:n]]


def link(images: list[Path], folder: Path) -> None:
    for i, src in enumerate(images):
        (folder / f"{i:04d}_{src.name}").symlink_to(src)


def cli(folder: Path, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.batch", str(folder), "--out", str(out)],
        cwd=REPO,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def in_process(folder: Path, out: Path) -> tuple[float, float]:
    settings = Settings()
    t0 = time.perf_counter()
    services = batch.build_services(settings, with_llm=False)
    load_s = time.perf_counter() - t0
    opts = batch.Options(folder, out, "csv", False, "en", True)
    t1 = time.perf_counter()
    asyncio.run(batch.run(opts, services, settings.limits.max_upload_bytes))
    return load_s, time.perf_counter() - t1


def compare(folder: Path, results: Path) -> tuple[int, int, float]:
    with results.open(encoding="utf-8", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    equal = 0
    t0 = time.perf_counter()
    with TestClient(create_app(Settings())) as client:
        for path in sorted(folder.iterdir()):
            api = client.post("/classify", files={"file": ("x", path.read_bytes())}).json()
            row = rows[path.name]
            same = (
                row["status"] == "ok"
                and float(row["probability_finding"]) == api["probability_finding"]
                and row["decision"] == api["decision"]
                and float(row["threshold"]) == api["threshold"]
            )
            equal += same
    return equal, len(rows), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--out", action="store_true", help="append the summary to bench/RESULTS.md")
    args = ap.parse_args()
    images = pick(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        link(images, folder)
        cli_s = cli(folder, Path(tmp) / "cli.csv")
        load_s, loop_s = in_process(folder, Path(tmp) / "inproc.csv")
        equal, total, api_s = compare(folder, Path(tmp) / "cli.csv")
    n = len(images)
    load = os.getloadavg()[0]
    lines = [
        "",
        "## Batch CLI (issue 12): `bench/bench_batch.py`",
        "",
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; the machine was SHARED "
        f"with other sessions and training (load average {load:.1f} at the end), so absolute "
        "figures are pessimistic. Shipped weights, classification only (no --report).",
        f"Command: `python bench/bench_batch.py --images {n}` ({n} real radiographs from "
        "../shared, every k-th row of classification.csv, all sources).",
        "",
        "| what | seconds | images/s |",
        "|---|---:|---:|",
        f"| `python -m service.batch` subprocess, wall (start-up + models + {n} files) "
        f"| {cli_s:.1f} | {n / cli_s:.1f} |",
        f"| in process: model loading + warm-up | {load_s:.1f} | |",
        f"| in process: the {n}-file loop only | {loop_s:.1f} | {n / loop_s:.1f} |",
        f"| API /classify, same files one by one (in-process ASGI client) | {api_s:.1f} "
        f"| {n / api_s:.1f} |",
        "",
        f"Agreement with the API: {equal}/{total} files have the same probability (6 decimals), "
        "decision and threshold in the CSV as in the /classify answer.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with (REPO / "bench" / "RESULTS.md").open("a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
