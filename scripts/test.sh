#!/usr/bin/env bash
# The whole test suite from a fresh machine: setup, the real llama-server build (cached outside
# the work tree), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build_llama_server.sh
if [ -d ../shared/vendor/lemond ]; then export HAL0PROXY_LEMOND_SOURCES="${HAL0PROXY_LEMOND_SOURCES:-$(cd ../shared/vendor/lemond && pwd)}"; fi
bash scripts/build_lemond.sh 11.7.0 >/dev/null
bash scripts/build_lemond.sh 10.7.0 >/dev/null
bash scripts/install_prometheus.sh >/dev/null
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
