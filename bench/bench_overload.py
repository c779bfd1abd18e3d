"""Overload (G1) and soak (G3) runs against the real server, as ops would run them.

    python bench/bench_overload.py overload [--clients 32] [--duration 60]
    python bench/bench_overload.py soak [--clients 2] [--duration 600]

Starts ``python -m service`` (shipped weights, default settings) on 127.0.0.1 and drives it with
closed-loop clients that each keep one connection: 80 % /classify, 15 % /explain/gradcam, 5 %
/explain/lime, on real radiographs from ../shared upscaled to clinical sizes (2-5 MP 16-bit PNG
and 10-20 MB uncompressed DICOM, built in memory). Meanwhile it probes /health/live twice a
second and samples the server's RSS, open file descriptors and threads. Overload first measures
a single client with the same mix (the goodput baseline). Results are printed as markdown with
the goals from ../shared/docs/hostile-inputs.md (G1, G3) computed, and appended to
``bench/RESULTS.md`` with ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_classify import free_port, start_server  # noqa: E402
from tests.factories import dicom_bytes, dicom_dataset  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cxr" / "images"
SOURCES = ["nih/00000061_012.jpg", "jsrt/JPCLN001.jpg", "nih/00000061_015.jpg"]
MIX = (("classify", 0.80), ("explain/gradcam", 0.15), ("explain/lime", 0.05))
CLIENT_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------- payloads
def _upscaled(name: str, size: tuple[int, int]) -> np.ndarray:
    img = Image.open(DATA / name).convert("L").resize(size, Image.Resampling.BICUBIC)
    return (np.asarray(img, dtype=np.uint16) * 16).astype(np.uint16)  # 12 bits in 16


def payloads() -> list[bytes]:
    """Clinical-size uploads: 16-bit PNGs of 2.5 and 5 MP, DICOMs of ~10 and ~18 MB."""
    out = []
    for i, name in enumerate(SOURCES):
        size = (2500, 2048) if i % 2 == 0 else (1800, 1400)
        buf = io.BytesIO()
        Image.fromarray(_upscaled(name, size)).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    for size in ((2500, 2048), (3000, 3000)):
        pixels = _upscaled(SOURCES[0], size)
        out.append(dicom_bytes(dicom_dataset(pixels, bits_stored=12)))
    return out


# ------------------------------------------------------------------------------- recording
@dataclass
class Outcome:
    op: str
    status: int  # 0 = client-side error or timeout
    latency_s: float
    retry_after: bool
    problem_json: bool
    error: str = ""


@dataclass
class Monitor:
    pid: int
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    live_ms: list[float] = field(default_factory=list)

    def sample(self, started: float) -> None:
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        self.rss_mb.append((time.monotonic() - started, int(fields["VmRSS"].split()[0]) / 1024))
        self.threads.append(int(fields["Threads"]))
        self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))


def rss_now(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def tmp_files() -> int:
    import tempfile

    return len(os.listdir(tempfile.gettempdir()))


def run_load(
    port: int,
    blobs: list[bytes],
    clients: int,
    duration: float,
    seed: int,
    monitor: Monitor,
    honor_retry_after: bool = True,
) -> tuple[list[Outcome], float]:
    stop = threading.Event()
    results: list[Outcome] = []
    lock = threading.Lock()
    started = time.monotonic()

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        ops, weights = [op for op, _ in MIX], [w for _, w in MIX]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=CLIENT_TIMEOUT_S) as c:
            while not stop.is_set():
                op = rng.choices(ops, weights)[0]
                blob = rng.choice(blobs)
                t0 = time.perf_counter()
                try:
                    r = c.post(f"/{op}", files={"file": ("x", blob, "application/octet-stream")})
                    out = Outcome(
                        op,
                        r.status_code,
                        time.perf_counter() - t0,
                        "retry-after" in r.headers,
                        r.headers.get("content-type", "").startswith("application/problem+json"),
                    )
                except httpx.HTTPError as exc:
                    out = Outcome(op, 0, time.perf_counter() - t0, False, False, type(exc).__name__)
                with lock:
                    results.append(out)
                if out.retry_after and honor_retry_after:
                    # What an integration engine does with 503 + Retry-After: wait, then retry.
                    stop.wait(float(r.headers["retry-after"]))

    def probe() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    c.get("/health/live")
                    monitor.live_ms.append((time.perf_counter() - t0) * 1000)
                except httpx.HTTPError:
                    monitor.live_ms.append(5000.0)
                with contextlib.suppress(OSError, KeyError, ValueError):
                    monitor.sample(started)
                stop.wait(0.5)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    workers.append(threading.Thread(target=probe))
    for w in workers:
        w.start()
    stop.wait(duration)
    stop.set()
    for w in workers:
        w.join(CLIENT_TIMEOUT_S + 5)
    return results, time.monotonic() - started


# ------------------------------------------------------------------------------- summaries
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def table(results: list[Outcome], wall: float) -> list[str]:
    lines = ["| operation | requests | status counts | accepted p50 s | accepted p99 s |"]
    lines.append("|---|---:|---|---:|---:|")
    for op, _ in MIX:
        mine = [r for r in results if r.op == op]
        ok = [r.latency_s for r in mine if 200 <= r.status < 300]
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(r.status for r in mine).items()))
        lines.append(
            f"| {op} | {len(mine)} | {counts} | {pct(ok, 0.5):.2f} | {pct(ok, 0.99):.2f} |"
        )
    lines.append(f"\nGoodput {goodput(results, wall):.2f} req/s over {wall:.0f} s.")
    return lines


@contextlib.contextmanager
def serving() -> Iterator[tuple[int, int]]:
    """The real server on a free loopback port: yields (port, pid), stops it afterwards."""
    port = free_port()
    proc = start_server(port)
    try:
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=40)


def goodput(results: list[Outcome], wall: float) -> float:
    return sum(1 for r in results if 200 <= r.status < 300) / wall


def overload(args: argparse.Namespace) -> list[str]:
    blobs = payloads()
    with serving() as (port, pid):
        monitor = Monitor(pid)
        base_rss, base_tmp = rss_now(pid), tmp_files()
        single, single_wall = run_load(port, blobs, 1, args.baseline, args.seed, Monitor(pid))
        single_goodput = goodput(single, single_wall)
        results, wall = run_load(
            port, blobs, args.clients, args.duration, args.seed, monitor, not args.hammer
        )
        time.sleep(30)
        after_rss, after_tmp = rss_now(pid), tmp_files()

    errors = [r for r in results if r.status == 0]
    server_errors = [r for r in results if r.status >= 500 and r.status != 503]
    refused = [r for r in results if r.status in (429, 503)]
    other_4xx = [r for r in results if 400 <= r.status < 500 and r.status != 429]
    clean_refusals = all(r.retry_after and r.problem_json for r in refused)
    classify_ok = [r.latency_s for r in results if r.op == "classify" and r.status == 200]
    good = goodput(results, wall)
    peak_rss = max(v for _, v in monitor.rss_mb)
    refused_p99 = pct([r.latency_s for r in refused], 0.99)

    def verdict(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    lines = [
        f"Command: `python bench/bench_overload.py overload --clients {args.clients} "
        f"--duration {args.duration:.0f}{' --hammer' if args.hammer else ''}`; clients "
        f"{'ignore' if args.hammer else 'honour'} Retry-After; {len(blobs)} uploads of "
        f"{min(map(len, blobs)) / 1e6:.1f}-{max(map(len, blobs)) / 1e6:.1f} MB; load average "
        f"at the end {os.getloadavg()[0]:.1f}.\n",
        f"Single client, same mix, {args.baseline:.0f} s (baseline): goodput "
        f"{single_goodput:.2f} req/s.\n",
        f"{args.clients} clients, {args.duration:.0f} s:\n",
        *table(results, wall),
        "",
        "G1 checks:",
        f"- 500/502/504 responses: {len(server_errors)}; client-side errors or timeouts: "
        f"{len(errors)} ({Counter(e.error for e in errors).most_common(3)}) -> "
        f"{verdict(not server_errors and not errors)}",
        f"- refusals (503/429): {len(refused)}, all with Retry-After and problem+json: "
        f"{clean_refusals}; p99 {refused_p99 * 1000:.0f} ms (goal <= 100 ms) -> "
        f"{verdict(clean_refusals and (not refused or refused_p99 <= 0.1))}",
        f"- other 4xx: {len(other_4xx)} (expected 0)",
        f"- accepted /classify p99 {pct(classify_ok, 0.99):.2f} s (goal <= 2.0 s) -> "
        f"{verdict(pct(classify_ok, 0.99) <= 2.0)}",
        f"- goodput {good:.2f} vs single-client {single_goodput:.2f} req/s = "
        f"{good / single_goodput:.2f} (goal >= 0.90) -> "
        f"{verdict(good >= 0.9 * single_goodput)}",
        f"- /health/live p99 {pct(monitor.live_ms, 0.99):.0f} ms (goal <= 100 ms) -> "
        f"{verdict(pct(monitor.live_ms, 0.99) <= 100)}",
        f"- RSS: before {base_rss:.0f} MB, peak {peak_rss:.0f} MB (goal <= before + 2048), "
        f"30 s after {after_rss:.0f} MB (goal within 10 % of before: "
        f"{verdict(after_rss <= 1.1 * base_rss)})",
        f"- temp-dir entries before/after: {base_tmp}/{after_tmp}",
    ]
    return lines


def soak(args: argparse.Namespace) -> list[str]:
    blobs = payloads()
    with serving() as (port, pid):
        monitor = Monitor(pid)
        base_tmp = tmp_files()
        results, wall = run_load(port, blobs, args.clients, args.duration, args.seed, monitor)
        after_tmp = tmp_files()
    # RSS moves by hundreds of MB with whatever is in flight (a 5 MP LIME holds ~0.5 GB), so
    # retained memory is read from each minute's floor (its lowest sample), not one sample.
    minutes: dict[int, list[float]] = {}
    for t, v in monitor.rss_mb:
        minutes.setdefault(int(t // 60), []).append(v)
    floors = {m: min(v) for m, v in sorted(minutes.items())}
    last = max(floors)
    t2 = (120.0, floors.get(2, floors[min(floors)]))
    end = (60.0 * last, floors[last])
    per_minute = ", ".join(f"{m}: {floors[m]:.0f}/{max(minutes[m]):.0f}" for m in sorted(floors))
    n = len(monitor.fds)
    early = slice(n // 5, n // 5 + 5)
    fds_early, fds_end = statistics.median(monitor.fds[early]), statistics.median(monitor.fds[-5:])
    thr_early = statistics.median(monitor.threads[early])
    thr_end = statistics.median(monitor.threads[-5:])
    server_errors = [r for r in results if r.status >= 500 and r.status != 503]
    errors = [r for r in results if r.status == 0]
    peak = max(v for _, v in monitor.rss_mb)
    return [
        f"Command: `python bench/bench_overload.py soak --clients {args.clients} --duration "
        f"{args.duration:.0f}`.\n",
        *table(results, wall),
        "",
        "G3 checks:",
        f"- RSS floor (lowest sample of the minute) in minute 2: {t2[1]:.0f} MB, in the last "
        f"minute: {end[1]:.0f} MB: growth {end[1] - t2[1]:+.0f} MB (goal <= 100 MB); peak "
        f"{peak:.0f} MB",
        f"- RSS per minute, floor/peak MB: {per_minute}",
        f"- open fds {fds_early:.0f} -> {fds_end:.0f}, threads {thr_early:.0f} -> {thr_end:.0f} "
        "(goal: drift <= 5 %)",
        f"- 5xx other than 503: {len(server_errors)}, client errors: {len(errors)} (goal 0)",
        f"- temp-dir entries before/after: {base_tmp}/{after_tmp}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["overload", "soak"])
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--baseline", type=float, default=30.0, help="single-client seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--hammer", action="store_true", help="clients ignore Retry-After and retry at once"
    )
    parser.add_argument("--out", type=Path, default=None, help="append the result here")
    args = parser.parse_args()
    if args.mode == "overload":
        args.clients, args.duration = args.clients or 32, args.duration or 60.0
        lines = overload(args)
    else:
        args.clients, args.duration = args.clients or 2, args.duration or 600.0
        lines = soak(args)
    title = f"\n### {args.mode} run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n"
    text = title + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
