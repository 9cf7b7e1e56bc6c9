#!/usr/bin/env bash
# Soak test (not in CI): MINUTES (default 10) of mixed load (writes, reads, documents,
# summaries) against a release `leerspoor serve`, its nats-server killed a third of the way in
# (serve restarts it) and serve itself killed with -9 two thirds in (and started again).
# Then: every acknowledged statement is stored exactly once, the hub summaries equal a recount,
# the logs hold no panic; resident memory before and after is printed.
#   deploy/soak.sh [MINUTES]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
minutes="${1:-10}"
deploy/install-nats.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/nats/bin/nats-server}"
cargo build --release -p leerspoor
work="$(mktemp -d)"
http_port=18281
nats_port=14281
base="http://127.0.0.1:$http_port"
serve_pid=""
start_serve() {
  target/release/leerspoor serve --data-dir "$work/data" --listen "127.0.0.1:$http_port" \
    --nats-port "$nats_port" >>"$work/serve.out" 2>>"$work/serve.log" &
  serve_pid=$!
  for _ in $(seq 1 200); do
    curl -sf "$base/xapi/about" >/dev/null && return 0
    sleep 0.1
  done
  echo "soak: serve did not start; see $work/serve.log" >&2
  exit 1
}
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
nats_pid() { ls "$work/data/nats/ports" | sed -E 's/.*_([0-9]+)\.ports/\1/'; }
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_serve
sleep 5
echo "soak: serve rss at start: $(rss "$serve_pid")"
python3 deploy/soak.py load --base "$base" --minutes "$minutes" --out "$work" &
load_pid=$!
third=$(python3 -c "print(int($minutes * 60 / 3))")
sleep "$third"
echo "soak: killing nats-server $(nats_pid) (serve restarts it)"
kill -9 "$(nats_pid)"
sleep "$third"
echo "soak: serve rss before kill -9: $(rss "$serve_pid")"
echo "soak: kill -9 serve $serve_pid"
kill -9 "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
start_serve
wait "$load_pid"
echo "soak: serve rss at the end: $(rss "$serve_pid")"
python3 deploy/soak.py verify --base "$base" --out "$work"
panics=$(grep -c "panicked" "$work/serve.log" || true)
echo "soak: panics in the logs: $panics"
echo "soak: answers by status: $(cat "$work/statuses.json" | tr -d '\n ')"
echo "soak: files in $work"
[ "$panics" = "0" ]
