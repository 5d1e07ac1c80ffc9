"""End-to-end: mail authentication (DKIM signing, SPF/DKIM/DMARC checks).

One smtpd for `example.org` with an RSA and an Ed25519 DKIM key made by
`mailctl dkim keygen`, and dnsd serving the `org` zone with the SPF, DKIM
and DMARC records of `example.org`, `other.org` and `forged.org` (the whole
`org` zone, so that DMARC's tree walk up to `_dmarc.org` gets an
authoritative answer). Mail user2 submits is signed; the signatures are
checked by independent verifiers, dkimpy (Debian python3-dkim) and
OpenDKIM's `opendkim-testmsg`, both asking dnsd. Mail arriving on the
inbound listener is checked, and the `Authentication-Results:` field says
what the checks found; `dmarc_reject` refuses a `p=reject` failure with
`550 5.7.1`. Two instances (example.org sending through its outbound
queue to other.org's smtpd) carry `dkim=pass spf=pass dmarc=pass` end to
end.

opendkim-testmsg asks the system resolver, which cannot be given a port:
dnsd listens on port 53 of a loopback address of its own, and the verifier
runs in a private mount namespace (`unshare -m`) where /etc/resolv.conf
names it; the host's file is untouched."""
import os
import pathlib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import bin_path, free_port, wait_tcp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
import postfix_lab  # noqa: E402  (scripts/postfix_lab.py, shared with the benchmarks)

PW = "auth-pass-1"
HOST = "mail.example.net"


def keygen(out_dir, domain, selector, algorithm):
    """`mailctl dkim keygen`; returns (key file, zone-file lines)."""
    out = subprocess.run(
        [bin_path("mailctl"), "dkim", "keygen", "--domain", domain, "--selector", selector,
         "--algorithm", algorithm, "--out-dir", out_dir],
        capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    key = lines[0].removeprefix("; private key ").strip()
    end = next(i for i, l in enumerate(lines) if l.rstrip().endswith(")"))
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    return key, "\n".join(lines[1:end + 1])


def loopback_53():
    """A loopback address whose port 53 is free, UDP and TCP."""
    try:
        return postfix_lab.loopback_53()
    except RuntimeError:
        pytest.skip("no free port 53 on loopback")


class Lab:
    def __init__(self, tmp, daemons, transport=""):
        if os.geteuid() != 0:
            pytest.skip("dnsd on port 53 and unshare need root")
        self.dir = tmp
        self.daemons = daemons
        keys = tmp / "dkim"
        self.rsa_key, rsa_rr = keygen(keys, "example.org", "rsa1", "rsa")
        self.ed_key, ed_rr = keygen(keys, "example.org", "ed1", "ed25519")
        self.py_key, py_rr = keygen(keys, "other.org", "py", "rsa")
        self.dns_addr = loopback_53()
        (tmp / "org.zone").write_text(f"""$TTL 300
@ IN SOA ns.org. hostmaster.org. 1 3600 600 86400 300
@ IN NS ns.org.
ns IN A 127.0.0.1
example IN TXT "v=spf1 ip4:127.0.0.1 -all"
mail.example IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.example IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
{rsa_rr}
{ed_rr}
other IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.other IN TXT "v=DMARC1; p=reject"
{py_rr}
forged IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.forged IN TXT "v=DMARC1; p=reject"
""")
        self.smtp, self.submission = free_port(), free_port()
        self.config = tmp / "mail.toml"
        (tmp / "transport").write_text(transport)
        self.write_config(dmarc_reject=False)
        for user in ("a", "user2"):
            subprocess.run(
                [bin_path("mailctl"), "-c", self.config, "user", "add", user, "--password-stdin"],
                input=(PW + "\n").encode(), check=True, capture_output=True)
        dns_cfg = tmp / "dns.toml"
        dns_cfg.write_text(f'[dnsd]\nlisten = ["{self.dns_addr}:53"]\n'
                           'zones = [{ origin = "org", file = "org.zone" }]\nworkers = 1\n')
        self.dnsd = daemons([bin_path("dnsd"), "--config", dns_cfg])
        wait_tcp(53, self.dns_addr)
        self.smtpd = daemons([bin_path("smtpd"), "--config", self.config])
        wait_tcp(self.smtp)
        (tmp / "resolv.conf").write_text(f"nameserver {self.dns_addr}\n")

    def write_config(self, dmarc_reject):
        self.config.write_text(f"""
[global]
hostname = "{HOST}"
local_domains = ["example.org"]
# Loopback clients are strangers here, so inbound mail is checked.
relay_networks = []
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"

[smtpd]
listen = ["127.0.0.1:{self.smtp}"]
submission_listen = ["127.0.0.1:{self.submission}"]
queue_directory = "queue"
transport_file = "transport"
auth_failure_delay = 0

[resolver]
name_servers = ["{self.dns_addr}:53"]
timeout = "2s"
attempts = 2

[dkim]
keys = [
  {{ domain = "example.org", selector = "rsa1", key_file = "{self.rsa_key}" }},
  {{ domain = "example.org", selector = "ed1", key_file = "{self.ed_key}" }},
]

[auth_checks]
enabled = true
dmarc_reject = {str(dmarc_reject).lower()}
""")

    def inbox(self, n, timeout=20):
        d = self.dir / "mail" / "a" / "Maildir" / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = sorted(d.iterdir(), key=lambda p: p.stat().st_mtime) if d.exists() else []
            if len(got) >= n:
                return [p.read_bytes() for p in got]
            time.sleep(0.1)
        raise AssertionError(f"{n} messages expected\n" + self.smtpd.output()[-3000:])

    def submit(self, msg: bytes, to="a@example.org"):
        s = smtplib.SMTP("127.0.0.1", self.submission, timeout=10)
        s.login("user2", PW)
        s.sendmail("user2@example.org", [to], msg)
        s.quit()

    def inbound(self, mail_from, msg: bytes):
        """Sends like another domain's MTA would; returns the refusal or None."""
        s = smtplib.SMTP("127.0.0.1", self.smtp, local_hostname="mail.example.org", timeout=20)
        try:
            s.sendmail(mail_from, ["a@example.org"], msg)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode()
        finally:
            s.quit()
        return None

    def dnsfunc(self, name, timeout=5):
        """dkimpy's DNS hook: TXT records from dnsd."""
        q = dns.message.make_query(name.decode() if isinstance(name, bytes) else name, "TXT")
        r = dns.query.udp(q, self.dns_addr, port=53, timeout=timeout)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return None

    def opendkim_verifies(self, msg: bytes) -> tuple[bool, str]:
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {self.dir / 'resolv.conf'} /etc/resolv.conf && exec opendkim-testmsg"],
            input=msg, capture_output=True, timeout=30)
        return p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")


def receiver_on(tmp, daemons, dns_addr, smtp):
    """A second instance, for other.org, checking what arrives on `smtp`."""
    tmp.mkdir()
    cfg = tmp / "mail.toml"
    cfg.write_text(f"""
[global]
hostname = "mx.other.org"
local_domains = ["other.org"]
relay_networks = []
maildir_root = "mail"
passwd_file = "passwd"
aliases_file = "aliases"

[smtpd]
listen = ["127.0.0.1:{smtp}"]
submission_listen = []
queue_directory = "queue"

[resolver]
name_servers = ["{dns_addr}:53"]
timeout = "2s"

[auth_checks]
enabled = true
dmarc_reject = true
""")
    subprocess.run([bin_path("mailctl"), "-c", cfg, "user", "add", "b", "--password-stdin"],
                   input=(PW + "\n").encode(), check=True, capture_output=True)
    d = daemons([bin_path("smtpd"), "--config", cfg])
    wait_tcp(smtp)
    return smtp, tmp / "mail" / "b" / "Maildir" / "new", d


@pytest.fixture
def lab(tmp_path, daemons):
    return Lab(tmp_path, daemons)


MSG = (b"From: User Two <user2@example.org>\r\nTo: a@example.org\r\n"
       b"Subject: signed by us\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
       b"Message-ID: <auth-1@example.org>\r\n\r\nHello,\r\nsigned twice.\r\n")


def only_signature(msg: bytes, selector: str) -> bytes:
    """The message with just the DKIM-Signature of `selector` (the other one
    is not in h=, so removing it changes nothing for this one)."""
    head, _, body = msg.replace(b"\r\n", b"\n").partition(b"\n\n")
    fields = re.split(rb"\n(?![ \t])", head)
    kept = [f for f in fields
            if not f.lower().startswith(b"dkim-signature:") or re.search(rb"\bs=" + selector.encode() + rb";", f)]
    return b"\n".join(kept) + b"\n\n" + body


def test_our_signatures_verify_with_dkimpy_and_opendkim(lab):
    lab.submit(MSG)
    [got] = lab.inbox(1)
    assert got.count(b"DKIM-Signature:") == 2, got
    assert b"a=rsa-sha256" in got and b"a=ed25519-sha256" in got
    assert b"c=relaxed/relaxed" in got
    for sel in ("rsa1", "ed1"):
        one = only_signature(got, sel)
        assert dkim.verify(one, dnsfunc=lab.dnsfunc), sel
        ok, out = lab.opendkim_verifies(one)
        assert ok, f"opendkim-testmsg on {sel}: {out}"
        # One byte of the body changed: both verifiers refuse.
        bad = one.replace(b"signed twice.", b"signed twice!")
        assert not dkim.verify(bad, dnsfunc=lab.dnsfunc), sel
        ok, out = lab.opendkim_verifies(bad)
        assert not ok, f"opendkim-testmsg accepted a changed body ({sel})"


def test_sendmail_pickup_mail_is_signed_and_verifies_with_dkimpy(lab):
    """`sendmail -t` is local submission: signed like a submission when the
    From: domain has keys, and only then."""
    msg = (b"From: Cron Daemon <user2@example.org>\nTo: a@example.org\n"
           b"Subject: from sendmail\nDate: Sun, 06 Dec 2026 10:00:00 +0000\n\n"
           b"picked up\nand signed\n")
    r = subprocess.run([bin_path("sendmail"), "-C", lab.config, "-t", "-oi"],
                       input=msg, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    [got] = lab.inbox(1)
    assert got.count(b"DKIM-Signature:") == 2, got
    assert b"Authentication-Results:" not in got, got
    for sel in ("rsa1", "ed1"):
        one = only_signature(got, sel)
        assert dkim.verify(one, dnsfunc=lab.dnsfunc), sel
        assert not dkim.verify(one.replace(b"picked up", b"picked Up"), dnsfunc=lab.dnsfunc), sel
    # A From: domain without a key goes unsigned.
    r = subprocess.run([bin_path("sendmail"), "-C", lab.config, "-t", "-oi"],
                       input=msg.replace(b"user2@example.org", b"cron@other.org"),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    unsigned = [m for m in lab.inbox(2) if m != got]
    assert len(unsigned) == 1 and b"DKIM-Signature:" not in unsigned[0], unsigned


def auth_results(msg: bytes) -> str:
    head = msg.replace(b"\r\n", b"\n").partition(b"\n\n")[0].decode()
    m = re.search(r"^Authentication-Results: .*?(?=\n\S)", head, re.S | re.M)
    assert m, head
    return m.group(0)


def test_inbound_checks_pass_our_mail_and_dkimsign_mail(lab):
    lab.submit(MSG)
    [signed] = lab.inbox(1)
    # Our own signed message, arriving from outside: everything passes.
    body = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert lab.inbound("user2@example.org", body) is None
    # A message signed by dkimpy's dkimsign for other.org, whose SPF does
    # not list us: DKIM aligns, so DMARC passes.
    plain = (b"From: x@other.org\r\nTo: a@example.org\r\nSubject: from dkimpy\r\n"
             b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nsigned by dkimsign\r\n")
    sig = subprocess.run(["dkimsign", "py", "other.org", lab.py_key],
                         input=plain, capture_output=True, check=True).stdout
    assert sig.startswith(b"DKIM-Signature:"), sig
    assert lab.inbound("x@other.org", sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) is None
    # The same with one byte changed: the signature fails.
    bad = sig.replace(b"signed by dkimsign", b"signed by dkimsigN")
    assert lab.inbound("x@other.org", bad.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) is None
    got = lab.inbox(4)
    # Told apart by content, not by modification time: two deliveries in
    # the same clock tick have the same one.
    [changed] = [m for m in got if b"signed by dkimsigN" in m]
    [py] = [m for m in got if b"signed by dkimsign" in m and m is not changed]
    [ours] = [m for m in got if b"dkimsig" not in m and m != signed
              and b"\nAuthentication-Results:" in m.replace(b"\r\n", b"\n")]
    ar = auth_results(ours)
    assert ar.startswith(f"Authentication-Results: {HOST};"), ar
    assert "dkim=pass" in ar and "header.d=example.org" in ar, ar
    assert ar.count("dkim=pass") == 2, ar
    assert "spf=pass" in ar and "smtp.mailfrom=user2@example.org" in ar, ar
    assert "dmarc=pass" in ar, ar
    ar = auth_results(py)
    assert "dkim=pass" in ar and "@other.org header.s=py" in ar, ar
    assert "spf=fail" in ar and "dmarc=pass" in ar, ar
    ar = auth_results(changed)
    assert "dkim=pass" not in ar and "dmarc=fail" in ar, ar
    # RFC 6376 section 6.1.3 PERMFAIL, worded as OpenDKIM does (RFC 8601).
    assert "dkim=fail (body hash did not verify) header.i=@other.org" in ar, ar
    assert "authentication results" in lab.smtpd.output()


FORGED = (b"Authentication-Results: mail.example.net; dkim=pass header.d=forged.org\r\n"
          b"Authentication-Results: elsewhere.example; spf=pass\r\n"
          b"From: ceo@forged.org\r\nTo: a@example.org\r\nSubject: pay this\r\n\r\nnow\r\n")


def test_dmarc_failure_is_tagged_or_refused_and_forged_results_go(lab):
    assert lab.inbound("ceo@forged.org", FORGED) is None
    [got] = lab.inbox(1)
    head = got.replace(b"\r\n", b"\n").partition(b"\n\n")[0].decode()
    # Ours is the only one naming our host; the other host's stays.
    assert head.count(f"Authentication-Results: {HOST}") == 1, head
    assert "dkim=pass header.d=forged.org" not in head, head
    assert "Authentication-Results: elsewhere.example; spf=pass" in head, head
    ar = auth_results(got)
    assert "spf=fail" in ar and "dmarc=fail" in ar and "policy.dmarc=reject" in ar, ar
    # With the policy key on (OpenDMARC's RejectFailures), after a reload.
    lab.write_config(dmarc_reject=True)
    lab.smtpd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    refused = None
    while time.monotonic() < deadline:
        refused = lab.inbound("ceo@forged.org", FORGED)
        if refused:
            break
        time.sleep(0.3)
    assert refused and refused[0] == 550 and refused[1].startswith("5.7.1"), refused
    assert "forged.org" in refused[1]
    # Mail that passes is not affected.
    assert lab.inbound("user2@example.org", MSG) is None


def test_dnsd_serves_the_lab_zone_records_long_txt_as_strings(daemons):
    """docs/mail-auth.md's lab zone: the RSA key record (over 255 octets)
    comes back as one TXT record of two strings joining into the key."""
    zone = bin_path("dnsd").parents[2] / "bins/dnsd/zones/csuvnetwork.com.mail-auth.zone"
    text = zone.read_text()
    m = re.search(r's2026\._domainkey\S* IN TXT \((.*?)\)', text, re.S)
    want = "".join(re.findall(r'"([^"]*)"', m.group(1))).encode()
    port = free_port()
    daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{port}", "--zone", f"csuvnetwork.com={zone}"])
    wait_tcp(port)

    def txt(name, tcp=False):
        q = dns.message.make_query(name, "TXT")
        r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=5)
        return [rd.strings for rrset in r.answer for rd in rrset]

    for tcp in (False, True):
        [strings] = txt("s2026._domainkey.csuvnetwork.com.", tcp)
        assert len(strings) == 2 and all(len(s) <= 255 for s in strings), strings
        assert b"".join(strings) == want
        assert b"".join(strings).startswith(b"v=DKIM1; k=rsa; p=MIIB")
    assert txt("csuvnetwork.com.") == [(b"v=spf1 mx -all",)]
    [dmarc] = txt("_dmarc.csuvnetwork.com.")
    assert b"".join(dmarc).startswith(b"v=DMARC1; p=quarantine")
    [ed] = txt("e2026._domainkey.csuvnetwork.com.")
    assert b"".join(ed).startswith(b"v=DKIM1; k=ed25519; p=")


def test_two_instances_dkim_spf_dmarc_pass_end_to_end(tmp_path, daemons):
    """example.org's smtpd signs and sends through its outbound queue to
    other.org's smtpd, which checks it against the records dnsd serves."""
    port = free_port()
    (tmp_path / "example.org").mkdir()
    lab = Lab(tmp_path / "example.org", daemons, transport=f"other.org smtp:[127.0.0.1]:{port}\n")
    # The receiver takes the port the sender's transport table names.
    smtp, inbox, rx = receiver_on(tmp_path / "other.org", daemons, lab.dns_addr, port)
    lab.submit(MSG.replace(b"To: a@example.org", b"To: b@other.org"), to="b@other.org")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (inbox.exists() and any(inbox.iterdir())):
        time.sleep(0.2)
    got = [p.read_bytes() for p in inbox.iterdir()] if inbox.exists() else []
    assert got, lab.smtpd.output()[-2000:] + rx.output()[-2000:]
    ar = auth_results(got[0])
    assert ar.startswith("Authentication-Results: mx.other.org;"), ar
    assert ar.count("dkim=pass") == 2, ar
    assert "spf=pass" in ar and "smtp.mailfrom=user2@example.org" in ar, ar
    assert "dmarc=pass header.from=example.org" in ar, ar
