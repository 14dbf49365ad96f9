#!/usr/bin/env bash
# Make a `prometheus` binary available for the metrics tests and print its path.
#
# Idempotent: does nothing when `prometheus` is already on PATH. Otherwise installs the
# Debian package (run as root). The tests start their own Prometheus on a free port, so the
# packaged system service must never run: it would occupy :9090 and scrape nothing useful.
# Service starts are blocked during the install with a policy-rc.d (the Debian mechanism for
# exactly this), and the unit is stopped and disabled afterwards in case systemd started it.
set -euo pipefail

if bin="$(command -v prometheus)"; then
  echo "$bin"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install_prometheus: prometheus is not installed and this is not root; install it with apt" >&2
  exit 1
fi

candidate="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
  apt-get update -qq -o DPkg::Lock::Timeout=300
  candidate="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
fi
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
  echo "install_prometheus: no installable 'prometheus' package in the apt sources" >&2
  exit 1
fi

# Block service starts for the duration of the install unless a policy already exists
# (container images usually ship one that answers 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() {
  if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

# Other apt runs on the machine may hold the dpkg lock: wait for it rather than fail. The
# package index may be stale (candidate known, archive moved on): refresh once and retry.
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 prometheus >/dev/null
}
if ! install; then
  apt-get update -qq -o DPkg::Lock::Timeout=300
  install
fi

# Belt and braces: if an init system started the packaged service anyway, stop it and keep it
# from coming back on boot.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

bin="$(command -v prometheus)"
"$bin" --version 2>&1 | head -n 1 >&2
echo "$bin"
