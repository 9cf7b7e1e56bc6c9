#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the dashboard's browser test, unless
# LEERSPOOR_CHROMEDRIVER already points at a chromedriver or one is on the PATH.
set -euo pipefail
if [ -n "${LEERSPOOR_CHROMEDRIVER:-}" ] && [ -x "$LEERSPOOR_CHROMEDRIVER" ]; then
  exit 0
fi
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "chromium: installing Debian's chromium and chromium-driver" >&2
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" chromium chromium-driver
chromedriver --version >&2
