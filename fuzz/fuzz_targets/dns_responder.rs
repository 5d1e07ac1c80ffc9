//! The responder on arbitrary query bytes over both transports, against a
//! zone with wildcards, CNAME chains and loops, and a delegation.
#![no_main]

use std::sync::{Arc, OnceLock};

use dns_zone::{load_zone, Catalog, Name, NoIncludes, Outcome, Prefix, Responder, ResponderConfig, Transport};
use libfuzzer_sys::fuzz_target;

const ZONE: &str = "$TTL 300\n@ SOA ns root 1 2 3 4 60\n NS ns\n MX 10 mail\n TXT \"hello\"\nns A 192.0.2.1\n\
mail A 192.0.2.2\nmail AAAA 2001:db8::2\nwww CNAME web\nweb A 192.0.2.3\nl1 CNAME l2\nl2 CNAME l1\n\
*.w A 192.0.2.4\n*.w MX 5 mail\nsub NS ns.sub\nns.sub A 192.0.2.5\n_s._tcp SRV 0 0 25 mail\n";

fn responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        let origin = Name::parse("example.com.", None).unwrap();
        let (z, _) = load_zone(ZONE.as_bytes(), "z", &origin, &mut NoIncludes).unwrap();
        let mut c = Catalog::new();
        c.insert(z);
        Responder::new(
            Arc::new(c),
            ResponderConfig {
                udp_payload_max: 1232,
                axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let r = responder();
    let mut out = Vec::new();
    for t in [Transport::Udp, Transport::Tcp] {
        match r.handle(data, t, "127.0.0.1".parse().unwrap(), &mut out) {
            Outcome::Reply => {
                assert!(out.len() >= 12);
                if t == Transport::Udp {
                    assert!(out.len() <= 1232);
                }
                assert_eq!(out[..2], data[..2]);
            }
            Outcome::Drop => assert!(out.is_empty() || data.len() < 12 || data[2] & 0x80 != 0),
            Outcome::Transfer(x) => {
                assert_eq!(t, Transport::Tcp);
                let _ = x.messages();
            }
        }
    }
});
