"""Fair connection admission under a flood of slow connections (issue 11).

Slow clients from 127.0.0.2, 127.0.0.3, ... fill smtpd and pop3d and
trickle one octet every few seconds; a client from a fresh address must
still send and retrieve a message within a second, because a full server
evicts a not yet authenticated connection of the address that holds the
most. Loopback only, bounded in count and time.

Sizes come from the environment so that the large runs of the issue can be
made by hand (not in CI), e.g.
ADMISSION_CONNS=10000 ADMISSION_ADDRS=100 ADMISSION_MAX=5000 pytest tests/test_admission.py
"""
import os
import poplib
import re
import resource
import selectors
import socket
import threading
import time

import pytest

from conftest import bin_path, wait_tcp
from test_mail import PASSWORDS, Lab

CONNS = int(os.environ.get("ADMISSION_CONNS", "2000"))
ADDRS = int(os.environ.get("ADMISSION_ADDRS", "20"))
MAX = int(os.environ.get("ADMISSION_MAX", "500"))
# Per address: enough for an even share of the flood to get in at first.
PER_CLIENT = max(CONNS // ADDRS, 2)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < need:
        pytest.skip(f"RLIMIT_NOFILE {soft} is below the {need} descriptors this test needs")


class Flood:
    """Slow connections from `addrs` to a port, opened round-robin over the
    addresses; each trickles `payload` one octet every `every` seconds and
    keeps what the server sends it."""

    def __init__(self, port: int, addrs, count: int, payload: bytes, every: float = 5.0):
        self.port, self.addrs, self.count = port, list(addrs), count
        self.payload, self.every = payload, every
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # socket -> [received bytes, octets sent]
        self.done = []  # what closed connections had received
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, batch: int = 250) -> float:
        """Connect all; returns how long it took. Connecting in batches
        keeps the listen backlog from overflowing (a dropped SYN costs a
        1 s retransmission)."""
        t0 = time.monotonic()
        for i in range(self.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((self.addrs[i % len(self.addrs)], 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            with self.lock:
                self.conns[s] = [bytearray(), 0]
                self.sel.register(s, selectors.EVENT_READ)
            if i % batch == batch - 1:
                self.poll(0.02)
        return time.monotonic() - t0

    def poll(self, timeout: float) -> None:
        with self.lock:
            events = self.sel.select(timeout)
            for key, _ in events:
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.conns[s][0] += data
                else:
                    self.sel.unregister(s)
                    self.done.append(bytes(self.conns.pop(s)[0]))
                    s.close()

    def trickle(self) -> None:
        with self.lock:
            for s, st in self.conns.items():
                try:
                    s.send(self.payload[st[1] % len(self.payload):][:1])
                    st[1] += 1
                except OSError:
                    pass

    def run(self) -> None:
        next_byte = time.monotonic() + self.every
        while not self.stop.is_set():
            self.poll(0.05)
            if time.monotonic() >= next_byte:
                self.trickle()
                next_byte += self.every

    def start(self):
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop trickling and close what is left; `done` keeps what the
        server closed."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        with self.lock:
            for s in list(self.conns):
                self.sel.unregister(s)
                s.close()
            self.conns.clear()
        self.sel.close()

    def open_count(self) -> int:
        with self.lock:
            return len(self.conns)


def _flood_child(conn, args) -> None:
    flood = Flood(*args)
    opened = flood.open()
    flood.start()
    conn.send(opened)
    while True:
        cmd = conn.recv()
        if cmd == "count":
            conn.send(flood.open_count())
        else:
            flood.close()
            conn.send(flood.done)
            return


class FloodProcess:
    """A [`Flood`] in a child process: each process has its own
    RLIMIT_NOFILE, so two floods of 10,000 fit where one process would
    not."""

    def __init__(self, *args):
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_flood_child, args=(child, args), daemon=True)
        self.proc.start()
        self.done = []

    def _recv(self, timeout: float = 60.0):
        if not self.conn.poll(timeout):
            raise TimeoutError("flood process did not answer")
        return self.conn.recv()

    def opened(self) -> float:
        """Wait until every connection is opened; returns the seconds."""
        return self._recv()

    def open_count(self) -> int:
        self.conn.send("count")
        return self._recv()

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send("close")
            self.done = self._recv()
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def rss_kib(daemon) -> int:
    """The resident set size of a daemon, for the figures printed."""
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def restart_pop3d(lab: Lab, daemons, extra: str) -> None:
    """Lab has no hook for [pop3d] keys: add them and restart pop3d."""
    lab.pop3d.stop()
    text = lab.config.read_text().replace("[pop3d]\n", f"[pop3d]\n{extra}\n", 1)
    lab.config.write_text(text)
    lab.pop3d = daemons([bin_path("pop3d"), "--config", lab.config])
    wait_tcp(lab.pop3)


def message(subject: str) -> bytes:
    return (f"From: user2@mail.csuvnetwork.com\r\nTo: user1@csuvnetwork.com\r\n"
            f"Subject: {subject}\r\n\r\nhello\r\n").encode()


def send_and_retrieve(lab: Lab, subject: str) -> float:
    """SMTP send and POP3 retrieve from 127.0.0.1; returns the seconds."""
    t0 = time.monotonic()
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message(subject))
    s.quit()
    p = lab.pop()
    count, _ = p.stat()
    found = False
    for i in range(1, count + 1):
        lines = p.retr(i)[1]
        if f"Subject: {subject}".encode() in lines:
            found = True
            p.dele(i)
    p.quit()
    assert found, f"{subject} not retrieved"
    return time.monotonic() - t0


def test_fresh_client_gets_in_past_a_slow_flood(tmp_path, daemons):
    # Each flood runs in its own process, which inherits this limit.
    raise_nofile(CONNS + 256)
    limits = f"max_connections = {MAX}\nmax_connections_per_client = {PER_CLIENT}"
    lab = Lab(tmp_path, daemons, extra=limits)
    restart_pop3d(lab, daemons, limits)
    time.sleep(0.3)  # the readiness probes' connections are released
    addrs = [f"127.0.0.{2 + i}" if i < 250 else f"127.0.{1 + i // 250}.{2 + i % 250}"
             for i in range(ADDRS)]
    smtp = FloodProcess(lab.smtp, addrs, CONNS, b"EHLO slow.example\r\n")
    pop = FloodProcess(lab.pop3, addrs, CONNS, b"USER user2\r\n")
    floods = [smtp, pop]
    try:
        rss0 = (rss_kib(lab.smtpd), rss_kib(lab.pop3d))
        t_smtp, t_pop = smtp.opened(), pop.opened()
        time.sleep(1.0)
        rss1 = (rss_kib(lab.smtpd), rss_kib(lab.pop3d))
        print(f"RSS KiB before/after: smtpd {rss0[0]}/{rss1[0]}, pop3d {rss0[1]}/{rss1[1]}")
        print(f"opened {CONNS} to smtpd in {t_smtp:.2f}s, to pop3d in {t_pop:.2f}s;"
              f" held: smtp {smtp.open_count()}, pop3 {pop.open_count()}")
        # The flood holds every slot (or all it opened).
        full = min(MAX, CONNS)
        assert smtp.open_count() >= full - 5 and pop.open_count() >= full - 5
        times = [send_and_retrieve(lab, f"fresh {i}") for i in range(5)]
        print("send+retrieve seconds:", " ".join(f"{t:.3f}" for t in times))
        # The figure is "within 1 s every time" (the note reports the
        # measured times). On a loaded CI machine a single round may cross
        # 1 s by scheduling alone, so the test asks for the typical round
        # under 1 s and none stuck behind the flood (a refused or queued
        # client would take the full timeouts, tens of seconds).
        assert sorted(times)[len(times) // 2] < 1.0, times
        assert max(times) < 3.0, times
        # Still full of flood: admission made room, it did not drop it.
        assert smtp.open_count() >= full - 10 and pop.open_count() >= full - 10
    finally:
        for f in floods:
            f.close()
    # Every flood connection that is gone was told why: refused at once
    # (full, and holding as many as anyone: no eviction among equals), or
    # evicted after its greeting to make room for the fresh client.
    smtp_refused = re.compile(rb"421 4\.3\.2 \S+ Error: too many connections\r\n")
    smtp_evicted = re.compile(
        rb"220 [^\r]*\r\n421 4\.3\.2 \S+ Error: too many connections, closing transmission channel\r\n")
    pop_refused = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"
    pop_evicted = re.compile(rb"\+OK [^\r]*\r\n-ERR \[SYS/TEMP\] Too many connections, disconnecting\.\r\n")
    evicted = {"smtp": 0, "pop3": 0}
    for name, flood, refused, evict in [("smtp", smtp, smtp_refused, smtp_evicted),
                                        ("pop3", pop, pop_refused, pop_evicted)]:
        for r in flood.done:
            if (refused.fullmatch(r) if isinstance(refused, re.Pattern) else r == refused):
                continue
            assert evict.match(r), r
            evicted[name] += 1
        print(f"{name}: {len(flood.done)} closed by the server, {evicted[name]} of them evicted")
    if CONNS > MAX:
        # The first fresh session found the server full and evicted; later
        # ones may find the slot the previous one left.
        assert evicted["smtp"] >= 1 and evicted["pop3"] >= 1
        assert "evicted: server full" in lab.smtpd.output()
        assert "evicted: server full" in lab.pop3d.output()


def test_trickling_client_is_cut_at_its_budget(tmp_path, daemons):
    lab = Lab(tmp_path, daemons, extra="first_command_timeout = 2\ncommand_line_timeout = 2")
    restart_pop3d(lab, daemons, "login_timeout = 3\ncommand_line_timeout = 2")
    for port, payload, greeting, cut in [
        (lab.smtp, b"EHLO slow.example\r\n", b"220 ", rb"421 4\.4\.2 .*timeout exceeded"),
        (lab.pop3, b"USER user1\r\n", b"+OK", rb"-ERR Disconnected for inactivity\."),
    ]:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(0.3)
            t0 = time.monotonic()
            got = b""
            for octet in payload:
                try:
                    s.sendall(bytes([octet]))
                except OSError:
                    break
                try:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    got += chunk
                except socket.timeout:
                    pass
            # One octet every 0.3 s restarts the idle timer each time; the
            # line budget ends the session after 2 s all the same.
            elapsed = time.monotonic() - t0
            assert got.startswith(greeting), got
            assert re.search(cut, got), got
            assert 1.5 < elapsed < 4.0, elapsed
    # A POP3 client that completes lines but never logs in: cut after 3 s.
    # (Valid commands: a run of invalid ones is cut sooner, at the third.)
    with socket.create_connection(("127.0.0.1", lab.pop3)) as s:
        s.settimeout(0.5)
        t0 = time.monotonic()
        got = s.recv(512)
        while b"Disconnected" not in got and time.monotonic() - t0 < 6:
            try:
                s.sendall(b"USER user1\r\n")
                chunk = s.recv(512)
                if not chunk:
                    break
                got += chunk
            except socket.timeout:
                pass
            except OSError:
                break
        assert b"-ERR Disconnected for inactivity.\r\n" in got, got
        assert 2.5 < time.monotonic() - t0 < 5.0
    # A prompt client is not affected.
    p = poplib.POP3("127.0.0.1", lab.pop3, timeout=5)
    p.user("user1")
    p.pass_(PASSWORDS["user1"])
    p.quit()


def test_open_transactions_do_not_protect_a_flood(tmp_path, daemons):
    """A slow sender that opens a mail transaction is evicted too, once no
    idle connection is left to evict; an authenticated one never is."""
    lab = Lab(tmp_path, daemons, extra="max_connections = 3\nmax_connections_per_client = 10")
    time.sleep(0.3)  # the readiness probes' connections are released

    def held(src: str, auth: bool = False) -> socket.socket:
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", lab.smtp))
        s.settimeout(5)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"EHLO slow.example\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        if auth:
            import base64
            token = base64.b64encode(f"\0user1\0{PASSWORDS['user1']}".encode())
            s.sendall(b"AUTH PLAIN " + token + b"\r\n")
            assert f.readline().startswith(b"235 ")
        else:
            # In DATA: the host's transaction is open.
            s.sendall(b"MAIL FROM:<slow@example.org>\r\nRCPT TO:<user1@csuvnetwork.com>\r\nDATA\r\n")
            assert f.readline().startswith(b"250 ")
            assert f.readline().startswith(b"250 ")
            assert f.readline().startswith(b"354 ")
            s.sendall(b"Subject: slow\r\n")
        return s, f

    flood = [held("127.0.0.2"), held("127.0.0.2", auth=True), held("127.0.0.2")]
    t0 = time.monotonic()
    s = lab.smtp_client()
    s.sendmail("user2@mail.csuvnetwork.com", ["user1@csuvnetwork.com"], message("past a transaction"))
    s.quit()
    assert time.monotonic() - t0 < 1.0
    # The oldest transaction lost its slot; it is told at once (eviction
    # interrupts a transaction's wait, shutdown does not), and nothing of
    # its message is delivered.
    assert re.match(rb"421 4\.3\.2 \S+ Error: too many connections", flood[0][1].readline())
    assert flood[0][1].readline() == b""
    # The authenticated one and the younger transaction are still there.
    flood[1][0].sendall(b"NOOP\r\n")
    assert flood[1][1].readline().startswith(b"250 ")
    flood[2][0].sendall(b"\r\nbody\r\n.\r\n")
    assert flood[2][1].readline().startswith(b"250 ")
    subjects = [p.read_bytes() for p in lab.inbox()]
    assert sum(b"Subject: slow" in m for m in subjects) == 1
    for sock, f in flood:
        f.close()
        sock.close()
