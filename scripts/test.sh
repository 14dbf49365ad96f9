#!/usr/bin/env bash
# The whole test suite from a fresh machine: setup, the real llama-server build (cached outside
# the work tree), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build_llama_server.sh
bash scripts/install_prometheus.sh >/dev/null
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
