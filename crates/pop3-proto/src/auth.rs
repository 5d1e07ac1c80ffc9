//! Digest helpers for the host's account store: APOP (RFC 1939 section 7)
//! and CRAM-MD5 (RFC 2195), with a constant-time comparison.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

/// The APOP digest: lower-case hex of MD5(timestamp + secret).
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// The CRAM-MD5 digest: lower-case hex of HMAC-MD5(secret, challenge)
/// (RFC 2195 section 2, HMAC per RFC 2104).
pub fn cram_md5_digest(secret: &str, challenge: &str) -> String {
    let mut key = [0u8; 64];
    if secret.len() > 64 {
        let d = Md5::digest(secret.as_bytes());
        for (k, b) in key.iter_mut().zip(d.iter()) {
            *k = *b;
        }
    } else {
        for (k, b) in key.iter_mut().zip(secret.as_bytes()) {
            *k = *b;
        }
    }
    let mut inner = Md5::new();
    inner.update(key.map(|k| k ^ 0x36));
    inner.update(challenge.as_bytes());
    let mut outer = Md5::new();
    outer.update(key.map(|k| k ^ 0x5c));
    outer.update(inner.finalize());
    hex(&outer.finalize())
}

/// Compares two hex digests case-insensitively in time independent of
/// where they differ.
pub fn digest_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    }) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1939_apop_example() {
        // RFC 1939 section 7.
        let d = apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf");
        assert_eq!(d, "c4c9334bac560ecc979e58001b3e22fb");
        assert!(digest_eq(&d, "C4C9334BAC560ECC979E58001B3E22FB"));
        assert!(!digest_eq(&d, "c4c9334bac560ecc979e58001b3e22fa"));
        assert!(!digest_eq(&d, "c4"));
    }

    #[test]
    fn rfc2195_cram_md5_example() {
        // RFC 2195 section 2.
        let d = cram_md5_digest(
            "tanstaaftanstaaf",
            "<1896.697170952@postoffice.reston.mci.net>",
        );
        assert_eq!(d, "b913a602c7eda7a495b4e6e7334d3890");
        // Keys longer than the block are hashed first (RFC 2104).
        let long = "k".repeat(80);
        assert_eq!(d.len(), cram_md5_digest(&long, "c").len());
        assert_ne!(
            cram_md5_digest(&long, "c"),
            cram_md5_digest(&long[..64], "c")
        );
    }
}
