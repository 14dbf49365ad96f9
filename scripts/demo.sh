#!/usr/bin/env bash
# Set up and run the proxy in front of the built-in lemond emulator (fake llama-server children).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hal0proxy demo "$@"
