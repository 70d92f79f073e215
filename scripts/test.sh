#!/usr/bin/env bash
# Sets the machine up if needed, then runs the whole test suite (no network, no keys).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
