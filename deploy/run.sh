#!/usr/bin/env bash
# Runs Leerspoor on this machine: installs nats-server if missing, builds, and starts
# `leerspoor serve` (its own nats-server with JetStream, the store and the gateway) with its
# data in ./data. Extra arguments go to `leerspoor serve`, e.g. --listen 127.0.0.1:9000.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/install-nats.sh
deploy/install-build-tools.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/nats/bin/nats-server}"
cargo build --release -p leerspoor
exec target/release/leerspoor serve --data-dir "${LEERSPOOR_DATA_DIR:-$root/data}" "$@"
