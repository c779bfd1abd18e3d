"""Benchmark /classify against bare ONNX Runtime and torch eager, in one run.

    python bench/bench_classify.py [--requests 300] [--rounds 3] [--image PATH] [--out ...]

Starts the real server (uvicorn, shipped weights, default settings) on 127.0.0.1, measures
closed-loop latency p50/p99 and throughput at 1 and 16 concurrent clients, then measures on
the same machine (a) ``InferenceSession.run`` on the same classifier and the same preprocessed
input (with the service's session options and with ORT's defaults), (b) the same decode +
pre-process + run in process, without HTTP (what a script would do), and (c) the same network in
torch eager mode. Several interleaved rounds, median per figure (the VM's timing noise is
larger than the differences measured). Results are appended to ``bench/RESULTS.md`` with the
machine, the command and the issue's two goals computed from the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.classify import manifest_calibration, postprocess, run_classifier  # noqa: E402
from inference.intake import decode_upload  # noqa: E402
from inference.manifest import load_manifest  # noqa: E402
from inference.preprocess import batch_inputs  # noqa: E402
from inference.sessions import RuntimeOptions, VerifiedModel, load_verified_model  # noqa: E402
from service.settings import Settings  # noqa: E402

DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "cxr" / "images" / "nih" / "00000061_012.jpg"


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


def multipart_request(port: int, payload: bytes) -> bytes:
    """A complete HTTP/1.1 keep-alive POST /classify request, built once."""
    boundary = b"cxrbenchboundary7d1f"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="x"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        + payload
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one response (Content-Length framed) and return its status code."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        rest += chunk
    del buf[:]
    buf += rest[length:]
    return status


def http_load(port: int, payload: bytes, clients: int, total: int) -> Result:
    """Closed-loop load from ``clients`` keep-alive connections with a minimal raw-socket client,
    so that the client's own cost (it shares the cores) stays far below the server's."""
    request = multipart_request(port, payload)
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    buffers = [bytearray() for _ in range(clients)]

    def one(i: int) -> None:
        connections[i].sendall(request)
        if _read_response(connections[i], buffers[i]) != 200:
            raise RuntimeError("unexpected status")

    counter = iter(range(total))
    lock = threading.Lock()

    def worker(i: int) -> list[float]:
        for _ in range(3):  # warm this connection
            one(i)
        barrier.wait()
        latencies: list[float] = []
        while True:
            with lock:
                if next(counter, None) is None:
                    return latencies
            t0 = time.perf_counter()
            one(i)
            latencies.append(time.perf_counter() - t0)

    barrier = threading.Barrier(clients + 1)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(worker, i) for i in range(clients)]
        barrier.wait()
        t0 = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    for c in connections:
        c.close()
    return summarise("service /classify (HTTP)", clients, [x for r in results for x in r], wall)


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
    """``InferenceSession.run`` on a prepared tensor, as a user would write it: ORT's default
    session options, or (``threads`` given) the service's options for that thread count."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    if threads is None:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(settings.weights_dir / "classifier.onnx"), providers=["CPUExecutionProvider"]
        )
        label = "bare InferenceSession.run, ORT defaults"
    else:
        session = _service_model(threads).session
        label = f"bare InferenceSession.run, service options ({threads} threads, no spinning)"
    return closed_loop(label, lambda: session.run(None, {"image": batch}), clients, total)


def _service_model(threads: int) -> VerifiedModel:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return load_verified_model(
        settings.weights_dir / settings.classifier_manifest,
        RuntimeOptions(intra_op_threads=threads, prefer_gpu=False),
    )


def in_process_pipeline(payload: bytes, threads: int, clients: int, total: int) -> Result:
    """What a script does without the service: decode the upload, pre-process, run the
    session (service options), calibrate. The service adds HTTP, multipart and a thread hop."""
    model = _service_model(threads)

    def run() -> None:
        pixels = decode_upload(payload).pixels
        out = run_classifier(model, [pixels])[0]
        postprocess(out, manifest_calibration(model))

    return closed_loop(
        f"in-process decode + pre-process + session.run ({threads} threads)", run, clients, total
    )


def torch_eager(batch: np.ndarray, clients: int, total: int) -> Result | None:
    """The same network and weights in torch eager mode (rebuilt from the ONNX initializers)."""
    try:
        import torch

        from training.export import ClassifierGraph, state_dict_from_onnx
        from training.models import classifier_architecture
    except ImportError:
        return None
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    manifest = load_manifest(settings.weights_dir / settings.classifier_manifest)
    arch = str(manifest.extra.get("architecture", "efficientnet-b0"))
    model = ClassifierGraph(classifier_architecture(arch))
    model.load_state_dict(state_dict_from_onnx(settings.weights_dir / manifest.file))
    model.eval()
    x = torch.from_numpy(batch)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return closed_loop(
        f"torch eager, same weights (threads={torch.get_num_threads()})", run, clients, total
    )


def median_result(runs: list[Result]) -> Result:
    """One row from several rounds: the median of each figure."""
    return Result(
        runs[0].name,
        runs[0].clients,
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.throughput for r in runs),
    )


def verdict(rows: list[Result]) -> list[str]:
    """The issue's two goals, computed from the table."""

    def find(prefix: str, clients: int) -> Result:
        return next(r for r in rows if r.name.startswith(prefix) and r.clients == clients)

    service1, service16 = find("service", 1), find("service", 16)
    same, default = (
        find("bare InferenceSession.run, service", 1),
        find("bare InferenceSession.run, ORT", 1),
    )
    script = find("in-process", 1)
    lines = ["", "Computed from the table (p50 at 1 client):"]
    for label, ref in (
        ("bare session.run, same session options", same),
        ("bare session.run, ORT defaults", default),
        ("in-process decode + pre-process + session.run", script),
    ):
        extra = service1.p50_ms / ref.p50_ms - 1.0
        lines.append(
            f"- service overhead over {label}: {service1.p50_ms:.1f} vs {ref.p50_ms:.1f} ms "
            f"= {extra * 100:+.0f} % (goal <= +25 %: {'met' if extra <= 0.25 else 'NOT met'})"
        )
    ratio = service16.throughput / service1.throughput
    lines.append(
        f"- service throughput at 16 clients / at 1 client: {service16.throughput:.0f} / "
        f"{service1.throughput:.0f} req/s = {ratio:.2f} (goal >= 0.90: "
        f"{'met' if ratio >= 0.9 else 'NOT met'})"
    )
    best = max((r for r in rows if r.clients == 1), key=lambda r: r.throughput)
    lines.append(
        f"- service throughput at 16 clients / best single-client row ({best.name}): "
        f"{service16.throughput / best.throughput:.2f}"
    )
    return lines


def write(results: list[Result], args: argparse.Namespace, out: Path) -> None:
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"\n## /classify benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, "
        f"load average at the end {load:.2f}.",
        f"Command: `python bench/bench_classify.py --requests {args.requests} --rounds "
        f"{args.rounds}`; image `{args.image.name}`. Each figure is the median over the rounds "
        "(rounds interleave every row, so a noisy neighbour hits all of them).\n",
        "| what | clients | p50 ms | p99 ms | throughput req/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.clients} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.throughput:.1f} |"
        for r in results
    ]
    lines += verdict(results)
    text = "\n".join(lines) + "\n"
    print(text)
    with out.open("a", encoding="utf-8") as fh:
        fh.write(text)


def one_round(
    payload: bytes, batch: np.ndarray, threads: int, requests: int, torch_too: bool
) -> list[Result]:
    results: list[Result] = []
    port = free_port()
    proc = start_server(port)
    try:
        for clients in (1, 16):
            results.append(http_load(port, payload, clients, requests))
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    for option in (threads, None):
        for clients in (1, 16):
            results.append(bare_ort(batch, option, clients, requests))
    results.append(in_process_pipeline(payload, threads, 1, requests))
    if torch_too:
        for clients in (1, 16):
            r = torch_eager(batch, clients, max(20, requests // 4))
            if r:
                results.append(r)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args()
    payload = args.image.read_bytes()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    threads = settings.concurrency.threads_per_call()
    model = _service_model(threads)
    batch = batch_inputs([decode_upload(payload).pixels], model.manifest.input_spec)
    rounds = [
        one_round(payload, batch, threads, args.requests, torch_too=(i == 0))
        for i in range(args.rounds)
    ]
    rows = [
        median_result([r[k] for r in rounds if k < len(r) and r[k].name == first.name])
        for k, first in enumerate(rounds[0])
    ]
    write(rows, args, args.out)


if __name__ == "__main__":
    main()
