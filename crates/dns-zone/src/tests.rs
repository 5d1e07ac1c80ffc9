//! Parser, checker and responder tests (the lab zone, every syntax rule,
//! the known traps, RFC behaviours), decoding answers with hickory-proto.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use crate::*;

const LAB: &str = "$TTL 1D
$ORIGIN csuvnetwork.com.
@      IN SOA  csuvnetwork.com. root (
                                0      ; serial
                                1H      ; refresh
                                1H      ; retry
                                1W      ; expire
                                3H      ; minimum
)
      IN NS   dnsserver
@      IN MX   10    mail
mail   IN A    192.168.3.10
dnsserver IN A    192.168.3.10
";

fn name(s: &str) -> Name {
    Name::parse(s, None).unwrap()
}

fn parse_str(text: &str, origin: &str) -> Parsed {
    let opts = ParseOptions {
        origin: Some(name(origin)),
        ..ParseOptions::default()
    };
    parse(text.as_bytes(), "t.zone", &opts, &mut NoIncludes)
}

fn ok(text: &str, origin: &str) -> Vec<Record> {
    let p = parse_str(text, origin);
    assert!(p.errors.is_empty(), "unexpected errors: {:#?}", p.errors);
    p.records
}

fn errs(text: &str, origin: &str) -> Vec<ZoneError> {
    let p = parse_str(text, origin);
    assert!(!p.errors.is_empty(), "expected an error for {text:?}");
    p.errors
}

fn hick(r: &Record) -> RData {
    r.to_hickory().unwrap().data().clone()
}

// ---------------------------------------------------------------- parser

#[test]
fn lab_zone_parses_exactly() {
    let recs = ok(LAB, "csuvnetwork.com.");
    assert_eq!(recs.len(), 5);
    let soa = &recs[0];
    assert_eq!(soa.rtype, types::rtype::SOA);
    assert_eq!(soa.ttl, 86_400);
    let RData::SOA(s) = hick(soa) else { panic!() };
    assert_eq!(s.serial(), 0);
    assert_eq!(s.refresh(), 3600);
    assert_eq!(s.expire(), 604_800);
    assert_eq!(s.minimum(), 10_800);
    assert_eq!(s.rname().to_string(), "root.csuvnetwork.com.");
    // The blank owner inherits the SOA's owner.
    assert_eq!(recs[1].owner, name("csuvnetwork.com."));
    assert_eq!(hick(&recs[1]).to_string(), "dnsserver.csuvnetwork.com.");
    assert_eq!(hick(&recs[2]).to_string(), "10 mail.csuvnetwork.com.");
    assert_eq!(recs[3].owner, name("mail.csuvnetwork.com."));
    assert_eq!(hick(&recs[3]).to_string(), "192.168.3.10");
    assert_eq!(recs[3].pos.line, 12);
    let (zone, warnings) = load_zone(
        LAB.as_bytes(),
        "lab",
        &name("csuvnetwork.com."),
        &mut NoIncludes,
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(zone.record_count(), 5);
    assert_eq!(zone.serial(), Some(0));
    assert_eq!(zone.negative_ttl(), 10_800);
}

#[test]
fn dkim_quoted_strings_inside_parentheses() {
    let recs = ok(
        "$TTL 60\nsel._domainkey IN TXT ( \"v=DKIM1; k=rsa; \"\n   \"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC\" ) ; key\n",
        "example.com.",
    );
    let RData::TXT(t) = hick(&recs[0]) else {
        panic!()
    };
    let parts: Vec<&[u8]> = t.txt_data().iter().map(|b| &b[..]).collect();
    assert_eq!(
        parts,
        vec![
            &b"v=DKIM1; k=rsa; "[..],
            &b"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"[..]
        ]
    );
}

#[test]
fn long_dkim_record_split_into_255_octet_strings() {
    // A 2048-bit RSA key record is about 410 octets: one TXT record of
    // several strings (RFC 6376 section 3.6.2.2), as `mailctl dkim keygen`
    // writes it. A single string over 255 octets is an error (RFC 1035
    // section 3.3), as BIND's named-checkzone says.
    let p = format!("p={}", "A".repeat(392));
    let text = format!("v=DKIM1; k=rsa; {p}");
    let (a, b) = text.split_at(255);
    let recs = ok(
        &format!("$TTL 60\ns._domainkey IN TXT (\n\t\"{a}\"\n\t\"{b}\" )\n"),
        "example.com.",
    );
    let RData::TXT(t) = hick(&recs[0]) else {
        panic!()
    };
    let parts: Vec<&[u8]> = t.txt_data().iter().map(|b| &b[..]).collect();
    assert_eq!(parts, vec![a.as_bytes(), b.as_bytes()]);
    assert_eq!(parts.concat(), text.as_bytes());
    let e = errs(&format!("$TTL 60\ns IN TXT \"{text}\"\n"), "example.com.");
    assert!(format!("{e:?}").contains("longer than 255"), "{e:?}");
}

#[test]
fn decimal_escapes_are_decimal() {
    let recs = ok("$TTL 60\n\\065b IN TXT \"\\065\\;\\\"x\"\n", "example.com.");
    assert_eq!(recs[0].owner, name("Ab.example.com."));
    assert_eq!(&recs[0].rdata[..], b"\x04A;\"x");
}

#[test]
fn relative_origin_is_relative_to_current_origin() {
    let recs = ok(
        "$TTL 60\n$ORIGIN sub\nwww IN A 192.0.2.1\n$ORIGIN example.org.\n@ IN A 192.0.2.2\n",
        "example.com.",
    );
    assert_eq!(recs[0].owner, name("www.sub.example.com."));
    assert_eq!(recs[1].owner, name("example.org."));
}

struct MapLoader(HashMap<&'static str, &'static str>);

impl IncludeLoader for MapLoader {
    fn load(&mut self, path: &str, _including: &str) -> Result<(String, Vec<u8>), String> {
        self.0
            .get(path)
            .map(|t| (path.to_string(), t.as_bytes().to_vec()))
            .ok_or_else(|| "no such file".to_string())
    }
}

#[test]
fn include_with_origin_and_without() {
    let mut loader = MapLoader(HashMap::from([
        ("hosts.inc", "www IN A 192.0.2.1\n"),
        ("bad.inc", "oops IN A 999.0.0.1\n"),
        ("loop.inc", "$INCLUDE loop.inc\n"),
    ]));
    let opts = ParseOptions {
        origin: Some(name("example.com.")),
        ..ParseOptions::default()
    };
    let text =
        "$TTL 60\n$INCLUDE hosts.inc lab.example.com.\n$INCLUDE hosts.inc\nafter IN A 192.0.2.9\n";
    let p = parse(text.as_bytes(), "main.zone", &opts, &mut loader);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.records[0].owner, name("www.lab.example.com."));
    assert_eq!(p.records[1].owner, name("www.example.com."));
    // The include did not change the parent's origin.
    assert_eq!(p.records[2].owner, name("after.example.com."));
    assert_eq!(&*p.records[0].pos.file, "hosts.inc");

    let p = parse(
        b"$TTL 60\n$INCLUDE bad.inc\n$INCLUDE missing.inc\n",
        "main.zone",
        &opts,
        &mut loader,
    );
    assert_eq!(p.errors.len(), 2);
    assert_eq!(
        p.errors[0].to_string(),
        "bad.inc:1:11: expected an IPv4 address"
    );
    assert!(p.errors[1]
        .to_string()
        .starts_with("main.zone:3:10: $INCLUDE \"missing.inc\": no such file"));

    let p = parse(b"$INCLUDE loop.inc\n", "main.zone", &opts, &mut loader);
    assert!(p
        .errors
        .iter()
        .any(|e| e.to_string().contains("nested too deeply")));
    let p = parse(b"$INCLUDE x\n", "main.zone", &opts, &mut NoIncludes);
    assert_eq!(p.errors.len(), 1);
}

#[test]
fn no_ttl_uses_soa_minimum_with_warning() {
    let p = parse_str(
        "@ IN SOA ns root 1 2 3 4 300\n IN NS ns\nns A 192.0.2.1\n",
        "example.com.",
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.records[0].ttl, 300);
    assert_eq!(p.records[2].ttl, 300);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].to_string().contains("SOA MINIMUM"));
    // Before any SOA and without $TTL there is no TTL at all.
    let e = errs("a A 192.0.2.1\n", "example.com.");
    assert_eq!(e[0].kind, ErrorKind::NoTtl);
    // RFC 1035: an explicit TTL carries over when $TTL is absent.
    let recs = ok("a 60 A 192.0.2.1\nb A 192.0.2.2\n", "example.com.");
    assert_eq!(recs[1].ttl, 60);
}

#[test]
fn class_and_ttl_in_either_order() {
    let recs = ok(
        "$TTL 5\na IN 600 A 192.0.2.1\nb 600 IN A 192.0.2.1\nc IN A 192.0.2.1\nd 1w2d3h4m5s A 192.0.2.1\ne 1H in a 192.0.2.1\n",
        "example.com.",
    );
    assert_eq!(
        recs.iter().map(|r| r.ttl).collect::<Vec<_>>(),
        vec![600, 600, 5, 788_645, 3600]
    );
    assert!(recs.iter().all(|r| r.class == 1));
}

#[test]
fn crlf_line_ends() {
    let text = LAB.replace('\n', "\r\n");
    assert_eq!(ok(&text, "csuvnetwork.com.").len(), 5);
}

#[test]
fn raw_utf8_in_txt() {
    let recs = ok(
        "$TTL 60\na IN TXT \"caf\u{e9} \u{4f60}\u{597d}\" unquoted\u{e9}\n",
        "example.com.",
    );
    let RData::TXT(t) = hick(&recs[0]) else {
        panic!()
    };
    assert_eq!(
        &t.txt_data()[0][..],
        "caf\u{e9} \u{4f60}\u{597d}".as_bytes()
    );
    assert_eq!(&t.txt_data()[1][..], "unquoted\u{e9}".as_bytes());
}

#[test]
fn missing_close_paren_is_an_error() {
    let e = errs(
        "@ IN SOA ns root ( 1 2 3 4 5\nns A 192.0.2.1\n",
        "example.com.",
    );
    assert_eq!(e[0].kind, ErrorKind::MissingClose { line: 1, col: 18 });
    let e = errs("a A 192.0.2.1 )\n", "example.com.");
    assert_eq!(e[0].kind, ErrorKind::UnbalancedClose);
}

#[test]
fn all_errors_reported_with_positions() {
    let p = parse_str(
        "$TTL 1h\na A 300.1.1.1\nb MX x mail\nc BOGUS x\nd A 192.0.2.1 extra\ne.. A 192.0.2.1\nf A 192.0.2.1\n",
        "example.com.",
    );
    let shown: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "t.zone:2:5: expected an IPv4 address",
            "t.zone:3:6: expected a preference (0-65535)",
            "t.zone:4:3: unknown record type \"BOGUS\"",
            "t.zone:5:15: unexpected \"extra\" after the record data",
            "t.zone:6:1: bad domain name: empty label",
        ]
    );
    assert_eq!(p.records.len(), 1);
}

#[test]
fn bind_rejects_these_too() {
    for (line, what) in [
        ("a A 1.2.3\n", "short IPv4"),
        ("a A 01.2.3.4\n", "leading zero IPv4"),
        ("a AAAA 1::2::3\n", "bad IPv6"),
        ("a MX 70000 b\n", "preference too large"),
        ("a CNAME\n", "missing target"),
        ("a TXT \"abc\n", "unterminated quote"),
        ("a IN CH A 192.0.2.1\n", "two classes"),
        ("a 1 2 A 192.0.2.1\n", "two TTLs"),
        ("a 4294967296 A 192.0.2.1\n", "TTL overflow"),
        ("a 1x A 192.0.2.1\n", "bad TTL unit"),
        ("$TTL\n", "$TTL without value"),
        ("$FOO x\n", "unknown directive"),
        ("a TYPE65534 \\# 4 0A0001\n", "generic length mismatch"),
        ("a TYPE65534 \\# 2 0A0\n", "odd hex"),
        ("a A \\# 3 0a0000\n", "generic A with 3 octets"),
        ("a OPT \\# 0\n", "meta type"),
        ("a ANY 1\n", "ANY is not data"),
        ("a TXT \"\\999\"\n", "escape over 255"),
        ("a SOA ns root 1 2 3 4\n", "SOA missing a field"),
        ("a NULL 1\n", "NULL needs generic form"),
        ("a DS 1 8 2 XYZ\n", "bad hex digest"),
        ("a DNSKEY 256 3 8 !!!\n", "bad base64"),
        ("a CAA 0 is-sue \"x\"\n", "bad CAA tag"),
        ("a IN ( A 192.0.2.1 ( )\n", "nested parens"),
        ("  A 192.0.2.1\n", "blank owner first"),
        ("a CLASS3 A 192.0.2.1\n", "class differs from zone"),
        ("$GENERATE 1-3 h$ A\n", "generate rhs missing"),
        ("$GENERATE 3-1 h$ A 10.0.0.$\n", "reversed range"),
        ("$GENERATE 1-999999 h$ A 10.0.0.1\n", "range too large"),
        ("\"quoted\" A 192.0.2.1\n", "quoted owner"),
        (
            "a RRSIG A 8 2 300 20241301000000 20240101000000 1 example.com. AAAA\n",
            "bad RRSIG time",
        ),
    ] {
        let prefix = if what == "class differs from zone" {
            "z IN A 192.0.2.9\n"
        } else {
            ""
        };
        let p = parse_str(&format!("$TTL 60\n{prefix}{line}"), "example.com.");
        assert!(!p.errors.is_empty(), "{what}: {line:?} was accepted");
    }
    let long_string = format!("$TTL 60\na TXT \"{}\"\n", "x".repeat(256));
    assert!(!parse_str(&long_string, "example.com.").errors.is_empty());
    let long_label = format!("$TTL 60\n{}.a A 192.0.2.1\n", "x".repeat(64));
    assert!(!parse_str(&long_label, "example.com.").errors.is_empty());
}

#[test]
fn every_type_hickory_represents() {
    let text = r#"$TTL 300
a A 192.0.2.1
aaaa AAAA 2001:db8::1
ns NS ns.example.net.
cn CNAME target
dn DNAME example.net.
ptr PTR host.example.net.
an ANAME target
mx MX 10 mail
txt TXT "one" two "three four"
srv SRV 0 5 5060 sip
caa CAA 0 issue "letsencrypt.org"
naptr NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp
hinfo HINFO "PC" "Linux"
sshfp SSHFP 1 1 123456789abcdef67890123456789abcdef67890
tlsa TLSA 3 1 1 ( 0C72AC70B745AC19998811B131D662C9
                 AC69DBDBE7CB23E5B514B56664C5D3D6 )
ds DS 60485 RSASHA1 1 2BB183AF5F22588179A53B0A98631FAD1A292118
cds CDS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118
dnskey DNSKEY 256 3 8 ( AwEAAcFcGsaxxdgiuuGmCkVImy4h99CqT7jwY3pexPGcnUFtR2Fh36BponcwtkZ4cAgtvd4Qs8PkxUdp6p/DlUmObdk= )
cdnskey CDNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==
key KEY 256 3 8 AwEAAcFcGsaxxdgiuuGmCkVImy4h99CqT7jwY3pexPGcnUFtR2Fh36Bp
rrsig RRSIG A 8 3 86400 20300101000000 20240101000000 2642 example.com. ( oJB1W6WNGv+ldvQ3WDG0MQkg5IEhjRip8WTrPYGv07h108dUKGMeDPKijVCHX3DDKdfb+v6oB9wfuh3DTJXUAfI/M0zmO/zz8bW0Rznl8O3tGNazPwQKkRN20XPXV6nwwfoXmJQbsLNrLfkGJ5D6fwFm8nN+6pBzeDQfsS3Ap3o= )
sig SIG A 8 3 86400 20300101000000 20240101000000 2642 example.com. oJB1W6WNGv+ldvQ3WDG0MQkg5IEhjRip8WTrPYGv07h1
nsec NSEC host.example.com. ( A MX RRSIG NSEC TYPE1234 )
nsec3 NSEC3 1 1 12 aabbccdd ( 2t7b4g4vsa5smi47k61mv5bv1a22bojr MX DNSKEY NS SOA NSEC3PARAM RRSIG )
nsec3param NSEC3PARAM 1 0 12 aabbccdd
nsec3nosalt NSEC3PARAM 1 0 0 -
openpgp OPENPGPKEY AQIDBAUGBwgJ
svcb SVCB 1 svc.example.net. alpn="h2,h3" port=8443
https HTTPS 1 . alpn=h2 ipv4hint=192.0.2.1
cert CERT 1 12345 8 AQIDBAUGBwgJ
csync CSYNC 66 3 A NS AAAA
spf SPF "v=spf1 -all"
gen TYPE65534 \# 4 0A000001
genempty TYPE65000 \# 0
genknown A \# 4 C0000201
gennull NULL \# 3 010203
"#;
    let recs = ok(text, "example.com.");
    assert_eq!(recs.len(), 36);
    let show: HashMap<String, String> = recs
        .iter()
        .filter(|r| !matches!(r.rtype, 39 | 99 | 65000 | 65534))
        .map(|r| (r.owner.to_string(), hick(r).to_string()))
        .collect();
    assert_eq!(show["a.example.com."], "192.0.2.1");
    assert_eq!(show["mx.example.com."], "10 mail.example.com.");
    assert_eq!(show["srv.example.com."], "0 5 5060 sip.example.com.");
    assert_eq!(show["genknown.example.com."], "192.0.2.1");
    assert_eq!(show["caa.example.com."], "0 issue \"letsencrypt.org\"");
    assert_eq!(show["hinfo.example.com."], "PC Linux");
    assert!(
        show["naptr.example.com."].ends_with("_sip._udp.example.com."),
        "{}",
        show["naptr.example.com."]
    );
    assert!(
        show["tlsa.example.com."]
            .to_lowercase()
            .contains("0c72ac70"),
        "{}",
        show["tlsa.example.com."]
    );
    assert!(
        show["nsec3param.example.com."].starts_with("1 0 12"),
        "{}",
        show["nsec3param.example.com."]
    );
    assert!(
        show["svcb.example.com."].contains("8443"),
        "{}",
        show["svcb.example.com."]
    );
    let nsec = recs.iter().find(|r| r.rtype == types::rtype::NSEC).unwrap();
    // RFC 4034 4.1.2: window 0 (A, MX, RRSIG, NSEC) and window 4 (TYPE1234).
    assert_eq!(&nsec.rdata[18..22], &[0, 6, 0x40, 0x01]);
    assert_eq!(&nsec.rdata[26..28], &[4, 27]);
    assert_eq!(nsec.rdata.len(), 18 + 8 + 29);
    let gen = recs.iter().find(|r| r.rtype == 65534).unwrap();
    assert_eq!(&gen.rdata[..], &[10, 0, 0, 1]);
    let dname = recs.iter().find(|r| r.rtype == 39).unwrap();
    assert_eq!(&dname.rdata[..], b"\x07example\x03net\x00");
    let rrsig = recs
        .iter()
        .find(|r| r.rtype == types::rtype::RRSIG)
        .unwrap();
    // Expiration 2030-01-01 = 1893456000.
    assert_eq!(&rrsig.rdata[8..12], &1_893_456_000u32.to_be_bytes());
}

#[test]
fn generic_class_and_type_forms() {
    let recs = ok(
        "$TTL 60\na CLASS1 TYPE1 192.0.2.1\nb IN TYPE16 \\# 4 03616263\n",
        "example.com.",
    );
    assert_eq!(recs[0].rtype, 1);
    assert_eq!(&recs[0].rdata[..], &[192, 0, 2, 1]);
    assert_eq!(&recs[1].rdata[..], b"\x03abc");
    // A CH zone is fine as long as it is consistent.
    let recs = ok("$TTL 60\na CH TXT x\nb TXT y\n", "example.com.");
    assert!(recs.iter().all(|r| r.class == 3));
}

#[test]
fn generate_directive() {
    let recs = ok(
        "$TTL 60\n$GENERATE 1-4/2 host-$ A 10.0.0.$\n$GENERATE 10-11 ${-9,3,d}.r PTR h${0,2,x}.example.com.\n$GENERATE 1-1 \\$x CNAME y$$\n",
        "example.com.",
    );
    let owners: Vec<String> = recs.iter().map(|r| r.owner.to_string()).collect();
    assert_eq!(
        owners,
        vec![
            "host-1.example.com.",
            "host-3.example.com.",
            "001.r.example.com.",
            "002.r.example.com.",
            "\\$x.example.com."
        ]
    );
    assert_eq!(&recs[1].rdata[..], &[10, 0, 0, 3]);
    assert_eq!(
        recs[3].to_hickory().unwrap().data().to_string(),
        "h0b.example.com."
    );
    assert_eq!(
        recs[4].to_hickory().unwrap().data().to_string(),
        "y\\$.example.com."
    );
    assert_eq!(recs[0].pos.line, 2);
}

#[test]
fn parse_options_and_relative_names_without_origin() {
    let p = parse(
        b"$TTL 1\nwww A 192.0.2.1\n",
        "x",
        &ParseOptions::default(),
        &mut NoIncludes,
    );
    assert_eq!(p.errors[0].kind, ErrorKind::Name(NameError::NoOrigin));
    let p = parse(
        b"$TTL 1\n$ORIGIN example.com.\nwww A 192.0.2.1\n",
        "x",
        &ParseOptions::default(),
        &mut NoIncludes,
    );
    assert!(p.errors.is_empty());
}

// ---------------------------------------------------------------- checks

fn check_errors(text: &str) -> Vec<String> {
    match load_zone(
        text.as_bytes(),
        "c.zone",
        &name("example.com."),
        &mut NoIncludes,
    ) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const HEAD: &str = "$TTL 300\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n";

#[test]
fn zone_checks_like_named_checkzone() {
    assert!(check_errors(HEAD).is_empty());
    let e = check_errors("$TTL 300\n@ NS ns\nns A 192.0.2.1\n");
    assert!(e[0].contains("no SOA"), "{e:?}");
    let e = check_errors(&format!("{HEAD}@ SOA ns root 2 2 3 4 5\n"));
    assert!(e[0].contains("c.zone:5:1: more than one SOA"), "{e:?}");
    let e = check_errors("$TTL 300\n@ SOA ns root 1 2 3 4 5\nns A 192.0.2.1\n");
    assert!(e[0].contains("no NS records"), "{e:?}");
    let e = check_errors(&format!("{HEAD}www CNAME ns\nwww A 192.0.2.2\n"));
    assert!(e[0].contains("CNAME and other data"), "{e:?}");
    let e = check_errors(&format!("{HEAD}www CNAME ns\nwww CNAME a\n"));
    assert!(e.iter().any(|m| m.contains("more than one CNAME")), "{e:?}");
    let e = check_errors(&format!("{HEAD}www.example.org. A 192.0.2.2\n"));
    assert!(
        e[0].contains("c.zone:5:1: www.example.org. is outside the zone"),
        "{e:?}"
    );
    let e = check_errors(&format!("{HEAD}@ MX 10 alias\nalias CNAME ns\n"));
    assert!(e[0].contains("is a CNAME"), "{e:?}");
    let e = check_errors(&format!("{HEAD}sub NS ns.sub\n"));
    assert!(e[0].contains("has no address records"), "{e:?}");
    let e = check_errors(&format!("{HEAD}sub SOA ns root 1 2 3 4 5\n"));
    assert!(e[0].contains("not at the zone apex"), "{e:?}");
    // Every check error is reported, in file order.
    let e = check_errors(&format!(
        "{HEAD}x.example.org. A 192.0.2.2\nwww CNAME ns\nwww TXT t\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn duplicates_and_ttl_mismatch_are_warnings() {
    let (zone, w) = load_zone(
        format!("{HEAD}a A 192.0.2.5\na A 192.0.2.5\na 60 A 192.0.2.6\nsub NS ns.sub\nns.sub A 192.0.2.7\nx.sub TXT hidden\n").as_bytes(),
        "c.zone",
        &name("example.com."),
        &mut NoIncludes,
    )
    .unwrap();
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        w.iter().any(|m| m.contains("c.zone:6:1: duplicate A")),
        "{w:?}"
    );
    assert!(w.iter().any(|m| m.contains("TTL 60 differs")), "{w:?}");
    assert!(w.iter().any(|m| m.contains("below a delegation")), "{w:?}");
    assert_eq!(
        zone.node(b"\x01a\x07example\x03com\x00")
            .unwrap()
            .rrset(1)
            .unwrap()
            .count,
        2
    );
}

// ------------------------------------------------------------- responder

const TEST_ZONE: &str = r#"$TTL 3600
$ORIGIN example.com.
@ IN SOA ns1 hostmaster ( 2024010101 1h 15m 1w 300 )
  IN NS ns1
  IN NS ns2.example.net.
  IN MX 10 mail
  IN TXT "apex"
ns1 IN A 192.0.2.1
mail IN A 192.0.2.25
mail IN AAAA 2001:db8::25
www IN CNAME web
web IN A 192.0.2.80
ext IN CNAME www.example.org.
loop1 IN CNAME loop2
loop2 IN CNAME loop1
dangling IN CNAME nothere
*.wild IN A 192.0.2.99
*.wild IN MX 5 mail
cw IN CNAME x.wild
a.b.c IN A 192.0.2.3
_sip._tcp IN SRV 0 5 5060 mail
sub IN NS ns.sub
sub IN DS 12345 8 2 ABCDEF01
ns.sub IN A 192.0.2.53
big IN TXT "@@BIG@@"
"#;

fn responder_with(extra: &[(&str, &str)], cfg: ResponderConfig) -> Responder {
    let big: String = (0..30)
        .map(|i| format!("\"{}\" ", format!("{i:02}").repeat(60)))
        .collect();
    let text = TEST_ZONE.replace("\"@@BIG@@\"", &big);
    let mut cat = Catalog::new();
    let (z, _) = load_zone(text.as_bytes(), "t", &name("example.com."), &mut NoIncludes).unwrap();
    cat.insert(z);
    for (origin, text) in extra {
        let (z, _) = load_zone(text.as_bytes(), "t2", &name(origin), &mut NoIncludes).unwrap();
        cat.insert(z);
    }
    Responder::new(Arc::new(cat), cfg)
}

fn responder() -> Responder {
    responder_with(&[], ResponderConfig::default())
}

fn query_bytes(qname: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0xbeef).set_recursion_desired(true);
    m.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii(qname).unwrap(),
        qtype,
    ));
    if let Some(size) = edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_bytes().unwrap()
}

fn ask_raw(r: &Responder, q: &[u8], t: Transport) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match r.handle(q, t, "127.0.0.1".parse().unwrap(), &mut out) {
        Outcome::Reply => Some(out),
        Outcome::Drop => None,
        Outcome::Transfer(_) => panic!("unexpected transfer"),
        Outcome::Notify(_) => Some(out),
    }
}

fn ask(r: &Responder, qname: &str, qtype: RecordType) -> Message {
    Message::from_vec(&ask_raw(r, &query_bytes(qname, qtype, Some(1232)), Transport::Udp).unwrap())
        .unwrap()
}

fn texts(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {} {} {}", r.name(), r.ttl(), r.record_type(), r.data()))
        .collect()
}

#[test]
fn lab_answers() {
    let mut cat = Catalog::new();
    let (z, _) = load_zone(
        LAB.as_bytes(),
        "lab",
        &name("csuvnetwork.com."),
        &mut NoIncludes,
    )
    .unwrap();
    cat.insert(z);
    let r = Responder::new(Arc::new(cat), ResponderConfig::default());
    let m = ask(&r, "csuvnetwork.com.", RecordType::MX);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert!(!m.recursion_available());
    assert_eq!(
        texts(m.answers()),
        vec!["csuvnetwork.com. 86400 MX 10 mail.csuvnetwork.com."]
    );
    assert_eq!(
        texts(m.additionals()),
        vec!["mail.csuvnetwork.com. 86400 A 192.168.3.10"]
    );
    let m = ask(&r, "mail.csuvnetwork.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec!["mail.csuvnetwork.com. 86400 A 192.168.3.10"]
    );
    let m = ask(&r, "csuvnetwork.com.", RecordType::NS);
    assert_eq!(
        texts(m.answers()),
        vec!["csuvnetwork.com. 86400 NS dnsserver.csuvnetwork.com."]
    );
    assert_eq!(
        texts(m.additionals()),
        vec!["dnsserver.csuvnetwork.com. 86400 A 192.168.3.10"]
    );
    let m = ask(&r, "csuvnetwork.com.", RecordType::SOA);
    let RData::SOA(soa) = m.answers()[0].data() else {
        panic!()
    };
    assert_eq!((soa.serial(), soa.minimum()), (0, 10_800));
    let m = ask(&r, "nosuch.csuvnetwork.com.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    assert_eq!(m.name_servers()[0].ttl(), 10_800);
    let m = ask(&r, "example.org.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert!(!m.recursion_available());
}

#[test]
fn exact_nodata_and_case() {
    let r = responder();
    let m = ask(&r, "MAIL.Example.COM.", RecordType::AAAA);
    assert_eq!(
        texts(m.answers()),
        vec!["MAIL.Example.COM. 3600 AAAA 2001:db8::25"]
    );
    assert_eq!(m.queries()[0].name().to_string(), "MAIL.Example.COM.");
    let m = ask(&r, "web.example.com.", RecordType::MX);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    // RFC 2308 5: min(SOA TTL 3600, MINIMUM 300).
    assert_eq!(texts(m.name_servers()), vec!["example.com. 300 SOA ns1.example.com. hostmaster.example.com. 2024010101 3600 900 604800 300"]);
    // An empty non-terminal is NODATA, not NXDOMAIN (RFC 4592 2.2.2).
    let m = ask(&r, "b.c.example.com.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.name_servers().len(), 1);
}

#[test]
fn cname_chains_and_loops() {
    let r = responder();
    let m = ask(&r, "www.example.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec![
            "www.example.com. 3600 CNAME web.example.com.",
            "web.example.com. 3600 A 192.0.2.80"
        ]
    );
    let m = ask(&r, "ext.example.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec!["ext.example.com. 3600 CNAME www.example.org."]
    );
    let m = ask(&r, "loop1.example.com.", RecordType::A);
    assert_eq!(m.answers().len(), 2);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let m = ask(&r, "dangling.example.com.", RecordType::A);
    // RFC 6604: the RCODE is that of the last name in the chain.
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.answers().len(), 1);
    let m = ask(&r, "www.example.com.", RecordType::CNAME);
    assert_eq!(m.answers().len(), 1);
    let m = ask(&r, "cw.example.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec![
            "cw.example.com. 3600 CNAME x.wild.example.com.",
            "x.wild.example.com. 3600 A 192.0.2.99"
        ]
    );
}

#[test]
fn wildcards() {
    let r = responder();
    let m = ask(&r, "anything.wild.example.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec!["anything.wild.example.com. 3600 A 192.0.2.99"]
    );
    let m = ask(&r, "deep.er.wild.example.com.", RecordType::MX);
    assert_eq!(
        texts(m.answers()),
        vec!["deep.er.wild.example.com. 3600 MX 5 mail.example.com."]
    );
    assert_eq!(m.additionals().len(), 2);
    // Wildcard NODATA is NODATA.
    let m = ask(&r, "x.wild.example.com.", RecordType::TXT);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    // The wildcard does not cover wild itself or names under other nodes.
    let m = ask(&r, "wild.example.com.", RecordType::A);
    assert!(m.answers().is_empty());
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let m = ask(&r, "x.web.example.com.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[test]
fn referrals_with_glue() {
    let r = responder();
    for q in [
        "sub.example.com.",
        "host.sub.example.com.",
        "ns.sub.example.com.",
    ] {
        let m = ask(&r, q, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{q}");
        assert!(!m.authoritative(), "{q}: AA must be clear on a referral");
        assert!(m.answers().is_empty());
        assert_eq!(
            texts(m.name_servers()),
            vec!["sub.example.com. 3600 NS ns.sub.example.com."]
        );
        assert_eq!(
            texts(m.additionals()),
            vec!["ns.sub.example.com. 3600 A 192.0.2.53"]
        );
    }
    // DS lives in the parent: answered authoritatively.
    let m = ask(&r, "sub.example.com.", RecordType::DS);
    assert!(m.authoritative());
    assert_eq!(m.answers().len(), 1);
}

#[test]
fn additional_for_mx_ns_srv() {
    let r = responder();
    let m = ask(&r, "example.com.", RecordType::MX);
    assert_eq!(
        texts(m.additionals()),
        vec![
            "mail.example.com. 3600 A 192.0.2.25",
            "mail.example.com. 3600 AAAA 2001:db8::25"
        ]
    );
    let m = ask(&r, "example.com.", RecordType::NS);
    assert_eq!(m.answers().len(), 2);
    assert_eq!(
        texts(m.additionals()),
        vec!["ns1.example.com. 3600 A 192.0.2.1"]
    );
    let m = ask(&r, "_sip._tcp.example.com.", RecordType::SRV);
    assert_eq!(m.additionals().len(), 2);
}

#[test]
fn minimal_any_over_udp_full_over_tcp() {
    let r = responder();
    let m = ask(&r, "example.com.", RecordType::ANY);
    assert_eq!(m.answers().len(), 1);
    let raw = ask_raw(
        &r,
        &query_bytes("example.com.", RecordType::ANY, None),
        Transport::Tcp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    let types: std::collections::BTreeSet<RecordType> =
        m.answers().iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 4);
}

#[test]
fn several_zones_longest_match() {
    let child = "$TTL 60\n@ SOA ns root 7 2 3 4 5\n NS ns\nns A 192.0.2.70\nwww A 192.0.2.71\n";
    let r = responder_with(&[("deep.example.com.", child)], ResponderConfig::default());
    let m = ask(&r, "www.deep.example.com.", RecordType::A);
    assert_eq!(
        texts(m.answers()),
        vec!["www.deep.example.com. 60 A 192.0.2.71"]
    );
    let m = ask(&r, "nope.deep.example.com.", RecordType::A);
    let RData::SOA(soa) = m.name_servers()[0].data() else {
        panic!()
    };
    assert_eq!(soa.serial(), 7);
}

#[test]
fn truncation_and_edns_sizes() {
    let r = responder();
    // No EDNS: 512 bytes; the big TXT does not fit: clean TC.
    let raw = ask_raw(
        &r,
        &query_bytes("big.example.com.", RecordType::TXT, None),
        Transport::Udp,
    )
    .unwrap();
    assert!(raw.len() <= 512);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.truncated());
    assert!(m.answers().is_empty());
    assert_eq!(m.queries().len(), 1);
    // EDNS 4096 is capped at 1232 by default; still too big.
    let raw = ask_raw(
        &r,
        &query_bytes("big.example.com.", RecordType::TXT, Some(4096)),
        Transport::Udp,
    )
    .unwrap();
    assert!(raw.len() <= 1232);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.truncated());
    assert_eq!(m.extensions().as_ref().unwrap().max_payload(), 1232);
    // A larger configured cap lets it through.
    let r2 = responder_with(
        &[],
        ResponderConfig {
            udp_payload_max: 4096,
            ..ResponderConfig::default()
        },
    );
    let raw = ask_raw(
        &r2,
        &query_bytes("big.example.com.", RecordType::TXT, Some(4096)),
        Transport::Udp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 1);
    // TCP carries it whole.
    let raw = ask_raw(
        &r,
        &query_bytes("big.example.com.", RecordType::TXT, None),
        Transport::Tcp,
    )
    .unwrap();
    assert!(raw.len() > 1232);
    assert!(!Message::from_vec(&raw).unwrap().truncated());
}

#[test]
fn additional_dropped_before_tc() {
    // Many MX targets with addresses: additional is trimmed without TC.
    let mut text = String::from("$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n");
    for i in 0..10 {
        text.push_str(&format!(
            "@ MX {i} mx{i}\nmx{i} A 192.0.2.{i}\nmx{i} AAAA 2001:db8::{i}\n"
        ));
    }
    let mut cat = Catalog::new();
    cat.insert(
        load_zone(text.as_bytes(), "t", &name("e.test."), &mut NoIncludes)
            .unwrap()
            .0,
    );
    let r = Responder::new(Arc::new(cat), ResponderConfig::default());
    let raw = ask_raw(
        &r,
        &query_bytes("e.test.", RecordType::MX, None),
        Transport::Udp,
    )
    .unwrap();
    assert!(raw.len() <= 512);
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 10);
    assert!(m.additionals().len() < 20);
}

#[test]
fn malformed_queries() {
    let r = responder();
    let good = query_bytes("example.com.", RecordType::A, None);
    // Garbage and short headers: silence.
    assert!(ask_raw(&r, &good[..11], Transport::Udp).is_none());
    assert!(ask_raw(&r, &[], Transport::Udp).is_none());
    // A response is never answered.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(ask_raw(&r, &resp, Transport::Udp).is_none());
    // Readable header, broken body: FORMERR with the ID echoed.
    for bad in [
        good[..good.len() - 1].to_vec(),
        [&good[..], &[0u8]].concat(),
        {
            let mut b = good.clone();
            b[5] = 2; // qdcount 2
            b
        },
        {
            let mut b = good.clone();
            b[5] = 0; // qdcount 0
            b
        },
        {
            let mut b = good.clone();
            b[11] = 1; // arcount 1, nothing there
            b
        },
        {
            // A compression pointer loop in the question name.
            let mut b = good[..12].to_vec();
            b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            b
        },
        {
            // Pointer loop in an additional record's owner, bad counts.
            let mut b = good.clone();
            b[11] = 2;
            b.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
            b
        },
    ] {
        let raw = ask_raw(&r, &bad, Transport::Udp).expect("FORMERR expected");
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.id(), 0xbeef);
        assert_eq!(m.response_code(), ResponseCode::FormErr, "{bad:?}");
        assert_eq!(m.message_type(), MessageType::Response);
    }
    // Still answering normally.
    let m = Message::from_vec(&ask_raw(&r, &good, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
}

#[test]
fn notimp_badvers_and_class() {
    let r = responder();
    let mut notify = query_bytes("example.com.", RecordType::SOA, None);
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let m = Message::from_vec(&ask_raw(&r, &notify, Transport::Udp).unwrap()).unwrap();
    // A NOTIFY for a zone we are primary of: refused, as NSD does.
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert_eq!(m.op_code(), OpCode::Notify);
    let mut update = query_bytes("example.com.", RecordType::SOA, None);
    update[2] = (update[2] & 0x87) | (5 << 3);
    let m = Message::from_vec(&ask_raw(&r, &update, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    // IXFR without the client's SOA (RFC 1995 3): FORMERR.
    let m = ask(&r, "example.com.", RecordType::IXFR);
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // EDNS version 1: BADVERS (extended RCODE 16).
    let mut q = Message::new();
    q.set_id(7);
    q.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii("example.com.").unwrap(),
        RecordType::A,
    ));
    let mut e = hickory_proto::op::Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let raw = ask_raw(&r, &q.to_bytes().unwrap(), Transport::Udp).unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(u16::from(m.response_code()), 16);
    // Chaos class: not ours.
    let mut q = Message::new();
    q.add_query({
        let mut qq = Query::query(
            hickory_proto::rr::Name::from_ascii("example.com.").unwrap(),
            RecordType::TXT,
        );
        qq.set_query_class(DNSClass::CH);
        qq
    });
    let m =
        Message::from_vec(&ask_raw(&r, &q.to_bytes().unwrap(), Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::Refused);
}

#[test]
fn axfr_tcp_only_with_acl() {
    let cfg = ResponderConfig {
        axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
        ..ResponderConfig::default()
    };
    let r = responder_with(&[], cfg);
    let q = query_bytes("example.com.", RecordType::AXFR, None);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    let mut out = Vec::new();
    let o = r.handle(&q, Transport::Tcp, "192.0.2.1".parse().unwrap(), &mut out);
    assert!(matches!(o, Outcome::Reply));
    assert_eq!(
        Message::from_vec(&out).unwrap().response_code(),
        ResponseCode::Refused
    );
    let Outcome::Transfer(t) = r.handle(&q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out)
    else {
        panic!("transfer expected")
    };
    let msgs = t.messages();
    let recs: Vec<hickory_proto::rr::Record> = msgs
        .iter()
        .flat_map(|m| Message::from_vec(m).unwrap().answers().to_vec())
        .collect();
    assert_eq!(recs.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(recs.last().unwrap().record_type(), RecordType::SOA);
    let zone = r.catalog().zones().next().unwrap().clone();
    assert_eq!(recs.len(), zone.record_count() + 1);
    // Not the apex: refused.
    let q = query_bytes("www.example.com.", RecordType::AXFR, None);
    let o = r.handle(&q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out);
    assert!(matches!(o, Outcome::Reply));
}

#[test]
fn axfr_compresses_repeated_and_mixed_case_owners() {
    // Several records per owner, owners in mixed case: each repeat is a
    // 2-byte pointer, and the records read back as the zone has them.
    let mut text = String::from("$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n");
    for i in 0..300 {
        text.push_str(&format!(
            "Host{i} A 10.0.{}.{}\nhost{i} TXT \"t{i}\"\nHOST{i} MX 10 mx\n",
            i / 256,
            i % 256
        ));
    }
    let mut cat = Catalog::new();
    let (z, _) = load_zone(text.as_bytes(), "t", &name("ex.test."), &mut NoIncludes).unwrap();
    cat.insert(z);
    let cfg = ResponderConfig {
        axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
        ..ResponderConfig::default()
    };
    let r = Responder::new(Arc::new(cat), cfg);
    let q = query_bytes("ex.test.", RecordType::AXFR, None);
    let mut out = Vec::new();
    let Outcome::Transfer(t) = r.handle(&q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out)
    else {
        panic!("transfer expected")
    };
    let msgs = t.messages();
    let recs: Vec<hickory_proto::rr::Record> = msgs
        .iter()
        .flat_map(|m| Message::from_vec(m).unwrap().answers().to_vec())
        .collect();
    assert_eq!(recs.len(), 3 + 900 + 1);
    let host7: Vec<_> = recs
        .iter()
        .filter(|r| r.name().to_ascii().eq_ignore_ascii_case("host7.ex.test."))
        .map(|r| r.record_type())
        .collect();
    assert_eq!(host7.len(), 3, "{host7:?}");
    // Per host, at most: the first record's owner as a label and a
    // pointer (10), the others a pointer (2); fixed parts 10 each; RDATA
    // 4 (A) + 5 (TXT) + 14 (MX, its name not compressed). Past the 64
    // suffixes the writer remembers, repeats were written in full before.
    let total: usize = msgs.iter().map(Vec::len).sum();
    let per_host = (10 + 2 + 2) + 3 * 10 + (4 + 5 + 14);
    assert!(total <= 300 * per_host + 500, "{total}");
}

#[test]
fn prefixes() {
    let p = Prefix::parse("10.0.0.0/8").unwrap();
    assert!(p.contains("10.1.2.3".parse().unwrap()));
    assert!(!p.contains("11.1.2.3".parse().unwrap()));
    assert!(p.contains("::ffff:10.0.0.1".parse().unwrap()));
    let p = Prefix::parse("::1/128").unwrap();
    assert!(p.contains("::1".parse().unwrap()));
    assert!(!p.contains("::2".parse().unwrap()));
    assert!(Prefix::parse("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    assert!(Prefix::parse("10.0.0.0/33").is_none());
    assert!(Prefix::parse("x").is_none());
    assert!(Prefix::parse("192.0.2.1")
        .unwrap()
        .contains("192.0.2.1".parse().unwrap()));
}

// ------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,20}"
    }

    fn rdata() -> impl Strategy<Value = RData> {
        use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SRV, TXT};
        let n = || {
            proptest::collection::vec(label(), 1..4).prop_map(|ls| {
                hickory_proto::rr::Name::from_ascii(format!("{}.", ls.join("."))).unwrap()
            })
        };
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| RData::A(A::from(std::net::Ipv4Addr::from(o)))),
            any::<[u8; 16]>().prop_map(|o| RData::AAAA(AAAA::from(std::net::Ipv6Addr::from(o)))),
            (any::<u16>(), n()).prop_map(|(p, x)| RData::MX(MX::new(p, x))),
            n().prop_map(|x| RData::CNAME(CNAME(x))),
            (any::<u16>(), any::<u16>(), any::<u16>(), n())
                .prop_map(|(a, b, c, x)| RData::SRV(SRV::new(a, b, c, x))),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..4)
                .prop_map(|v| RData::TXT(TXT::from_bytes(
                    v.iter().map(|s| s.as_slice()).collect()
                ))),
        ]
    }

    proptest! {
        /// Serialise with hickory-proto's presentation format, parse with
        /// ours: the wire forms agree.
        #[test]
        fn presentation_round_trip(owner in label(), ttl in 0u32..0x7fff_ffff, rd in rdata()) {
            let shown = match &rd {
                // hickory's TXT Display is not presentation format: quote
                // and escape every string ourselves.
                RData::TXT(t) => t
                    .txt_data()
                    .iter()
                    .map(|s| {
                        let inner: String = s
                            .iter()
                            .map(|&b| match b {
                                b'"' | b'\\' => format!("\\{}", b as char),
                                0x20..=0x7e => (b as char).to_string(),
                                _ => format!("\\{b:03}"),
                            })
                            .collect();
                        format!("\"{inner}\"")
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.to_string(),
            };
            let text = format!("{owner} {ttl} IN {} {}\n", rd.record_type(), shown);
            let recs = ok(&text, "example.com.");
            prop_assert_eq!(recs.len(), 1);
            let mut wire = Vec::new();
            let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut wire);
            enc.set_canonical_names(true);
            rd.emit(&mut enc).unwrap();
            prop_assert_eq!(&recs[0].rdata[..], &wire[..], "{}", text);
            prop_assert_eq!(recs[0].ttl, ttl);
        }

        /// Our names survive display and re-parse.
        #[test]
        fn name_round_trip(bytes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..10), 1..6)) {
            let mut wire = Vec::new();
            for l in &bytes { wire.push(l.len() as u8); wire.extend_from_slice(l); }
            wire.push(0);
            let n = Name::from_wire(&wire).unwrap();
            prop_assert_eq!(Name::parse(&n.to_string(), None).unwrap(), n);
        }

        /// The parser never panics and every error has a position.
        #[test]
        fn parser_total(text in "[ -~\n\t();\"\\\\$]{0,300}") {
            let p = parse_str(&text, "example.com.");
            for e in &p.errors {
                prop_assert!(e.line >= 1);
            }
        }

        /// The responder never panics and answers or stays silent.
        #[test]
        fn responder_total(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let r = responder();
            let _ = ask_raw(&r, &bytes, Transport::Udp);
            let _ = ask_raw(&r, &bytes, Transport::Tcp);
        }

        /// Splitting a file at any line into a $INCLUDE gives the same records.
        #[test]
        fn text_with_random_whitespace(spaces in proptest::collection::vec(0usize..3, 6)) {
            let ws = |i: usize| " ".repeat(spaces[i] + 1);
            let text = format!("$TTL 1h\n@{}IN{}SOA{}ns root ( 1 2 3 4 5 )\n{}NS{}ns\n", ws(0), ws(1), ws(2), ws(3), ws(4));
            let recs = ok(&text, "example.com.");
            prop_assert_eq!(recs.len(), 2);
        }
    }
}

#[test]
fn interleaved_owners_keep_rrsets_whole() {
    let text = format!(
        "{HEAD}a A 192.0.2.10\nb A 192.0.2.20\na A 192.0.2.11\nb TXT one\na AAAA 2001:db8::1\nb A 192.0.2.21\na A 192.0.2.12\nb TXT two\n"
    );
    let (zone, w) =
        load_zone(text.as_bytes(), "i", &name("example.com."), &mut NoIncludes).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let mut cat = Catalog::new();
    cat.insert(zone);
    let r = Responder::new(Arc::new(cat), ResponderConfig::default());
    let m = ask(&r, "a.example.com.", RecordType::A);
    let mut got = texts(m.answers());
    got.sort();
    assert_eq!(
        got,
        vec![
            "a.example.com. 300 A 192.0.2.10",
            "a.example.com. 300 A 192.0.2.11",
            "a.example.com. 300 A 192.0.2.12"
        ]
    );
    assert_eq!(
        ask(&r, "a.example.com.", RecordType::AAAA).answers().len(),
        1
    );
    assert_eq!(ask(&r, "b.example.com.", RecordType::A).answers().len(), 2);
    assert_eq!(
        ask(&r, "b.example.com.", RecordType::TXT).answers().len(),
        2
    );
}

#[test]
fn referral_with_missing_glue_sets_tc() {
    let mut text = String::from("$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n");
    for i in 0..8 {
        text.push_str(&format!("sub NS nameserver-{i}.sub\nnameserver-{i}.sub A 192.0.2.{i}\nnameserver-{i}.sub AAAA 2001:db8::{i}\n"));
    }
    let mut cat = Catalog::new();
    cat.insert(
        load_zone(text.as_bytes(), "t", &name("e.test."), &mut NoIncludes)
            .unwrap()
            .0,
    );
    let r = Responder::new(Arc::new(cat), ResponderConfig::default());
    let raw = ask_raw(
        &r,
        &query_bytes("www.sub.e.test.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert!(raw.len() <= 512);
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.authoritative());
    assert_eq!(m.name_servers().len(), 8);
    assert!(m.additionals().len() < 16);
    assert!(m.truncated());
    // With room for everything there is no TC.
    let m = ask(&r, "www.sub.e.test.", RecordType::A);
    assert!(!m.truncated());
    assert_eq!(m.additionals().len(), 16);
}

fn small_responder(text: &str, origin: &str) -> Responder {
    let mut cat = Catalog::new();
    cat.insert(
        load_zone(text.as_bytes(), "t", &name(origin), &mut NoIncludes)
            .unwrap()
            .0,
    );
    Responder::new(Arc::new(cat), ResponderConfig::default())
}

const COMPRESS_ZONE: &str = "$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\n MX 10 mail\n\
ns A 192.0.2.1\nmail A 192.0.2.25\nc1 CNAME C2\nc2 CNAME c3.e.test.\nc3 A 192.0.2.3\n\
srv SRV 0 5 25 mail\n";

/// The offset a compression pointer at `at` points to, if it is one.
fn pointer_at(raw: &[u8], at: usize) -> Option<usize> {
    let b = raw.get(at..at + 2)?;
    (b[0] & 0xc0 == 0xc0).then(|| usize::from(b[0] & 0x3f) << 8 | usize::from(b[1]))
}

#[test]
fn names_in_rdata_are_compressed() {
    let r = small_responder(COMPRESS_ZONE, "e.test.");
    // SOA: header 12, question 8 + 4, owner pointer 2, type..rdlength
    // 10, MNAME "ns" + pointer 5, RNAME "root" + pointer 7, numbers 20:
    // 68 octets, like NSD and Knot (92 with RDATA names written whole).
    let raw = ask_raw(
        &r,
        &query_bytes("e.test.", RecordType::SOA, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(raw.len(), 68);
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(
        texts(m.answers()),
        ["e.test. 60 SOA ns.e.test. root.e.test. 1 2 3 4 5"]
    );
    // RDLENGTH counts the compressed RDATA.
    assert_eq!(&raw[34..36], &[0, 32]);

    // A CNAME chain: each owner points into the previous CNAME's RDATA
    // (case-insensitively: "C2" as written, RFC 4343) and each target
    // points to the question's "e.test.".
    let raw = ask_raw(
        &r,
        &query_bytes("c1.e.test.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    let got: Vec<String> = texts(m.answers())
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    assert_eq!(
        got,
        [
            "c1.e.test. 60 cname c2.e.test.",
            "c2.e.test. 60 cname c3.e.test.",
            "c3.e.test. 60 a 192.0.2.3"
        ]
    );
    // 12 + 15 (question) + 3 * (2 + 10) + 2 * (3 + 2) + 4 = 77 (Knot's
    // size; 101 without RDATA compression).
    assert_eq!(raw.len(), 77);

    // MX: the preference stays in front, the exchange is compressed and
    // the A in ADDITIONAL points to it.
    let raw = ask_raw(
        &r,
        &query_bytes("e.test.", RecordType::MX, None),
        Transport::Udp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(texts(m.answers()), ["e.test. 60 MX 10 mail.e.test."]);
    assert_eq!(texts(m.additionals()), ["mail.e.test. 60 A 192.0.2.25"]);
    // MX RDATA at 36: preference, "mail", pointer to the question's name.
    assert_eq!(&raw[34..36], &[0, 9]);
    assert_eq!(pointer_at(&raw, 43), Some(12));
    assert_eq!(pointer_at(&raw, 45), Some(38));
}

#[test]
fn srv_target_is_not_compressed_but_is_pointed_to() {
    let r = small_responder(COMPRESS_ZONE, "e.test.");
    let raw = ask_raw(
        &r,
        &query_bytes("srv.e.test.", RecordType::SRV, None),
        Transport::Udp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(
        texts(m.answers()),
        ["srv.e.test. 60 SRV 0 5 25 mail.e.test."]
    );
    assert_eq!(texts(m.additionals()), ["mail.e.test. 60 A 192.0.2.25"]);
    // RFC 2782: the target is written whole (RDLENGTH 6 + 13) ...
    let rdata_at = 12 + 16 + 2 + 10;
    assert_eq!(&raw[rdata_at - 2..rdata_at], &[0, 19]);
    assert_eq!(
        &raw[rdata_at + 6..rdata_at + 19],
        b"\x04mail\x01e\x04test\x00"
    );
    // ... and the additional A's owner is a pointer to it.
    assert_eq!(pointer_at(&raw, rdata_at + 19), Some(rdata_at + 6));
}

#[test]
fn negative_answer_soa_points_into_the_question() {
    let r = small_responder(COMPRESS_ZONE, "e.test.");
    let raw = ask_raw(
        &r,
        &query_bytes("NoSuch.E.test.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // The SOA's owner is the question's suffix "E.test." at 12 + 7 (so
    // it comes back in the query's case, as from NSD and Knot).
    assert_eq!(pointer_at(&raw, 12 + 15 + 4), Some(19));
    assert_eq!(m.name_servers()[0].name().to_string(), "E.test.");
    assert_eq!(raw.len(), 12 + 19 + 2 + 10 + 32);
}

#[test]
fn no_question_with_opt_gets_formerr_with_opt() {
    let r = responder();
    // Header (QDCOUNT 0, ARCOUNT 1) and an OPT: payload 1232, DO.
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    // RFC 6891 6.1.1: an OPT in the request, an OPT in the response.
    let raw = ask_raw(&r, &q, Transport::Udp).unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.id(), 0xbeef);
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert!(m.queries().is_empty());
    let e = m.extensions().as_ref().expect("OPT echoed");
    assert!(e.flags().dnssec_ok);
    assert_eq!(e.version(), 0);
    // EDNS version 1: BADVERS (RFC 6891 6.1.3), as for any query.
    q[18] = 1;
    let raw = ask_raw(&r, &q, Transport::Udp).unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(u16::from(m.response_code()), 16);
    // Without an OPT, or with an OPT that is malformed: FORMERR alone.
    let mut bare = q[..12].to_vec();
    bare[11] = 0;
    let raw = ask_raw(&r, &bare, Transport::Udp).unwrap();
    assert_eq!(raw.len(), 12);
    assert_eq!(raw[3] & 0xf, 1);
    let raw = ask_raw(&r, &q[..q.len() - 1], Transport::Udp).unwrap();
    assert_eq!(raw.len(), 12);
    assert_eq!(raw[3] & 0xf, 1);
}

#[test]
fn dname_redirects_the_names_below_it() {
    let long_target = format!("{}.example.", vec!["a".repeat(60); 4].join("."));
    let text = format!(
        "$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n\
old 300 DNAME new\nx.new A 192.0.2.60\next DNAME example.org.\n\
long DNAME {long_target}\nloop DNAME x.loop.e.test.\n"
    );
    let r = small_responder(&text, "e.test.");
    // RFC 6672 3.2: the DNAME, the CNAME it synthesizes (owner the name
    // asked, the DNAME's TTL), then the new name's data.
    let m = ask(&r, "x.old.e.test.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    // (hickory-proto does not know DNAME: its RDATA shows as base64 of
    // 3new1e4test0.)
    let dname = "old.e.test. 300 Unknown A25ldwFlBHRlc3QA";
    assert_eq!(
        texts(m.answers()),
        [
            dname,
            "x.old.e.test. 300 CNAME x.new.e.test.",
            "x.new.e.test. 60 A 192.0.2.60"
        ]
    );
    // The new name does not exist: NXDOMAIN, the SOA, the answers kept.
    let m = ask(&r, "a.b.old.e.test.", RecordType::TXT);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.answers().len(), 2);
    assert_eq!(m.answers()[1].data().to_string(), "a.b.new.e.test.");
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    // The owner itself is not redirected.
    let m = ask(&r, "old.e.test.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    let m = ask(&r, "old.e.test.", RecordType::Unknown(39));
    assert_eq!(texts(m.answers()), [dname]);
    // Out of the zone: the resolver follows the CNAME.
    let m = ask(&r, "WWW.ext.e.test.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers()[1].name().to_string(), "WWW.ext.e.test.");
    assert_eq!(
        m.answers()[1].data().to_string().to_ascii_lowercase(),
        "www.example.org."
    );
    // RFC 6672 2.2: a substituted name over 255 octets is YXDOMAIN.
    let q = format!("{}.long.e.test.", "b".repeat(30));
    let m = ask(&r, &q, RecordType::A);
    assert_eq!(u16::from(m.response_code()), 6);
    assert_eq!(texts(m.answers()).len(), 1);
    // A DNAME below itself: the DNAME and one CNAME, as NSD answers (the
    // next name would be redirected by the same DNAME again).
    let m = ask(&r, "y.loop.e.test.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        texts(m.answers()),
        [
            "loop.e.test. 60 Unknown AXgEbG9vcAFlBHRlc3QA",
            "y.loop.e.test. 60 CNAME y.x.loop.e.test."
        ]
    );
}

#[test]
fn a_ring_of_dnames_stops_where_it_comes_back() {
    // a -> x.b, b -> y.a: the second DNAME leads back below the first.
    let r = small_responder(
        "$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n\
a DNAME x.b.e.test.\nb DNAME y.a.e.test.\nc DNAME d.e.test.\nd DNAME f.e.test.\n\
z.f A 192.0.2.7\n",
        "e.test.",
    );
    let m = ask(&r, "z.a.e.test.", RecordType::A);
    let names: Vec<String> = m
        .answers()
        .iter()
        .map(|a| format!("{} {}", a.name(), a.record_type()))
        .collect();
    assert_eq!(
        names,
        [
            "a.e.test. Unknown",
            "z.a.e.test. CNAME",
            "b.e.test. Unknown",
            "z.x.b.e.test. CNAME"
        ]
    );
    assert_eq!(m.answers()[3].data().to_string(), "z.x.y.a.e.test.");
    // A CNAME that leads back below a DNAME in the answer stops there
    // too: the DNAME is not written twice.
    let r2 = small_responder(
        "$TTL 60\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n\
d DNAME e.e.test.\ny.e CNAME z.d.e.test.\n",
        "e.test.",
    );
    let m = ask(&r2, "y.d.e.test.", RecordType::A);
    let kinds: Vec<String> = m
        .answers()
        .iter()
        .map(|a| format!("{} {}", a.name(), a.record_type()))
        .collect();
    assert_eq!(
        kinds,
        [
            "d.e.test. Unknown",
            "y.d.e.test. CNAME",
            "y.e.e.test. CNAME"
        ]
    );
    // Distinct DNAMEs one after the other are all followed.
    let m = ask(&r, "z.c.e.test.", RecordType::A);
    assert_eq!(m.answers().len(), 5);
    assert_eq!(m.answers()[4].data().to_string(), "192.0.2.7");
}

/// A query with EDNS and, if `nsid`, an empty NSID option (RFC 5001 2.1).
fn query_with(qname: &str, qtype: RecordType, qclass: DNSClass, nsid: bool) -> Vec<u8> {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut m = Message::new();
    m.set_id(0x5151);
    let mut qq = Query::query(hickory_proto::rr::Name::from_ascii(qname).unwrap(), qtype);
    qq.set_query_class(qclass);
    m.add_query(qq);
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(1232);
    if nsid {
        e.options_mut().insert(EdnsOption::Unknown(3, vec![]));
    }
    m.set_edns(e);
    m.to_bytes().unwrap()
}

/// The data of option `code` in the answer's OPT.
fn option(m: &Message, code: u16) -> Option<Vec<u8>> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.extensions().as_ref()?.option(EdnsCode::from(code))? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        other => panic!("option {code} read as {other:?}"),
    }
}

fn identified() -> Responder {
    responder_with(
        &[],
        ResponderConfig {
            nsid: Some(b"ns1.example".to_vec().into()),
            identity: Some(b"mail.csuvnetwork.com".to_vec().into()),
            version: Some(b"dnsd 0.1.0".to_vec().into()),
            ..ResponderConfig::default()
        },
    )
}

#[test]
fn nsid_only_when_asked_and_configured() {
    let r = identified();
    for (q, t) in [
        (
            query_with("www.example.com.", RecordType::A, DNSClass::IN, true),
            Transport::Udp,
        ),
        (
            query_with("www.other.org.", RecordType::A, DNSClass::IN, true),
            Transport::Tcp,
        ),
        (
            query_with("nope.example.com.", RecordType::A, DNSClass::IN, true),
            Transport::Udp,
        ),
    ] {
        let m = Message::from_vec(&ask_raw(&r, &q, t).unwrap()).unwrap();
        assert_eq!(option(&m, 3).as_deref(), Some(&b"ns1.example"[..]), "{m:?}");
    }
    // Not asked: not sent (RFC 5001 2.2).
    let q = query_with("www.example.com.", RecordType::A, DNSClass::IN, false);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(option(&m, 3), None);
    // Asked but not configured: nothing either.
    let q = query_with("www.example.com.", RecordType::A, DNSClass::IN, true);
    let m = Message::from_vec(&ask_raw(&responder(), &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(option(&m, 3), None);
    assert!(!m.answers().is_empty());
}

#[test]
fn refusals_say_why_with_extended_errors() {
    // RFC 8914 4: the codes NSD and Knot send for the same refusals.
    let cfg = ResponderConfig {
        axfr_allow: vec![Prefix::parse("192.0.2.0/24").unwrap()],
        ..ResponderConfig::default()
    };
    let r = responder_with(&[], cfg);
    let ede = |q: &[u8], t| {
        let m = Message::from_vec(&ask_raw(&r, q, t).unwrap()).unwrap();
        (m.response_code(), option(&m, 15))
    };
    let not_ours = query_with("www.other.org.", RecordType::A, DNSClass::IN, false);
    assert_eq!(
        ede(&not_ours, Transport::Udp),
        (ResponseCode::Refused, Some(vec![0, 20]))
    );
    let axfr = query_with("example.com.", RecordType::AXFR, DNSClass::IN, false);
    assert_eq!(
        ede(&axfr, Transport::Tcp),
        (ResponseCode::Refused, Some(vec![0, 18]))
    );
    let chaos = query_with("example.com.", RecordType::A, DNSClass::CH, false);
    assert_eq!(
        ede(&chaos, Transport::Udp),
        (ResponseCode::Refused, Some(vec![0, 21]))
    );
    // Answers and the other errors carry none.
    let q = query_with("www.example.com.", RecordType::A, DNSClass::IN, false);
    assert_eq!(ede(&q, Transport::Udp), (ResponseCode::NoError, None));
    let q = query_with("nope.example.com.", RecordType::A, DNSClass::IN, false);
    assert_eq!(ede(&q, Transport::Udp), (ResponseCode::NXDomain, None));
    // Without EDNS in the query there is no OPT to carry one.
    let q = query_bytes("www.other.org.", RecordType::A, None);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert!(m.extensions().is_none());
}

#[test]
fn a_secondary_zone_not_loaded_is_not_ready() {
    let cfg = ResponderConfig {
        notify_allow: vec![(b"\x03sec\x07example\x00".to_vec().into(), vec![])],
        ..ResponderConfig::default()
    };
    let r = responder_with(&[], cfg);
    let q = query_with("www.sec.example.", RecordType::A, DNSClass::IN, false);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert_eq!(option(&m, 15), Some(vec![0, 14]));
}

#[test]
fn chaos_txt_gives_identity_and_version() {
    let r = identified();
    for (qname, qtype, want) in [
        ("id.server.", RecordType::TXT, "mail.csuvnetwork.com"),
        ("HOSTNAME.Bind.", RecordType::TXT, "mail.csuvnetwork.com"),
        ("version.server.", RecordType::ANY, "dnsd 0.1.0"),
        ("version.bind.", RecordType::TXT, "dnsd 0.1.0"),
    ] {
        let q = query_with(qname, qtype, DNSClass::CH, true);
        for t in [Transport::Udp, Transport::Tcp] {
            let m = Message::from_vec(&ask_raw(&r, &q, t).unwrap()).unwrap();
            assert_eq!(m.response_code(), ResponseCode::NoError);
            // As NSD, Knot and BIND: not authoritative, TTL 0, the name
            // as asked.
            assert!(!m.authoritative());
            let [a] = m.answers() else { panic!("{m:?}") };
            assert_eq!(a.name().to_ascii(), qname);
            assert_eq!(a.dns_class(), DNSClass::CH);
            assert_eq!(a.ttl(), 0);
            assert_eq!(a.data().to_string(), want);
            assert_eq!(option(&m, 3).as_deref(), Some(&b"ns1.example"[..]));
        }
    }
    // Other types at those names, and other names, are not supported;
    // hidden values (None) are prohibited.
    let refused = |r: &Responder, qname: &str, qtype| {
        let q = query_with(qname, qtype, DNSClass::CH, false);
        let m = Message::from_vec(&ask_raw(r, &q, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(m.answers().is_empty());
        option(&m, 15)
    };
    assert_eq!(refused(&r, "id.server.", RecordType::A), Some(vec![0, 21]));
    assert_eq!(
        refused(&r, "authors.bind.", RecordType::TXT),
        Some(vec![0, 21])
    );
    let hidden = responder();
    assert_eq!(
        refused(&hidden, "id.server.", RecordType::A),
        Some(vec![0, 21])
    );
    assert_eq!(
        refused(&hidden, "id.server.", RecordType::TXT),
        Some(vec![0, 18])
    );
    assert_eq!(
        refused(&hidden, "version.bind.", RecordType::TXT),
        Some(vec![0, 18])
    );
    // In class IN the names are ordinary names (not ours).
    let q = query_with("version.bind.", RecordType::TXT, DNSClass::IN, false);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert_eq!(option(&m, 15), Some(vec![0, 20]));
}

#[test]
fn options_give_way_when_the_reply_would_not_fit() {
    // A 480-octet NSID does not fit a 512-octet UDP reply with the
    // answer: the records win, the NSID is left out (as NSD does); over
    // TCP, or with a larger EDNS size, it is sent.
    let r = responder_with(
        &[],
        ResponderConfig {
            nsid: Some(vec![b'n'; 480].into()),
            identity: Some(vec![b'i'; 200].into()),
            ..ResponderConfig::default()
        },
    );
    let ask_sized = |qname: &str, qtype, qclass, size: u16, t| {
        let mut q = query_with(qname, qtype, qclass, true);
        // The OPT's CLASS is the payload size: after its owner (1) and
        // TYPE (2), 11 + 4 octets from the end (the NSID option last).
        let at = q.len() - 4 - 11 + 3;
        q[at..at + 2].copy_from_slice(&size.to_be_bytes());
        let out = ask_raw(&r, &q, t).unwrap();
        (out.len(), Message::from_vec(&out).unwrap())
    };
    for (qname, qtype, qclass) in [
        ("www.example.com.", RecordType::A, DNSClass::IN),
        ("www.other.org.", RecordType::A, DNSClass::IN),
        ("id.server.", RecordType::TXT, DNSClass::CH),
        ("id.server.", RecordType::A, DNSClass::CH),
        ("big.example.com.", RecordType::TXT, DNSClass::IN),
    ] {
        let (len, m) = ask_sized(qname, qtype, qclass, 512, Transport::Udp);
        assert!(len <= 512, "{qname} {qtype}: {len}");
        assert_eq!(option(&m, 3), None, "{qname}");
        assert!(m.extensions().is_some(), "the OPT stays");
        let (_, m) = ask_sized(qname, qtype, qclass, 512, Transport::Tcp);
        assert_eq!(option(&m, 3).map(|n| n.len()), Some(480), "{qname}");
        let (len, m) = ask_sized(qname, qtype, qclass, 1232, Transport::Udp);
        assert!(len <= 1232);
        if qname != "big.example.com." {
            assert_eq!(option(&m, 3).map(|n| n.len()), Some(480), "{qname}");
        }
    }
}

#[test]
fn a_long_identity_is_cut_to_one_string_and_nsid_to_512() {
    let r = responder_with(
        &[],
        ResponderConfig {
            nsid: Some(vec![b'n'; 600].into()),
            identity: Some(vec![b'i'; 300].into()),
            ..ResponderConfig::default()
        },
    );
    let q = query_with("id.server.", RecordType::TXT, DNSClass::CH, true);
    let m = Message::from_vec(&ask_raw(&r, &q, Transport::Udp).unwrap()).unwrap();
    assert_eq!(m.answers()[0].data().to_string(), "i".repeat(255));
    assert_eq!(option(&m, 3).map(|n| n.len()), Some(512));
}

/// A query with EDNS carrying these COOKIE options' data.
fn query_with_cookies(qname: &str, cookies: &[&[u8]]) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x7873);
    m.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii(qname).unwrap(),
        RecordType::A,
    ));
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let mut q = m.to_bytes().unwrap();
    // hickory keeps one option per code: append the OPT RDATA by hand.
    let mut rdata = Vec::new();
    for c in cookies {
        rdata.extend_from_slice(&[0, 10, 0, c.len() as u8]);
        rdata.extend_from_slice(c);
    }
    let n = q.len();
    q[n - 2..].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
    q.extend_from_slice(&rdata);
    q
}

#[test]
fn dns_cookies_as_rfc_7873_and_9018_say() {
    let secret = [0x5a; 16];
    let r = responder_with(
        &[],
        ResponderConfig {
            cookie_secret: Some(secret),
            ..ResponderConfig::default()
        },
    );
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    let now = 1_700_000_000;
    let ask_at = |r: &Responder, q: &[u8], now: u64| {
        let mut out = Vec::new();
        assert!(matches!(
            r.handle_at(q, Transport::Udp, client, now, &mut out),
            Outcome::Reply
        ));
        Message::from_vec(&out).unwrap()
    };
    // A Client Cookie alone: the answer, and our Server Cookie for it.
    let cc = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let m = ask_at(&r, &query_with_cookies("www.example.com.", &[&cc]), now);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(!m.answers().is_empty());
    let got = option(&m, 10).expect("a COOKIE in the answer");
    assert_eq!(got.len(), 24);
    assert_eq!(got[..8], cc);
    let sent_back = query_with_cookies("www.example.com.", &[&got]);
    assert!(crate::cookie::QueryCookie::parse(&got).is_valid(&secret, client, now));
    // Returned, it is valid for this client (so dnsd does not rate-limit
    // it), not for another address, and not after an hour.
    let check = |r: &Responder, q: &[u8], ip: &str, now: u64| {
        r.respond(q, Transport::Udp, ip.parse().unwrap(), now, &mut Vec::new())
            .cookie
    };
    assert_eq!(
        check(&r, &sent_back, "192.0.2.7", now + 10),
        CookieCheck::Valid
    );
    assert_eq!(
        check(&r, &sent_back, "192.0.2.8", now),
        CookieCheck::Unverified
    );
    assert_eq!(
        check(&r, &sent_back, "192.0.2.7", now + 3601),
        CookieCheck::Unverified
    );
    let first = query_with_cookies("www.example.com.", &[&cc]);
    assert_eq!(check(&r, &first, "192.0.2.7", now), CookieCheck::Unverified);
    // RFC 9018 4.5: during a rollover the other secret's cookies count;
    // new ones are made with the first.
    let rolled = responder_with(
        &[],
        ResponderConfig {
            cookie_secret: Some([0x77; 16]),
            cookie_secrets_accepted: vec![[0x11; 16], secret],
            ..ResponderConfig::default()
        },
    );
    assert_eq!(
        check(&rolled, &sent_back, "192.0.2.7", now),
        CookieCheck::Valid
    );
    let m = ask_at(&rolled, &sent_back, now);
    let fresh = option(&m, 10).unwrap();
    assert!(crate::cookie::QueryCookie::parse(&fresh).is_valid(&[0x77; 16], client, now));
    assert!(!crate::cookie::QueryCookie::parse(&fresh).is_valid(&secret, client, now));
    // A stale or foreign Server Cookie still gets an answer and a fresh one.
    let m = ask_at(&r, &sent_back, now + 7200);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let fresh = option(&m, 10).unwrap();
    assert!(crate::cookie::QueryCookie::parse(&fresh).is_valid(&secret, client, now + 7200));
    // RFC 7873 5.2: only the first COOKIE option counts.
    let m = ask_at(
        &r,
        &query_with_cookies("www.example.com.", &[&cc, &[9u8; 5]]),
        now,
    );
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(option(&m, 10).unwrap()[..8], cc);
    // RFC 7873 5.4: no question, a Client Cookie: NOERROR and a Server
    // Cookie (the way a client asks for one).
    let mut ask_cookie = query_with_cookies("www.example.com.", &[&cc]);
    let qlen = 12 + 17 + 4;
    ask_cookie.drain(12..qlen);
    ask_cookie[5] = 0;
    let m = ask_at(&r, &ask_cookie, now);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.queries().is_empty());
    assert_eq!(option(&m, 10).unwrap()[..8], cc);
    // RFC 7873 5.2.2: a malformed option is FORMERR (with our OPT).
    for bad in [
        query_with_cookies("www.example.com.", &[&cc[..5]]),
        query_with_cookies("www.example.com.", &[&[9u8; 12]]),
    ] {
        let m = ask_at(&r, &bad, now);
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert!(m.extensions().is_some());
        assert_eq!(option(&m, 10), None);
    }
    // No COOKIE asked, none sent; cookies off, the option is ignored.
    let m = ask(&r, "www.example.com.", RecordType::A);
    assert_eq!(option(&m, 10), None);
    let off = responder();
    let m = ask_at(
        &off,
        &query_with_cookies("www.example.com.", &[&cc[..5]]),
        now,
    );
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(option(&m, 10), None);
    assert_eq!(check(&off, &sent_back, "192.0.2.7", now), CookieCheck::None);
}

/// What NSD, Knot and BIND all answer differently from a naive
/// longest-zone, follow-everything lookup: DS from the parent side of a
/// cut when both sides are ours (RFC 4035 3.1.4.1), a DNAME's CNAME is
/// the answer to a CNAME query (RFC 1034 4.3.2 step 3a), a CNAME into a
/// delegation gets the referral (step 3b), transfers of what is not a
/// zone are NOTAUTH, and NOTIFY for a primary zone is REFUSED.
#[test]
fn answers_nsd_knot_and_bind_agree_on() {
    const CHILD: &str =
        "$TTL 300\n@ SOA ns h 1 2 3 4 120\n@ NS ns\nns A 192.0.2.53\nwww A 192.0.2.54\n";
    const D: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n\
        dn DNAME t.d.example.\nhost.t A 192.0.2.9\ncn CNAME x.deleg\n\
        deleg NS ns.deleg\nns.deleg A 192.0.2.53\n";
    let r = responder_with(
        &[("sub.example.com.", CHILD), ("d.example.", D)],
        ResponderConfig {
            axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
            ..ResponderConfig::default()
        },
    );
    // DS at the cut: the parent's record, authoritative.
    let m = ask(&r, "sub.example.com.", RecordType::DS);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(
        texts(m.answers()),
        ["sub.example.com. 3600 DS 12345 8 2 ABCDEF01"]
    );
    // Other types at the child apex: the child's.
    let m = ask(&r, "sub.example.com.", RecordType::NS);
    assert!(m.authoritative());
    assert_eq!(
        texts(m.answers()),
        ["sub.example.com. 300 NS ns.sub.example.com."]
    );
    let m = ask(&r, "www.sub.example.com.", RecordType::DS);
    assert_eq!(texts(m.name_servers())[0].split(' ').nth(2), Some("SOA"));
    assert!(m.name_servers()[0].name().to_string() == "sub.example.com.");
    // A CNAME query below a DNAME: the DNAME and its CNAME, nothing else,
    // whether or not the target exists.
    for (q, target) in [
        ("nx.dn.d.example.", "nx.t.d.example."),
        ("host.dn.d.example.", "host.t.d.example."),
        ("a.b.dn.d.example.", "a.b.t.d.example."),
    ] {
        let m = ask(&r, q, RecordType::CNAME);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{q}");
        assert!(m.authoritative());
        let got = texts(m.answers());
        assert_eq!(got.len(), 2, "{q}: {got:?}");
        assert!(
            got[0].starts_with("dn.d.example. 300 ")
                && m.answers()[0].record_type() == RecordType::from(39)
        );
        assert_eq!(got[1], format!("{q} 300 CNAME {target}"));
        assert!(
            m.name_servers().is_empty(),
            "{q}: {:?}",
            texts(m.name_servers())
        );
    }
    // Other types still follow the CNAME.
    let m = ask(&r, "host.dn.d.example.", RecordType::A);
    assert_eq!(m.answers().len(), 3);
    let m = ask(&r, "nx.dn.d.example.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // A CNAME into a delegation: the CNAME, then the referral with glue;
    // AA stays (the CNAME is ours).
    let m = ask(&r, "cn.d.example.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(
        texts(m.answers()),
        ["cn.d.example. 300 CNAME x.deleg.d.example."]
    );
    assert_eq!(
        texts(m.name_servers()),
        ["deleg.d.example. 300 NS ns.deleg.d.example."]
    );
    assert_eq!(
        texts(m.additionals()),
        ["ns.deleg.d.example. 300 A 192.0.2.53"]
    );
    // Transfers of a name that is no zone's apex, or in no zone: NOTAUTH;
    // AXFR over UDP: NOTIMP whatever the name; IXFR without the SOA of
    // the client at the apex: FORMERR.
    for (q, t, tr, rc) in [
        (
            "www.example.com.",
            RecordType::AXFR,
            Transport::Tcp,
            ResponseCode::NotAuth,
        ),
        (
            "nothere.test.",
            RecordType::AXFR,
            Transport::Tcp,
            ResponseCode::NotAuth,
        ),
        (
            "www.example.com.",
            RecordType::IXFR,
            Transport::Udp,
            ResponseCode::NotAuth,
        ),
        (
            "nothere.test.",
            RecordType::IXFR,
            Transport::Tcp,
            ResponseCode::NotAuth,
        ),
        (
            "www.example.com.",
            RecordType::AXFR,
            Transport::Udp,
            ResponseCode::NotImp,
        ),
        (
            "nothere.test.",
            RecordType::AXFR,
            Transport::Udp,
            ResponseCode::NotImp,
        ),
        (
            "example.com.",
            RecordType::IXFR,
            Transport::Udp,
            ResponseCode::FormErr,
        ),
    ] {
        let raw = ask_raw(&r, &query_bytes(q, t, None), tr).unwrap();
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.response_code(), rc, "{q} {t} {tr:?}");
    }
    // NOTIFY: for a primary zone of ours, REFUSED (Prohibited); for a
    // name in no zone, REFUSED (Not Authoritative).
    for (q, code) in [("example.com.", 18u8), ("nothere.test.", 20)] {
        let mut notify = query_bytes(q, RecordType::SOA, Some(1232));
        notify[2] = (notify[2] & 0x87) | (4 << 3) | 0x04;
        let m = Message::from_vec(&ask_raw(&r, &notify, Transport::Udp).unwrap()).unwrap();
        assert_eq!(
            (m.op_code(), m.response_code()),
            (OpCode::Notify, ResponseCode::Refused)
        );
        assert_eq!(option(&m, 15), Some(vec![0, code]), "{q}");
    }
}

/// Review fixes: the TC of a referral that lost glue also after a CNAME;
/// DS from a parent only where that parent delegates the name itself; no
/// cookie verdict for a TSIG failure, whose reply has no OPT.
#[test]
fn referral_tc_after_cname_occluded_ds_and_tsig_failure_cookie() {
    let mut d = String::from(
        "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\ncn CNAME x.deleg\n",
    );
    for i in 0..13 {
        d.push_str(&format!(
            "deleg NS ns{i}.deleg\nns{i}.deleg A 192.0.2.{i}\nns{i}.deleg AAAA 2001:db8::{i}\n"
        ));
    }
    const P: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n\
        b NS ns.b\nns.b A 192.0.2.2\na.b NS x.a.b\nx.a.b A 192.0.2.4\na.b DS 1 8 2 ABCDEF01\n";
    const AB: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 77\n@ NS ns\nns A 192.0.2.3\n";
    let r = responder_with(
        &[
            ("d.example.", &d),
            ("p.example.", P),
            ("a.b.p.example.", AB),
        ],
        ResponderConfig {
            cookie_secret: Some([1; 16]),
            ..ResponderConfig::default()
        },
    );
    // Direct and through a CNAME: glue cut at 512 octets, TC set.
    for q in ["x.deleg.d.example.", "cn.d.example."] {
        let raw = ask_raw(&r, &query_bytes(q, RecordType::A, None), Transport::Udp).unwrap();
        assert!(raw.len() <= 512);
        let m = Message::from_vec(&raw).unwrap();
        assert!(m.truncated(), "{q}");
        assert_eq!(m.name_servers().len(), 13, "{q}");
    }
    // a.b is below b's cut in p.example: p.example does not delegate it,
    // so the zone a.b.p.example answers (NODATA, its own SOA).
    let m = ask(&r, "a.b.p.example.", RecordType::DS);
    assert!(m.authoritative() && m.answers().is_empty());
    assert_eq!(m.name_servers()[0].name().to_string(), "a.b.p.example.");
    // A TSIG with an unknown key: NOTAUTH, no OPT, so no cookie verdict.
    let mut q = query_with_cookies("ns.d.example.", &[&[7u8; 8]]);
    let key = tsig::Key::new(&name("nokey."), tsig::Algorithm::HmacSha256, b"secret");
    let _ = tsig::sign_request(&mut q, &key, 1_700_000_000);
    let mut out = Vec::new();
    let got = r.respond(
        &q,
        Transport::Udp,
        "192.0.2.9".parse().unwrap(),
        1_700_000_000,
        &mut out,
    );
    assert!(matches!(got.outcome, Outcome::Reply));
    assert_eq!(got.cookie, CookieCheck::None);
    assert_eq!(
        Message::from_vec(&out).unwrap().response_code(),
        ResponseCode::NotAuth
    );
}
