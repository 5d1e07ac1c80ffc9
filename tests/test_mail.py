"""End-to-end: smtpd, pop3d and dnsd on loopback, driven by real clients.

The lab's dialogue: user2 authenticates with AUTH LOGIN and sends to
user1@csuvnetwork.com; the message lands in user1's Maildir with trace
headers; user1 reads it by POP3 byte for byte; MX for csuvnetwork.com
resolves to mail.csuvnetwork.com with its address.
"""
import base64
import os
import pathlib
import poplib
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest
import re

from conftest import bin_path, free_port, wait_tcp

PASSWORDS = {"user1": "user1-secret", "user2": "p@ss word2"}
DOMAIN = "csuvnetwork.com"
QUEUE_ID = re.compile(r'queue_id="([0-9A-F]+)"')


class Lab:
    """One configuration file, the accounts, and the three daemons."""

    def __init__(self, tmp: pathlib.Path, daemons, relay_networks=None, extra="", dns=False,
                 size_limit=100000, global_extra="", auth_penalty=0, tls=None, pop3_extra="",
                 start=True):
        """`tls`: the body of a `[tls]` section; with it the lab also
        listens for submissions (465-style) and pop3s (995-style).
        `start=False` writes the configuration and the accounts only."""
        self.tmp = tmp
        self.smtp = free_port()
        self.submission = free_port()
        self.pop3 = free_port()
        self.dns = free_port()
        self.submissions = free_port() if tls is not None else None
        self.pop3s = free_port() if tls is not None else None
        tls_listen = (f'submissions_listen = ["127.0.0.1:{self.submissions}"]'
                      if tls is not None else "")
        pop3s_listen = f'pop3s_listen = ["127.0.0.1:{self.pop3s}"]' if tls is not None else ""
        tls_section = f"[tls]\n{tls}" if tls is not None else ""
        self.maildir = tmp / "mail"
        relay = relay_networks if relay_networks is not None else ["127.0.0.0/8"]
        self.config = tmp / "mail.toml"
        zone = tmp / "csuvnetwork.com.zone"
        if dns:
            shutil.copy(pathlib.Path(__file__).parent.parent / "bins/dnsd/zones/csuvnetwork.com.zone", zone)
        self.config.write_text(
            f"""
[global]
hostname = "mail.csuvnetwork.com"
local_domains = ["mail.csuvnetwork.com", "localhost.csuvnetwork.com", "localhost", "csuvnetwork.com"]
relay_networks = {relay!r}
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
transcript = true
{global_extra}

[smtpd]
listen = ["127.0.0.1:{self.smtp}"]
submission_listen = ["127.0.0.1:{self.submission}"]
message_size_limit = {size_limit}
auth_failure_delay = 0
auth_penalty = {auth_penalty}
{tls_listen}
{extra}

[pop3d]
listen = ["127.0.0.1:{self.pop3}"]
auth_failure_delay = 0
auth_penalty = {auth_penalty}
{pop3s_listen}
{pop3_extra}

{tls_section}

[resolver]
# Outbound delivery asks only our dnsd (which knows csuvnetwork.com), never
# the system's resolver: the tests send no traffic off the host.
name_servers = ["127.0.0.1:{self.dns}"]
timeout = "1s"

[dnsd]
listen = ["127.0.0.1:{self.dns}"]
zones = [{{ origin = "csuvnetwork.com", file = "csuvnetwork.com.zone" }}]
"""
        )
        (tmp / "aliases").write_text("postmaster: user1\n")
        for user, pw in PASSWORDS.items():
            subprocess.run(
                [bin_path("mailctl"), "--passwd", tmp / "passwd", "--aliases", tmp / "aliases",
                 "--maildir-root", self.maildir, "user", "add", user, "--password-stdin"],
                input=(pw + "\n").encode(),
                check=True,
                capture_output=True,
            )
        if not start:
            return
        self.smtpd = daemons([bin_path("smtpd"), "--config", self.config])
        self.pop3d = daemons([bin_path("pop3d"), "--config", self.config])
        ports = [self.smtp, self.submission, self.pop3]
        if dns:
            self.dnsd = daemons([bin_path("dnsd"), "--config", self.config])
            ports.append(self.dns)
        if tls is not None:
            ports += [self.submissions, self.pop3s]
        for port in ports:
            wait_tcp(port)

    def settle(self, timeout=10.0):
        """Wait until every message smtpd queued has had its delivery
        attempt (delivered or deferred): like Postfix, smtpd answers 250
        once the message is durable in its queue and delivers right after."""
        deadline = time.monotonic() + timeout
        while True:
            queued, handled = set(), set()
            for line in self.smtpd.output().splitlines():
                m = QUEUE_ID.search(line)
                if m is None:
                    continue
                if " queued " in line:
                    queued.add(m.group(1))
                elif " delivered " in line or " delivery deferred " in line:
                    handled.add(m.group(1))
            if queued <= handled or time.monotonic() > deadline:
                return queued - handled
            time.sleep(0.01)

    def inbox(self, user="user1"):
        self.settle()
        d = self.maildir / user / "Maildir"
        return sorted(
            p for sub in ("new", "cur") if (d / sub).exists() for p in (d / sub).iterdir()
        )

    def smtp_client(self, port=None):
        s = smtplib.SMTP("127.0.0.1", port or self.smtp, local_hostname="client2.csuvnetwork.com", timeout=10)
        s.ehlo()
        return s

    def pop(self, user="user1"):
        self.settle()
        p = poplib.POP3("127.0.0.1", self.pop3, timeout=10)
        p.user(user)
        p.pass_(PASSWORDS[user])
        return p


@pytest.fixture
def lab(tmp_path, daemons):
    return Lab(tmp_path, daemons)


def message(subject: str, body: bytes = b"Hello user1,\r\nthis is the lab message.\r\n") -> bytes:
    return (
        b'From: "user2@mail.csuvnetwork.com" <user2@mail.csuvnetwork.com>\r\n'
        b"To: user1@csuvnetwork.com\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Message-ID: <" + subject.replace(" ", "-").encode() + b"@client2.csuvnetwork.com>\r\n"
        b"\r\n" + body
    )


def retrieve_all(lab, user="user1"):
    p = lab.pop(user)
    try:
        count, _ = p.stat()
        out = []
        for i in range(1, count + 1):
            _, lines, _ = p.retr(i)
            out.append(b"\r\n".join(lines) + b"\r\n")
        return out
    finally:
        p.quit()


def split_trace(raw: bytes):
    """Return (trace header lines, original message) of a delivered message."""
    lines = raw.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: <"), raw[:200]
    i = 1
    assert lines[i].startswith(b"Received: from "), raw[:300]
    i += 1
    while lines[i].startswith((b" ", b"\t")):
        i += 1
    return lines[:i], b"\r\n".join(lines[i:])


def test_lab_flow_smtplib_auth_login_then_poplib(lab):
    msg = message("lab flow")
    s = lab.smtp_client()
    assert "LOGIN" in s.esmtp_features["auth"]
    # Force AUTH LOGIN, as Foxmail did in the lab's capture.
    s.user, s.password = "user2", PASSWORDS["user2"]
    code, text = s.auth("LOGIN", s.auth_login)
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    refused = s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], msg)
    assert refused == {}
    s.quit()
    (raw,) = retrieve_all(lab)
    trace, original = split_trace(raw)
    assert original == msg
    assert trace[0] == b"Return-Path: <user2@mail.csuvnetwork.com>"
    received = b" ".join(trace[1:])
    assert b"client2.csuvnetwork.com" in received and b"127.0.0.1" in received
    assert b"by mail.csuvnetwork.com" in received and b"ESMTPA" in received
    assert b"for <user1@csuvnetwork.com>" in received
    # On disk, as Postfix's local delivery writes it: LF line ends.
    (f,) = lab.inbox()
    assert f.read_bytes() == raw.replace(b"\r\n", b"\n")
    # The protocol transcript shows the dialogue as the lab's capture
    # does, with credentials redacted.
    import base64
    log = lab.smtpd.output()
    assert "C: AUTH LOGIN <redacted>" in log
    assert "S: 235 2.7.0 Authentication successful" in log
    assert "S: 250 2.0.0 Ok: queued as " in log
    assert PASSWORDS["user2"] not in log
    assert base64.b64encode(PASSWORDS["user2"].encode()).decode() not in log
    plog = lab.pop3d.output()
    assert "C: PASS <redacted>" in plog and PASSWORDS["user1"] not in plog


def test_transcript_show_secrets_applies_to_both_daemons(tmp_path, daemons):
    """The classroom switch shows credentials in the C:/S: log of smtpd and
    pop3d alike (one transcript type; the driver redacts or not)."""
    import base64
    lab = Lab(tmp_path, daemons, global_extra="transcript_show_secrets = true")
    s = smtplib.SMTP("127.0.0.1", lab.submission, local_hostname="client2.csuvnetwork.com", timeout=10)
    s.ehlo()
    s.login("user2", PASSWORDS["user2"])
    s.quit()
    p = lab.pop()
    p.quit()
    secret = base64.b64encode(f"\0user2\0{PASSWORDS['user2']}".encode()).decode()
    slog = lab.smtpd.output()
    assert f"C: AUTH PLAIN {secret}" in slog or base64.b64encode(PASSWORDS["user2"].encode()).decode() in slog
    assert f"C: PASS {PASSWORDS['user1']}" in lab.pop3d.output()


def test_failed_then_successful_login_535(lab):
    s = lab.smtp_client()
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.user, s.password = "user2", "wrong"
        s.auth("LOGIN", s.auth_login)
    assert e.value.smtp_code == 535
    assert e.value.smtp_error == b"5.7.8 Error: authentication failed"
    s.user, s.password = "user2", PASSWORDS["user2"]
    assert s.auth("LOGIN", s.auth_login)[0] == 235
    s.quit()


def test_swaks_auth_login(lab):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{lab.smtp}", "--auth", "LOGIN",
         "--auth-user", "user2", "--auth-password", PASSWORDS["user2"],
         "--from", "user2@mail.csuvnetwork.com", "--to", "user1@csuvnetwork.com",
         "--header", "Subject: via swaks", "--body", "sent by swaks"],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    (raw,) = retrieve_all(lab)
    assert b"Subject: via swaks" in raw and b"sent by swaks" in raw


def test_default_mechanisms_work_with_curl_choosing_itself(lab, tmp_path):
    # curl picks the strongest mechanism offered: with the default
    # (PLAIN LOGIN, as the lab's saslauthd) it must succeed unaided.
    s = lab.smtp_client()
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    s.quit()
    f = tmp_path / "m.eml"
    f.write_bytes(message("curl default auth"))
    r = subprocess.run(
        ["curl", "-sS", f"smtp://127.0.0.1:{lab.submission}", "--mail-from", "user2@mail.csuvnetwork.com",
         "--mail-rcpt", "user1@csuvnetwork.com", "--upload-file", str(f),
         "--user", f"user2:{PASSWORDS['user2']}"],
        capture_output=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert len(lab.inbox()) == 1


def test_curl_smtp_and_pop3(lab, tmp_path):
    msg = message("via curl", b"curl body line\r\n.leading dot\r\n")
    f = tmp_path / "msg.eml"
    f.write_bytes(msg)
    r = subprocess.run(
        ["curl", "-sS", f"smtp://127.0.0.1:{lab.smtp}", "--mail-from", "user2@mail.csuvnetwork.com",
         "--mail-rcpt", "user1@csuvnetwork.com", "--upload-file", str(f),
         "--user", f"user2:{PASSWORDS['user2']}", "--login-options", "AUTH=LOGIN"],
        capture_output=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["curl", "-sS", f"pop3://127.0.0.1:{lab.pop3}/1", "--user", f"user1:{PASSWORDS['user1']}"],
        capture_output=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    _, original = split_trace(r.stdout)
    assert original == msg


def test_dig_mx_against_dnsd(tmp_path, daemons):
    if not shutil.which("dig"):
        pytest.skip("dig not installed")
    lab = Lab(tmp_path, daemons, dns=True)
    r = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(lab.dns), "MX", DOMAIN, "+norecurse"],
        capture_output=True, text=True, timeout=10,
    )
    assert "status: NOERROR" in r.stdout, r.stdout
    assert "10 mail.csuvnetwork.com." in r.stdout
    assert "192.168.3.10" in r.stdout  # additional section


def test_open_relay_refused(tmp_path, daemons):
    lab = Lab(tmp_path, daemons, relay_networks=["192.0.2.0/24"])
    s = lab.smtp_client()
    s.mail("spammer@example.net")
    code, text = s.rcpt("victim@example.org")
    assert code == 554 and b"5.7.1" in text and b"Relay access denied" in text
    # Local recipients are still accepted without AUTH on port 25.
    assert s.rcpt("user1@csuvnetwork.com")[0] == 250
    s.quit()


def test_authenticated_relay_is_queued_for_delivery(lab):
    s = lab.smtp_client()
    s.login("user2", PASSWORDS["user2"])
    s.mail("user2@mail.csuvnetwork.com")
    assert s.rcpt("someone@example.org")[0] == 250
    assert s.rcpt("user1@csuvnetwork.com")[0] == 250
    code, text = s.data(b"Subject: both\r\n\r\nlocal and remote\r\n")
    assert code == 250, text
    s.quit()
    # The local copy is delivered; the other waits in the outbound queue
    # (our dnsd does not know example.org), as mailq shows it.
    assert len(lab.inbox("user1")) == 1
    out = subprocess.run([bin_path("mailctl"), "-c", lab.config, "queue", "list"],
                         capture_output=True, text=True, check=True).stdout
    assert "someone@example.org" in out and "user2@mail.csuvnetwork.com" in out, out


def test_unknown_local_user_550(lab):
    s = lab.smtp_client()
    s.mail("user2@mail.csuvnetwork.com")
    code, text = s.rcpt("nosuch@csuvnetwork.com")
    assert code == 550 and text.startswith(b"5.1.1"), text
    # postmaster always reaches someone (RFC 5321 section 4.5.1).
    assert s.rcpt("postmaster@csuvnetwork.com")[0] == 250
    s.quit()


def test_postmaster_without_domain(lab):
    s = lab.smtp_client()
    s.mail("")
    code, _ = s.docmd("RCPT TO:<Postmaster>")
    assert code == 250
    s.quit()


def test_message_over_size_limit_552_and_nothing_delivered(lab):
    s = lab.smtp_client()
    s.mail("user2@mail.csuvnetwork.com")
    s.rcpt("user1@csuvnetwork.com")
    big = message("big", b"x" * 998 + b"\r\n") + (b"y" * 998 + b"\r\n") * 150
    code, text = s.data(big)
    assert code == 552 and text.startswith(b"5.3.4"), text
    s.quit()
    assert lab.inbox() == []
    # SIZE declared too large is refused at MAIL.
    s = lab.smtp_client()
    code, _ = s.docmd("MAIL FROM:<user2@mail.csuvnetwork.com> SIZE=999999999")
    assert code == 552
    s.quit()


def test_auth_required_on_submission(lab):
    s = lab.smtp_client(lab.submission)
    code, text = s.docmd("MAIL FROM:<user2@mail.csuvnetwork.com>")
    assert code == 530 and b"5.7.0" in text, text
    s.login("user2", PASSWORDS["user2"])
    assert s.mail("user2@mail.csuvnetwork.com")[0] == 250
    assert s.rcpt("user1@csuvnetwork.com")[0] == 250
    assert s.data(message("submission"))[0] == 250
    s.quit()
    assert len(lab.inbox()) == 1


def test_auth_plain_and_wrong_password(lab):
    s = lab.smtp_client()
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.login("user1", "nope")
    assert e.value.smtp_code == 535
    s.quit()
    s = lab.smtp_client()
    s.user, s.password = "user1", PASSWORDS["user1"]
    assert s.auth("PLAIN", s.auth_plain)[0] == 235
    s.quit()


def recv_replies(sock, n, timeout=10):
    """Read until n final SMTP reply lines have arrived."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        finals = [l for l in buf.split(b"\r\n") if len(l) >= 4 and l[3:4] == b" "]
        if len(finals) >= n:
            return finals
        chunk = sock.recv(65536)
        if not chunk:
            return finals
        buf += chunk


def test_pipelined_transaction(lab):
    with socket.create_connection(("127.0.0.1", lab.smtp)) as sock:
        recv_replies(sock, 1)
        sock.sendall(b"EHLO pipeliner\r\n")
        (ehlo,) = recv_replies(sock, 1)
        sock.sendall(
            b"MAIL FROM:<user2@mail.csuvnetwork.com>\r\n"
            b"RCPT TO:<user1@csuvnetwork.com>\r\n"
            b"RCPT TO:<nosuch@csuvnetwork.com>\r\n"
            b"RCPT TO:<user2@csuvnetwork.com>\r\n"
            b"DATA\r\n"
        )
        replies = recv_replies(sock, 5)
        assert [r[:3] for r in replies] == [b"250", b"250", b"550", b"250", b"354"], replies
        sock.sendall(message("pipelined") + b".\r\nQUIT\r\n")
        replies = recv_replies(sock, 2)
        assert replies[0].startswith(b"250 2.0.0") and replies[1].startswith(b"221"), replies
    assert len(lab.inbox("user1")) == 1 and len(lab.inbox("user2")) == 1


def test_dot_stuffing_both_ways_and_utf8_body(lab):
    body = (
        ".starts with a dot\r\n"
        "..two dots\r\n"
        ".\r\n"
        "ünïcödé 中文 邮件 ✉\r\n"
        "no final newline in the middle. \r\n"
    ).encode("utf-8")
    msg = message("dots and utf8", body)
    s = lab.smtp_client()
    assert "8bitmime" in s.esmtp_features
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], msg, mail_options=["BODY=8BITMIME"])
    s.quit()
    (raw,) = retrieve_all(lab)
    _, original = split_trace(raw)
    assert original == msg


def test_pop3_dele_rset_quit_and_dropped_connection(lab):
    s = lab.smtp_client()
    for i in range(3):
        s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(f"m{i}"))
    s.quit()
    assert len(lab.inbox()) == 3

    # DELE + RSET: nothing deleted.
    p = lab.pop()
    p.dele(1)
    assert p.stat()[0] == 2
    p.rset()
    assert p.stat()[0] == 3
    p.quit()
    assert len(lab.inbox()) == 3

    # DELE + dropped connection: the mail is kept (RFC 1939 section 6).
    p = lab.pop()
    uidls = p.uidl()[1]
    p.dele(2)
    # Drop the connection without QUIT (poplib's file object would keep
    # the socket open after a plain close()).
    p.sock.shutdown(socket.SHUT_RDWR)
    p.close()
    time.sleep(0.5)
    p = lab.pop()
    assert p.stat()[0] == 3
    assert p.uidl()[1] == uidls  # UIDLs stable across sessions
    # DELE + QUIT expunges.
    p.dele(2)
    p.quit()
    assert len(lab.inbox()) == 2
    p = lab.pop()
    remaining = [l.split()[1] for l in p.uidl()[1]]
    p.quit()
    assert remaining == [uidls[0].split()[1], uidls[2].split()[1]]


def test_second_concurrent_pop3_login_in_use(lab):
    p = lab.pop()
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    q.user("user1")
    with pytest.raises(poplib.error_proto) as e:
        q.pass_(PASSWORDS["user1"])
    assert b"[IN-USE]" in e.value.args[0]
    p.quit()
    q.close()
    lab.pop().quit()  # free again


def test_pop3_wrong_password(lab):
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    q.user("user1")
    with pytest.raises(poplib.error_proto) as e:
        q.pass_("wrong")
    assert b"[AUTH]" in e.value.args[0]
    q.close()


def test_pop3_apop(lab):
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    # The account store holds hashed secrets by default: APOP is refused
    # cleanly for such an account (it needs the plain secret).
    with pytest.raises(poplib.error_proto):
        q.apop("user1", PASSWORDS["user1"])
    q.close()


def test_pop3_top_with_a_line_count_beyond_32_bits_sends_everything(lab):
    # RFC 1939 section 7 bounds TOP's line count nowhere; clients ask for
    # the whole message with huge counts, and Dovecot answers them.
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message("top"))
    s.quit()
    p = lab.pop()
    _, whole, _ = p.retr(1)
    _, top, _ = p.top(1, 99999999999)
    p.quit()
    assert top == whole


def test_pop3_closes_on_a_run_of_bad_commands_like_an_http_request(lab):
    # A browser made to post to the POP3 port (the ALPACA cross-protocol
    # attack) gets three replies, then the connection ends, as with
    # Dovecot; before, every header line got its own -ERR.
    with socket.create_connection(("127.0.0.1", lab.pop3), timeout=10) as c:
        f = c.makefile("rb")
        assert f.readline().startswith(b"+OK")
        c.sendall(b"POST / HTTP/1.1\r\nHost: mail.csuvnetwork.com\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 20\r\n\r\n"
                  b"<script>x()</script>\r\n")
        replies = f.read()
    assert replies == (b"-ERR Unknown command: POST\r\n"
                       b"-ERR Unknown command: Host:\r\n"
                       b"-ERR Unknown command: Content-Type:\r\n"
                       b"-ERR Too many bad commands.\r\n")
    # A valid command in between starts the count again; logged in, the
    # limit is 20.
    p = lab.pop()
    for _ in range(19):
        with pytest.raises(poplib.error_proto):
            p._shortcmd("XYZZY")
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_pop3_capa_lists_the_login_capabilities_in_both_states(lab):
    # RFC 2449 section 5: "Capabilities available in the AUTHORIZATION
    # state MUST be announced in both states" (USER and SASL are "both /
    # no" in section 6).
    p = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    before = p.capa()
    p.user("user1")
    p.pass_(PASSWORDS["user1"])
    after = p.capa()
    p.quit()
    assert "USER" in before and "SASL" in before
    assert after == before


def test_pop3_quit_with_an_argument_still_expunges_and_long_passwords_work(lab):
    """Leniencies Dovecot has and clients count on: `QUIT now` (arguments
    ignored) still applies the deletions, and a password longer than a
    255-octet command line logs in by USER/PASS and by AUTH PLAIN."""
    s = lab.smtp_client()
    for i in range(2):
        s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(f"q{i}"))
    s.quit()
    p = lab.pop()
    p.dele(1)
    assert p._shortcmd("QUIT now").startswith(b"+OK")
    p.close()
    assert len(lab.inbox()) == 1
    long_pw = "L0ng-" + "x" * 395
    mailctl(lab, "user", "add", "longpw", "--password-stdin", stdin=long_pw.encode() + b"\n")
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    q.user("longpw")
    assert q.pass_(long_pw).startswith(b"+OK")
    q.quit()
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    ir = base64.b64encode(b"\0longpw\0" + long_pw.encode()).decode()
    assert q._shortcmd(f"AUTH PLAIN {ir}").startswith(b"+OK")
    assert "CAPA" in q.capa()
    q.quit()


def test_pop3_retr_of_a_message_removed_meanwhile_is_expunged_not_sys_temp(lab):
    # Another program removes a listed message: "-ERR Message N expunged."
    # as from Dovecot; [SYS/TEMP] would tell the client to try again.
    s = lab.smtp_client()
    for subject in ("kept", "gone"):
        s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(subject))
    s.quit()
    p = lab.pop()
    for f in lab.inbox():
        if b"Subject: gone" in f.read_bytes():
            f.unlink()
    replies = []
    for i in (1, 2):
        try:
            replies.append(p.retr(i)[0])
        except poplib.error_proto as e:
            replies.append(e.args[0])
    assert sum(r.startswith(b"+OK") for r in replies) == 1, replies
    gone = [r for r in replies if r.startswith(b"-ERR")]
    assert gone in ([b"-ERR Message 1 expunged."], [b"-ERR Message 2 expunged."]), replies
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_sigterm_during_transaction_loses_nothing_acknowledged(lab):
    acked = []
    stop = threading.Event()

    def sender():
        try:
            s = lab.smtp_client()
            i = 0
            while not stop.is_set():
                try:
                    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(f"term {i}"))
                except (smtplib.SMTPException, OSError):
                    return
                acked.append(f"term {i}")
                i += 1
        except (smtplib.SMTPException, OSError):
            return

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(1.0)
    lab.smtpd.proc.send_signal(signal.SIGTERM)
    lab.smtpd.proc.wait(timeout=40)
    stop.set()
    t.join(timeout=20)
    assert acked, "no message was acknowledged before SIGTERM"
    stored = b"".join(p.read_bytes() for p in lab.inbox())
    for subject in acked:
        assert f"Subject: {subject}\n".encode() in stored, subject


def test_pop3d_sigterm_lets_logged_in_sessions_finish(lab):
    """shutdown_grace: on SIGTERM a session that has logged in may still
    QUIT (which is when its deletions happen); one that has not is told at
    once that the server is going away, and new connections are refused."""
    s = lab.smtp_client()
    for i in range(3):
        s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(f"grace {i}"))
    s.quit()
    assert len(lab.inbox()) == 3
    p = lab.pop()
    assert p.stat()[0] == 3
    p.dele(1)
    waiting = socket.create_connection(("127.0.0.1", lab.pop3), timeout=10)
    greeting = waiting.makefile("rb")
    assert greeting.readline().startswith(b"+OK")
    lab.pop3d.proc.send_signal(signal.SIGTERM)
    # Not logged in: cut at once with a reason.
    assert greeting.readline() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
    assert greeting.readline() == b""
    waiting.close()
    # Logged in: the session goes on, and QUIT deletes.
    time.sleep(0.3)
    assert p.stat()[0] == 2
    assert p.quit().startswith(b"+OK")
    lab.pop3d.proc.wait(timeout=15)
    assert len(lab.inbox()) == 2


def mailctl(lab, *args, stdin=None):
    return subprocess.run(
        [bin_path("mailctl"), "--passwd", lab.tmp / "passwd", "--aliases", lab.tmp / "aliases",
         "--maildir-root", lab.maildir, *args],
        input=stdin, check=True, capture_output=True,
    )


def test_accounts_and_aliases_changes_apply_while_running(lab):
    # A user added while the daemons run can receive and log in at once
    # (the passwd-file is reread when it changes), as can a new alias.
    mailctl(lab, "user", "add", "user3", "--password-stdin", stdin=b"pw3\n")
    mailctl(lab, "alias", "add", "team", "user3", "user1")
    lab.smtpd.proc.send_signal(signal.SIGHUP)
    lab.pop3d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    s = lab.smtp_client()
    s.mail("user2@mail.csuvnetwork.com")
    assert s.rcpt("user3@csuvnetwork.com")[0] == 250
    assert s.rcpt("team@csuvnetwork.com")[0] == 250
    assert s.data(message("to user3 and team"))[0] == 250
    s.quit()
    assert len(lab.inbox("user3")) == 1  # written once for user3, not twice
    assert len(lab.inbox("user1")) == 1
    p = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    p.user("user3")
    p.pass_("pw3")
    assert p.stat()[0] == 1
    p.quit()
    assert lab.smtpd.proc.poll() is None and lab.pop3d.proc.poll() is None


def test_plain_scheme_account_allows_apop_and_cram_md5(tmp_path, daemons):
    # APOP and CRAM-MD5 need the shared secret itself: only {PLAIN}
    # accounts can use them, and CRAM-MD5 is offered only when configured.
    lab = Lab(tmp_path, daemons, extra='auth_mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5"]')
    mailctl(lab, "user", "add", "plainuser", "--scheme", "PLAIN", "--password-stdin", stdin=b"tanstaaf\n")
    q = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    assert q.apop("plainuser", "tanstaaf").startswith(b"+OK")
    q.quit()
    s = lab.smtp_client()
    s.user, s.password = "plainuser", "tanstaaf"
    assert s.auth("CRAM-MD5", s.auth_cram_md5)[0] == 235
    s.quit()
    s = lab.smtp_client()
    s.user, s.password = "plainuser", "wrong"
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.auth("CRAM-MD5", s.auth_cram_md5)
    s.quit()


def test_connection_limit_per_client(tmp_path, daemons):
    lab = Lab(tmp_path, daemons, extra="max_connections_per_client = 2")
    time.sleep(0.5)  # the readiness probes' connections are released
    held = [socket.create_connection(("127.0.0.1", lab.smtp)) for _ in range(2)]
    for h in held:
        assert h.recv(512).startswith(b"220 ")
    with socket.create_connection(("127.0.0.1", lab.smtp)) as third:
        third.settimeout(5)
        assert third.recv(512).startswith(b"421 4.7.0 ")
    held.pop().close()
    time.sleep(0.2)
    s = lab.smtp_client()  # a slot is free again
    s.quit()
    for h in held:
        h.close()


def test_bad_config_is_refused_with_line_and_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[smtpd]\nmessage_size_limit = 1000\nrecipent_limit = 5\n")
    r = subprocess.run([bin_path("smtpd"), "--config", cfg], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "line 3" in r.stderr and "recipent_limit" in r.stderr, r.stderr


def test_large_message_streams_through_both_servers(tmp_path, daemons):
    lab = Lab(tmp_path, daemons, size_limit=20_000_000)
    lines = [(f"{i:08d} " + "abcdefghij" * 7).encode() for i in range(40000)]
    lines[1234] = b".a line that starts with a dot"
    body = b"\r\n".join(lines) + b"\r\n"  # about 3 MB
    msg = message("large", body)
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], msg)
    s.quit()
    p = lab.pop()
    (size,) = [int(l.split()[1]) for l in p.list()[1]]
    _, lines_back, octets = p.retr(1)
    raw = b"\r\n".join(lines_back) + b"\r\n"
    assert len(raw) == size
    assert split_trace(raw)[1] == msg
    _, top, _ = p.top(1, 3)
    top_raw = b"\r\n".join(top) + b"\r\n"
    assert top_raw.endswith(b"\r\n\r\n" + b"\r\n".join(body.split(b"\r\n")[:3]) + b"\r\n")
    p.quit()


def test_login_with_full_address(lab):
    # Clients such as Foxmail offer the whole address as the user name.
    s = lab.smtp_client()
    s.login("user2@csuvnetwork.com", PASSWORDS["user2"])
    s.quit()
    p = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    p.user("user1@mail.csuvnetwork.com")
    assert p.pass_(PASSWORDS["user1"]).startswith(b"+OK")
    p.quit()
    # A foreign domain is not one of our accounts.
    s = lab.smtp_client()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login("user2@example.org", PASSWORDS["user2"])
    s.quit()


def test_vrfy_as_postfix_answers_it(lab):
    s = lab.smtp_client()
    s.ehlo()
    assert s.has_extn("vrfy")  # listed after SIZE, as Postfix lists it
    code, _ = s.verify("user1@csuvnetwork.com")
    assert code == 252
    code, text = s.verify("nosuch@csuvnetwork.com")
    assert code == 550 and text.startswith(b"5.1.1"), text
    s.quit()


def test_vrfy_can_be_disabled(tmp_path, daemons):
    lab = Lab(tmp_path, daemons, extra="disable_vrfy_command = true")
    s = lab.smtp_client()
    s.ehlo()
    assert not s.has_extn("vrfy")
    assert s.verify("user1@csuvnetwork.com") == (502, b"5.5.1 VRFY command is disabled")
    # Mail still goes through.
    s.sendmail("user2@csuvnetwork.com", ["user1@csuvnetwork.com"], b"Subject: v\r\n\r\nx\r\n")
    s.quit()


def test_transcript_escapes_control_characters(lab):
    with socket.create_connection(("127.0.0.1", lab.pop3)) as c:
        c.recv(512)
        c.sendall(b"NO\x00OP\r\nQUIT\r\n")
        c.settimeout(5)
        while c.recv(512):
            pass
    log = lab.pop3d.output()
    assert "C: NO\\u{0}OP" in log, log[-2000:]


def test_whole_transaction_then_half_close_is_delivered(lab):
    # A client that pipelines everything and closes its sending side at
    # once still gets its message delivered and every reply.
    with socket.create_connection(("127.0.0.1", lab.smtp)) as sock:
        sock.sendall(
            b"EHLO burst\r\nMAIL FROM:<user2@mail.csuvnetwork.com>\r\n"
            b"RCPT TO:<user1@csuvnetwork.com>\r\nDATA\r\n"
            + message("burst") + b".\r\nQUIT\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        replies = recv_replies(sock, 7)
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"], replies
    assert len(lab.inbox()) == 1


def break_maildir_tmp(lab, user="user1"):
    """Make every delivery to `user` fail: its Maildir tmp/ is a file."""
    tmpdir = lab.maildir / user / "Maildir" / "tmp"
    tmpdir.rmdir()
    tmpdir.write_text("not a directory: every delivery here fails\n")
    return tmpdir


def repair_maildir_tmp(tmpdir):
    tmpdir.unlink()
    tmpdir.mkdir(mode=0o700)


def test_streamed_message_that_cannot_be_stored_gets_451(tmp_path, daemons):
    # Over 256 KiB the body is streamed into the Maildir file and committed
    # before the reply: a failure is a 451 and nothing is acknowledged.
    lab = Lab(tmp_path, daemons, size_limit=2_000_000)
    break_maildir_tmp(lab)
    body = b"".join(b"line %06d of a message that cannot be stored\r\n" % i for i in range(6000))
    s = lab.smtp_client()
    s.mail("user2@mail.csuvnetwork.com")
    s.rcpt("user1@csuvnetwork.com")
    code, text = s.data(message("unstorable", body))
    assert (code, text) == (451, b"4.3.0 Error: queue file write error")
    # The session goes on: the next message to someone else is stored.
    s.sendmail("user2@mail.csuvnetwork.com", ["user2@csuvnetwork.com"], message("fine"))
    s.quit()
    assert lab.inbox("user1") == []
    assert len(lab.inbox("user2")) == 1


def test_queued_message_waits_for_a_broken_maildir_and_arrives_once(tmp_path, daemons):
    # A message held in memory is durable in the queue journal at 250; if
    # its Maildir cannot be written it stays queued and is retried
    # (Postfix defers the same way), then delivered exactly once.
    lab = Lab(tmp_path, daemons, extra="queue_retry_delay = 1")
    tmpdir = break_maildir_tmp(lab)
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message("deferred"))
    s.sendmail("user2@mail.csuvnetwork.com", ["user2@csuvnetwork.com"], message("fine"))
    s.quit()
    assert lab.inbox("user1") == []
    assert len(lab.inbox("user2")) == 1
    assert "delivery deferred" in lab.smtpd.output()
    repair_maildir_tmp(tmpdir)
    deadline = time.monotonic() + 10
    while not lab.inbox("user1") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # one more retry period: it must not arrive twice
    [raw] = retrieve_all(lab)
    assert split_trace(raw)[1] == message("deferred")


def test_queued_messages_survive_sigkill_and_arrive_after_restart(tmp_path, daemons):
    # SIGKILL while acknowledged messages are still queued (their Maildir is
    # broken): the next start delivers every one of them, once.
    lab = Lab(tmp_path, daemons)
    tmpdir = break_maildir_tmp(lab)
    s = lab.smtp_client()
    for i in range(20):
        s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(f"queued {i}"))
    lab.settle()
    lab.smtpd.stop(sig=signal.SIGKILL)
    assert lab.inbox("user1") == []
    repair_maildir_tmp(tmpdir)
    lab.smtpd = daemons([bin_path("smtpd"), "--config", lab.config])
    wait_tcp(lab.smtp)
    deadline = time.monotonic() + 10
    while len(lab.inbox("user1")) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = sorted(split_trace(raw)[1] for raw in retrieve_all(lab))
    assert got == sorted(message(f"queued {i}") for i in range(20))


# ---- Replies compared with Postfix 3.7 smtpd on the same inputs --------------


def raw_dialogue(port, data, timeout=5.0):
    """After the greeting, send `data` in one write; return everything the
    server says until it closes the connection, and whether it did."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        recv_replies(sock, 1)
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return out, True
            out += chunk
        return out, False


def test_message_pipelined_after_refused_data_is_never_executed(lab):
    # Every recipient refused, so DATA is refused; the client sends its
    # message anyway. Its first header field ends the session (as Postfix
    # does), so the transaction written inside the message never runs.
    out, closed = raw_dialogue(
        lab.smtp,
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nosuch@csuvnetwork.com>\r\nDATA\r\n"
        b"From: a@b.example\r\nSubject: refused\r\n\r\n"
        b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<user2@csuvnetwork.com>\r\nDATA\r\n"
        b"Subject: injected\r\n\r\nhi\r\n.\r\n",
    )
    assert closed
    assert out.endswith(b"554 5.5.1 Error: no valid recipients\r\n"
                        b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"), out
    assert lab.inbox("user2") == [] and lab.inbox("user1") == []


def test_http_request_on_the_smtp_port_ends_the_session(lab):
    out, closed = raw_dialogue(lab.smtp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed and out == b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n", out


def test_lone_dot_lines_that_do_not_end_data_are_kept(lab):
    # "\n.\n" and "\n.\r\n" never end DATA (SMTP smuggling); the lone dot
    # is content and arrives as sent, lines ending in CRLF.
    body = b"before\n.\nmiddle\n.\r\nMAIL FROM:<evil@b.example>\r\nafter\r\n"
    out, _ = raw_dialogue(
        lab.smtp,
        b"EHLO c\r\nMAIL FROM:<user2@mail.csuvnetwork.com>\r\nRCPT TO:<user1@csuvnetwork.com>\r\n"
        b"DATA\r\n" + message("lone dots", body) + b".\r\nQUIT\r\n",
    )
    assert out.count(b"250 2.0.0 Ok: queued") == 1 and out.endswith(b"221 2.0.0 Bye\r\n"), out
    (raw,) = retrieve_all(lab)
    _, original = split_trace(raw)
    assert original == message("lone dots", body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def test_bdat_without_a_readable_size_ends_the_session(lab):
    # The chunk that follows cannot be told from commands: Postfix's 521.
    out, closed = raw_dialogue(
        lab.smtp,
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user1@csuvnetwork.com>\r\n"
        b"BDAT 1x\r\nRSET\r\n",
    )
    assert closed and out.endswith(b"250 2.1.5 Ok\r\n521 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"), out
    assert lab.inbox() == []


def test_dsn_parameter_values_are_checked(lab):
    s = lab.smtp_client()
    s.mail("a@b.example")
    assert s.docmd("RCPT TO:<user1@csuvnetwork.com> NOTIFY=BOGUS")[0] == 501
    assert s.docmd("RCPT TO:<user1@csuvnetwork.com> NOTIFY=NEVER,SUCCESS")[0] == 501
    assert s.docmd("RCPT TO:<user1@csuvnetwork.com> NOTIFY=success,delay")[0] == 250
    s.rset()
    assert s.docmd("MAIL FROM:<a@b.example> RET=ALL")[0] == 501
    assert s.docmd("MAIL FROM:<a@b.example> RET=HDRS")[0] == 250
    s.quit()


def test_long_orcpt_and_auth_parameters_accepted(lab):
    # RFC 3461 and RFC 4954 lengthen MAIL and RCPT lines past 512 octets.
    s = lab.smtp_client()
    code, _ = s.docmd(f"MAIL FROM:<a@b.example> ENVID={'e' * 100} AUTH=<{'a' * 400}@b.example>")
    assert code == 250
    code, _ = s.docmd(f"RCPT TO:<user1@csuvnetwork.com> NOTIFY=FAILURE ORCPT=rfc822;{'o' * 480}@b.example")
    assert code == 250
    s.quit()


def test_auth_initial_response_not_base64_501_5_5_2(lab):
    # RFC 4954 section 4; Postfix with Cyrus SASL words it the same.
    s = lab.smtp_client(lab.submission)
    assert s.docmd("AUTH PLAIN !!!") == (501, b"5.5.2 Cannot decode response")
    assert s.docmd("NOOP")[0] == 250
    s.quit()


def test_recipient_at_our_own_address_literal_is_local(lab):
    # RFC 1123 section 5.2.17: a domain literal of one of our addresses is
    # ours (Postfix: local); it was relayed to port 25 of that address.
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@[127.0.0.1]", '"user2"@[IPv6:::ffff:127.0.0.1]'],
               message("literal"))
    assert s.docmd("MAIL FROM:<a@b.example>")[0] == 250
    assert s.docmd("RCPT TO:<nosuch@[127.0.0.1]>")[0] == 550
    s.quit()
    assert len(lab.inbox("user1")) == 1 and len(lab.inbox("user2")) == 1
    assert "relay=" not in lab.smtpd.output()


def test_what_postfix_3_7_answers_alike(lab):
    """Behaviours a Postfix 3.7 comparison showed: a line not starting with
    a letter ends the session; QUIT takes arguments; a delivered message
    forgives earlier errors; junk commands beyond the limit count as
    errors; DSN parameters twice are 501, unsupported values 555."""
    out, closed = raw_dialogue(lab.smtp, b"EHLO c\r\n.\r\nNOOP\r\n")
    assert closed and out.endswith(b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"), out
    out, closed = raw_dialogue(lab.smtp, b"QUIT now\r\n")
    assert closed and out == b"221 2.0.0 Bye\r\n", out
    s = lab.smtp_client()
    for _ in range(15):
        assert s.docmd("FOO")[0] == 500
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message("forgiven"))
    for _ in range(10):
        assert s.docmd("FOO")[0] == 500
    assert s.noop()[0] == 250
    assert s.docmd("MAIL FROM:<a@b.example> RET=FULL RET=HDRS")[0] == 501
    assert s.docmd("MAIL FROM:<a@b.example> BODY=FOO")[0] == 555
    assert s.docmd("MAIL FROM:<a@b.example>")[0] == 250
    assert s.docmd("RCPT TO:<user1@csuvnetwork.com> ORCPT=bogus")[0] == 501
    s.rset()
    # Dots out of place in a sender's local part: accepted, as by Postfix.
    assert s.docmd("MAIL FROM:<a..b@docomo.example>")[0] == 250
    assert s.docmd("RCPT TO:<user1@csuvnetwork.com>")[0] == 250
    s.quit()
    # 130 NOOPs in one write: 120 answered, then 421 (100 free, 20 errors).
    out, closed = raw_dialogue(lab.smtp, b"EHLO c\r\n" + b"NOOP\r\n" * 130)
    assert closed and out.count(b"250 2.0.0 Ok\r\n") == 120, out[-200:]
    assert out.endswith(b"421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n")


def test_quoted_pairs_bare_cr_and_smtputf8_received(lab):
    """`"user\\1"@domain` is user1 (RFC 5321 4.1.2); a bare CR in DATA is
    stored as a space (RFC 5321 2.3.8, as Postfix stores it); an SMTPUTF8
    message's Received says `with UTF8SMTP` (RFC 6531 3.7.3)."""
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ['"user\\1"@csuvnetwork.com'],
               b"Subject: cr\r\n\r\nbody\r.\rMAIL FROM:<evil@b.example>\r\n")
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"],
               "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode(), mail_options=["SMTPUTF8"])
    s.quit()
    files = [p.read_bytes() for p in lab.inbox()]
    assert len(files) == 2
    cr = next(f for f in files if b"Subject: cr" in f)
    assert b"body . MAIL FROM:<evil@b.example>" in cr.replace(b"\r\n", b"\n")
    assert b"\r." not in cr.replace(b"\r\n", b"\n")
    utf8 = next(f for f in files if "caf\u00e9".encode() in f)
    assert b" with UTF8SMTP id " in utf8, utf8[:400]
