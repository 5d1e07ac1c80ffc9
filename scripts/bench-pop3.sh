#!/usr/bin/env bash
# RETR byte-stuffing throughput of pop3-proto (criterion, short run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -j "${JOBS:-2}" -p pop3-proto --bench stuffing -- \
  --warm-up-time 1 --measurement-time 3 "$@"
