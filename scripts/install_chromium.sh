#!/usr/bin/env bash
# Make headless Chromium and its WebDriver available for the status page's browser test, and
# print the two paths (browser, then driver).
#
# Idempotent: does nothing when both are installed. Otherwise installs Debian's `chromium` and
# `chromium-driver` (run as root). Debian's packages work offline from the apt mirror; browser
# downloads done by test tools themselves (Playwright, Selenium Manager) are not used.
set -euo pipefail

find_browser() { command -v chromium || command -v chromium-browser || true; }
browser="$(find_browser)"
driver="$(command -v chromedriver || true)"
if [ -z "$browser" ] || [ -z "$driver" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium: chromium/chromedriver are missing and this is not root; install them with apt" >&2
    exit 1
  fi
  install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=300 chromium chromium-driver >/dev/null
  }
  if ! install; then
    apt-get update -qq -o DPkg::Lock::Timeout=300
    install
  fi
  browser="$(find_browser)"
  driver="$(command -v chromedriver)"
fi
echo "$browser"
echo "$driver"
