#!/usr/bin/env python3
"""Whole-daemon benchmarks for smtpd and pop3d on loopback.

Starts release builds of smtpd and pop3d on ephemeral loopback ports with a
fresh data directory, measures, and stops them by PID. Every load goes to
127.0.0.1 and is bounded in count.

  scripts/bench-mail.py [--messages 20000] [--sessions 20]

Measures:
  1. SMTP delivery with Postfix's smtp-source (4 KiB messages, 20 sessions),
     counting the messages that reached the Maildir, not only those accepted.
  2. Latency per message at one SMTP session (median, smtplib).
  3. POP3: one session draining the mailbox with LIST/RETR (RETR/s), then
     RETR+DELE+QUIT, and many short login sessions (USER/PASS/QUIT).
  4. Memory: PSS of each daemon with 500 idle connections, per connection.

smtp-source comes from Debian's postfix package; when it is not installed
the script extracts the package (apt-get download, dpkg -x) into
target/bench-tools without installing or starting Postfix.
"""
import argparse
import os
import pathlib
import poplib
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
REL = TARGET / "release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


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
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def count_files(d):
    return sum(1 for sub in ("new", "cur") for _ in (d / sub).iterdir())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--latency-messages", type=int, default=500)
    ap.add_argument("--logins", type=int, default=300)
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-j2", "-p", "smtpd", "-p", "pop3d",
                        "-p", "mailctl"], cwd=ROOT, check=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-mail-"))
    smtp, pop3 = free_port(), free_port()
    cfg = tmp / "mail.toml"
    cfg.write_text(f"""
[global]
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
[smtpd]
listen = ["127.0.0.1:{smtp}"]
submission_listen = []
max_connections = 2000
max_connections_per_client = 2000
[pop3d]
listen = ["127.0.0.1:{pop3}"]
max_connections = 2000
max_connections_per_client = 2000
""")
    for user, pw in (("user1", "pw1"), ("user2", "pw2")):
        subprocess.run([REL / "mailctl", "--passwd", tmp / "passwd", "--aliases", tmp / "aliases",
                        "--maildir-root", tmp / "mail", "user", "add", user, "--password-stdin"],
                       input=f"{pw}\n".encode(), check=True, capture_output=True)
    env = {**os.environ, "RUST_LOG": "warn"}
    procs = {
        "smtpd": subprocess.Popen([REL / "smtpd", "--config", cfg], env=env),
        "pop3d": subprocess.Popen([REL / "pop3d", "--config", cfg], env=env),
    }
    results = {}
    try:
        wait_tcp(smtp)
        wait_tcp(pop3)
        inbox = tmp / "mail/user1/Maildir"

        # 1. smtp-source throughput, counted on disk.
        cmd, extra_env = smtp_source()
        t0 = time.monotonic()
        subprocess.run(cmd + ["-c", "-l", "4096", "-m", str(a.messages), "-s", str(a.sessions),
                              "-t", "user1@csuvnetwork.com", f"127.0.0.1:{smtp}"],
                       env={**os.environ, **extra_env}, check=True, stdout=subprocess.DEVNULL)
        dt = time.monotonic() - t0
        stored = count_files(inbox)
        results["smtp_delivered"] = stored
        results["smtp_msgs_per_s"] = stored / dt
        print(f"SMTP: {stored}/{a.messages} messages in the Maildir in {dt:.2f}s = "
              f"{stored / dt:.0f} msg/s ({a.sessions} sessions, 4 KiB)")

        # 2. latency at one session.
        body = b"Subject: latency\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52
        s = smtplib.SMTP("127.0.0.1", smtp)
        s.ehlo("bench")
        lat = []
        for _ in range(a.latency_messages):
            t = time.perf_counter()
            s.sendmail("bench@example.net", ["user2@csuvnetwork.com"], body)
            lat.append(time.perf_counter() - t)
        s.quit()
        results["smtp_latency_ms"] = statistics.median(lat) * 1000
        print(f"SMTP latency, one session: median {results['smtp_latency_ms']:.2f} ms "
              f"per message (MAIL+RCPT+DATA, {a.latency_messages} messages)")

        # 3a. one POP3 session: LIST + RETR everything (no DELE).
        p = poplib.POP3("127.0.0.1", pop3)
        p.user("user1")
        p.pass_("pw1")
        n, _ = p.stat()
        t0 = time.monotonic()
        p.list()
        for i in range(1, n + 1):
            p.retr(i)
        dt = time.monotonic() - t0
        p.rset()
        p.quit()
        results["pop3_retr_per_s"] = n / dt
        print(f"POP3: one session, LIST + {n} RETR in {dt:.2f}s = {n / dt:.0f} RETR/s")

        # 3b. RETR + DELE of everything, then QUIT (expunge).
        p = poplib.POP3("127.0.0.1", pop3)
        p.user("user1")
        p.pass_("pw1")
        n, _ = p.stat()
        t0 = time.monotonic()
        for i in range(1, n + 1):
            p.retr(i)
            p.dele(i)
        p.quit()
        dt = time.monotonic() - t0
        left = count_files(inbox)
        results["pop3_retr_dele_per_s"] = n / dt
        print(f"POP3: RETR+DELE {n} then QUIT in {dt:.2f}s = {n / dt:.0f} msg/s "
              f"({left} left in the Maildir)")

        # 3c. short login sessions.
        t0 = time.monotonic()
        for _ in range(a.logins):
            p = poplib.POP3("127.0.0.1", pop3)
            p.user("user2")
            p.pass_("pw2")
            p.quit()
        dt = time.monotonic() - t0
        results["pop3_logins_per_s"] = a.logins / dt
        print(f"POP3: {a.logins} USER/PASS/QUIT sessions in {dt:.2f}s = "
              f"{a.logins / dt:.0f} sessions/s (SHA512-CRYPT accounts)")

        # 4. memory with idle connections.
        for name, port in (("smtpd", smtp), ("pop3d", pop3)):
            pid = procs[name].pid
            before = pss_kib(pid)
            socks = []
            for _ in range(a.idle):
                c = socket.create_connection(("127.0.0.1", port))
                c.recv(512)  # the greeting: the session exists
                socks.append(c)
            time.sleep(0.5)
            after = pss_kib(pid)
            per = (after - before) / a.idle
            results[f"{name}_kib_per_idle_conn"] = per
            print(f"{name}: PSS {before} KiB -> {after} KiB with {a.idle} idle connections "
                  f"= {per:.1f} KiB per connection")
            for c in socks:
                c.close()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
