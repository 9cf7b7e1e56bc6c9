#!/usr/bin/env bash
# A whole Leerspoor cluster on the loopback ports of this machine, for trying replication and
# for the failover test: three nats-servers in one JetStream cluster (every stream, bucket and
# object store with 3 replicas), two store replicas (a, b), two projector replicas (a, b) and
# two gateways, each its own process with its own data folder under DIR.
#
#   deploy/local-cluster.sh up DIR          start everything; prints one JSON line:
#       {"gateways": [...], "nats": [...], "pids": {"nats-1": PID, ...}, "user": "...", "password": "..."}
#   deploy/local-cluster.sh start DIR NAME  (re)start one process (nats-1..3, store-a, store-b,
#                                           projector-a, projector-b, gateway-1, gateway-2);
#                                           prints {"name": ..., "pid": ...}
#   deploy/local-cluster.sh down DIR        stop everything (SIGTERM, then SIGKILL)
#
# Installs nats-server if missing and builds leerspoor (release) unless LEERSPOOR_BIN names a
# binary. Logs: DIR/logs/NAME.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
dir="${2:-}"
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: $0 up|start|down DIR [NAME]" >&2
  exit 2
fi
mkdir -p "$dir/logs" "$dir/pids"
dir="$(cd "$dir" && pwd)"
state="$dir/cluster.env"

binaries() {
  if [ -z "${NATS_SERVER_BIN:-}" ]; then
    "$root/deploy/install-nats.sh" >&2
    NATS_SERVER_BIN="$root/.tools/nats/bin/nats-server"
  fi
  if [ -z "${LEERSPOOR_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p leerspoor >&2)
    LEERSPOOR_BIN="$root/target/release/leerspoor"
  fi
  export NATS_SERVER_BIN LEERSPOOR_BIN
}

free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

# The cluster's ports, password and credential, chosen once at `up`.
write_state() {
  read -r n1 n2 n3 r1 r2 r3 m1 m2 m3 h1 h2 < <(free_ports 11)
  password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  cat >"$state" <<EOF
NATS_PORTS="$n1 $n2 $n3"
ROUTE_PORTS="$r1 $r2 $r3"
MONITOR_PORTS="$m1 $m2 $m3"
HTTP_PORTS="$h1 $h2"
NATS_PASSWORD="$password"
USER_KEY="cluster-admin"
USER_SECRET="$secret"
EOF
  chmod 600 "$state"
}

nth() { # nth INDEX(1-based) WORDS...
  local index="$1"
  shift
  echo "${@:$index:1}"
}

nats_urls() {
  local urls=() port
  for port in $NATS_PORTS; do urls+=("nats://127.0.0.1:$port"); done
  (IFS=,; echo "${urls[*]}")
}

write_configs() {
  local routes="" port i
  for port in $ROUTE_PORTS; do routes="$routes nats://127.0.0.1:$port"; done
  for i in 1 2 3; do
    cat >"$dir/nats-$i.conf" <<EOF
server_name: nats-$i
listen: "127.0.0.1:$(nth "$i" $NATS_PORTS)"
http: "127.0.0.1:$(nth "$i" $MONITOR_PORTS)"
max_payload: 8MB
authorization {
  users: [ { user: leerspoor, password: "$NATS_PASSWORD" } ]
}
jetstream {
  store_dir: "$dir/nats-$i"
  sync_interval: always
}
cluster {
  name: leerspoor
  listen: "127.0.0.1:$(nth "$i" $ROUTE_PORTS)"
  routes: [$(echo $routes | sed 's/ /, /g')]
}
EOF
  done
  cat >"$dir/leerspoor.toml" <<EOF
# Written by deploy/local-cluster.sh: every Leerspoor process of the local cluster.
[nats]
url = "$(nats_urls)"
user = "leerspoor"

[store]
demo_credential = false

[replicas]
stores = ["a", "b"]
projectors = ["a", "b"]
stream_replicas = 3
EOF
}

# Starts NAME in the background; waits until it is ready; prints its pid.
start() {
  local name="$1" log="$dir/logs/$1.log" ready
  touch "$log"
  local offset
  offset="$(wc -l <"$log")"
  case "$name" in
    nats-[123])
      "$NATS_SERVER_BIN" -c "$dir/$name.conf" >>"$log" 2>&1 &
      ready="";;
    store-[ab] | projector-[ab])
      local part="${name%%-*}" replica="${name##*-}"
      local snapshot=()
      # A replica started before whose data folder is gone is being replaced: it starts from
      # a snapshot of the other replica, then the log.
      if [ -e "$dir/pids/$name.started" ] && [ ! -d "$dir/$name" ]; then
        snapshot=(--from-snapshot)
      fi
      LEERSPOOR_NATS_PASSWORD="$NATS_PASSWORD" "$LEERSPOOR_BIN" --config "$dir/leerspoor.toml" \
        --data-dir "$dir/$name" --replica "$replica" "${snapshot[@]}" "$part" \
        >>"$log" 2>&1 &
      ready="is running";;
    gateway-[12])
      local index="${name##*-}"
      LEERSPOOR_NATS_PASSWORD="$NATS_PASSWORD" "$LEERSPOOR_BIN" --config "$dir/leerspoor.toml" \
        --data-dir "$dir/$name" --listen "127.0.0.1:$(nth "$index" $HTTP_PORTS)" gateway \
        >>"$log" 2>&1 &
      ready="Leerspoor is ready";;
    *) echo "unknown process $name" >&2; return 2;;
  esac
  local pid=$!
  echo "$pid" >"$dir/pids/$name"
  touch "$dir/pids/$name.started"
  if [ -z "$ready" ]; then
    wait_for_nats "$name" "$pid"
  else
    local waited=0
    until tail -n "+$((offset + 1))" "$log" | grep -q "$ready"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name stopped while starting; see $log:" >&2
        tail -20 "$log" >&2
        return 1
      fi
      waited=$((waited + 1))
      if [ "$waited" -gt 1200 ]; then
        echo "$name not ready after 120 s; see $log" >&2
        return 1
      fi
      sleep 0.1
    done
  fi
  echo "$pid"
}

# A nats-server is ready once its health endpoint says so (JetStream included).
wait_for_nats() {
  local name="$1" pid="$2" index="${1##*-}"
  local url="http://127.0.0.1:$(nth "$index" $MONITOR_PORTS)/healthz"
  python3 - "$url" "$pid" <<'EOF' || { echo "$name not healthy; see $dir/logs/$name.log" >&2; return 1; }
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

stop_all() {
  local file pids=()
  for file in "$dir"/pids/*; do
    case "$file" in *.started) continue;; esac
    [ -e "$file" ] && pids+=("$(cat "$file")")
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 150); do
    local alive=0 pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  rm -f "$dir"/pids/*
}

case "$command" in
  up)
    binaries
    write_state
    # shellcheck disable=SC1090
    . "$state"
    write_configs
    declare -A pids
    # The three servers together: a JetStream cluster is healthy only once it has a quorum.
    for name in nats-1 nats-2 nats-3; do
      "$NATS_SERVER_BIN" -c "$dir/$name.conf" >>"$dir/logs/$name.log" 2>&1 &
      pids[$name]=$!
      echo "${pids[$name]}" >"$dir/pids/$name"
      touch "$dir/pids/$name.started"
    done
    for name in nats-1 nats-2 nats-3; do
      wait_for_nats "$name" "${pids[$name]}"
    done
    for name in store-a store-b projector-a projector-b gateway-1 gateway-2; do
      pids[$name]="$(start "$name")"
    done
    LEERSPOOR_NATS_PASSWORD="$NATS_PASSWORD" "$LEERSPOOR_BIN" --config "$dir/leerspoor.toml" \
      credentials create --key "$USER_KEY" --name "local cluster operator" \
      --scopes all,summaries/read,admin --requests-per-minute 1000000 --secret-stdin \
      <<<"$USER_SECRET" >>"$dir/logs/credentials.log" 2>&1
    python3 - "$dir" <<EOF
import json, sys
pids = {$(for name in "${!pids[@]}"; do printf '"%s": %s, ' "$name" "${pids[$name]}"; done)}
print(json.dumps({
    "gateways": ["http://127.0.0.1:%s/xapi" % port for port in "$HTTP_PORTS".split()],
    "nats": ["nats://127.0.0.1:%s" % port for port in "$NATS_PORTS".split()],
    "pids": dict(sorted(pids.items())),
    "user": "$USER_KEY",
    "password": "$USER_SECRET",
}))
EOF
    ;;
  start)
    name="${3:-}"
    [ -n "$name" ] || { echo "usage: $0 start DIR NAME" >&2; exit 2; }
    binaries
    # shellcheck disable=SC1090
    . "$state"
    pid="$(start "$name")"
    printf '{"name": "%s", "pid": %s}\n' "$name" "$pid"
    ;;
  down)
    stop_all
    ;;
  *)
    echo "usage: $0 up|start|down DIR [NAME]" >&2
    exit 2
    ;;
esac
