"""Cluster vs single process under a mixed load (issue 13).

    python bench/bench_cluster.py [--clients 16] [--duration 90] [--replicas 2] [--workers 2]
                                  [--modes single,cluster] [--out]

Each mode serves the shipped weights on this machine's cores:

- ``single``: one ``python -m service`` process, jobs in memory (the laptop default);
- ``cluster``: ``scripts/cluster.sh up --replicas R --workers W`` (redis, workers at nice 10 with
  one ONNX Runtime thread each, API replicas, nginx) and the load goes through nginx.

``--clients`` closed-loop clients, each with its own connection: 5/8 POST /classify, 1/4 LIME
jobs (POST /explain/lime/jobs, 200 samples, then poll every 0.5 s until done), 1/8 report jobs
(POST /report/jobs, with LIME, then poll), all on real radiographs from ../shared (at most
512 px, as stored there). A 503 with Retry-After is an accepted refusal: the client waits
Retry-After (at most 2 s) and goes on; anything else that is not 2xx is an error. Meanwhile
/metrics is read every 2 s to see whether the job workers are saturated (jobs active >= workers).
The summary is printed as markdown and, with ``--out``, appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_classify import free_port, start_server  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cxr" / "images"
IMAGES = ["jsrt/JPCLN001.jpg", "nih/00000061_012.jpg", "jsrt/JPCLN002.jpg", "nih/00000061_015.jpg"]
CLIENT_TIMEOUT_S = 60.0
POLL_S = 0.5


@dataclass
class Run:
    classify_s: list[float] = field(default_factory=list)
    classify_saturated_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    jobs_done: Counter[str] = field(default_factory=Counter)
    job_s: dict[str, list[float]] = field(default_factory=dict)
    saturated_samples: list[bool] = field(default_factory=list)
    saturated_now: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, op: str, r: httpx.Response | None, error: str = "") -> bool:
        """Record one answer; True when it was accepted (2xx)."""
        with self.lock:
            if r is None:
                self.errors[f"{op}: {error}"] += 1
                return False
            self.statuses[f"{op} {r.status_code}"] += 1
            if r.status_code == 503 and "retry-after" in r.headers:
                return False
            if not 200 <= r.status_code < 300:
                self.errors[f"{op}: HTTP {r.status_code}"] += 1
            return 200 <= r.status_code < 300


def _retry_wait(r: httpx.Response | None) -> float:
    if r is not None and r.status_code == 503 and "retry-after" in r.headers:
        return min(float(r.headers["retry-after"]), 2.0)
    return 0.0


def _post(client: httpx.Client, url: str, blob: bytes, **params: int | str) -> httpx.Response:
    return client.post(url, params=params, files={"file": ("x.jpg", blob, "image/jpeg")})


def classify_client(
    base: str, blobs: list[bytes], run: Run, stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r: httpx.Response | None = _post(client, "/classify", rng.choice(blobs))
            except httpx.HTTPError as exc:
                r, err = None, type(exc).__name__
            else:
                err = ""
            took = time.perf_counter() - t0
            if run.note("classify", r, err):
                with run.lock:
                    run.classify_s.append(took)
                    if run.saturated_now.is_set():
                        run.classify_saturated_s.append(took)
            time.sleep(_retry_wait(r))


def job_client(
    base: str,
    route: str,
    params: dict[str, int | str],
    blobs: list[bytes],
    run: Run,
    stop: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = _post(client, route, rng.choice(blobs), **params)
            except httpx.HTTPError as exc:
                run.note(route, None, type(exc).__name__)
                time.sleep(1.0)
                continue
            if not run.note(route, r):
                time.sleep(_retry_wait(r) or 1.0)
                continue
            url = r.json()["status_url"]
            while not stop.is_set():
                time.sleep(POLL_S)
                try:
                    g: httpx.Response | None = client.get(url)
                except httpx.HTTPError as exc:
                    run.note(route + " poll", None, type(exc).__name__)
                    break
                if g is None or not run.note(route + " poll", g):
                    break
                state = g.json()["state"]
                if state not in ("queued", "running"):
                    with run.lock:
                        run.jobs_done[f"{route} {state}"] += 1
                        run.job_s.setdefault(route, []).append(time.perf_counter() - t0)
                    break


def watch_saturation(base: str, workers: int, run: Run, stop: threading.Event) -> None:
    pattern = re.compile(r"^cxr_jobs_active(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.wait(2.0):
            try:
                m = pattern.search(client.get("/metrics").text)
            except httpx.HTTPError:
                continue
            busy = m is not None and float(m.group(1)) >= workers
            (run.saturated_now.set if busy else run.saturated_now.clear)()
            with run.lock:
                run.saturated_samples.append(busy)


def drive(base: str, clients: int, duration: float, workers: int) -> Run:
    blobs = [(DATA / name).read_bytes() for name in IMAGES]
    run, stop = Run(), threading.Event()
    n_lime, n_report = clients // 4, max(1, clients // 8)
    n_classify = clients - n_lime - n_report
    threads = [
        threading.Thread(target=classify_client, args=(base, blobs, run, stop, i))
        for i in range(n_classify)
    ]
    threads += [
        threading.Thread(
            target=job_client,
            args=(base, "/explain/lime/jobs", {"n_samples": 200}, blobs, run, stop, 100 + i),
        )
        for i in range(n_lime)
    ]
    threads += [
        threading.Thread(
            target=job_client, args=(base, "/report/jobs", {}, blobs, run, stop, 200 + i)
        )
        for i in range(n_report)
    ]
    threads.append(threading.Thread(target=watch_saturation, args=(base, workers, run, stop)))
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT_S + 5)
    return run


@contextmanager
def single_process() -> Iterator[str]:
    port = free_port()
    proc = start_server(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def cluster(replicas: int, workers: int) -> Iterator[str]:
    state = tempfile.mkdtemp(prefix="cxr-bench-cluster-")
    env = {**os.environ, "CXR_CLUSTER_DIR": state, "CXR_LOG_LEVEL": "warning"}
    script = str(REPO / "scripts" / "cluster.sh")
    try:
        done = subprocess.run(
            [script, "up", "--replicas", str(replicas), "--workers", str(workers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh up failed: {done.stderr[-2000:]}")
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "down"], env=env, timeout=300, check=False)


def _pct(xs: list[float], q: float) -> str:
    if not xs:
        return "-"
    s = sorted(xs)
    return f"{s[min(len(s) - 1, int(q * len(s)))]:.3f}"


def summary_row(mode: str, run: Run, duration: float) -> str:
    refused = sum(v for k, v in run.statuses.items() if k.endswith(" 503"))
    sat = run.saturated_samples
    saturated = f"{100 * sum(sat) / len(sat):.0f} %" if sat else "-"
    lime = sum(v for k, v in run.jobs_done.items() if k.startswith("/explain/lime/jobs"))
    reports = sum(v for k, v in run.jobs_done.items() if k.startswith("/report/jobs"))
    lime_s = statistics.median(run.job_s.get("/explain/lime/jobs", [0.0]) or [0.0])
    return (
        f"| {mode} | {len(run.classify_s) / duration:.1f} | {_pct(run.classify_s, 0.5)} | "
        f"{_pct(run.classify_s, 0.99)} | {_pct(run.classify_saturated_s, 0.99)} "
        f"({len(run.classify_saturated_s)}) | {lime} | {lime_s:.1f} | {reports} | {refused} | "
        f"{sum(run.errors.values())} | {saturated} |"
    )


HEADER = (
    "| mode | classify/s | classify p50 s | classify p99 s | classify p99 s while workers "
    "saturated (n) | LIME jobs done | LIME job median s | report jobs done | 503 + Retry-After | "
    "errors | time workers saturated |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="single,cluster")
    parser.add_argument("--out", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    rows, details = [], []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for mode in args.modes.split(","):
        server = single_process() if mode == "single" else cluster(args.replicas, args.workers)
        # Single process: its in-memory job queue runs one LIME at a time (the LIME gate).
        workers = 1 if mode == "single" else args.workers
        with server as base:
            run = drive(base, args.clients, args.duration, workers)
        rows.append(summary_row(mode, run, args.duration))
        details.append(f"- {mode}: statuses {dict(run.statuses)}; errors {dict(run.errors)}")
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            f"\n### Cluster vs single process ({started}, {os.cpu_count()} cores, shared)\n",
            HEADER,
            *rows,
            "",
            *details,
            "",
            f"Command: `python bench/bench_cluster.py --clients {args.clients} --duration "
            f"{args.duration:.0f} --replicas {args.replicas} --workers {args.workers}`",
        ]
    )
    print(text)
    if args.out:
        with (REPO / "bench" / "RESULTS.md").open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
