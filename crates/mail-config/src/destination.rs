//! SMTP next-hop syntax as Postfix writes it in `relayhost` and in the
//! nexthop field of a `transport(5)` table: `host` (MX lookup),
//! `[host]` (no MX lookup), either with `:port`, and `[address]`.
//!
//! It lives here, beside the loader, so that a bad `relayhost` stops a
//! daemon at start with its line; `mailstore::nexthop` uses the same type
//! for transport tables.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The host part of a [`SmtpDestination`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DestinationHost {
    /// A domain or host name, lower case, without a trailing dot.
    Name(String),
    /// An address literal (`[192.0.2.1]`, `[2001:db8::1]`, `[ipv6:2001:db8::1]`).
    Ip(IpAddr),
}

/// Where an SMTP client sends mail: Postfix's `relayhost` /
/// `smtp:nexthop` syntax.
///
/// ```
/// use mail_config::{DestinationHost, SmtpDestination};
///
/// let d: SmtpDestination = "[smtp.example.net]:587".parse().unwrap();
/// assert_eq!(d.host, DestinationHost::Name("smtp.example.net".into()));
/// assert!(!d.mx_lookup);
/// assert_eq!(d.port, Some(587));
/// assert_eq!(d.to_string(), "[smtp.example.net]:587");
///
/// let d: SmtpDestination = "Example.COM.".parse().unwrap();
/// assert!(d.mx_lookup);
/// assert_eq!(d.to_string(), "example.com");
/// assert!("192.0.2.1".parse::<SmtpDestination>().is_err()); // needs [brackets]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmtpDestination {
    /// The name or address.
    pub host: DestinationHost,
    /// Look up MX records for the name (Postfix: a name without brackets);
    /// `false` for `[name]`, which connects to the name's addresses, and
    /// always `false` for an address.
    pub mx_lookup: bool,
    /// The port; `None` means the default (25).
    pub port: Option<u16>,
}

impl SmtpDestination {
    /// The port to connect to: the one given, else 25 (RFC 5321 section 4.5.4.2).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(25)
    }
}

/// Checks a host name: dot-separated labels of letters, digits, `-` and
/// `_` (seen in the wild for internal names), 1 to 63 octets each, at most
/// 253 in all (RFC 1035 section 2.3.4). Returns it lower case without a
/// trailing dot.
pub fn normalize_host_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{s:?} is not a host name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{s:?} is not a host name"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    // Postfix also takes service names; these are the mail ones.
    match p {
        "smtp" => return Ok(25),
        "submission" => return Ok(587),
        "smtps" | "submissions" => return Ok(465),
        _ => {}
    }
    p.parse::<u16>()
        .ok()
        .filter(|&n| n != 0 && !p.starts_with('+'))
        .ok_or_else(|| format!("{whole:?}: {p:?} is not a port"))
}

impl FromStr for SmtpDestination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: '[' without ']'"))?;
            let port = match after {
                "" => None,
                a => Some(parse_port(
                    a.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: unexpected {a:?} after ']'"))?,
                    s,
                )?),
            };
            let lit = inner
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
                .and_then(|_| inner.get(5..));
            let host = if let Some(v6) = lit {
                let ip = v6
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("{s:?}: {v6:?} is not an IPv6 address"))?;
                DestinationHost::Ip(IpAddr::V6(ip))
            } else if let Ok(ip) = inner.parse::<IpAddr>() {
                DestinationHost::Ip(ip)
            } else {
                DestinationHost::Name(normalize_host_name(inner)?)
            };
            return Ok(SmtpDestination {
                host,
                mx_lookup: false,
                port,
            });
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(format!("{s:?}: write an address in brackets: [{s}]"));
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((n, p)) => (n, Some(parse_port(p, s)?)),
            None => (s, None),
        };
        Ok(SmtpDestination {
            host: DestinationHost::Name(normalize_host_name(name)?),
            mx_lookup: true,
            port,
        })
    }
}

impl fmt::Display for SmtpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            DestinationHost::Ip(ip) => write!(f, "[{ip}]")?,
            DestinationHost::Name(n) if self.mx_lookup => f.write_str(n)?,
            DestinationHost::Name(n) => write!(f, "[{n}]")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for SmtpDestination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `relayhost = ""` means none, as in Postfix.
pub(crate) fn optional_destination<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SmtpDestination>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(de::Error::custom)
}

/// A path where `""` means none.
pub(crate) fn optional_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::path::PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then(|| s.into()))
}

/// Which address family an SMTP client tries first for a host with both
/// (Postfix's `smtp_address_preference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressPreference {
    /// Either, chosen at random per host (Postfix's default).
    #[default]
    Any,
    /// IPv6 addresses first.
    Ipv6,
    /// IPv4 addresses first.
    Ipv4,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<SmtpDestination, String> {
        s.parse()
    }

    #[test]
    fn forms() {
        let d = p("mail.example.com:2526").unwrap();
        assert_eq!(d.host, DestinationHost::Name("mail.example.com".into()));
        assert!(d.mx_lookup);
        assert_eq!(d.port, Some(2526));
        let d = p("[127.0.0.1]:2526").unwrap();
        assert_eq!(d.host, DestinationHost::Ip("127.0.0.1".parse().unwrap()));
        assert!(!d.mx_lookup);
        assert_eq!(d.to_string(), "[127.0.0.1]:2526");
        let d = p("[ipv6:2001:DB8::1]:25").unwrap();
        assert_eq!(d.host, DestinationHost::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(d.to_string(), "[2001:db8::1]:25");
        assert_eq!(p("[::1]").unwrap().port_or_default(), 25);
        assert_eq!(p("[relay]:submission").unwrap().port, Some(587));
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "[",
            "[host",
            "[host]x",
            "[host]:",
            "host:0",
            "host:99999",
            "host:+25",
            "ho st",
            "a..b",
            "::1",
            "10.0.0.1",
            "[ipv6:10.0.0.1]",
            "host:25:25",
        ] {
            assert!(p(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "example.com",
            "[example.com]:587",
            "[192.0.2.1]",
            "[::1]:2525",
        ] {
            assert_eq!(p(s).unwrap().to_string(), s);
            assert_eq!(p(&p(s).unwrap().to_string()).unwrap(), p(s).unwrap());
        }
    }
}
