"""schemathesis against the running service's /openapi.json (goal G5, review finding F14).

    python bench/fuzz_openapi.py [--max-examples 30] [--max-time 600] [--keyed]

Starts ``python -m service`` (shipped weights, report LLM disabled so that /report answers its
documented 503 at once instead of generating for seconds per case) on a free loopback port and
runs ``schemathesis run --checks all`` with ``bench/schemathesis.toml``. The exit status is
schemathesis's: 0 means no failures. ``--keyed`` serves with one API key and sends it, so the
auth checks (ignored_auth) run too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.probe_security import serving  # noqa: E402
from service.auth import key_digest  # noqa: E402

KEY = "fuzz-key-0123456789abcdef0123456789abcdef"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=30)
    parser.add_argument("--max-time", type=int, default=600)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keyed", action="store_true")
    args = parser.parse_args()
    env: dict[str, str] = {}
    headers: list[str] = []
    if args.keyed:
        env = {
            "CXR_AUTH__API_KEYS": f'["fuzz:{key_digest(KEY)}"]',
            "CXR_AUTH__MAX_FAILURES": "10000",
        }
        headers = ["-H", f"Authorization: Bearer {KEY}"]
    schemathesis = Path(sys.executable).with_name("schemathesis")
    with serving(**env) as server:
        command = [
            str(schemathesis),
            "--config-file",
            str(REPO / "bench" / "schemathesis.toml"),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free" if args.keyed else "use_after_free,ignored_auth",
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(args.max_time),
            "--workers",
            str(args.workers),
            *headers,
        ]
        print(" ".join(command), flush=True)
        return subprocess.call(command, cwd=REPO, env={**os.environ, "NO_COLOR": "1"})


if __name__ == "__main__":
    raise SystemExit(main())
