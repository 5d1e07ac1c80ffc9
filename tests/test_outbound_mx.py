"""End-to-end: MX routing between two complete instances of the system.

Instance A (csuvnetwork.com) on 127.0.0.2 and instance B (example.org) on
127.0.0.3, each with its own smtpd, pop3d and Maildirs; one dnsd on
127.0.0.1 serves both zones, with MX records naming mail hosts whose A
records are 127.0.0.2 and 127.0.0.3, and both instances ask it
(`[resolver] name_servers`). No transport table: the route is the MX
lookup (RFC 5321 section 5.1). Port 25 is the MX port in production; the
instances listen on one ephemeral port free on both addresses and say so
with `[outbound] smtp_port`, so the test needs no privilege.
"""
import email
import email.policy
import json
import poplib
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import bin_path, wait_tcp

PW = "mx-pass-1"
A_IP, B_IP = "127.0.0.2", "127.0.0.3"


def port_free_on(*ips):
    """An ephemeral port free for TCP on every one of `ips`."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
            ok = True
            for ip in ips[1:]:
                with socket.socket() as t:
                    try:
                        t.bind((ip, port))
                    except OSError:
                        ok = False
            if ok:
                return port
    raise RuntimeError("no port free on " + ", ".join(ips))


def zone(mail_ip):
    return ("$TTL 300\n@ SOA ns hostmaster 1 3600 900 604800 300\n"
            " NS ns\n MX 10 mail\nns A 127.0.0.1\n"
            f"mail A {mail_ip}\n")


class Instance:
    """smtpd + pop3d of one domain on one loopback address."""

    def __init__(self, tmp, daemons, domain, ip, smtp_port, dns_port, extra=""):
        self.dir = tmp / domain
        self.dir.mkdir()
        self.domain, self.ip, self.daemons = domain, ip, daemons
        self.smtp = smtp_port
        self.submission = port_free_on(ip)
        self.pop3 = port_free_on(ip)
        (self.dir / "aliases").write_text("postmaster: a\n")
        self.config = self.dir / "mail.toml"
        self.config.write_text(f"""
[global]
hostname = "mail.{domain}"
local_domains = ["{domain}", "mail.{domain}"]
relay_networks = []
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"

[smtpd]
listen = ["{ip}:{smtp_port}"]
submission_listen = ["{ip}:{self.submission}"]
queue_directory = "queue"
auth_failure_delay = 0
{extra}

[pop3d]
listen = ["{ip}:{self.pop3}"]

[resolver]
name_servers = ["127.0.0.1:{dns_port}"]
timeout = "2s"
attempts = 1

[outbound]
smtp_port = {smtp_port}
""")
        for user in ("a", "b", "c", "user2"):
            subprocess.run(
                [bin_path("mailctl"), "-c", self.config, "user", "add", user, "--password-stdin"],
                input=(PW + "\n").encode(), check=True, capture_output=True)
        self.pop3d = daemons([bin_path("pop3d"), "--config", self.config])
        wait_tcp(self.pop3, host=ip)
        self.env = None
        self.start()

    def start(self):
        self.smtpd = self.daemons([bin_path("smtpd"), "--config", self.config], env=self.env)
        wait_tcp(self.smtp, host=self.ip)

    def stop(self):
        self.smtpd.stop()

    def mailctl(self, *args):
        return subprocess.run([bin_path("mailctl"), "-c", self.config, *args],
                              capture_output=True, text=True, check=True).stdout

    def queue(self):
        return json.loads(self.mailctl("queue", "list", "--json"))

    def submit(self, to, body):
        s = smtplib.SMTP(self.ip, self.submission, timeout=10)
        s.login("user2", PW)
        refused = s.sendmail(f"user2@{self.domain}", to, body)
        s.quit()
        return refused

    def pop3_messages(self, user, n, timeout=20):
        """The messages of `user` read by POP3 once there are `n`."""
        deadline = time.monotonic() + timeout
        while True:
            p = poplib.POP3(self.ip, self.pop3, timeout=10)
            p.user(user)
            p.pass_(PW)
            count = p.stat()[0]
            if count >= n:
                msgs = [b"\r\n".join(p.retr(i)[1]) for i in range(1, count + 1)]
                p.quit()
                return msgs
            p.quit()
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}@{self.domain} has {count} messages, not {n}\n"
                                     + self.smtpd.output()[-3000:])
            time.sleep(0.2)


@pytest.fixture
def pair(tmp_path, daemons):
    """A and B with dnsd; `pair(b_extra)` starts them."""
    def start(b_extra=""):
        dns_port = port_free_on("127.0.0.1")
        for name, ip in (("csuvnetwork.com", A_IP), ("example.org", B_IP)):
            (tmp_path / f"{name}.zone").write_text(zone(ip))
        daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{dns_port}",
                 "--zone", f"csuvnetwork.com={tmp_path / 'csuvnetwork.com.zone'}",
                 "--zone", f"example.org={tmp_path / 'example.org.zone'}"])
        wait_tcp(dns_port)
        smtp_port = port_free_on(A_IP, B_IP)
        a = Instance(tmp_path, daemons, "csuvnetwork.com", A_IP, smtp_port, dns_port)
        b = Instance(tmp_path, daemons, "example.org", B_IP, smtp_port, dns_port, b_extra)
        return a, b
    return start


def wait_listing(inst, pred, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        q = inst.queue()
        if pred(q):
            return q
        assert time.monotonic() < deadline, json.dumps(q, indent=1)
        time.sleep(0.2)


BODY = b"Subject: over MX\r\n\r\nrouted by dnsd\r\n"


def test_submission_at_a_is_read_by_pop3_at_b(pair):
    a, b = pair()
    assert a.submit(["a@example.org"], BODY) == {}
    [msg] = b.pop3_messages("a", 1)
    text = msg.decode()
    assert "Subject: over MX" in text and "routed by dnsd" in text
    assert "by mail.csuvnetwork.com with ESMTPA" in text
    assert "by mail.example.org with ESMTP" in text
    # The log names the MX host found in DNS, with its address.
    out = a.smtpd.output()
    assert f"relay=mail.example.org[{B_IP}]:{b.smtp}" in out, out[-2000:]
    # And back: B's user answers through A's MX.
    assert b.submit(["b@csuvnetwork.com"], b"Subject: re\r\n\r\nback\r\n") == {}
    [back] = a.pop3_messages("b", 1)
    assert b"back" in back


def test_b_down_is_deferred_then_delivered_after_flush(pair):
    a, b = pair()
    b.stop()
    assert a.submit(["a@example.org"], BODY) == {}
    [item] = wait_listing(a, lambda q: q and q[0]["recipients"][0]["state"] == "deferred")
    r = item["recipients"][0]
    assert r["status"] == "4.4.1" and "Connection refused" in r["last_error"], r
    b.start()
    assert "retry" in a.mailctl("queue", "flush")
    [msg] = b.pop3_messages("a", 1)
    assert b"routed by dnsd" in msg
    wait_listing(a, lambda q: q == [])


def test_unknown_user_at_b_returns_an_rfc3464_report(pair):
    a, b = pair()
    assert a.submit(["nobody@example.org"], BODY) == {}
    [raw] = a.pop3_messages("user2", 1)
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    per_message, rcpt = parts[1].get_payload()[:2]
    assert per_message["Reporting-MTA"] == "dns; mail.csuvnetwork.com"
    assert rcpt["Final-Recipient"] == "rfc822; nobody@example.org"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mail.example.org"
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550")
    wait_listing(a, lambda q: q == [])


def test_452_for_one_of_three_recipients_retries_only_that_one_at_once(pair):
    # B takes two recipients per message: the third gets 452 4.5.3, and
    # goes in a new transaction at once (RFC 5321 4.5.3.1.10), without a
    # flush or the 300 s backoff.
    a, b = pair(b_extra="recipient_limit = 2")
    rcpts = ["a@example.org", "b@example.org", "c@example.org"]
    assert a.submit(rcpts, BODY) == {}
    b.pop3_messages("c", 1, timeout=15)
    wait_listing(a, lambda q: q == [])
    # Only c was sent again: a and b have one copy each.
    assert len(b.pop3_messages("a", 1)) == 1 and len(b.pop3_messages("b", 1)) == 1
    log = a.smtpd.output()
    assert log.count("to=<a@example.org>") == 1 and log.count("to=<c@example.org>") == 2, log[-3000:]
    assert "to=<c@example.org>, relay=" in log and "dsn=4.5.3, status=deferred" in log


def test_mx_routing_needs_no_ca_certificates(pair, tmp_path):
    # The relay's resolver asks over UDP and TCP only. hickory-resolver,
    # built with TLS in smtpd (mail-auth's features), would otherwise read
    # the system's CA certificates to set up, and refuse to start on a
    # host with none (rustls-native-certs reads these variables instead).
    a, b = pair()
    a.stop()
    (tmp_path / "no-certs").mkdir()
    a.env = {"SSL_CERT_FILE": str(tmp_path / "no-certs" / "none.pem"),
             "SSL_CERT_DIR": str(tmp_path / "no-certs")}
    a.start()
    assert a.submit(["a@example.org"], BODY) == {}
    [msg] = b.pop3_messages("a", 1)
    assert b"routed by dnsd" in msg


def test_inbound_checks_need_no_ca_certificates(pair, tmp_path):
    # The checks ask through the relay's resolver (one cache, one set-up
    # from [resolver]); mail-auth's own would read the CA certificates
    # and refuse to start without them.
    a, b = pair("\n[auth_checks]\nenabled = true\n")
    b.stop()
    (tmp_path / "no-certs").mkdir()
    b.env = {"SSL_CERT_FILE": str(tmp_path / "no-certs" / "none.pem"),
             "SSL_CERT_DIR": str(tmp_path / "no-certs")}
    b.start()
    assert a.submit(["a@example.org"], BODY) == {}
    [msg] = b.pop3_messages("a", 1)
    assert b"Authentication-Results: mail.example.org;" in msg, msg[:2000]
