"""End-to-end tests for dnsd's response rate limiting (RRL): the real
binary on loopback, flooded with dnspython from several loopback source
addresses (127.0.0.2, 127.0.0.3, ... bound by the client socket, each a
"client network" of its own /24 or sharing one). Above the limit UDP answers
are dropped or slipped (sent truncated, TC=1, question only; BADCOOKIE
with a Server Cookie to a client that sent a Client Cookie), a TCP retry
(or a UDP one with the cookie) gets the full answer, and exempt or other
networks are not affected."""
import signal
import socket
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import ROOT, bin_path, free_port, wait_tcp

LAB_ZONE = ROOT / "bins" / "dnsd" / "zones" / "csuvnetwork.com.zone"
RATE = 5
WINDOW = 2


def start(daemons, tmp_path, extra=""):
    port = free_port()
    cfg = tmp_path / "mail.toml"
    cfg.write_text(
        "[dnsd]\n"
        f'listen = ["127.0.0.1:{port}"]\n'
        f'zones = [{{ origin = "csuvnetwork.com", file = "{LAB_ZONE}" }}]\n'
        "workers = 2\n"
        f"rrl_responses_per_second = {RATE}\n"
        f"rrl_window_secs = {WINDOW}\n"
        "rrl_slip = 2\n"
        'rrl_exempt_clients = ["127.0.0.9"]\n' + extra
    )
    d = daemons([bin_path("dnsd"), "--config", cfg])
    wait_tcp(port)
    return port, d


def flood(port, source, names, rdtype="A", settle=0.5, options=None):
    """Send one UDP query per name from `source` as fast as possible, then
    collect answers until `settle` seconds pass without one. Returns
    (full answers, slipped answers (TC or BADCOOKIE), no answer). With
    `options`, the queries have EDNS with these options."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(settle)
    sent = {}
    for i, name in enumerate(names):
        if options is None:
            q = dns.message.make_query(name, rdtype)
        else:
            q = dns.message.make_query(name, rdtype, use_edns=0, options=options)
        q.id = i
        sent[i] = q
        s.sendto(q.to_wire(), ("127.0.0.1", port))
    full, truncated = [], []
    while True:
        try:
            data = s.recv(4096)
        except socket.timeout:
            break
        r = dns.message.from_wire(data)
        assert r.id in sent
        if r.flags & dns.flags.TC or r.rcode() == dns.rcode.BADCOOKIE:
            truncated.append(r)
        else:
            full.append(r)
    s.close()
    return full, truncated, len(names) - len(full) - len(truncated)


def test_flood_is_limited_slipped_and_tcp_retry_answers(daemons, tmp_path):
    port, d = start(daemons, tmp_path, "query_log = true\n")
    full, tc, dropped = flood(port, "127.0.0.2", ["mail.csuvnetwork.com"] * 60)
    # RATE answers (one more if the burst spans a credit), then every
    # second limited answer dropped and every other slipped (slip 2).
    assert RATE <= len(full) <= RATE + 2, (len(full), len(tc), dropped)
    limited = 60 - len(full)
    assert abs(len(tc) - limited / 2) <= 1 and abs(dropped - limited / 2) <= 1
    for r in full:
        assert r.answer and r.answer[0].to_text().endswith("192.168.3.10")
    # The slipped form: header kept (ID, QR, AA, RD), TC set, the question,
    # no records at all (the query had no OPT, so neither has the answer).
    for r in tc:
        assert r.flags & dns.flags.QR and r.flags & dns.flags.AA and r.flags & dns.flags.RD
        assert r.rcode() == dns.rcode.NOERROR
        assert [q.name.to_text() for q in r.question] == ["mail.csuvnetwork.com."]
        assert not r.answer and not r.authority and not r.additional
    # What a real client does on TC: retry over TCP, from the same address.
    q = dns.message.make_query("mail.csuvnetwork.com", "A")
    r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=3, source="127.0.0.2")
    assert not r.flags & dns.flags.TC and r.answer[0].to_text().endswith("192.168.3.10")
    # Another address of the same /24 shares the account...
    full, tc, dropped = flood(port, "127.0.0.3", ["mail.csuvnetwork.com"] * 4)
    assert len(full) == 0 and len(tc) + dropped == 4
    # ...the exempt address in it does not, nor does another /24.
    for source in ("127.0.0.9", "127.0.1.2"):
        full, tc, dropped = flood(port, source, ["mail.csuvnetwork.com"] * 4, settle=0.3)
        assert (len(full), len(tc), dropped) == (4, 0, 0), source
    # The limiter says so once per episode, naming the network's address.
    out = d.output()
    assert "rate limit started" in out and "client=127.0.0.2" in out
    # The query log shows dropped queries too.
    assert "dropped by rate limit" in out
    # After a window of silence the network is answered again.
    time.sleep(WINDOW + 0.2)
    full, tc, dropped = flood(port, "127.0.0.2", ["mail.csuvnetwork.com"] * 2, settle=0.3)
    assert len(full) == 2


def test_a_valid_server_cookie_is_not_rate_limited(daemons, tmp_path):
    """DNS Cookies (RFC 7873, RFC 9018): a client that returns our Server
    Cookie is at the address it claims, so a flood from it is no spoofed
    amplification; BIND answers it in full, and so does dnsd."""
    import shutil
    import subprocess
    import dns.edns
    port, _ = start(daemons, tmp_path)
    client_cookie = bytes(range(1, 9))
    q = dns.message.make_query("mail.csuvnetwork.com", "A", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.COOKIE, client_cookie)])
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3, source="127.0.0.4")
    [got] = [o.to_wire() for o in r.options if o.otype == dns.edns.COOKIE]
    # Our Client Cookie back, then a 16-octet Server Cookie (version 1).
    assert len(got) == 24 and got[:8] == client_cookie and got[8] == 1
    cookie = [dns.edns.GenericOption(dns.edns.COOKIE, got)]
    full, tc, dropped = flood(port, "127.0.0.4", ["mail.csuvnetwork.com"] * 40, options=cookie)
    assert (len(full), len(tc), dropped) == (40, 0, 0)
    # A forged Server Cookie counts for nothing: limited like any query.
    # The slipped answers say BADCOOKIE (as BIND's do), no records but our
    # OPT with a fresh Server Cookie, so the client can ask again over UDP
    # with it instead of falling back to TCP.
    forged = [dns.edns.GenericOption(dns.edns.COOKIE, got[:-1] + bytes([got[-1] ^ 1]))]
    full, slipped, dropped = flood(port, "127.0.0.4", ["mail.csuvnetwork.com"] * 40, options=forged)
    assert len(full) <= RATE + 2 and len(slipped) + dropped >= 30, (len(full), len(slipped), dropped)
    assert slipped and abs(len(slipped) - dropped) <= 2
    for r in slipped:
        assert r.rcode() == dns.rcode.BADCOOKIE and not r.flags & dns.flags.TC
        assert not r.flags & dns.flags.AA and r.flags & dns.flags.RD
        assert [q.name.to_text() for q in r.question] == ["mail.csuvnetwork.com."]
        assert not r.answer and not r.authority and r.edns == 0
    [fresh] = [o.to_wire() for o in slipped[-1].options if o.otype == dns.edns.COOKIE]
    assert fresh[:8] == client_cookie and len(fresh) == 24
    # That cookie, sent back, is answered in full at once (still limited
    # without it: the account is in debt).
    retry = [dns.edns.GenericOption(dns.edns.COOKIE, fresh)]
    full, slipped, dropped = flood(port, "127.0.0.4", ["mail.csuvnetwork.com"] * 10, options=retry)
    assert (len(full), len(slipped), dropped) == (10, 0, 0)
    for r in full:
        assert r.rcode() == dns.rcode.NOERROR and r.answer
    # A client without a cookie in the same network still gets TC.
    full, slipped, dropped = flood(port, "127.0.0.5", ["mail.csuvnetwork.com"] * 10,
                                   options=[])
    assert not full and slipped, (len(full), len(slipped), dropped)
    for r in slipped:
        assert r.flags & dns.flags.TC and r.rcode() == dns.rcode.NOERROR and r.edns == 0
    # dig, limited: it takes the BADCOOKIE, asks again with the cookie,
    # and has its answer over UDP (as from BIND).
    if shutil.which("dig"):
        flood(port, "127.0.0.6", ["mail.csuvnetwork.com"] * 20, settle=0.2)
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "-b", "127.0.0.6", "+cookie",
                              "+tries=1", "+time=2", "mail.csuvnetwork.com"],
                             capture_output=True, text=True, timeout=20).stdout
        assert "BADCOOKIE, retrying" in out and "192.168.3.10" in out, out
    # A malformed COOKIE option is FORMERR (RFC 7873 5.2.2).
    q = dns.message.make_query("mail.csuvnetwork.com", "A", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.COOKIE, b"short")])
    r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.FORMERR
    if shutil.which("dig"):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tcp", "+cookie", "mail.csuvnetwork.com"],
                             capture_output=True, text=True, timeout=20).stdout
        assert "; COOKIE: " in out and "(good)" in out, out


def test_other_names_and_nxdomain_per_zone(daemons, tmp_path):
    port, _ = start(daemons, tmp_path)
    # Answers are counted per name: a second name has its own account.
    full, _, _ = flood(port, "127.0.3.1", ["mail.csuvnetwork.com"] * 20)
    assert len(full) <= RATE + 2
    full, _, _ = flood(port, "127.0.3.1", ["csuvnetwork.com"] * 3, settle=0.3)
    assert len(full) == 3
    # NXDOMAIN for random names counts per zone: random-subdomain floods
    # do not each get a fresh account.
    names = [f"nosuch{i}.csuvnetwork.com" for i in range(40)]
    full, tc, dropped = flood(port, "127.0.4.1", names)
    assert RATE <= len(full) <= RATE + 2
    assert all(r.rcode() == dns.rcode.NXDOMAIN for r in full)
    assert len(tc) + dropped == 40 - len(full)


def test_log_only_answers_everything(daemons, tmp_path):
    port, d = start(daemons, tmp_path, "rrl_log_only = true\n")
    full, tc, dropped = flood(port, "127.0.5.1", ["mail.csuvnetwork.com"] * 30)
    assert (len(full), len(tc), dropped) == (30, 0, 0)
    out = d.output()
    assert "rate limit started" in out and "log_only=true" in out


def test_loopback_exempt_by_default(daemons, tmp_path):
    """The default configuration limits (20/s) but exempts 127.0.0.0/8."""
    port = free_port()
    d = daemons([
        bin_path("dnsd"), "--listen", f"127.0.0.1:{port}",
        "--zone", f"csuvnetwork.com={LAB_ZONE}", "--workers", "1",
    ])
    wait_tcp(port)
    full, tc, dropped = flood(port, "127.0.0.2", ["mail.csuvnetwork.com"] * 100)
    assert (len(full), len(tc), dropped) == (100, 0, 0)
    assert "rate limit" not in d.output()


def test_sighup_applies_new_limits(daemons, tmp_path):
    """Limits can be tuned during an attack: SIGHUP applies rrl_* at once."""
    port, d = start(daemons, tmp_path)
    full, _, _ = flood(port, "127.0.6.1", ["mail.csuvnetwork.com"] * 30)
    assert len(full) <= RATE + 2
    cfg = tmp_path / "mail.toml"
    cfg.write_text(cfg.read_text().replace(
        f"rrl_responses_per_second = {RATE}", "rrl_responses_per_second = 0"))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "accounts start afresh" not in d.output():
        assert time.time() < deadline, d.output()
        time.sleep(0.05)
    full, tc, dropped = flood(port, "127.0.6.1", ["mail.csuvnetwork.com"] * 30)
    assert (len(full), len(tc), dropped) == (30, 0, 0)
