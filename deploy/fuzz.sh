#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer for SECONDS each (default 60), with cargo-fuzz on the
# nightly toolchain; installs cargo-fuzz if missing. Not part of CI (which runs the same
# targets briefly under proptest in the test suite). Prints each target's executions.
#   deploy/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/services/fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(statement multipart jws query alternate time ingest)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="fuzz/$target.log"
  echo "fuzz: $target for ${seconds}s"
  # AddressSanitizer slows sled (ingest) from ~3,300 to ~12 runs a second: that target runs
  # without it (a panic is found either way; the unsafe code there is sled's own).
  sanitizer=address
  [ "$target" = ingest ] && sanitizer=none
  cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 2>"$log" \
    || { echo "fuzz: $target FAILED, see services/fuzz/$log"; tail -40 "$log"; exit 1; }
  runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
  echo "fuzz: $target ok, $runs executions"
done
