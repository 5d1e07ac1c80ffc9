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

    def __init__(self, tmp, daemons, domain, transport="", tls=False, extra=""):
        self.dir = tmp / domain
        self.dir.mkdir()
        tls_keys = ""
        if tls:
            subprocess.run([bin_path("mailctl"), "tls", "cert", "--name", f"mail.{domain}",
                            "--ca-dir", self.dir / "ca", "--out-dir", self.dir],
                           check=True, capture_output=True)
            tls_keys = f'[tls]\ncertificates = [{{ cert = "mail.{domain}.pem", key = "mail.{domain}.key" }}]\n'

        self.domain = domain
        self.smtp, self.submission = free_port(), free_port()
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

[resolver]
# Nothing answers here: routes come from the transport table only, and no
# query ever leaves the host.
name_servers = ["127.0.0.1:{self.dead_dns}"]
timeout = "1s"
attempts = 1
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
