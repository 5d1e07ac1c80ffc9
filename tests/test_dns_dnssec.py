"""dnsd serving zones signed by real signers (RFC 4035 3.1, RFC 5155 7.2).

A test zone is signed by BIND's dnssec-signzone (NSEC, NSEC3, NSEC3 with
opt-out), by ldns-signzone (NSEC, NSEC3 with salt and iterations) and by
Knot's kzonesign (NSEC, NSEC3; keys made by keymgr's policy);
dnsd serves it on loopback and BIND's delv, given the zone's key as its
trust anchor, validates positive, NXDOMAIN, NODATA and wildcard answers.
dnspython checks every returned RRset's signature with
dns.dnssec.validate and that the NSEC/NSEC3 records cover what they must.
"""
import base64
import shutil
import subprocess

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from conftest import bin_path, free_port, wait_tcp

ORIGIN = "example.test."
ZONE = """$TTL 300
$ORIGIN example.test.
@ IN SOA ns root 7 3600 900 604800 300
  NS ns
  MX 10 mail
ns A 192.0.2.1
mail A 192.0.2.2
www CNAME web
web A 192.0.2.3
*.wild A 192.0.2.4
a.b.c TXT "deep"
big TXT "%s" "%s"
sub NS ns.sub
ns.sub A 192.0.2.5
secure NS ns.secure
secure DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.secure A 192.0.2.6
dn DNAME example.test.
""" % ("x" * 200, "y" * 200)

TOOLS = {"dnssec-signzone": "bind9-utils", "dnssec-keygen": "bind9-utils",
         "ldns-signzone": "ldnsutils", "ldns-keygen": "ldnsutils",
         "delv": "bind9-dnsutils", "kzonesign": "knot-dnssecutils"}


def ensure_tools():
    """Installs the signers and delv quietly when missing (as
    scripts/test.sh does for CI)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       capture_output=True, timeout=600,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    still = [t for t in TOOLS if shutil.which(t) is None]
    if still:
        pytest.skip("missing %s (packages %s)" % (", ".join(still), ", ".join(missing)))


def run(*args, cwd):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=120).stdout


def sign(kind, d):
    """Signs ZONE in directory d; returns (signed file, KSK DNSKEY text)."""
    (d / "zone").write_text(ZONE)
    if kind.startswith("bind"):
        ksk = run("dnssec-keygen", "-q", "-a", "ECDSAP256SHA256", "-f", "KSK", ORIGIN, cwd=d).strip()
        zsk = run("dnssec-keygen", "-q", "-a", "ECDSAP256SHA256", ORIGIN, cwd=d).strip()
        with open(d / "zone", "a") as f:
            f.write("$INCLUDE %s.key\n$INCLUDE %s.key\n" % (ksk, zsk))
        extra = {"bind-nsec": [], "bind-nsec3": ["-3", "-", "-H", "0"],
                 "bind-nsec3-optout": ["-3", "-", "-H", "0", "-A"]}[kind]
        run("dnssec-signzone", "-q", *extra, "-o", ORIGIN, "-f", "signed", "zone", ksk, zsk, cwd=d)
    elif kind.startswith("knot"):
        # Knot's kzonesign: keys made by the policy in its KASP database.
        nsec3 = "on" if kind == "knot-nsec3" else "off"
        (d / "knot.conf").write_text(f"""database:
    storage: {d}
    kasp-db: {d}/keys
policy:
  - id: p
    algorithm: ecdsap256sha256
    nsec3: {nsec3}
    nsec3-iterations: 0
    nsec3-salt-length: 0
zone:
  - domain: {ORIGIN}
    file: {d}/zone
    dnssec-signing: on
    dnssec-policy: p
""")
        run("kzonesign", "-c", str(d / "knot.conf"), "-o", str(d / "out"), ORIGIN, cwd=d)
        signed = next((d / "out").iterdir())
        for ln in signed.read_text().splitlines():
            f = ln.split()
            if "DNSKEY" in f and f[f.index("DNSKEY") + 1] == "257":
                return signed, f[f.index("DNSKEY") + 1:]
        raise AssertionError("no KSK in " + signed.read_text())
    else:
        ksk = run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", ORIGIN, cwd=d).strip()
        zsk = run("ldns-keygen", "-a", "ECDSAP256SHA256", ORIGIN, cwd=d).strip()
        extra = {"ldns-nsec": [], "ldns-nsec3": ["-n", "-s", "abcd", "-t", "3"]}[kind]
        run("ldns-signzone", *extra, "-o", ORIGIN, "-f", "signed", "zone", ksk, zsk, cwd=d)
    key = (d / (ksk + ".key")).read_text()
    line = next(ln for ln in key.splitlines() if "DNSKEY" in ln and not ln.startswith(";"))
    fields = line.split(";")[0].split()
    i = fields.index("DNSKEY")
    return d / "signed", fields[i + 1:]


KINDS = ["bind-nsec", "bind-nsec3", "bind-nsec3-optout", "ldns-nsec", "ldns-nsec3",
         "knot-nsec", "knot-nsec3"]


@pytest.fixture(scope="module", params=KINDS)
def signed(request, tmp_path_factory):
    ensure_tools()
    d = tmp_path_factory.mktemp(request.param)
    zone, ksk = sign(request.param, d)
    flags, proto, alg, *b64 = ksk
    anchor = d / "anchor.conf"
    anchor.write_text('trust-anchors { %s static-key %s %s %s "%s"; };\n'
                      % (ORIGIN, flags, proto, alg, "".join(b64)))
    return request.param, zone, anchor


@pytest.fixture
def server(daemons, signed):
    kind, zone, anchor = signed
    port = free_port()
    daemons([bin_path("dnsd"), "--listen", f"127.0.0.1:{port}",
             "--zone", f"example.test={zone}", "--workers", "1"])
    wait_tcp(port)
    return kind, port, anchor


def delv(port, anchor, name, rdtype):
    out = subprocess.run(["delv", "@127.0.0.1", "-p", str(port), "-a", str(anchor),
                          "+root=" + ORIGIN, name, rdtype],
                         capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


def ask(port, name, rdtype, do=True, tcp=False, payload=1232):
    q = dns.message.make_query(name, rdtype, want_dnssec=do, payload=payload)
    f = dns.query.tcp if tcp else dns.query.udp
    return f(q, "127.0.0.1", port=port, timeout=3)


def keys(port):
    r = ask(port, ORIGIN, "DNSKEY", tcp=True)
    dnskey = r.find_rrset(r.answer, dns.name.from_text(ORIGIN), "IN", "DNSKEY")
    sig = r.find_rrset(r.answer, dns.name.from_text(ORIGIN), "IN", "RRSIG", "DNSKEY")
    dns.dnssec.validate(dnskey, sig, {dns.name.from_text(ORIGIN): dnskey})
    return {dns.name.from_text(ORIGIN): dnskey}


def validate_sections(r, keyring):
    """Every RRset of answer and authority has a valid RRSIG (except the
    unsigned NS of a delegation); returns the validated types."""
    seen = []
    for section in (r.answer, r.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sigs = [s for s in section if s.rdtype == dns.rdatatype.RRSIG
                    and s.covers == rrset.rdtype and s.name == rrset.name]
            if rrset.rdtype == dns.rdatatype.NS and rrset.name != dns.name.from_text(ORIGIN):
                assert not sigs
                continue
            assert sigs, "no RRSIG for %s" % rrset
            dns.dnssec.validate(rrset, sigs[0], keyring)
            seen.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)))
    return seen


def between(lo, x, hi):
    """x strictly inside (lo, hi) on a circular order."""
    return lo < x < hi if lo < hi else (x > lo or x < hi)


def nsec_covers(r, name):
    name = dns.name.from_text(name)
    for rrset in r.authority:
        if rrset.rdtype == dns.rdatatype.NSEC:
            if between(rrset.name, name, rrset[0].next):
                return True
    return False


def nsec3_covers(r, name):
    for rrset in r.authority:
        if rrset.rdtype == dns.rdatatype.NSEC3:
            rd = rrset[0]
            h = dns.dnssec.nsec3_hash(name, rd.salt, rd.iterations, rd.algorithm).lower()
            owner = rrset.name.labels[0].decode().lower()
            nxt = base64.b32hexencode(rd.next).decode().lower()
            if between(owner, h, nxt):
                return True
    return False


def nsec3_matches(r, name):
    for rrset in r.authority:
        if rrset.rdtype == dns.rdatatype.NSEC3:
            rd = rrset[0]
            h = dns.dnssec.nsec3_hash(name, rd.salt, rd.iterations, rd.algorithm).lower()
            if rrset.name.labels[0].decode().lower() == h:
                return True
    return False


CASES = [
    # (name, type, delv's verdict, rcode)
    ("mail.example.test.", "A", "; fully validated", "NOERROR"),
    ("example.test.", "MX", "; fully validated", "NOERROR"),
    ("www.example.test.", "A", "; fully validated", "NOERROR"),  # CNAME chain
    ("x.wild.example.test.", "A", "; fully validated", "NOERROR"),  # wildcard
    ("nx.example.test.", "A", "negative response, fully validated", "NXDOMAIN"),
    ("nx.a.b.c.example.test.", "A", "negative response, fully validated", "NXDOMAIN"),
    ("mail.example.test.", "MX", "negative response, fully validated", "NOERROR"),  # NODATA
    ("b.c.example.test.", "TXT", "negative response, fully validated", "NOERROR"),  # ENT
    ("x.wild.example.test.", "MX", "negative response, fully validated", "NOERROR"),  # wildcard NODATA
]


def test_delv_validates(server):
    kind, port, anchor = server
    for name, rdtype, verdict, _ in CASES:
        out = delv(port, anchor, name, rdtype)
        if kind.endswith("optout") and name.startswith("x.wild") and rdtype == "A":
            # The NSEC3 covering the next closer name has Opt-Out: an
            # unsigned delegation could hide there, so the synthesised
            # answer is provably insecure, not bogus (RFC 5155 9.2).
            verdict = "; unsigned answer"
        assert verdict in out, (kind, name, rdtype, out)


def test_dnspython_validates_and_proofs_cover(server):
    kind, port, _ = server
    keyring = keys(port)
    nsec3 = "nsec3" in kind
    for name, rdtype, _, rc in CASES:
        r = ask(port, name, rdtype)
        assert dns.rcode.to_text(r.rcode()) == rc, (name, rdtype, r)
        assert r.ednsflags & dns.flags.DO, "DO echoed (RFC 3225 3)"
        assert r.flags & dns.flags.AA
        seen = validate_sections(r, keyring)
        if rc == "NXDOMAIN":
            # Both names' parents exist: the closest encloser, and the
            # next closer name is the name itself.
            ce = name.split(".", 1)[1]
            if nsec3:
                # Closest encloser proof plus the wildcard's denial (RFC 5155 7.2.2).
                assert nsec3_matches(r, ce) and nsec3_covers(r, name), (name, r)
                assert nsec3_covers(r, "*." + ce), (name, r)
            else:
                assert nsec_covers(r, name) and nsec_covers(r, "*." + ce), (name, r)
        elif "wild" in name:
            types = {t for _, t in seen}
            assert types & {"NSEC", "NSEC3"}, "no proof the exact name is absent: %s" % r
        elif not r.answer:
            assert {t for _, t in seen} & {"NSEC", "NSEC3"}, r


def test_dname_answers_validate(server):
    """Below a DNAME (RFC 6672 3.2): the signed DNAME, the CNAME it
    synthesizes (unsigned, 5.3.1), then the new name's signed data or its
    denial; delv validates both, as it does Knot's answers."""
    kind, port, anchor = server
    out = delv(port, anchor, "mail.dn.example.test.", "A")
    assert "; fully validated" in out and "192.0.2.2" in out, (kind, out)
    out = delv(port, anchor, "nx.dn.example.test.", "A")
    assert "; fully validated" in out and "NXDOMAIN" in out, (kind, out)
    keyring = keys(port)
    r = ask(port, "mail.dn.example.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    got = [(x.name.to_text(), dns.rdatatype.to_text(x.rdtype)) for x in r.answer]
    assert got == [("dn.example.test.", "DNAME"), ("dn.example.test.", "RRSIG"),
                   ("mail.dn.example.test.", "CNAME"),
                   ("mail.example.test.", "A"), ("mail.example.test.", "RRSIG")], r
    for owner, rdtype in (("dn.example.test.", "DNAME"), ("mail.example.test.", "A")):
        rrset = r.find_rrset(r.answer, dns.name.from_text(owner), "IN", rdtype)
        sig = r.find_rrset(r.answer, dns.name.from_text(owner), "IN", "RRSIG", rdtype)
        dns.dnssec.validate(rrset, sig, keyring)
    assert r.answer[2][0].target.to_text() == "mail.example.test."
    assert r.answer[2].ttl == r.answer[0].ttl


def test_without_do_no_dnssec_records(server):
    _, port, _ = server
    for name, rdtype, _, _ in CASES:
        r = ask(port, name, rdtype, do=False)
        for rrset in r.answer + r.authority + r.additional:
            assert rrset.rdtype not in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC,
                                        dns.rdatatype.NSEC3), (name, rdtype, r)
        assert not r.ednsflags & dns.flags.DO
    # Asked for by type, they are data like any other.
    r = ask(port, "mail.example.test.", "RRSIG", do=False)
    assert r.answer and r.answer[0].rdtype == dns.rdatatype.RRSIG
    r = ask(port, ORIGIN, "DNSKEY", do=False)
    assert r.answer and r.answer[0].rdtype == dns.rdatatype.DNSKEY
    assert len(r.answer) == 1


def test_referrals_carry_ds_or_its_denial(server):
    kind, port, _ = server
    keyring = keys(port)
    r = ask(port, "www.secure.example.test.", "A")
    assert not r.flags & dns.flags.AA and not r.answer
    types = [dns.rdatatype.to_text(x.rdtype) for x in r.authority]
    assert "NS" in types and "DS" in types, r
    assert ("secure.example.test.", "DS") in validate_sections(r, keyring)
    r = ask(port, "www.sub.example.test.", "A")
    types = {dns.rdatatype.to_text(x.rdtype) for x in r.authority}
    assert "DS" not in types
    validate_sections(r, keyring)
    if kind == "bind-nsec3-optout":
        # Opt-out: closest provable encloser and the NSEC3 covering sub.
        assert nsec3_matches(r, ORIGIN) and nsec3_covers(r, "sub.example.test."), r
    elif "nsec3" in kind:
        assert nsec3_matches(r, "sub.example.test."), r
    else:
        nsec = [x for x in r.authority if x.rdtype == dns.rdatatype.NSEC]
        assert nsec and nsec[0].name == dns.name.from_text("sub.example.test.")
        bitmap = nsec[0][0].to_text()
        assert " NS " in bitmap + " " and " DS " not in bitmap + " ", bitmap
    # Glue is still there.
    assert any(x.rdtype == dns.rdatatype.A for x in r.additional)


def test_nsec3_owner_names_do_not_exist(server):
    kind, port, _ = server
    if "nsec3" not in kind:
        pytest.skip("NSEC zone")
    r = ask(port, ORIGIN, "NSEC3PARAM", tcp=True)
    rd = r.answer[0][0]
    h = dns.dnssec.nsec3_hash(ORIGIN, rd.salt, rd.iterations, rd.algorithm).lower()
    # RFC 5155 7.2.8: the hashed owner answers as a name that isn't there.
    r = ask(port, h + "." + ORIGIN, "NSEC3")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert not r.answer


def test_truncation_with_signatures(server):
    _, port, _ = server
    # The TXT fits 512 octets alone, not with its RRSIG.
    r = ask(port, "big.example.test.", "TXT", do=False, payload=512)
    assert not r.flags & dns.flags.TC and r.answer
    r = ask(port, "big.example.test.", "TXT", do=True, payload=512)
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(port, "big.example.test.", "TXT", do=True, tcp=True)
    assert not r.flags & dns.flags.TC
    validate_sections(r, keys(port))
