//! A secondary's side of zone transfers: what a primary (or anyone on the
//! path) sends back to an AXFR (RFC 5936), IXFR (RFC 1995), SOA query or
//! NOTIFY (RFC 1996), and TSIG on those answers (RFC 8945), never panics.
//! A zone built from a transfer is written out as dnsd keeps it on disk
//! and must load back with the same records and serial: otherwise a
//! secondary that accepted a transfer could not restart from its copy.
//!
//! Input: one mode byte, then messages, each a 2-byte big-endian length
//! and that many bytes (as on a TCP stream, RFC 1035 4.2.2).
#![no_main]

use std::sync::OnceLock;

use dns_zone::secondary::{soa_serial, to_zone_file, AxfrReader, IxfrReader};
use dns_zone::{ixfr, load_zone, tsig, Name, NoIncludes, Zone};
use libfuzzer_sys::fuzz_target;

/// The ID the seeds' answers carry.
const ID: u16 = 0x1234;

fn apex() -> &'static Name {
    static A: OnceLock<Name> = OnceLock::new();
    A.get_or_init(|| Name::parse("example.com.", None).unwrap())
}

/// The copy an IXFR is applied to (serial 1).
fn old_zone() -> &'static Zone {
    static Z: OnceLock<Zone> = OnceLock::new();
    Z.get_or_init(|| {
        let text = "$TTL 300\n@ SOA ns root 1 2 3 4 60\n NS ns\n MX 10 mail\nns A 192.0.2.1\n\
mail A 192.0.2.2\nwww CNAME mail\n*.w TXT \"x\"\n";
        load_zone(text.as_bytes(), "old", apex(), &mut NoIncludes)
            .unwrap()
            .0
    })
}

fn messages(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (m, t) = tail.split_at(n);
        out.push(m);
        rest = t;
    }
    out
}

/// The on-disk copy of `zone` loads back as the same zone.
fn round_trip(zone: &Zone) {
    let text = to_zone_file(zone);
    match load_zone(text.as_bytes(), "copy", zone.origin(), &mut NoIncludes) {
        Ok((back, _)) => {
            assert_eq!(back.record_count(), zone.record_count(), "{text}");
            assert_eq!(back.serial(), zone.serial());
        }
        Err(e) => panic!("the copy of a transferred zone does not load: {e:?}\n{text}"),
    }
}

/// Feeds messages until the reader says the transfer is complete (true)
/// or refuses one (false); what follows either is not read, as dnsd does.
fn feed_all<E>(msgs: &[&[u8]], mut feed: impl FnMut(&[u8]) -> Result<bool, E>) -> bool {
    for m in msgs {
        match feed(m) {
            Ok(false) => continue,
            Ok(true) => return true,
            Err(_) => return false,
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let msgs = messages(rest);
    if let Some(first) = msgs.first() {
        let _ = soa_serial(first, ID);
        let _ = ixfr::is_notify_response(first, ID);
    }
    match mode % 3 {
        0 => {
            let mut r = AxfrReader::new(apex(), ID);
            if feed_all(&msgs, |m| r.feed(m)) {
                if let Ok((zone, _)) = r.finish() {
                    round_trip(&zone);
                }
            }
        }
        1 => {
            let mut r = IxfrReader::new(old_zone(), ID);
            if feed_all(&msgs, |m| r.feed(m)) {
                let _ = (r.incremental(), r.changes(), r.up_to_date());
                if let Ok((zone, _)) = r.finish() {
                    round_trip(&zone);
                }
            }
        }
        _ => {
            // A signed answer checked against the MAC of our request.
            let key = tsig::Key::new(
                &Name::parse("k.", None).unwrap(),
                tsig::Algorithm::HmacSha256,
                b"fuzz",
            );
            let mut v = tsig::Verifier::new(key, vec![0; 32]);
            for m in &msgs {
                if v.verify(m, 1_700_000_000).is_err() {
                    break;
                }
            }
            let _ = v.complete();
        }
    }
});
