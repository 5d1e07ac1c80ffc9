//! `smtp_proto::downgrade` never panics on any octets; a 7-bit message
//! comes back unchanged; and a single-part message with a 7-bit header
//! that it can convert (no Content-Type, no Content-Transfer-Encoding)
//! comes out 7-bit with lines no longer than RFC 5321 section 4.5.3.1.6
//! allows, decoding back to the original body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::downgrade::{downgrade, is_8bit};

fuzz_target!(|data: &[u8]| {
    // Any octets: no panic; 7-bit input is untouched.
    let out = downgrade(data);
    if !is_8bit(data) {
        assert_eq!(out, data);
    }

    // A convertible message: ASCII header, the fuzz input as body (CRLF
    // line ends only, as the queue stores it).
    let body = to_crlf(data);
    let mut msg = b"Subject: fuzz\r\n\r\n".to_vec();
    msg.extend_from_slice(&body);
    let out = downgrade(&msg);
    if is_8bit(&body) {
        assert!(out.is_ascii(), "8-bit octets left after conversion");
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 1000, "line over 1000 octets");
        }
        let (_, enc) = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| out.split_at(i + 4))
            .unwrap_or((&out, &[]));
        assert_eq!(qp_decode(enc), body);
    } else {
        assert_eq!(out, msg);
    }
});

/// Bare CR and LF become CRLF, so the input is a valid message body.
fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter().peekable();
    while let Some(&b) = it.next() {
        match b {
            b'\r' => {
                if it.peek() == Some(&&b'\n') {
                    it.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    out
}

/// Quoted-printable decoding (RFC 2045 section 6.7): `=XX`, soft breaks.
fn qp_decode(enc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while let Some(&b) = enc.get(i) {
        if b == b'=' {
            if enc.get(i + 1..i + 3) == Some(b"\r\n") {
                i += 3;
                continue;
            }
            let hex = enc
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => panic!("bad quoted-printable escape"),
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}
