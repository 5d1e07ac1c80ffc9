//! The responder on arbitrary query bytes over both transports, against a
//! zone with wildcards, CNAME chains and loops, DNAMEs (out of zone, into
//! the wildcard, onto itself), and a delegation, and two
//! signed zones (NSEC and NSEC3, fake signatures: the responder only picks
//! records). Each input is also sent with an EDNS OPT carrying DO appended,
//! so the DNSSEC paths (RFC 4035 3.1) run on most inputs. Every reply must
//! parse with hickory-proto's message parser.
#![no_main]

use std::sync::{Arc, OnceLock};

use dns_zone::{
    load_zone, tsig, Catalog, CookieCheck, Name, NoIncludes, Outcome, Prefix, Responder,
    ResponderConfig, Transport,
};
use libfuzzer_sys::fuzz_target;

const ZONE: &str =
    "$TTL 300\n@ SOA ns root 1 2 3 4 60\n NS ns\n MX 10 mail\n TXT \"hello\"\nns A 192.0.2.1\n\
mail A 192.0.2.2\nmail AAAA 2001:db8::2\nwww CNAME web\nweb A 192.0.2.3\nl1 CNAME l2\nl2 CNAME l1\n\
*.w A 192.0.2.4\n*.w MX 5 mail\nsub NS ns.sub\nns.sub A 192.0.2.5\n_s._tcp SRV 0 0 25 mail\n\
dn DNAME example.net.\nin DNAME w.example.com.\nloop DNAME x.loop.example.com.\n";

const SIG: &str = "13 2 300 20300101000000 20200101000000 1 s.example. AAAA";

fn signed_zone(nsec3: bool) -> String {
    let mut z = format!(
        "$TTL 300\n@ SOA ns root 1 2 3 4 60\n RRSIG SOA {SIG}\n NS ns\n RRSIG NS {SIG}\n DNSKEY 257 3 13 AAAA\n RRSIG DNSKEY {SIG}\n\
ns A 192.0.2.1\nns RRSIG A {SIG}\n*.w TXT x\n*.w RRSIG TXT {SIG}\nc CNAME nx.w\nc RRSIG CNAME {SIG}\n\
a.b A 192.0.2.2\na.b RRSIG A {SIG}\nsub NS ns.sub\nns.sub A 192.0.2.3\nsec NS ns.sub\nsec DS 1 13 2 00\nsec RRSIG DS {SIG}\n"
    );
    if nsec3 {
        z += "@ NSEC3PARAM 1 0 0 -\n";
        for (h, next) in [
            (
                "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom",
                "35mthgpgcu1qg68fab165klnsnk3dpvl",
            ),
            (
                "35mthgpgcu1qg68fab165klnsnk3dpvl",
                "gjeqe526plbf1g8mklp59enfd789njgi",
            ),
            (
                "gjeqe526plbf1g8mklp59enfd789njgi",
                "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom",
            ),
        ] {
            z += &format!("{h} NSEC3 1 1 0 - {next} A RRSIG\n{h} RRSIG NSEC3 {SIG}\n");
        }
    } else {
        for (o, next) in [
            ("@", "a.b"),
            ("a.b", "ns"),
            ("ns", "sec"),
            ("sec", "sub"),
            ("sub", "*.w"),
            ("*.w", "@"),
        ] {
            z += &format!("{o} NSEC {next} A NS RRSIG NSEC\n{o} RRSIG NSEC {SIG}\n");
        }
    }
    z
}

/// The Server Cookie secret: every cookie in a reply must check with it.
const SECRET: [u8; 16] = [0x42; 16];
const NOW: u64 = 1_700_000_000;

fn responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        let origin = Name::parse("example.com.", None).unwrap();
        let (z, _) = load_zone(ZONE.as_bytes(), "z", &origin, &mut NoIncludes).unwrap();
        let mut c = Catalog::new();
        c.insert(z);
        for (apex, nsec3) in [("s.example.", false), ("s3.example.", true)] {
            let origin = Name::parse(apex, None).unwrap();
            let text = signed_zone(nsec3);
            let (z, _) = load_zone(text.as_bytes(), "z", &origin, &mut NoIncludes).unwrap();
            assert!(z.is_signed());
            c.insert(z);
        }
        Responder::new(
            Arc::new(c),
            ResponderConfig {
                udp_payload_max: 1232,
                axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
                // TSIG-signed inputs reach the key lookup and MAC check.
                tsig_keys: vec![tsig::Key::new(
                    &Name::parse("k.", None).unwrap(),
                    tsig::Algorithm::HmacSha256,
                    b"fuzz",
                )],
                transfer_keys: vec![(
                    b"\x01s\x07example\x00".to_vec().into(),
                    b"\x01k\x00".to_vec().into(),
                )],
                // NOTIFY from loopback for one zone, and a secondary zone
                // not transferred yet.
                notify_allow: vec![
                    (
                        b"\x02s3\x07example\x00".to_vec().into(),
                        vec![Prefix::parse("127.0.0.0/8").unwrap()],
                    ),
                    (b"\x07pending\x07example\x00".to_vec().into(), vec![]),
                ],
                // NSID and the CHAOS names, so their answers are checked
                // too; the version is hidden (refused).
                // Long enough that it must give way in small replies.
                nsid: Some(vec![b'n'; 300].into()),
                identity: Some(b"ns.example".to_vec().into()),
                version: None,
                cookie_secret: Some(SECRET),
                cookie_secrets_accepted: vec![[0x24; 16]],
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same query with an OPT record (payload 1232, DO, an NSID
    // request, a Client Cookie) appended.
    if data.len() >= 12 && data[10..12] == [0, 0] {
        let mut q = data.to_vec();
        q[11] = 1;
        q.extend_from_slice(&[
            0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 16, 0, 3, 0, 0, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6,
            7, 8,
        ]);
        check(&q);
    }
});

fn check(data: &[u8]) {
    let r = responder();
    let mut out = Vec::new();
    for t in [Transport::Udp, Transport::Tcp] {
        let answered = r.respond(data, t, "127.0.0.1".parse().unwrap(), NOW, &mut out);
        match answered.outcome {
            Outcome::Reply => {
                assert!(out.len() >= 12);
                // Well-formed for another parser: compression pointers
                // point back, the counts match the sections.
                let reply = match hickory_proto::op::Message::from_vec(&out) {
                    Ok(m) => m,
                    Err(e) => panic!("reply does not parse: {e}\n{out:02x?}"),
                };
                // A COOKIE we send is one we would take back (RFC 9018).
                use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
                if let Some(EdnsOption::Unknown(_, c)) = reply
                    .extensions()
                    .as_ref()
                    .and_then(|e| e.option(EdnsCode::from(10u16)))
                {
                    let ip = "127.0.0.1".parse().unwrap();
                    assert!(dns_zone::cookie::QueryCookie::parse(c).is_valid(&SECRET, ip, NOW));
                } else {
                    // RFC 7873 5.2.3: a judged Client Cookie is answered.
                    assert_eq!(answered.cookie, CookieCheck::None, "no COOKIE in the reply");
                }
                // The rate limiter's slipped form of it parses too, and
                // says BADCOOKIE only with our OPT.
                let mut slipped = out.clone();
                let bad_cookie = answered.cookie == CookieCheck::Unverified;
                if dns_zone::rrl::slip(&mut slipped, bad_cookie) {
                    let m = match hickory_proto::op::Message::from_vec(&slipped) {
                        Ok(m) => m,
                        Err(e) => panic!("slipped reply does not parse: {e}\n{slipped:02x?}"),
                    };
                    assert!(m.answers().is_empty() && m.name_servers().is_empty());
                    assert!(m.truncated() || m.extensions().is_some());
                }
                if t == Transport::Udp {
                    // The client's own limit (RFC 6891 6.2.5: 512 at
                    // least, ours at most), options and TSIG included.
                    // hickory-proto reserves room for the record counts
                    // the header claims (65535 of each: megabytes, mapped
                    // and unmapped by the sanitizer every run); a query
                    // claiming more than a few records is refused anyway.
                    let claimed: u32 = (2..6)
                        .map(|i| u32::from(u16::from_be_bytes([data[2 * i], data[2 * i + 1]])))
                        .sum();
                    let parsed = if claimed <= 16 {
                        hickory_proto::op::Message::from_vec(data).ok()
                    } else {
                        None
                    };
                    let limit = match parsed {
                        Some(q) => q
                            .extensions()
                            .as_ref()
                            .map_or(512, |e| e.max_payload().clamp(512, 1232)),
                        None => 1232,
                    };
                    assert!(out.len() <= usize::from(limit), "{} > {limit}", out.len());
                }
                assert_eq!(out[..2], data[..2]);
            }
            Outcome::Drop => assert!(out.is_empty() || data.len() < 12 || data[2] & 0x80 != 0),
            Outcome::Notify(_) => assert!(out.len() >= 12 && data[2] & 0x78 == 4 << 3),
            Outcome::Transfer(x) => {
                assert_eq!(t, Transport::Tcp);
                let _ = x.messages();
            }
        }
    }
}
