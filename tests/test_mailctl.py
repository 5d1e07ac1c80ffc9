"""mailctl on a real terminal: the password is asked twice with echo off,
as passwd(1) does. Driven through a pseudo-terminal from Python's pty module.
"""
import os
import pty
import select
import subprocess
import time

from conftest import bin_path


def run_on_tty(args, answers, timeout=30.0):
    """Runs mailctl with a pty as stdin/stdout/stderr, answering each
    prompt; returns (exit status, everything the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if pending and seen.rstrip().endswith(b":"):
                    # Wait for the echo to be switched off before typing.
                    time.sleep(0.2)
                    os.write(master, pending.pop(0).encode() + b"\n")
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def base_args(tmp_path):
    return [str(bin_path("mailctl")), "--passwd", str(tmp_path / "passwd"),
            "--aliases", str(tmp_path / "aliases"),
            "--maildir-root", str(tmp_path / "mail")]


def test_prompts_twice_without_echo(tmp_path):
    code, out = run_on_tty(base_args(tmp_path) + ["user", "add", "user1"],
                           ["s3cret-pw", "s3cret-pw"])
    assert code == 0, out
    assert "New password for user1:" in out
    assert "Retype new password:" in out
    assert "s3cret-pw" not in out, "password echoed"
    assert "user user1 added (SHA512-CRYPT)" in out
    line = (tmp_path / "passwd").read_text().strip()
    assert line.startswith("user1:{SHA512-CRYPT}$6$")
    assert (tmp_path / "mail" / "user1" / "Maildir" / "new").is_dir()


def test_mismatched_passwords_change_nothing(tmp_path):
    code, out = run_on_tty(base_args(tmp_path) + ["user", "add", "user1"],
                           ["one", "two"])
    assert code == 1, out
    assert "mailctl: passwords do not match" in out
    assert not (tmp_path / "passwd").exists()


def test_passwd_on_tty(tmp_path):
    subprocess.run(base_args(tmp_path) + ["user", "add", "user2", "--password-stdin",
                                          "--scheme", "PLAIN"],
                   input="old\n", text=True, check=True, capture_output=True)
    code, out = run_on_tty(base_args(tmp_path) + ["user", "passwd", "user2",
                                                  "--scheme", "SHA256-CRYPT"],
                           ["new-pw", "new-pw"])
    assert code == 0, out
    assert "password of user2 changed (SHA256-CRYPT)" in out
    assert (tmp_path / "passwd").read_text().startswith("user2:{SHA256-CRYPT}$5$")


def test_existing_user_is_refused_before_the_prompt(tmp_path):
    subprocess.run(base_args(tmp_path) + ["user", "add", "user1", "--password-stdin"],
                   input="pw\n", text=True, check=True, capture_output=True)
    code, out = run_on_tty(base_args(tmp_path) + ["user", "add", "User1"], [])
    assert code == 1, out
    assert 'mailctl: user "user1" already exists' in out
    assert "password" not in out, "asked for a password first"


def test_config_file_is_the_daemons(tmp_path):
    # The same file the daemons read names the passwd-file and Maildirs.
    (tmp_path / "mail.toml").write_text(
        '[global]\npasswd_file = "etc/passwd"\nmaildir_root = "mail"\n')
    args = [str(bin_path("mailctl")), "--config", str(tmp_path / "mail.toml")]
    code, out = run_on_tty(args + ["user", "add", "user1"], ["pw-1", "pw-1"])
    assert code == 0, out
    assert (tmp_path / "etc" / "passwd").read_text().startswith("user1:{SHA512-CRYPT}$6$")
    assert (tmp_path / "mail" / "user1" / "Maildir" / "new").is_dir()
    r = subprocess.run(args + ["user", "list"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "user1 SHA512-CRYPT\n")


def test_user_list_without_a_passwd_file_says_so(tmp_path):
    r = subprocess.run([str(bin_path("mailctl")), "user", "list"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "lab-data/passwd: no such passwd-file" in r.stderr
