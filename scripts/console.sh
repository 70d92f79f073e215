#!/usr/bin/env bash
# Sets the machine up if needed, then talks to the worker in your terminal (text mode) with
# memories kept in the embedded SQLite file. Needs OPENAI_API_KEY in .env (and, for another
# OpenAI-compatible server, OPENAI_BASE_URL). Logs are at INFO; add `--log-level debug` to see
# more (raw identities and what you type included).
# To keep a copy of the session, pipe it through `tee -i FILE`, not plain `tee`: Ctrl+C also
# reaches tee, which dies, and livekit-agents' console then hangs on the closed pipe
# (a livekit-agents 1.8.9 behaviour; a 10-line agent of its own does the same).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f .env ]; then
  cp .env.example .env
  echo "console: created .env from .env.example; put your OPENAI_API_KEY in it and run again." >&2
  exit 1
fi
# the local embedding model (once; later runs find it in place and fetch nothing)
.venv/bin/python agent.py download-files
exec .venv/bin/python agent.py console --text "$@"
