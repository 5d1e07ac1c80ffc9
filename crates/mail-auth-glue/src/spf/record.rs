//! SPF records (RFC 7208 section 4.5 selection, section 12 ABNF): parsing
//! the whole record before anything is evaluated (section 4.6: any syntax
//! error anywhere is `permerror`), and writing it back.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a record does not parse; every one is a `permerror`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// Not 7-bit ASCII (section 3.1).
    #[error("record is not 7-bit ASCII")]
    NotAscii,
    /// The record does not start with `v=spf1`.
    #[error("not an SPF record")]
    NotSpf,
    /// A mechanism name nobody defined (section 4.6.1, 5).
    #[error("unknown mechanism {0:?}")]
    UnknownMechanism(String),
    /// A term that is neither a directive nor a modifier.
    #[error("bad term {0:?}")]
    BadTerm(String),
    /// `redirect=` or `exp=` twice (section 6).
    #[error("modifier {0} given twice")]
    DuplicateModifier(&'static str),
    /// A bad `%` sequence (section 7.1).
    #[error("bad macro in {0:?}")]
    BadMacro(String),
    /// A domain-spec that does not end in a top label or a macro.
    #[error("bad domain-spec {0:?}")]
    BadDomain(String),
    /// A bad address or prefix length.
    #[error("bad network {0:?}")]
    BadNetwork(String),
}

/// A directive's qualifier (section 4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// `+`, the default.
    Pass,
    /// `-`.
    Fail,
    /// `~`.
    SoftFail,
    /// `?`.
    Neutral,
}

impl Qualifier {
    fn symbol(self) -> &'static str {
        match self {
            Qualifier::Pass => "+",
            Qualifier::Fail => "-",
            Qualifier::SoftFail => "~",
            Qualifier::Neutral => "?",
        }
    }
}

/// One piece of a macro-string (section 7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// Literal text (no `%`).
    Literal(String),
    /// `%%`.
    Percent,
    /// `%_`: a space.
    Space,
    /// `%-`: `%20`.
    UrlSpace,
    /// `%{...}`.
    Macro(Macro),
}

/// `%{` letter transformers delimiters `}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Macro {
    /// The letter, lowercase; `url_escape` tells whether it was uppercase.
    pub letter: char,
    /// Uppercase letter: URL-escape the value (section 7.3).
    pub url_escape: bool,
    /// Keep this many right-hand parts (non-zero).
    pub digits: Option<u32>,
    /// `r`: reverse the parts.
    pub reverse: bool,
    /// The delimiters to split on (`.` when empty).
    pub delimiters: String,
}

/// A macro-string: what a domain-spec or an explanation is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MacroString(pub Vec<Part>);

/// A mechanism (section 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:<domain-spec>`.
    Include(MacroString),
    /// `a[:<domain-spec>][/<v4>][//<v6>]`.
    A {
        /// The target (the current domain when absent).
        domain: Option<MacroString>,
        /// IPv4 prefix length.
        v4: Option<u8>,
        /// IPv6 prefix length.
        v6: Option<u8>,
    },
    /// `mx[:<domain-spec>][/<v4>][//<v6>]`.
    Mx {
        /// The target (the current domain when absent).
        domain: Option<MacroString>,
        /// IPv4 prefix length.
        v4: Option<u8>,
        /// IPv6 prefix length.
        v6: Option<u8>,
    },
    /// `ptr[:<domain-spec>]`.
    Ptr(Option<MacroString>),
    /// `ip4:<network>[/<len>]`.
    Ip4 {
        /// The network.
        addr: Ipv4Addr,
        /// Its prefix length (32 when absent).
        len: Option<u8>,
    },
    /// `ip6:<network>[/<len>]`.
    Ip6 {
        /// The network.
        addr: Ipv6Addr,
        /// Its prefix length (128 when absent).
        len: Option<u8>,
    },
    /// `exists:<domain-spec>`.
    Exists(MacroString),
}

impl Mechanism {
    /// Whether evaluating it asks DNS, and so counts toward the limit of
    /// 10 (section 4.6.4).
    pub fn queries_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A term of a record, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Term {
    /// A qualifier and a mechanism.
    Directive(Qualifier, Mechanism),
    /// `redirect=<domain-spec>`.
    Redirect(MacroString),
    /// `exp=<domain-spec>`.
    Exp(MacroString),
    /// Any other `name=value`: ignored (section 6).
    Unknown(String, MacroString),
}

/// A parsed `v=spf1` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Record {
    /// The terms, in order.
    pub terms: Vec<Term>,
}

/// Whether the TXT string is an SPF record: `v=spf1` then a space or the
/// end (section 4.5), case-insensitively (section 12).
pub fn is_spf(txt: &str) -> bool {
    let b = txt.as_bytes();
    b.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"v=spf1"))
        && matches!(b.get(6), None | Some(b' '))
}

impl Record {
    /// Parses a whole record, `v=spf1` included.
    pub fn parse(txt: &str) -> Result<Record, SyntaxError> {
        if !txt.is_ascii() {
            return Err(SyntaxError::NotAscii);
        }
        if !is_spf(txt) {
            return Err(SyntaxError::NotSpf);
        }
        let rest = txt.get(6..).unwrap_or_default();
        let mut terms = Vec::new();
        let (mut redirect, mut exp) = (false, false);
        for word in rest.split(' ').filter(|w| !w.is_empty()) {
            let term = parse_term(word)?;
            match &term {
                Term::Redirect(_) if redirect => {
                    return Err(SyntaxError::DuplicateModifier("redirect"))
                }
                Term::Redirect(_) => redirect = true,
                Term::Exp(_) if exp => return Err(SyntaxError::DuplicateModifier("exp")),
                Term::Exp(_) => exp = true,
                _ => {}
            }
            terms.push(term);
        }
        Ok(Record { terms })
    }

    /// The `redirect=` target, if any.
    pub fn redirect(&self) -> Option<&MacroString> {
        self.terms.iter().find_map(|t| match t {
            Term::Redirect(d) => Some(d),
            _ => None,
        })
    }

    /// The `exp=` target, if any.
    pub fn exp(&self) -> Option<&MacroString> {
        self.terms.iter().find_map(|t| match t {
            Term::Exp(d) => Some(d),
            _ => None,
        })
    }

    /// Whether an `all` is anywhere (then `redirect=` is ignored, section 6.1).
    pub fn has_all(&self) -> bool {
        self.terms
            .iter()
            .any(|t| matches!(t, Term::Directive(_, Mechanism::All)))
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn parse_term(word: &str) -> Result<Term, SyntaxError> {
    // modifier = name "=" macro-string, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
    let name_len = word.find(|c: char| !is_name_char(c)).unwrap_or(word.len());
    if word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word.get(name_len..name_len + 1) == Some("=")
    {
        let name = word.get(..name_len).unwrap_or_default();
        let value = word.get(name_len + 1..).unwrap_or_default();
        return Ok(if name.eq_ignore_ascii_case("redirect") {
            Term::Redirect(domain_spec(value, false)?)
        } else if name.eq_ignore_ascii_case("exp") {
            Term::Exp(domain_spec(value, false)?)
        } else {
            Term::Unknown(name.to_string(), MacroString::parse(value, true)?)
        });
    }
    let (q, mech) = match word.chars().next() {
        Some('+') => (Qualifier::Pass, word.get(1..)),
        Some('-') => (Qualifier::Fail, word.get(1..)),
        Some('~') => (Qualifier::SoftFail, word.get(1..)),
        Some('?') => (Qualifier::Neutral, word.get(1..)),
        _ => (Qualifier::Pass, Some(word)),
    };
    let mech = mech.unwrap_or_default();
    let name_end = mech.find([':', '/']).unwrap_or(mech.len());
    let name = mech.get(..name_end).unwrap_or_default();
    let rest = mech.get(name_end..).unwrap_or_default();
    let arg = rest.strip_prefix(':');
    // Names are case-insensitive (section 12); no allocation per term.
    let known = ["all", "include", "exists", "ptr", "a", "mx", "ip4", "ip6"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .unwrap_or("");
    let m = match known {
        "all" if rest.is_empty() => Mechanism::All,
        "include" => Mechanism::Include(domain_spec(required(arg, word)?, false)?),
        "exists" => Mechanism::Exists(domain_spec(required(arg, word)?, false)?),
        "ptr" if rest.is_empty() => Mechanism::Ptr(None),
        "ptr" => Mechanism::Ptr(Some(domain_spec(required(arg, word)?, false)?)),
        "a" | "mx" => {
            let (domain, v4, v6) = dual_cidr(rest, word)?;
            if known == "a" {
                Mechanism::A { domain, v4, v6 }
            } else {
                Mechanism::Mx { domain, v4, v6 }
            }
        }
        "ip4" => {
            let net = required(arg, word)?;
            let (addr, len) = match net.split_once('/') {
                Some((a, l)) => (a, Some(cidr(l, 32, word)?)),
                None => (net, None),
            };
            let addr = addr
                .parse()
                .map_err(|_| SyntaxError::BadNetwork(word.to_string()))?;
            Mechanism::Ip4 { addr, len }
        }
        "ip6" => {
            let net = required(arg, word)?;
            let (addr, len) = match net.split_once('/') {
                Some((a, l)) => (a, Some(cidr(l, 128, word)?)),
                None => (net, None),
            };
            let addr = addr
                .parse()
                .map_err(|_| SyntaxError::BadNetwork(word.to_string()))?;
            Mechanism::Ip6 { addr, len }
        }
        "all" => return Err(SyntaxError::BadTerm(word.to_string())),
        _ if name.is_empty() || !name.chars().all(is_name_char) => {
            return Err(SyntaxError::BadTerm(word.to_string()))
        }
        _ => return Err(SyntaxError::UnknownMechanism(name.to_ascii_lowercase())),
    };
    Ok(Term::Directive(q, m))
}

fn required<'a>(arg: Option<&'a str>, word: &str) -> Result<&'a str, SyntaxError> {
    match arg {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(SyntaxError::BadTerm(word.to_string())),
    }
}

/// `"/" ("0" / %x31-39 0*1DIGIT)`, at most `max` (no leading zeros).
fn cidr(digits: &str, max: u8, word: &str) -> Result<u8, SyntaxError> {
    let bad = || SyntaxError::BadNetwork(word.to_string());
    if digits.is_empty()
        || digits.len() > 3
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(bad());
    }
    let n: u8 = digits.parse().map_err(|_| bad())?;
    if n > max {
        return Err(bad());
    }
    Ok(n)
}

/// An `a` or `mx` target and its two prefix lengths.
type DualCidr = (Option<MacroString>, Option<u8>, Option<u8>);

/// `[ ":" domain-spec ] [ ip4-cidr-length ] [ "/" ip6-cidr-length ]` after
/// `a` or `mx`. A domain-spec may itself contain `/`, so the lengths are
/// taken off the end.
fn dual_cidr(rest: &str, word: &str) -> Result<DualCidr, SyntaxError> {
    let mut rest = rest;
    let mut v6 = None;
    let mut v4 = None;
    if let Some((head, tail)) = rest.rsplit_once("//") {
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            v6 = Some(cidr(tail, 128, word)?);
            rest = head;
        }
    }
    if let Some((head, tail)) = rest.rsplit_once('/') {
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            v4 = Some(cidr(tail, 32, word)?);
            rest = head;
        }
    }
    let domain = if rest.is_empty() {
        None
    } else {
        Some(domain_spec(required(rest.strip_prefix(':'), word)?, false)?)
    };
    Ok((domain, v4, v6))
}

/// `domain-spec = macro-string domain-end`, `domain-end = ( "." toplabel
/// [ "." ] ) / macro-expand`.
fn domain_spec(text: &str, exp: bool) -> Result<MacroString, SyntaxError> {
    let ms = MacroString::parse(text, exp)?;
    let ok = match ms.0.last() {
        Some(Part::Literal(l)) => {
            let l = l.strip_suffix('.').unwrap_or(l);
            match l.rsplit_once('.') {
                Some((_, top)) => is_toplabel(top),
                None => false,
            }
        }
        Some(_) => true,
        None => false,
    };
    if ok {
        Ok(ms)
    } else {
        Err(SyntaxError::BadDomain(text.to_string()))
    }
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum
/// / "-" ) alphanum )`: not all digits, so no IP address is a domain.
fn is_toplabel(l: &str) -> bool {
    let b = l.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_alphanumeric) {
        return b.iter().any(u8::is_ascii_alphabetic);
    }
    b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

const DELIMITERS: &str = ".-+,/_=";

impl MacroString {
    /// Parses a macro-string; `exp` allows the letters only explanations
    /// may use (`c`, `r`, `t`, section 7.2).
    pub fn parse(text: &str, exp: bool) -> Result<MacroString, SyntaxError> {
        let bad = || SyntaxError::BadMacro(text.to_string());
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                // macro-literal = %x21-24 / %x26-7E; explanations may
                // carry spaces (they are split records joined back).
                if !(c.is_ascii_graphic() || (exp && c == ' ')) {
                    return Err(bad());
                }
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => Part::Percent,
                Some('_') => Part::Space,
                Some('-') => Part::UrlSpace,
                Some('{') => {
                    let letter = chars.next().ok_or_else(bad)?;
                    let lower = letter.to_ascii_lowercase();
                    let allowed = if exp { "slodiphcrtv" } else { "slodiphv" };
                    if !allowed.contains(lower) || !letter.is_ascii_alphabetic() {
                        return Err(bad());
                    }
                    let mut digits = String::new();
                    let mut reverse = false;
                    let mut delimiters = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(d) if d.is_ascii_digit() && !reverse && delimiters.is_empty() => {
                                digits.push(d)
                            }
                            Some('r' | 'R') if !reverse && delimiters.is_empty() => reverse = true,
                            Some(d) if DELIMITERS.contains(d) => delimiters.push(d),
                            _ => return Err(bad()),
                        }
                    }
                    let digits = if digits.is_empty() {
                        None
                    } else {
                        // Section 7.3: the count MUST be non-zero; a huge
                        // one keeps everything, as 128 does.
                        let n: u32 = digits.parse().unwrap_or(u32::MAX);
                        if n == 0 {
                            return Err(bad());
                        }
                        Some(n.min(128))
                    };
                    Part::Macro(Macro {
                        letter: lower,
                        url_escape: letter.is_ascii_uppercase(),
                        digits,
                        reverse,
                        delimiters,
                    })
                }
                _ => return Err(bad()),
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(MacroString(parts))
    }
}

impl fmt::Display for MacroString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Part::Literal(l) => f.write_str(l)?,
                Part::Percent => f.write_str("%%")?,
                Part::Space => f.write_str("%_")?,
                Part::UrlSpace => f.write_str("%-")?,
                Part::Macro(m) => {
                    let letter = if m.url_escape {
                        m.letter.to_ascii_uppercase()
                    } else {
                        m.letter
                    };
                    write!(f, "%{{{letter}")?;
                    if let Some(d) = m.digits {
                        write!(f, "{d}")?;
                    }
                    if m.reverse {
                        f.write_str("r")?;
                    }
                    write!(f, "{}}}", m.delimiters)?;
                }
            }
        }
        Ok(())
    }
}

fn write_cidr(f: &mut fmt::Formatter<'_>, v4: Option<u8>, v6: Option<u8>) -> fmt::Result {
    if let Some(l) = v4 {
        write!(f, "/{l}")?;
    }
    if let Some(l) = v6 {
        write!(f, "//{l}")?;
    }
    Ok(())
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::All => f.write_str("all"),
            Mechanism::Include(d) => write!(f, "include:{d}"),
            Mechanism::Exists(d) => write!(f, "exists:{d}"),
            Mechanism::Ptr(None) => f.write_str("ptr"),
            Mechanism::Ptr(Some(d)) => write!(f, "ptr:{d}"),
            Mechanism::A { domain, v4, v6 } | Mechanism::Mx { domain, v4, v6 } => {
                f.write_str(if matches!(self, Mechanism::A { .. }) {
                    "a"
                } else {
                    "mx"
                })?;
                if let Some(d) = domain {
                    write!(f, ":{d}")?;
                }
                write_cidr(f, *v4, *v6)
            }
            Mechanism::Ip4 { addr, len } => {
                write!(f, "ip4:{addr}")?;
                write_cidr(f, *len, None)
            }
            Mechanism::Ip6 { addr, len } => {
                write!(f, "ip6:{addr}")?;
                match len {
                    Some(l) => write!(f, "/{l}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=spf1")?;
        for t in &self.terms {
            f.write_str(" ")?;
            match t {
                Term::Directive(Qualifier::Pass, m) => write!(f, "{m}")?,
                Term::Directive(q, m) => write!(f, "{}{m}", q.symbol())?,
                Term::Redirect(d) => write!(f, "redirect={d}")?,
                Term::Exp(d) => write!(f, "exp={d}")?,
                Term::Unknown(n, v) => write!(f, "{n}={v}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_rfc_examples() {
        assert_eq!(
            Record::parse("v=spf1 +all").unwrap().to_string(),
            "v=spf1 all"
        );
        for r in [
            "v=spf1 a -all",
            "v=spf1 a:example.org -all",
            "v=spf1 mx -all",
            "v=spf1 mx:example.org -all",
            "v=spf1 mx mx:example.org -all",
            "v=spf1 mx/30 mx:example.org/30 -all",
            "v=spf1 ptr -all",
            "v=spf1 ip4:192.0.2.128/28 -all",
            "v=spf1 include:example.com include:example.net -all",
            "v=spf1 redirect=_spf.example.com",
            "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all",
            "v=spf1 a//64 ip6:2001:db8::/32 ~all",
            "v=spf1 a:example.com/24//64 ?all exp=explain.%{d}",
            "v=spf1 foo=bar -all",
        ] {
            let rec = Record::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(rec.to_string(), r);
        }
    }

    #[test]
    fn rejects_what_the_rfc_calls_permerror() {
        for r in [
            "v=spf1 foo -all",
            "v=spf1 include: -all",
            "v=spf1 redirect=a.example.com redirect=b.example.com",
            "v=spf1 exp=a.example.com exp=b.example.com",
            "v=spf1 ip6:zz -all",
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 a/33",
            "v=spf1 a//129",
            "v=spf1 a:1.2.3.4",
            "v=spf1 a:museum",
            "v=spf1 all/32",
            "v=spf1 ptr/24",
            "v=spf1 exists:%{x}.example.com",
            "v=spf1 exists:%{d0}.example.com",
            "v=spf1 exists:%{t}.example.com",
            "v=spf1 a:foo%.example.com",
            "v=spf1 -all\u{e9}",
            "v=spf1 :all",
        ] {
            assert!(Record::parse(r).is_err(), "{r} parsed");
        }
        assert_eq!(
            Record::parse("v=spf1 foo -all"),
            Err(SyntaxError::UnknownMechanism("foo".into()))
        );
    }

    #[test]
    fn selects_records() {
        assert!(is_spf("v=spf1"));
        assert!(is_spf("V=SpF1 -all"));
        assert!(!is_spf("v=spf10"));
        assert!(!is_spf("v=spf1mx"));
        assert!(!is_spf("spf1"));
    }

    fn literal() -> impl Strategy<Value = String> {
        "[a-z0-9.+=,/_-]{1,8}"
    }

    fn part(exp: bool) -> impl Strategy<Value = Part> {
        let letters: &'static [char] = if exp {
            &['s', 'l', 'o', 'd', 'i', 'p', 'h', 'c', 'r', 't', 'v']
        } else {
            &['s', 'l', 'o', 'd', 'i', 'p', 'h', 'v']
        };
        prop_oneof![
            literal().prop_map(Part::Literal),
            Just(Part::Percent),
            Just(Part::Space),
            Just(Part::UrlSpace),
            (
                proptest::sample::select(letters),
                any::<bool>(),
                proptest::option::of(1u32..=128),
                any::<bool>(),
                "[.+,/_=-]{0,3}"
            )
                .prop_map(|(letter, url_escape, digits, reverse, delimiters)| {
                    Part::Macro(Macro {
                        letter,
                        url_escape,
                        digits,
                        reverse,
                        delimiters,
                    })
                }),
        ]
    }

    /// Adjacent literals parse back as one.
    fn normalize(parts: Vec<Part>) -> MacroString {
        let mut out: Vec<Part> = Vec::new();
        for p in parts {
            match (out.last_mut(), p) {
                (Some(Part::Literal(a)), Part::Literal(b)) => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        MacroString(out)
    }

    fn domain() -> impl Strategy<Value = MacroString> {
        (
            proptest::collection::vec(part(false), 0..4),
            prop_oneof![
                "\\.[a-z][a-z0-9]{0,5}\\.?".prop_map(Part::Literal),
                part(false).prop_filter("a macro", |p| matches!(p, Part::Macro(_))),
            ],
        )
            .prop_map(|(mut parts, end)| {
                parts.push(end);
                normalize(parts)
            })
            .prop_filter("ends right", |d| domain_spec(&d.to_string(), false).is_ok())
    }

    fn mechanism() -> impl Strategy<Value = Mechanism> {
        let cidr4 = proptest::option::of(0u8..=32);
        let cidr6 = proptest::option::of(0u8..=128);
        prop_oneof![
            Just(Mechanism::All),
            domain().prop_map(Mechanism::Include),
            domain().prop_map(Mechanism::Exists),
            proptest::option::of(domain()).prop_map(Mechanism::Ptr),
            (proptest::option::of(domain()), cidr4.clone(), cidr6.clone())
                .prop_map(|(domain, v4, v6)| Mechanism::A { domain, v4, v6 }),
            (proptest::option::of(domain()), cidr4.clone(), cidr6.clone())
                .prop_map(|(domain, v4, v6)| Mechanism::Mx { domain, v4, v6 }),
            (any::<[u8; 4]>(), cidr4).prop_map(|(a, len)| Mechanism::Ip4 {
                addr: a.into(),
                len
            }),
            (any::<[u8; 16]>(), cidr6).prop_map(|(a, len)| Mechanism::Ip6 {
                addr: a.into(),
                len
            }),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        let q = proptest::sample::select(
            &[
                Qualifier::Pass,
                Qualifier::Fail,
                Qualifier::SoftFail,
                Qualifier::Neutral,
            ][..],
        );
        let directives = proptest::collection::vec((q, mechanism()), 0..6);
        (
            directives,
            proptest::option::of(domain()),
            proptest::option::of(domain()),
            proptest::option::of((
                "[a-z][a-z0-9_.-]{0,6}",
                proptest::collection::vec(part(true), 0..3),
            )),
        )
            .prop_map(|(ds, redirect, exp, unknown)| {
                let mut terms: Vec<Term> =
                    ds.into_iter().map(|(q, m)| Term::Directive(q, m)).collect();
                if let Some(r) = redirect {
                    terms.push(Term::Redirect(r));
                }
                if let Some(e) = exp {
                    terms.push(Term::Exp(e));
                }
                if let Some((n, v)) = unknown {
                    if !n.eq_ignore_ascii_case("redirect") && !n.eq_ignore_ascii_case("exp") {
                        // Spaces end a term: no `%_`-free space can be
                        // in a value, and literals never hold one here.
                        terms.push(Term::Unknown(n, normalize(v)));
                    }
                }
                Record { terms }
            })
    }

    proptest! {
        #[test]
        fn serialise_parse_round_trip(r in record()) {
            let text = r.to_string();
            prop_assert_eq!(Record::parse(&text), Ok(r), "{}", text);
        }

        #[test]
        fn parse_never_panics_and_reparses(s in "v=spf1( [-+~?]?[a-z0-9:./%{}_=-]{0,12}){0,5}") {
            if let Ok(r) = Record::parse(&s) {
                let text = r.to_string();
                prop_assert_eq!(Record::parse(&text), Ok(r));
            }
        }
    }
}
