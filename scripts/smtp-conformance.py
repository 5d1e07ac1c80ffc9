#!/usr/bin/env python3
"""Black-box comparison of smtpd with Postfix 3.x smtpd, reply by reply.

    python3 scripts/smtp-conformance.py [--bin-dir target/release] [--only NAME]

Starts, on loopback ephemeral ports and under a temporary directory, our
smtpd (ports smtp, submission, submissions) and a private Postfix
(scripts/postfix_lab.py: virtual(8) Maildirs, Dovecot SASL over an inet
socket, the same certificate, SIZE limit and smtpd_forbid_bare_newline =
normalize without exclusions), sends each case's raw bytes to both, and
prints what each answered after every write. Differences are for a human
to judge: texts after the code differ by design. Needs root (Postfix and
Dovecot instances), postfix, dovecot and the system account `mailbench`
(scripts/bench-mail.py creates it). Ends only the processes it started.
"""
import argparse
import base64
import os
import pathlib
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import postfix_lab  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOMAIN = "csuvnetwork.com"
PASSWORDS = {"user1": "user1-secret", "user2": "p@ss word2"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(s):
    return base64.b64encode(s.encode()).decode().encode()


class Servers:
    """Ours and the reference, each with smtp/sub/subs ports."""

    def __init__(self, work: pathlib.Path, bins: pathlib.Path):
        self.work, self.bins = work, bins
        self.ours = {k: free_port() for k in ("smtp", "sub", "subs")}
        self.ref = {k: free_port() for k in ("smtp", "sub", "subs")}
        self.procs, self.postfix = [], None

    def start(self):
        w, bins = self.work, self.bins
        subprocess.run([bins / "mailctl", "tls", "cert", "--name", f"mail.{DOMAIN}", "--name", "127.0.0.1",
                        "--ca-dir", w / "ca", "--out-dir", w / "certs"], check=True, capture_output=True)
        cert, key = w / f"certs/mail.{DOMAIN}.pem", w / f"certs/mail.{DOMAIN}.key"
        key.chmod(0o644)  # Postfix's smtpd reads it as user postfix
        o = w / "ours"
        o.mkdir()
        (o / "mail.toml").write_text(f"""
[global]
hostname = "mail.{DOMAIN}"
local_domains = ["mail.{DOMAIN}", "localhost.{DOMAIN}", "localhost", "{DOMAIN}"]
relay_networks = ["127.0.0.0/8"]
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"
[smtpd]
listen = ["127.0.0.1:{self.ours['smtp']}"]
submission_listen = ["127.0.0.1:{self.ours['sub']}"]
submissions_listen = ["127.0.0.1:{self.ours['subs']}"]
message_size_limit = 100000
auth_failure_delay = 0
auth_penalty = 0
[tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
[resolver]
# Nothing is relayed off the host: no resolver answers.
name_servers = ["127.0.0.1:9"]
timeout = "1s"
""")
        (o / "aliases").write_text("postmaster: user1\n")
        for u, p in PASSWORDS.items():
            subprocess.run([bins / "mailctl", "--passwd", o / "passwd", "--aliases", o / "aliases",
                            "--maildir-root", o / "mail", "user", "add", u, "--password-stdin"],
                           input=(p + "\n").encode(), check=True, capture_output=True)
        self.procs.append(subprocess.Popen([bins / "smtpd", "--config", o / "mail.toml"],
                                           stdout=open(w / "ours.log", "wb"), stderr=subprocess.STDOUT))
        pw = pwd.getpwnam("mailbench")
        uid, gid = pw.pw_uid, pw.pw_gid
        auth_port, pop_port = free_port(), free_port()
        d = w / "dovecot"
        (d / "run").mkdir(parents=True)
        (d / "state").mkdir()
        (d / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in PASSWORDS.items()))
        (d / "passwd").chmod(0o644)
        # Dovecot only as Postfix's SASL server; its POP3 listener is unused.
        (d / "dovecot.conf").write_text(f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home=/nonexistent/%u
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.procs.append(subprocess.Popen(["dovecot", "-F", "-c", str(d / "dovecot.conf")],
                                           stdout=open(w / "dovecot.out", "wb"), stderr=subprocess.STDOUT))
        vmail = w / "vmail"
        vmail.mkdir()
        os.chown(vmail, uid, gid)
        pf = postfix_lab.Instance(w / "postfix", self.ref["smtp"],
                                  services=postfix_lab.LOCAL_SERVICES + ("tlsmgr",), params={
            "myhostname": f"mail.{DOMAIN}", "mydomain": DOMAIN, "myorigin": "$mydomain",
            "mydestination": f"mail.{DOMAIN}, localhost.{DOMAIN}, localhost",
            "virtual_mailbox_domains": DOMAIN, "virtual_mailbox_base": str(vmail),
            "virtual_mailbox_maps": f"texthash:{w}/postfix/etc/vmailbox",
            "virtual_alias_maps": f"texthash:{w}/postfix/etc/valias",
            "virtual_uid_maps": f"static:{uid}", "virtual_gid_maps": f"static:{gid}",
            "default_transport": "error:no relaying", "relay_transport": "error:no relaying",
            "local_transport": "error:no local",
            "message_size_limit": "100000",
            "smtpd_tls_chain_files": f"{key}, {cert}",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": f"inet:127.0.0.1:{auth_port}",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_error_sleep_time": "0", "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "20",
            "smtpd_forbid_bare_newline": "normalize",
            "smtpd_forbid_bare_newline_exclusions": "",
        })
        self.postfix = pf
        (pf.conf / "vmailbox").write_text("".join(f"{u}@{DOMAIN} {u}/Maildir/\n" for u in PASSWORDS))
        (pf.conf / "valias").write_text(f"postmaster@{DOMAIN} user1@{DOMAIN}\n")
        sub = "  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
        mc = (pf.conf / "master.cf").read_text().replace(
            f"127.0.0.1:{pf.port} inet n - n - - smtpd\n",
            f"127.0.0.1:{pf.port} inet n - n - - smtpd\n"
            f"127.0.0.1:{self.ref['sub']} inet n - n - - smtpd\n{sub}"
            f"127.0.0.1:{self.ref['subs']} inet n - n - - smtpd\n"
            f"  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n{sub}")
        (pf.conf / "master.cf").write_text(mc)
        pf.start()
        for port in (*self.ours.values(), auth_port):
            postfix_lab.wait_tcp(port)

    def stop(self):
        if self.postfix is not None:
            self.postfix.stop()
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def recv_idle(s, idle, total=5.0):
    """What arrives until `idle` seconds pass without any."""
    out, end = b"", time.monotonic() + total
    s.settimeout(idle)
    while time.monotonic() < end:
        try:
            d = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ConnectionResetError, ssl.SSLError) as e:
            return out + f"<{type(e).__name__}>".encode()
        if not d:
            return out + b"<EOF>"
        out += d
    return out


def tls_wrap(s):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx.wrap_socket(s)


def run(port, steps, implicit_tls, idle):
    """Each step: bytes to write, or STARTTLS (the handshake)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if implicit_tls:
        s = tls_wrap(s)
    got = [(b"<connect>", recv_idle(s, 0.6))]
    for st in steps:
        if st is STARTTLS:
            try:
                s = tls_wrap(s)
                got.append((b"<TLS handshake>", b"ok"))
            except (OSError, ssl.SSLError) as e:
                got.append((b"<TLS handshake>", str(e).encode()))
                break
            continue
        try:
            s.sendall(st)
        except OSError as e:
            got.append((st, f"<send: {e}>".encode()))
            break
        r = recv_idle(s, idle)
        got.append((st, r))
        if r.endswith(b"<EOF>"):
            break
    s.close()
    return got


def show(b, n=220):
    r = repr(b)[2:-1]
    return r if len(r) <= n else f"{r[:n]}...({len(b)} octets)"


STARTTLS = object()
E = b"EHLO client.example\r\n"
M = b"MAIL FROM:<a@b.example>\r\n"
R = b"RCPT TO:<user1@csuvnetwork.com>\r\n"
GOOD = b64("\0user2\0p@ss word2")
SMUGGLED = (b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<user2@csuvnetwork.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")

# (name, port, steps)
CASES = [
    ("unknown and syntax", "smtp", [E, b"FOO\r\n", b"\r\n", b"EHLO\r\n", b"MAIL\r\n", b"MAIL FROM:\r\n",
                                    b"MAIL FROM:<a@b\r\n", b"MAIL TO:<a@b>\r\n", b"NOOP hello\r\n",
                                    b"VRFY\r\n", b"VRFY user1\r\n", b"EXPN postmaster\r\n", b"HELP\r\n",
                                    b"RSET x\r\n", b"STARTTLS x\r\n", b"QUIT extra\r\n"]),
    ("sequencing", "smtp", [M, R, b"DATA\r\n", E, R, b"DATA\r\n", M, M, b"DATA\r\n", b"RSET\r\n", R,
                            b"MAIL FROM:<>\r\n", R, b"EHLO again\r\n", R, b"QUIT\r\n"]),
    ("addresses", "smtp", [E, b"MAIL FROM:<@a.example,@b.example:u@d.example>\r\n",
                           b"RCPT TO:<@x.example:user1@csuvnetwork.com>\r\n",
                           b"RCPT TO:<\"user1\"@csuvnetwork.com>\r\n", b"RCPT TO:<user1@[127.0.0.1]>\r\n",
                           b"RCPT TO:<postmaster>\r\n", b"rcpt to:<POSTMASTER>\r\n",
                           b"RCPT TO:<nosuch@csuvnetwork.com>\r\n", b"RCPT TO:<>\r\n", b"QUIT\r\n"]),
    ("parameters", "smtp", [E, b"MAIL FROM:<a@b.example> SIZE=200000\r\n",
                            b"MAIL FROM:<a@b.example> FOO=bar\r\n",
                            b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
                            b"MAIL FROM:<\xc3\xa9@b.example>\r\n", M,
                            b"RCPT TO:<user1@csuvnetwork.com> NOTIFY=BOGUS\r\n",
                            b"RCPT TO:<user1@csuvnetwork.com> NOTIFY=SUCCESS ORCPT=rfc822;"
                            + b"o" * 480 + b"@b.example\r\n", b"QUIT\r\n"]),
    ("long lines", "smtp", [E, b"NOOP " + b"x" * 3000 + b"\r\n", b"NOOP\r\n", M, R, b"DATA\r\n",
                            b"Subject: long\r\n\r\n" + b"y" * 20000 + b"\r\n.\r\n", b"NOOP\r\n"]),
    ("size", "smtp", [E, b"MAIL FROM:<a@b.example> SIZE=10\r\n", R, b"DATA\r\n",
                      b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 1500 + b".\r\n", b"NOOP\r\n"]),
    *[(f"smuggling {name}", "smtp", [E, M, R, b"DATA\r\n",
                                     b"Subject: " + name.encode() + b"\r\n\r\nbody" + end + SMUGGLED,
                                     b"NOOP\r\n"])
      for name, end in [("LF.LF", b"\n.\n"), ("CRLF.LF", b"\r\n.\n"), ("LF.CRLF", b"\n.\r\n"),
                        ("CR.CR", b"\r.\r"), ("CRLF.CR", b"\r\n.\r")]],
    ("message after refused DATA", "smtp", [E, M + b"RCPT TO:<nosuch@csuvnetwork.com>\r\nDATA\r\n"
                                            b"From: a@b.example\r\nSubject: p\r\n\r\n" + SMUGGLED]),
    ("BDAT", "smtp", [E, M, R, b"BDAT 1x\r\nRSET\r\n"]),
    ("STARTTLS injection", "smtp", [E, b"STARTTLS\r\nRSET\r\n", STARTTLS, b"NOOP\r\n", M, E, b"QUIT\r\n"]),
    ("AUTH edge cases", "sub", [b"AUTH PLAIN " + GOOD + b"\r\n", E, b"AUTH PLAIN\r\n", b"*\r\n",
                                b"AUTH PLAIN !!!\r\n", b"AUTH FOO\r\n", b"AUTH PLAIN " + GOOD + b"\r\n",
                                b"AUTH PLAIN " + GOOD + b"\r\n", b"QUIT\r\n"]),
    ("submission without AUTH", "sub", [E, M, R, b"QUIT\r\n"]),
    ("submissions", "subs", [E, b"STARTTLS\r\n", M, b"QUIT\r\n"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--only", help="run the cases whose name contains this")
    ap.add_argument("--idle", type=float, default=1.0,
                    help="seconds of silence that end a reply (Dovecot SASL answers slowly)")
    a = ap.parse_args()
    if shutil.which("postfix") is None and not pathlib.Path(postfix_lab.POSTFIX).exists():
        sys.exit("postfix is not installed")
    with tempfile.TemporaryDirectory(prefix="smtp-conformance-") as tmp:
        # Postfix's and Dovecot's unprivileged processes walk into it.
        os.chmod(tmp, 0o755)
        srv = Servers(pathlib.Path(tmp), pathlib.Path(a.bin_dir))
        try:
            srv.start()
            for name, kind, steps in CASES:
                if a.only and a.only not in name:
                    continue
                ours = run(srv.ours[kind], steps, kind == "subs", a.idle)
                ref = run(srv.ref[kind], steps, kind == "subs", a.idle)
                print(f"=== {name} [{kind}]")
                for i in range(max(len(ours), len(ref))):
                    o = ours[i] if i < len(ours) else (b"", b"-")
                    p = ref[i] if i < len(ref) else (b"", b"-")
                    print(f"  > {show(o[0] or p[0], 120)}")
                    mark = " " if o[1] == p[1] else "*"
                    print(f"   {mark}ours:    {show(o[1])}")
                    print(f"   {mark}postfix: {show(p[1])}")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
