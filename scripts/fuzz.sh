#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from the committed seeds.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 30). A crash fails the script and leaves its
# input under fuzz/artifacts/TARGET/. New corpus entries go to a temporary directory, never into
# the repository. Builds without a sanitizer (the code is safe Rust; see docs/reliability.md) on the
# stable toolchain, into a target directory kept between runs.
#
# PASSERELLE_FUZZ_BUILD=dev (the default, what the test command runs) builds mostly unoptimised,
# in minutes on a fresh machine; PASSERELLE_FUZZ_BUILD=release builds optimised (16 codegen units),
# slower to build and several times faster to fuzz, for the longer runs.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${PASSERELLE_FUZZ_TARGET_DIR:-$HOME/.cache/passerelle-fuzz-target}"
case "${PASSERELLE_FUZZ_BUILD:-dev}" in
  dev) build=(-s none --dev) ;;
  release) build=(-s none --release --codegen-units 16) ;;
  *) echo "PASSERELLE_FUZZ_BUILD must be dev or release" >&2; exit 64 ;;
esac
cargo fuzz build "${build[@]}"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$corpus/$target"
  echo "-- fuzz $target for ${seconds}s"
  log="$corpus/$target.log"
  if ! cargo fuzz run "${build[@]}" "$target" "$corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed"
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done
