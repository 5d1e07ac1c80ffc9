#!/usr/bin/env bash
# TLS benchmarks on loopback: our smtpd (implicit TLS, 465-style) and pop3d
# (pop3s, 995-style) against Postfix smtpd (smtpd_tls_wrappermode=yes) and
# Dovecot pop3s, all with the same certificate (ECDSA P-256, then RSA-2048):
# full and resumed handshakes/s with server CPU per handshake, POP3 RETR
# throughput inside TLS, PSS per idle TLS connection. See docs/benchmarks.md
# ("TLS") and scripts/bench-tls.py --help. Root: Postfix and Dovecot are
# started as bench-mail.py starts them (loopback only, private directories).
#
#   sudo scripts/bench-tls.sh [--no-build] [bench-tls.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--no-build" ]]; then
  shift
else
  cargo build -j "${JOBS:-2}" --release --bins
  cargo build -j "${JOBS:-2}" --release -p netkit --example tls_load
fi
exec python3 scripts/bench-tls.py "$@"
