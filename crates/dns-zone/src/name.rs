//! Domain names in uncompressed wire format (RFC 1035 section 3.1).
//!
//! A [`Name`] owns its wire bytes (length-prefixed labels ending with the
//! root label). Keeping names in wire form means the responder copies them
//! straight into answers and every suffix of a name is itself a valid name,
//! so ancestor lookups never allocate.

use std::fmt;

/// Longest name in wire format, RFC 1035 section 2.3.4.
pub const MAX_NAME_LEN: usize = 255;
/// Longest label, RFC 1035 section 2.3.4.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A label longer than 63 octets.
    #[error("label longer than 63 octets")]
    LabelTooLong,
    /// A name longer than 255 octets in wire format.
    #[error("name longer than 255 octets")]
    NameTooLong,
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A `\DDD` escape that is not three decimal digits up to 255.
    #[error("bad \\DDD escape (three decimal digits, at most 255)")]
    BadEscape,
    /// A relative name where no origin is known.
    #[error("relative name with no $ORIGIN")]
    NoOrigin,
    /// An empty token.
    #[error("empty name")]
    Empty,
    /// Wire bytes that are not a name.
    #[error("malformed wire-format name")]
    BadWire,
}

/// A domain name, stored as uncompressed wire bytes (case preserved).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

impl Name {
    /// The root name `.`.
    pub fn root() -> Self {
        Name(Box::new([0u8]))
    }

    /// Builds a name from uncompressed wire bytes, checking the format.
    pub fn from_wire(wire: &[u8]) -> Result<Self, NameError> {
        let len = wire_name_len(wire).ok_or(NameError::BadWire)?;
        if len != wire.len() {
            return Err(NameError::BadWire);
        }
        Ok(Name(wire.into()))
    }

    /// Builds a name from wire bytes already known to be valid.
    pub(crate) fn from_wire_unchecked(wire: &[u8]) -> Self {
        Name(wire.into())
    }

    /// Parses a presentation-format name (`mail`, `mail.example.com.`,
    /// `@`), relative names completed with `origin`.
    pub fn parse(text: &str, origin: Option<&Name>) -> Result<Self, NameError> {
        let mut out = Vec::with_capacity(text.len() + 2);
        parse_name_into(text.as_bytes(), origin.map(|o| o.as_wire()), &mut out)?;
        Ok(Name(out.into_boxed_slice()))
    }

    /// The uncompressed wire bytes, including the final root label.
    pub fn as_wire(&self) -> &[u8] {
        &self.0
    }

    /// The same name with ASCII letters lowered (RFC 4343 comparison form).
    pub fn to_lowercase(&self) -> Self {
        Name(self.0.to_ascii_lowercase().into_boxed_slice())
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        labels(&self.0).count()
    }

    /// Whether `self` equals `parent` or lies beneath it (case-insensitive).
    pub fn is_subdomain_of(&self, parent: &Name) -> bool {
        is_subdomain(&self.0, &parent.0)
    }

    /// Whether this is the root name.
    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_presentation(&self.0, f)
    }
}

/// Writes wire bytes as a presentation name with escapes (RFC 1035 5.1).
pub(crate) fn write_presentation(wire: &[u8], f: &mut dyn fmt::Write) -> fmt::Result {
    if wire.len() <= 1 {
        return f.write_char('.');
    }
    for label in labels(wire) {
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b';' | b'(' | b')' | b'@' | b'$' => {
                    f.write_char('\\')?;
                    f.write_char(char::from(b))?;
                }
                0x21..=0x7e => f.write_char(char::from(b))?,
                _ => write!(f, "\\{b:03}")?,
            }
        }
        f.write_char('.')?;
    }
    Ok(())
}

/// Iterates over the labels of a valid uncompressed wire name.
pub(crate) fn labels(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = usize::from(*wire.get(pos)?);
        if len == 0 {
            return None;
        }
        let label = wire.get(pos + 1..pos + 1 + len)?;
        pos += 1 + len;
        Some(label)
    })
}

/// The parent of the uncompressed wire name `wire` (its first label cut
/// off); `None` for the root.
pub(crate) fn parent(wire: &[u8]) -> Option<&[u8]> {
    match usize::from(*wire.first()?) {
        0 => None,
        len => wire.get(1 + len..),
    }
}

/// Length of the uncompressed wire name at the start of `wire`, if valid.
pub(crate) fn wire_name_len(wire: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    loop {
        let len = usize::from(*wire.get(pos)?);
        if len > MAX_LABEL_LEN {
            return None;
        }
        pos += 1 + len;
        if pos > MAX_NAME_LEN {
            return None;
        }
        if len == 0 {
            return Some(pos);
        }
    }
}

/// Whether wire name `child` equals or lies under `parent` (both valid,
/// compared case-insensitively).
pub(crate) fn is_subdomain(child: &[u8], parent: &[u8]) -> bool {
    if parent.len() > child.len() {
        return false;
    }
    // The parent must be a label-aligned suffix of the child.
    let mut pos = 0usize;
    while child.len() - pos > parent.len() {
        match child.get(pos) {
            Some(&l) => pos += 1 + usize::from(l),
            None => return false,
        }
    }
    child.len() - pos == parent.len()
        && child
            .get(pos..)
            .is_some_and(|s| s.eq_ignore_ascii_case(parent))
}

/// Parses presentation-format `raw` (escapes allowed) into wire bytes
/// appended to `out`; relative names get `origin` appended.
pub(crate) fn parse_name_into(
    raw: &[u8],
    origin: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), NameError> {
    let start = out.len();
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw == b"@" {
        let o = origin.ok_or(NameError::NoOrigin)?;
        out.extend_from_slice(o);
        return Ok(());
    }
    if raw == b"." {
        out.push(0);
        return Ok(());
    }
    let mut label_start = out.len();
    out.push(0);
    let mut i = 0usize;
    let mut absolute = false;
    while let Some(&b) = raw.get(i) {
        match b {
            b'.' => {
                let len = out.len() - label_start - 1;
                if len == 0 {
                    return Err(NameError::EmptyLabel);
                }
                if len > MAX_LABEL_LEN {
                    return Err(NameError::LabelTooLong);
                }
                if let Some(slot) = out.get_mut(label_start) {
                    *slot = len as u8;
                }
                i += 1;
                if i == raw.len() {
                    absolute = true;
                    break;
                }
                label_start = out.len();
                out.push(0);
                continue;
            }
            b'\\' => {
                let (byte, used) =
                    unescape(raw.get(i + 1..).unwrap_or_default()).ok_or(NameError::BadEscape)?;
                out.push(byte);
                i += 1 + used;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !absolute {
        let len = out.len() - label_start - 1;
        if len == 0 {
            return Err(NameError::EmptyLabel);
        }
        if len > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong);
        }
        if let Some(slot) = out.get_mut(label_start) {
            *slot = len as u8;
        }
        let o = origin.ok_or(NameError::NoOrigin)?;
        out.extend_from_slice(o);
    } else {
        out.push(0);
    }
    if out.len() - start > MAX_NAME_LEN {
        return Err(NameError::NameTooLong);
    }
    Ok(())
}

/// Decodes the escape after a backslash: `\DDD` (decimal, RFC 1035 5.1) or
/// `\X`. Returns the byte and how many input bytes were used.
pub(crate) fn unescape(rest: &[u8]) -> Option<(u8, usize)> {
    let first = *rest.first()?;
    if first.is_ascii_digit() {
        let d = rest.get(..3)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = d
            .iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'));
        let v = u8::try_from(v).ok()?;
        Some((v, 3))
    } else {
        Some((first, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s, None).unwrap()
    }

    #[test]
    fn parses_absolute_and_relative() {
        let origin = n("example.com.");
        assert_eq!(
            n("mail.example.com.").as_wire(),
            b"\x04mail\x07example\x03com\x00"
        );
        assert_eq!(
            Name::parse("mail", Some(&origin)).unwrap(),
            n("mail.example.com.")
        );
        assert_eq!(Name::parse("@", Some(&origin)).unwrap(), origin);
        assert_eq!(n("."), Name::root());
        assert_eq!(Name::parse("mail", None), Err(NameError::NoOrigin));
    }

    #[test]
    fn decimal_escape_is_decimal() {
        assert_eq!(n("\\065b.").as_wire(), b"\x02Ab\x00");
        assert_eq!(n("a\\.b.").as_wire(), b"\x03a.b\x00");
        assert_eq!(Name::parse("\\256.", None), Err(NameError::BadEscape));
        assert_eq!(Name::parse("\\06.", None), Err(NameError::BadEscape));
    }

    #[test]
    fn limits() {
        let long = "a".repeat(64);
        assert_eq!(
            Name::parse(&format!("{long}."), None),
            Err(NameError::LabelTooLong)
        );
        let l63 = "a".repeat(63);
        let too_long = format!("{l63}.{l63}.{l63}.{l63}.");
        assert_eq!(Name::parse(&too_long, None), Err(NameError::NameTooLong));
        let ok = format!("{l63}.{l63}.{l63}.{}.", "a".repeat(61));
        assert_eq!(n(&ok).as_wire().len(), 255);
        assert_eq!(Name::parse("a..b.", None), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse(".a.", None), Err(NameError::EmptyLabel));
    }

    #[test]
    fn display_round_trips() {
        for s in ["a.b.", ".", "a\\.b.c.", "\\000x.", "caf\\195\\169."] {
            let name = n(s);
            assert_eq!(n(&name.to_string()), name, "{s}");
        }
    }

    #[test]
    fn subdomain() {
        assert!(n("a.b.c.").is_subdomain_of(&n("B.c.")));
        assert!(n("b.c.").is_subdomain_of(&n("b.c.")));
        assert!(!n("ab.c.").is_subdomain_of(&n("b.c.")));
        assert!(n("x.").is_subdomain_of(&Name::root()));
    }

    #[test]
    fn from_wire_checks() {
        assert!(Name::from_wire(b"\x01a\x00").is_ok());
        assert!(Name::from_wire(b"\x02a\x00").is_err());
        assert!(Name::from_wire(b"\x01a").is_err());
        assert!(Name::from_wire(b"\x01a\x00\x00").is_err());
    }
}
