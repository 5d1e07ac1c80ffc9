#!/usr/bin/env python3
"""TLS benchmarks on loopback: our smtpd (implicit TLS, port-465 style) and
pop3d (pop3s, port-995 style) against Postfix smtpd with
`smtpd_tls_wrappermode = yes` and Dovecot pop3s, all four serving THE SAME
certificate, once ECDSA P-256 and once RSA-2048.

  scripts/bench-tls.py [--seconds 5] [--rounds 2] [--concurrency 32]
                       [--idle 2000] [--ref-idle 500] [--messages 300]

Figures (see docs/benchmarks.md, section "TLS"):
  1. full TLS handshakes per second and server CPU per handshake;
  2. resumed handshakes per second (TLS 1.3 session tickets, the session
     saved after the greeting of the previous connection);
  3. POP3 RETR throughput inside TLS (pipelined, 100 KiB messages);
  4. PSS per idle TLS connection (handshake done, greeting read).

Each handshake point runs `--seconds` with `--concurrency` connections at
a time from crates/netkit/examples/tls_load.rs (one thread, rustls, no
verification: Python's ssl and openssl s_time spend more CPU per
handshake than our server, `--client python` keeps that client for
comparison); ours and the reference alternate (A B A B over `--rounds`)
and the medians are reported. Every server
listens on 127.0.0.1 only, every load is bounded in time and count, and
everything started is stopped by PID at the end (helpers and the
Postfix/Dovecot setup are bench-mail.py's). Needs root (Postfix and Dovecot
run as their own unprivileged users) and the release binaries
(`cargo build -j2 --release --bins`, done by scripts/bench-tls.sh).
"""
import argparse
import concurrent.futures
import hashlib
import importlib.util
import json
import multiprocessing
import os
import pathlib
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_mail", HERE / "bench-mail.py")
bm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bm)

DOMAIN = bm.DOMAIN
HOST = f"mail.{DOMAIN}"
USER, PASSWORD = "user1", "pw1"
TLS_LOAD = bm.REL / "examples" / "tls_load"


# --------------------------------------------------------------------------
# CPU of a service, including processes that ended during the measurement
# --------------------------------------------------------------------------

def tree_cpu_total_s(roots):
    """utime + stime + cutime + cstime over every live process of the
    service: a child that exited and was reaped (a Postfix smtpd at its
    max_use, a Dovecot login process at the end of its connection) has
    its CPU added to its parent's cutime/cstime, so nothing is lost."""
    total = 0
    for pid in bm.process_tree(roots):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Certificates: one local CA, an ECDSA P-256 and an RSA-2048 leaf
# --------------------------------------------------------------------------

def make_certs(work, mailctl):
    """ECDSA P-256 by `mailctl tls cert`; RSA-2048 by openssl, signed by the
    same CA. Returns {kind: (chain.pem, key.pem)}; the chain is leaf + CA."""
    ca = work / "ca"
    ecdsa, rsa = work / "ecdsa", work / "rsa"
    for d in (ca, ecdsa, rsa):
        d.mkdir(mode=0o755)
    subprocess.run([mailctl, "tls", "cert", "--name", HOST, "--ca-dir", ca,
                    "--out-dir", ecdsa], check=True, capture_output=True)
    key, csr, leaf = rsa / f"{HOST}.key", rsa / "leaf.csr", rsa / "leaf.pem"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=DNS:{HOST}"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca / "ca.pem",
                    "-CAkey", ca / "ca.key", "-CAcreateserial", "-days", "30",
                    "-copy_extensions", "copy", "-out", leaf],
                   check=True, capture_output=True)
    (rsa / f"{HOST}.pem").write_bytes(leaf.read_bytes() + (ca / "ca.pem").read_bytes())
    out = {}
    for kind, d in (("ecdsa", ecdsa), ("rsa", rsa)):
        chain, k = d / f"{HOST}.pem", d / f"{HOST}.key"
        # Read by Postfix's and Dovecot's processes; a throw-away benchmark key.
        chain.chmod(0o644)
        k.chmod(0o644)
        out[kind] = (chain, k)
    return out, ca / "ca.pem"


def leaf_sha256(chain):
    pem = chain.read_text()
    first = pem[:pem.index("-----END CERTIFICATE-----") + 25]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def check_served(name, port, ca_pem, chain):
    """Connect with full verification against the CA; the leaf served must
    be the one in `chain`. Returns 'TLSv1.3 TLS_AES_256_GCM_SHA384'."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            got = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
            if got != leaf_sha256(chain):
                raise RuntimeError(f"{name} serves another certificate")
            greeting = s.recv(512)
            return f"{s.version()} {s.cipher()[0]}", greeting.split(b"\r\n")[0].decode()


# --------------------------------------------------------------------------
# Handshake load: client processes, each a loop of connections
# --------------------------------------------------------------------------

def client_context():
    """What a load generator needs and no more: no chain verification (the
    TLS 1.3 CertificateVerify signature is still checked by OpenSSL), TLS
    1.2 and 1.3 allowed like every server here, OpenSSL's default groups
    and ciphers."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def one_connection(ctx, port, session):
    """Connect, shake hands, read the greeting line (the connection is
    ready for a command, and the TLS 1.3 tickets sent before it are
    processed), close. Returns (reused?, session for the next one)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s = ctx.wrap_socket(raw, server_hostname=HOST, session=session)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(512)
            if not chunk:
                raise ConnectionError("closed before the greeting")
            buf += chunk
        return s.session_reused, s.session
    finally:
        raw.close()


def handshake_worker(port, start_at, seconds, resume, max_count):
    ctx = client_context()
    session = None
    if resume:
        _, session = one_connection(ctx, port, None)  # untimed: the first ticket
    while time.monotonic() < start_at:
        time.sleep(0.001)
    t0 = resource.getrusage(resource.RUSAGE_SELF)
    end = start_at + seconds
    count = reused = errors = 0
    now = time.monotonic()
    while now < end and count < max_count:
        try:
            was_reused, new = one_connection(ctx, port, session if resume else None)
            count += 1
            reused += was_reused
            if resume and new is not None:
                session = new  # a client keeps the newest ticket
        except (OSError, ssl.SSLError):
            errors += 1
            if errors > 100:
                break
        now = time.monotonic()
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    return (count, reused, errors,
            (t1.ru_utime - t0.ru_utime) + (t1.ru_stime - t0.ru_stime), now)


def bench_handshakes_rust(port, roots, seconds, concurrency, resume, max_count, procs=1):
    """The compiled load generator (crates/netkit/examples/tls_load.rs) in
    `procs` processes of one thread each, `concurrency` connections at a
    time in all, rustls client without verification. Its CPU is read from
    the processes' rusage after they exit."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = tree_cpu_total_s(roots)
    per = max(1, concurrency // procs)
    running = [subprocess.Popen([str(TLS_LOAD), f"127.0.0.1:{port}", str(seconds), str(per),
                                 "resume" if resume else "full", str(max_count // procs)],
                                stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    outs = [p.communicate()[0] for p in running]
    cpu1 = tree_cpu_total_s(roots)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(p.returncode for p in running):
        raise RuntimeError(f"tls_load failed against port {port}")
    fs = [dict(kv.split("=", 1) for kv in out.split()) for out in outs]
    n = sum(int(f["handshakes"]) for f in fs)
    client = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    wall = max(float(f["seconds"]) for f in fs)
    return {
        "per_s": n / wall,
        "handshakes": n,
        "reused_pct": 100.0 * sum(int(f["resumed"]) for f in fs) / max(n, 1),
        "errors": sum(int(f["errors"]) for f in fs),
        "server_cpu_us": (cpu1 - cpu0) / max(n, 1) * 1e6,
        "client_cpu_us": client / max(n, 1) * 1e6,
        "cores_busy": (cpu1 - cpu0 + client) / wall,
        # Each client process's share of a core: near 1 would mean it limits.
        "client_util": client / wall / procs,
    }


def bench_handshakes(pool, port, roots, seconds, clients, resume, max_count):
    """Python's ssl (OpenSSL) in `clients` processes, one connection at a
    time each."""
    start_at = time.monotonic() + 0.5 + 0.1 * clients
    jobs = [pool.apply_async(handshake_worker, (port, start_at, seconds, resume, max_count))
            for _ in range(clients)]
    while time.monotonic() < start_at:
        time.sleep(0.0005)
    cpu0 = tree_cpu_total_s(roots)
    res = [j.get(timeout=seconds + 60) for j in jobs]
    wall = max(r[4] for r in res) - start_at
    cpu1 = tree_cpu_total_s(roots)
    n = sum(r[0] for r in res)
    return {
        "per_s": n / wall,
        "handshakes": n,
        "reused_pct": 100.0 * sum(r[1] for r in res) / max(n, 1),
        "errors": sum(r[2] for r in res),
        "server_cpu_us": (cpu1 - cpu0) / max(n, 1) * 1e6,
        "client_cpu_us": sum(r[3] for r in res) / max(n, 1) * 1e6,
        # Cores busy with this (server + client) out of the machine's.
        "cores_busy": (cpu1 - cpu0 + sum(r[3] for r in res)) / wall,
        "client_util": sum(r[3] for r in res) / wall / clients,
    }


# --------------------------------------------------------------------------
# POP3 RETR inside TLS and idle TLS connections
# --------------------------------------------------------------------------

class Pop3TlsPipe(bm.Pop3Pipe):
    """bench-mail.py's pipelining POP3 client over implicit TLS."""

    def __init__(self, port, user, password):  # pylint: disable=super-init-not-called
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock = client_context().wrap_socket(raw, server_hostname=HOST)
        self.buf = bytearray()
        self.pos = 0
        self.line()
        self.sock.sendall(f"USER {user}\r\nPASS {password}\r\n".encode())
        self.line()
        ok = self.line()
        if not ok.startswith(b"+OK"):
            raise SystemExit(f"POP3 login failed: {ok!r}")


def bench_retr(port, roots, seconds, max_passes):
    """Sessions that each RETR the whole mailbox pipelined (window 64) and
    RSET, until `seconds` have passed; octets per second of message data
    received, timed from the first RETR to the last message of each pass
    (logins outside the clock), with the server's CPU per MiB."""
    octets = 0
    busy = 0.0
    cpu = 0.0
    passes = 0
    t_end = time.monotonic() + seconds
    while passes < max_passes and (passes == 0 or time.monotonic() < t_end):
        p = Pop3TlsPipe(port, USER, PASSWORD)
        n = p.stat()
        c0 = tree_cpu_total_s(roots)
        t0 = time.monotonic()
        octets += p.run([(b"RETR %d\r\n" % i, True) for i in range(1, n + 1)])
        busy += time.monotonic() - t0
        cpu += tree_cpu_total_s(roots) - c0
        p.run([(b"RSET\r\n", False)])
        p.quit()
        passes += 1
    mib = octets / (1 << 20)
    return {"mib_per_s": mib / busy, "server_cpu_ms_per_mib": cpu / mib * 1e3,
            "passes": passes, "messages": n}


def open_idle(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    s = client_context().wrap_socket(raw, server_hostname=HOST)
    s.recv(512)  # the greeting: handshake done, session created
    return s


def bench_idle(port, roots, count):
    """PSS of the whole service before and after `count` idle TLS
    connections (handshake completed, greeting read), per connection."""
    before, nb = bm.tree_pss_kib(roots)
    socks = []
    t0 = time.monotonic()
    try:
        # Many at a time: Postfix and Dovecot start a process for each.
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            socks = list(ex.map(lambda _: open_idle(port), range(count)))
        opened = time.monotonic() - t0
        time.sleep(1.0)
        after, na = bm.tree_pss_kib(roots)
    finally:
        for s in socks:
            s.close()
    return {"kib_per_conn": (after - before) / count, "pss_before_kib": before,
            "pss_after_kib": after, "processes": f"{nb}->{na}", "open_s": opened}


# --------------------------------------------------------------------------
# The systems
# --------------------------------------------------------------------------

def write_mailbox(maildir, messages, owner=None):
    """`messages` files of 100 KiB (LF on disk, as both stores keep them),
    the same bytes for both systems."""
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    line = b"x" * 76 + b"\n"
    for i in range(messages):
        head = (f"From: bench@example.net\nTo: {USER}@{DOMAIN}\n"
                f"Subject: tls bench {i}\nMessage-ID: <{i}@bench>\n\n").encode()
        body = head + line * ((100 * 1024 - len(head)) // len(line))
        lf = body.count(b"\n")
        name = f"1700000000.M{i}P1.bench,S={len(body)},W={len(body) + lf}"
        (maildir / "new" / name).write_bytes(body)
    if owner:
        for dirpath, dirnames, filenames in os.walk(maildir.parent):
            for n in dirnames + filenames:
                os.chown(os.path.join(dirpath, n), *owner)
        os.chown(maildir.parent, *owner)


class Ours:
    def __init__(self, work, chain, key, a):
        self.work = work
        self.smtp, self.pop3 = bm.free_port(), bm.free_port()
        self.smtps, self.pop3s = bm.free_port(), bm.free_port()
        self.procs = []
        work.mkdir()
        (work / "mail.toml").write_text(f"""
[global]
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
[tls]
certificates = [{{ cert = "{chain}", key = "{key}" }}]
[smtpd]
listen = ["127.0.0.1:{self.smtp}"]
submission_listen = []
submissions_listen = ["127.0.0.1:{self.smtps}"]
queue_directory = "queue"
max_connections = {a.idle + 2000}
max_connections_per_client = {a.idle + 2000}
[pop3d]
listen = ["127.0.0.1:{self.pop3}"]
pop3s_listen = ["127.0.0.1:{self.pop3s}"]
max_connections = {a.idle + 2000}
max_connections_per_client = {a.idle + 2000}
""")
        subprocess.run([bm.REL / "mailctl", "--passwd", work / "passwd", "--aliases",
                        work / "aliases", "--maildir-root", work / "mail", "user", "add",
                        USER, "--password-stdin"],
                       input=f"{PASSWORD}\n".encode(), check=True, capture_output=True)
        write_mailbox(work / "mail" / USER / "Maildir", a.messages)

    def start(self):
        env = {**os.environ, "RUST_LOG": "warn"}
        cfg = self.work / "mail.toml"
        self.procs.append(subprocess.Popen([bm.REL / "smtpd", "--config", cfg], env=env))
        self.procs.append(subprocess.Popen([bm.REL / "pop3d", "--config", cfg], env=env))
        bm.wait_tcp(self.smtps)
        bm.wait_tcp(self.pop3s)

    def roots(self):
        return {"smtp": [self.procs[0].pid], "pop3": [self.procs[1].pid]}

    def stop(self):
        bm.stop_popen(self.procs)


class Reference:
    """Postfix (smtpd, wrapper mode) and Dovecot (pop3s) from bench-mail.py,
    plus what TLS needs: the certificate, TLS 1.2 and 1.3 only (as ours),
    and Postfix's tlsmgr (in the stock master.cf; it holds the PRNG seed and
    the session-ticket keys that Postfix's smtpd processes share). Nothing
    else is tuned."""

    def __init__(self, work, chain, key, a, passwd_lines):
        uid, gid = bm.ensure_bench_account()
        work.mkdir(mode=0o755)
        vmail = work / "vmail"
        vmail.mkdir()
        os.chown(vmail, uid, gid)
        write_mailbox(vmail / USER / "Maildir", a.messages, owner=(uid, gid))
        limit = max(100, a.ref_idle + 200)
        self.postfix = bm.Postfix(work / "postfix", bm.free_port(), vmail, uid, gid, limit)
        self.smtps = bm.free_port()
        pf = self.postfix
        with open(pf.conf / "main.cf", "a") as f:
            f.write(f"""\
# TLS for the benchmark: the same certificate as the others; TLS 1.2+ as ours.
smtpd_tls_chain_files = {key}, {chain}
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
""")
        mc = (pf.conf / "master.cf").read_text()
        mc = mc.replace(
            f"127.0.0.1:{pf.port} inet n - n - - smtpd\n",
            f"127.0.0.1:{pf.port} inet n - n - - smtpd\n"
            f"127.0.0.1:{self.smtps} inet n - n - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n"
            "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
        (pf.conf / "master.cf").write_text(mc)
        self.dovecot = bm.Dovecot(work / "dovecot", bm.free_port(), vmail, uid, gid,
                                  passwd_lines, limit, a.dovecot_login)
        self.pop3s = bm.free_port()
        conf = self.dovecot.conf.read_text()
        conf = conf.replace("ssl = no\n", f"""\
ssl = yes
ssl_cert = <{chain}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
""")
        conf = conf.replace("  inet_listener pop3s {\n    port = 0\n  }",
                            "  inet_listener pop3s {\n    address = 127.0.0.1\n"
                            f"    port = {self.pop3s}\n    ssl = yes\n  }}")
        self.dovecot.conf.write_text(conf)
        self.work = work

    def start(self):
        self.postfix.start()
        self.dovecot.start()
        bm.wait_tcp(self.smtps)
        bm.wait_tcp(self.pop3s)
        self.postfix.remember()
        self.dovecot.remember()

    def roots(self):
        return {"smtp": self.postfix.pids(), "pop3": self.dovecot.pids()}

    def stop(self):
        try:
            for svc in (self.postfix, self.dovecot):
                try:
                    svc.remember()
                except Exception:  # noqa: BLE001 - stopping must go on
                    pass
            self.dovecot.stop()
        finally:
            self.postfix.stop()
            bm.report_log_problems(self.work)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def log(msg):
    print(msg, flush=True)


def with_systems(kind, tag, chain, key, ca_pem, work, a, passwd_lines, body):
    """Start ours and the reference with the certificate (fresh
    directories), check what they serve and where they listen, run
    `body(systems)`, stop them all."""
    ours = Ours(work / f"ours-{kind}-{tag}", chain, key, a)
    ref = Reference(work / f"ref-{kind}-{tag}", chain, key, a, passwd_lines)
    try:
        ours.start()
        ref.start()
        systems = {
            "ours": {"smtps": (ours.smtps, ours.roots()["smtp"]),
                     "pop3s": (ours.pop3s, ours.roots()["pop3"])},
            "ref": {"smtps": (ref.smtps, ref.roots()["smtp"]),
                    "pop3s": (ref.pop3s, ref.roots()["pop3"])},
        }
        for side, svcs in systems.items():
            for svc, (port, roots) in svcs.items():
                addrs = bm.assert_loopback_only(f"{side} {svc}", roots)
                proto, greeting = check_served(f"{side} {svc}", port, ca_pem, chain)
                log(f"[{kind}] {side} {svc} on 127.0.0.1:{port} ({len(addrs)} listening "
                    f"sockets, all loopback): {proto}, same certificate; {greeting!r}")
                if a.client == "rust":
                    # What the load generator negotiates (group, suite).
                    r = subprocess.run([str(TLS_LOAD), f"127.0.0.1:{port}", "0.001", "1",
                                        "full"], capture_output=True, text=True,
                                       env={**os.environ, "TLS_LOAD_DEBUG": "1"})
                    log(f"[{kind}] {side} {svc} with tls_load: "
                        + (r.stderr.splitlines() or ["?"])[0])
        body(systems)
    finally:
        try:
            ref.stop()
        finally:
            ours.stop()


def run_kind(kind, chain, key, ca_pem, work, a, passwd_lines, pool, results):
    r = results.setdefault(kind, {})

    def record(fig, side, value):
        r.setdefault(fig, {}).setdefault(side, []).append(value)

    def idle(systems):
        for svc in ("smtps", "pop3s"):
            for side in ("ours", "ref"):
                port, roots = systems[side][svc]
                count = a.idle if side == "ours" else a.ref_idle
                m = bench_idle(port, roots, count)
                record(f"idle_{svc}", side, m)
                log(f"[{kind}] {side} {svc}: {count} idle TLS connections (opened in "
                    f"{m['open_s']:.1f}s): PSS {m['pss_before_kib']} -> "
                    f"{m['pss_after_kib']} KiB, processes {m['processes']}: "
                    f"{m['kib_per_conn']:.1f} KiB per connection")

    # Memory on fresh processes (see bench-mail.py), in instances of its
    # own: Postfix keeps the idle connections' smtpd processes for
    # max_idle (100 s), and their exit would be counted as CPU of the
    # handshakes that follow.
    if kind == a.kinds[0] and a.idle:
        with_systems(kind, "idle", chain, key, ca_pem, work, a, passwd_lines, idle)
    with_systems(kind, "load", chain, key, ca_pem, work, a, passwd_lines,
                 lambda systems: load(kind, systems, a, pool, record))


def load(kind, systems, a, pool, record):
    """The handshake points (A B A B over the rounds), then RETR."""
    for rnd in range(a.rounds):
        for mode in ("full", "resumed"):
            for svc in ("smtps", "pop3s"):
                for side in ("ours", "ref"):  # A B A B
                    port, roots = systems[side][svc]
                    if a.client == "rust":
                        h = bench_handshakes_rust(port, roots, a.seconds, a.concurrency,
                                                  mode == "resumed", a.max_handshakes,
                                                  a.client_procs)
                    else:
                        h = bench_handshakes(pool, port, roots, a.seconds, a.clients,
                                             mode == "resumed", a.max_handshakes)
                    record(f"{mode}_{svc}", side, h)
                    log(f"[{kind} r{rnd + 1}] {side} {svc} {mode}: {h['per_s']:.0f}/s "
                        f"({h['handshakes']} in {a.seconds}s, {h['reused_pct']:.0f}% "
                        f"resumed, {h['errors']} errors), server CPU "
                        f"{h['server_cpu_us']:.0f} us, client CPU "
                        f"{h['client_cpu_us']:.0f} us per handshake, "
                        f"{h['cores_busy']:.2f} cores busy (client {h['client_util']:.2f})")
    if kind == a.kinds[0] and a.messages:
        def retr(side, seconds, passes):
            # A server that stops sending mid-pipeline is a finding, not a
            # reason to lose the other figures: note it and go on.
            port, roots = systems[side]["pop3s"]
            try:
                return bench_retr(port, roots, seconds, passes)
            except (OSError, ssl.SSLError) as e:
                log(f"[{kind}] {side} pop3s RETR STALLED: {e!r} (no data for 20 s)")
                return {"stalled": 1}

        for side in ("ours", "ref"):  # warm-up: page cache, Dovecot's index
            retr(side, 0, 1)
        for rnd in range(a.rounds):
            for side in ("ours", "ref"):
                t = retr(side, a.seconds, a.max_passes)
                record("retr_pop3s", side, t)
                if "stalled" in t:
                    continue
                log(f"[{kind} r{rnd + 1}] {side} pop3s RETR: {t['mib_per_s']:.0f} MiB/s "
                    f"({t['passes']} x {t['messages']} x 100 KiB), server CPU "
                    f"{t['server_cpu_ms_per_mib']:.2f} ms per MiB")


def med(values, key):
    got = [v[key] for v in values if key in v]
    return statistics.median(got) if got else float("nan")


def summary(results, a):
    rows = []
    names = {"smtps": "465 smtpd", "pop3s": "995 pop3"}
    refname = {"smtps": "Postfix", "pop3s": "Dovecot"}
    for kind in a.kinds:
        r = results.get(kind, {})
        for mode in ("full", "resumed"):
            for svc in ("smtps", "pop3s"):
                f = r.get(f"{mode}_{svc}")
                if not f:
                    continue
                o, x = f["ours"], f["ref"]
                rows.append((f"{kind} {mode} handshakes/s, {names[svc]} vs {refname[svc]}",
                             med(o, "per_s"), med(x, "per_s"), "higher",
                             f"resumed {med(o, 'reused_pct'):.0f}% / {med(x, 'reused_pct'):.0f}%"))
                rows.append((f"{kind} {mode} server CPU us/handshake, {names[svc]}",
                             med(o, "server_cpu_us"), med(x, "server_cpu_us"), "lower",
                             f"client CPU {med(o, 'client_cpu_us'):.0f} / "
                             f"{med(x, 'client_cpu_us'):.0f} us; cores busy "
                             f"{med(o, 'cores_busy'):.2f} / {med(x, 'cores_busy'):.2f} "
                             f"(client {med(o, 'client_util'):.2f} / "
                             f"{med(x, 'client_util'):.2f})"))
        f = r.get("retr_pop3s")
        if f:
            stalls = [sum("stalled" in v for v in f[side]) for side in ("ours", "ref")]
            rows.append(("POP3 RETR in TLS, MiB/s, pop3s vs Dovecot",
                         med(f["ours"], "mib_per_s"), med(f["ref"], "mib_per_s"), "higher",
                         f"stalled points {stalls[0]} / {stalls[1]}" if any(stalls) else ""))
            rows.append(("POP3 RETR in TLS, server CPU ms/MiB",
                         med(f["ours"], "server_cpu_ms_per_mib"),
                         med(f["ref"], "server_cpu_ms_per_mib"), "lower", ""))
        for svc in ("smtps", "pop3s"):
            f = r.get(f"idle_{svc}")
            if f:
                rows.append((f"PSS KiB per idle TLS connection, {names[svc]} vs {refname[svc]}",
                             med(f["ours"], "kib_per_conn"), med(f["ref"], "kib_per_conn"),
                             "lower", f"{a.idle} / {a.ref_idle} connections"))
    print()
    print("| figure | ours | reference | ours/ref | better | notes |")
    print("|---|---:|---:|---:|---|---|")
    for label, o, x, better, note in rows:
        ratio = o / x if x else float("inf")
        print(f"| {label} | {o:,.1f} | {x:,.1f} | {ratio:.3g} | {better} | {note} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each point")
    ap.add_argument("--rounds", type=int, default=2, help="A B alternations per figure")
    ap.add_argument("--client", choices=("rust", "python"), default="rust",
                    help="handshake client: the compiled rustls load generator "
                         "(crates/netkit/examples/tls_load.rs) or Python ssl processes")
    ap.add_argument("--concurrency", type=int, default=32,
                    help="connections at a time of the rust client")
    ap.add_argument("--client-procs", type=int, default=2,
                    help="tls_load processes sharing --concurrency")
    ap.add_argument("--clients", type=int, default=4, help="Python client processes")
    ap.add_argument("--idle", type=int, default=2000, help="idle TLS connections (ours)")
    ap.add_argument("--ref-idle", type=int, default=500,
                    help="idle TLS connections (Postfix, Dovecot: a process each)")
    ap.add_argument("--messages", type=int, default=300, help="100 KiB messages")
    ap.add_argument("--max-handshakes", type=int, default=200_000,
                    help="bound per client process and point")
    ap.add_argument("--max-passes", type=int, default=50)
    ap.add_argument("--kinds", nargs="+", default=["ecdsa", "rsa"],
                    choices=["ecdsa", "rsa"])
    ap.add_argument("--dovecot-login", choices=("security", "performance"),
                    default="security")
    ap.add_argument("--json", type=pathlib.Path)
    a = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if os.geteuid() != 0:
        raise SystemExit("needs root: Postfix and Dovecot are started as in bench-mail.py")
    for exe in ("smtpd", "pop3d", "mailctl") + (("examples/tls_load",) if a.client == "rust" else ()):
        if not (bm.REL / exe).exists():
            raise SystemExit(f"{bm.REL / exe} missing: run scripts/bench-tls.sh (it builds)")
    bm.ensure_reference_packages()
    bm.raise_fd_limit()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-tls-"))
    work.chmod(0o755)
    results = {}
    t_start = time.monotonic()
    pool = (multiprocessing.get_context("fork").Pool(a.clients) if a.client == "python"
            else None)
    try:
        certs, ca_pem = make_certs(work, bm.REL / "mailctl")
        # Dovecot gets the same SHA512-CRYPT hash as ours.
        passwd_lines = None
        for kind in a.kinds:
            chain, key = certs[kind]
            if passwd_lines is None:
                probe = Ours(work / "passwd-probe", chain, key, argparse.Namespace(
                    idle=0, ref_idle=0, messages=0))
                passwd_lines = "".join(
                    ":".join(line.split(":")[:2]) + "\n"
                    for line in (probe.work / "passwd").read_text().splitlines()
                    if line and not line.startswith("#"))
            run_kind(kind, chain, key, ca_pem, work, a, passwd_lines, pool, results)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        shutil.rmtree(work, ignore_errors=True)
    log(f"\nPostfix {bm.reference_version(['postconf', '-d', '-h', 'mail_version'])}, "
        f"Dovecot {bm.reference_version(['dovecot', '--version'])} "
        f"({a.dovecot_login} login mode), {ssl.OPENSSL_VERSION} client, "
        f"{os.cpu_count()} cores, handshake client: "
        + (f"tls_load x {a.client_procs}, {a.concurrency} connections at a time"
            if a.client == "rust"
           else f"{a.clients} Python processes")
        + f", {a.seconds:g} s per point, "
        f"{a.rounds} rounds (medians), total {time.monotonic() - t_start:.0f} s")
    summary(results, a)
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                      "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
