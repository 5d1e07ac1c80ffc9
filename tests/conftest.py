"""Shared fixtures for the end-to-end suite.

Every test starts the real daemons (built by `cargo build --bins`) on loopback
ephemeral ports and talks to them with real clients: Python's smtplib, poplib
and dnspython, and the command-line tools swaks, curl and dig.
"""
import os
import pathlib
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PROFILE = os.environ.get("E2E_PROFILE", "debug")


def bin_path(name: str) -> pathlib.Path:
    """Path of a workspace binary; fails clearly when it was not built."""
    p = TARGET / PROFILE / name
    if not p.exists():
        pytest.fail(f"{p} missing: run `cargo build --workspace --bins` first")
    return p


def free_port(kind=socket.SOCK_STREAM) -> int:
    """An ephemeral loopback port that is free for both TCP and UDP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_tcp(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


class Daemon:
    """A daemon process started by a test and stopped by PID at teardown."""

    def __init__(self, args, env=None, cwd=None):
        self.args = [str(a) for a in args]
        # A file, not a pipe: a chatty daemon must never block on a full
        # pipe that nobody reads. Opened for appending and read through a
        # separate handle, so reading while the daemon writes never moves
        # the offset its writes go to.
        fd, self.log_path = tempfile.mkstemp(prefix="daemon-", suffix=".log")
        os.close(fd)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )

    def stop(self, sig=15, timeout=10.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()

    def output(self) -> str:
        """Everything the daemon printed so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def daemons():
    """Start daemons with `daemons(args)`; all are stopped after the test."""
    started = []

    def start(args, env=None, cwd=None):
        d = Daemon(args, env=env, cwd=cwd)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
        d.log.close()
        os.unlink(d.log_path)
