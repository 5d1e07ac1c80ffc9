#!/usr/bin/env python3
"""Relay benchmark on loopback: our smtpd's outbound queue against Postfix,
both relaying the same load to the same Postfix `smtp-sink`.

N messages of 4 KiB for a remote domain are sent by C concurrent client
processes (one SMTP session each, relaying as clients in `relay_networks` /
`mynetworks`) to the system under test, which queues each durably (fsync)
before its 250 and relays it to `smtp-sink` through `relayhost =
[127.0.0.1]:PORT`. The sink appends every message to one dump file (`-D`),
which this script tails; a message reached the sink when its tag appears
there (measured to within the 2 ms polling interval).

Reported per system: messages/s (first submission to the last message at
the sink) and the median and 90th percentile end-to-end latency (the
client's 250 to the message at the sink), then the ratios ours / Postfix.
Every server listens on 127.0.0.1 only; every process started is stopped by
PID.

  scripts/bench-relay.py [--messages 3000] [--clients 20] [--skip-reference]
                         [--outbound 'smtp_connection_cache_on_demand = false']
"""
import argparse
import importlib.util
import multiprocessing
import os
import pathlib
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_mail", ROOT / "scripts/bench-mail.py")
bm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bm)

REMOTE = "example.net"
BODY_SIZE = 4096


# --------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------

class Sink:
    """Postfix's smtp-sink on 127.0.0.1, appending every message to one
    dump file (`-D`). A file per message (`-d`) would put the sink's own
    inode allocation on the clock and in the same file system as the
    queues under test; one append-only file costs the sink almost nothing.
    Arrival times come from tailing that file (see `poll`)."""

    TAG = b"X-Bench: "

    def __init__(self, work):
        self.dir = work / "sink"
        self.dir.mkdir()
        pf = pwd.getpwnam("postfix")
        os.chown(self.dir, pf.pw_uid, pf.pw_gid)
        self.dump = self.dir / "dump"
        self.port = bm.free_port()
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        # -u: smtp-sink refuses to run as root; -D: one multi-message file
        # (a template without % conversions names one file).
        self.proc = subprocess.Popen(
            [exe, "-u", "postfix", "-D", str(self.dump), "-m", "400",
             f"127.0.0.1:{self.port}", "1024"])
        bm.wait_tcp(self.port)
        self.file = None
        self.tail = b""
        self.seen = {}
        # Tails the dump file all the time, while clients submit too.
        self.running = True
        self.poller = threading.Thread(target=self._poll_loop, daemon=True)
        self.poller.start()

    def _poll_loop(self):
        while self.running:
            self.poll()
            time.sleep(0.002)

    def poll(self):
        """Reads what the sink appended since the last poll and stamps each
        new `X-Bench:` tag with the time of this poll, so an arrival time
        is late by at most the polling interval (2 ms)."""
        if self.file is None:
            try:
                self.file = open(self.dump, "rb")
            except FileNotFoundError:
                return
        new = self.file.read()
        if not new:
            return
        now = time.time()
        data = self.tail + new
        # A tag cut at the end of this read is completed by the next one.
        cut = data.rfind(b"\n") + 1
        data, self.tail = data[:cut], data[cut:]
        i = data.find(self.TAG)
        while i >= 0:
            end = data.find(b"\n", i)
            label, _, n = data[i + len(self.TAG):end].strip().decode().rpartition("-")
            try:
                self.seen.setdefault(label, {}).setdefault(int(n), now)
            except ValueError:
                pass
            i = data.find(self.TAG, end)

    def arrivals(self, label):
        """{message number: arrival time} of the messages of run `label`."""
        return dict(self.seen.get(label, {}))

    def count(self, label):
        return len(self.arrivals(label))

    def stop(self):
        self.running = False
        self.poller.join()
        if self.file is not None:
            self.file.close()
        bm.stop_popen([self.proc])


# --------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------

def client(args):
    """One client process: its share of the messages over one session;
    returns [(message number, time of the 250)].

    A plain socket with RFC 2920 pipelining (MAIL, RCPT and DATA in one
    write, then the content) rather than smtplib: the load generator must
    cost little next to the servers measured, on a 2-core machine the three
    share. Both servers offer PIPELINING."""
    port, label, numbers = args
    pad = b"x" * 76 + b"\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")

    def reply(want):
        while True:
            line = f.readline()
            if not line.startswith(want.encode()):
                raise RuntimeError(f"expected {want}, got {line!r}")
            if line[3:4] != b"-":
                return

    reply("220")
    s.sendall(b"EHLO bench.client\r\n")
    reply("250")
    envelope = f"MAIL FROM:<bench@client.test>\r\nRCPT TO:<sink@{REMOTE}>\r\nDATA\r\n".encode()
    done = []
    for n in numbers:
        head = (f"From: bench@client.test\r\nTo: sink@{REMOTE}\r\n"
                f"Subject: relay {n}\r\nX-Bench: {label}-{n}\r\n\r\n").encode()
        body = head + pad * ((BODY_SIZE - len(head)) // len(pad))
        s.sendall(envelope)
        reply("250")
        reply("250")
        reply("354")
        # No line starts with a dot: nothing to stuff (RFC 5321 4.5.2).
        s.sendall(body + b".\r\n")
        reply("250")
        done.append((n, time.time()))
    s.sendall(b"QUIT\r\n")
    reply("221")
    s.close()
    return done


def run_load(port, sink, label, messages, clients, roots=(), stall=60.0):
    """Sends `messages` through the system on `port` (whose processes are
    the trees under `roots`), waits until all are at the sink; returns the
    figures."""
    cpu0 = bm.tree_cpu_s(roots)
    shares = [(port, label, list(range(i, messages, clients))) for i in range(clients)]
    t0 = time.time()
    with multiprocessing.Pool(clients) as pool:
        sent = dict(x for part in pool.map(client, shares) for x in part)
    submitted = time.time()
    last, last_change = -1, time.monotonic()
    while True:
        got = sink.count(label)
        if got >= messages:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > stall:
            raise RuntimeError(f"{label}: only {got} of {messages} reached the sink")
        time.sleep(0.05)
    arrived = sink.arrivals(label)
    lat = sorted(arrived[n] - sent[n] for n in sent if n in arrived)
    end = max(arrived.values())
    cpu = bm.tree_cpu_s(roots) - cpu0
    return {
        "cpu_ms_per_msg": cpu * 1000 / messages,
        "messages": messages,
        "rate": messages / (end - t0),
        "accept_rate": messages / (submitted - t0),
        "median_ms": statistics.median(lat) * 1000,
        "p90_ms": lat[int(len(lat) * 0.9)] * 1000,
    }


def report(label, r):
    print(f"{label:8} {r['rate']:8.0f} msg/s relayed  ({r['accept_rate']:.0f}/s accepted)  "
          f"latency median {r['median_ms']:7.1f} ms  p90 {r['p90_ms']:7.1f} ms  "
          f"CPU {r['cpu_ms_per_msg']:.2f} ms/msg", flush=True)


# --------------------------------------------------------------------------
# The systems
# --------------------------------------------------------------------------

def run_ours(work, sink, a):
    port = bm.free_port()
    cfg = work / "mail.toml"
    cfg.write_text(f"""
[global]
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
[smtpd]
listen = ["127.0.0.1:{port}"]
submission_listen = []
queue_directory = "queue"
relayhost = "[127.0.0.1]:{sink.port}"
max_connections = 4000
max_connections_per_client = 4000
[resolver]
name_servers = ["127.0.0.1:9"]
[outbound]
{chr(10).join(a.outbound)}
""")
    (work / "passwd").write_text("")
    (work / "aliases").write_text("")
    env = {**os.environ, "RUST_LOG": "warn"}
    proc = subprocess.Popen([bm.REL / "smtpd", "--config", cfg], env=env)
    try:
        bm.wait_tcp(port)
        bm.assert_loopback_only("our smtpd", [proc.pid])
        run_load(port, sink, "ours-warm", 200, a.clients)
        return run_load(port, sink, "ours", a.messages, a.clients, [proc.pid])
    finally:
        bm.stop_popen([proc])


class RelayPostfix(bm.TrackedPostfix):
    """Postfix relaying everything to the sink (relayhost), loopback only,
    its own directories; queue files are fsynced before 250, as always."""

    def __init__(self, base, port, sink_port):
        super().__init__(base, port, services=bm.postfix_lab.RELAY_SERVICES, params={
            "myhostname": "mail.csuvnetwork.com",
            "mydestination": "",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
        })


def run_reference(work, sink, a):
    pf = RelayPostfix(work / "postfix", bm.free_port(), sink.port)
    try:
        pf.start()
        bm.assert_loopback_only("postfix", pf.pids())
        run_load(pf.port, sink, "postfix-warm", 200, a.clients)
        pf.remember()
        r = run_load(pf.port, sink, "postfix", a.messages, a.clients, pf.pids())
        pf.remember()
        return r
    finally:
        pf.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--outbound", action="append", default=[], metavar="'KEY = VALUE'",
                    help="a line for our [outbound] section (repeatable)")
    a = ap.parse_args()
    if not (bm.REL / "smtpd").exists():
        sys.exit(f"{bm.REL / 'smtpd'} missing: run scripts/bench-relay.sh")
    if not a.skip_reference:
        bm.ensure_reference_packages()
    bm.raise_fd_limit()
    print(f"relay benchmark: {a.messages} messages of {BODY_SIZE} bytes, {a.clients} clients, "
          f"to smtp-sink on loopback", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        work = pathlib.Path(tmp)
        os.chmod(work, 0o755)
        sink = Sink(work)
        try:
            (work / "ours").mkdir()
            ours = run_ours(work / "ours", sink, a)
            report("ours", ours)
            if a.skip_reference:
                return
            ref = run_reference(work, sink, a)
            report("postfix", ref)
        finally:
            sink.stop()
    print(f"ratio ours/postfix: rate {ours['rate'] / ref['rate']:.2f}x, "
          f"median latency {ours['median_ms'] / ref['median_ms']:.2f}x "
          f"(Postfix {bm.reference_version(['postconf', '-d', '-h', 'mail_version'])})")


if __name__ == "__main__":
    main()
