"""End-to-end: the whole lab in one command (`maillab`), as the README runs it."""
import poplib
import shutil
import signal
import smtplib
import ssl
import socket
import subprocess
import time

import pytest

from conftest import bin_path, free_port, wait_tcp


def wait_output(d, text, timeout=30.0):
    """Wait until the daemon has printed `text` (maillab prints its banner
    once the accounts exist, after its ports are bound)."""
    deadline = time.monotonic() + timeout
    while text not in d.output():
        assert d.proc.poll() is None, d.output()
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.05)


BANNER_END = "Ctrl-C stops all three."


def test_maillab_reproduces_the_lab(tmp_path, daemons):
    smtp, sub, pop3, dns = free_port(), free_port(), free_port(), free_port()
    subs, pop3s = free_port(), free_port()
    tls_args = ["--submissions", f"127.0.0.1:{subs}", "--pop3s", f"127.0.0.1:{pop3s}"]
    lab = daemons(
        [bin_path("maillab"), "--data-dir", tmp_path / "data",
         "--smtp", f"127.0.0.1:{smtp}", "--submission", f"127.0.0.1:{sub}",
         "--pop3", f"127.0.0.1:{pop3}", "--dns", f"127.0.0.1:{dns}",
         "--password", "user2=lab-pass-2", *tls_args],
        cwd=tmp_path,
    )
    for p in (smtp, sub, pop3, dns, subs, pop3s):
        wait_tcp(p)
    wait_output(lab, BANNER_END)
    out = lab.output()
    # user1 got a generated password, printed once.
    line = next(l for l in out.splitlines() if l.strip().startswith("user1: created, password "))
    user1_pw = line.split("password ")[1].split()[0]
    assert "user2: created with the given password" in out

    if shutil.which("dig"):
        r = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns), "MX", "csuvnetwork.com", "+short"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "10 mail.csuvnetwork.com."

    msg = b"Subject: lab\r\nFrom: user2@mail.csuvnetwork.com\r\n\r\nhello user1\r\n"
    s = smtplib.SMTP("127.0.0.1", sub, timeout=10)
    s.ehlo("client2")
    s.user, s.password = "user2", "lab-pass-2"
    assert s.auth("LOGIN", s.auth_login)[0] == 235
    assert s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], msg) == {}
    s.quit()

    p = poplib.POP3("127.0.0.1", pop3, timeout=10)
    p.user("user1")
    p.pass_(user1_pw)
    _, lines, _ = p.retr(1)
    p.quit()
    assert (b"\r\n".join(lines) + b"\r\n").endswith(msg)

    # TLS with the lab's own CA: the banner names it and its fingerprint,
    # and clients that trust it verify every TLS port.
    ca = tmp_path / "data" / "tls" / "ca.pem"
    assert f"TLS: certificates from the lab's own CA {ca}" in out
    fp = subprocess.run(["openssl", "x509", "-in", ca, "-noout", "-fingerprint", "-sha256"],
                        capture_output=True, text=True, check=True).stdout
    assert fp.split("=", 1)[1].strip() in out
    ctx = ssl.create_default_context(cafile=str(ca))
    s = smtplib.SMTP("127.0.0.1", sub, timeout=10)
    s.starttls(context=ctx)
    s.login("user2", "lab-pass-2")
    assert s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], msg) == {}
    s.quit()
    s = smtplib.SMTP_SSL("127.0.0.1", subs, context=ctx, timeout=10)
    s.login("user2", "lab-pass-2")
    s.quit()
    p = poplib.POP3_SSL("127.0.0.1", pop3s, context=ctx, timeout=10)
    p.user("user1")
    p.pass_(user1_pw)
    assert p.stat()[0] == 2
    _, lines, _ = p.retr(2)
    assert any(b"with ESMTPSA" in l for l in lines)
    p.dele(2)
    p.quit()

    # A second start keeps the accounts and prints no password.
    lab.proc.send_signal(signal.SIGINT)
    assert lab.proc.wait(timeout=20) == 0
    assert "stopped." in lab.output()
    again = daemons(
        [bin_path("maillab"), "--data-dir", tmp_path / "data", "--quiet",
         "--smtp", f"127.0.0.1:{smtp}", "--submission", f"127.0.0.1:{sub}",
         "--pop3", f"127.0.0.1:{pop3}", "--dns", f"127.0.0.1:{dns}", *tls_args],
        cwd=tmp_path,
    )
    wait_tcp(pop3)
    wait_output(again, BANNER_END)
    assert "user1: existing account" in again.output()
    # The CA is made once: the same fingerprint again.
    assert fp.split("=", 1)[1].strip() in again.output()
    p = poplib.POP3("127.0.0.1", pop3, timeout=10)
    p.user("user1")
    p.pass_(user1_pw)
    assert p.stat()[0] == 1
    p.quit()


def lab_args(tmp_path, smtp=None, quiet=True):
    args = [bin_path("maillab"), "--data-dir", tmp_path / "data",
            "--smtp", f"127.0.0.1:{smtp or free_port()}", "--submission", f"127.0.0.1:{free_port()}",
            "--pop3", f"127.0.0.1:{free_port()}", "--dns", f"127.0.0.1:{free_port()}",
            "--submissions", f"127.0.0.1:{free_port()}", "--pop3s", f"127.0.0.1:{free_port()}"]
    return args + (["--quiet"] if quiet else [])


def test_maillab_binds_before_it_creates_accounts(tmp_path, daemons):
    """A port already taken (another mail server on 2525) ends the run
    before any password is generated; the next start creates the users and
    shows their passwords, instead of "existing account"."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    r = subprocess.run(lab_args(tmp_path, smtp=port), capture_output=True, text=True, timeout=30)
    busy.close()
    assert r.returncode != 0
    assert f"127.0.0.1:{port}" in r.stderr, r.stderr
    assert "password" not in r.stdout, r.stdout
    assert (tmp_path / "data" / "passwd").read_text() == ""
    args = lab_args(tmp_path)
    again = daemons(args, cwd=tmp_path)
    wait_output(again, BANNER_END)
    assert "user1: created, password " in again.output(), again.output()


def test_maillab_sighup_reloads_each_server_once(tmp_path, daemons):
    args = lab_args(tmp_path, quiet=False)
    lab = daemons(args, cwd=tmp_path)
    pop3 = int(args[args.index("--pop3") + 1].rsplit(":", 1)[1])
    wait_output(lab, BANNER_END)
    assert "zones reloaded" not in lab.output()
    lab.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in lab.output():
        assert time.monotonic() < deadline, lab.output()
        time.sleep(0.05)
    time.sleep(0.5)  # a second reload, if any, would show by now
    out = lab.output()
    assert out.count("zones reloaded") == 1, out
    assert out.count("configuration reloaded") == 1, out
    assert out.count("SIGHUP: rereading") == 1, out
    # Still serving after the reload.
    p = poplib.POP3("127.0.0.1", pop3, timeout=10)
    p.quit()
    lab.proc.send_signal(signal.SIGTERM)
    assert lab.proc.wait(timeout=20) == 0
    assert "stopped." in lab.output()


def test_maillab_relaying_is_refused_as_docs_lab_says(tmp_path, daemons):
    """docs/lab.md section 2: other domains get 554 5.7.1 from clients that
    may not relay, and are accepted into the outbound queue from those that
    may (loopback is in relay_networks; after AUTH)."""
    args = lab_args(tmp_path) + ["--password", "user2=lab-pass-2"]
    lab = daemons(args, cwd=tmp_path)
    wait_output(lab, BANNER_END)
    smtp = int(args[args.index("--smtp") + 1].rsplit(":", 1)[1])
    sub = int(args[args.index("--submission") + 1].rsplit(":", 1)[1])
    s = smtplib.SMTP("127.0.0.1", smtp, timeout=10)
    s.ehlo("client2")
    s.mail("user2@mail.csuvnetwork.com")
    assert s.rcpt("someone@example.org")[0] == 250
    assert s.rcpt("user1@csuvnetwork.com")[0] == 250
    s.quit()
    s = smtplib.SMTP("127.0.0.1", sub, timeout=10)
    s.login("user2", "lab-pass-2")
    s.mail("user2@mail.csuvnetwork.com")
    assert s.rcpt("someone@example.org")[0] == 250
    s.quit()
    # Outside relay_networks and without AUTH: Postfix's refusal.
    cfg = tmp_path / "norelay.toml"
    port = free_port()
    cfg.write_text(
        '[global]\nrelay_networks = []\nmaildir_root = "d/mail"\npasswd_file = "d/passwd"\n'
        'aliases_file = "d/aliases"\n[smtpd]\nqueue_directory = "d/queue"\n'
    )
    other = daemons([bin_path("maillab"), "-c", cfg, "--quiet", "--smtp", f"127.0.0.1:{port}",
                     "--submission", f"127.0.0.1:{free_port()}", "--pop3", f"127.0.0.1:{free_port()}",
                     "--dns", f"127.0.0.1:{free_port()}"], cwd=tmp_path)
    wait_output(other, BANNER_END)
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client2")
    s.mail("user2@mail.csuvnetwork.com")
    code, text = s.rcpt("someone@example.org")
    assert code == 554 and b"5.7.1 " in text and b"Relay access denied" in text
    s.quit()
