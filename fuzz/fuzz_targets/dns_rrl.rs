//! The response rate limiter fed arbitrary response bytes from arbitrary
//! clients at arbitrary times: it reads names and sections out of the
//! response to classify it, so hostile bytes must never panic it. Checks:
//! no panic; a slipped response is a whole header plus at most the
//! question and the OPT record, never longer than the response, with TC
//! set or (for a client with a cookie) no records but the OPT.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_zone::rrl::{slip, RateLimiter, RrlConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((ctl, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let config = RrlConfig {
        responses_per_second: u32::from(ctl[0] % 8) + 1,
        slip: u32::from(ctl[1] % 4),
        table_size: 64,
        ..RrlConfig::default()
    };
    let Some(rrl) = RateLimiter::new(config) else {
        return;
    };
    // Cut the rest into responses; each from one of a few clients.
    for (i, resp) in rest.split(|&b| b == 0xff).enumerate() {
        let client = if ctl[2] & 1 == 0 {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 3) as u8))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, (i % 3) as u16))
        };
        let _ = rrl.check(u64::from(ctl[3]) * 1000, client, resp);
        let mut copy = resp.to_vec();
        let bad_cookie = ctl[2] & 2 != 0;
        if slip(&mut copy, bad_cookie) {
            assert!(copy.len() >= 12 && copy.len() <= resp.len());
            assert_eq!(copy.get(6..11), Some(&[0u8; 5][..]), "records kept");
            let tc = copy.get(2).is_some_and(|b| b & 0x02 != 0);
            let with_opt = copy.get(11) == Some(&1);
            assert!(tc || (bad_cookie && with_opt), "neither TC nor BADCOOKIE");
        }
    }
});
