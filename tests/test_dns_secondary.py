"""dnsd as a secondary of Knot and of BIND (RFC 1034 4.3.5, RFC 1996, RFC
5936, RFC 1995): the first transfer (AXFR) at start, a NOTIFY after the
primary reloads a change and an IXFR of it, a restart
that serves the on-disk copy while the primary is down, and SERVFAIL
once the SOA expire has passed without the primary."""
import base64
import os
import signal
import subprocess
import time

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest

from conftest import bin_path, free_port, wait_tcp
from test_dns_transfer import ensure_knot, ensure_server, serial_at, wait_serial

ORIGIN = "example.test"


def zone_text(serial, extra=""):
    # refresh 30, retry 1, expire 4: the test waits for expiry.
    return ("$TTL 300\n$ORIGIN example.test.\n@ SOA ns root %d 30 1 4 300\n"
            "  NS ns\nns A 192.0.2.1\nwww A 192.0.2.%d\n%s" % (serial, serial, extra))


def start_knot(daemons, kdir, kport, dport, secret=None):
    kdir.mkdir(exist_ok=True)
    conf = kdir / "knot.conf"
    key = f"""key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: {secret}
""" if secret else ""
    with_key = "\n    key: xfr-key" if secret else ""
    conf.write_text(key + f"""server:
    listen: 127.0.0.1@{kport}
    rundir: {kdir}
    background-workers: 1
database:
    storage: {kdir}
log:
  - target: {kdir}/knot.log
    any: info
remote:
  - id: secondary
    address: 127.0.0.1@{dport}{with_key}
acl:
  - id: xfr
    address: 127.0.0.1
    action: transfer{with_key}
template:
  - id: default
    storage: {kdir}
    # Knot keeps the differences between file versions, so it can
    # answer IXFR.
    zonefile-load: difference
    journal-content: changes
zone:
  - domain: {ORIGIN}
    file: {kdir}/example.test.zone
    notify: secondary
    acl: xfr
""")
    k = daemons(["knotd", "-c", conf])
    wait_tcp(kport)
    return k, conf


def start_dnsd(daemons, tmp_path, dport, kport, secret=None):
    cfg = tmp_path / "dnsd.toml"
    keys = (f'tsig_keys = [{{ name = "xfr-key", algorithm = "hmac-sha256", secret = "{secret}" }}]\n'
            if secret else "")
    key = ', key = "xfr-key"' if secret else ""
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{dport}"]
{keys}zones = [{{ origin = "{ORIGIN}", file = "{tmp_path}/copy.zone", primaries = ["127.0.0.1:{kport}"]{key} }}]
""")
    d = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(dport)
    return d


def rcode_of(port):
    q = dns.message.make_query("www.example.test.", "A")
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=2).rcode()


def test_secondary_of_knot(daemons, tmp_path):
    ensure_knot()
    kport, dport = free_port(), free_port()
    kdir = tmp_path / "knot"
    kdir.mkdir()
    (kdir / "example.test.zone").write_text(zone_text(1))
    knot, conf = start_knot(daemons, kdir, kport, dport)
    d = start_dnsd(daemons, tmp_path, dport, kport)
    wait_serial(dport, 1, 10)
    # A change on the primary: Knot reloads and NOTIFYs; dnsd transfers.
    (kdir / "example.test.zone").write_text(zone_text(2))
    subprocess.run(["knotc", "-c", str(conf), "zone-reload", ORIGIN], check=True,
                   capture_output=True, timeout=20)
    took = wait_serial(dport, 2, 10)
    assert took < 1.5, took
    assert "NOTIFY received" in d.output()
    assert "transferred by IXFR" in d.output(), d.output()
    r = dns.query.udp(dns.message.make_query("www.example.test.", "A"), "127.0.0.1", port=dport, timeout=2)
    assert r.answer[0][0].address == "192.0.2.2"
    # Restart with the primary down: the copy answers at once.
    d.stop()
    knot.stop()
    d2 = start_dnsd(daemons, tmp_path, dport, kport)
    assert serial_at(dport) == 2
    # No primary within the SOA expire (4 s since the copy was written):
    # SERVFAIL.
    deadline = time.monotonic() + 15
    while rcode_of(dport) != dns.rcode.SERVFAIL:
        assert time.monotonic() < deadline, d2.output()
        time.sleep(0.2)
    assert "expired" in d2.output()
    # The primary back: the zone is served again.
    start_knot(daemons, kdir, kport, dport)
    deadline = time.monotonic() + 15
    while rcode_of(dport) != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, d2.output()
        time.sleep(0.2)


def test_secondary_of_knot_with_tsig(daemons, tmp_path):
    """With the zone's key, dnsd signs its SOA queries and transfers and
    checks Knot's signatures, and takes only signed NOTIFYs."""
    import base64
    import os
    ensure_knot()
    secret = base64.b64encode(os.urandom(32)).decode()
    kport, dport = free_port(), free_port()
    kdir = tmp_path / "knot"
    kdir.mkdir()
    (kdir / "example.test.zone").write_text(zone_text(1))
    _, conf = start_knot(daemons, kdir, kport, dport, secret)
    d = start_dnsd(daemons, tmp_path, dport, kport, secret)
    wait_serial(dport, 1, 10)
    (kdir / "example.test.zone").write_text(zone_text(2))
    subprocess.run(["knotc", "-c", str(conf), "zone-reload", ORIGIN], check=True,
                   capture_output=True, timeout=20)
    took = wait_serial(dport, 2, 10)
    assert took < 1.5, took
    log = d.output()
    assert "NOTIFY received" in log and "transferred by IXFR" in log, log
    assert "TSIG" not in log, log
    # A NOTIFY without the key: REFUSED.
    n = dns.message.make_query(ORIGIN + ".", "SOA")
    n.set_opcode(dns.opcode.NOTIFY)
    r = dns.query.udp(n, "127.0.0.1", port=dport, timeout=2)
    assert r.rcode() == dns.rcode.REFUSED


def start_bind(daemons, bdir, bport, dport, secret=None):
    """BIND 9 as the primary, unprivileged-style: its own directory, no
    control channel (reloads by SIGHUP), loopback only."""
    bdir.mkdir(exist_ok=True)
    key = (f'key "xfr-key" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
           if secret else "")
    # With a key, transfers need it, and NOTIFYs are signed with it.
    allow = "key xfr-key;" if secret else "127.0.0.1;"
    notify_key = " key xfr-key" if secret else ""
    (bdir / "named.conf").write_text(key + f"""options {{
    directory "{bdir}";
    listen-on port {bport} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file "{bdir}/named.pid";
    session-keyfile "{bdir}/session.key";
    recursion no;
    dnssec-validation no;
    notify-source 127.0.0.1;
    // BIND waits 5 s before a NOTIFY by default; and its default
    // max-ixfr-ratio (100%) answers a test zone's IXFR AXFR-style.
    notify-delay 0;
    max-ixfr-ratio unlimited;
}};
controls {{ }};
logging {{
    channel f {{ file "{bdir}/named.log"; severity info; print-category yes; }};
    category default {{ f; }};
    category xfer-out {{ f; }};
    category notify {{ f; }};
}};
zone "{ORIGIN}" {{
    type primary;
    file "{bdir}/example.test.zone";
    // Keeps the differences between file versions in the journal, so
    // a reload can be served by IXFR (RFC 1995).
    ixfr-from-differences yes;
    notify explicit;
    also-notify {{ 127.0.0.1 port {dport}{notify_key}; }};
    allow-transfer {{ {allow} }};
}};
""")
    b = daemons(["named", "-f", "-c", bdir / "named.conf"])
    wait_tcp(bport)
    return b


def bind_change(b, bdir, serial, extra=""):
    zf = bdir / "example.test.zone"
    zf.write_text(zone_text(serial, extra))
    # BIND reloads a file only if its mtime moved past the loaded one;
    # a rewrite within the same second would go unnoticed.
    t = time.time() + serial
    os.utime(zf, (t, t))
    b.proc.send_signal(signal.SIGHUP)


def test_secondary_of_bind(daemons, tmp_path):
    ensure_server("named", "bind9")
    bport, dport = free_port(), free_port()
    bdir = tmp_path / "bind"
    bdir.mkdir()
    (bdir / "example.test.zone").write_text(zone_text(1))
    b = start_bind(daemons, bdir, bport, dport)
    d = start_dnsd(daemons, tmp_path, dport, bport)
    wait_serial(dport, 1, 10)
    assert "transferred by AXFR" in d.output(), d.output()
    bind_change(b, bdir, 2)
    took = wait_serial(dport, 2, 10)
    assert took < 1.5, took
    log = d.output()
    assert "NOTIFY received" in log and "transferred by IXFR" in log, log
    blog = (bdir / "named.log").read_text()
    assert "sending notifies (serial 2)" in blog and "IXFR started" in blog, blog
    assert "AXFR-style IXFR" not in blog, blog
    r = dns.query.udp(dns.message.make_query("www.example.test.", "A"), "127.0.0.1", port=dport, timeout=2)
    assert r.answer[0][0].address == "192.0.2.2"
    # Restart with the primary down: the copy answers at once.
    d.stop()
    b.stop()
    d2 = start_dnsd(daemons, tmp_path, dport, bport)
    assert serial_at(dport) == 2
    deadline = time.monotonic() + 15
    while rcode_of(dport) != dns.rcode.SERVFAIL:
        assert time.monotonic() < deadline, d2.output()
        time.sleep(0.2)
    assert "expired" in d2.output()
    # BIND back: dnsd's retry timer (1 s) finds it and serves again.
    start_bind(daemons, bdir, bport, dport)
    deadline = time.monotonic() + 15
    while rcode_of(dport) != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, d2.output()
        time.sleep(0.2)
    assert serial_at(dport) == 2


def test_secondary_of_bind_with_tsig(daemons, tmp_path):
    """BIND transfers only with the key and signs its NOTIFYs; dnsd signs
    its queries, checks BIND's signatures and takes only signed NOTIFYs;
    a dnsd with the wrong secret gets nothing."""
    ensure_server("named", "bind9")
    import dns.tsig
    import dns.tsigkeyring
    secret = base64.b64encode(os.urandom(32)).decode()
    bport, dport = free_port(), free_port()
    bdir = tmp_path / "bind"
    bdir.mkdir()
    # Enough records for a transfer of several TCP messages, each of
    # which dnsd checks against BIND's TSIG chain (RFC 8945 5.3.1).
    many = "".join("h%d A 10.0.%d.%d\n" % (i, i // 256, i % 256) for i in range(20000))
    (bdir / "example.test.zone").write_text(zone_text(1, many))
    b = start_bind(daemons, bdir, bport, dport, secret)
    d = start_dnsd(daemons, tmp_path, dport, bport, secret)
    wait_serial(dport, 1, 10)
    bind_change(b, bdir, 2, many)
    took = wait_serial(dport, 2, 10)
    assert took < 1.5, took
    log = d.output()
    assert "NOTIFY received" in log and "transferred by IXFR" in log, log
    assert "TSIG" not in log, log
    # A NOTIFY without the key: REFUSED; with a wrong secret: NOTAUTH
    # (RFC 8945 5.2.2, BADSIG).
    n = dns.message.make_query(ORIGIN + ".", "SOA")
    n.set_opcode(dns.opcode.NOTIFY)
    r = dns.query.udp(n, "127.0.0.1", port=dport, timeout=2)
    assert r.rcode() == dns.rcode.REFUSED
    wrong = dns.tsigkeyring.from_text(
        {"xfr-key.": ("hmac-sha256", base64.b64encode(os.urandom(32)).decode())})
    n = dns.message.make_query(ORIGIN + ".", "SOA")
    n.set_opcode(dns.opcode.NOTIFY)
    n.use_tsig(wrong, keyname="xfr-key.")
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.udp(n, "127.0.0.1", port=dport, timeout=2)
    d.stop()
    # dnsd with the wrong secret: BIND refuses its transfer, and it
    # serves nothing it did not get.
    (tmp_path / "copy.zone").unlink()
    wrong_secret = base64.b64encode(os.urandom(32)).decode()
    d3 = start_dnsd(daemons, tmp_path, dport, bport, wrong_secret)
    deadline = time.monotonic() + 10
    while "TSIG" not in d3.output():
        assert time.monotonic() < deadline, d3.output()
        time.sleep(0.2)
    assert serial_at(dport) is None
    assert rcode_of(dport) != dns.rcode.NOERROR
