#!/usr/bin/env bash
# Durable 4 KiB deliveries vs the bare write+fsync+rename+fsync-dir loop on
# the same disk (target/tmp, the build disk). Two measurements:
#   1. criterion (crates/mailstore/benches/delivery.rs), one side after the other;
#   2. an interleaved run (examples/delivery_ratio.rs) whose ratio is robust
#      against fsync-latency drift on a shared disk.
# Usage: scripts/bench-mailstore.sh [ROUNDS] [BLOCK]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"
ROUNDS="${1:-30}"
BLOCK="${2:-20}"
echo "==> criterion"
cargo bench -j "$JOBS" -p mailstore --bench delivery 2>&1 | grep -E '^deliver_4k|time:|thrpt:'
echo "==> interleaved ratio"
cargo run -j "$JOBS" --release -q -p mailstore --example delivery_ratio -- \
  target/tmp/delivery-ratio "$ROUNDS" "$BLOCK"
