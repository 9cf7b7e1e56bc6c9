#!/usr/bin/env bash
# Installs Debian packages (the arguments) with apt-get, through sudo when not root: what the
# other install scripts here fall back on when a tool is missing.
set -euo pipefail
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "$@"
