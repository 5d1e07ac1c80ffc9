//! DNS Cookies (RFC 7873) with the interoperable Server Cookie of RFC
//! 9018: a client sends a random Client Cookie; we answer it with a
//! Server Cookie that only we (and servers sharing our secret) can make
//! for that client address. A query that returns a valid one comes from
//! the address it claims, so it cannot be a spoofed amplification attempt
//! (dnsd does not rate-limit it).

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// The COOKIE EDNS option (RFC 7873 4).
pub const OPTION_CODE: u16 = 10;

/// A Server Cookie is good for an hour after it was made, and up to five
/// minutes ahead of our clock (RFC 9018 4.3).
const LIFETIME: u32 = 3600;
const AHEAD: u32 = 300;

/// The COOKIE option of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryCookie {
    /// A Client Cookie alone: the client has no Server Cookie from us yet.
    Client([u8; 8]),
    /// A Client Cookie and a Server Cookie (8 to 32 octets) to check.
    WithServer {
        /// The Client Cookie.
        client: [u8; 8],
        /// The Server Cookie, in `bytes[..len]`.
        bytes: [u8; 32],
        /// Its length.
        len: u8,
    },
    /// Not a COOKIE option a client may send (RFC 7873 5.2.2: FORMERR).
    Malformed,
}

impl QueryCookie {
    /// Reads the option's data: 8 octets, or 16 to 40 (RFC 7873 4).
    pub fn parse(data: &[u8]) -> QueryCookie {
        let Some((client, server)) = data.split_first_chunk::<8>() else {
            return QueryCookie::Malformed;
        };
        match server.len() {
            0 => QueryCookie::Client(*client),
            8..=32 => {
                let mut bytes = [0u8; 32];
                for (d, b) in bytes.iter_mut().zip(server) {
                    *d = *b;
                }
                QueryCookie::WithServer {
                    client: *client,
                    bytes,
                    len: server.len() as u8,
                }
            }
            _ => QueryCookie::Malformed,
        }
    }

    /// The Client Cookie, if the option is well formed.
    pub fn client(&self) -> Option<[u8; 8]> {
        match self {
            QueryCookie::Client(c) | QueryCookie::WithServer { client: c, .. } => Some(*c),
            QueryCookie::Malformed => None,
        }
    }

    /// Whether the query returns a Server Cookie we made for `ip`, still
    /// fresh at `now` (seconds since 1970).
    pub fn is_valid(&self, secret: &[u8; 16], ip: IpAddr, now: u64) -> bool {
        let QueryCookie::WithServer { client, bytes, len } = self else {
            return false;
        };
        let Some(server) = bytes.get(..usize::from(*len)) else {
            return false;
        };
        // Version 1 (RFC 9018 4.1), 16 octets; other versions are not ours.
        let Some((head, hash)) = server.split_first_chunk::<8>() else {
            return false;
        };
        if head[0] != 1 || hash.len() != 8 {
            return false;
        }
        let made = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        // Serial number arithmetic on the 32-bit clock (RFC 1982).
        let now = now as u32;
        let age = now.wrapping_sub(made);
        if age > LIFETIME && made.wrapping_sub(now) > AHEAD {
            return false;
        }
        let reserved = [head[1], head[2], head[3]];
        hash == mac(secret, client, reserved, made, ip)
    }
}

/// A fresh Server Cookie for `client` at `ip` (RFC 9018 4.2): version 1,
/// reserved zero, the time, and the SipHash-2-4 of all that and the
/// client's address under `secret`.
pub fn server_cookie(secret: &[u8; 16], client: &[u8; 8], ip: IpAddr, now: u64) -> [u8; 16] {
    let now = now as u32;
    let mut c = [0u8; 16];
    c[0] = 1;
    c[4..8].copy_from_slice(&now.to_be_bytes());
    c[8..].copy_from_slice(&mac(secret, client, [0; 3], now, ip));
    c
}

/// RFC 9018 4.4: SipHash-2-4(Client Cookie | Version | Reserved |
/// Timestamp | Client-IP, Server Secret), written as SipHash writes it
/// (little-endian).
fn mac(secret: &[u8; 16], client: &[u8; 8], reserved: [u8; 3], time: u32, ip: IpAddr) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(&[1]);
    h.write(&reserved);
    h.write(&time.to_be_bytes());
    match ip.to_canonical() {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => h.write(&v6.octets()),
    }
    h.finish().to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn secret(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn rfc_9018_appendix_a_vectors() {
        let k = secret("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let cases = [
            // A.1: a new Server Cookie.
            (
                "2464c4abcf10c957",
                "198.51.100.100",
                1_559_731_985u64,
                "010000005cf79f111f8130c3eee29480",
            ),
            // A.2: the same client, renewed 40 minutes later.
            (
                "2464c4abcf10c957",
                "198.51.100.100",
                1_559_734_385,
                "010000005cf7a871d4a564a1442aca77",
            ),
            // A.3: another client.
            (
                "fc93fc62807ddb86",
                "203.0.113.203",
                1_559_734_700,
                "010000005cf7a9acf73a7810aca2381e",
            ),
        ];
        for (client, ip, now, want) in cases {
            let client: [u8; 8] = hex(client).try_into().unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(server_cookie(&k, &client, ip, now).to_vec(), hex(want));
        }
    }

    #[test]
    fn a_cookie_is_valid_for_its_client_and_an_hour() {
        let k = secret("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = 1_700_000_000u64;
        let mut data = client.to_vec();
        data.extend_from_slice(&server_cookie(&k, &client, ip, t));
        let q = QueryCookie::parse(&data);
        assert_eq!(q.client(), Some(client));
        assert!(q.is_valid(&k, ip, t));
        assert!(q.is_valid(&k, ip, t + 3600));
        assert!(!q.is_valid(&k, ip, t + 3601), "expired");
        assert!(q.is_valid(&k, ip, t - 300), "a little ahead of our clock");
        assert!(!q.is_valid(&k, ip, t - 301));
        assert!(
            !q.is_valid(&k, "192.0.2.2".parse().unwrap(), t),
            "another address"
        );
        assert!(
            q.is_valid(&k, "::ffff:192.0.2.1".parse().unwrap(), t),
            "the same address, IPv4-mapped"
        );
        assert!(!q.is_valid(&secret("00000000000000000000000000000000"), ip, t));
        // Another Client Cookie, or a changed octet, does not pass.
        let mut other = data.clone();
        other[0] ^= 1;
        assert!(!QueryCookie::parse(&other).is_valid(&k, ip, t));
        let mut other = data.clone();
        other[23] ^= 1;
        assert!(!QueryCookie::parse(&other).is_valid(&k, ip, t));
        // A Client Cookie alone is never valid.
        assert!(!QueryCookie::parse(&client).is_valid(&k, ip, t));
    }

    #[test]
    fn option_lengths() {
        // RFC 7873 4: 8 octets, or 16 to 40.
        for n in 0..50usize {
            let q = QueryCookie::parse(&vec![7u8; n]);
            let ok = n == 8 || (16..=40).contains(&n);
            assert_eq!(q != QueryCookie::Malformed, ok, "{n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64), now: u64) {
            let q = QueryCookie::parse(&data);
            let _ = q.is_valid(&[9; 16], "2001:db8::1".parse().unwrap(), now);
        }
    }
}
