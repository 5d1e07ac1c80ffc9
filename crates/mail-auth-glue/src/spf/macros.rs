//! Macro expansion (RFC 7208 section 7).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::record::{Macro, MacroString, Part};

/// What the macros stand for during one evaluation.
#[derive(Debug, Clone)]
pub struct MacroContext<'a> {
    /// `<sender>`'s local-part (`postmaster` when it has none).
    pub local: &'a str,
    /// `<sender>`'s domain.
    pub sender_domain: &'a str,
    /// The current domain (`d`).
    pub domain: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// Our host name (`r`, explanations only).
    pub receiver: &'a str,
    /// Seconds since the epoch (`t`, explanations only).
    pub now: u64,
    /// The validated name of the client (`p`), looked up beforehand when a
    /// record uses it; `unknown` otherwise (section 7.3).
    pub validated: Option<&'a str>,
}

/// `i` for IPv6 and section 5.6's reverse names: 32 nibbles with dots.
pub fn dotted_nibbles(ip: &std::net::Ipv6Addr) -> String {
    let mut s = String::with_capacity(63);
    for (n, b) in ip.octets().iter().enumerate() {
        if n > 0 {
            s.push('.');
        }
        let _ = write!(s, "{:x}.{:x}", b >> 4, b & 15);
    }
    s
}

impl MacroContext<'_> {
    fn value(&self, letter: char) -> String {
        match letter {
            's' => format!("{}@{}", self.local, self.sender_domain),
            'l' => self.local.to_string(),
            'o' => self.sender_domain.to_string(),
            'd' => self.domain.to_string(),
            'i' => match self.ip {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => dotted_nibbles(&a),
            },
            'c' => self.ip.to_string(),
            'p' => self.validated.unwrap_or("unknown").to_string(),
            'h' => self.helo.to_string(),
            'r' => self.receiver.to_string(),
            't' => self.now.to_string(),
            'v' => match self.ip {
                IpAddr::V4(_) => "in-addr",
                IpAddr::V6(_) => "ip6",
            }
            .to_string(),
            _ => String::new(),
        }
    }

    fn expand_one(&self, m: &Macro) -> String {
        let value = self.value(m.letter);
        let delims: &[char] = &['.', '-', '+', ',', '/', '_', '='];
        let wanted: Vec<char> = if m.delimiters.is_empty() {
            vec!['.']
        } else {
            m.delimiters
                .chars()
                .filter(|c| delims.contains(c))
                .collect()
        };
        let mut parts: Vec<&str> = value.split(|c| wanted.contains(&c)).collect();
        if m.reverse {
            parts.reverse();
        }
        if let Some(n) = m.digits {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if parts.len() > n {
                parts = parts.split_off(parts.len() - n);
            }
        }
        let joined = parts.join(".");
        if m.url_escape {
            url_escape(&joined)
        } else {
            joined
        }
    }

    /// Expands `ms`.
    pub fn expand(&self, ms: &MacroString) -> String {
        let mut out = String::new();
        for p in &ms.0 {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Percent => out.push('%'),
                Part::Space => out.push(' '),
                Part::UrlSpace => out.push_str("%20"),
                Part::Macro(m) => out.push_str(&self.expand_one(m)),
            }
        }
        out
    }

    /// Expands a domain-spec and shortens it to 253 octets from the left,
    /// a whole label at a time (section 7.3).
    pub fn expand_domain(&self, ms: &MacroString) -> String {
        let mut d = self.expand(ms);
        while d.trim_end_matches('.').len() > 253 {
            match d.split_once('.') {
                Some((_, rest)) => d = rest.to_string(),
                None => break,
            }
        }
        d
    }
}

/// Uppercase macro letters: everything but RFC 3986's unreserved
/// characters as `%XX` (section 7.3).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 7.4's examples.
    #[test]
    fn rfc_examples() {
        let ctx = MacroContext {
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: "192.0.2.3".parse().unwrap(),
            helo: "mx.example.org",
            receiver: "mx.example.net",
            now: 0,
            validated: None,
        };
        let x = |s: &str| ctx.expand(&MacroString::parse(s, true).unwrap());
        assert_eq!(x("%{s}"), "strong-bad@email.example.com");
        assert_eq!(x("%{o}"), "email.example.com");
        assert_eq!(x("%{d}"), "email.example.com");
        assert_eq!(x("%{d4}"), "email.example.com");
        assert_eq!(x("%{d3}"), "email.example.com");
        assert_eq!(x("%{d2}"), "example.com");
        assert_eq!(x("%{d1}"), "com");
        assert_eq!(x("%{dr}"), "com.example.email");
        assert_eq!(x("%{d2r}"), "example.email");
        assert_eq!(x("%{l}"), "strong-bad");
        assert_eq!(x("%{l-}"), "strong.bad");
        assert_eq!(x("%{lr}"), "strong-bad");
        assert_eq!(x("%{lr-}"), "bad.strong");
        assert_eq!(x("%{l1r-}"), "strong");
        assert_eq!(
            x("%{ir}.%{v}._spf.%{d2}"),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(x("%{lr-}.lp._spf.%{d2}"), "bad.strong.lp._spf.example.com");
        assert_eq!(
            x("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}"),
            "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            x("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}"),
            "3.2.0.192.in-addr.strong.lp._spf.example.com"
        );
        assert_eq!(
            x("%{d2}.trusted-domains.example.net"),
            "example.com.trusted-domains.example.net"
        );
        assert_eq!(x("%{S}"), "strong-bad%40email.example.com");
        let v6 = MacroContext {
            ip: "2001:db8::cb01".parse().unwrap(),
            ..ctx
        };
        assert_eq!(
            v6.expand(&MacroString::parse("%{ir}.%{v}._spf.%{d2}", false).unwrap()),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
    }

    #[test]
    fn long_names_lose_labels_on_the_left() {
        let long = "a".repeat(60);
        let domain = format!("{long}.{long}.{long}.{long}.{long}.example.com");
        let ctx = MacroContext {
            local: "x",
            sender_domain: &domain,
            domain: &domain,
            ip: "192.0.2.3".parse().unwrap(),
            helo: "h",
            receiver: "r",
            now: 0,
            validated: None,
        };
        let d = ctx.expand_domain(&MacroString::parse("%{d}", false).unwrap());
        assert!(d.len() <= 253, "{}", d.len());
        assert!(d.ends_with(".example.com") && d.starts_with('a'), "{d}");
    }
}
