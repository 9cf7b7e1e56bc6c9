#!/usr/bin/env bash
# Runs a hub node on this machine: installs nats-server if missing, builds, and starts
# `leerspoor hub` (its own nats-server, a leaf node of the central site, and the hub's
# endpoint) with its data in ./hub-data. Arguments go to `leerspoor hub`, e.g.
#   deploy/hub/run.sh --hub eindhoven --central-nats nats-leaf://hub-eindhoven:SECRET@central.example.nl:7422
# or, with a configuration file (credentials for the hub's tools):
#   deploy/hub/run.sh --config /etc/leerspoor/leerspoor-hub.toml
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
deploy/install-nats.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/nats/bin/nats-server}"
cargo build --release -p leerspoor
exec target/release/leerspoor hub --data-dir "${LEERSPOOR_DATA_DIR:-$root/hub-data}" "$@"
