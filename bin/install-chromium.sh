#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test (tests/e2e/browser.test.ts) when it is not there yet.
# Test tools' own browser downloads do not work offline; Debian's package does. Needs root and apt-get.
set -euo pipefail
if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "${CHROMIUM_PATH}" ]; then exit 0; fi
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != "0" ]; then
  echo "install-chromium: Chromium is missing; install it (Debian: apt-get install chromium) or set CHROMIUM_PATH" >&2
  exit 1
fi
echo "install-chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
