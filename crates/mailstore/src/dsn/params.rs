//! RFC 3461 ESMTP parameters: xtext, `NOTIFY=`, `RET=`, `ENVID=`, `ORCPT=`.
//!
//! smtp-proto keeps these parameters as written; the parsers here take those
//! strings. Keywords are matched without regard to case (ESMTP keywords and
//! values such as `NEVER` or `FULL` are case-insensitive in practice, and
//! Postfix accepts them so); addresses and envelope ids keep their case.

use std::fmt;

/// Longest `ENVID=` value, counted on the xtext as sent (RFC 3461 section
/// 4.4).
pub const ENVID_MAX: usize = 100;

/// Longest `ORCPT=` value, address type included (RFC 3461 section 4.2).
pub const ORCPT_MAX: usize = 500;

/// Errors of the RFC 3461 parameter parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A character that xtext does not allow (outside `!`..`~`, or `=`).
    #[error("invalid xtext character {byte:#04x} at offset {offset}")]
    XtextChar {
        /// Byte offset in the parameter value.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A `+` not followed by two hexadecimal digits.
    #[error("invalid xtext escape at offset {offset}")]
    XtextEscape {
        /// Byte offset of the `+`.
        offset: usize,
    },
    /// `NOTIFY=` with an empty list or an empty item.
    #[error("empty NOTIFY keyword")]
    NotifyEmpty,
    /// A `NOTIFY=` keyword other than NEVER, SUCCESS, DELAY, FAILURE.
    #[error("unknown NOTIFY keyword {0:?}")]
    NotifyKeyword(String),
    /// `NEVER` together with another keyword (RFC 3461 section 4.1).
    #[error("NOTIFY=NEVER must appear alone")]
    NotifyNeverCombined,
    /// `RET=` other than FULL or HDRS.
    #[error("RET must be FULL or HDRS, not {0:?}")]
    Ret(String),
    /// An empty `ENVID=`.
    #[error("empty ENVID")]
    EnvidEmpty,
    /// `ENVID=` longer than [`ENVID_MAX`] characters.
    #[error("ENVID is {0} characters long, the limit is 100")]
    EnvidTooLong(usize),
    /// A decoded `ENVID=` with a character that is not printable US-ASCII.
    #[error("ENVID contains a character that is not printable US-ASCII")]
    EnvidNotPrintable,
    /// `ORCPT=` without the `;` after the address type.
    #[error("ORCPT has no address type")]
    OrcptNoType,
    /// `ORCPT=` whose address type is not an atom.
    #[error("invalid ORCPT address type {0:?}")]
    OrcptBadType(String),
    /// `ORCPT=` longer than [`ORCPT_MAX`] characters.
    #[error("ORCPT is {0} characters long, the limit is 500")]
    OrcptTooLong(usize),
    /// `ORCPT=` with an empty address.
    #[error("empty ORCPT address")]
    OrcptEmpty,
    /// A decoded `rfc822` (or unknown type) ORCPT address with a character
    /// that is not printable US-ASCII.
    #[error("ORCPT address contains a character that is not printable US-ASCII")]
    OrcptNotPrintable,
    /// A `utf-8` ORCPT address that is not utf-8-addr-xtext or
    /// utf-8-addr-unitext (RFC 6533 section 3).
    #[error("invalid utf-8 address form at offset {offset}")]
    Utf8Addr {
        /// Byte offset in the address.
        offset: usize,
    },
}

/// Decodes xtext (RFC 3461 section 4): `!`..`~` except `+` and `=` stand
/// for themselves, `+XX` for the octet with hex value XX. The RFC asks for
/// upper-case hex; lower case is accepted too, as Postfix does.
pub fn xtext_decode(s: &str) -> Result<Vec<u8>, ParamError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| Some(hex_val(*h.first()?)? << 4 | hex_val(*h.get(1)?)?))
                    .ok_or(ParamError::XtextEscape { offset: i })?;
                out.push(hex);
                i += 3;
            }
            b'!'..=b'~' if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(ParamError::XtextChar { offset: i, byte: b }),
        }
    }
    Ok(out)
}

/// Encodes octets as xtext (RFC 3461 section 4), with upper-case hex.
pub fn xtext_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            push_hex(&mut out, '+', b);
        }
    }
    out
}

fn push_hex(out: &mut String, lead: char, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(lead);
    for nibble in [b >> 4, b & 0xf] {
        out.push(char::from(
            HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
        ));
    }
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Which delivery status notifications a recipient asked for (`NOTIFY=`,
/// RFC 3461 section 4.1). All three false is `NOTIFY=NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notify {
    /// `SUCCESS`: report delivery.
    pub success: bool,
    /// `DELAY`: report delays.
    pub delay: bool,
    /// `FAILURE`: report failure.
    pub failure: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify {
        success: false,
        delay: false,
        failure: false,
    };

    /// Parses a `NOTIFY=` value: `NEVER`, or a comma-separated list of
    /// `SUCCESS`, `DELAY`, `FAILURE` (repeats are harmless and accepted).
    pub fn parse(value: &str) -> Result<Notify, ParamError> {
        let mut n = Notify::NEVER;
        let mut never = false;
        for item in value.split(',') {
            if item.is_empty() {
                return Err(ParamError::NotifyEmpty);
            } else if item.eq_ignore_ascii_case("NEVER") {
                never = true;
            } else if item.eq_ignore_ascii_case("SUCCESS") {
                n.success = true;
            } else if item.eq_ignore_ascii_case("DELAY") {
                n.delay = true;
            } else if item.eq_ignore_ascii_case("FAILURE") {
                n.failure = true;
            } else {
                return Err(ParamError::NotifyKeyword(item.to_owned()));
            }
        }
        if never && n != Notify::NEVER {
            return Err(ParamError::NotifyNeverCombined);
        }
        Ok(n)
    }

    /// Whether this is `NOTIFY=NEVER`.
    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }
}

/// The parameter value as it is relayed: `NEVER` or the keywords in the
/// order SUCCESS, DELAY, FAILURE.
impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let words = [
            (self.success, "SUCCESS"),
            (self.delay, "DELAY"),
            (self.failure, "FAILURE"),
        ];
        let mut first = true;
        for (_, w) in words.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(w)?;
            first = false;
        }
        Ok(())
    }
}

/// How much of the message a failure notification returns (`RET=`, RFC
/// 3461 section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the headers only.
    Hdrs,
}

impl Ret {
    /// Parses a `RET=` value.
    pub fn parse(value: &str) -> Result<Ret, ParamError> {
        if value.eq_ignore_ascii_case("FULL") {
            Ok(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Ok(Ret::Hdrs)
        } else {
            Err(ParamError::Ret(value.to_owned()))
        }
    }

    /// The parameter value: `FULL` or `HDRS`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// An envelope identifier (`ENVID=`, RFC 3461 section 4.4), decoded. It
/// goes back to the sender verbatim in `Original-Envelope-Id:`, which is
/// not xtext (RFC 3464 section 2.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Envid(String);

impl Envid {
    /// Parses an `ENVID=` value: xtext of at most [`ENVID_MAX`] characters
    /// that decodes to printable US-ASCII (RFC 3461 section 4.4).
    pub fn parse(value: &str) -> Result<Envid, ParamError> {
        if value.is_empty() {
            return Err(ParamError::EnvidEmpty);
        }
        if value.len() > ENVID_MAX {
            return Err(ParamError::EnvidTooLong(value.len()));
        }
        let raw = xtext_decode(value)?;
        if !raw.iter().all(|b| (b' '..=b'~').contains(b)) {
            return Err(ParamError::EnvidNotPrintable);
        }
        String::from_utf8(raw)
            .map(Envid)
            .map_err(|_| ParamError::EnvidNotPrintable)
    }

    /// The decoded identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parameter value to relay (`ENVID=` this).
    pub fn to_xtext(&self) -> String {
        xtext_encode(self.0.as_bytes())
    }
}

/// An original recipient (`ORCPT=addr-type;xtext`, RFC 3461 section 4.2),
/// decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Orcpt {
    /// `rfc822;` an RFC 5321 mailbox, printable US-ASCII.
    Rfc822(String),
    /// `utf-8;` an internationalised address (RFC 6533 section 3), given as
    /// utf-8-addr-xtext (`\x{HEX}` escapes) or utf-8-addr-unitext.
    Utf8(String),
    /// Another address type, kept so it can be relayed and reported (RFC
    /// 3461 section 4.2 asks MTAs to pass unknown types along).
    Other {
        /// The address type as written.
        addr_type: String,
        /// The decoded address, printable US-ASCII.
        address: String,
    },
}

impl Orcpt {
    /// Parses an `ORCPT=` value.
    pub fn parse(value: &str) -> Result<Orcpt, ParamError> {
        if value.len() > ORCPT_MAX {
            return Err(ParamError::OrcptTooLong(value.len()));
        }
        let (addr_type, addr) = value.split_once(';').ok_or(ParamError::OrcptNoType)?;
        if addr_type.is_empty() || !addr_type.bytes().all(is_atext) {
            return Err(ParamError::OrcptBadType(addr_type.to_owned()));
        }
        if addr.is_empty() {
            return Err(ParamError::OrcptEmpty);
        }
        if addr_type.eq_ignore_ascii_case("utf-8") {
            return utf8_addr_decode(addr).map(Orcpt::Utf8);
        }
        let raw = xtext_decode(addr)?;
        if !raw.iter().all(|b| (b'!'..=b'~').contains(b) || *b == b' ') {
            return Err(ParamError::OrcptNotPrintable);
        }
        let address = String::from_utf8(raw).map_err(|_| ParamError::OrcptNotPrintable)?;
        if addr_type.eq_ignore_ascii_case("rfc822") {
            Ok(Orcpt::Rfc822(address))
        } else {
            Ok(Orcpt::Other {
                addr_type: addr_type.to_owned(),
                address,
            })
        }
    }

    /// The address type: `rfc822`, `utf-8` or the other type as written.
    pub fn addr_type(&self) -> &str {
        match self {
            Orcpt::Rfc822(_) => "rfc822",
            Orcpt::Utf8(_) => "utf-8",
            Orcpt::Other { addr_type, .. } => addr_type,
        }
    }

    /// The decoded address.
    pub fn address(&self) -> &str {
        match self {
            Orcpt::Rfc822(a) | Orcpt::Utf8(a) => a,
            Orcpt::Other { address, .. } => address,
        }
    }

    /// The parameter value to relay (`ORCPT=` this), all US-ASCII: xtext
    /// for `rfc822` and other types, utf-8-addr-xtext for `utf-8`.
    pub fn to_param(&self) -> String {
        let addr = match self {
            Orcpt::Utf8(a) => utf8_addr_encode(a),
            Orcpt::Rfc822(a) | Orcpt::Other { address: a, .. } => xtext_encode(a.as_bytes()),
        };
        format!("{};{addr}", self.addr_type())
    }

    /// The address as written after `addr-type;` in an
    /// `Original-Recipient:` field: decoded for US-ASCII types (RFC 3464
    /// section 2.3.1), utf-8-addr-xtext for `utf-8` (the form RFC 6533
    /// section 3 allows in `message/delivery-status`).
    pub(crate) fn field_address(&self) -> String {
        match self {
            Orcpt::Utf8(a) => utf8_addr_encode(a),
            Orcpt::Rfc822(a) | Orcpt::Other { address: a, .. } => a.clone(),
        }
    }
}

/// atext of RFC 5322 section 3.2.3, which RFC 3461's `addr-type = atom`
/// uses.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Decodes utf-8-addr-xtext or utf-8-addr-unitext (RFC 6533 section 3):
/// printable ASCII other than `+`, `=` and `\` stands for itself, as does
/// non-ASCII UTF-8 (unitext); `\x{HEX}` is the scalar value HEX.
pub fn utf8_addr_decode(s: &str) -> Result<String, ParamError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let offset = s.len() - rest.len();
        let bad = ParamError::Utf8Addr { offset };
        if c == '\\' {
            let body = rest.strip_prefix("\\x{").ok_or(bad.clone())?;
            let end = body.find('}').ok_or(bad.clone())?;
            let hex = body.get(..end).ok_or(bad.clone())?;
            if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad);
            }
            let ch = u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .filter(|&ch| ch != '\0')
                .ok_or(bad)?;
            out.push(ch);
            rest = body.get(end + 1..).unwrap_or("");
        } else if (c.is_ascii_graphic() && c != '+' && c != '=') || !c.is_ascii() {
            if c.is_control() {
                return Err(bad);
            }
            out.push(c);
            rest = rest.get(c.len_utf8()..).unwrap_or("");
        } else {
            return Err(bad);
        }
    }
    Ok(out)
}

/// Encodes an address as utf-8-addr-xtext (RFC 6533 section 3): US-ASCII
/// only, `\x{HEX}` for non-ASCII, controls, space, `+`, `=` and `\`.
pub fn utf8_addr_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_graphic() && c != '+' && c != '=' && c != '\\' {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn xtext_examples() {
        assert_eq!(xtext_decode("QQ314159").unwrap(), b"QQ314159");
        assert_eq!(xtext_decode("a+2Bb+3Dc").unwrap(), b"a+b=c");
        assert_eq!(xtext_decode("+e9t+c3+A9").unwrap(), b"\xe9t\xc3\xa9");
        assert_eq!(xtext_encode(b"a+b=c d\xff"), "a+2Bb+3Dc+20d+FF");
        assert_eq!(xtext_encode(b""), "");
        assert_eq!(
            xtext_decode("a=b"),
            Err(ParamError::XtextChar {
                offset: 1,
                byte: b'='
            })
        );
        assert_eq!(
            xtext_decode("a b"),
            Err(ParamError::XtextChar {
                offset: 1,
                byte: b' '
            })
        );
        assert_eq!(
            xtext_decode("ab+"),
            Err(ParamError::XtextEscape { offset: 2 })
        );
        assert_eq!(
            xtext_decode("ab+4"),
            Err(ParamError::XtextEscape { offset: 2 })
        );
        assert_eq!(
            xtext_decode("+4G"),
            Err(ParamError::XtextEscape { offset: 0 })
        );
        assert!(xtext_decode("é").is_err());
    }

    #[test]
    fn notify() {
        assert_eq!(Notify::parse("NEVER").unwrap(), Notify::NEVER);
        assert!(Notify::parse("never").unwrap().is_never());
        let n = Notify::parse("FAILURE,success").unwrap();
        assert!(n.success && n.failure && !n.delay);
        assert_eq!(n.to_string(), "SUCCESS,FAILURE");
        assert_eq!(
            Notify::parse("SUCCESS,DELAY,FAILURE").unwrap().to_string(),
            "SUCCESS,DELAY,FAILURE"
        );
        assert_eq!(Notify::NEVER.to_string(), "NEVER");
        assert_eq!(
            Notify::parse("NEVER,FAILURE"),
            Err(ParamError::NotifyNeverCombined)
        );
        assert_eq!(
            Notify::parse("DELAY,NEVER"),
            Err(ParamError::NotifyNeverCombined)
        );
        assert_eq!(Notify::parse(""), Err(ParamError::NotifyEmpty));
        assert_eq!(Notify::parse("DELAY,"), Err(ParamError::NotifyEmpty));
        assert_eq!(
            Notify::parse("SOMETIMES"),
            Err(ParamError::NotifyKeyword("SOMETIMES".into()))
        );
        assert_eq!(Notify::parse("DELAY,DELAY").unwrap().to_string(), "DELAY");
    }

    #[test]
    fn ret() {
        assert_eq!(Ret::parse("FULL"), Ok(Ret::Full));
        assert_eq!(Ret::parse("hdrs"), Ok(Ret::Hdrs));
        assert_eq!(Ret::parse("BODY"), Err(ParamError::Ret("BODY".into())));
        assert_eq!(Ret::Hdrs.as_str(), "HDRS");
    }

    #[test]
    fn envid() {
        let e = Envid::parse("QQ314159+2Bx").unwrap();
        assert_eq!(e.as_str(), "QQ314159+x");
        assert_eq!(e.to_xtext(), "QQ314159+2Bx");
        assert_eq!(Envid::parse("a+20b").unwrap().as_str(), "a b");
        assert_eq!(Envid::parse(""), Err(ParamError::EnvidEmpty));
        assert!(Envid::parse(&"x".repeat(100)).is_ok());
        assert_eq!(
            Envid::parse(&"x".repeat(101)),
            Err(ParamError::EnvidTooLong(101))
        );
        // A decoded CR or LF would break the Original-Envelope-Id field.
        assert_eq!(Envid::parse("a+0Db"), Err(ParamError::EnvidNotPrintable));
        assert_eq!(Envid::parse("a+C3+A9"), Err(ParamError::EnvidNotPrintable));
    }

    #[test]
    fn orcpt() {
        let o = Orcpt::parse("rfc822;Bob+2Bdsn@Example.COM").unwrap();
        assert_eq!(o, Orcpt::Rfc822("Bob+dsn@Example.COM".into()));
        assert_eq!(o.to_param(), "rfc822;Bob+2Bdsn@Example.COM");
        assert_eq!(o.field_address(), "Bob+dsn@Example.COM");
        assert_eq!(
            Orcpt::parse("RFC822;a@b").unwrap(),
            Orcpt::Rfc822("a@b".into())
        );
        let u = Orcpt::parse("utf-8;j\\x{F6}rg@b\\x{FC}cher.example").unwrap();
        assert_eq!(u.address(), "jörg@bücher.example");
        assert_eq!(u.to_param(), "utf-8;j\\x{F6}rg@b\\x{FC}cher.example");
        // utf-8-addr-unitext: raw UTF-8 after SMTPUTF8.
        assert_eq!(
            Orcpt::parse("utf-8;jörg@example").unwrap(),
            Orcpt::Utf8("jörg@example".into())
        );
        assert_eq!(
            Orcpt::parse("utf-8;a\\x{2B}b@c").unwrap().address(),
            "a+b@c"
        );
        assert_eq!(
            Orcpt::parse("utf-8;a+2Bb@c"),
            Err(ParamError::Utf8Addr { offset: 1 })
        );
        assert!(Orcpt::parse("utf-8;a\\x{}@c").is_err());
        assert!(Orcpt::parse("utf-8;a\\x{110000}@c").is_err());
        assert!(Orcpt::parse("utf-8;a\\x{0}@c").is_err());
        assert!(Orcpt::parse("utf-8;a\\y").is_err());
        let x = Orcpt::parse("x400;c+3Dus;a+3Dx").unwrap();
        assert_eq!(
            x,
            Orcpt::Other {
                addr_type: "x400".into(),
                address: "c=us;a=x".into()
            }
        );
        assert_eq!(x.to_param(), "x400;c+3Dus;a+3Dx");
        assert_eq!(Orcpt::parse("a@b"), Err(ParamError::OrcptNoType));
        assert_eq!(Orcpt::parse("rfc822;"), Err(ParamError::OrcptEmpty));
        assert_eq!(
            Orcpt::parse("rfc 822;a@b"),
            Err(ParamError::OrcptBadType("rfc 822".into()))
        );
        assert_eq!(
            Orcpt::parse("rfc822;a+0A@b"),
            Err(ParamError::OrcptNotPrintable)
        );
        let long = format!("rfc822;{}@b", "x".repeat(500));
        assert_eq!(Orcpt::parse(&long), Err(ParamError::OrcptTooLong(509)));
    }

    proptest! {
        #[test]
        fn xtext_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let enc = xtext_encode(&bytes);
            prop_assert!(enc.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
            prop_assert_eq!(xtext_decode(&enc).unwrap(), bytes);
        }

        #[test]
        fn xtext_canonical_strings_round_trip(
            s in "([!-*,-<>-~]|\\+(0[0-9A-F]|1[0-9A-F]|2[0B]|3D|7F|[89A-F][0-9A-F])){0,40}"
        ) {
            // Canonical xtext (an escape exactly where one is needed)
            // comes back unchanged.
            prop_assert_eq!(xtext_encode(&xtext_decode(&s).unwrap()), s);
        }

        #[test]
        fn xtext_decode_never_panics(s in "\\PC{0,40}") {
            let _ = xtext_decode(&s);
        }

        #[test]
        fn utf8_addr_round_trip(s in "[^\u{0}]{1,30}") {
            let enc = utf8_addr_encode(&s);
            prop_assert!(enc.is_ascii());
            prop_assert_eq!(utf8_addr_decode(&enc).unwrap(), s);
        }

        #[test]
        fn orcpt_round_trip(local in "[!-~]{1,20}", utf8 in "\\PC{1,20}") {
            let o = Orcpt::Rfc822(format!("{local}@example.com"));
            prop_assert_eq!(Orcpt::parse(&o.to_param()).unwrap(), o);
            let u = Orcpt::Utf8(utf8);
            prop_assert_eq!(Orcpt::parse(&u.to_param()).unwrap(), u);
        }

        #[test]
        fn envid_round_trip(s in "[ -~]{1,33}") {
            let e = Envid::parse(&xtext_encode(s.as_bytes())).unwrap();
            prop_assert_eq!(e.as_str(), s.as_str());
            prop_assert_eq!(Envid::parse(&e.to_xtext()).unwrap(), e);
        }
    }
}
