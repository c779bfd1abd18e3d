#!/usr/bin/env bash
# Set up (first run) and run the whole test suite: unit, API and end-to-end layers.
# Usage: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,train,llm,llm-xai,bench
exec .venv/bin/python -m pytest "$@"
