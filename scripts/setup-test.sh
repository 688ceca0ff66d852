#!/usr/bin/env bash
# What the test suite needs beyond the virtualenv: a headless browser for the dashboard test
# (tests/e2e/test_dashboard_browser.py). Installs Debian's chromium when it is missing and this
# runs as root with apt-get; otherwise says why the browser test will be skipped.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup-test: installing chromium (Debian package) for the dashboard browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "setup-test: no chromium and no root apt-get: the dashboard browser test will be skipped"
fi
