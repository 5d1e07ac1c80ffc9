#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run runs exactly this).
# Installs its own prerequisites when missing, quietly and idempotently, then
# runs formatting, lints, unit/property tests and the end-to-end suite.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
JOBS="${JOBS:-2}"

log() { printf '==> %s\n' "$*"; }

# --- prerequisites -----------------------------------------------------------
# Debian packages providing the real clients the end-to-end tests drive.
need_apt=()
command -v swaks >/dev/null 2>&1 || need_apt+=(swaks)
command -v dig   >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
# Signers for the DNSSEC serving tests (delv comes with bind9-dnsutils).
command -v dnssec-signzone >/dev/null 2>&1 || need_apt+=(bind9-utils)
command -v ldns-signzone   >/dev/null 2>&1 || need_apt+=(ldnsutils)
command -v kzonesign       >/dev/null 2>&1 || need_apt+=(knot-dnssecutils)
# Knot, NSD and BIND run as dnsd's secondaries (and Knot as its primary)
# in the zone transfer tests, on loopback ports the tests choose.
command -v knotd           >/dev/null 2>&1 || need_apt+=(knot)
command -v nsd             >/dev/null 2>&1 || need_apt+=(nsd)
command -v named           >/dev/null 2>&1 || need_apt+=(bind9)
command -v curl  >/dev/null 2>&1 || need_apt+=(curl)
# doveadm reads our Maildirs in the interoperability tests.
command -v doveadm >/dev/null 2>&1 || need_apt+=(dovecot-core)
# TLS clients of tests/test_tls.py (openssl s_client, fetchmail, msmtp) and
# testssl.sh, which rates the TLS ports.
command -v openssl   >/dev/null 2>&1 || need_apt+=(openssl)
command -v fetchmail >/dev/null 2>&1 || need_apt+=(fetchmail)
command -v msmtp     >/dev/null 2>&1 || need_apt+=(msmtp)
command -v testssl   >/dev/null 2>&1 || need_apt+=(testssl.sh)
# Postfix is the remote MTA and the relay of tests/test_outbound_interop.py
# (private instances on loopback; the system one is left unconfigured).
command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] || need_apt+=(postfix)
# Independent DKIM signers and verifiers of tests/test_mail_auth.py:
# dkimpy's dkimsign (python3-dkim) and OpenDKIM's opendkim-testmsg.
command -v dkimsign         >/dev/null 2>&1 || need_apt+=(python3-dkim)
command -v opendkim-testmsg >/dev/null 2>&1 || need_apt+=(opendkim-tools)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start system services (Dovecot would listen
  # on every interface): policy-rc.d refuses, for the install only.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  # Postfix's package would otherwise ask what kind of mail system this is.
  echo "postfix postfix/main_mailer_type select No configuration" \
    | $SUDO debconf-set-selections 2>/dev/null || true
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ -n "$made_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
# Python packages: pytest runs tests/, dnspython is one of the DNS clients.
if ! python3 -c 'import pytest, dns.resolver' >/dev/null 2>&1; then
  log "installing pytest dnspython"
  python3 -m pip install --quiet --disable-pip-version-check pytest dnspython
fi
# dkimpy (with PyNaCl for ed25519-sha256) for the interpreter pytest runs.
if ! python3 -c 'import dkim, nacl' >/dev/null 2>&1; then
  log "installing dkimpy pynacl"
  python3 -m pip install --quiet --disable-pip-version-check dkimpy pynacl
fi
# dnspython's DNSSEC validation needs its own cryptography release.
if ! python3 -c 'import sys, dns._features as f; sys.exit(not f.have("dnssec"))' >/dev/null 2>&1; then
  log "installing dnspython[dnssec]"
  python3 -m pip install --quiet --disable-pip-version-check 'dnspython[dnssec]'
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >/dev/null 2>&1 || true
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >/dev/null 2>&1 || true

# --- static checks -----------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
# The fuzz crate is outside the workspace; formatting it needs no build.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
log "cargo clippy"
cargo clippy -j "$JOBS" --workspace --all-targets --locked -- -D warnings
log "cargo doc"
# The crate docs are what embedders read: no broken or private links.
RUSTDOCFLAGS="-D warnings" cargo doc -j "$JOBS" --workspace --no-deps --locked -q

# --- unit, property and doc tests -------------------------------------------
log "cargo test"
cargo test -j "$JOBS" --workspace --locked

# --- end-to-end: real daemons on loopback, real clients ----------------------
if ls tests/test_*.py >/dev/null 2>&1; then
  log "building daemons"
  cargo build -j "$JOBS" --workspace --bins --locked
  log "pytest tests/"
  python3 -m pytest -q tests/
fi
log "all tests passed"
