#!/usr/bin/env bash
# Short criterion run of the smtp-proto benchmarks: command parsing
# (target < 100 ns per MAIL/RCPT) and DATA unstuffing (target >= 1 GB/s on
# 1 MiB of ordinary text). Quote medians; on a shared machine compare runs
# made back to back.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -j "${JOBS:-2}" -p smtp-proto --bench smtp -- \
  --warm-up-time 1 --measurement-time "${MEASURE:-3}" "$@"
