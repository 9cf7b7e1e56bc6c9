#!/usr/bin/env bash
# Runs the whole test suite. Installs the same nats-server as deploy/run.sh; the tests start
# their own servers on random ports in temp dirs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/install-nats.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/nats/bin/nats-server}"
cargo test --workspace --all-targets "$@"
