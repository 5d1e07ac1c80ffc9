"""End-to-end: password guessing is slow and visible.

One attacking address (127.0.0.2) guesses over 16 parallel connections
while the real user logs in from 127.0.0.1: the per-address auth penalty
(Dovecot's, 2 s doubling up to 15 s, waited before the password check)
keeps the attacker to about one failure per second across all its
connections (an attempt whose turn would be more than 30 s away gets a
temporary failure at once, nothing checked), and the real user is not
slowed. SMTP closes a connection
after `auth_failure_limit` failed AUTHs, POP3 after `failed_login_limit`.
Failures are logged in the forms fail2ban's stock postfix (mode=auth) and
dovecot filters match.

`python3 tests/test_bruteforce.py PENALTY SECONDS` prints the guessing
rate of both daemons with that `auth_penalty` (0: off, with the default
per-connection `auth_failure_delay`), for before/after figures.
"""
import base64
import os
import pathlib
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from test_mail import PASSWORDS, Lab

ATTACKER = "127.0.0.2"
CONNECTIONS = 16


def read_reply(f, pop3=False):
    """One reply: an SMTP reply (all its lines) or a POP3 status line;
    b"" at EOF."""
    if pop3:
        return f.readline()
    out = b""
    while True:
        line = f.readline()
        out += line
        if not line or line[3:4] != b"-":
            return out


def guesser(proto, port, deadline, failures, closes, lock):
    """Guess user1's password over one connection after another until the
    deadline: AUTH PLAIN for SMTP, USER/PASS for POP3. Records the time of
    each failure reply and of each close by the server."""
    n = 0
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(ATTACKER, 0))
        except OSError:
            time.sleep(0.05)
            continue
        with s:
            f = s.makefile("rb")
            try:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                pop3 = proto == "pop3"
                if not read_reply(f, pop3):
                    continue
                if not pop3:
                    s.sendall(b"EHLO attacker.test\r\n")
                    read_reply(f)
                while time.monotonic() < deadline:
                    n += 1
                    if pop3:
                        s.sendall(b"USER user1\r\n")
                        reply = read_reply(f, True)
                        if not reply:
                            # Closed after failed_login_limit.
                            with lock:
                                closes.append(time.monotonic())
                        if not reply.startswith(b"+OK"):
                            break
                        s.sendall(b"PASS guess-%d\r\n" % n)
                        failed, busy = b"-ERR [AUTH]", b"-ERR [SYS/TEMP]"
                    else:
                        token = base64.b64encode(b"\0user1\0guess-%d" % n)
                        s.sendall(b"AUTH PLAIN " + token + b"\r\n")
                        failed, busy = b"535", b"454"
                    s.settimeout(max(0.05, deadline - time.monotonic()))
                    reply = read_reply(f, pop3)
                    now = time.monotonic()
                    if reply.startswith(failed):
                        with lock:
                            failures.append(now)
                    if not reply or reply.startswith(b"421") or b"\r\n421 " in reply:
                        with lock:
                            closes.append(now)
                        break
                    if reply.startswith(busy):
                        # Too many of this address's attempts waiting
                        # already: nothing was checked; try again later.
                        time.sleep(0.25)
                        continue
                    if not reply.startswith(failed):
                        break
            except (OSError, socket.timeout):
                pass
            finally:
                f.close()


def real_user_login(proto, lab):
    """Seconds the real user from 127.0.0.1 takes to connect and log in."""
    t0 = time.monotonic()
    if proto == "pop3":
        p = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
        p.user("user1")
        p.pass_(PASSWORDS["user1"])
        elapsed = time.monotonic() - t0
        p.quit()
    else:
        s = smtplib.SMTP("127.0.0.1", lab.submission, local_hostname="client2.csuvnetwork.com", timeout=10)
        s.login("user1", PASSWORDS["user1"])
        elapsed = time.monotonic() - t0
        s.quit()
    return elapsed


def attack(proto, lab, seconds, logins=()):
    """Run CONNECTIONS guessers for `seconds`; the real user logs in at
    each offset in `logins`. Returns (failure times from the start, close
    count, the real user's login times)."""
    port = lab.pop3 if proto == "pop3" else lab.smtp
    failures, closes, lock = [], [], threading.Lock()
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(target=guesser, args=(proto, port, deadline, failures, closes, lock), daemon=True)
        for _ in range(CONNECTIONS)
    ]
    for t in threads:
        t.start()
    login_times = []
    for at in logins:
        time.sleep(max(0.0, start + at - time.monotonic()))
        login_times.append(real_user_login(proto, lab))
    for t in threads:
        t.join(timeout=seconds + 10)
    assert not any(t.is_alive() for t in threads)
    return sorted(t - start for t in failures), len(closes), login_times


@pytest.mark.parametrize("proto", ["smtp", "pop3"])
def test_one_address_guesses_about_once_a_second(tmp_path, daemons, proto):
    """Dovecot's defaults (2 s doubling to 15 s); the per-connection
    failure delay stays 0 as in every Lab, so the penalty alone holds the
    attacker back."""
    lab = Lab(tmp_path, daemons, auth_penalty=2)
    # A login's own cost (a password hash, slow in a debug build).
    baseline = min(real_user_login(proto, lab) for _ in range(3))
    seconds = 5.0
    failures, _, logins = attack(proto, lab, seconds, logins=(1.0, 2.5, 4.0))
    # At once two (nothing known yet, the first in flight), then 2 s,
    # then 4 s later: at most about one failure a second in total.
    assert 1 <= len(failures) <= 1 + seconds, failures
    # The real user from another address gets in at once every time:
    # no penalty wait (the shortest is 2 s), only the login's own cost plus
    # scheduling slack on a loaded machine.
    assert max(logins) < baseline + 1.5, (baseline, logins)


@pytest.mark.parametrize("proto", ["smtp", "pop3"])
def test_connection_closed_after_failed_login_limit(tmp_path, daemons, proto):
    lab = Lab(tmp_path, daemons)
    s = socket.create_connection(("127.0.0.1", lab.pop3 if proto == "pop3" else lab.smtp), timeout=10)
    f = s.makefile("rb")
    pop3 = proto == "pop3"
    assert read_reply(f, pop3)
    replies = []
    if pop3:
        for i in range(3):
            s.sendall(b"USER user1\r\n")
            assert read_reply(f, True).startswith(b"+OK")
            s.sendall(b"PASS wrong-%d\r\n" % i)
            replies.append(read_reply(f, True))
        assert all(r.startswith(b"-ERR") for r in replies), replies
    else:
        s.sendall(b"EHLO attacker.test\r\n")
        read_reply(f)
        for i in range(3):
            s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0user1\0wrong-%d" % i) + b"\r\n")
            replies.append(read_reply(f))
        assert replies[:2] == [b"535 5.7.8 Error: authentication failed\r\n"] * 2
        assert replies[2] == b"535 5.7.8 Error: authentication failed\r\n"
        assert read_reply(f) == (
            b"421 4.7.0 mail.csuvnetwork.com Error: too many failed authentication attempts\r\n"
        )
    # Then the server closes the connection.
    assert read_reply(f, pop3) == b""
    f.close()
    s.close()
    # fail2ban's stock filters see one failure per attempt.
    log = (lab.pop3d if pop3 else lab.smtpd).output()
    check_fail2ban(proto, log, expected=3)


# fail2ban 1.0.2's stock regexes (filter.d/common.conf, postfix.conf
# mode=auth, dovecot.conf), with `_daemon` set to our daemon's name (a
# jail's `filter = postfix[mode=auth, _daemon=smtpd]` and
# `filter = dovecot[_daemon=pop3d]`) and <HOST> reduced to an address.
# The date is what fail2ban's datepattern strips first.
HOST = r"(?P<host>[0-9a-fA-F:.]+)"
DATE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?"


def prefix(daemon):
    return (
        r"(?:\[\])?\s*(?:<[^.]+\.[^.]+>\s+)?(?:\S+\s+)?(?:kernel:\s?\[ *\d+\.\d+\]:?\s+)?(?:@vserver_\S+\s+)?"
        rf"(?:(?:(?:\[\d+\])?:\s+[\[\(]?{daemon}(?:\(\S+\))?[\]\)]?:?|[\[\(]?{daemon}(?:\(\S+\))?[\]\)]?:?(?:\[\d+\])?:?)\s+)?"
        r"(?:\[ID \d+ \S+\]\s+)?"
    )


POSTFIX_PREF = re.compile(DATE + prefix("smtpd") + r"warning: (?P<content>.+)$")
POSTFIX_AUTH = re.compile(
    r"^[^[]*\[" + HOST + r"\](?::\d+)?: SASL ((?i:LOGIN|PLAIN|(?:CRAM|DIGEST)-MD5)) authentication failed:"
    r"(?! Connection lost to authentication server| Invalid authentication mechanism)"
)
DOVECOT_PREF = re.compile(
    DATE + prefix("pop3d")
    + r"(?:(?:dovecot: )?auth(?:-worker)?(?:\([^\)]+\))?: )?(?:pam_unix(?:\(dovecot:auth\))?: |(?:pop3|imap|managesieve|submission)-login: )?(?:Info: )?"
    r"(?:conn \w+:auth(?:-worker)? \([^\)]+\): auth(?:-worker)?<\d+>: )?(?P<content>.+)$"
)
DOVECOT_FAIL = re.compile(
    r"^[a-z\-]{3,15}\(\S*," + HOST + r"(?:,\S*)?\): (?:[Uu]nknown user|[Ii]nvalid credentials|[Pp]assword mismatch)"
)


def stock_matches(proto, log):
    pref, fail = (DOVECOT_PREF, DOVECOT_FAIL) if proto == "pop3" else (POSTFIX_PREF, POSTFIX_AUTH)
    hosts = []
    for line in log.splitlines():
        m = pref.match(line)
        if m is None:
            continue
        f = fail.match(m.group("content"))
        if f is not None:
            hosts.append(f.group("host"))
    return hosts


def fail2ban_regex():
    """The fail2ban-regex command and filter directory: an installed
    fail2ban, or FAIL2BAN_ROOT, a tree from `dpkg -x fail2ban_*.deb`."""
    root = os.environ.get("FAIL2BAN_ROOT")
    if root:
        root = pathlib.Path(root)
        py = next((root / "usr/lib").glob("python3*/dist-packages"), None)
        if py is None:
            return None
        env = {**os.environ, "PYTHONPATH": str(py)}
        return [sys.executable, str(root / "usr/bin/fail2ban-regex")], root / "etc/fail2ban/filter.d", env
    exe = shutil.which("fail2ban-regex")
    if exe and pathlib.Path("/etc/fail2ban/filter.d").is_dir():
        return [exe], pathlib.Path("/etc/fail2ban/filter.d"), dict(os.environ)
    return None


def check_fail2ban(proto, log, expected):
    # The unrelated lines must not match, the failures must, each with
    # the client's address.
    assert stock_matches(proto, log) == ["127.0.0.1"] * expected, log
    tool = fail2ban_regex()
    if tool is None:
        return
    cmd, filters, env = tool
    flt = "dovecot.conf[_daemon=pop3d]" if proto == "pop3" else "postfix.conf[mode=auth, _daemon=smtpd]"
    logfile = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"f2b-{os.getpid()}-{proto}.log"
    logfile.write_text(log)
    try:
        out = subprocess.run(
            cmd + ["--print-no-missed", str(logfile), str(filters / flt)],
            capture_output=True, text=True, env=env, timeout=60,
        ).stdout
    finally:
        logfile.unlink()
    m = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", out, re.M)
    assert m is not None and int(m.group(1)) == expected, out


def test_loggable_user_keeps_the_line_matching(tmp_path, daemons):
    """A user name with spaces, parentheses and brackets cannot make a
    failure line escape the filters."""
    lab = Lab(tmp_path, daemons)
    p = poplib.POP3("127.0.0.1", lab.pop3, timeout=10)
    p.user("a(b),[c]<d>=e")
    with pytest.raises(poplib.error_proto):
        p.pass_("x")
    p.quit()
    s = smtplib.SMTP("127.0.0.1", lab.smtp, local_hostname="client2.csuvnetwork.com", timeout=10)
    s.ehlo()
    s.user, s.password = "a b(c)[d] SASL PLAIN", "x"
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.auth("PLAIN", s.auth_plain)
    s.quit()
    check_fail2ban("pop3", lab.pop3d.output(), expected=1)
    check_fail2ban("smtp", lab.smtpd.output(), expected=1)


def measure(penalty, seconds):
    """Print tries per second for both daemons with `auth_penalty` =
    penalty; 0 is as before the penalty existed: the shipped
    per-connection auth_failure_delay only, no auth_failure_limit."""
    import tempfile
    from conftest import Daemon
    started = []

    def start(args, env=None, cwd=None):
        d = Daemon(args, env=env, cwd=cwd)
        started.append(d)
        return d

    with tempfile.TemporaryDirectory() as tmp:
        before = "auth_failure_limit = 0" if penalty == 0 else ""
        lab = Lab(pathlib.Path(tmp), start, auth_penalty=penalty, extra=before)
        if penalty == 0:
            # The shipped per-connection delays (smtpd 1 s, pop3d 2 s),
            # the only brake before: restart with them.
            for d in started:
                d.stop()
            text = lab.config.read_text().replace("auth_failure_delay = 0\n", "")
            lab.config.write_text(text)
            from conftest import bin_path, wait_tcp
            start([bin_path("smtpd"), "--config", lab.config])
            start([bin_path("pop3d"), "--config", lab.config])
            for port in (lab.smtp, lab.submission, lab.pop3):
                wait_tcp(port)
        try:
            for proto in ("smtp", "pop3"):
                failures, closes, logins = attack(proto, lab, seconds, logins=(seconds / 2,))
                print(
                    f"{proto}: auth_penalty={penalty}: {len(failures)} failures in {seconds:.0f} s "
                    f"from {CONNECTIONS} connections = {len(failures) / seconds:.1f} tries/s; "
                    f"{closes} closes; real user's login {logins[0] * 1000:.0f} ms"
                )
        finally:
            for d in started:
                d.stop()


if __name__ == "__main__":
    measure(int(sys.argv[1]), float(sys.argv[2]))
