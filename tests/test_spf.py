"""End-to-end: SPF (RFC 7208) through the real daemons.

dnsd serves an `org` zone whose SPF records hit the limits of RFC 7208
section 4.6.4 (10 DNS-querying terms, 2 void lookups) exactly and one
over, and one with an unknown mechanism (section 4.6.1); smtpd checks mail
arriving on its inbound listener against them and writes what it found
into `Authentication-Results:` (RFC 8601): `spf=permerror` over a limit and
for the unknown mechanism, the record's own `-all` (`spf=fail`) at a limit.
The zone is the whole `org`, so DMARC's tree walk gets authoritative
answers (no DMARC records: `dmarc=none`)."""
import re
import subprocess
import smtplib
import time

import pytest

from conftest import bin_path, free_port, wait_tcp

PW = "spf-pass-1"
HOST = "mx.example.net"


def zone() -> str:
    lines = [
        "$TTL 300",
        "@ IN SOA ns.org. hostmaster.org. 1 3600 600 86400 300",
        "@ IN NS ns.org.",
        "ns IN A 127.0.0.1",
        # The HELO name the client gives, and a sender that passes.
        'helo IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        'pass IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        # Section 4.6.1: an unknown mechanism is permerror.
        'unknown IN TXT "v=spf1 foo -all"',
    ]
    # Hosts a1..a11, none of them the client.
    lines += [f"a{i} IN A 192.0.2.{i}" for i in range(1, 12)]
    # Ten `a` terms query DNS ten times: the limit, then `-all`.
    ten = " ".join(f"a:a{i}.org" for i in range(1, 11))
    lines.append(f'lookups10 IN TXT "v=spf1 {ten} -all"')
    # Eleven is over it.
    eleven = " ".join(f"a:a{i}.org" for i in range(1, 12))
    lines.append(f'lookups11 IN TXT "v=spf1 {eleven} -all"')
    # A chain of 11 includes is over it too.
    for i in range(11):
        lines.append(f'inc{i} IN TXT "v=spf1 include:inc{i + 1}.org -all"')
    lines.append('inc11 IN TXT "v=spf1 +all"')
    # nx1..nx3 do not exist (NXDOMAIN) and empty has no A record (an
    # empty answer): both are void lookups.
    lines.append('empty IN TXT "nothing here"')
    lines.append('void2 IN TXT "v=spf1 a:nx1.org a:empty.org -all"')
    lines.append('void3 IN TXT "v=spf1 a:nx1.org a:empty.org a:nx3.org -all"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def mx(tmp_path, daemons):
    (tmp_path / "org.zone").write_text(zone())
    dns_port = free_port()
    daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{dns_port}",
             "--zone", f"org={tmp_path / 'org.zone'}"])
    wait_tcp(dns_port)
    smtp = free_port()
    cfg = tmp_path / "mail.toml"
    cfg.write_text(f"""
[global]
hostname = "{HOST}"
local_domains = ["example.net"]
# Loopback clients are strangers here, so inbound mail is checked.
relay_networks = []
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"

[smtpd]
listen = ["127.0.0.1:{smtp}"]
submission_listen = []
queue_directory = "queue"

[resolver]
name_servers = ["127.0.0.1:{dns_port}"]
timeout = "2s"

[auth_checks]
enabled = true
""")
    subprocess.run([bin_path("mailctl"), "-c", cfg, "user", "add", "b", "--password-stdin"],
                   input=(PW + "\n").encode(), check=True, capture_output=True)
    d = daemons([bin_path("smtpd"), "--config", cfg])
    wait_tcp(smtp)
    return smtp, tmp_path / "mail" / "b" / "Maildir" / "new", d


def deliver(mx, sender: str) -> str:
    """Sends as another domain's MTA would; returns the smtp.mailfrom SPF
    result of the delivered message's Authentication-Results field."""
    smtp, inbox, d = mx
    before = set(inbox.iterdir()) if inbox.exists() else set()
    s = smtplib.SMTP("127.0.0.1", smtp, local_hostname="helo.org", timeout=20)
    msg = (f"From: <{sender}>\r\nTo: b@example.net\r\nSubject: spf\r\n"
           f"Message-ID: <{time.monotonic_ns()}@org>\r\n\r\nHi.\r\n").encode()
    s.sendmail(sender, ["b@example.net"], msg)
    s.quit()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = (set(inbox.iterdir()) if inbox.exists() else set()) - before
        if new:
            got = new.pop().read_bytes().decode()
            break
        time.sleep(0.05)
    else:
        raise AssertionError("not delivered\n" + d.output()[-2000:])
    header = got.split("\r\n\r\n", 1)[0]
    m = re.search(r"^Authentication-Results: .*?(?=^\S)", header + "\r\nX", re.S | re.M)
    assert m, got
    ar = re.sub(r"\r\n[ \t]+", " ", m.group(0))
    assert ar.startswith(f"Authentication-Results: {HOST};"), ar
    assert re.search(r"spf=pass \([^)]*\) smtp\.helo=helo\.org", ar), ar
    r = re.search(r"spf=(\w+) (?:\([^)]*\) )?smtp\.mailfrom=(\S+)", ar)
    assert r and r.group(2).strip(";") == sender, ar
    return r.group(1)


def test_spf_limits_and_unknown_mechanism_in_authentication_results(mx):
    assert deliver(mx, "x@pass.org") == "pass"
    # Section 4.6.1 / 5: an unknown mechanism.
    assert deliver(mx, "x@unknown.org") == "permerror"
    # Section 4.6.4: 10 DNS-querying terms are allowed, the 11th is not.
    assert deliver(mx, "x@lookups10.org") == "fail"
    assert deliver(mx, "x@lookups11.org") == "permerror"
    assert deliver(mx, "x@inc0.org") == "permerror"
    assert deliver(mx, "x@inc1.org") == "pass"
    # Section 4.6.4: two void lookups are allowed, the third is not.
    assert deliver(mx, "x@void2.org") == "fail"
    assert deliver(mx, "x@void3.org") == "permerror"
