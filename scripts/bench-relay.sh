#!/usr/bin/env bash
# Relay benchmark: our outbound queue vs Postfix, both relaying to Postfix's
# smtp-sink on loopback (scripts/bench-relay.py --help; docs/benchmarks.md).
# Root: Postfix is started as bench-mail.py starts it (loopback only,
# private directories).
#
#   sudo scripts/bench-relay.sh [--no-build] [bench-relay.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--no-build" ]]; then
  shift
else
  nice -n 10 cargo build -j "${JOBS:-2}" --release -p smtpd -p mailctl
fi
exec python3 scripts/bench-relay.py "$@"
