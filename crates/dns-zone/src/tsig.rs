//! TSIG (RFC 8945) with HMAC-SHA256 and HMAC-SHA512, Sans-I/O: the host
//! passes the time.
//!
//! A request's TSIG is checked in RFC 8945 5.2's order (key, MAC, time);
//! a response to a valid signed request is signed, a transfer's every
//! message chained to the one before (5.3.1).

use ring::hmac;

use crate::types::{class, rtype};

/// TSIG error codes (RFC 8945 3, in the TSIG record) and NOTAUTH, the
/// RCODE that carries them.
pub mod error {
    #![allow(missing_docs)]
    pub const NOTAUTH: u16 = 9;
    pub const BADSIG: u16 = 16;
    pub const BADKEY: u16 = 17;
    pub const BADTIME: u16 = 18;
}

/// Default fudge: seconds of clock difference allowed (RFC 8945 10).
pub const FUDGE: u16 = 300;

/// A TSIG algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `hmac-sha256`
    HmacSha256,
    /// `hmac-sha512`
    HmacSha512,
}

impl Algorithm {
    /// From BIND's name (`hmac-sha256`, `hmac-sha512`, any case, final
    /// dot optional).
    pub fn from_name(s: &str) -> Option<Algorithm> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    fn wire(self) -> &'static [u8] {
        match self {
            Algorithm::HmacSha256 => b"\x0bhmac-sha256\x00",
            Algorithm::HmacSha512 => b"\x0bhmac-sha512\x00",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// A shared secret: BIND's `key "name" { algorithm ...; secret "..."; };`.
#[derive(Clone)]
pub struct Key {
    name: Box<[u8]>,
    algorithm: Algorithm,
    key: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut n = String::new();
        let _ = crate::name::write_presentation(&self.name, &mut n);
        f.debug_struct("Key")
            .field("name", &n)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key named `name` (a domain name, e.g. `xfr-key`), with the raw
    /// secret (BIND's base64 decoded).
    pub fn new(name: &crate::Name, algorithm: Algorithm, secret: &[u8]) -> Key {
        Key {
            name: name.as_wire().to_ascii_lowercase().into(),
            algorithm,
            key: hmac::Key::new(algorithm.ring(), secret),
        }
    }

    /// The key name, lowercased wire form.
    pub fn name_wire(&self) -> &[u8] {
        &self.name
    }
}

/// A request's TSIG as found by the query reader: where its record starts
/// and its fields.
#[derive(Debug, Clone)]
pub(crate) struct RequestTsig<'a> {
    /// Offset of the TSIG record's owner name in the message.
    pub start: usize,
    /// Key name, lowercased wire.
    pub key_name: Vec<u8>,
    pub algorithm: Vec<u8>,
    pub time: u64,
    pub fudge: u16,
    pub mac: &'a [u8],
    pub original_id: u16,
    pub error: u16,
    pub other: &'a [u8],
}

/// Reads an uncompressed or compressed name at `p`, lowercased; returns
/// it and the offset after it in place.
fn read_name(msg: &[u8], mut p: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(p)?;
        match len & 0xc0 {
            0x00 => {
                let label = msg.get(p..p + 1 + usize::from(len))?;
                out.extend_from_slice(label);
                p += 1 + usize::from(len);
                if len == 0 {
                    break;
                }
                if out.len() > 255 {
                    return None;
                }
            }
            0xc0 => {
                let lo = *msg.get(p + 1)?;
                end.get_or_insert(p + 2);
                p = usize::from(len & 0x3f) << 8 | usize::from(lo);
                hops += 1;
                if hops > 16 {
                    return None;
                }
            }
            _ => return None,
        }
    }
    out.make_ascii_lowercase();
    Some((out, end.unwrap_or(p)))
}

/// Parses the TSIG record starting at `start`, whose RDATA is `rdata`.
pub(crate) fn parse_request<'a>(
    msg: &'a [u8],
    start: usize,
    rdata: &'a [u8],
) -> Option<RequestTsig<'a>> {
    let (key_name, _) = read_name(msg, start)?;
    // The algorithm name is never compressed (RFC 8945 4.2).
    let (algorithm, p) = read_name(rdata, 0)?;
    let f = rdata.get(p..p + 10)?;
    let mut t = [0u8; 8];
    t.get_mut(2..)?.copy_from_slice(f.get(..6)?);
    let time = u64::from_be_bytes(t);
    let fudge = u16::from_be_bytes([*f.get(6)?, *f.get(7)?]);
    let mac_len = usize::from(u16::from_be_bytes([*f.get(8)?, *f.get(9)?]));
    let mac = rdata.get(p + 10..p + 10 + mac_len)?;
    let q = p + 10 + mac_len;
    let g = rdata.get(q..q + 6)?;
    let original_id = u16::from_be_bytes([*g.first()?, *g.get(1)?]);
    let error = u16::from_be_bytes([*g.get(2)?, *g.get(3)?]);
    let other_len = usize::from(u16::from_be_bytes([*g.get(4)?, *g.get(5)?]));
    let other = rdata.get(q + 6..q + 6 + other_len)?;
    (q + 6 + other_len == rdata.len()).then_some(RequestTsig {
        start,
        key_name,
        algorithm,
        time,
        fudge,
        mac,
        original_id,
        error,
        other,
    })
}

/// The TSIG variables (RFC 8945 4.3.3) into a MAC context.
#[allow(clippy::too_many_arguments)]
fn variables(ctx: &mut hmac::Context, key: &Key, time: u64, fudge: u16, error: u16, other: &[u8]) {
    ctx.update(&key.name);
    ctx.update(&class::ANY.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(key.algorithm.wire());
    ctx.update(time.to_be_bytes().get(2..).unwrap_or_default());
    ctx.update(&fudge.to_be_bytes());
    ctx.update(&error.to_be_bytes());
    ctx.update(&(other.len() as u16).to_be_bytes());
    ctx.update(other);
}

/// The message as it was before its TSIG was added: original ID, ARCOUNT
/// one less, no TSIG record (RFC 8945 4.3.1).
fn unsigned_part(ctx: &mut hmac::Context, msg: &[u8], tsig_start: usize, original_id: u16) {
    ctx.update(&original_id.to_be_bytes());
    ctx.update(msg.get(2..10).unwrap_or_default());
    let ar = msg
        .get(10..12)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_be_bytes);
    ctx.update(&ar.saturating_sub(1).to_be_bytes());
    ctx.update(msg.get(12..tsig_start).unwrap_or_default());
}

/// The outcome of checking a request's TSIG.
#[derive(Debug, Clone)]
pub enum Checked {
    /// No TSIG.
    Unsigned,
    /// Valid: the key and the request MAC (the response's MAC covers it).
    Valid {
        /// The key that signed.
        key: Key,
        /// The request's MAC.
        mac: Vec<u8>,
    },
    /// Invalid: answer NOTAUTH with this TSIG error (RFC 8945 5.2); with a
    /// key and MAC for BADTIME, whose answer is signed.
    Invalid {
        /// BADKEY, BADSIG or BADTIME.
        error: u16,
        /// Key name and algorithm as the request gave them.
        key_name: Vec<u8>,
        /// Algorithm name (wire) from the request.
        algorithm: Vec<u8>,
        /// BADTIME: the key and request MAC to sign the answer with.
        signer: Option<(Key, Vec<u8>)>,
    },
}

/// Checks a request's TSIG against `keys` at `now` (seconds since 1970).
pub(crate) fn check(msg: &[u8], t: &RequestTsig<'_>, keys: &[Key], now: u64) -> Checked {
    let found = keys
        .iter()
        .find(|k| *k.name == *t.key_name && k.algorithm.wire() == t.algorithm.as_slice());
    let Some(key) = found else {
        return Checked::Invalid {
            error: error::BADKEY,
            key_name: t.key_name.clone(),
            algorithm: t.algorithm.clone(),
            signer: None,
        };
    };
    let mut ctx = hmac::Context::with_key(&key.key);
    unsigned_part(&mut ctx, msg, t.start, t.original_id);
    variables(&mut ctx, key, t.time, t.fudge, t.error, t.other);
    let tag = ctx.sign();
    // Full-length MACs only (truncation, RFC 8945 5.2.2.1, is not offered);
    // the comparison is constant-time.
    if !constant_eq(t.mac, tag.as_ref()) {
        return Checked::Invalid {
            error: error::BADSIG,
            key_name: t.key_name.clone(),
            algorithm: t.algorithm.clone(),
            signer: None,
        };
    }
    if now.abs_diff(t.time) > u64::from(t.fudge) {
        return Checked::Invalid {
            error: error::BADTIME,
            key_name: t.key_name.clone(),
            algorithm: t.algorithm.clone(),
            signer: Some((key.clone(), t.mac.to_vec())),
        };
    }
    Checked::Valid {
        key: key.clone(),
        mac: t.mac.to_vec(),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Appends a TSIG record to `msg` and bumps ARCOUNT.
#[allow(clippy::too_many_arguments)]
fn append(
    msg: &mut Vec<u8>,
    key_name: &[u8],
    algorithm: &[u8],
    time: u64,
    fudge: u16,
    mac: &[u8],
    original_id: u16,
    error: u16,
    other: &[u8],
) {
    msg.extend_from_slice(key_name);
    msg.extend_from_slice(&rtype::TSIG.to_be_bytes());
    msg.extend_from_slice(&class::ANY.to_be_bytes());
    msg.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = algorithm.len() + 16 + mac.len() + other.len();
    msg.extend_from_slice(&(rdlen as u16).to_be_bytes());
    msg.extend_from_slice(algorithm);
    msg.extend_from_slice(time.to_be_bytes().get(2..).unwrap_or_default());
    msg.extend_from_slice(&fudge.to_be_bytes());
    msg.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    msg.extend_from_slice(mac);
    msg.extend_from_slice(&original_id.to_be_bytes());
    msg.extend_from_slice(&error.to_be_bytes());
    msg.extend_from_slice(&(other.len() as u16).to_be_bytes());
    msg.extend_from_slice(other);
    if let Some(ar) = msg.get_mut(10..12) {
        let n = <[u8; 2]>::try_from(&*ar)
            .map_or(0, u16::from_be_bytes)
            .wrapping_add(1);
        ar.copy_from_slice(&n.to_be_bytes());
    }
}

fn msg_id(msg: &[u8]) -> u16 {
    msg.get(..2)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_be_bytes)
}

/// Signs a request (a NOTIFY) with `key` at `now`; returns its MAC.
pub fn sign_request(msg: &mut Vec<u8>, key: &Key, now: u64) -> Vec<u8> {
    let id = msg_id(msg);
    let mut ctx = hmac::Context::with_key(&key.key);
    ctx.update(msg);
    variables(&mut ctx, key, now, FUDGE, 0, &[]);
    let mac = ctx.sign().as_ref().to_vec();
    append(
        msg,
        &key.name,
        key.algorithm.wire(),
        now,
        FUDGE,
        &mac,
        id,
        0,
        &[],
    );
    mac
}

/// Signs the messages of one response to a valid signed request: the
/// first covers the request's MAC, each next one the MAC before it
/// (RFC 8945 5.3 and 5.3.1).
#[derive(Debug, Clone)]
pub struct Signer {
    key: Key,
    prior: Vec<u8>,
    first: bool,
    now: u64,
}

impl Signer {
    /// A signer for the response to a request signed with `key` whose MAC
    /// was `request_mac`.
    pub fn new(key: Key, request_mac: Vec<u8>, now: u64) -> Signer {
        Signer {
            key,
            prior: request_mac,
            first: true,
            now,
        }
    }

    /// The key's name (lowercased wire).
    pub fn key_name(&self) -> &[u8] {
        &self.key.name
    }

    /// Signs `msg` (a complete message without TSIG) with TSIG error
    /// `error` and `other` data.
    pub fn sign(&mut self, msg: &mut Vec<u8>, error: u16, other: &[u8]) {
        let id = msg_id(msg);
        let mut ctx = hmac::Context::with_key(&self.key.key);
        ctx.update(&(self.prior.len() as u16).to_be_bytes());
        ctx.update(&self.prior);
        ctx.update(msg);
        if self.first {
            variables(&mut ctx, &self.key, self.now, FUDGE, error, other);
        } else {
            // Later messages of a transfer: the timers only.
            ctx.update(self.now.to_be_bytes().get(2..).unwrap_or_default());
            ctx.update(&FUDGE.to_be_bytes());
        }
        let mac = ctx.sign().as_ref().to_vec();
        append(
            msg,
            &self.key.name,
            self.key.algorithm.wire(),
            self.now,
            FUDGE,
            &mac,
            id,
            error,
            other,
        );
        self.prior = mac;
        self.first = false;
    }
}

/// Where the TSIG record of a message starts and its RDATA, when its
/// last record is one.
fn find_tsig(msg: &[u8]) -> Option<(usize, &[u8])> {
    let h = msg.get(..12)?;
    let count = |i: usize| -> usize {
        h.get(i..i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, |b| usize::from(u16::from_be_bytes(b)))
    };
    let (qd, rrs) = (count(4), count(6) + count(8) + count(10));
    let skip_name = |mut p: usize| -> Option<usize> {
        loop {
            let len = *msg.get(p)?;
            match len & 0xc0 {
                0x00 if len == 0 => return Some(p + 1),
                0x00 => p += 1 + usize::from(len),
                0xc0 => return Some(p + 2),
                _ => return None,
            }
        }
    };
    let mut p = 12;
    for _ in 0..qd {
        p = skip_name(p)? + 4;
    }
    let mut last = None;
    for _ in 0..rrs {
        let start = p;
        p = skip_name(p)?;
        let f = msg.get(p..p + 10)?;
        let rt = u16::from_be_bytes([*f.first()?, *f.get(1)?]);
        let rdlen = usize::from(u16::from_be_bytes([*f.get(8)?, *f.get(9)?]));
        let rdata = msg.get(p + 10..p + 10 + rdlen)?;
        p += 10 + rdlen;
        last = Some((start, rt, rdata));
    }
    match last {
        Some((start, rt, rdata)) if rt == rtype::TSIG && p == msg.len() => Some((start, rdata)),
        _ => None,
    }
}

/// Checks the TSIG of each message answering a request we signed (RFC
/// 8945 5.3 and 5.3.1: the first signed, then at least every hundredth;
/// unsigned ones in between count in the next MAC).
#[derive(Debug)]
pub struct Verifier {
    key: Key,
    prior: Vec<u8>,
    first: bool,
    /// Unsigned messages since the last signed one.
    pending: Vec<u8>,
    unsigned: usize,
}

/// Why a response's TSIG does not check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The message has no TSIG where one is needed.
    #[error("unsigned answer")]
    Unsigned,
    /// The TSIG names another key or algorithm.
    #[error("signed with another key")]
    OtherKey,
    /// The MAC is wrong.
    #[error("bad signature")]
    BadSig,
    /// The signing time is outside the fudge.
    #[error("signature time out of range")]
    BadTime,
    /// The peer reports a TSIG error (BADKEY, BADSIG, BADTIME...).
    #[error("the peer reports TSIG error {0}")]
    Peer(u16),
}

impl Verifier {
    /// For the answer to a request signed with `key` whose MAC was
    /// `request_mac` (from [`sign_request`]).
    pub fn new(key: Key, request_mac: Vec<u8>) -> Verifier {
        Verifier {
            key,
            prior: request_mac,
            first: true,
            pending: Vec::new(),
            unsigned: 0,
        }
    }

    /// Checks one message at `now` (seconds since 1970).
    pub fn verify(&mut self, msg: &[u8], now: u64) -> Result<(), VerifyError> {
        let Some((start, rdata)) = find_tsig(msg) else {
            // Only between signed messages, and never the first.
            if self.first || self.unsigned >= 99 {
                return Err(VerifyError::Unsigned);
            }
            self.pending.extend_from_slice(msg);
            self.unsigned += 1;
            return Ok(());
        };
        let t = parse_request(msg, start, rdata).ok_or(VerifyError::BadSig)?;
        if t.error != 0 {
            return Err(VerifyError::Peer(t.error));
        }
        if *t.key_name != *self.key.name || t.algorithm.as_slice() != self.key.algorithm.wire() {
            return Err(VerifyError::OtherKey);
        }
        let mut ctx = hmac::Context::with_key(&self.key.key);
        ctx.update(&(self.prior.len() as u16).to_be_bytes());
        ctx.update(&self.prior);
        ctx.update(&self.pending);
        unsigned_part(&mut ctx, msg, start, t.original_id);
        if self.first {
            variables(&mut ctx, &self.key, t.time, t.fudge, t.error, t.other);
        } else {
            ctx.update(t.time.to_be_bytes().get(2..).unwrap_or_default());
            ctx.update(&t.fudge.to_be_bytes());
        }
        if !constant_eq(t.mac, ctx.sign().as_ref()) {
            return Err(VerifyError::BadSig);
        }
        if now.abs_diff(t.time) > u64::from(t.fudge) {
            return Err(VerifyError::BadTime);
        }
        self.prior = t.mac.to_vec();
        self.first = false;
        self.pending.clear();
        self.unsigned = 0;
        Ok(())
    }

    /// Whether the last message checked was signed (a transfer must end
    /// with one).
    pub fn complete(&self) -> bool {
        !self.first && self.unsigned == 0
    }
}

/// Appends the unsigned TSIG of a BADKEY or BADSIG answer (RFC 8945
/// 5.3.2: empty MAC).
pub(crate) fn append_unsigned_error(
    msg: &mut Vec<u8>,
    key_name: &[u8],
    algorithm: &[u8],
    now: u64,
    error: u16,
) {
    let id = msg_id(msg);
    append(msg, key_name, algorithm, now, FUDGE, &[], id, error, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Name;

    fn key(name: &str, secret: &[u8]) -> Key {
        Key::new(
            &Name::parse(name, None).unwrap(),
            Algorithm::HmacSha256,
            secret,
        )
    }

    /// A query for example.com SOA, signed at `t`.
    fn signed(k: &Key, t: u64) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x06\x00\x01");
        sign_request(&mut q, k, t);
        q
    }

    fn checked(msg: &[u8], keys: &[Key], now: u64) -> Checked {
        // The TSIG starts right after the question here.
        let start = 12 + 13 + 4;
        let rd_start = start + k_len(msg, start) + 10;
        let t = parse_request(msg, start, &msg[rd_start..]).unwrap();
        check(msg, &t, keys, now)
    }

    fn k_len(msg: &[u8], start: usize) -> usize {
        crate::name::wire_name_len(&msg[start..]).unwrap()
    }

    fn error_of(c: Checked) -> u16 {
        match c {
            Checked::Invalid { error, .. } => error,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sign_and_check_in_rfc8945_order() {
        let k = key("xfr-key.", b"0123456789abcdef");
        let q = signed(&k, 1_700_000_000);
        assert!(matches!(
            checked(&q, std::slice::from_ref(&k), 1_700_000_100),
            Checked::Valid { .. }
        ));
        // Unknown key first, then the MAC, then the time.
        let other = key("other.", b"0123456789abcdef");
        assert_eq!(
            error_of(checked(&q, &[other], 1_700_000_000)),
            error::BADKEY
        );
        let wrong = key("xfr-key.", b"not the secret!!");
        assert_eq!(
            error_of(checked(&q, &[wrong], 1_700_000_000)),
            error::BADSIG
        );
        let mut tampered = q.clone();
        tampered[2] ^= 0x01;
        assert_eq!(
            error_of(checked(&tampered, std::slice::from_ref(&k), 1_700_000_000)),
            error::BADSIG
        );
        assert_eq!(
            error_of(checked(&q, std::slice::from_ref(&k), 1_700_000_301)),
            error::BADTIME
        );
        assert_eq!(error_of(checked(&q, &[k], 1_699_999_699)), error::BADTIME);
    }

    #[test]
    fn transfer_messages_chain_their_macs() {
        let k = key("xfr-key.", b"secret");
        let mut a = Signer::new(k.clone(), vec![1, 2, 3], 5);
        let mut b = Signer::new(k, vec![1, 2, 3], 5);
        let (mut m1, mut m2) = (vec![0u8; 12], vec![0u8; 12]);
        a.sign(&mut m1, 0, &[]);
        b.sign(&mut m2, 0, &[]);
        assert_eq!(m1, m2);
        assert_eq!(&m1[10..12], &[0, 1]);
        // The second MAC depends on the first.
        let (mut n1, mut n2) = (vec![0u8; 12], vec![0u8; 12]);
        a.sign(&mut n1, 0, &[]);
        let mut fresh = Signer::new(key("xfr-key.", b"secret"), vec![9], 5);
        fresh.sign(&mut vec![0u8; 12], 0, &[]);
        fresh.sign(&mut n2, 0, &[]);
        assert_ne!(n1, n2);
    }

    #[test]
    fn verifier_checks_what_signer_signs() {
        let k = key("xfr-key.", b"secret");
        let mut q = vec![0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mac = sign_request(&mut q, &k, 100);
        let mut signer = Signer::new(k.clone(), mac.clone(), 100);
        let mut v = Verifier::new(k.clone(), mac.clone());
        for n in 0..3u8 {
            let mut m = vec![0, 7, 0x84, n << 4, 0, 0, 0, 0, 0, 0, 0, 0];
            signer.sign(&mut m, 0, &[]);
            assert_eq!(v.verify(&m, 150), Ok(()));
        }
        assert!(v.complete());
        // A changed message, a late one, another key, no TSIG.
        let mut m = vec![0, 7, 0x84, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
        Signer::new(k.clone(), mac.clone(), 100).sign(&mut m, 0, &[]);
        let mut bad = m.clone();
        bad[3] = 0x20;
        assert_eq!(
            Verifier::new(k.clone(), mac.clone()).verify(&bad, 100),
            Err(VerifyError::BadSig)
        );
        assert_eq!(
            Verifier::new(k.clone(), mac.clone()).verify(&m, 1000),
            Err(VerifyError::BadTime)
        );
        let other = key("other.", b"secret");
        assert_eq!(
            Verifier::new(other, mac.clone()).verify(&m, 100),
            Err(VerifyError::OtherKey)
        );
        let plain = vec![0, 7, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Verifier::new(k, mac).verify(&plain, 100),
            Err(VerifyError::Unsigned)
        );
    }
}
