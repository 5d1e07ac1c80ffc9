"""End-to-end: mail to other domains. Two instances of the system on
loopback, each its own smtpd with its own Maildirs: `csuvnetwork.com`
sends to `example.org` through its outbound queue (the transport table
names the other instance's port, as a test network does; MX routing
through dnsd is tests/test_outbound_mx.py). Failure notices come back as RFC
3464 reports; a remote that is down is retried after `mailctl queue
flush`; `sendmail -t` hands mail over for both domains."""
import email
import email.policy
import smtplib
import subprocess
import time

from conftest import bin_path, free_port, wait_tcp

PW = "relay-pass-1"


class Instance:
    """smtpd for one domain, with users a and b (and user2 on the sender)."""

    def __init__(self, tmp, daemons, domain, transport="", tls=False, smtpd_extra="", extra=""):
        self.dir = tmp / domain
        self.dir.mkdir()
        tls_keys = ""
        if tls:
            subprocess.run([bin_path("mailctl"), "tls", "cert", "--name", f"mail.{domain}",
                            "--ca-dir", self.dir / "ca", "--out-dir", self.dir],
                           check=True, capture_output=True)
            tls_keys = f'[tls]\ncertificates = [{{ cert = "mail.{domain}.pem", key = "mail.{domain}.key" }}]\n'

        self.domain = domain
        self.smtp, self.submission, self.pop3 = free_port(), free_port(), free_port()
        self.pop3d = None
        self.dead_dns = free_port()
        (self.dir / "aliases").write_text("postmaster: a\n")
        (self.dir / "transport").write_text(transport)
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
listen = ["127.0.0.1:{self.smtp}"]
submission_listen = ["127.0.0.1:{self.submission}"]
queue_directory = "queue"
transport_file = "transport"
auth_failure_delay = 0
{smtpd_extra}

[resolver]
# Nothing answers here: routes come from the transport table only, and no
# query ever leaves the host.
name_servers = ["127.0.0.1:{self.dead_dns}"]
timeout = "1s"
attempts = 1

[pop3d]
listen = ["127.0.0.1:{self.pop3}"]
auth_failure_delay = 0
{tls_keys}{extra}""")
        for user in ("a", "b", "user2"):
            subprocess.run(
                [bin_path("mailctl"), "-c", self.config, "user", "add", user, "--password-stdin"],
                input=(PW + "\n").encode(), check=True, capture_output=True)
        self.daemons = daemons
        self.start()

    def start(self):
        self.smtpd = self.daemons([bin_path("smtpd"), "--config", self.config])
        wait_tcp(self.smtp)

    def stop(self):
        self.smtpd.stop()

    def count(self, user):
        """Messages in the Maildir, read (cur/) or not (new/)."""
        box = self.dir / "mail" / user / "Maildir"
        return sum(len(list((box / d).iterdir())) for d in ("new", "cur") if (box / d).exists())

    def pop3_messages(self, user, n, timeout=20):
        """The first `n` messages of `user`, read by POP3 (pop3d started on
        first use), once there are that many."""
        import poplib
        if self.pop3d is None:
            self.pop3d = self.daemons([bin_path("pop3d"), "--config", self.config])
            wait_tcp(self.pop3)
        deadline = time.monotonic() + timeout
        while True:
            p = poplib.POP3("127.0.0.1", self.pop3, timeout=10)
            p.user(user)
            p.pass_(PW)
            count = p.stat()[0]
            if count >= n or time.monotonic() > deadline:
                msgs = [b"\r\n".join(p.retr(i + 1)[1]) for i in range(min(count, n))]
                p.quit()
                assert count >= n, f"{user}@{self.domain} has {count} messages by POP3, not {n}"
                return msgs
            p.quit()
            time.sleep(0.2)

    def inbox(self, user):
        d = self.dir / "mail" / user / "Maildir" / "new"
        return sorted(d.iterdir()) if d.exists() else []

    def wait_inbox(self, user, n, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.inbox(user)
            if len(got) >= n:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{user}@{self.domain} has {len(self.inbox(user))} messages, not {n}\n"
                             + self.smtpd.output()[-3000:])

    def mailctl(self, *args):
        return subprocess.run([bin_path("mailctl"), "-c", self.config, *args],
                              capture_output=True, text=True, check=True).stdout

    def submit(self, to, body=b"Subject: across\r\n\r\nhello over there\r\n", rcpt_options=()):
        s = smtplib.SMTP("127.0.0.1", self.submission, timeout=10)
        s.login("user2", PW)
        refused = s.sendmail(f"user2@{self.domain}", to, body, rcpt_options=list(rcpt_options))
        s.quit()
        return refused


def pair(tmp_path, daemons, extra=""):
    # The remote offers STARTTLS: our client takes it (opportunistic TLS).
    remote = Instance(tmp_path, daemons, "example.org", tls=True)
    local = Instance(tmp_path, daemons, "csuvnetwork.com",
                     transport=f"example.org smtp:[127.0.0.1]:{remote.smtp}\n", extra=extra)
    return local, remote


def test_mail_crosses_to_the_other_instance(tmp_path, daemons):
    local, remote = pair(tmp_path, daemons)
    assert local.submit(["a@example.org", "b@csuvnetwork.com"]) == {}
    [msg] = remote.wait_inbox("a", 1)
    text = msg.read_text()
    # Our Received on the way out, the remote's on the way in; the remote
    # writes Return-Path, we did not.
    assert text.count("Return-Path:") == 1 and "Return-Path: <user2@csuvnetwork.com>" in text
    assert "by mail.csuvnetwork.com with ESMTPA" in text
    assert "by mail.example.org with ESMTPS" in text, text
    assert text.endswith("hello over there\n")
    local.wait_inbox("b", 1)
    # Postfix-style log line for the delivery.
    out = local.smtpd.output()
    assert "to=<a@example.org>, relay=[127.0.0.1]" in out or "to=<a@example.org>, relay=127.0.0.1" in out, out[-2000:]
    assert "status=sent (host " in out


def test_over_the_remote_recipient_limit_the_rest_go_at_once(tmp_path, daemons):
    """A remote that takes one recipient per transaction (452 4.5.3 to the
    others, RFC 5321 4.5.3.1.10): each further transaction follows at once,
    not after the 300 s backoff."""
    remote = Instance(tmp_path, daemons, "example.org", smtpd_extra="recipient_limit = 1")
    local = Instance(tmp_path, daemons, "csuvnetwork.com",
                     transport=f"example.org smtp:[127.0.0.1]:{remote.smtp}\n")
    assert local.submit(["a@example.org", "b@example.org", "user2@example.org"]) == {}
    for user in ("a", "b", "user2"):
        remote.wait_inbox(user, 1, timeout=15)
    wait_queue_empty(local)
    out = local.smtpd.output()
    assert out.count("dsn=4.5.3, status=deferred (host 127.0.0.1[127.0.0.1] said: 452 4.5.3") == 3, out[-3000:]
    assert out.count("status=sent") == 3


def test_a_refused_recipient_gets_a_failure_notice(tmp_path, daemons):
    local, remote = pair(tmp_path, daemons)
    assert local.submit(["nobody@example.org", "b@example.org"]) == {}
    remote.wait_inbox("b", 1)
    [notice] = local.wait_inbox("user2", 1)
    m = email.message_from_bytes(notice.read_bytes(), policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert m["Subject"] == "Undelivered Mail Returned to Sender"
    parts = list(m.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    groups = parts[1].get_payload()
    rcpt = groups[1]
    assert rcpt["Final-Recipient"].endswith("nobody@example.org")
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert "550" in rcpt["Diagnostic-Code"]
    assert "Return-Path: <>" in notice.read_text()
    # Only the refused one is in it.
    assert "b@example.org" not in str(parts[1])
    # The message is gone from the queue once every recipient is final.
    deadline = time.monotonic() + 10
    while "queue is empty" not in local.mailctl("queue", "list"):
        assert time.monotonic() < deadline, local.mailctl("queue", "list")
        time.sleep(0.1)


def test_a_remote_that_is_down_is_retried_after_flush(tmp_path, daemons):
    local, remote = pair(tmp_path, daemons)
    remote.stop()
    assert local.submit(["a@example.org"]) == {}
    deadline = time.monotonic() + 15
    while "Connection refused" not in (listing := local.mailctl("queue", "list")):
        assert time.monotonic() < deadline, listing
        time.sleep(0.2)
    assert "a@example.org" in listing and "1 queued" in listing
    import json
    [item] = json.loads(local.mailctl("queue", "list", "--json"))
    assert item["queue"] == "outbound" and item["sender"] == "user2@csuvnetwork.com"
    [r] = item["recipients"]
    assert r["address"] == "a@example.org" and r["state"] == "deferred" and r["status"] == "4.4.1"
    assert r["next_attempt"] >= time.time() + 250
    remote.start()
    assert "retry" in local.mailctl("queue", "flush")
    remote.wait_inbox("a", 1)


def wait_queue_empty(inst, timeout=10):
    deadline = time.monotonic() + timeout
    while "queue is empty" not in (listing := inst.mailctl("queue", "list")):
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)


def test_one_delay_warning_per_message_even_across_restarts(tmp_path, daemons):
    # Retries every second; the warning is due once the message is 1 s old.
    local, remote = pair(tmp_path, daemons, extra="""
[outbound]
delay_warning_time = "1s"
minimal_backoff_time = 1
maximal_backoff_time = 1
""")
    remote.stop()
    assert local.submit(["a@example.org"]) == {}
    # NOTIFY=FAILURE leaves out DELAY: no warning for this one.
    assert local.submit(["b@example.org"], rcpt_options=["NOTIFY=FAILURE"]) == {}
    [notice] = local.wait_inbox("user2", 1)
    m = email.message_from_bytes(notice.read_bytes(), policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m["Subject"] == "Delayed Mail (still being retried)"
    groups = list(m.iter_parts())[1].get_payload()
    assert len(groups) == 2, "one recipient: a@example.org only"
    rcpt = groups[1]
    assert rcpt["Final-Recipient"].endswith("a@example.org")
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.4.1"
    assert rcpt["Will-Retry-Until"]
    # More retries, and a restart (the log remembers the warning): no more.
    time.sleep(3)
    local.stop()
    local.start()
    time.sleep(3)
    assert len(local.inbox("user2")) == 1, local.smtpd.output()[-3000:]
    out = local.smtpd.output()
    assert out.count("sender delay notification") == 0  # the restarted process sent none
    remote.start()
    local.mailctl("queue", "flush")
    remote.wait_inbox("a", 1)
    remote.wait_inbox("b", 1)
    wait_queue_empty(local)


def test_sendmail_hands_mail_to_both_domains(tmp_path, daemons):
    local, remote = pair(tmp_path, daemons)
    msg = b"To: b@csuvnetwork.com, A <a@example.org>\nBcc: b@example.org\nSubject: cron\n\nreport\n.\nstill body\n"
    r = subprocess.run([bin_path("sendmail"), "-C", local.config, "-t", "-oi", "-F", "Cron Daemon"],
                       input=msg, capture_output=True)
    assert r.returncode == 0, r.stderr
    [mine] = local.wait_inbox("b", 1)
    text = mine.read_text()
    assert "Bcc:" not in text and "From: Cron Daemon <" in text and "still body" in text
    remote.wait_inbox("a", 1)
    remote.wait_inbox("b", 1)
    # Without -i a lone dot ends the message; no recipients is an error.
    r = subprocess.run([bin_path("sendmail"), "-C", local.config, "b@csuvnetwork.com"],
                       input=b"Subject: dot\n\nbefore\n.\nafter\n", capture_output=True)
    assert r.returncode == 0
    second = [p for p in local.wait_inbox("b", 2) if p != mine][0].read_text()
    assert "before" in second and "after" not in second
    r = subprocess.run([bin_path("sendmail"), "-C", local.config, "-t"],
                       input=b"Subject: none\n\nx\n", capture_output=True)
    assert r.returncode == 65 and b"no recipient" in r.stderr


class Sink:
    """A tiny SMTP server on loopback that advertises exactly `caps`,
    accepts everything and records each transaction's MAIL/RCPT lines and
    raw DATA bytes (dot-unstuffed). With `broken_tls`, STARTTLS is
    answered 220 and followed by bytes that are no TLS record."""

    def __init__(self, caps, broken_tls=False):
        import socketserver
        import threading
        self.caps = list(caps)
        self.broken_tls = broken_tls
        self.transactions = []
        self.lines = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, text):
                self.wfile.write(text.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self):
                self.reply("220 sink ESMTP")
                cur = None
                while True:
                    raw = self.rfile.readline(100000)
                    if not raw:
                        return
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    sink.lines.append(line)
                    verb = line[:4].upper()
                    if verb == "EHLO":
                        lines = ["sink", *sink.caps]
                        for i, c in enumerate(lines):
                            sep = " " if i == len(lines) - 1 else "-"
                            self.wfile.write(f"250{sep}{c}\r\n".encode())
                        self.wfile.flush()
                    elif verb == "MAIL":
                        cur = {"mail": line, "rcpt": [], "data": b""}
                        self.reply("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        cur["rcpt"].append(line)
                        self.reply("250 2.1.5 Ok")
                    elif verb == "DATA":
                        self.reply("354 go")
                        data = b""
                        while (chunk := self.rfile.readline(100000)) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b".") else chunk
                        cur["data"] = data
                        sink.transactions.append(cur)
                        self.reply("250 2.0.0 Ok: queued as SINK")
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 Bye")
                        return
                    elif verb == "STAR" and sink.broken_tls:
                        self.reply("220 2.0.0 Ready to start TLS")
                        self.wfile.write(b"this is not a TLS record\r\n")
                        return
                    else:
                        self.reply("250 2.0.0 Ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n=1, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.transactions) < n:
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.1)
        return self.transactions

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def sink_pair(tmp_path, daemons, caps):
    sink = Sink(caps)
    local = Instance(tmp_path, daemons, "csuvnetwork.com",
                     transport=f"example.org smtp:[127.0.0.1]:{sink.port}\n")
    return local, sink


def test_a_broken_starttls_is_retried_without_tls(tmp_path, daemons):
    """Opportunistic TLS as Postfix's `may`: a handshake that fails defers
    the first attempt; the retry falls back to plaintext at once, so the
    mail is not stuck until it bounces."""
    sink = Sink(["PIPELINING", "STARTTLS"], broken_tls=True)
    local = Instance(tmp_path, daemons, "csuvnetwork.com",
                     transport=f"example.org smtp:[127.0.0.1]:{sink.port}\n",
                     extra="[outbound]\nminimal_backoff_time = 1\nmaximal_backoff_time = 1\n")
    try:
        assert local.submit(["a@example.org"]) == {}
        [t] = sink.wait(1)
        assert t["rcpt"] == ["RCPT TO:<a@example.org>"], t
        assert b"hello over there" in t["data"]
        assert sink.lines.count("STARTTLS") == 2, sink.lines  # the first attempt, then the retry's
        wait_queue_empty(local)
        out = local.smtpd.output()
        assert "dsn=4.7.5, status=deferred (TLS handshake with 127.0.0.1[127.0.0.1] failed" in out, out[-3000:]
        assert "TLS failed; trying again without TLS" in out
        assert "dsn=2.0.0, status=sent" in out
    finally:
        sink.close()


def test_dsn_parameters_are_passed_on_and_8bit_is_downgraded(tmp_path, daemons):
    local, sink = sink_pair(tmp_path, daemons, ["PIPELINING", "DSN", "SIZE 10240000"])
    try:
        body = "Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" \
               "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n".encode()
        s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
        s.login("user2", PW)
        s.ehlo()
        s.mail("user2@csuvnetwork.com", ["RET=HDRS", "ENVID=QQ314159", "BODY=8BITMIME"])
        assert s.rcpt("a@example.org", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;A@example.org"])[0] == 250
        assert s.rcpt("b@example.org")[0] == 250
        assert s.data(body)[0] == 250
        s.quit()
        [t] = sink.wait(1)
        assert t["mail"].startswith("MAIL FROM:<user2@csuvnetwork.com> SIZE="), t
        assert t["mail"].endswith(" RET=HDRS ENVID=QQ314159"), t
        assert "BODY=8BITMIME" not in t["mail"]
        assert t["rcpt"] == ["RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A@example.org",
                             "RCPT TO:<b@example.org> ORCPT=rfc822;b@example.org"], t
        # No 8BITMIME at the sink: the body went as quoted-printable and
        # decodes back to the original text.
        assert t["data"].isascii(), t["data"]
        m = email.message_from_bytes(t["data"], policy=email.policy.default)
        assert m["Content-Transfer-Encoding"] == "quoted-printable"
        assert m.get_content().replace("\r\n", "\n") == "Grüße aus Köln\n"
        # The sink offered DSN: the success notice is its business, not ours.
        wait_queue_empty(local)
        assert local.inbox("user2") == []
    finally:
        sink.close()


def test_without_dsn_no_parameters_and_8bitmime_passes_8bit(tmp_path, daemons):
    local, sink = sink_pair(tmp_path, daemons, ["8BITMIME"])
    try:
        s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
        s.login("user2", PW)
        s.sendmail("user2@csuvnetwork.com", ["a@example.org"],
                   "Subject: x\r\n\r\nÄ\r\n".encode(), mail_options=["BODY=8BITMIME", "RET=FULL"],
                   rcpt_options=["NOTIFY=FAILURE"])
        s.quit()
        [t] = sink.wait(1)
        assert t["mail"] == "MAIL FROM:<user2@csuvnetwork.com> BODY=8BITMIME", t
        assert t["rcpt"] == ["RCPT TO:<a@example.org>"]
        assert t["data"].endswith("\r\n\r\nÄ\r\n".encode())
    finally:
        sink.close()


def failure_notice(local):
    [notice] = local.wait_inbox("user2", 1)
    m = email.message_from_bytes(notice.read_bytes(), policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    return list(m.iter_parts())[1].get_payload()[1]


def test_over_the_size_limit_bounces_without_data(tmp_path, daemons):
    local, sink = sink_pair(tmp_path, daemons, ["PIPELINING", "SIZE 1000"])
    try:
        assert local.submit(["a@example.org"], b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n") == {}
        rcpt = failure_notice(local)
        assert rcpt["Status"] == "5.3.4" and rcpt["Action"] == "failed"
        assert "exceeds size limit 1000 of server" in " ".join(str(rcpt["Diagnostic-Code"]).split())
        assert not any(l.upper().startswith(("MAIL", "DATA")) for l in sink.lines), sink.lines
    finally:
        sink.close()


def test_smtputf8_address_to_a_peer_without_it_bounces(tmp_path, daemons):
    local, sink = sink_pair(tmp_path, daemons, ["PIPELINING", "8BITMIME"])
    try:
        s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
        s.login("user2", PW)
        assert "smtputf8" in s.esmtp_features
        s.sendmail("user2@csuvnetwork.com", ["用户@example.org"], b"Subject: u\r\n\r\nhi\r\n",
                   mail_options=["SMTPUTF8"])
        s.quit()
        rcpt = failure_notice(local)
        assert rcpt["Status"] == "5.6.7"
        assert "SMTPUTF8 is required, but was not offered by host" in " ".join(str(rcpt["Diagnostic-Code"]).split())
        assert not any(l.upper().startswith("MAIL") for l in sink.lines), sink.lines
    finally:
        sink.close()


def test_relayhost_with_auth(tmp_path, daemons):
    """Instance A relays everything through instance B's submission port
    (a smarthost), authenticating with the credentials of its password
    file; a wrong password defers with 4.7.0 and the mail goes once the
    file is fixed."""
    import os
    remote = Instance(tmp_path, daemons, "example.org", tls=True)
    passwords = tmp_path / "sasl_passwd"
    passwords.write_text(f"[127.0.0.1]:{remote.submission} user2:wrong-password\n")
    os.chmod(passwords, 0o644)
    local = Instance(tmp_path, daemons, "csuvnetwork.com", smtpd_extra=(
        f'relayhost = "[127.0.0.1]:{remote.submission}"\n'
        f'relay_password_file = "{passwords}"\n'))
    assert "relay password file is readable by other users" in local.smtpd.output()
    assert local.submit(["a@example.org"]) == {}
    deadline = time.monotonic() + 15
    while "SASL authentication failed" not in (listing := local.mailctl("queue", "list")):
        assert time.monotonic() < deadline, listing + local.smtpd.output()[-2000:]
        time.sleep(0.2)
    import json
    [item] = json.loads(local.mailctl("queue", "list", "--json"))
    [r] = item["recipients"]
    assert r["state"] == "deferred" and r["status"] == "4.7.0", r
    assert r["last_error"].startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535"), r
    assert remote.inbox("a") == []
    local.stop()
    passwords.write_text(f"# fixed\n[127.0.0.1]:{remote.submission} user2:{PW}\n")
    os.chmod(passwords, 0o600)
    local.start()
    assert "readable by other users" not in local.smtpd.output()
    local.mailctl("queue", "flush")
    [msg] = remote.wait_inbox("a", 1)
    text = msg.read_text()
    # B took it on its submission port, over STARTTLS, authenticated.
    assert "by mail.example.org with ESMTPSA" in text, text
    assert text.endswith("hello over there\n")


def wait_queue_empty(instance, timeout=15):
    deadline = time.monotonic() + timeout
    while "queue is empty" not in (listing := instance.mailctl("queue", "list")):
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)


def test_notify_success_relayed_to_a_peer_without_dsn(tmp_path, daemons):
    """RFC 3461 section 4.2: the next hop does not offer DSN, so we tell
    the sender that asked for NOTIFY=SUCCESS that the mail was relayed."""
    local, sink = sink_pair(tmp_path, daemons, ["PIPELINING"])
    try:
        s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
        s.login("user2", PW)
        s.ehlo()
        s.mail("user2@csuvnetwork.com", ["ENVID=QQ27"])
        assert s.rcpt("a@example.org", ["NOTIFY=SUCCESS", "ORCPT=rfc822;A@example.org"])[0] == 250
        assert s.rcpt("b@example.org", ["NOTIFY=FAILURE"])[0] == 250
        assert s.data(b"Subject: tell me\r\n\r\nhi\r\n")[0] == 250
        s.quit()
        sink.wait(1)
        [notice] = local.wait_inbox("user2", 1)
        m = email.message_from_bytes(notice.read_bytes(), policy=email.policy.default)
        assert m["Subject"] == "Successful Mail Delivery Report"
        parts = list(m.iter_parts())
        status = parts[1].get_payload()
        assert status[0]["Original-Envelope-Id"] == "QQ27"
        assert len(status) == 2, status
        rcpt = status[1]
        assert rcpt["Final-Recipient"] == "rfc822; a@example.org"
        assert rcpt["Original-Recipient"] == "rfc822; A@example.org"
        assert rcpt["Action"] == "relayed" and rcpt["Status"] == "2.0.0"
        assert "b@example.org" not in str(parts[1])
        # The header of the original comes back, not the body.
        assert parts[2].get_content_type() == "text/rfc822-headers"
        wait_queue_empty(local)
    finally:
        sink.close()


def delivery_status(raw):
    """The per-message and per-recipient groups of an RFC 3464 report."""
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report", raw[:500]
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    return m, parts, parts[1].get_payload()


def test_notify_success_for_a_local_mailbox_gets_a_delivered_notice(tmp_path, daemons):
    """RFC 3461 section 4.1 and RFC 3464: our smtpd offers DSN; a local
    recipient that asked for NOTIFY=SUCCESS gets the sender a "delivered"
    report, read here by POP3; NOTIFY=NEVER and the null sender get none."""
    inst = Instance(tmp_path, daemons, "csuvnetwork.com")
    s = smtplib.SMTP("127.0.0.1", inst.submission, timeout=10)
    s.login("user2", PW)
    s.ehlo()
    assert s.has_extn("dsn")
    s.mail("user2@csuvnetwork.com", ["ENVID=LOCAL42", "RET=FULL"])
    assert s.rcpt("a@csuvnetwork.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;A@csuvnetwork.com"])[0] == 250
    assert s.rcpt("b@csuvnetwork.com", ["NOTIFY=NEVER"])[0] == 250
    assert s.data(b"Subject: did it arrive\r\n\r\nbody text\r\n")[0] == 250
    # The null sender is never told (and smtplib's sendmail passes the
    # parameters as given).
    assert s.sendmail("<>", ["b@csuvnetwork.com"], b"Subject: from null\r\n\r\nx\r\n",
                      rcpt_options=["NOTIFY=SUCCESS"]) == {}
    s.quit()
    inst.wait_inbox("a", 1)
    inst.wait_inbox("b", 2)
    [raw] = inst.pop3_messages("user2", 1)
    m, parts, status = delivery_status(raw)
    assert m["Subject"] == "Successful Mail Delivery Report"
    assert status[0]["Original-Envelope-Id"] == "LOCAL42"
    assert status[0]["Reporting-MTA"] == "dns; mail.csuvnetwork.com"
    assert len(status) == 2, status
    rcpt = status[1]
    assert rcpt["Final-Recipient"] == "rfc822; a@csuvnetwork.com"
    assert rcpt["Original-Recipient"] == "rfc822; A@csuvnetwork.com"
    assert rcpt["Action"] == "delivered" and rcpt["Status"] == "2.0.0"
    assert "b@csuvnetwork.com" not in str(parts[1])
    # RET=FULL: the whole message comes back.
    assert parts[2].get_content_type() == "message/rfc822"
    assert "body text" in str(parts[2])
    time.sleep(1)
    assert inst.count("user2") == 1
    assert inst.smtpd.output().count("sender delivery status notification") == 1


def test_between_two_instances_the_remote_reports_delivered(tmp_path, daemons):
    """The next hop is ours and offers DSN: the parameters are passed on,
    so the sending side says nothing and the receiving side reports
    "delivered" (RFC 3461 section 4.2), which travels back."""
    local, remote = pair(tmp_path, daemons)
    # The remote routes the notice back to the sender's instance.
    (remote.dir / "transport").write_text(f"csuvnetwork.com smtp:[127.0.0.1]:{local.smtp}\n")
    remote.stop()
    remote.start()
    s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
    s.login("user2", PW)
    s.ehlo()
    s.mail("user2@csuvnetwork.com", ["ENVID=ACROSS7"])
    assert s.rcpt("a@example.org", ["NOTIFY=SUCCESS"])[0] == 250
    assert s.data(b"Subject: over there\r\n\r\nhi\r\n")[0] == 250
    s.quit()
    remote.wait_inbox("a", 1)
    [raw] = local.pop3_messages("user2", 1)
    m, parts, status = delivery_status(raw)
    assert status[0]["Reporting-MTA"] == "dns; mail.example.org"
    assert status[0]["Original-Envelope-Id"] == "ACROSS7"
    assert status[1]["Action"] == "delivered" and status[1]["Status"] == "2.0.0"
    assert status[1]["Final-Recipient"] == "rfc822; a@example.org"
    # No "relayed" notice from the sending side.
    wait_queue_empty(local)
    wait_queue_empty(remote)
    time.sleep(1)
    assert local.count("user2") == 1
    assert "sender delivery status notification" not in local.smtpd.output()


def test_notify_never_suppresses_the_failure_notice(tmp_path, daemons):
    local, remote = pair(tmp_path, daemons)
    s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
    s.login("user2", PW)
    assert s.sendmail("user2@csuvnetwork.com", ["nobody@example.org", "b@example.org"],
                      b"Subject: quiet\r\n\r\nx\r\n", rcpt_options=["NOTIFY=NEVER"]) == {}
    s.quit()
    remote.wait_inbox("b", 1)
    wait_queue_empty(local)
    time.sleep(1)
    assert local.inbox("user2") == []
    assert "non-delivery notification" not in local.smtpd.output()


def test_a_bare_cr_never_leaves_as_a_bare_cr(tmp_path, daemons):
    """RFC 5321 2.3.8: CR only in CRLF. Mail received by smtpd has its bare
    CRs stored as spaces (as Postfix stores them); locally injected mail
    (sendmail) has them sent as spaces by our client. Either way the next
    hop never sees `<CR>.<CR>`."""
    local, sink = sink_pair(tmp_path, daemons, ["8BITMIME"])
    try:
        s = smtplib.SMTP("127.0.0.1", local.submission, timeout=10)
        s.login("user2", PW)
        s.sendmail("user2@csuvnetwork.com", ["a@example.org"],
                   b"Subject: smtp\r\n\r\nbody\r.\rMAIL FROM:<evil@b.example>\r\n")
        s.quit()
        r = subprocess.run([bin_path("sendmail"), "-C", local.config, "a@example.org"],
                           input=b"Subject: local\n\nlocal\r.\rMAIL FROM:<evil@b.example>\n",
                           capture_output=True)
        assert r.returncode == 0, r.stderr
        got = sink.wait(2)
        for t in got:
            body = t["data"].replace(b"\r\n", b"")
            assert b"\r" not in body, t["data"]
            assert b" . MAIL FROM:<evil@b.example>" in t["data"], t["data"]
    finally:
        sink.close()
