"""A private Postfix instance on loopback, for the benchmarks
(scripts/bench-mail.py, bench-relay.py, bench-tls.py) and the interop tests
(tests/test_outbound_interop.py, which put scripts/ on sys.path).

Each instance has its own config, queue and data directories under `base`,
runs as root with `postfix -c <base>/etc`, listens on 127.0.0.1:<port> only
and logs to <base>/postfix.log. What differs between users is given as
main.cf parameters (`params`, which replace the common ones of the same
name: Postfix warns about a parameter given twice) and the master.cf
services (`services`, names from SERVICES)."""
import os
import pwd
import shutil
import subprocess
import time

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"

# master.cf lines by service name, as Debian's stock master.cf has them
# (no chroot: the instance's directories are not set up for one).
SERVICES = {
    "cleanup": "cleanup   unix  n       -       n       -       0       cleanup",
    "qmgr": "qmgr      unix  n       -       n       300     1       qmgr",
    "tlsmgr": "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
    "rewrite": "rewrite   unix  -       -       n       -       -       trivial-rewrite",
    "bounce": "bounce    unix  -       -       n       -       0       bounce",
    "defer": "defer     unix  -       -       n       -       0       bounce",
    "trace": "trace     unix  -       -       n       -       0       bounce",
    "verify": "verify    unix  -       -       n       -       1       verify",
    "flush": "flush     unix  n       -       n       1000?   0       flush",
    "proxymap": "proxymap  unix  -       -       n       -       -       proxymap",
    "smtp": "smtp      unix  -       -       n       -       -       smtp",
    "relay": "relay     unix  -       -       n       -       -       smtp",
    "error": "error     unix  -       -       n       -       -       error",
    "retry": "retry     unix  -       -       n       -       -       error",
    "discard": "discard   unix  -       -       n       -       -       discard",
    "local": "local     unix  -       n       n       -       -       local",
    "virtual": "virtual   unix  -       n       n       -       -       virtual",
    "anvil": "anvil     unix  -       -       n       -       1       anvil",
    "scache": "scache    unix  -       -       n       -       1       scache",
    "postlog": "postlog   unix-dgram n  -       n       -       1       postlogd",
}

# Every service but tlsmgr (bench-tls.py adds its own) and the SMTP client.
LOCAL_SERVICES = ("cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "flush",
                  "proxymap", "error", "retry", "discard", "local", "virtual", "anvil",
                  "scache", "postlog")
# What a relaying instance needs: the SMTP client and no local delivery.
RELAY_SERVICES = ("cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "verify",
                  "flush", "proxymap", "smtp", "relay", "error", "retry", "discard",
                  "anvil", "scache", "postlog")
ALL_SERVICES = tuple(SERVICES)


def main_cf(base, params):
    """main.cf's text: the common parameters, then `params` (a dict; a
    value of None drops a common one) replacing those of the same name."""
    common = {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "readme_directory": "no",
        "maillog_file": str(base / "postfix.log"),
        "maillog_file_prefixes": str(base),
    }
    common.update(params)
    return "".join(f"{k} = {v}\n" for k, v in common.items() if v is not None)


def master_cf(port, services):
    """master.cf's text: smtpd on 127.0.0.1:port, then `services`."""
    lines = ["# service type  private unpriv  chroot  wakeup  maxproc command + args",
             f"127.0.0.1:{port} inet n - n - - smtpd"]
    lines += [SERVICES[s] for s in services]
    return "\n".join(lines) + "\n"


class Instance:
    """One Postfix instance; `params` and `services` as in the module
    docstring, `extra_main_cf` text appended to main.cf as it is."""

    def __init__(self, base, port, params=None, services=ALL_SERVICES, extra_main_cf=""):
        self.base = base
        self.conf, self.queue, self.data = (base / d for d in ("etc", "queue", "data"))
        self.port = port
        self.log = base / "postfix.log"
        self.master_pid = None
        self.started = False
        # A command prefix for `postfix start` (e.g. a private mount
        # namespace with its own /etc/resolv.conf): the master and every
        # process it spawns run under it.
        self.wrap = []
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)  # master.lock, caches
        (self.conf / "main.cf").write_text(main_cf(base, params or {}) + extra_main_cf)
        (self.conf / "master.cf").write_text(master_cf(port, services))

    def postfix(self, *args, check=True):
        return subprocess.run([*self.wrap, POSTFIX, "-c", str(self.conf), *args], check=check,
                              capture_output=True, text=True)

    def postmap(self, table):
        subprocess.run([POSTMAP, "-c", str(self.conf), table], check=True)

    def read_pid(self):
        try:
            self.master_pid = int((self.queue / "pid/master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return self.master_pid

    def start(self, timeout=20):
        """Starts the instance and waits for its master and its port."""
        self.started = True
        r = self.postfix("start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}")
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.read_pid() is None:
            time.sleep(0.05)
        if self.master_pid is None:
            raise RuntimeError("postfix master did not write its pid file")
        wait_tcp(self.port, timeout)

    def stop(self):
        if self.started:
            if self.master_pid is None:
                self.read_pid()  # a start that failed half-way
            self.postfix("stop", check=False)
            self.started = False

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle, timeout=15):
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in\n{self.log_text()[-3000:]}")
            time.sleep(0.1)


def wait_tcp(port, timeout=20, host="127.0.0.1"):
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def loopback_53():
    """A loopback address whose port 53 is free (UDP and TCP), for a dnsd
    that resolvers without a port setting (Postfix, its milters) can be
    pointed at. Raises RuntimeError when none is found."""
    import random
    import socket
    for _ in range(50):
        addr = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind((addr, 53))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((addr, 53))
            return addr
        except OSError:
            continue
    raise RuntimeError("no free port 53 on loopback")
