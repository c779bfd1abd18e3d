"""Viewer budgets in a real browser: bytes transferred before the first upload, and the time
from /classify's answer to the result on screen.

    .venv/bin/python bench/bench_viewer.py [--uploads 20] [--image images/jsrt/JPCLN001.jpg]

Starts uvicorn with the shipped weights on a free loopback port and drives Debian's chromium
(/usr/bin/chromium) through Playwright. "Result on screen" is the viewer's own performance
measure `classify-to-result`: from the moment the /classify response has been received
(XMLHttpRequest load) to the first animation frame after the result panel was filled, i.e.
the frame that shows it. Budgets (issue 10): <= 200 KB and <= 1 s.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.app import create_app  # noqa: E402
from service.settings import ReportSettings, Settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr"
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def serving() -> Iterator[str]:
    import uvicorn

    settings = Settings(_env_file=None, report=ReportSettings(backend="disabled"))  # type: ignore[call-arg]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_config=None, access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--image", default="images/jsrt/JPCLN001.jpg")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, serving() as base, sync_playwright() as p:
        png = Path(tmp) / "chest.png"
        Image.open(SHARED / args.image).convert("L").save(png)
        browser = p.chromium.launch(executable_path=CHROMIUM)
        weights, latencies, classify_ms = [], [], []
        for i in range(args.uploads):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(base + "/")
            page.wait_for_selector("#limit-hint:not(:empty)")
            page.wait_for_load_state("networkidle")
            weights.append(
                page.evaluate(
                    """() => performance.getEntriesByType('navigation')[0].transferSize +
                    performance.getEntriesByType('resource').reduce((s, e) => s + e.transferSize,
                    0)"""
                )
            )
            page.set_input_files("#file-input", str(png))
            page.wait_for_selector("#decision:not(:empty)")
            measure = None
            while measure is None:  # the measure is taken one frame after the panel is filled
                measure = page.evaluate(
                    """() => performance.getEntriesByName('classify-to-result')[0]?.duration"""
                )
            request = page.evaluate(
                """() => performance.getEntriesByType('resource')
                     .filter(e => e.name.endsWith('/classify'))[0].duration"""
            )
            latencies.append(measure)
            classify_ms.append(request)
            page.wait_for_selector("#heat-gradcam-lungs:enabled", timeout=60_000)
            context.close()
            print(
                f"upload {i + 1}: page {weights[-1]} B, classify {request:.0f} ms, "
                f"result on screen {measure:.1f} ms after the answer",
                flush=True,
            )
        browser.close()
    lat = sorted(latencies)
    print(f"page weight before upload: max {max(weights)} B ({max(weights) / 1024:.1f} KiB)")
    print(
        f"classify answer -> result on screen, {len(lat)} uploads: median "
        f"{statistics.median(lat):.1f} ms, p95 {lat[int(0.95 * (len(lat) - 1))]:.1f} ms, "
        f"max {lat[-1]:.1f} ms; /classify itself median {statistics.median(classify_ms):.0f} ms"
    )


if __name__ == "__main__":
    main()
