"""Interoperability of the Maildir store and the passwd-file with tools
nobody here wrote: Python's mailbox.Maildir, and Dovecot's doveadm (Debian
package dovecot-core; those tests are skipped when it is missing).

Mail is written by `mailctl deliver`, which drives the same delivery code
as smtpd; accounts by `mailctl user add`.
"""
import mailbox
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from conftest import bin_path

MESSAGE = (
    "From: user2@csuvnetwork.com\n"
    "To: user1@csuvnetwork.com\n"
    "Subject: lab message\n"
    "\n"
    "Hello user1,\n"
    "this line has a trailing CR-less end.\n"
    ".a line starting with a dot\n"
)


@pytest.fixture
def site():
    # A world-traversable directory: Dovecot refuses to read mail as root,
    # so under root the doveadm tests read as 'nobody'.
    d = pathlib.Path(tempfile.mkdtemp(prefix="mailstore-interop-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mailctl(site, *args, stdin=None):
    cmd = [
        str(bin_path("mailctl")),
        "--passwd", str(site / "passwd"),
        "--aliases", str(site / "aliases"),
        "--maildir-root", str(site / "mail"),
        *args,
    ]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def setup_lab(site):
    mailctl(site, "user", "add", "user1", "--password-stdin", stdin="pass1\n")
    mailctl(site, "user", "add", "user2", "--password-stdin",
            "--scheme", "SHA256-CRYPT", stdin="pass2\n")
    mailctl(site, "alias", "add", "postmaster", "user1")
    for rcpt in ("user1@csuvnetwork.com", "postmaster"):
        mailctl(site, "deliver", "-f", "user2@csuvnetwork.com",
                "--hostname", "mail.csuvnetwork.com", rcpt, stdin=MESSAGE)
    return site / "mail" / "user1" / "Maildir"


def test_python_mailbox_reads_our_maildir(site):
    md_path = setup_lab(site)
    md = mailbox.Maildir(str(md_path), create=False)
    msgs = [md[key] for key in md.keys()]
    assert len(msgs) == 2
    for m in msgs:
        assert m["Subject"] == "lab message"
        assert m["Return-Path"] == "<user2@csuvnetwork.com>"
        assert m["Received"].startswith("by mail.csuvnetwork.com id ")
        assert m.get_payload().endswith(".a line starting with a dot\n")
        assert m.get_subdir() == "new"
    for name in os.listdir(md_path / "new"):
        size = (md_path / "new" / name).stat().st_size
        assert f",S={size},W=" in name


def dovecot_conf(site):
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    gid = 65534 if os.geteuid() == 0 else os.getegid()
    run = site / "run"
    run.mkdir()
    conf = site / "dovecot.conf"
    conf.write_text(
        f"base_dir = {run}\n"
        "log_path = /dev/stderr\n"
        "mail_location = maildir:~/Maildir\n"
        "ssl = no\n"
        f"mail_uid = {uid}\nmail_gid = {gid}\n"
        "first_valid_uid = 0\nfirst_valid_gid = 0\n"
    )
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(site / "mail"):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, gid)
        os.chown(site / "mail", uid, gid)
    return conf


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm (dovecot-core) not installed")
def test_dovecot_reads_our_maildir(site):
    md_path = setup_lab(site)
    names = sorted(os.listdir(md_path / "new"))
    conf = dovecot_conf(site)
    env = {**os.environ, "USER": "user1", "HOME": str(md_path.parent)}
    r = subprocess.run(
        ["doveadm", "-c", str(conf), "fetch",
         "uid size.physical size.virtual hdr.subject", "all"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    # Dovecot cross-checks ,S= against the file and complains loudly.
    assert r.returncode == 0 and "Error" not in r.stderr, r.stderr
    records = [dict(line.split(": ", 1) for line in block.strip().splitlines())
               for block in r.stdout.strip().split("\f") if block.strip()]
    assert len(records) == 2, r.stdout
    by_size = {(int(rec["size.physical"]), int(rec["size.virtual"])) for rec in records}
    expect = set()
    for n in names:
        s = int(n.split(",S=")[1].split(",")[0])
        w = int(n.split(",W=")[1].split(":")[0])
        expect.add((s, w))
    # Dovecot's virtual size (CRLF) equals our ,W= (the POP3 size).
    assert by_size == expect
    for rec in records:
        assert rec["hdr.subject"] == "lab message"
    r = subprocess.run(
        ["doveadm", "-c", str(conf), "fetch", "text", "all"],
        capture_output=True, env=env, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"Hello user1,") == 2


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm (dovecot-core) not installed")
def test_dovecot_verifies_our_hashes(site):
    for scheme, pw in (("SHA512-CRYPT", "pass1"), ("SHA256-CRYPT", "p:2 é"),
                       ("ARGON2ID", "pass3")):
        name = "u" + scheme.split("-")[0].lower()
        mailctl(site, "user", "add", name, "--password-stdin", "--scheme", scheme,
                stdin=pw + "\n")
    lines = (site / "passwd").read_text().splitlines()
    assert len(lines) == 3
    for line, pw in zip(lines, ("pass1", "p:2 é", "pass3")):
        field = line.split(":")[1]
        ok = subprocess.run(["doveadm", "pw", "-t", field, "-p", pw],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and "verified" in ok.stdout, (field, ok.stdout, ok.stderr)
        bad = subprocess.run(["doveadm", "pw", "-t", field, "-p", pw + "x"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0, field
