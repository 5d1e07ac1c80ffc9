//! The response rate limiter fed arbitrary response bytes from arbitrary
//! clients at arbitrary times: it reads names and sections out of the
//! response to classify it, so hostile bytes must never panic it. Checks:
//! no panic; a truncated response is a whole header plus at most the
//! question, with TC set.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_zone::rrl::{truncate, RateLimiter, RrlConfig};
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
        if truncate(&mut copy) {
            assert!(copy.len() >= 12 && copy.len() <= resp.len());
            assert!(copy.get(2).is_some_and(|b| b & 0x02 != 0), "TC not set");
        }
    }
});
