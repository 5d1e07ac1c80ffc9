//! Record type and class mnemonics (IANA DNS parameters registry).

/// Record type codes this crate names.
pub mod rtype {
    #![allow(missing_docs)]
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const NULL: u16 = 10;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const SIG: u16 = 24;
    pub const KEY: u16 = 25;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const NAPTR: u16 = 35;
    pub const CERT: u16 = 37;
    pub const DNAME: u16 = 39;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const SSHFP: u16 = 44;
    pub const RRSIG: u16 = 46;
    pub const NSEC: u16 = 47;
    pub const DNSKEY: u16 = 48;
    pub const NSEC3: u16 = 50;
    pub const NSEC3PARAM: u16 = 51;
    pub const TLSA: u16 = 52;
    pub const CDS: u16 = 59;
    pub const CDNSKEY: u16 = 60;
    pub const OPENPGPKEY: u16 = 61;
    pub const CSYNC: u16 = 62;
    pub const SVCB: u16 = 64;
    pub const HTTPS: u16 = 65;
    pub const SPF: u16 = 99;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const MAILB: u16 = 253;
    pub const MAILA: u16 = 254;
    pub const ANY: u16 = 255;
    pub const CAA: u16 = 257;
    pub const ANAME: u16 = 65305;
}

/// Class codes.
pub mod class {
    #![allow(missing_docs)]
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
    pub const HS: u16 = 4;
    pub const NONE: u16 = 254;
    pub const ANY: u16 = 255;
}

const TYPES: &[(&str, u16)] = &[
    ("A", rtype::A),
    ("NS", rtype::NS),
    ("CNAME", rtype::CNAME),
    ("SOA", rtype::SOA),
    ("NULL", rtype::NULL),
    ("PTR", rtype::PTR),
    ("HINFO", rtype::HINFO),
    ("MX", rtype::MX),
    ("TXT", rtype::TXT),
    ("SIG", rtype::SIG),
    ("KEY", rtype::KEY),
    ("AAAA", rtype::AAAA),
    ("SRV", rtype::SRV),
    ("NAPTR", rtype::NAPTR),
    ("CERT", rtype::CERT),
    ("DNAME", rtype::DNAME),
    ("OPT", rtype::OPT),
    ("DS", rtype::DS),
    ("SSHFP", rtype::SSHFP),
    ("RRSIG", rtype::RRSIG),
    ("NSEC", rtype::NSEC),
    ("DNSKEY", rtype::DNSKEY),
    ("NSEC3", rtype::NSEC3),
    ("NSEC3PARAM", rtype::NSEC3PARAM),
    ("TLSA", rtype::TLSA),
    ("CDS", rtype::CDS),
    ("CDNSKEY", rtype::CDNSKEY),
    ("OPENPGPKEY", rtype::OPENPGPKEY),
    ("CSYNC", rtype::CSYNC),
    ("SVCB", rtype::SVCB),
    ("HTTPS", rtype::HTTPS),
    ("SPF", rtype::SPF),
    ("TSIG", rtype::TSIG),
    ("IXFR", rtype::IXFR),
    ("AXFR", rtype::AXFR),
    ("MAILB", rtype::MAILB),
    ("MAILA", rtype::MAILA),
    ("ANY", rtype::ANY),
    ("CAA", rtype::CAA),
    ("ANAME", rtype::ANAME),
];

/// Looks up a type mnemonic (any case) or the RFC 3597 `TYPEnnn` form.
pub fn type_from_str(s: &[u8]) -> Option<u16> {
    if s.len() > 10 {
        return None;
    }
    // Upper-case spellings of the commonest types skip the table scan.
    match s {
        b"A" => return Some(rtype::A),
        b"AAAA" => return Some(rtype::AAAA),
        b"MX" => return Some(rtype::MX),
        b"TXT" => return Some(rtype::TXT),
        b"CNAME" => return Some(rtype::CNAME),
        b"SRV" => return Some(rtype::SRV),
        b"NS" => return Some(rtype::NS),
        _ => {}
    }
    for (name, code) in TYPES {
        if s.eq_ignore_ascii_case(name.as_bytes()) {
            return Some(*code);
        }
    }
    generic_number(s, b"TYPE")
}

/// Looks up a class mnemonic or the RFC 3597 `CLASSnnn` form.
pub fn class_from_str(s: &[u8]) -> Option<u16> {
    if s.eq_ignore_ascii_case(b"IN") {
        Some(class::IN)
    } else if s.eq_ignore_ascii_case(b"CH") || s.eq_ignore_ascii_case(b"CHAOS") {
        Some(class::CH)
    } else if s.eq_ignore_ascii_case(b"HS") || s.eq_ignore_ascii_case(b"HESIOD") {
        Some(class::HS)
    } else {
        generic_number(s, b"CLASS")
    }
}

fn generic_number(s: &[u8], prefix: &[u8]) -> Option<u16> {
    let head = s.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let digits = s.get(prefix.len()..)?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
    u16::try_from(v).ok()
}

/// The mnemonic of a type, or `TYPEnnn`.
pub fn type_to_string(code: u16) -> String {
    TYPES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| format!("TYPE{code}"))
}

/// Whether a type is a query-only meta type that cannot appear in a zone.
pub fn is_meta(code: u16) -> bool {
    matches!(
        code,
        rtype::OPT
            | rtype::TSIG
            | rtype::IXFR
            | rtype::AXFR
            | rtype::MAILA
            | rtype::MAILB
            | rtype::ANY
    ) || code == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics() {
        assert_eq!(type_from_str(b"mx"), Some(15));
        assert_eq!(type_from_str(b"TYPE65534"), Some(65534));
        assert_eq!(type_from_str(b"type1"), Some(1));
        assert_eq!(type_from_str(b"TYPE65536"), None);
        assert_eq!(type_from_str(b"TYPE"), None);
        assert_eq!(type_from_str(b"FOO"), None);
        assert_eq!(class_from_str(b"in"), Some(1));
        assert_eq!(class_from_str(b"CLASS32"), Some(32));
        assert_eq!(class_from_str(b"A"), None);
        assert_eq!(type_to_string(15), "MX");
        assert_eq!(type_to_string(999), "TYPE999");
        assert!(is_meta(rtype::ANY));
        assert!(!is_meta(rtype::A));
    }
}
