#!/usr/bin/env bash
# Installs everything the worker and its tests need on a fresh Debian machine, idempotently:
# Debian packages (PostgreSQL 15 for the test suite's throwaway cluster, PortAudio for
# `console`), a virtualenv in .venv, and the Python requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
if ! ldconfig -p 2>/dev/null | grep -q libportaudio.so.2; then
  need+=(libportaudio2)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
echo "setup: done (.venv ready)"
