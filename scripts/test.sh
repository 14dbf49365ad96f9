#!/usr/bin/env bash
# The whole test suite from a fresh machine: setup, the real llama-server build (cached outside
# the work tree), lint, types, tests. The tests include the package smoke (tests/test_package.py:
# build the sdist and the wheel, install the wheel without extras into a fresh virtualenv, run the
# demo from it) and the status page in headless Chromium (tests/test_status_page.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build_llama_server.sh
if [ -d ../shared/vendor/lemond ]; then export HAL0PROXY_LEMOND_SOURCES="${HAL0PROXY_LEMOND_SOURCES:-$(cd ../shared/vendor/lemond && pwd)}"; fi
bash scripts/build_lemond.sh 11.7.0 >/dev/null
bash scripts/build_lemond.sh 10.7.0 >/dev/null
bash scripts/install_prometheus.sh >/dev/null
# Headless Chromium and chromedriver (Debian packages) for the status page's browser test.
bash scripts/install_chromium.sh >/dev/null
# wrk and nginx (Debian packages): the relay benchmark's load generator and peer.
bash bench/install_tools.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
