"""Benchmark /classify against bare ONNX Runtime and torch eager, in one run.

    python bench/bench_classify.py [--requests 200] [--image PATH] [--out bench/RESULTS.md]

Starts the real server (uvicorn, shipped weights, default settings) on 127.0.0.1, measures
closed-loop latency p50/p99 and throughput at 1 and 16 concurrent clients, then measures on
the same machine (a) ``InferenceSession.run`` on the same classifier and the same preprocessed
input (with the service's thread setting and with ORT's default), and (b) the same network in
torch eager mode. Results are appended to ``bench/RESULTS.md`` with the machine and command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.intake import decode_upload  # noqa: E402
from inference.preprocess import batch_inputs  # noqa: E402
from inference.sessions import RuntimeOptions, load_verified_model  # noqa: E402
from service.settings import Settings  # noqa: E402

DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "cxr" / "images" / "nih" / "00000013_005.jpg"


@dataclass(frozen=True)
class Result:
    name: str
    clients: int
    p50_ms: float
    p99_ms: float
    throughput: float


def summarise(name: str, clients: int, latencies: list[float], wall: float) -> Result:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return Result(name, clients, statistics.median(ordered) * 1000, p99 * 1000, len(ordered) / wall)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CXR_PORT": str(port), "CXR_HOST": "127.0.0.1", "CXR_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def http_load(url: str, payload: bytes, clients: int, total: int) -> Result:
    latencies: list[float] = []
    remaining = total

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            r = await client.post(url, files={"file": ("x.jpg", payload, "image/jpeg")})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"unexpected status {r.status_code}")

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for _ in range(3):  # warm
            await client.post(url, files={"file": ("x.jpg", payload, "image/jpeg")})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return summarise("service /classify (HTTP)", clients, latencies, wall)


def closed_loop(name: str, fn: Callable[[], object], clients: int, total: int) -> Result:
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        fn()
    latencies: list[float] = []

    def one(_: int) -> None:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(total)))
    return summarise(name, clients, latencies, time.perf_counter() - t0)


def bare_ort(batch: np.ndarray, threads: int | None, clients: int, total: int) -> Result:
    import onnxruntime as ort

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    model_path = settings.weights_dir / "classifier.onnx"
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    label = f"bare InferenceSession.run (intra_op={threads or 'default'})"
    return closed_loop(label, lambda: session.run(None, {"image": batch}), clients, total)


def torch_eager(batch: np.ndarray, clients: int, total: int) -> Result | None:
    try:
        import torch

        from training.models import build_classifier
    except ImportError:
        return None
    model = build_classifier().eval()  # same architecture; latency does not depend on weights
    x = torch.from_numpy(batch)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return closed_loop(f"torch eager (threads={torch.get_num_threads()})", run, clients, total)


def write(results: list[Result], args: argparse.Namespace, out: Path) -> None:
    cpu = platform.processor() or platform.machine()
    lines = [
        f"\n## /classify benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}.",
        f"Command: `python bench/bench_classify.py --requests {args.requests}`; image "
        f"`{args.image.name}`.\n",
        "| what | clients | p50 ms | p99 ms | throughput req/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.clients} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.throughput:.1f} |"
        for r in results
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with out.open("a", encoding="utf-8") as fh:
        fh.write(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args()
    payload = args.image.read_bytes()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    model = load_verified_model(
        settings.weights_dir / settings.classifier_manifest, RuntimeOptions(intra_op_threads=1)
    )
    batch = batch_inputs([decode_upload(payload).pixels], model.manifest.input_spec)
    service_threads = settings.concurrency.threads_per_call()

    results: list[Result] = []
    port = free_port()
    proc = start_server(port)
    try:
        for clients in (1, 16):
            results.append(
                asyncio.run(http_load(f"http://127.0.0.1:{port}/classify", payload, clients, args.requests))
            )
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    for threads in (service_threads, None):
        for clients in (1, 16):
            results.append(bare_ort(batch, threads, clients, args.requests))
    for clients in (1, 16):
        r = torch_eager(batch, clients, max(20, args.requests // 4))
        if r:
            results.append(r)
    write(results, args, args.out)


if __name__ == "__main__":
    main()
