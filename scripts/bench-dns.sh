#!/usr/bin/env bash
# DNS benchmarks: zone parse time, qps and server CPU per query, memory;
# the same for a DNSSEC-signed zone with DO on half the queries; AXFR time.
# dnsd against Knot (kzonecheck, knotd) and NSD (nsd-checkzone, nsd), all
# on loopback with unprivileged ports, each server stopped by PID.
#
#   scripts/bench-dns.sh            # 1,000,000 records, 10 s dnsperf runs
#   N=100000 DUR=5 scripts/bench-dns.sh
#   SIGNED_N=100000                 # records of the signed zone (default)
#   PARTS=dnssec,axfr               # of check,plain,dnssec,axfr (default all)
#
# Needs: knot knot-dnssecutils nsd dnsperf bind9-utils bind9-dnsutils
# (Debian packages: the signer is dnssec-signzone, AXFRs are timed by dig).
set -euo pipefail
cd "$(dirname "$0")/.."
export N="${N:-1000000}" DUR="${DUR:-10}" WORK="${WORK:-/tmp/bench-dns}"
nice -n 10 cargo build --release -j "${JOBS:-2}" -p dnsd >/dev/null
export DNSD="$PWD/target/release/dnsd"
exec python3 scripts/bench-dns.py
