"""dnsd as a primary (RFC 1996 NOTIFY, RFC 1995 IXFR) for a real secondary:
Knot DNS on other loopback ports, unprivileged files in a temp dir. After
a change and SIGHUP, dnsd NOTIFYs Knot, Knot transfers by IXFR (its log
says so) and serves the new serial; `dig ixfr=SERIAL` gets the
incremental answer; a reload that changes records but not the serial is
refused and nothing moves."""
import shutil
import signal
import subprocess
import time

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

from conftest import bin_path, free_port, wait_tcp

ORIGIN = "example.test"


def zone_text(serial, extra=""):
    return ("$TTL 300\n$ORIGIN example.test.\n@ SOA ns root %d 3600 900 604800 300\n"
            "  NS ns\nns A 192.0.2.1\nmail A 192.0.2.2\nwww A 192.0.2.3\n%s" % (serial, extra))


def ensure_server(binary, package):
    # scripts/test.sh installs the servers (with services kept from
    # starting); a test never installs a daemon package itself.
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} (package {package}) not installed; scripts/test.sh installs it")


def ensure_knot():
    ensure_server("knotd", "knot")


def serial_at(port):
    q = dns.message.make_query(ORIGIN + ".", "SOA")
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
    except Exception:
        return None
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return rrset[0].serial
    return None


def wait_serial(port, serial, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if serial_at(port) == serial:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError("serial %d not served on %d after %.0f s (has %r)"
                         % (serial, port, timeout, serial_at(port)))


def knot_conf(d, port, primary_port):
    (d / "knot.conf").write_text(f"""server:
    listen: 127.0.0.1@{port}
    rundir: {d}
    background-workers: 1
database:
    storage: {d}
log:
  - target: {d}/knot.log
    any: info
remote:
  - id: primary
    address: 127.0.0.1@{primary_port}
acl:
  - id: from_primary
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: {d}
    zonefile-sync: -1
    zonefile-load: none
    journal-content: changes
zone:
  - domain: {ORIGIN}
    master: primary
    acl: from_primary
""")
    return d / "knot.conf"


@pytest.fixture
def primary_and_knot(daemons, tmp_path):
    ensure_knot()
    pport, kport = free_port(), free_port()
    zf = tmp_path / "example.test.zone"
    zf.write_text(zone_text(1))
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{pport}"]
zones = [{{ origin = "{ORIGIN}", file = "{zf}", notify = ["127.0.0.1:{kport}"] }}]
ixfr_history = 5
""")
    primary = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(pport)
    kdir = tmp_path / "knot"
    kdir.mkdir()
    knot = daemons(["knotd", "-c", knot_conf(kdir, kport, pport)])
    wait_tcp(kport)
    # Knot bootstraps from the primary by AXFR.
    wait_serial(kport, 1, 20)
    return pport, kport, zf, primary, knot, kdir


def test_knot_follows_by_notify_and_ixfr(primary_and_knot):
    pport, kport, zf, primary, _, kdir = primary_and_knot
    for serial in (2, 3):
        zf.write_text(zone_text(serial, "new%d A 192.0.2.%d\n" % (serial, 10 + serial))
                      .replace("www A 192.0.2.3", "www A 192.0.2.%d" % (30 + serial)))
        primary.proc.send_signal(signal.SIGHUP)
        took = wait_serial(kport, serial, 10)
        assert took < 1.5, "Knot took %.2f s to serve serial %d" % (took, serial)
    klog = (kdir / "knot.log").read_text()
    assert "IXFR, incoming" in klog, klog
    assert "AXFR-style" not in klog, klog
    assert "serial 1 -> 2" in klog and "serial 2 -> 3" in klog, klog
    plog = primary.output()
    assert "NOTIFY acknowledged" in plog and "IXFR" in plog, plog
    # Knot has the new data, not only the new serial.
    r = dns.query.udp(dns.message.make_query("new3.example.test.", "A"), "127.0.0.1", port=kport, timeout=2)
    assert r.answer and r.answer[0][0].address == "192.0.2.13"


def test_reload_without_new_serial_is_refused(primary_and_knot):
    pport, kport, zf, primary, _, _ = primary_and_knot
    zf.write_text(zone_text(1, "sneaky A 192.0.2.99\n"))
    primary.proc.send_signal(signal.SIGHUP)
    time.sleep(0.7)
    r = dns.query.udp(dns.message.make_query("sneaky.example.test.", "A"), "127.0.0.1", port=pport, timeout=2)
    assert not r.answer
    assert "serial is still 1" in primary.output()
    assert serial_at(kport) == 1


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed")
def test_dig_ixfr(daemons, tmp_path):
    port = free_port()
    zf = tmp_path / "example.test.zone"
    zf.write_text(zone_text(1))
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{port}"]
zones = [{{ origin = "{ORIGIN}", file = "{zf}" }}]
ixfr_history = 1
""")
    d = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(port)

    def dig(*args):
        return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
                              capture_output=True, text=True, timeout=20).stdout

    def reload_to(serial, extra):
        zf.write_text(zone_text(serial, extra))
        d.proc.send_signal(signal.SIGHUP)
        wait_serial(port, serial, 5)

    reload_to(2, "two A 192.0.2.22\n")
    out = dig("+onesoa", "ixfr=1", ORIGIN)
    records = [ln.split() for ln in out.splitlines() if ln and not ln.startswith(";")]
    serials = [int(f[6]) for f in records if f[3] == "SOA"]
    # RFC 1995 4: new SOA, old SOA, deletions, new SOA, additions, new SOA.
    assert serials == [2, 1, 2, 2], out
    assert ["two.example.test.", "300", "IN", "A", "192.0.2.22"] in records, out
    assert len(records) == 5, out
    # Up to date: the SOA alone.
    out = dig("ixfr=2", ORIGIN)
    assert [ln.split()[3] for ln in out.splitlines() if ln and not ln.startswith(";")] == ["SOA"], out
    # History of 1: from serial 1 after two changes, the whole zone AXFR-style.
    reload_to(3, "three A 192.0.2.33\n")
    out = dig("ixfr=1", ORIGIN)
    records = [ln.split() for ln in out.splitlines() if ln and not ln.startswith(";")]
    assert [int(f[6]) for f in records if f[3] == "SOA"] == [3, 3], out
    assert len(records) == 7, out  # SOA, NS, ns, mail, www, three, SOA
    out = dig("ixfr=2", ORIGIN)
    records = [ln.split() for ln in out.splitlines() if ln and not ln.startswith(";")]
    assert [int(f[6]) for f in records if f[3] == "SOA"] == [3, 2, 3, 3], out
    # Over UDP: the current SOA, the client retries over TCP.
    out = dig("+notcp", "ixfr=1", ORIGIN)
    assert "SOA" in out
    # The access list of AXFR applies: a non-loopback source is not
    # possible here, so check the log names the transfers.
    assert "IXFR" in d.output()


def test_serial_policy_increment(daemons, tmp_path):
    """serial_policy = "increment": new records under the old serial are
    served with the serial raised, and IXFR from the file's serial works;
    a reload of the same file changes nothing."""
    port = free_port()
    zf = tmp_path / "example.test.zone"
    zf.write_text(zone_text(5))
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{port}"]
serial_policy = "increment"
zones = [{{ origin = "{ORIGIN}", file = "{zf}" }}]
""")
    d = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(port)
    zf.write_text(zone_text(5, "added A 192.0.2.50\n"))
    d.proc.send_signal(signal.SIGHUP)
    wait_serial(port, 6, 5)
    r = dns.query.udp(dns.message.make_query("added.example.test.", "A"), "127.0.0.1", port=port, timeout=2)
    assert r.answer
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert serial_at(port) == 6
    q = dns.message.make_query(ORIGIN + ".", "IXFR")
    q.authority.append(dns.rrset.from_text(ORIGIN + ".", 0, "IN", "SOA", "ns. root. 5 1 1 1 1"))
    r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=3, one_rr_per_rrset=True)
    soas = [rr.serial for rrset in r.answer if rrset.rdtype == dns.rdatatype.SOA for rr in rrset]
    assert soas == [6, 5, 6, 6], r
    assert "serial raised by serial_policy" in d.output()


def test_nsd_follows_by_notify_and_ixfr(daemons, tmp_path):
    """NSD as a secondary: AXFR at its start, then NOTIFY and IXFR (dnsd's
    log shows the incremental answer; NSD's the new serial)."""
    ensure_server("nsd", "nsd")
    pport, nport = free_port(), free_port()
    zf = tmp_path / "example.test.zone"
    zf.write_text(zone_text(1))
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{pport}"]
zones = [{{ origin = "{ORIGIN}", file = "{zf}", notify = ["127.0.0.1:{nport}"] }}]
""")
    primary = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(pport)
    ndir = tmp_path / "nsd"
    ndir.mkdir()
    (ndir / "nsd.conf").write_text(f"""server:
    ip-address: 127.0.0.1
    port: {nport}
    username: ""
    zonesdir: "{ndir}"
    database: ""
    pidfile: "{ndir}/nsd.pid"
    xfrdfile: "{ndir}/xfrd.state"
    zonelistfile: "{ndir}/zone.list"
    xfrdir: "{ndir}"
    logfile: "{ndir}/nsd.log"
    verbosity: 2
    server-count: 1
remote-control:
    control-enable: no
zone:
    name: {ORIGIN}
    zonefile: "secondary.zone"
    request-xfr: 127.0.0.1@{pport} NOKEY
    allow-notify: 127.0.0.1 NOKEY
""")
    daemons(["nsd", "-d", "-c", ndir / "nsd.conf"])
    wait_tcp(nport)
    wait_serial(nport, 1, 20)
    zf.write_text(zone_text(2, "new2 A 192.0.2.12\n"))
    primary.proc.send_signal(signal.SIGHUP)
    took = wait_serial(nport, 2, 10)
    assert took < 1.5, took
    assert "serial 1 is updated to 2" in (ndir / "nsd.log").read_text()
    log = primary.output()
    assert "from=Some(1) kind=Incremental" in log, log
    r = dns.query.udp(dns.message.make_query("new2.example.test.", "A"), "127.0.0.1", port=nport, timeout=2)
    assert r.answer


def test_bind_follows_by_notify_and_ixfr(daemons, tmp_path):
    """BIND 9 as a secondary: AXFR at its start, then NOTIFY and IXFR."""
    ensure_server("named", "bind9")
    pport, bport = free_port(), free_port()
    zf = tmp_path / "example.test.zone"
    zf.write_text(zone_text(1))
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{pport}"]
zones = [{{ origin = "{ORIGIN}", file = "{zf}", notify = ["127.0.0.1:{bport}"] }}]
""")
    primary = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(pport)
    bdir = tmp_path / "bind"
    bdir.mkdir()
    (bdir / "named.conf").write_text(f"""options {{
    directory "{bdir}";
    listen-on port {bport} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file "{bdir}/named.pid";
    recursion no;
    dnssec-validation no;
    allow-notify {{ 127.0.0.1; }};
}};
controls {{ }};
logging {{
    channel f {{ file "{bdir}/named.log"; severity info; print-category yes; }};
    category default {{ f; }};
    category xfer-in {{ f; }};
    category notify {{ f; }};
}};
zone "{ORIGIN}" {{
    type secondary;
    primaries port {pport} {{ 127.0.0.1; }};
    file "{bdir}/secondary.db";
}};
""")
    daemons(["named", "-f", "-c", bdir / "named.conf"])
    wait_tcp(bport)
    wait_serial(bport, 1, 20)
    zf.write_text(zone_text(2, "new2 A 192.0.2.12\n"))
    primary.proc.send_signal(signal.SIGHUP)
    took = wait_serial(bport, 2, 10)
    assert took < 1.5, took
    blog = (bdir / "named.log").read_text()
    assert "notify from 127.0.0.1" in blog and "transferred serial 2" in blog, blog
    log = primary.output()
    assert "from=Some(1) kind=Incremental" in log, log


def test_streamed_axfr_survives_a_client_that_leaves(daemons, tmp_path):
    """A large AXFR is sent while it is encoded: a client that reads one
    message and closes stops it without harm, and the next client gets
    the whole zone (RFC 5936 2.2: SOA first and last)."""
    import socket
    import struct
    import dns.zone
    port = free_port()
    zf = tmp_path / "example.test.zone"
    many = "".join("h%d A 10.%d.%d.%d\n" % (i, i >> 16, (i >> 8) & 255, i & 255)
                   for i in range(40000))
    zf.write_text(zone_text(1, many))
    # (40,000 records: about 50 messages of 16 KiB, more than the 8
    # the encoder may run ahead.)
    cfg = tmp_path / "dnsd.toml"
    cfg.write_text(f"""[dnsd]
listen = ["127.0.0.1:{port}"]
zones = [{{ origin = "{ORIGIN}", file = "{zf}" }}]
""")
    d = daemons([bin_path("dnsd"), "-c", cfg])
    wait_tcp(port)
    for _ in range(3):
        wire = dns.message.make_query(ORIGIN + ".", "AXFR").to_wire()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(struct.pack("!H", len(wire)) + wire)
            first = s.recv(2)
            assert len(first) == 2 and struct.unpack("!H", first)[0] > 1000
        # closed after the first bytes of the first message
    z = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", ORIGIN + ".", port=port, timeout=20))
    assert len(z.nodes) == 40000 + 4  # the h*, apex, ns, mail, www
    assert d.proc.poll() is None
    assert serial_at(port) == 1
