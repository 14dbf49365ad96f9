#!/usr/bin/env bash
# Debian packages the relay benchmark uses as its load generator and peer: wrk and nginx.
# Installs only what is missing (root), so developer machines are not touched by apt needlessly.
set -euo pipefail
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install_tools: ${missing[*]} missing and this is not root; install them with apt" >&2
  exit 1
fi
apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
