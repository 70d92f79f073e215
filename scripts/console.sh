#!/usr/bin/env bash
# Sets the machine up if needed, then talks to the worker in your terminal (text mode) with
# memories kept in the embedded SQLite file. Needs OPENAI_API_KEY in .env.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f .env ]; then
  cp .env.example .env
  echo "console: created .env from .env.example; put your OPENAI_API_KEY in it and run again." >&2
  exit 1
fi
exec .venv/bin/python agent.py console --text "$@"
