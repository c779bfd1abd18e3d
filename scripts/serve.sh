#!/usr/bin/env bash
# Set up (first run) and serve the API with the shipped default models.
# Usage: scripts/serve.sh [--host H] [--port P]   (settings: CXR_* variables, see README)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh llm
exec .venv/bin/python -m service "$@"
