"""TSIG (RFC 8945) on dnsd's transfers, queries and NOTIFYs: dnspython
checks every message's signature of a multi-message AXFR and IXFR; an
unsigned transfer is refused; a wrong secret, an unknown key and a clock
out of the fudge get NOTAUTH with BADSIG, BADKEY and BADTIME; Knot as a
secondary with the key is notified and follows by IXFR."""
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import types

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.renderer
import dns.tsig
import dns.tsigkeyring
import pytest

from conftest import bin_path, free_port, wait_tcp
from test_dns_transfer import ensure_knot, wait_serial

ORIGIN = "example.test"
SECRET = base64.b64encode(os.urandom(32)).decode()
KEYRING = dns.tsigkeyring.from_text({"xfr-key.": ("hmac-sha256", SECRET)})


def zone_text(serial, n=2000):
    # Big enough for several transfer messages (about 16 KiB each).
    txt = "".join('t%d TXT "%s"\n' % (i, "x" * 40) for i in range(n))
    return ("$TTL 300\n$ORIGIN example.test.\n@ SOA ns root %d 3600 900 604800 300\n"
            "  NS ns\nns A 192.0.2.1\n%s" % (serial, txt))


def config(path, port, zf, notify=()):
    notify = ", ".join('"127.0.0.1:%d"' % p for p in notify)
    path.write_text(f"""[dnsd]
listen = ["127.0.0.1:{port}"]
tsig_keys = [{{ name = "xfr-key", algorithm = "hmac-sha256", secret = "{SECRET}" }},
             {{ name = "other", algorithm = "hmac-sha512", secret = "{SECRET}" }}]
zones = [{{ origin = "{ORIGIN}", file = "{zf}", key = "xfr-key", notify = [{notify}] }}]
""")
    return path


@pytest.fixture
def server(daemons, tmp_path):
    port = free_port()
    zf = tmp_path / "zone"
    zf.write_text(zone_text(1))
    d = daemons([bin_path("dnsd"), "-c", config(tmp_path / "dnsd.toml", port, zf)])
    wait_tcp(port)
    return port, zf, d


def read_frame(s):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    (n,) = __import__("struct").unpack("!H", exactly(2))
    return exactly(n)


def transfer(port, rdtype, serial=None, keyring=KEYRING, keyname="xfr-key."):
    """All messages of a transfer, TSIG checked by dnspython on each."""
    q = dns.message.make_query(ORIGIN + ".", rdtype)
    if serial is not None:
        q.authority.append(dns.rrset.from_text(ORIGIN + ".", 0, "IN", "SOA",
                                               "ns. root. %d 1 1 1 1" % serial))
    if keyring is not None:
        q.use_tsig(keyring, keyname=keyname)
    msgs = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        dns.query.send_tcp(s, q)
        request_mac = q.mac if keyring is not None else b""
        ctx = None
        while True:
            # The server sends nothing after the last message.
            wait = 5 if not msgs else 0.5
            s.settimeout(wait)
            try:
                wire = read_frame(s)
            except socket.timeout:
                break
            m = dns.message.from_wire(wire, keyring=keyring, request_mac=request_mac,
                                      xfr=True, tsig_ctx=ctx, multi=True)
            ctx = m.tsig_ctx
            msgs.append(m)
            if m.rcode() != dns.rcode.NOERROR:
                break
    return msgs


def test_signed_axfr_every_message_checked(server):
    port, _, d = server
    msgs = transfer(port, "AXFR")
    assert len(msgs) >= 3, "a multi-message transfer"
    assert all(m.had_tsig for m in msgs)
    records = sum(len(r) for m in msgs for r in m.answer)
    assert records == 2000 + 4  # SOA, NS, ns A, TXTs, SOA
    # The other key is valid but not the zone's: refused.
    other = dns.tsigkeyring.from_text({"other.": ("hmac-sha512", SECRET)})
    msgs = transfer(port, "AXFR", keyring=other, keyname="other.")
    assert msgs[0].rcode() == dns.rcode.REFUSED and msgs[0].had_tsig


def test_unsigned_transfer_is_refused(server):
    port, _, _ = server
    for rdtype, serial in (("AXFR", None), ("IXFR", 1)):
        msgs = transfer(port, rdtype, serial=serial, keyring=None)
        assert msgs[0].rcode() == dns.rcode.REFUSED
    if shutil.which("dig"):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "axfr", ORIGIN],
                             capture_output=True, text=True, timeout=20).stdout
        assert "Transfer failed" in out
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "-y",
                              "hmac-sha256:xfr-key:" + SECRET, "axfr", ORIGIN],
                             capture_output=True, text=True, timeout=20).stdout
        assert "XFR size: 2004 records" in out and "failure" not in out.lower(), out


def test_signed_ixfr(server):
    port, zf, d = server
    zf.write_text(zone_text(2, n=2001))
    d.proc.send_signal(signal.SIGHUP)
    wait_serial(port, 2, 10)
    msgs = transfer(port, "IXFR", serial=1)
    assert all(m.had_tsig for m in msgs)
    soas = [rr.serial for m in msgs for r in m.answer if r.rdtype == dns.rdatatype.SOA for rr in r]
    assert soas == [2, 1, 2, 2]


def soa_query(port, keyring, keyname, algorithm=dns.tsig.HMAC_SHA256):
    q = dns.message.make_query(ORIGIN + ".", "SOA")
    q.use_tsig(keyring, keyname=keyname, algorithm=algorithm)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def test_badsig_badkey_badtime(server, monkeypatch):
    port, _, _ = server
    # A good signed query gets a signed answer (dnspython checks it).
    r = soa_query(port, KEYRING, "xfr-key.")
    assert r.had_tsig and r.answer
    wrong = dns.tsigkeyring.from_text({"xfr-key.": ("hmac-sha256", base64.b64encode(b"w" * 32).decode())})
    with pytest.raises(dns.tsig.PeerBadSignature):
        soa_query(port, wrong, "xfr-key.")
    unknown = dns.tsigkeyring.from_text({"nokey.": ("hmac-sha256", SECRET)})
    with pytest.raises(dns.tsig.PeerBadKey):
        soa_query(port, unknown, "nokey.")
    # Our clock an hour off: BADTIME, signed, with the server's time.
    late = types.SimpleNamespace(time=lambda: time.time() - 3600)
    monkeypatch.setattr(dns.message, "time", late)
    monkeypatch.setattr(dns.renderer, "time", late)
    with pytest.raises(dns.tsig.PeerBadTime):
        soa_query(port, KEYRING, "xfr-key.")


def test_knot_with_tsig_follows_by_ixfr(daemons, tmp_path):
    ensure_knot()
    pport, kport = free_port(), free_port()
    zf = tmp_path / "zone"
    zf.write_text(zone_text(1, n=10))
    primary = daemons([bin_path("dnsd"), "-c", config(tmp_path / "dnsd.toml", pport, zf, [kport])])
    wait_tcp(pport)
    kdir = tmp_path / "knot"
    kdir.mkdir()
    (kdir / "knot.conf").write_text(f"""server:
    listen: 127.0.0.1@{kport}
    rundir: {kdir}
    background-workers: 1
database:
    storage: {kdir}
log:
  - target: {kdir}/knot.log
    any: info
key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: {SECRET}
remote:
  - id: primary
    address: 127.0.0.1@{pport}
    key: xfr-key
acl:
  - id: from_primary
    address: 127.0.0.1
    key: xfr-key
    action: notify
template:
  - id: default
    storage: {kdir}
    zonefile-sync: -1
    zonefile-load: none
    journal-content: changes
zone:
  - domain: {ORIGIN}
    master: primary
    acl: from_primary
""")
    daemons(["knotd", "-c", kdir / "knot.conf"])
    wait_tcp(kport)
    wait_serial(kport, 1, 20)
    zf.write_text(zone_text(2, n=11))
    primary.proc.send_signal(signal.SIGHUP)
    took = wait_serial(kport, 2, 10)
    assert took < 1.5
    klog = (kdir / "knot.log").read_text()
    assert "IXFR, incoming" in klog and "serial 1 -> 2" in klog, klog
    assert "TSIG" not in klog and "denied" not in klog, klog
    assert "NOTIFY acknowledged" in primary.output()
