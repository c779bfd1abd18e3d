#!/usr/bin/env bash
# Create .venv and install the project. Usage: scripts/setup.sh [EXTRAS]
#   EXTRAS: comma-separated optional-dependency groups, e.g. "llm" or "dev,train,llm".
# Idempotent: re-running only installs what changed. Needs Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-llm}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [[ ",$extras," == *",llm,"* ]]; then
  # llama-cpp-python compiles on install; this build is portable across x86-64 CPUs (the
  # default native build crashed at the first token on AVX-512/AMX machines).
  PATH="$PWD/.venv/bin:$PATH" scripts/install_llama.sh .venv/bin/pip
fi
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
