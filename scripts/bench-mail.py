#!/usr/bin/env python3
"""Whole-daemon benchmarks for smtpd and pop3d on loopback, optionally
against Postfix + Dovecot in the same run.

Starts release builds of smtpd and pop3d on ephemeral loopback ports with a
fresh data directory, measures, and stops them by PID. With --reference it
then starts Postfix (private config directory, smtpd on 127.0.0.1 only) and
Dovecot (private config file, pop3 on 127.0.0.1 only), runs the very same
workloads through the very same functions, stops them, and prints the ratio
ours / reference for every figure. Every load goes to 127.0.0.1 and is
bounded in count.

  scripts/bench-mail.py [--messages 20000] [--sessions 20] [--reference]
                        [--rounds 3] [--dovecot-login security|performance]
                        [--auth-checks [--postfix-milters]]

--auth-checks measures SMTP delivery only, with one DKIM-signed message
(signed once, before the clock starts) that ours checks with SPF, DKIM and
DMARC against a dnsd on loopback; Postfix checks nothing (no milters), or
with --postfix-milters runs OpenDKIM, OpenDMARC and policyd-spf.
BENCH_PROFILE=debug uses the debug binaries (a check of the script, not a
measurement).

Measures (see docs/benchmarks.md):
  1. SMTP delivery with Postfix's smtp-source (4 KiB messages, 20 sessions),
     counting the messages that reached the Maildir, not only those accepted:
     the clock stops when the last message is on disk.
  2. Latency per message at one SMTP session (median, smtplib).
  3. POP3: one session draining the mailbox with LIST/RETR (RETR/s), then
     RETR+DELE+QUIT, and many short login sessions (USER/PASS/QUIT).
  4. Memory: PSS of each service (every process of it) with N idle
     connections, per connection.

smtp-source comes from Debian's postfix package; when it is not installed
(and --reference is not given) the script extracts the package
(apt-get download, dpkg -x) into target/bench-tools without installing or
starting Postfix. --reference installs `postfix` and `dovecot-pop3d` with
apt-get when missing (as root, with service starts forbidden by
policy-rc.d), and never starts them on anything but 127.0.0.1.
"""
import argparse
import json
import os
import pathlib
import poplib
import pwd
import re
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import postfix_lab  # noqa: E402  (scripts/, beside this file)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# BENCH_PROFILE=debug runs the debug binaries, to check a script end to
# end without a release build (its figures mean nothing then).
REL = TARGET / os.environ.get("BENCH_PROFILE", "release")
DOMAIN = "csuvnetwork.com"
USERS = {"user1": "pw1", "user2": "pw2"}
# System account owning the reference Maildirs (virtual(8) refuses root).
BENCH_ACCOUNT = "mailbench"
POLICY_RC = pathlib.Path("/usr/sbin/policy-rc.d")


# --------------------------------------------------------------------------
# Helpers shared by both systems
# --------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def smtp_source():
    found = shutil.which("smtp-source")
    if found:
        return [found], {}
    tools = TARGET / "bench-tools"
    exe = tools / "root/usr/sbin/smtp-source"
    if not exe.exists():
        tools.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "postfix"], cwd=tools, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = next(tools.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(tools / "root")], check=True)
    return [str(exe)], {"LD_LIBRARY_PATH": str(tools / "root/usr/lib/postfix")}


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # the process ended between listing and reading
    return 0


def parent_map():
    """pid -> ppid for every process now alive."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 2 (comm) may contain spaces; ppid is the 2nd field after ')'.
        out[int(d)] = int(stat.rpartition(")")[2].split()[1])
    return out


def process_tree(roots):
    """The given pids and all their descendants (alive now)."""
    ppids = parent_map()
    children = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [p for p in roots if p in ppids]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sorted(seen)


def tree_pss_kib(roots):
    """PSS summed over every process of the service (roots + descendants)."""
    pids = process_tree(roots)
    return sum(pss_kib(p) for p in pids), len(pids)


def tree_cpu_s(roots):
    """User + system CPU seconds used so far by every live process of the
    service."""
    total = 0
    for pid in process_tree(roots):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def listening_addresses(roots):
    """(address, port) of every TCP socket in LISTEN held by the tree."""
    inodes = set()
    for pid in process_tree(roots):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            if v6:
                # /proc prints the address as four host-order 32-bit words.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, raw)
            else:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            found.append((addr, int(hexport, 16)))
    return found


def assert_loopback_only(name, roots):
    """Refuse to go on if the service listens on anything but loopback or on
    the well-known ports."""
    addrs = listening_addresses(roots)
    for addr, port in addrs:
        if not (addr.startswith("127.") or addr == "::1") or port in (25, 110, 143, 587):
            raise RuntimeError(f"{name} listens on {addr}:{port}: refusing to go on")
    return addrs


def count_files(d):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += sum(1 for _ in (d / sub).iterdir())
        except FileNotFoundError:
            pass  # the Maildir is created at the first delivery
    return n


def wait_on_disk(maildir, expected, since, stall=30.0, poll=0.05):
    """Wait until `expected` messages are in the Maildir, or until the count
    has not grown for `stall` seconds. Returns (count, time of the last
    growth or `since` if it was already complete). Our smtpd has written and
    fsynced before its 250; Postfix delivers after its 250, so the clock must
    stop when the last message is on disk, not when the client is done."""
    count = count_files(maildir)
    t_last = since
    last_growth = time.monotonic()
    while count < expected and time.monotonic() - last_growth < stall:
        time.sleep(poll)
        now = count_files(maildir)
        if now > count:
            count, t_last = now, time.monotonic()
            last_growth = t_last
    return count, t_last


def raise_fd_limit():
    """Both systems inherit the same (raised) open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# The workloads: identical code for both systems
# --------------------------------------------------------------------------

def bench_smtp_source(label, smtp_port, inbox, messages, sessions, signed=None):
    """smtp-source throughput, counted on disk. With `signed` (a
    SignedMessage) every message is that file, DKIM-signed, sent as its
    sending domain's MTA would (HELO and MAIL FROM in that domain)."""
    cmd, extra_env = smtp_source()
    before = count_files(inbox)
    if signed is None:
        what = ["-l", "4096"]
    else:
        what = ["-F", str(signed.path), "-f", signed.mail_from, "-M", signed.helo]
    t0 = time.monotonic()
    subprocess.run(cmd + ["-c", *what, "-m", str(messages), "-s", str(sessions),
                          "-t", f"user1@{DOMAIN}", f"127.0.0.1:{smtp_port}"],
                   env={**os.environ, **extra_env}, check=True, stdout=subprocess.DEVNULL)
    t_client = time.monotonic()
    stored, t_disk = wait_on_disk(inbox, before + messages, t_client)
    stored -= before
    dt = t_disk - t0
    print(f"[{label}] SMTP: {stored}/{messages} messages in the Maildir in {dt:.2f}s = "
          f"{stored / dt:.0f} msg/s ({sessions} sessions, 4 KiB; client done after "
          f"{t_client - t0:.2f}s)", flush=True)
    return {"smtp_delivered": stored, "smtp_msgs_per_s": stored / dt}


def bench_smtp_latency(label, smtp_port, inbox2, messages):
    """Median time per message (MAIL+RCPT+DATA) at one session."""
    body = b"Subject: latency\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52
    before = count_files(inbox2)
    s = smtplib.SMTP("127.0.0.1", smtp_port)
    s.ehlo("bench")
    lat = []
    for _ in range(messages):
        t = time.perf_counter()
        s.sendmail("bench@example.net", [f"user2@{DOMAIN}"], body)
        lat.append(time.perf_counter() - t)
    s.quit()
    # Let a queueing MTA finish delivering before the next workload starts,
    # so that it does not run on a machine still busy with this one.
    stored, _ = wait_on_disk(inbox2, before + messages, time.monotonic())
    ms = statistics.median(lat) * 1000
    print(f"[{label}] SMTP latency, one session: median {ms:.2f} ms per message "
          f"(MAIL+RCPT+DATA, {messages} messages, {stored - before} on disk)", flush=True)
    return {"smtp_latency_ms": ms}


def run_probe(example, *args):
    """Run one of the compiled benchmark clients (a cargo example built in
    release mode) and return the `key=value` fields it prints."""
    out = subprocess.run([str(TARGET / "release/examples" / example), *args],
                         check=True, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split())


def bench_smtp_latency_c(label, smtp_port, inbox2, messages):
    """Median time per message at one connection with a compiled client
    (crates/smtp-proto/examples/latency_client.rs: lock-step MAIL, RCPT,
    DATA, 4 KiB body, TCP_NODELAY): less client time in the figure than
    smtplib's, so more of it is the server's."""
    before = count_files(inbox2)
    fields = run_probe("latency_client", f"127.0.0.1:{smtp_port}", str(messages),
                       f"user2@{DOMAIN}", "4096")
    stored, _ = wait_on_disk(inbox2, before + messages, time.monotonic())
    ms = float(fields["median_us"]) / 1000
    print(f"[{label}] SMTP latency, compiled client, one connection: median {ms:.3f} ms per "
          f"message (p10 {float(fields['p10_us']) / 1000:.3f}, p90 "
          f"{float(fields['p90_us']) / 1000:.3f}; {messages} messages, 4 KiB, "
          f"{stored - before} on disk)", flush=True)
    return {"smtp_latency_c_ms": ms}


def bench_pop3_retr(label, pop3_port, user, password):
    """One session: LIST + RETR of everything, no DELE."""
    p = poplib.POP3("127.0.0.1", pop3_port)
    p.user(user)
    p.pass_(password)
    n, _ = p.stat()
    t0 = time.monotonic()
    p.list()
    for i in range(1, n + 1):
        p.retr(i)
    dt = time.monotonic() - t0
    p.rset()
    p.quit()
    print(f"[{label}] POP3: one session, LIST + {n} RETR in {dt:.2f}s = "
          f"{n / dt:.0f} RETR/s", flush=True)
    return {"pop3_retr_per_s": n / dt}


def bench_pop3_retr_dele(label, pop3_port, inbox, user, password):
    """RETR + DELE of everything, then QUIT (the expunge is timed)."""
    p = poplib.POP3("127.0.0.1", pop3_port)
    p.user(user)
    p.pass_(password)
    n, _ = p.stat()
    t0 = time.monotonic()
    for i in range(1, n + 1):
        p.retr(i)
        p.dele(i)
    p.quit()
    dt = time.monotonic() - t0
    left = count_files(inbox)
    print(f"[{label}] POP3: RETR+DELE {n} then QUIT in {dt:.2f}s = {n / dt:.0f} msg/s "
          f"({left} left in the Maildir)", flush=True)
    return {"pop3_retr_dele_per_s": n / dt, "pop3_left_after_dele": left}


class Pop3Pipe:
    """A raw POP3 client that pipelines commands (RFC 2449 PIPELINING, which
    both servers advertise) so the figure measures the server, not this
    client's round trips: a window of commands is kept in flight."""

    def __init__(self, port, user, password):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = bytearray()
        self.pos = 0
        self.line()  # greeting
        self.sock.sendall(f"USER {user}\r\nPASS {password}\r\n".encode())
        self.line()
        ok = self.line()
        if not ok.startswith(b"+OK"):
            raise SystemExit(f"POP3 login failed: {ok!r}")

    def fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("POP3 server closed the connection")
        self.buf += chunk

    def compact(self):
        # Only between responses: offsets into the buffer stay valid while
        # one response is being parsed.
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0

    def line(self):
        self.compact()
        while (i := self.buf.find(b"\r\n", self.pos)) < 0:
            self.fill()
        out = bytes(self.buf[self.pos:i])
        self.pos = i + 2
        return out

    def multi(self):
        """One multi-line response; returns the octets of its body."""
        self.compact()
        status = self.line()
        if not status.startswith(b"+OK"):
            raise SystemExit(f"POP3 error: {status!r}")
        start = self.pos - 2
        while (i := self.buf.find(b"\r\n.\r\n", start)) < 0:
            start = max(self.pos - 2, len(self.buf) - 4)
            self.fill()
        body = i + 2 - self.pos
        self.pos = i + 5
        return body

    def run(self, commands, window=64):
        """Send (command, multi-line?) pairs, at most `window` in flight."""
        sent = done = 0
        total = 0
        while done < len(commands):
            if sent < len(commands) and sent - done < window:
                batch = commands[sent:min(len(commands), done + window)]
                self.sock.sendall(b"".join(c for c, _ in batch))
                sent += len(batch)
            _, is_multi = commands[done]
            if is_multi:
                total += self.multi()
            else:
                l = self.line()
                if not l.startswith(b"+OK"):
                    raise SystemExit(f"POP3 error: {l!r}")
            done += 1
        return total

    def stat(self):
        self.sock.sendall(b"STAT\r\n")
        return int(self.line().split()[1])

    def quit(self):
        self.sock.sendall(b"QUIT\r\n")
        l = self.line()
        self.sock.close()
        return l


def bench_pop3_pipelined(label, pop3_port, inbox, user, password, dele, pids=()):
    """The server's own rate: one session, pipelined LIST + RETR of
    everything (then RSET), or with `dele` pipelined RETR+DELE of
    everything and a timed QUIT that expunges."""
    p = Pop3Pipe(pop3_port, user, password)
    n = p.stat()
    t0 = time.monotonic()
    if dele:
        cmds = []
        for i in range(1, n + 1):
            cmds += [(b"RETR %d\r\n" % i, True), (b"DELE %d\r\n" % i, False)]
        p.run(cmds)
        p.quit()
        dt = time.monotonic() - t0
        left = count_files(inbox)
        print(f"[{label}] POP3 pipelined: RETR+DELE {n} then QUIT in {dt:.2f}s = "
              f"{n / dt:.0f} msg/s ({left} left in the Maildir)", flush=True)
        return {"pop3_pipelined_retr_dele_per_s": n / dt}
    cpu0 = tree_cpu_s(pids)
    octets = p.run([(b"LIST\r\n", True)] + [(b"RETR %d\r\n" % i, True) for i in range(1, n + 1)])
    dt = time.monotonic() - t0
    # Server CPU while the session is still open (no process has exited).
    us = (tree_cpu_s(pids) - cpu0) / max(n, 1) * 1e6
    p.run([(b"RSET\r\n", False)])
    p.quit()
    print(f"[{label}] POP3 pipelined: LIST + {n} RETR ({octets} octets) in {dt:.2f}s = "
          f"{n / dt:.0f} RETR/s, server CPU {us:.1f} us per RETR", flush=True)
    return {"pop3_pipelined_retr_per_s": n / dt, "pop3_cpu_us_per_retr": us}


def bench_pop3_pipelined_c(label, pop3_port, user, password):
    """The same pipelined drain of the mailbox (RETR of everything, window
    of 64, then RSET) from a compiled client
    (crates/pop3-proto/examples/pipelined_client.rs), timed from after STAT
    to the last message: on two cores the Python client's own time per
    message is close to the server's, which compresses the ratio."""
    f = run_probe("pipelined_client", f"127.0.0.1:{pop3_port}", user, password)
    rate = float(f["per_s"])
    print(f"[{label}] POP3 pipelined, compiled client: {f['messages']} RETR "
          f"({f['octets']} octets) in {float(f['seconds']):.2f}s = {rate:.0f} RETR/s", flush=True)
    return {"pop3_pipelined_c_retr_per_s": rate}


def bench_pop3_logins(label, pop3_port, user, password, logins):
    """Short sessions: connect, USER, PASS (SHA512-CRYPT check), QUIT."""
    t0 = time.monotonic()
    for _ in range(logins):
        p = poplib.POP3("127.0.0.1", pop3_port)
        p.user(user)
        p.pass_(password)
        p.quit()
    dt = time.monotonic() - t0
    print(f"[{label}] POP3: {logins} USER/PASS/QUIT sessions in {dt:.2f}s = "
          f"{logins / dt:.0f} sessions/s (SHA512-CRYPT accounts)", flush=True)
    return {"pop3_logins_per_s": logins / dt}


def bench_idle(label, name, port, pids, idle):
    """PSS of every process of the service before and after opening `idle`
    connections that each got their greeting."""
    before, nbefore = tree_pss_kib(pids)
    socks = []
    try:
        for _ in range(idle):
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.recv(512)  # the greeting: the session exists
            socks.append(c)
        time.sleep(0.5)
        after, nafter = tree_pss_kib(pids)
    finally:
        for c in socks:
            c.close()
    per = (after - before) / idle
    print(f"[{label}] {name}: PSS {before} KiB ({nbefore} processes) -> {after} KiB "
          f"({nafter} processes) with {idle} idle connections = {per:.1f} KiB per "
          f"connection", flush=True)
    return {f"{name}_kib_per_idle_conn": per, f"{name}_pss_kib_before": before,
            f"{name}_pss_kib_after": after}


def run_workloads(label, smtp_port, pop3_port, maildirs, pids, passwords, a):
    """Every workload, in order, against one system.

    maildirs: user -> Maildir path; pids: {"smtp": [...], "pop3": [...]}
    root pids whose process trees make up each service; passwords: user ->
    clear password."""
    if a.auth_checks:
        # The delivered-messages figure only, with the signed message.
        return bench_smtp_source(label, smtp_port, maildirs["user1"], a.messages, a.sessions,
                                 signed=a.signed)
    r = {}
    # Idle memory first, on fresh processes: after the other workloads the
    # allocator holds freed memory that new connections would reuse, which
    # hides their cost.
    r.update(bench_idle(label, "smtp", smtp_port, pids["smtp"], a.idle))
    r.update(bench_idle(label, "pop3", pop3_port, pids["pop3"], a.idle))
    r.update(bench_smtp_source(label, smtp_port, maildirs["user1"], a.messages, a.sessions))
    r.update(bench_smtp_latency(label, smtp_port, maildirs["user2"], a.latency_messages))
    r.update(bench_smtp_latency_c(label, smtp_port, maildirs["user2"], a.latency_messages * 4))
    r.update(bench_pop3_retr(label, pop3_port, "user1", passwords["user1"]))
    r.update(bench_pop3_pipelined(label, pop3_port, maildirs["user1"], "user1",
                                  passwords["user1"], dele=False, pids=pids["pop3"]))
    r.update(bench_pop3_pipelined_c(label, pop3_port, "user1", passwords["user1"]))
    r.update(bench_pop3_retr_dele(label, pop3_port, maildirs["user1"], "user1",
                                  passwords["user1"]))
    # Refill the mailbox the same way, then drain it pipelined.
    bench_smtp_source(label + " refill", smtp_port, maildirs["user1"], a.messages, a.sessions)
    r.update(bench_pop3_pipelined(label, pop3_port, maildirs["user1"], "user1",
                                  passwords["user1"], dele=True))
    r.update(bench_pop3_logins(label, pop3_port, "user2", passwords["user2"], a.logins))
    return r


# --------------------------------------------------------------------------
# Our daemons
# --------------------------------------------------------------------------

def stop_popen(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


SENDER_DOMAIN = "example.net"


class SignedMessage:
    """For --auth-checks: a 4 KiB message from SENDER_DOMAIN, DKIM-signed
    once here with dkimpy (rsa-sha256, relaxed/relaxed; RSA-2048 is the
    costlier check and what most senders use) by a key from `mailctl dkim
    keygen`, and the zone that publishes the domain's SPF, DKIM and DMARC
    records. Signing before the clock starts keeps its cost off it."""

    selector = "bench"

    def __init__(self, work):
        try:
            import dkim  # dkimpy
        except ImportError:
            raise SystemExit("--auth-checks signs with dkimpy: apt-get install python3-dkim "
                             "(or pip install dkimpy)")
        work.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [REL / "mailctl", "dkim", "keygen", "--domain", SENDER_DOMAIN, "--selector",
             self.selector, "--algorithm", "rsa", "--out-dir", work],
            capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        key = pathlib.Path(lines[0].removeprefix("; private key ").strip())
        end = next(i for i, ln in enumerate(lines) if ln.rstrip().endswith(")"))
        record = "\n".join(lines[1:end + 1])
        # The key record's text, for OpenDKIM's TestPublicKeys.
        self.key_name = f"{self.selector}._domainkey.{SENDER_DOMAIN}"
        self.key_text = "".join(re.findall(r'"([^"]*)"', record))
        self.mail_from = f"bench@{SENDER_DOMAIN}"
        self.helo = f"mx.{SENDER_DOMAIN}"
        head = (f"From: Bench Sender <{self.mail_from}>\r\nTo: user1@{DOMAIN}\r\n"
                "Subject: signed benchmark message\r\n"
                "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
                f"Message-ID: <bench-signed@{SENDER_DOMAIN}>\r\n\r\n").encode()
        pad = b"x" * 76 + b"\r\n"
        msg = head + pad * ((4096 - len(head)) // len(pad))
        sig = dkim.sign(msg, self.selector.encode(), SENDER_DOMAIN.encode(), key.read_bytes(),
                        canonicalize=(b"relaxed", b"relaxed"),
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
        # smtp-source -F ends every line with CRLF itself.
        self.path = work / "signed.eml"
        self.path.write_bytes((sig + msg).replace(b"\r\n", b"\n"))
        # The whole parent zone, so that every name the checks ask for
        # (DMARC also asks at the organizational domain's parent) gets an
        # authoritative answer instead of a refusal.
        self.origin = SENDER_DOMAIN.partition(".")[2]
        self.zone = work / f"{self.origin}.zone"
        # The client is 127.0.0.1; the HELO name has a record of its own
        # (RFC 7208 section 2.3), so both SPF checks pass.
        d = f"{SENDER_DOMAIN}."
        self.zone.write_text(f"""$TTL 3600
@ IN SOA ns.{d} hostmaster.{d} 1 3600 600 86400 3600
@ IN NS ns.{d}
ns.{d} IN A 127.0.0.1
{d} IN TXT "v=spf1 ip4:127.0.0.1 -all"
mx.{d} IN A 127.0.0.1
mx.{d} IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.{d} IN TXT "v=DMARC1; p=reject"
{record}
""")


def start_dnsd(work, signed):
    """dnsd on 127.0.0.1 serving the signed message's zone; (process, port)."""
    port = free_port()
    cfg = work / "dns.toml"
    cfg.write_text(f'[dnsd]\nlisten = ["127.0.0.1:{port}"]\n'
                   f'zones = [{{ origin = "{signed.origin}", file = "{signed.zone}" }}]\n'
                   "workers = 1\n")
    proc = subprocess.Popen([REL / "dnsd", "--config", cfg],
                            env={**os.environ, "RUST_LOG": "warn"})
    wait_tcp(port)
    return proc, port


class Milters:
    """For --postfix-milters: OpenDKIM (verify mode), OpenDMARC and
    policyd-spf in front of the reference Postfix, the stock Debian
    programs with private config files, each milter on a 127.0.0.1 port.
    None of them takes a name server's port, so dnsd answers on port 53 of
    a loopback address of its own, and Postfix and the milters run in a
    private mount namespace (`unshare -m`) where /etc/resolv.conf names it;
    the host's file is untouched. Loopback is a stranger to all three
    (their defaults skip it: InternalHosts, IgnoreHosts, skip_addresses)."""

    def __init__(self, work, signed):
        self.procs = []
        try:
            self._start(work, signed)
        except BaseException:
            self.stop()  # what did start
            raise

    def _start(self, work, signed):
        self.dir = work
        work.mkdir(mode=0o755)
        self.dns_addr = postfix_lab.loopback_53()
        cfg = work / "dns.toml"
        cfg.write_text(f'[dnsd]\nlisten = ["{self.dns_addr}:53"]\n'
                       f'zones = [{{ origin = "{signed.origin}", file = "{signed.zone}" }}]\n'
                       "workers = 1\n")
        self.procs.append(subprocess.Popen([REL / "dnsd", "--config", cfg],
                                           env={**os.environ, "RUST_LOG": "warn"}))
        wait_tcp_on(self.dns_addr, 53)
        resolv = work / "resolv.conf"
        resolv.write_text(f"nameserver {self.dns_addr}\noptions timeout:2 attempts:1\n")
        self.wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                     f'mount --bind {resolv} /etc/resolv.conf && exec "$@"', "sh"]
        (work / "strangers").write_text("192.0.2.1\n")  # nobody we know
        self.dkim_port, self.dmarc_port = free_port(), free_port()
        authserv = f"mail.{DOMAIN}"
        # Debian's OpenDKIM resolves with libunbound, which ignores
        # resolv.conf and refuses loopback name servers unless a
        # configuration file says otherwise; but it reads that file once
        # per verification, and concurrent readers misparse it ("unknown
        # keyword 's'", then 451 to every sender). So OpenDKIM reads the
        # key from a file instead: no DNS at all for it, which can only
        # flatter the reference.
        (work / "keys").write_text(f"{signed.key_name} {signed.key_text}\n")
        (work / "opendkim.conf").write_text(f"""\
TestPublicKeys {work}/keys
Mode v
Socket inet:{self.dkim_port}@127.0.0.1
PidFile {work}/opendkim.pid
UserID opendkim
Syslog no
InternalHosts {work}/strangers
AuthservID {authserv}
AlwaysAddARHeader yes
""")
        (work / "opendmarc.conf").write_text(f"""\
Socket inet:{self.dmarc_port}@127.0.0.1
PidFile {work}/opendmarc.pid
UserID opendmarc
Syslog false
AuthservID {authserv}
TrustedAuthservIDs {authserv}
IgnoreHosts {work}/strangers
RejectFailures false
""")
        (work / "policyd-spf.conf").write_text("""\
debugLevel = 0
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.1/32
""")
        # The configuration file is opendkim's -x and opendmarc's -c.
        # In the foreground with Syslog off they report on stderr: keep it
        # for report_log_problems.
        for exe, flag in (("opendkim", "-x"), ("opendmarc", "-c")):
            with open(work / f"{exe}.log", "wb") as log:
                self.procs.append(subprocess.Popen(
                    [*self.wrap, f"/usr/sbin/{exe}", "-f", flag, str(work / f"{exe}.conf")],
                    stdout=log, stderr=subprocess.STDOUT))
        wait_tcp(self.dkim_port)
        wait_tcp(self.dmarc_port)

    def main_cf(self):
        """The reference Postfix's parameters for the milters and SPF."""
        return {
            "smtpd_milters": f"inet:127.0.0.1:{self.dkim_port}, inet:127.0.0.1:{self.dmarc_port}",
            "milter_default_action": "tempfail",
            # SPF before mynetworks, so that loopback clients are checked.
            "smtpd_recipient_restrictions": "check_policy_service unix:private/policyd-spf, "
                                            "permit_mynetworks, reject_unauth_destination",
            "policyd-spf_time_limit": "3600",
        }

    def master_cf(self):
        return ("policyd-spf unix - n n - 0 spawn\n"
                f"  user=nobody argv=/usr/bin/policyd-spf {self.dir}/policyd-spf.conf\n")

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        stop_popen(self.procs)


def wait_tcp_on(host, port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


def check_postfix_results(maildir):
    """After a --postfix-milters run: a message Postfix delivered carries the
    three verdicts (OpenDKIM's and OpenDMARC's Authentication-Results,
    policyd-spf's Received-SPF)."""
    new = maildir / "new"
    sample = next(iter(sorted(new.iterdir())), None) if new.exists() else None
    if sample is None:
        raise RuntimeError("--postfix-milters: no message delivered")
    head = sample.read_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")[0].decode()
    unfolded = head.replace("\n ", " ").replace("\n\t", " ")
    for want in ("dkim=pass", "Received-SPF: Pass", "dmarc=pass"):
        if want not in unfolded:
            raise RuntimeError(f"--postfix-milters: {want} not in\n{head}")
    for ln in unfolded.splitlines():
        if ln.startswith(("Authentication-Results:", "Received-SPF:")):
            print(f"[reference] {ln[:160]}", flush=True)


def check_auth_results(maildir):
    """After an --auth-checks run: one delivered message says that every
    check ran and passed, else the figure would not be of real checks."""
    new = maildir / "new"
    sample = next(iter(sorted(new.iterdir())), None) if new.exists() else None
    if sample is None:
        raise RuntimeError("--auth-checks: no message delivered")
    head = sample.read_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")[0].decode()
    # The field with its folded lines, unfolded.
    lines = head[head.find("Authentication-Results:"):].split("\n")
    text = lines[0]
    for ln in lines[1:]:
        if ln[:1] not in (" ", "\t"):
            break
        text += " " + ln.strip()
    for want in ("dkim=pass", "spf=pass", "dmarc=pass"):
        if want not in text:
            raise RuntimeError(f"--auth-checks: {want} not in {text!r}")
    print(f"[ours] {text[:200]}", flush=True)


def run_ours(work, a):
    """Start smtpd + pop3d, run the workloads, stop them. Returns results."""
    smtp, pop3 = free_port(), free_port()
    cfg = work / "mail.toml"
    dnsd, checks = None, ""
    if a.auth_checks:
        dnsd, dns_port = start_dnsd(work, a.signed)
        # Loopback is a stranger here (no relay_networks): mail on the
        # inbound listener is checked, as mail from the Internet is.
        checks = f"""
[resolver]
name_servers = ["127.0.0.1:{dns_port}"]
[auth_checks]
enabled = true
"""
    cfg.write_text(f"""
[global]
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
{"relay_networks = []" if a.auth_checks else ""}
{checks}
[smtpd]
listen = ["127.0.0.1:{smtp}"]
submission_listen = []
max_connections = 4000
max_connections_per_client = 4000
[pop3d]
listen = ["127.0.0.1:{pop3}"]
max_connections = 4000
max_connections_per_client = 4000
""")
    for user, pw in USERS.items():
        subprocess.run([REL / "mailctl", "--passwd", work / "passwd", "--aliases",
                        work / "aliases", "--maildir-root", work / "mail", "user", "add",
                        user, "--password-stdin"],
                       input=f"{pw}\n".encode(), check=True, capture_output=True)
    env = {**os.environ, "RUST_LOG": "warn"}
    procs = []
    try:
        procs.append(subprocess.Popen([REL / "smtpd", "--config", cfg], env=env))
        procs.append(subprocess.Popen([REL / "pop3d", "--config", cfg], env=env))
        wait_tcp(smtp)
        wait_tcp(pop3)
        pids = {"smtp": [procs[0].pid], "pop3": [procs[1].pid]}
        for name, roots in pids.items():
            assert_loopback_only(f"our {name}", roots)
        maildirs = {u: work / "mail" / u / "Maildir" for u in USERS}
        r = run_workloads("ours", smtp, pop3, maildirs, pids, USERS, a)
        if a.auth_checks:
            check_auth_results(maildirs["user1"])
        return r
    finally:
        stop_popen(procs + ([dnsd] if dnsd else []))


# --------------------------------------------------------------------------
# Reference: Postfix 3.7 + Dovecot 2.3
# --------------------------------------------------------------------------

def pkg_installed(name):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "install ok installed"


MILTER_PACKAGES = ("opendkim", "opendmarc", "postfix-policyd-spf-python")


def ensure_reference_packages(extra=()):
    """apt-get install postfix dovecot-pop3d (and `extra`) when missing, with
    every service start forbidden (policy-rc.d exits 101) and Postfix left
    unconfigured."""
    missing = [p for p in ("postfix", "dovecot-pop3d", *extra) if not pkg_installed(p)]
    if not missing:
        return
    print(f"installing {' '.join(missing)} (services will not be started)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    saved = POLICY_RC.read_bytes() if POLICY_RC.exists() else None
    policy = b"#!/bin/sh\nexit 101\n"
    try:
        if saved is None or b"exit 101" not in saved:
            POLICY_RC.write_bytes(policy)
            POLICY_RC.chmod(0o755)
        subprocess.run(["debconf-set-selections"], env=env, check=True,
                       input=b"postfix postfix/main_mailer_type select No configuration\n")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        # Refuse if installing would remove anything (another MTA, say).
        sim = subprocess.run(cmd[:2] + ["-s"] + cmd[2:], env=env, capture_output=True,
                             text=True)
        if sim.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            sim = subprocess.run(cmd[:2] + ["-s"] + cmd[2:], env=env, capture_output=True,
                                 text=True, check=True)
        removals = [ln for ln in sim.stdout.splitlines() if ln.startswith("Remv ")]
        if removals:
            raise SystemExit("installing the reference would remove packages:\n"
                             + "\n".join(removals))
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if saved is None:
            POLICY_RC.unlink(missing_ok=True)
        elif POLICY_RC.read_bytes() != saved:
            POLICY_RC.write_bytes(saved)
    for name in missing:
        if not pkg_installed(name):
            raise SystemExit(f"{name} did not install")


def ensure_bench_account():
    """A system account without login or home that owns the reference
    Maildirs: virtual(8) will not deliver as root, Dovecot will not log in
    as root."""
    try:
        pw = pwd.getpwnam(BENCH_ACCOUNT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        BENCH_ACCOUNT], check=True)
        pw = pwd.getpwnam(BENCH_ACCOUNT)
    return pw.pw_uid, pw.pw_gid


class TrackedPostfix(postfix_lab.Instance):
    """A Postfix instance (scripts/postfix_lab.py) whose processes are
    remembered, so that a stop can end any left behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pids_seen = {}

    def start(self):
        super().start()
        self.remember()

    def pids(self):
        return [self.master_pid] if self.master_pid else []

    def remember(self):
        self.pids_seen.update(snapshot(self.pids()))

    def stop(self):
        if not self.started:
            return
        if self.master_pid is None:
            self.read_pid()  # a start that failed half-way
        self.remember()
        super().stop()
        kill_and_wait("postfix", self.pids_seen)


class Postfix(TrackedPostfix):
    """The reference Postfix: virtual(8) delivery into the benchmark's
    Maildirs, never relaying."""

    def __init__(self, base, port, vmail, uid, gid, procs_limit, params=None):
        super().__init__(base, port, services=postfix_lab.LOCAL_SERVICES, params={
            "myhostname": f"mail.{DOMAIN}",
            "mydomain": DOMAIN,
            "myorigin": "$mydomain",
            # The lab's mydestination without DOMAIN itself, which is
            # delivered by virtual(8) to Maildirs under virtual_mailbox_base.
            "mydestination": f"mail.{DOMAIN}, localhost.{DOMAIN}, localhost",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(vmail),
            "virtual_mailbox_maps": f"hash:{base}/etc/vmailbox",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            # Never relay anywhere from a benchmark.
            "default_transport": "error:no relaying from the benchmark instance",
            "relay_transport": "error:no relaying from the benchmark instance",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            # 20 sessions plus the idle connections, each an smtpd process.
            "default_process_limit": str(procs_limit),
            **(params or {}),
        })
        (self.conf / "vmailbox").write_text(
            "".join(f"{u}@{DOMAIN} {u}/Maildir/\n" for u in USERS))
        self.postmap(f"hash:{self.conf}/vmailbox")


class Dovecot:
    """A Dovecot instance with its own config file, base and state dirs."""

    def __init__(self, base, port, vmail, uid, gid, passwd_lines, procs_limit,
                 login_mode="security"):
        self.base = base
        self.port = port
        self.conf = base / "dovecot.conf"
        self.proc = None
        self.pids_seen = {}
        (base / "run").mkdir(parents=True)
        (base / "state").mkdir()
        passwd = base / "passwd"
        passwd.write_text(passwd_lines)
        passwd.chmod(0o644)  # read by the auth process (user dovecot)
        # Stock Dovecot ("security"): one pop3-login process per connection
        # and one pop3 process per session. "performance" is Dovecot's
        # documented high-performance login mode: a few login processes
        # serve many connections each, and pop3 processes are reused.
        login_tuning = pop3_tuning = ""
        if login_mode == "performance":
            login_tuning = f"  service_count = 0\n  process_min_avail = {os.cpu_count() or 1}\n"
            pop3_tuning = "service pop3 {\n  service_count = 100\n}\n"
        self.conf.write_text(f"""\
# Benchmark reference instance: POP3 only, loopback only, private dirs.
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
# Equal durability: fsync like our store does.
mail_fsync = always
first_valid_uid = {uid}
first_valid_gid = {gid}
default_process_limit = {procs_limit}
default_client_limit = {procs_limit * 4}
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={vmail}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  process_limit = {procs_limit}
  client_limit = {procs_limit}
{login_tuning}}}
{pop3_tuning}service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")

    def start(self):
        r = subprocess.run(["doveconf", "-c", str(self.conf), "-n"], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"doveconf rejects the config: {r.stderr}")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                     stdout=open(self.base / "dovecot.stdout", "wb"),
                                     stderr=subprocess.STDOUT)
        try:
            wait_tcp(self.port)
        except RuntimeError:
            log = (self.base / "dovecot.log")
            raise RuntimeError("dovecot did not listen: "
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def remember(self):
        self.pids_seen.update(snapshot(self.pids()))

    def stop(self):
        if self.proc is None:
            return
        self.remember()
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        kill_and_wait("dovecot", self.pids_seen)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_time(pid):
    """The process's start time (clock ticks since boot), or None if it is
    gone or a zombie. With the pid it names one process even if the pid is
    reused later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def snapshot(roots):
    """{pid: start time} of the trees rooted at `roots`."""
    out = {}
    for pid in process_tree(roots):
        t = start_time(pid)
        if t is not None:
            out[pid] = t
    return out


def kill_and_wait(name, seen):
    """After a clean stop: give the instance's processes (`seen`, pid ->
    start time) time to exit, then end those still there by PID, checking
    each is still the very process we saw (not a reused pid)."""
    def left():
        return [p for p, t in seen.items() if start_time(p) == t]

    end = time.monotonic() + 20
    while time.monotonic() < end and left():
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = left()
        if not pids:
            return
        print(f"{name}: ending leftover processes {pids} with {sig.name}", file=sys.stderr)
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        time.sleep(1)


def reference_version(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.stdout.strip() or "?"


def run_reference(work, a, passwd_lines):
    """Start Postfix + Dovecot on loopback, run the workloads, stop them."""
    uid, gid = ensure_bench_account()
    vmail = work / "vmail"
    vmail.mkdir()
    os.chown(vmail, uid, gid)
    limit = max(100, a.idle + a.sessions + 100)
    milters = Milters(work / "milters", a.signed) if a.postfix_milters else None
    try:
        params = milters.main_cf() if milters else None
        postfix = Postfix(work / "postfix", free_port(), vmail, uid, gid, limit, params)
        if milters:
            with open(postfix.conf / "master.cf", "a") as f:
                f.write(milters.master_cf())
            postfix.wrap = milters.wrap
    except BaseException:
        if milters:
            milters.stop()
        raise
    dovecot = Dovecot(work / "dovecot", free_port(), vmail, uid, gid, passwd_lines, limit,
                      a.dovecot_login)
    try:
        postfix.start()
        dovecot.start()
        print(f"[reference] Postfix {reference_version(['postconf', '-d', '-h', 'mail_version'])}"
              f", Dovecot {reference_version(['dovecot', '--version'])}"
              f" ({a.dovecot_login} login mode)", flush=True)
        for name, svc in (("postfix", postfix), ("dovecot", dovecot)):
            addrs = assert_loopback_only(name, svc.pids())
            print(f"[reference] {name} listens on "
                  + ", ".join(f"{h}:{p}" for h, p in addrs), flush=True)
        maildirs = {u: vmail / u / "Maildir" for u in USERS}
        r = run_workloads("postfix+dovecot", postfix.port, dovecot.port, maildirs,
                          {"smtp": postfix.pids() + (milters.pids() if milters else []),
                           "pop3": dovecot.pids()}, USERS, a)
        postfix.remember()
        dovecot.remember()
        if milters:
            check_postfix_results(maildirs["user1"])
        return r
    finally:
        try:
            dovecot.stop()
        finally:
            try:
                postfix.stop()
            finally:
                if milters:
                    milters.stop()
                report_log_problems(work)


def report_log_problems(work):
    """The instances' logs go away with the temp directory: show their
    warnings and errors first (expected noise left out)."""
    noise = ("lost connection after CONNECT", "Killed with signal 15",
             "not owned by postfix")
    for log in (work / "postfix/postfix.log", work / "dovecot/dovecot.log",
                work / "milters/opendkim.log", work / "milters/opendmarc.log"):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [ln for ln in lines
               if any(w in ln for w in ("warning:", "fatal:", "panic:", "error:",
                                         "Warning:", "Error:", "Fatal:", "Panic:"))
               and not any(n in ln for n in noise)]
        for ln in bad[:10]:
            print(f"{log.name}: {ln}", file=sys.stderr)
        if len(bad) > 10:
            print(f"{log.name}: ... {len(bad) - 10} more", file=sys.stderr)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

FIGURES = [
    # key, label, higher is better
    ("smtp_msgs_per_s", "SMTP delivery, msg/s on disk", True),
    ("smtp_latency_ms", "SMTP latency, ms/message (median)", False),
    ("smtp_latency_c_ms", "SMTP latency, compiled client (median)", False),
    ("pop3_retr_per_s", "POP3 RETR/s, one session", True),
    ("pop3_retr_dele_per_s", "POP3 RETR+DELE+QUIT, msg/s", True),
    ("pop3_pipelined_retr_per_s", "POP3 pipelined RETR/s", True),
    ("pop3_pipelined_retr_dele_per_s", "POP3 pipelined RETR+DELE+QUIT/s", True),
    ("pop3_pipelined_c_retr_per_s", "POP3 pipelined RETR/s, compiled", True),
    ("pop3_cpu_us_per_retr", "POP3 server CPU us per RETR", False),
    ("pop3_logins_per_s", "POP3 USER/PASS/QUIT sessions/s", True),
    ("smtp_kib_per_idle_conn", "SMTP PSS KiB per idle connection", False),
    ("pop3_kib_per_idle_conn", "POP3 PSS KiB per idle connection", False),
]


def print_comparison(ours, ref):
    print()
    print(f"{'figure':<36} {'ours':>10} {'reference':>10} {'ours/ref':>9}  better")
    for key, label, higher in FIGURES:
        o, r = ours.get(key), ref.get(key)
        if o is None or r is None:
            continue
        ratio = o / r if r else float("inf")
        if higher:
            win = "ours" if o > r else "reference"
        else:
            win = "ours" if o < r else "reference"
        print(f"{label:<36} {o:>10.2f} {r:>10.2f} {ratio:>9.3g}  {win}"
              f"{'' if higher else ' (lower is better)'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--latency-messages", type=int, default=500)
    ap.add_argument("--logins", type=int, default=300)
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--reference", action="store_true",
                    help="also run every workload against Postfix + Dovecot "
                         "(root; installs postfix and dovecot-pop3d when missing)")
    ap.add_argument("--dovecot-login", choices=("security", "performance"),
                    default="security",
                    help="Dovecot login mode: stock one process per connection "
                         "(security, default) or the high-performance mode")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat everything and report the median of each figure")
    ap.add_argument("--json", type=pathlib.Path, help="write the results here as JSON")
    ap.add_argument("--auth-checks", action="store_true",
                    help="only the SMTP delivery figure, with a DKIM-signed message from "
                         f"{SENDER_DOMAIN}; ours checks SPF, DKIM and DMARC on every message "
                         "(dnsd serves the records), Postfix checks nothing (no milters)")
    ap.add_argument("--postfix-milters", action="store_true",
                    help="with --auth-checks --reference: Postfix checks too, with OpenDKIM "
                         "(verify), OpenDMARC and policyd-spf (installed when missing)")
    a = ap.parse_args()
    a.signed = None
    if a.postfix_milters and not (a.auth_checks and a.reference):
        raise SystemExit("--postfix-milters needs --auth-checks and --reference")
    # A plain `kill` of the script still stops every daemon (finally blocks).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    if a.reference:
        if os.geteuid() != 0:
            raise SystemExit("--reference needs root (package install, postfix, dovecot)")
        ensure_reference_packages(MILTER_PACKAGES if a.postfix_milters else ())
    if not a.no_build:
        profile = ["--release"] if REL.name == "release" else []
        subprocess.run(["cargo", "build", *profile, "-j2", "-p", "smtpd", "-p", "pop3d",
                        "-p", "mailctl", "-p", "dnsd"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", *profile, "-j2", "-p", "smtp-proto",
                        "--example", "latency_client"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", *profile, "-j2", "-p", "pop3-proto",
                        "--example", "pipelined_client"], cwd=ROOT, check=True)
    if a.auth_checks:
        print(f"auth checks: ours runs SPF (HELO and MAIL FROM), DKIM (rsa-sha256) and DMARC "
              f"on every message from {SENDER_DOMAIN}, whose records dnsd serves on loopback "
              "(cached after the first message); "
              + ("Postfix checks with OpenDKIM (verify), OpenDMARC and policyd-spf, asking "
                 "another dnsd with the same zone" if a.postfix_milters else
                 "Postfix runs as in the plain benchmark, without checks (no milters)"
                 if a.reference else "no reference run"), flush=True)
    raise_fd_limit()
    rounds = []
    for i in range(a.rounds):
        if a.rounds > 1:
            print(f"== round {i + 1}/{a.rounds}", flush=True)
        rounds.append(run_round(a))
        if a.reference:
            print_comparison(rounds[-1]["ours"], rounds[-1]["reference"])
    results = {"rounds": rounds}
    for side in ("ours", "reference"):
        if side in rounds[0]:
            results[side] = {k: statistics.median(r[side][k] for r in rounds)
                             for k in rounds[0][side]}
    if a.reference and a.rounds > 1:
        print(f"\nmedians over {a.rounds} rounds:", end="")
        print_comparison(results["ours"], results["reference"])
    if a.json:
        results["args"] = {k: str(v) for k, v in vars(a).items()}
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def run_round(a):
    """Ours, then (with --reference) Postfix + Dovecot, each in a fresh
    directory removed afterwards."""
    # Traversable by the unprivileged Postfix and Dovecot processes.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-mail-"))
    tmp.chmod(0o755)
    out = {}
    try:
        (tmp / "ours").mkdir()
        if a.auth_checks:
            a.signed = SignedMessage(tmp / "signed")
            (tmp / "signed").chmod(0o755)  # smtp-source reads it, for Postfix too
        out["ours"] = run_ours(tmp / "ours", a)
        if a.reference:
            # The same SHA512-CRYPT hashes (same salt and rounds) for both.
            passwd_lines = "".join(
                ":".join(line.split(":")[:2]) + "\n"
                for line in (tmp / "ours/passwd").read_text().splitlines()
                if line and not line.startswith("#"))
            (tmp / "reference").mkdir(mode=0o755)
            out["reference"] = run_reference(tmp / "reference", a, passwd_lines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

if __name__ == "__main__":
    main()
