"""Re-run of the December security review's probes (F1, F3, F4, F5, F7-F10, F12) against the
real server, as the reviewer ran them.

    python bench/probe_security.py [--only F1,F3] [--out]

Starts ``python -m service`` (shipped weights, report LLM disabled: none of these probes needs
it) on a free loopback port, once anonymous and once with two API keys, samples the server's
RSS every 20 ms (from /proc) and prints one markdown table per finding with what the review
measured and what this run measured; ``--out`` appends them to bench/RESULTS.md.

F1 images: the review's 29 KB all-black 5477x5477 PNG, and a realistic one (a JSRT radiograph
from ../shared upscaled to 5477x5477 with film-grain noise, so that an input gate that refuses
blank images does not hide the pipeline's cost).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_classify import free_port  # noqa: E402
from service.auth import key_digest  # noqa: E402
from tests import factories as f  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cxr" / "images"
SIDE = 5477  # 29,997,529 pixels: just inside the 30 MP budget
KEY_A, KEY_B = "probe-key-a-0123456789abcdef01234567", "probe-key-b-0123456789abcdef01234567"
ROWS: list[str] = []


# ------------------------------------------------------------------------------ the server
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


@contextmanager
def serving(**env: str) -> Iterator[Server]:
    port = free_port()
    environ = {
        **os.environ,
        "CXR_PORT": str(port),
        "CXR_HOST": "127.0.0.1",
        "CXR_LOG_LEVEL": "warning",
        "CXR_REPORT__BACKEND": "disabled",
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=environ)
    server = Server(proc, port)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(server.url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("server did not become ready")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def peak_rss(server: Server) -> Iterator[dict[str, float]]:
    """{'base', 'peak', 'delta'} in MB while the block runs (sampled every 20 ms)."""
    out = {"base": server.rss_mb(), "peak": 0.0, "delta": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], server.rss_mb())
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["peak"] = max(out["peak"], server.rss_mb())
        out["delta"] = out["peak"] - out["base"]


def settle(server: Server, seconds: float = 3.0) -> None:
    """Let the gates go idle (malloc_trim on idle) before the next baseline."""
    time.sleep(seconds)


def post(
    server: Server, path: str, data: bytes, timeout: float = 180, **kw: object
) -> httpx.Response:
    return httpx.post(
        server.url + path,
        files={"file": ("x", data)},
        timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )


def row(*cells: object) -> None:
    ROWS.append("| " + " | ".join(str(c) for c in cells) + " |")
    print(ROWS[-1], flush=True)


def header(title: str, *cols: str) -> None:
    ROWS.extend(["", f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
    print("\n".join(ROWS[-5:]), flush=True)


# ------------------------------------------------------------------------------ images
def black_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (SIDE, SIDE), 0).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def realistic_png() -> bytes:
    img = Image.open(DATA / "jsrt" / "JPCLN001.jpg").convert("L")
    big = np.asarray(img.resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-6, 7, size=big.shape, dtype=np.int16)
    arr = np.clip(big + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def small_jpeg() -> bytes:
    return (DATA / "nih" / "00000061_012.jpg").read_bytes()


# ------------------------------------------------------------------------------ F1
def timed(fn: Callable[[], httpx.Response]) -> tuple[int, float]:
    t = time.perf_counter()
    r = fn()
    return r.status_code, time.perf_counter() - t


def probe_f1(server: Server) -> None:
    images = {"all-black 29 KB": black_png(), "realistic": realistic_png()}
    header(
        "F1: 30 MP uploads (5477x5477 PNG), one at a time",
        "image",
        "request",
        "status",
        "wall s",
        "RSS peak delta MB",
        "review (black)",
    )
    review = {
        "/classify": "1.1 s, +248 MB",
        "/segment": "9.8 s, +542 MB",
        "/explain/gradcam": "18.1 s, +1,604 MB",
        "/explain/lime?n_samples=50": "35.4 s, +2,026 MB",
        "/explain/lime (200 samples)": "-",
    }
    for name, data in images.items():
        for label, path, params in (
            ("/classify", "/classify", {}),
            ("/segment", "/segment", {}),
            ("/explain/gradcam", "/explain/gradcam", {}),
            ("/explain/lime?n_samples=50", "/explain/lime", {"n_samples": 50}),
            ("/explain/lime (200 samples)", "/explain/lime", {}),
        ):
            settle(server)
            with peak_rss(server) as mem:
                started = time.perf_counter()
                status = post(server, path, data, params=params).status_code
                wall = time.perf_counter() - started
            row(name, label, status, f"{wall:.2f}", f"{mem['delta']:+.0f}", review[label])

    header(
        "F1: concurrent 30 MP requests",
        "scenario",
        "statuses",
        "wall s",
        "RSS peak delta MB",
        "review",
    )
    for name, data in images.items():
        settle(server)
        results: list[int] = []

        def one(
            path: str, params: dict[str, object], d: bytes = data, out: list[int] = results
        ) -> None:
            out.append(post(server, path, d, params=params).status_code)

        with peak_rss(server) as mem:
            t = time.perf_counter()
            threads = [
                threading.Thread(target=one, args=("/explain/gradcam", {})),
                threading.Thread(target=one, args=("/explain/gradcam", {})),
                threading.Thread(target=one, args=("/explain/lime", {"n_samples": 50})),
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
        row(
            f"2 x gradcam + 1 x LIME, {name}",
            sorted(results),
            f"{wall:.1f}",
            f"{mem['delta']:+.0f}",
            "200 x3, 76.6 s, +5,041 MB",
        )
        settle(server)
        with peak_rss(server) as mem:
            study6 = httpx.post(
                server.url + "/classify/study",
                files=[("files", ("x", data))] * 6,
                timeout=120,
            )
        row(
            f"6-view study, {name}", study6.status_code, "-", f"{mem['delta']:+.0f}", "200, +781 MB"
        )
        settle(server)
        with peak_rss(server) as mem:
            study2 = httpx.post(
                server.url + "/classify/study", files=[("files", ("x", data))] * 2, timeout=120
            )
        row(f"2-view study, {name}", study2.status_code, "-", f"{mem['delta']:+.0f}", "-")

    probe_f1_victim(server, images)


def probe_f1_victim(server: Server, images: dict[str, bytes] | None = None) -> None:
    images = images or {"all-black 29 KB": black_png(), "realistic": realistic_png()}
    victim = small_jpeg()
    baseline = []
    for _ in range(10):
        t = time.perf_counter()
        post(server, "/classify", victim)
        baseline.append(time.perf_counter() - t)
    row_note = f"Victim /classify alone on this machine now: p50 {sorted(baseline)[5]:.2f} s, "
    ROWS.append("")
    ROWS.append(row_note + f"max {max(baseline):.2f} s (10 requests).")
    print(ROWS[-1], flush=True)
    header(
        "F1: a normal /classify (512 px JPEG, every 0.5 s) while 2 clients loop /explain/gradcam "
        "on the 30 MP image",
        "image",
        "victim answers",
        "200 p50 s",
        "200 max s",
        "503 max s",
        "within goal",
        "review",
    )
    victim = small_jpeg()
    for name, data in images.items():
        settle(server)
        stop = threading.Event()

        def attacker(d: bytes = data, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                post(server, "/explain/gradcam", d)

        attackers = [threading.Thread(target=attacker, daemon=True) for _ in range(2)]
        for th in attackers:
            th.start()
        time.sleep(2.0)
        answers: list[tuple[int, float, bool]] = []
        for _ in range(30):
            t = time.perf_counter()
            r = post(server, "/classify", victim, timeout=60)
            wall = time.perf_counter() - t
            answers.append((r.status_code, wall, "retry-after" in r.headers))
            time.sleep(max(0.0, 0.5 - wall))
        stop.set()
        for th in attackers:
            th.join()
        ok = sorted(w for s, w, _ in answers if s == 200)
        refused = [w for s, w, ra in answers if s == 503 and ra]
        counts = {s: sum(1 for a in answers if a[0] == s) for s in {a[0] for a in answers}}
        good = all(
            (s == 200 and w <= 1.0) or (s == 503 and ra and w <= 0.2) for s, w, ra in answers
        )
        row(
            name,
            counts,
            f"{ok[len(ok) // 2]:.2f}" if ok else "-",
            f"{ok[-1]:.2f}" if ok else "-",
            f"{max(refused):.3f}" if refused else "-",
            "yes" if good else "no",
            "{200: 1, 503: 2}, max 43.8 s",
        )


# ------------------------------------------------------------------------------ F3
def _raw(server: Server, data: bytes, timeout: float = 30.0) -> tuple[bytes, float]:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as conn:
        with suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"connection: close" in out.lower():
                    pass
        except (ConnectionResetError, TimeoutError):
            pass
    return out, time.perf_counter() - t


def _status(raw: bytes) -> str:
    try:
        return raw.split(b" ", 2)[1].decode()
    except IndexError:
        return "closed"


def probe_f3(server: Server) -> None:
    header(
        "F3: request heads",
        "attack",
        "answer",
        "client wall s",
        "RSS peak delta MB",
        "/health/live max s",
        "review",
    )
    one_mib = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 131_072 + b"\r\n"
    raw, wall = _raw(server, one_mib)
    row(
        "1 MiB of small headers",
        _status(raw),
        f"{wall:.3f}",
        "-",
        "-",
        "(200 after 2.1 s for 16 MiB)",
    )

    def flood(kind: str) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            try:
                s.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
                if kind == "small":
                    for _ in range(256):
                        s.sendall(b"X-H: v\r\n" * 8192)
                else:
                    s.sendall(b"X-Big: ")
                    for _ in range(1024):
                        s.sendall(b"a" * 65536)
                s.sendall(b"Content-Length: 0\r\n\r\n")
                s.recv(65536)
            except OSError:
                pass

    for kind, label, review in (
        ("small", "4 x 16 MiB of small headers", "RSS +961 MB peak, /health/live max 8.8 s"),
        ("big", "2 x one 64 MiB header value", "/health/live max 14.3 s"),
    ):
        settle(server, 1)
        live: list[float] = []
        stop = threading.Event()

        def prober(stop: threading.Event = stop, live: list[float] = live) -> None:
            while not stop.is_set():
                t = time.perf_counter()
                httpx.get(server.url + "/health/live", timeout=30)
                live.append(time.perf_counter() - t)
                time.sleep(0.05)

        p = threading.Thread(target=prober, daemon=True)
        p.start()
        n = 4 if kind == "small" else 2
        with peak_rss(server) as mem:
            t = time.perf_counter()
            ths = [threading.Thread(target=flood, args=(kind,)) for _ in range(n)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            wall = time.perf_counter() - t
        stop.set()
        p.join()
        row(label, "431 + close", f"{wall:.2f}", f"{mem['delta']:+.0f}", f"{max(live):.3f}", review)
    raw, wall = _raw(server, b"GET /health/live HTTP/1.1\r\nHost: x\r\n", timeout=30)
    row("head never finished", _status(raw), f"{wall:.1f}", "-", "-", "(no header timeout)")


# ------------------------------------------------------------------------------ F4
def probe_f4(server: Server) -> None:
    header(
        "F4: DICOM element flood", "file", "size MB", "status", "wall s", "RSS delta MB", "review"
    )
    base = f.synthetic_dicom(height=512, width=512, bits=8)
    for label, count, review in (
        ("base", 0, "200, 0.43 s, +11 MB"),
        ("246 k empty elements", 245_760, "200, 11.4 s, +86 MB"),
        ("983 k empty elements", 983_040, "200, 30.6 s, +348 MB"),
    ):
        data = f.insert_before(base, 0x7FE0, 0x0010, f.element_flood(count)) if count else base
        settle(server, 1)
        with peak_rss(server) as mem:
            r = post(server, "/classify", data)
            code = r.status_code
        wall = r.elapsed.total_seconds()
        detail = f"{code} {r.json().get('code', '')}" if code != 200 else "200"
        row(label, f"{len(data) / 1e6:.1f}", detail, f"{wall:.2f}", f"{mem['delta']:+.0f}", review)


# ------------------------------------------------------------------------------ keyed probes
def probe_keyed(server: Server) -> None:
    header("F5 / F7: keyed instance", "probe", "result", "review")
    statuses = []
    for i in range(40):
        r = httpx.get(
            server.url + "/version",
            headers={"X-Forwarded-For": f"10.0.0.{i + 1}", "Authorization": "Bearer wrong"},
        )
        statuses.append(r.status_code)
    row(
        "40 wrong keys, rotating X-Forwarded-For",
        f"{statuses.count(401)} x 401, {statuses.count(429)} x 429",
        "40 x 401, never 429",
    )
    good = httpx.get(server.url + "/version", headers={"Authorization": f"Bearer {KEY_A}"})
    row("valid key from the throttled address", good.status_code, "429")
    rids = []
    for headers in (
        {"Authorization": f"Bearer {KEY_A}"},
        {},
        {"Authorization": f"Bearer {KEY_B}"},
    ):
        r = httpx.get(
            server.url + "/version", headers={"X-Request-ID": "victim-req-000042", **headers}
        )
        rids.append(r.headers["x-request-id"])
    row(
        "X-Request-ID: victim-req-000042 on 3 requests",
        f"{len(set(rids))} distinct server ids, client id echoed: {'victim-req-000042' in rids}",
        "the client id became the audit id of all three",
    )


def probe_low(server: Server) -> None:
    header("F8-F10, F12: protocol hygiene", "probe", "result", "review")
    r = httpx.get(server.url + "/version/", headers={"Host": "evil.example"})
    row(
        "GET /version/ with Host: evil.example",
        f"{r.status_code} {r.headers.get('location', '')}",
        "307 to http://evil.example/version",
    )
    raw, _ = _raw(server, b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
    row("HTTP/1.1 without Host", _status(raw), "200")
    raw, _ = _raw(
        server,
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    ctype = [h for h in raw.split(b"\r\n") if h.lower().startswith(b"content-type")]
    row(
        "CL + TE (smuggling shape)",
        f"{_status(raw)} {ctype[0].decode() if ctype else ''}",
        "400 text/plain, not audited",
    )
    r = httpx.head(server.url + "/health/live")
    row("HEAD /health/live", r.status_code, "405")
    r = httpx.request("OPTIONS", server.url + "/explain/lime/jobs/" + "0" * 32)
    row("OPTIONS /explain/lime/jobs/{id}: Allow", r.headers.get("allow"), "GET only")
    r = httpx.post(
        server.url + "/classify",
        content=small_jpeg(),
        headers={"Content-Type": "application/octet-stream"},
    )
    row(
        "raw JPEG body as application/octet-stream",
        f"{r.status_code} {r.json().get('code')}",
        "422 missing_file",
    )
    r = httpx.post(server.url + "/report?lang=en&lang=ru", files={"file": ("x", small_jpeg())})
    row("?lang=en&lang=ru", f"{r.status_code} {r.json().get('code')}", "ru used")


def probe_cpu() -> None:
    """CPU seconds (all threads) of Grad-CAM and LIME on the two 30 MP images, in process:
    on 2 dedicated cores the wall time is at most this, whatever the host's load."""
    from inference.errors import IntakeError
    from inference.intake import Limits
    from service.explain_usecase import ExplainService
    from service.gate import WorkGate
    from service.registry import load_registry
    from service.settings import Settings

    registry = load_registry(Settings(_env_file=None))  # type: ignore[call-arg]
    svc = ExplainService(registry, WorkGate("i", 1, 1, 1), WorkGate("l", 1, 1, 1), Limits(), 32)
    images = {"all-black": black_png(), "realistic": realistic_png()}
    svc._rendered_sync(images["realistic"], None, None)  # warm-up
    header("F1: CPU seconds in process (default settings)", "image", "work", "CPU s", "wall s")
    for name, data in images.items():
        for label, fn in (
            ("gradcam", lambda d=data: svc._rendered_sync(d, None, None)),  # with its PNGs
            ("lime n=50", lambda d=data: svc._lime_sync(d, None, 50, 0)),
            ("lime n=200", lambda d=data: svc._lime_sync(d, None, 200, 0)),
        ):
            wall, before = time.perf_counter(), os.times()
            try:
                fn()
                outcome = ""
            except IntakeError as exc:  # the input gate refuses it (422), after its cost
                outcome = f" (refused: {exc.code})"
            after = os.times()
            cpu = after.user - before.user + after.system - before.system
            row(name, label + outcome, f"{cpu:.2f}", f"{time.perf_counter() - wall:.2f}")


PROBES: dict[str, Callable[[Server], None]] = {
    "F1": probe_f1,
    "F1V": probe_f1_victim,
    "F3": probe_f3,
    "F4": probe_f4,
    "LOW": probe_low,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="F1,F3,F4,KEYED,LOW")
    parser.add_argument("--out", action="store_true", help="append the tables to bench/RESULTS.md")
    args = parser.parse_args()
    chosen = {c.strip().upper() for c in args.only.split(",")}
    ROWS.append(
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, "
        f"load average at the start {os.getloadavg()[0]:.2f} (timings depend on it)."
    )
    if "CPU" in chosen:
        probe_cpu()
    anonymous = [name for name in PROBES if name in chosen]
    if anonymous:
        with serving() as server:
            for name in anonymous:
                PROBES[name](server)
    if "KEYED" in chosen:
        keys = f'["a:{key_digest(KEY_A)}","b:{key_digest(KEY_B)}"]'
        with serving(CXR_AUTH__API_KEYS=keys) as server:
            probe_keyed(server)
    if args.out:
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(ROWS) + "\n")


if __name__ == "__main__":
    main()
