#!/usr/bin/env bash
# Installs Debian's make when the machine has none: jemalloc, Leerspoor's allocator, is built
# from C by its crate's build script with `make` (and the C compiler Rust already needs).
set -euo pipefail
if command -v make >/dev/null 2>&1; then
  exit 0
fi
echo "build tools: installing Debian's make (jemalloc is built with it)" >&2
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" make
make --version | head -1 >&2
