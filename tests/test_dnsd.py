"""End-to-end tests for dnsd: the real binary on loopback, queried with dig
and dnspython over UDP and TCP (the lab's checks, TC fallback, AXFR,
malformed packets, --check, the shared config file, the common daemon
flags and SIGHUP reload)."""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest

from conftest import ROOT, bin_path, free_port, wait_tcp

LAB_ZONE = ROOT / "bins" / "dnsd" / "zones" / "csuvnetwork.com.zone"
HAVE_DIG = shutil.which("dig") is not None


def big_zone(path):
    """A zone whose TXT answer (about 4 KB) cannot fit a UDP answer."""
    strings = " ".join('"%s"' % (("%02d" % i) * 60) for i in range(30))
    path.write_text(
        "$TTL 300\n@ SOA ns root 1 3600 900 604800 300\n NS ns\n"
        "ns A 192.0.2.1\nbig TXT %s\n" % strings
    )
    return path


@pytest.fixture
def server(daemons, tmp_path):
    port = free_port()
    big = big_zone(tmp_path / "big.test.zone")
    d = daemons([
        bin_path("dnsd"), "--listen", f"127.0.0.1:{port}",
        "--zone", f"csuvnetwork.com={LAB_ZONE}", "--zone", f"big.test={big}",
        "--workers", "2", "--query-log",
    ])
    wait_tcp(port)
    return port, d


def dig(port, *args):
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True, text=True, timeout=20,
    )
    return out.stdout


def ask(port, name, rdtype, tcp=False, **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    f = dns.query.tcp if tcp else dns.query.udp
    return f(q, "127.0.0.1", port=port, timeout=3)


# ------------------------------------------------------------ the lab, dig

@pytest.mark.skipif(not HAVE_DIG, reason="dig (bind9-dnsutils) not installed")
def test_lab_with_dig(server):
    port, _ = server
    out = dig(port, "MX", "csuvnetwork.com")
    assert "status: NOERROR" in out
    assert "flags: qr aa rd;" in out  # RD echoed, RA clear: no recursion
    answer = out.split(";; ANSWER SECTION:")[1].split(";;")[0]
    assert "MX\t10 mail.csuvnetwork.com." in answer
    additional = out.split(";; ADDITIONAL SECTION:")[1]
    assert "mail.csuvnetwork.com.\t86400\tIN\tA\t192.168.3.10" in additional
    assert dig(port, "+short", "A", "mail.csuvnetwork.com").strip() == "192.168.3.10"
    assert dig(port, "+short", "NS", "csuvnetwork.com").strip() == "dnsserver.csuvnetwork.com."
    soa = dig(port, "+short", "SOA", "csuvnetwork.com").split()
    assert soa[0] == "csuvnetwork.com." and soa[2] == "0" and soa[6] == "10800"
    out = dig(port, "A", "nosuch.csuvnetwork.com")
    assert "status: NXDOMAIN" in out
    assert "AUTHORITY: 1" in out and "IN\tSOA\tcsuvnetwork.com. root.csuvnetwork.com." in out
    assert "status: REFUSED" in dig(port, "A", "example.org")
    # Same over TCP.
    assert dig(port, "+tcp", "+short", "MX", "csuvnetwork.com").strip() == "10 mail.csuvnetwork.com."


@pytest.mark.skipif(not HAVE_DIG, reason="dig (bind9-dnsutils) not installed")
def test_dig_tc_fallback_and_axfr(server):
    port, _ = server
    out = dig(port, "TXT", "big.big.test", "+bufsize=1232")
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 1," in out
    out = dig(port, "AXFR", "csuvnetwork.com")
    lines = [l for l in out.splitlines() if l and not l.startswith(";")]
    assert lines[0].split()[3] == "SOA" and lines[-1].split()[3] == "SOA"
    assert len(lines) == 6


# ------------------------------------------------------ dnspython, UDP/TCP

@pytest.mark.parametrize("tcp", [False, True])
def test_lab_with_dnspython(server, tcp):
    port, _ = server
    r = ask(port, "csuvnetwork.com.", "MX", tcp=tcp)
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert not r.flags & dns.flags.RA
    assert [rr.to_text() for rr in r.answer[0]] == ["10 mail.csuvnetwork.com."]
    assert r.additional[0].name.to_text() == "mail.csuvnetwork.com."
    assert r.additional[0][0].address == "192.168.3.10"
    r = ask(port, "mail.csuvnetwork.com.", "A", tcp=tcp)
    assert r.answer[0][0].address == "192.168.3.10"
    r = ask(port, "csuvnetwork.com.", "SOA", tcp=tcp)
    soa = r.answer[0][0]
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (0, 3600, 3600, 604800, 10800)
    r = ask(port, "nosuch.csuvnetwork.com.", "A", tcp=tcp)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 10800
    r = ask(port, "www.example.org.", "A", tcp=tcp)
    assert r.rcode() == dns.rcode.REFUSED


def test_edns_and_tc(server):
    port, _ = server
    # EDNS 4096 offered, capped at 1232: TC and an empty answer.
    r = ask(port, "big.big.test.", "TXT", use_edns=0, payload=4096)
    assert r.flags & dns.flags.TC and not r.answer
    assert r.edns == 0 and r.payload == 1232
    r, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query("big.big.test.", "TXT", use_edns=0), "127.0.0.1", port=port, timeout=3)
    assert used_tcp and len(r.answer[0][0].strings) == 30
    # EDNS version 1: BADVERS.
    r = ask(port, "csuvnetwork.com.", "A", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    # ANY over UDP is minimal (RFC 8482): one RRset.
    r = ask(port, "csuvnetwork.com.", "ANY")
    assert len(r.answer) == 1
    r = ask(port, "csuvnetwork.com.", "ANY", tcp=True)
    assert len(r.answer) == 3


def test_axfr_dnspython(server):
    port, _ = server
    z = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "csuvnetwork.com.", port=port, timeout=5))
    assert z.find_rdataset("mail", "A")[0].address == "192.168.3.10"
    assert z.find_rdataset("@", "MX")[0].exchange.to_text() == "mail"
    # AXFR over UDP is not a thing (RFC 5936 4.2).
    r = ask(port, "csuvnetwork.com.", "AXFR")
    assert r.rcode() == dns.rcode.NOTIMP


# ----------------------------------------------------------- bad packets

def raw_udp(port, data, wait=0.5):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def still_answers(port):
    r = ask(port, "mail.csuvnetwork.com.", "A")
    assert r.answer[0][0].address == "192.168.3.10"


def test_malformed_packets(server):
    port, d = server
    good = dns.message.make_query("csuvnetwork.com.", "MX").to_wire()
    # Truncated header: silence.
    assert raw_udp(port, good[:7], wait=0.3) is None
    still_answers(port)
    # Compression pointer loop in the question: FORMERR.
    loop = good[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    r = raw_udp(port, loop)
    assert r is not None and r[:2] == good[:2] and r[3] & 0xF == 1
    still_answers(port)
    # Pointer loop in an additional record, arcount claims 3.
    r = raw_udp(port, good[:10] + b"\x00\x03" + good[12:] + b"\xc0\x1d" + b"\x00" * 10)
    assert r is not None and r[3] & 0xF == 1
    # Wrong counts: qdcount 5, ancount 9.
    r = raw_udp(port, good[:4] + b"\x00\x05\x00\x09" + good[8:])
    assert r is not None and r[3] & 0xF == 1
    still_answers(port)
    # Random bytes.
    rnd = random.Random(4)
    for _ in range(300):
        raw_udp(port, bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 120))), wait=0.01)
    still_answers(port)
    # TCP: a bogus length prefix and garbage, then a normal query elsewhere.
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"\x00\x05\x01\x02\x03\x04\x05" + struct.pack("!H", 0xFFFF) + b"x" * 10)
        s.shutdown(socket.SHUT_WR)
        s.recv(100)
    r = ask(port, "mail.csuvnetwork.com.", "A", tcp=True)
    assert r.answer[0][0].address == "192.168.3.10"
    assert d.proc.poll() is None


def test_answers_as_small_as_knots(server):
    """Names inside NS, SOA and MX RDATA are compressed and the negative
    answer's SOA points into the question (RFC 1035 4.1.4, RFC 3597 4):
    each answer is the size Knot 3.2 and BIND 9.18 send for the lab zone
    (SOA 74 octets, was 104)."""
    port, _ = server
    sizes = {}
    for qname, rdtype in [
        ("csuvnetwork.com.", "SOA"),
        ("csuvnetwork.com.", "MX"),
        ("csuvnetwork.com.", "NS"),
        ("nosuch.csuvnetwork.com.", "A"),
    ]:
        q = dns.message.make_query(qname, rdtype)
        wire = raw_udp(port, q.to_wire())
        assert wire is not None
        sizes[(qname, rdtype)] = len(wire)
        m = dns.message.from_wire(wire)
        assert q.is_response(m)
        if rdtype == "SOA":
            soa = m.answer[0][0]
            assert soa.mname.to_text() == "csuvnetwork.com."
            assert soa.rname.to_text() == "root.csuvnetwork.com."
        elif rdtype == "MX":
            assert m.answer[0][0].exchange.to_text() == "mail.csuvnetwork.com."
            assert m.additional[0].name.to_text() == "mail.csuvnetwork.com."
        elif rdtype == "NS":
            assert m.answer[0][0].target.to_text() == "dnsserver.csuvnetwork.com."
        else:
            assert m.rcode() == dns.rcode.NXDOMAIN
            assert m.authority[0][0].rname.to_text() == "root.csuvnetwork.com."
    assert sizes == {
        ("csuvnetwork.com.", "SOA"): 74,
        ("csuvnetwork.com.", "MX"): 70,
        ("csuvnetwork.com.", "NS"): 73,
        ("nosuch.csuvnetwork.com.", "A"): 81,
    }
    if HAVE_DIG:
        out = dig(port, "+norec", "+nocookie", "SOA", "csuvnetwork.com")
        assert "csuvnetwork.com. root.csuvnetwork.com. 0 3600 3600 604800 10800" in out
        assert "MSG SIZE  rcvd: 85" in out  # 74 + dig's OPT (11)
        # dig sends a Client Cookie by default; with ours back (28 octets)
        # the answer is the size BIND sends.
        out = dig(port, "+norec", "SOA", "csuvnetwork.com")
        assert "MSG SIZE  rcvd: 113" in out and "(good)" in out


def test_no_question_with_opt_gets_opt_back(server):
    """QDCOUNT 0 with an EDNS OPT: FORMERR with our OPT, DO echoed (RFC
    6891 6.1.1), as from Knot and BIND; BADVERS for EDNS version 1."""
    port, _ = server
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"  # 1232, DO
    r = raw_udp(port, b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01" + opt)
    m = dns.message.from_wire(r)
    assert m.id == 0x1234 and m.rcode() == dns.rcode.FORMERR
    assert m.edns == 0 and m.ednsflags & dns.flags.DO
    v1 = opt[:6] + b"\x01" + opt[7:]
    r = raw_udp(port, b"\x12\x35\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01" + v1)
    assert dns.message.from_wire(r).rcode() == dns.rcode.BADVERS
    # Without an OPT: the bare header, as before.
    r = raw_udp(port, b"\x12\x36\x01\x00" + b"\x00" * 8)
    assert len(r) == 12 and r[3] & 0xF == dns.rcode.FORMERR
    still_answers(port)


def test_dname_substitution(daemons, tmp_path):
    """Names below a DNAME are redirected (RFC 6672 3.2) as NSD, Knot and
    BIND do: the DNAME, a CNAME synthesized from the name asked (the
    DNAME's TTL), then the new name followed inside the zone; the DNAME's
    owner itself is not redirected."""
    zone = tmp_path / "dn.test.zone"
    zone.write_text("$TTL 3600\n@ SOA ns1 hostmaster 1 3600 900 604800 300\n@ NS ns1\n"
                    "ns1 A 192.0.2.1\nold 600 DNAME new\nx.new A 192.0.2.60\n"
                    "ext DNAME example.org.\n")
    port = free_port()
    daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{port}",
             "--zone", f"dn.test={zone}", "--workers", "1"])
    wait_tcp(port)
    r = ask(port, "x.old.dn.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    got = [(x.name.to_text(), x.ttl, dns.rdatatype.to_text(x.rdtype), x[0].to_text())
           for x in r.answer]
    assert got == [("old.dn.test.", 600, "DNAME", "new.dn.test."),
                   ("x.old.dn.test.", 600, "CNAME", "x.new.dn.test."),
                   ("x.new.dn.test.", 3600, "A", "192.0.2.60")]
    # The new name does not exist: NXDOMAIN after the redirect.
    r = ask(port, "y.old.dn.test.", "A", tcp=True)
    assert r.rcode() == dns.rcode.NXDOMAIN and len(r.answer) == 2
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    # Out of the zone: the client follows the CNAME.
    r = ask(port, "www.ext.dn.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer[1][0].target.to_text() == "www.example.org."
    # The owner: its own data (NODATA for A).
    r = ask(port, "old.dn.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    if HAVE_DIG:
        out = dig(port, "+short", "A", "x.old.dn.test")
        assert out.split() == ["new.dn.test.", "x.new.dn.test.", "192.0.2.60"]


def test_answers_the_reference_servers_agree_on(daemons, tmp_path):
    """Where NSD, Knot and BIND all answer alike: DS at a cut comes from
    the parent even when the child zone is served too (RFC 4035
    3.1.4.1); a CNAME query below a DNAME gets the DNAME and its CNAME
    only; a CNAME into a delegation gets the referral after it (RFC 1034
    4.3.2 step 3b); transfers of a non-zone name are NOTAUTH; a NOTIFY for
    a primary zone is REFUSED."""
    parent = tmp_path / "p.test.zone"
    parent.write_text("$TTL 3600\n@ SOA ns1 hostmaster 1 3600 900 604800 300\n@ NS ns1\n"
                      "ns1 A 192.0.2.1\nchild NS ns.child\nns.child A 192.0.2.2\n"
                      "child DS 54321 13 2 FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210\n"
                      "old DNAME new\nnew A 192.0.2.3\ninto CNAME www.child\n")
    child = tmp_path / "child.p.test.zone"
    child.write_text("$TTL 600\n@ SOA ns hostmaster 1 3600 900 604800 120\n@ NS ns\n"
                     "ns A 192.0.2.2\nwww A 192.0.2.4\n")
    port = free_port()
    daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{port}",
             "--zone", f"p.test={parent}", "--zone", f"child.p.test={child}", "--workers", "1"])
    wait_tcp(port)
    r = ask(port, "child.p.test.", "DS")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert [(x.name.to_text(), x.ttl, x[0].key_tag) for x in r.answer] == [("child.p.test.", 3600, 54321)]
    r = ask(port, "child.p.test.", "SOA")
    assert r.answer[0][0].minimum == 120
    r = ask(port, "x.old.p.test.", "CNAME")
    assert r.rcode() == dns.rcode.NOERROR and not r.authority
    assert [dns.rdatatype.to_text(x.rdtype) for x in r.answer] == ["DNAME", "CNAME"]
    # The child's A is not the parent's to give: the referral follows the
    # CNAME (as from a parent that does not also serve the child).
    r = ask(port, "into.p.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert [x.name.to_text() for x in r.answer] == ["into.p.test."]
    assert [(x.name.to_text(), dns.rdatatype.to_text(x.rdtype)) for x in r.authority] == [("child.p.test.", "NS")]
    assert [x[0].address for x in r.additional] == ["192.0.2.2"]
    r = ask(port, "ns1.p.test.", "AXFR", tcp=True)
    assert r.rcode() == dns.rcode.NOTAUTH
    notify = dns.message.make_query("p.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    r = dns.query.udp(notify, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.REFUSED
    if HAVE_DIG:
        out = dig(port, "+norec", "DS", "child.p.test")
        assert "status: NOERROR" in out and "54321 13 2" in out, out


def test_tcp_pipelining(server):
    port, _ = server
    names = ["csuvnetwork.com.", "mail.csuvnetwork.com.", "nosuch.csuvnetwork.com.", "dnsserver.csuvnetwork.com."]
    msgs = [dns.message.make_query(n, "A", id=i + 1) for i, n in enumerate(names)]
    blob = b"".join(struct.pack("!H", len(m.to_wire())) + m.to_wire() for m in msgs)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(blob)
        f = s.makefile("rb")
        ids = []
        for _ in msgs:
            (n,) = struct.unpack("!H", f.read(2))
            ids.append(dns.message.from_wire(f.read(n)).id)
    assert ids == [1, 2, 3, 4]


# ---------------------------------------------------- check, config, reload

def test_check_command(tmp_path):
    out = subprocess.run([bin_path("dnsd"), "--check", str(LAB_ZONE)], capture_output=True, text=True)
    assert out.returncode == 0 and "loaded serial 0" in out.stdout
    bad = tmp_path / "bad.zone"
    bad.write_text("$TTL 1h\n@ SOA ns root ( 1 2 3 4 5 )\n NS ns\nns A 10.0.0.256\nmx MX ten mail\n")
    out = subprocess.run([bin_path("dnsd"), "--check", str(bad), "example.com"], capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{bad}:4:6: expected an IPv4 address" in out.stdout
    assert f"{bad}:5:7: expected a preference" in out.stdout


def test_shared_config_file(daemons, tmp_path):
    port = free_port()
    shutil.copy(LAB_ZONE, tmp_path / "lab.zone")
    cfg = tmp_path / "mail.toml"
    cfg.write_text(
        '[global]\nhostname = "mail.csuvnetwork.com"\n[smtpd]\nlisten = ["127.0.0.1:2525"]\n'
        f'[dnsd]\nlisten = ["127.0.0.1:{port}"]\n'
        'zones = [{ origin = "csuvnetwork.com", file = "lab.zone" }]\nworkers = 1\n'
        'tcp_idle_timeout_secs = 1\ntcp_max_connections = 2\n'
    )
    d = daemons([bin_path("dnsd"), "--config", cfg])
    wait_tcp(port)
    time.sleep(1.5)  # let wait_tcp's probe connection time out
    assert ask(port, "mail.csuvnetwork.com.", "A").answer[0][0].address == "192.168.3.10"
    # Connection limit: two idle connections are kept, a third is closed.
    a = socket.create_connection(("127.0.0.1", port), timeout=3)
    b = socket.create_connection(("127.0.0.1", port), timeout=3)
    time.sleep(0.2)
    c = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        assert c.recv(10) == b""
    except ConnectionResetError:
        pass
    # Idle timeout: the server closes idle connections after 1 s.
    t0 = time.monotonic()
    assert a.recv(10) == b"" and b.recv(10) == b""
    assert 0.5 < time.monotonic() - t0 < 3
    for s in (a, b, c):
        s.close()
    d.stop()
    cfg.write_text(cfg.read_text() + "colour = 3\n")
    out = subprocess.run([bin_path("dnsd"), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "line 11" in out.stderr and "colour" in out.stderr


def test_server_identity_and_extended_errors(server, daemons, tmp_path):
    """What NSD and Knot send: CH TXT id.server/version.bind, NSID when
    asked (RFC 5001), and an Extended DNS Error saying why a query was
    refused (RFC 8914)."""
    import dns.edns
    port, _ = server
    version = "dnsd " + next(
        line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines()
        if line.startswith("version = "))

    def chaos(p, name, rdtype="TXT", nsid=False):
        opts = [dns.edns.GenericOption(dns.edns.NSID, b"")] if nsid else []
        q = dns.message.make_query(name, rdtype, rdclass="CH", use_edns=0, options=opts)
        return dns.query.udp(q, "127.0.0.1", port=p, timeout=3)

    def ede(r):
        return [o.code for o in r.options if o.otype == dns.edns.EDE]

    # The built-in defaults: [global] hostname, our name and version, no NSID.
    r = chaos(port, "id.server.", nsid=True)
    assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.AA
    assert [(a.ttl, a.rdclass, a[0].strings) for a in r.answer] == [(0, 3, (b"mail.csuvnetwork.com",))]
    assert not [o for o in r.options if o.otype == dns.edns.NSID]
    assert chaos(port, "VERSION.bind.").answer[0][0].strings == (version.encode(),)
    # Refusals say why: not our zone (20), transfer not allowed (18), a
    # CHAOS name we do not answer (21); none without EDNS in the query.
    q = dns.message.make_query("www.example.org.", "A", use_edns=0)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.REFUSED and ede(r) == [20]
    assert ede(chaos(port, "authors.bind.")) == [21]
    assert ede(chaos(port, "id.server.", "A")) == [21]
    r = ask(port, "www.example.org.", "A")
    assert r.rcode() == dns.rcode.REFUSED and r.edns < 0
    assert ede(ask(port, "csuvnetwork.com.", "A")) == []

    # Configured: an NSID, our own identity, the version hidden, no
    # transfers from loopback.
    port2 = free_port()
    cfg = tmp_path / "mail.toml"
    cfg.write_text(
        f'[dnsd]\nlisten = ["127.0.0.1:{port2}"]\n'
        f'zones = [{{ origin = "csuvnetwork.com", file = "{LAB_ZONE}" }}]\n'
        'nsid = "ns1.csuvnetwork.com"\nidentity = "ns1"\nhide_version = true\naxfr_allow = []\n'
    )
    daemons([bin_path("dnsd"), "--config", cfg])
    wait_tcp(port2)
    r = chaos(port2, "hostname.bind.", nsid=True)
    assert r.answer[0][0].strings == (b"ns1",)
    assert [o.to_wire() for o in r.options if o.otype == dns.edns.NSID] == [b"ns1.csuvnetwork.com"]
    assert chaos(port2, "version.server.").rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("csuvnetwork.com.", "AXFR", use_edns=0)
    r = dns.query.tcp(q, "127.0.0.1", port=port2, timeout=3)
    assert r.rcode() == dns.rcode.REFUSED and ede(r) == [18]
    if HAVE_DIG:
        out = dig(port2, "+nsid", "mail.csuvnetwork.com", "A")
        assert 'NSID: 6e 73 31 2e 63 73 75 76 6e 65 74 77 6f 72 6b 2e 63 6f 6d ("ns1.csuvnetwork.com")' in out, out
        out = dig(port2, "www.example.org", "A")
        assert "status: REFUSED" in out and "EDE: 20 (Not Authoritative)" in out, out
    # A bad NSID stops dnsd at start with the line that holds it.
    cfg.write_text(cfg.read_text().replace('nsid = "ns1.csuvnetwork.com"', 'nsid = "0xabc"'))
    out = subprocess.run([bin_path("dnsd"), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "nsid" in out.stderr and "line 4" in out.stderr, out.stderr


def test_sighup_reload(daemons, tmp_path):
    port = free_port()
    zf = tmp_path / "csuvnetwork.com.zone"
    text = LAB_ZONE.read_text()
    zf.write_text(text)
    d = daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{port}", "--zone", f"csuvnetwork.com={zf}"])
    wait_tcp(port)
    # New records need a new serial (a reload without one is refused).
    zf.write_text(text.replace("mail   IN A    192.168.3.10", "mail   IN A    192.168.3.11")
                  .replace("0      ; serial", "1      ; serial"))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while ask(port, "mail.csuvnetwork.com.", "A").answer[0][0].address != "192.168.3.11":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # A broken file: the old zone keeps serving, the log names file:line:column.
    zf.write_text(text.replace("192.168.3.10", "192.168.3.999"))
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert ask(port, "mail.csuvnetwork.com.", "A").answer[0][0].address == "192.168.3.11"
    log = d.stop()
    assert f"{zf}:12:" in log and "reload failed" in log


def test_unknown_section_is_refused(tmp_path):
    """A `[dns]` typo for `[dnsd]` stops dnsd at start, as smtpd and pop3d do."""
    cfg = tmp_path / "mail.toml"
    cfg.write_text(f'[dns]\nlisten = ["127.0.0.1:{free_port()}"]\n')
    out = subprocess.run([bin_path("dnsd"), "--config", str(cfg), "--zone", f"csuvnetwork.com={LAB_ZONE}"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "mail.toml" in out.stderr and "line 1" in out.stderr and "unknown field `dns`" in out.stderr
    for daemon in ("smtpd", "pop3d"):
        out = subprocess.run([bin_path(daemon), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and "unknown field `dns`" in out.stderr, (daemon, out.stderr)


def test_common_daemon_flags(daemons):
    """`--transcript` (docs/lab.md: every daemon takes it) logs the queries;
    `-c` is `--config`."""
    port = free_port()
    d = daemons([bin_path("dnsd"), "--transcript", "--listen", f"127.0.0.1:{port}",
                 "--zone", f"csuvnetwork.com={LAB_ZONE}", "--workers", "1"])
    wait_tcp(port)
    assert ask(port, "mail.csuvnetwork.com.", "A").answer[0][0].address == "192.168.3.10"
    deadline = time.monotonic() + 5
    while "mail.csuvnetwork.com. A" not in d.output():
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.05)
    out = subprocess.run([bin_path("dnsd"), "-c", "/nonexistent/mail.toml"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "/nonexistent/mail.toml" in out.stderr


def test_sighup_rereads_the_configuration(daemons, tmp_path):
    """SIGHUP rereads the file too: a zone added there is served, and a
    `--zone` given on the command line is still served after the reload."""
    port = free_port()
    (tmp_path / "example.org.zone").write_text("$TTL 1h\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.7\n")
    cfg = tmp_path / "mail.toml"
    cfg.write_text(f'[dnsd]\nlisten = ["127.0.0.1:{port}"]\nworkers = 1\n')
    d = daemons([bin_path("dnsd"), "--config", cfg, "--zone", f"csuvnetwork.com={LAB_ZONE}"])
    wait_tcp(port)
    assert ask(port, "ns.example.org.", "A").rcode() == dns.rcode.REFUSED
    cfg.write_text(cfg.read_text() + 'zones = [{ origin = "example.org", file = "example.org.zone" }]\n')
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while ask(port, "ns.example.org.", "A").rcode() != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.05)
    assert ask(port, "ns.example.org.", "A").answer[0][0].address == "192.0.2.7"
    assert ask(port, "mail.csuvnetwork.com.", "A").answer[0][0].address == "192.168.3.10"
    # A broken file is refused with its line; the running set stays.
    cfg.write_text(cfg.read_text() + "colour = 3\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "colour" not in d.output():
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.05)
    assert "reload failed" in d.output()
    assert ask(port, "ns.example.org.", "A").answer[0][0].address == "192.0.2.7"
    assert d.proc.poll() is None
