//! Presentation-format record data to uncompressed wire format.
//!
//! The common types are converted here directly (no intermediate objects);
//! SVCB/HTTPS, CERT and CSYNC go through hickory-proto's parsers and
//! encoder. Every RFC 3597 `\# len hex` form is accepted and, for types
//! hickory-proto knows, checked by decoding it.

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder, Restrict};
use hickory_proto::serialize::txt::RDataParser;

use crate::error::ErrorKind;
use crate::lexer::Token;
use crate::name::{parse_name_into, unescape, write_presentation};
use crate::types::{self, rtype};

/// An rdata error and the token it concerns (`None`: the end of the record).
pub(crate) type RdError = (Option<Token>, ErrorKind);

pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub toks: &'a [Token],
    pub i: usize,
    pub origin: Option<&'a [u8]>,
    pub rtype: u16,
}

fn tok_text<'a>(buf: &'a [u8], t: &Token) -> &'a [u8] {
    buf.get(t.start as usize..t.end as usize)
        .unwrap_or_default()
}

impl<'a> Cursor<'a> {
    fn err(&self, tok: Option<Token>, msg: impl Into<String>) -> RdError {
        (
            tok,
            ErrorKind::Rdata {
                rtype: types::type_to_string(self.rtype),
                msg: msg.into(),
            },
        )
    }

    fn next(&mut self, what: &'static str) -> Result<(Token, &'a [u8]), RdError> {
        match self.toks.get(self.i) {
            Some(t) => {
                self.i += 1;
                Ok((*t, tok_text(self.buf, t)))
            }
            None => Err((None, ErrorKind::Expected(what))),
        }
    }

    fn has_more(&self) -> bool {
        self.i < self.toks.len()
    }

    fn number(&mut self, what: &'static str, max: u64) -> Result<u64, RdError> {
        let (t, s) = self.next(what)?;
        parse_u64(s)
            .filter(|&v| v <= max && !t.quoted)
            .ok_or((Some(t), ErrorKind::Expected(what)))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RdError> {
        Ok(self.number(what, 0xff)? as u8)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RdError> {
        Ok(self.number(what, 0xffff)? as u16)
    }

    fn name(&mut self, out: &mut Vec<u8>) -> Result<(), RdError> {
        let (t, s) = self.next("a domain name")?;
        if t.quoted {
            return Err((Some(t), ErrorKind::Expected("a domain name")));
        }
        parse_name_into(s, self.origin, out).map_err(|e| (Some(t), ErrorKind::Name(e)))
    }

    fn char_string(&mut self, out: &mut Vec<u8>) -> Result<(), RdError> {
        let (t, s) = self.next("a character string")?;
        let at = out.len();
        out.push(0);
        unescape_string(s, out).ok_or_else(|| self.err(Some(t), "bad escape"))?;
        let len = out.len() - at - 1;
        let len = u8::try_from(len)
            .map_err(|_| self.err(Some(t), "character string longer than 255 octets"))?;
        if let Some(slot) = out.get_mut(at) {
            *slot = len;
        }
        Ok(())
    }

    /// Concatenates all remaining tokens (hex and base64 may be split).
    fn rest(&mut self, what: &'static str) -> Result<(Token, Vec<u8>), RdError> {
        let first = *self
            .toks
            .get(self.i)
            .ok_or((None, ErrorKind::Expected(what)))?;
        let mut joined = Vec::new();
        while let Some(t) = self.toks.get(self.i) {
            joined.extend_from_slice(tok_text(self.buf, t));
            self.i += 1;
        }
        Ok((first, joined))
    }

    fn hex_rest(&mut self, out: &mut Vec<u8>, what: &'static str) -> Result<(), RdError> {
        let (t, s) = self.rest(what)?;
        decode_hex(&s, out).ok_or_else(|| self.err(Some(t), "bad hexadecimal data"))
    }

    fn base64_rest(&mut self, out: &mut Vec<u8>) -> Result<(), RdError> {
        let (t, s) = self.rest("base64 data")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&s)
            .map_err(|e| self.err(Some(t), format!("bad base64: {e}")))?;
        out.extend_from_slice(&decoded);
        Ok(())
    }

    fn type_code(&mut self) -> Result<u16, RdError> {
        let (t, s) = self.next("a record type")?;
        types::type_from_str(s).ok_or_else(|| {
            (
                Some(t),
                ErrorKind::UnknownType(String::from_utf8_lossy(s).into_owned()),
            )
        })
    }

    fn bitmap_rest(&mut self, out: &mut Vec<u8>) -> Result<(), RdError> {
        let mut codes = Vec::new();
        while self.has_more() {
            codes.push(self.type_code()?);
        }
        write_type_bitmap(&mut codes, out);
        Ok(())
    }

    fn algorithm(&mut self) -> Result<u8, RdError> {
        let (t, s) = self.next("an algorithm number")?;
        if let Some(v) = parse_u64(s) {
            return u8::try_from(v)
                .map_err(|_| (Some(t), ErrorKind::Expected("an algorithm number")));
        }
        const ALGS: &[(&str, u8)] = &[
            ("RSAMD5", 1),
            ("DH", 2),
            ("DSA", 3),
            ("RSASHA1", 5),
            ("DSA-NSEC3-SHA1", 6),
            ("RSASHA1-NSEC3-SHA1", 7),
            ("RSASHA256", 8),
            ("RSASHA512", 10),
            ("ECC-GOST", 12),
            ("ECDSAP256SHA256", 13),
            ("ECDSAP384SHA384", 14),
            ("ED25519", 15),
            ("ED448", 16),
            ("PRIVATEDNS", 253),
            ("PRIVATEOID", 254),
        ];
        ALGS.iter()
            .find(|(n, _)| s.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| *v)
            .ok_or((Some(t), ErrorKind::Expected("an algorithm number")))
    }

    fn ttl_like(&mut self, what: &'static str) -> Result<u32, RdError> {
        let (t, s) = self.next(what)?;
        parse_ttl(s).ok_or((Some(t), ErrorKind::Expected(what)))
    }

    fn salt(&mut self, out: &mut Vec<u8>) -> Result<(), RdError> {
        let (t, s) = self.next("a salt (hex or -)")?;
        let at = out.len();
        out.push(0);
        if s != b"-" {
            decode_hex(s, out).ok_or_else(|| self.err(Some(t), "bad salt"))?;
        }
        let len =
            u8::try_from(out.len() - at - 1).map_err(|_| self.err(Some(t), "salt too long"))?;
        if let Some(slot) = out.get_mut(at) {
            *slot = len;
        }
        Ok(())
    }
}

/// Parses the record data of `rtype` from `toks` into `out`.
pub(crate) fn parse_rdata(
    buf: &[u8],
    toks: &[Token],
    origin: Option<&[u8]>,
    rtype: u16,
    out: &mut Vec<u8>,
) -> Result<(), RdError> {
    let mut c = Cursor {
        buf,
        toks,
        i: 0,
        origin,
        rtype,
    };
    if let Some(t) = toks.first() {
        if !t.quoted && tok_text(buf, t) == b"\\#" {
            c.i = 1;
            return generic(&mut c, out);
        }
    }
    if types::is_meta(rtype) {
        return Err((
            toks.first().copied(),
            ErrorKind::MetaType(types::type_to_string(rtype)),
        ));
    }
    match rtype {
        rtype::A => {
            let (t, s) = c.next("an IPv4 address")?;
            let ip: Ipv4Addr = std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or((Some(t), ErrorKind::Expected("an IPv4 address")))?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::AAAA => {
            let (t, s) = c.next("an IPv6 address")?;
            let ip: Ipv6Addr = std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or((Some(t), ErrorKind::Expected("an IPv6 address")))?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::NS | rtype::CNAME | rtype::PTR | rtype::DNAME | rtype::ANAME => c.name(out)?,
        rtype::MX => {
            out.extend_from_slice(&c.u16("a preference (0-65535)")?.to_be_bytes());
            c.name(out)?;
        }
        rtype::SOA => {
            c.name(out)?;
            c.name(out)?;
            let serial = c.number("a serial number (0-4294967295)", u64::from(u32::MAX))? as u32;
            out.extend_from_slice(&serial.to_be_bytes());
            for what in [
                "a refresh time",
                "a retry time",
                "an expire time",
                "a minimum TTL",
            ] {
                let what: &'static str = what;
                out.extend_from_slice(&c.ttl_like(what)?.to_be_bytes());
            }
        }
        rtype::TXT | rtype::SPF => {
            c.char_string(out)?;
            while c.has_more() {
                c.char_string(out)?;
            }
        }
        rtype::HINFO => {
            c.char_string(out)?;
            c.char_string(out)?;
        }
        rtype::SRV => {
            out.extend_from_slice(&c.u16("a priority (0-65535)")?.to_be_bytes());
            out.extend_from_slice(&c.u16("a weight (0-65535)")?.to_be_bytes());
            out.extend_from_slice(&c.u16("a port (0-65535)")?.to_be_bytes());
            c.name(out)?;
        }
        rtype::NAPTR => {
            out.extend_from_slice(&c.u16("an order (0-65535)")?.to_be_bytes());
            out.extend_from_slice(&c.u16("a preference (0-65535)")?.to_be_bytes());
            c.char_string(out)?;
            c.char_string(out)?;
            c.char_string(out)?;
            c.name(out)?;
        }
        rtype::CAA => {
            out.push(c.u8("flags (0-255)")?);
            let (t, tag) = c.next("a property tag")?;
            if tag.is_empty() || tag.len() > 255 || !tag.iter().all(u8::is_ascii_alphanumeric) {
                return Err(c.err(Some(t), "tag must be 1-255 letters and digits"));
            }
            out.push(tag.len() as u8);
            out.extend_from_slice(tag);
            let (t, v) = c.next("a property value")?;
            unescape_string(v, out).ok_or_else(|| c.err(Some(t), "bad escape"))?;
        }
        rtype::SSHFP => {
            out.push(c.u8("an algorithm (0-255)")?);
            out.push(c.u8("a fingerprint type (0-255)")?);
            c.hex_rest(out, "a hexadecimal fingerprint")?;
        }
        rtype::TLSA => {
            out.push(c.u8("a usage (0-255)")?);
            out.push(c.u8("a selector (0-255)")?);
            out.push(c.u8("a matching type (0-255)")?);
            c.hex_rest(out, "hexadecimal association data")?;
        }
        rtype::DS | rtype::CDS => {
            out.extend_from_slice(&c.u16("a key tag (0-65535)")?.to_be_bytes());
            out.push(c.algorithm()?);
            out.push(c.u8("a digest type (0-255)")?);
            c.hex_rest(out, "a hexadecimal digest")?;
        }
        rtype::DNSKEY | rtype::CDNSKEY | rtype::KEY => {
            out.extend_from_slice(&c.u16("flags (0-65535)")?.to_be_bytes());
            out.push(c.u8("a protocol (0-255)")?);
            out.push(c.algorithm()?);
            c.base64_rest(out)?;
        }
        rtype::RRSIG | rtype::SIG => {
            out.extend_from_slice(&c.type_code()?.to_be_bytes());
            out.push(c.algorithm()?);
            out.push(c.u8("a label count (0-255)")?);
            out.extend_from_slice(&c.ttl_like("an original TTL")?.to_be_bytes());
            for what in ["a signature expiration", "a signature inception"] {
                let what: &'static str = what;
                let (t, s) = c.next(what)?;
                let v = parse_sig_time(s).ok_or((Some(t), ErrorKind::Expected(what)))?;
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&c.u16("a key tag (0-65535)")?.to_be_bytes());
            c.name(out)?;
            c.base64_rest(out)?;
        }
        rtype::NSEC => {
            c.name(out)?;
            c.bitmap_rest(out)?;
        }
        rtype::NSEC3 => {
            out.push(c.u8("a hash algorithm (0-255)")?);
            out.push(c.u8("flags (0-255)")?);
            out.extend_from_slice(&c.u16("iterations (0-65535)")?.to_be_bytes());
            c.salt(out)?;
            let (t, s) = c.next("the next hashed owner (base32hex)")?;
            let at = out.len();
            out.push(0);
            decode_base32hex(s, out).ok_or_else(|| c.err(Some(t), "bad base32hex"))?;
            let len =
                u8::try_from(out.len() - at - 1).map_err(|_| c.err(Some(t), "hash too long"))?;
            if let Some(slot) = out.get_mut(at) {
                *slot = len;
            }
            c.bitmap_rest(out)?;
        }
        rtype::NSEC3PARAM => {
            out.push(c.u8("a hash algorithm (0-255)")?);
            out.push(c.u8("flags (0-255)")?);
            out.extend_from_slice(&c.u16("iterations (0-65535)")?.to_be_bytes());
            c.salt(out)?;
        }
        rtype::OPENPGPKEY => c.base64_rest(out)?,
        rtype::SVCB | rtype::HTTPS | rtype::CERT | rtype::CSYNC => via_hickory(&mut c, out)?,
        _ => {
            return Err(c.err(
                toks.first().copied(),
                "no presentation format known for this type; use the RFC 3597 \\# form",
            ))
        }
    }
    if let Some(t) = toks.get(c.i) {
        return Err((
            Some(*t),
            ErrorKind::Trailing(String::from_utf8_lossy(tok_text(buf, t)).into_owned()),
        ));
    }
    Ok(())
}

/// RFC 3597 section 5: `\# <length> <hex>...`.
fn generic(c: &mut Cursor<'_>, out: &mut Vec<u8>) -> Result<(), RdError> {
    let len = c.u16("the rdata length after \\#")?;
    let start = out.len();
    if c.has_more() {
        c.hex_rest(out, "hexadecimal rdata")?;
    }
    if out.len() - start != usize::from(len) {
        return Err(c.err(
            c.toks.get(1).copied(),
            format!("\\# length {len} but {} octets of data", out.len() - start),
        ));
    }
    let data = out.get(start..).unwrap_or_default();
    if types::is_meta(c.rtype) {
        return Err((
            c.toks.first().copied(),
            ErrorKind::MetaType(types::type_to_string(c.rtype)),
        ));
    }
    let valid = wire_rdata_valid(c.rtype, data);
    if !valid {
        return Err(c.err(
            c.toks.first().copied(),
            "\\# data is not valid for this type",
        ));
    }
    Ok(())
}

/// Whether `data` is well-formed uncompressed RDATA of type `rtype`.
/// Known types must be even in the generic `\#` form (RFC 3597 section
/// 5), and records from a zone transfer are held to the same rule, so that
/// whatever a zone holds can be written out and read back; meta types
/// (RFC 6895 section 3.1) are never record data.
pub(crate) fn wire_rdata_valid(code: u16, data: &[u8]) -> bool {
    if types::is_meta(code) {
        return false;
    }
    match code {
        rtype::DNAME | rtype::NS | rtype::CNAME | rtype::PTR => {
            crate::name::wire_name_len(data) == Some(data.len())
        }
        code => match RecordType::from(code) {
            RecordType::Unknown(_) | RecordType::NULL => true,
            rt => {
                let Ok(len) = u16::try_from(data.len()) else {
                    return false;
                };
                let mut d = BinDecoder::new(data);
                RData::read(&mut d, rt, Restrict::new(len)).is_ok() && d.is_empty()
            }
        },
    }
}

/// Types whose presentation format is parsed by hickory-proto.
fn via_hickory(c: &mut Cursor<'_>, out: &mut Vec<u8>) -> Result<(), RdError> {
    let first = c.toks.get(c.i).copied();
    let mut strings: Vec<String> = Vec::new();
    let mut prev_end: Option<u32> = None;
    while let Some(t) = c.toks.get(c.i) {
        let s = tok_text(c.buf, t);
        let text = if t.quoted {
            let mut v = Vec::new();
            unescape_string(s, &mut v).ok_or_else(|| c.err(Some(*t), "bad escape"))?;
            String::from_utf8(v).map_err(|_| c.err(Some(*t), "not UTF-8"))?
        } else {
            String::from_utf8(s.to_vec()).map_err(|_| c.err(Some(*t), "not UTF-8"))?
        };
        // `key="value"` lexes as `key=` plus a quoted token right after it.
        match strings.last_mut() {
            Some(last) if t.quoted && prev_end == Some(t.start - 1) && last.ends_with('=') => {
                last.push_str(&text)
            }
            _ => strings.push(text),
        }
        prev_end = Some(t.end);
        c.i += 1;
    }
    let origin = match c.origin {
        Some(o) => {
            let mut text = String::new();
            let _ = write_presentation(o, &mut text);
            Some(
                hickory_proto::rr::Name::from_ascii(&text)
                    .map_err(|e| c.err(first, e.to_string()))?,
            )
        }
        None => None,
    };
    let rdata = RData::parse(
        RecordType::from(c.rtype),
        strings.iter().map(String::as_str),
        origin.as_ref(),
    )
    .map_err(|e| c.err(first, e.to_string()))?;
    let mut enc = BinEncoder::new(out);
    enc.set_canonical_names(true);
    rdata
        .emit(&mut enc)
        .map_err(|e| c.err(first, e.to_string()))?;
    Ok(())
}

/// Decodes the escapes of a character string (RFC 1035 5.1) into `out`.
pub(crate) fn unescape_string(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'\\' {
            let (v, used) = unescape(s.get(i + 1..).unwrap_or_default())?;
            out.push(v);
            i += 1 + used;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(())
}

pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

/// Parses a TTL: seconds, or BIND's units (`1W2D3h4m5s`, any case).
/// RFC 2181 section 8 caps TTLs at 2^31 - 1.
pub fn parse_ttl(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.first()?.is_ascii_digit() {
        return None;
    }
    let mut total = 0u64;
    let mut cur: Option<u64> = None;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                let v = cur.unwrap_or(0) * 10 + u64::from(b - b'0');
                if v > u64::from(u32::MAX) {
                    return None;
                }
                cur = Some(v);
            }
            _ => {
                let mult = match b.to_ascii_lowercase() {
                    b'w' => 604_800,
                    b'd' => 86_400,
                    b'h' => 3_600,
                    b'm' => 60,
                    b's' => 1,
                    _ => return None,
                };
                total += cur.take()? * mult;
            }
        }
        if total > 0x7fff_ffff {
            return None;
        }
    }
    total += cur.unwrap_or(0);
    u32::try_from(total).ok().filter(|&v| v <= 0x7fff_ffff)
}

/// RRSIG times: `YYYYMMDDHHmmSS` (RFC 4034 3.2) or seconds since 1970.
fn parse_sig_time(s: &[u8]) -> Option<u32> {
    if s.len() == 14 {
        let d = |r: std::ops::Range<usize>| parse_u64(s.get(r)?);
        let (y, mo, da, h, mi, se) = (
            d(0..4)?,
            d(4..6)?,
            d(6..8)?,
            d(8..10)?,
            d(10..12)?,
            d(12..14)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let days = days_from_civil(y as i64, mo as i64, da as i64);
        let secs = days * 86_400 + (h * 3600 + mi * 60 + se) as i64;
        // Serial-number arithmetic (RFC 4034 3.1.5): modulo 2^32.
        return Some(secs.rem_euclid(1 << 32) as u32);
    }
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if s.len() % 2 != 0 {
        return None;
    }
    for pair in s.chunks_exact(2) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        out.push(hi << 4 | lo);
    }
    Some(())
}

/// RFC 4648 base32hex without padding (NSEC3 next hashed owner).
fn decode_base32hex(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in s {
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'v' => b - b'a' + 10,
            b'A'..=b'V' => b - b'A' + 10,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding.
    (acc == 0).then_some(())
}

/// RFC 4034 section 4.1.2 type bitmap.
pub(crate) fn write_type_bitmap(codes: &mut Vec<u16>, out: &mut Vec<u8>) {
    codes.sort_unstable();
    codes.dedup();
    let mut idx = 0;
    while let Some(&first) = codes.get(idx) {
        let window = first >> 8;
        let mut bitmap = [0u8; 32];
        let mut used = 0usize;
        while let Some(&code) = codes.get(idx) {
            if code >> 8 != window {
                break;
            }
            let low = usize::from(code & 0xff);
            if let Some(byte) = bitmap.get_mut(low / 8) {
                *byte |= 0x80 >> (low % 8);
            }
            used = low / 8 + 1;
            idx += 1;
        }
        out.push(window as u8);
        out.push(used as u8);
        out.extend_from_slice(bitmap.get(..used).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(
            parse_ttl(b"1W2D3h4m5s"),
            Some(604_800 + 2 * 86_400 + 3 * 3600 + 4 * 60 + 5)
        );
        assert_eq!(parse_ttl(b"1d"), Some(86_400));
        assert_eq!(parse_ttl(b"3H"), Some(10_800));
        assert_eq!(parse_ttl(b"300"), Some(300));
        assert_eq!(parse_ttl(b"1h30"), Some(3630));
        assert_eq!(parse_ttl(b"2147483647"), Some(2_147_483_647));
        assert_eq!(parse_ttl(b"2147483648"), None);
        assert_eq!(parse_ttl(b"99999999999"), None);
        assert_eq!(parse_ttl(b"h"), None);
        assert_eq!(parse_ttl(b"1x"), None);
        assert_eq!(parse_ttl(b"1hh"), None);
        assert_eq!(parse_ttl(b""), None);
    }

    #[test]
    fn sig_time() {
        assert_eq!(parse_sig_time(b"19700101000000"), Some(0));
        assert_eq!(parse_sig_time(b"20240101000000"), Some(1_704_067_200));
        assert_eq!(parse_sig_time(b"1704067200"), Some(1_704_067_200));
        assert_eq!(parse_sig_time(b"20241301000000"), None);
    }

    #[test]
    fn base32hex_and_hex() {
        let mut v = Vec::new();
        decode_base32hex(b"CPNMUOG", &mut v).unwrap_or(());
        let mut w = Vec::new();
        assert!(decode_hex(b"0a0B", &mut w).is_some());
        assert_eq!(w, [10, 11]);
        assert!(decode_hex(b"0a0", &mut w).is_none());
        assert!(decode_hex(b"zz", &mut w).is_none());
        let mut x = Vec::new();
        assert!(decode_base32hex(b"W", &mut x).is_none());
    }

    #[test]
    fn bitmap() {
        let mut out = Vec::new();
        write_type_bitmap(
            &mut vec![rtype::A, rtype::MX, rtype::RRSIG, rtype::NSEC, rtype::CAA],
            &mut out,
        );
        // RFC 4034 4.3 example style: window 0 then window 1.
        assert_eq!(out[0], 0);
        assert_eq!(out[1], 6);
        assert_eq!(out[2], 0x40);
        assert_eq!(&out[8..], &[1, 1, 0x40]);
    }
}
