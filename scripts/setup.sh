#!/usr/bin/env bash
# Idempotent environment setup shared by the demo and the test command: system packages the
# tests need, a virtualenv in .venv with the project and its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in python3 gcc g++ cmake make; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=()
  for t in "${missing[@]}"; do
    case "$t" in
      g++) pkgs+=(g++) ;; gcc) pkgs+=(gcc) ;; python3) pkgs+=(python3 python3-dev) ;; *) pkgs+=("$t") ;;
    esac
  done
  echo "setup: installing system packages: ${pkgs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.hal0proxy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
