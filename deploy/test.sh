#!/usr/bin/env bash
# Runs the whole test suite. Installs the same nats-server as deploy/run.sh; the tests start
# their own servers on random ports in temp dirs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/install-nats.sh
deploy/install-build-tools.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/nats/bin/nats-server}"
# A real xAPI client library for the interoperability test (PyPI's tincan), in its own venv.
clients="$root/.tools/clients/venv"
if ! "$clients/bin/python" -c "import tincan" >/dev/null 2>&1; then
  python3 -m venv "$clients"
  "$clients/bin/pip" install --quiet --disable-pip-version-check "tincan==1.0.0"
fi
export LEERSPOOR_TINCAN_PYTHON="${LEERSPOOR_TINCAN_PYTHON:-$clients/bin/python}"
# Real Chromium for the dashboard's browser test (Debian's chromium and chromium-driver).
deploy/install-chromium.sh
export LEERSPOOR_CHROMEDRIVER="${LEERSPOOR_CHROMEDRIVER:-$(command -v chromedriver)}"
# cargo-nextest when the machine has it (a process per test, a hung test ended after 5
# minutes: .config/nextest.toml); plain cargo test otherwise.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets "$@"
else
  cargo test --workspace --all-targets "$@"
fi
