//! Routing of remote mail: which transport and next hop a recipient takes
//! (Postfix's `transport(5)` table and `relayhost`), and which hosts,
//! addresses and ports to try for a next hop (RFC 5321 section 5.1, RFC
//! 7505 null MX), from DNS answers the caller passes in.
//!
//! No I/O here: the caller reads the table file, asks DNS (the async
//! adapter is `netkit::resolve`) and picks the random seed, so every rule
//! has a deterministic test.
//!
//! ```
//! use std::collections::BTreeMap;
//! use mailstore::nexthop::{
//!     decide, select, AddrLookup, Decision, MxLookup, MxRecord, SelectOptions, TransportTable,
//! };
//!
//! let table: TransportTable = "example.com  smtp:[127.0.0.1]:2526\n".parse().unwrap();
//! let Decision::Smtp(target) = decide("bob@other.example", Some(&table), None) else { panic!() };
//! assert!(target.mx_lookup);
//! assert_eq!(target.name, "other.example");
//!
//! // What DNS said about other.example and its MX hosts:
//! let mx = MxLookup::Records(vec![
//!     MxRecord { preference: 20, exchange: "mx2.other.example".into() },
//!     MxRecord { preference: 10, exchange: "mx1.other.example".into() },
//! ]);
//! let mut addrs = BTreeMap::new();
//! addrs.insert("mx1.other.example".to_string(), AddrLookup::Found(vec!["192.0.2.1".parse().unwrap()]));
//! addrs.insert("mx2.other.example".to_string(), AddrLookup::Found(vec!["192.0.2.2".parse().unwrap()]));
//! let hops = select(&target, Some(&mx), &addrs, &SelectOptions::default(), 7).unwrap();
//! assert_eq!(hops[0].host, "mx1.other.example");
//! assert_eq!(hops[1].port, 25);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use mail_config::{AddressPreference, DestinationHost, SmtpDestination};

// ---------------------------------------------------------------------------
// transport(5) tables
// ---------------------------------------------------------------------------

/// The left-hand side of a transport table entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKey {
    /// `user@example.com`: one address.
    Address(String),
    /// `example.com`: the domain itself.
    Domain(String),
    /// `.example.com`: every subdomain of the domain (not the domain).
    Subdomains(String),
    /// `*`: everything else.
    Default,
}

impl fmt::Display for TransportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportKey::Address(a) | TransportKey::Domain(a) => f.write_str(a),
            TransportKey::Subdomains(d) => write!(f, ".{d}"),
            TransportKey::Default => f.write_str("*"),
        }
    }
}

/// An enhanced status code (RFC 3463): `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// 0 to 999.
    pub subject: u16,
    /// 0 to 999.
    pub detail: u16,
}

impl EnhancedStatus {
    const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Whether the failure is permanent (class 5).
    pub fn is_permanent(&self) -> bool {
        self.class == 5
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        // RFC 3463 section 2: class "2"/"4"/"5", subject and detail 1 to 3 digits.
        let mut it = s.split('.');
        let (Some(c), Some(sub), Some(det), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(());
        };
        let num = |p: &str| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .ok_or(())
        };
        let class = match c {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(()),
        };
        Ok(EnhancedStatus::new(class, num(sub)?, num(det)?))
    }
}

/// The right-hand side of a transport table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportAction {
    /// `smtp:nexthop` (also `relay:`, and an empty transport field as in
    /// `:[host]`): deliver by SMTP; no nexthop means `relayhost` when set,
    /// else the recipient domain's MX.
    Smtp(Option<SmtpDestination>),
    /// `local:`: deliver to the local mailboxes.
    Local,
    /// `error:5.1.1 text`: bounce with this status and text (Postfix's
    /// `error(8)`; no status means `5.0.0`), or `retry:4.3.0 text`: defer
    /// (Postfix's `retry(8)`; no status means `4.0.0`). The class of the
    /// status tells which.
    Error {
        /// The status given, or `5.0.0` / `4.0.0`.
        status: EnhancedStatus,
        /// The text after it.
        text: String,
    },
    /// `discard:text`: accept and drop, logging the text.
    Discard(String),
}

impl fmt::Display for TransportAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportAction::Smtp(None) => f.write_str("smtp:"),
            TransportAction::Smtp(Some(d)) => write!(f, "smtp:{d}"),
            TransportAction::Local => f.write_str("local:"),
            TransportAction::Error { status, text } => {
                let t = if status.is_permanent() {
                    "error"
                } else {
                    "retry"
                };
                match text.is_empty() {
                    true => write!(f, "{t}:{status}"),
                    false => write!(f, "{t}:{status} {text}"),
                }
            }
            TransportAction::Discard(t) => write!(f, "discard:{t}"),
        }
    }
}

impl FromStr for TransportAction {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        // transport(5): "transport:nexthop"; without a colon it is all transport.
        let (transport, nexthop) = v.split_once(':').unwrap_or((v, ""));
        match transport.to_ascii_lowercase().as_str() {
            "" | "smtp" | "relay" => {
                if nexthop.is_empty() {
                    Ok(TransportAction::Smtp(None))
                } else {
                    nexthop.parse().map(|d| TransportAction::Smtp(Some(d)))
                }
            }
            "local" => Ok(TransportAction::Local),
            t @ ("error" | "retry") => {
                let class = if t == "error" { 5 } else { 4 };
                let nexthop = nexthop.trim();
                let (first, rest) = nexthop
                    .split_once(char::is_whitespace)
                    .unwrap_or((nexthop, ""));
                match first.parse::<EnhancedStatus>() {
                    Ok(status) if status.class == class => Ok(TransportAction::Error {
                        status,
                        text: rest.trim().to_string(),
                    }),
                    // Postfix would quietly turn the class into the other
                    // one; a table that says the opposite of what happens
                    // is better refused.
                    Ok(_) if class == 5 => Err(format!(
                        "{first:?}: error: bounces and takes a 5.x.y status; retry:4.x.y defers"
                    )),
                    Ok(_) => Err(format!(
                        "{first:?}: retry: defers and takes a 4.x.y status; error:5.x.y bounces"
                    )),
                    Err(()) => Ok(TransportAction::Error {
                        status: EnhancedStatus::new(class, 0, 0),
                        text: nexthop.to_string(),
                    }),
                }
            }
            "discard" => Ok(TransportAction::Discard(nexthop.trim().to_string())),
            other => Err(format!(
                "unknown transport {other:?} (known: smtp, relay, local, error, retry, discard)"
            )),
        }
    }
}

/// Why a transport table did not parse; names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport table line {line}: {reason}")]
pub struct TransportError {
    /// The 1-based line where the entry starts.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A Postfix `transport(5)` table, read from the text `postmap` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportTable {
    entries: Vec<(TransportKey, TransportAction)>,
    index: HashMap<TransportKey, usize>,
}

impl TransportTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; `false` (and nothing changed) if the key is there.
    pub fn insert(&mut self, key: TransportKey, action: TransportAction) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, action));
        true
    }

    /// The entries in file order.
    pub fn entries(&self) -> &[(TransportKey, TransportAction)] {
        &self.entries
    }

    fn get(&self, key: &TransportKey) -> Option<&TransportAction> {
        self.index
            .get(key)
            .and_then(|&i| self.entries.get(i))
            .map(|e| &e.1)
    }

    /// The entry for `recipient` in Postfix's order: the full address,
    /// the domain, `.parent` entries from the nearest parent up, `*`.
    /// Keys are compared case-insensitively.
    pub fn lookup(&self, recipient: &str) -> Option<&TransportAction> {
        let lower = recipient.to_ascii_lowercase();
        let (local, domain) = match lower.rsplit_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, lower.as_str()),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if let Some(local) = local {
            if let Some(a) = self.get(&TransportKey::Address(format!("{local}@{domain}"))) {
                return Some(a);
            }
        }
        if let Some(a) = self.get(&TransportKey::Domain(domain.to_string())) {
            return Some(a);
        }
        // transport(5): ".domain" matches any subdomain; Postfix walks the
        // parents of a.b.example.com as .b.example.com, .example.com, .com.
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(a) = self.get(&TransportKey::Subdomains(parent.to_string())) {
                return Some(a);
            }
            rest = parent;
        }
        self.get(&TransportKey::Default)
    }
}

fn parse_key(k: &str) -> Result<TransportKey, String> {
    let k = k.to_ascii_lowercase();
    if k == "*" {
        return Ok(TransportKey::Default);
    }
    if let Some((local, domain)) = k.rsplit_once('@') {
        if local.is_empty() {
            return Err(format!("{k:?}: empty local part"));
        }
        let d = mail_config::normalize_host_name(domain)?;
        return Ok(TransportKey::Address(format!("{local}@{d}")));
    }
    if let Some(d) = k.strip_prefix('.') {
        return mail_config::normalize_host_name(d).map(TransportKey::Subdomains);
    }
    mail_config::normalize_host_name(&k).map(TransportKey::Domain)
}

impl FromStr for TransportTable {
    type Err = TransportError;

    /// Reads the table as `postmap` does: `key value` per logical line;
    /// a line starting with whitespace continues the previous one; lines
    /// whose first non-blank character is `#`, and blank lines, are
    /// skipped. A key given twice is an error (postmap warns and keeps
    /// the first; an error is kinder than a silent surprise).
    fn from_str(text: &str) -> Result<Self, TransportError> {
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                match logical.last_mut() {
                    Some((_, l)) => {
                        l.push(' ');
                        l.push_str(t);
                    }
                    None => {
                        return Err(TransportError {
                            line: i + 1,
                            reason: "continuation line without an entry before it".into(),
                        })
                    }
                }
            } else {
                logical.push((i + 1, t.to_string()));
            }
        }
        let mut table = TransportTable::new();
        let mut first_line = HashMap::new();
        for (line, l) in logical {
            let err = |reason: String| TransportError { line, reason };
            let (k, v) = l
                .split_once(char::is_whitespace)
                .ok_or_else(|| err(format!("{l:?}: a key without a value")))?;
            let key = parse_key(k).map_err(err)?;
            let action = v.trim().parse::<TransportAction>().map_err(err)?;
            if let Some(first) = first_line.get(&key) {
                return Err(err(format!("{key} is already given on line {first}")));
            }
            first_line.insert(key.clone(), line);
            table.insert(key, action);
        }
        Ok(table)
    }
}

impl fmt::Display for TransportTable {
    /// One `key<TAB>transport:nexthop` line per entry, which `from_str`
    /// (and Postfix's postmap) read back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, a) in &self.entries {
            writeln!(f, "{k}\t{a}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What to do with a remote recipient
// ---------------------------------------------------------------------------

/// A next hop to look up: a name to ask MX records for, or a host whose
/// addresses are used as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The domain (MX lookup) or host name, lower case; for an address
    /// literal, the address as text.
    pub name: String,
    /// Ask for MX records of `name` first (RFC 5321 section 5.1).
    pub mx_lookup: bool,
    /// An address given literally (`[192.0.2.1]`): no DNS at all.
    pub literal: Option<IpAddr>,
    /// The port to connect to.
    pub port: u16,
}

impl Target {
    /// The target of a recipient domain: its MX records, or for an
    /// address literal domain (`user@[192.0.2.1]`, RFC 5321 section
    /// 4.1.3) that address.
    pub fn for_domain(domain: &str) -> Result<Target, String> {
        if domain.starts_with('[') {
            return domain.parse::<SmtpDestination>().map(|d| Target::from(&d));
        }
        Ok(Target {
            name: mail_config::normalize_host_name(domain)?,
            mx_lookup: true,
            literal: None,
            port: 25,
        })
    }
}

impl From<&SmtpDestination> for Target {
    fn from(d: &SmtpDestination) -> Self {
        let port = d.port_or_default();
        match &d.host {
            DestinationHost::Ip(ip) => Target {
                name: ip.to_string(),
                mx_lookup: false,
                literal: Some(*ip),
                port,
            },
            DestinationHost::Name(n) => Target {
                name: n.clone(),
                mx_lookup: d.mx_lookup,
                literal: None,
                port,
            },
        }
    }
}

/// The route of one remote recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver by SMTP to this target.
    Smtp(Target),
    /// Deliver locally (a `local:` transport entry).
    Local,
    /// Refuse (an `error:` or `retry:` transport entry).
    Error {
        /// Its status; `4.x.y` defers, `5.x.y` bounces.
        status: EnhancedStatus,
        /// Its text.
        text: String,
    },
    /// Drop, logging the text (a `discard:` transport entry).
    Discard(String),
    /// The recipient's domain is not a domain.
    BadDomain(String),
}

/// Routes a remote recipient as Postfix's trivial-rewrite does: the
/// transport table first; failing that, `relayhost` when set; failing that,
/// the MX records of the recipient's domain. A transport entry without a
/// nexthop (`smtp:`) means the same default (relayhost, else MX).
pub fn decide(
    recipient: &str,
    table: Option<&TransportTable>,
    relayhost: Option<&SmtpDestination>,
) -> Decision {
    let domain = recipient
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(recipient);
    let default = || match relayhost {
        Some(r) => Decision::Smtp(Target::from(r)),
        None => match Target::for_domain(domain) {
            Ok(t) => Decision::Smtp(t),
            Err(e) => Decision::BadDomain(e),
        },
    };
    match table.and_then(|t| t.lookup(recipient)) {
        None | Some(TransportAction::Smtp(None)) => default(),
        Some(TransportAction::Smtp(Some(d))) => Decision::Smtp(Target::from(d)),
        Some(TransportAction::Local) => Decision::Local,
        Some(TransportAction::Error { status, text }) => Decision::Error {
            status: *status,
            text: text.clone(),
        },
        Some(TransportAction::Discard(t)) => Decision::Discard(t.clone()),
    }
}

// ---------------------------------------------------------------------------
// Next-hop selection (RFC 5321 section 5.1)
// ---------------------------------------------------------------------------

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is tried first.
    pub preference: u16,
    /// The mail exchanger; `"."` or `""` is the root (null MX, RFC 7505).
    pub exchange: String,
}

/// What DNS said to an MX query, after any CNAME at the domain was followed
/// by the resolver (RFC 5321 section 5.1: "processed as if it were the
/// initial name").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxLookup {
    /// MX records (never empty; an empty list is [`MxLookup::NoRecords`]).
    Records(Vec<MxRecord>),
    /// The name exists but has no MX records (NODATA): the domain is its
    /// own mail exchanger (the implicit MX).
    NoRecords,
    /// The name does not exist (NXDOMAIN): a permanent failure.
    NxDomain,
    /// No answer now (SERVFAIL, timeout, refused): try again later.
    TempFail(String),
}

/// What DNS said to the A and AAAA queries of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrLookup {
    /// Its addresses, in the order DNS gave them.
    Found(Vec<IpAddr>),
    /// The name exists with no A or AAAA record.
    NoRecords,
    /// The name does not exist.
    NxDomain,
    /// No answer now.
    TempFail(String),
}

/// What [`select`] needs besides DNS answers.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    /// Which family goes first for a host with both.
    pub preference: AddressPreference,
    /// Our own host names (`myhostname`): an MX naming one of them is us.
    pub local_names: Vec<String>,
    /// Our own addresses (`inet_interfaces`): an MX host with one is us.
    pub local_addrs: Vec<IpAddr>,
}

/// A host to try, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The host name (the MX exchange, the domain for the implicit MX, or
    /// the host of a `[host]` target): what TLS checks a certificate for.
    pub host: String,
    /// Its MX preference; `None` without an MX lookup.
    pub preference: Option<u16>,
    /// Its addresses, in the order to try.
    pub addresses: Vec<IpAddr>,
    /// The port.
    pub port: u16,
}

/// The DNS record type a failure is about, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    /// MX.
    Mx,
    /// A and AAAA.
    Address,
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryType::Mx => "MX",
            QueryType::Address => "A/AAAA",
        })
    }
}

/// Why there is nowhere to deliver; the texts are Postfix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// RFC 7505 null MX: the domain takes no mail.
    #[error("Domain {domain} does not accept mail (nullMX)")]
    NullMx {
        /// The domain.
        domain: String,
    },
    /// Every MX host left is this host (RFC 5321 section 5.1).
    #[error("mail for {domain} loops back to myself")]
    LoopsBack {
        /// The domain.
        domain: String,
    },
    /// The name does not exist (NXDOMAIN).
    #[error("Host or domain name not found. Name service error for name={name} type={qtype}: Host not found")]
    NotFound {
        /// The name asked.
        name: String,
        /// What was asked.
        qtype: QueryType,
    },
    /// The name exists without the records needed.
    #[error("Host or domain name not found. Name service error for name={name} type={qtype}: Host found but no data record of requested type")]
    NoData {
        /// The name asked.
        name: String,
        /// What was asked.
        qtype: QueryType,
    },
    /// DNS could not answer now.
    #[error("Host or domain name not found. Name service error for name={name} type={qtype}: Host not found, try again ({reason})")]
    TryAgain {
        /// The name asked.
        name: String,
        /// What was asked.
        qtype: QueryType,
        /// The resolver's reason.
        reason: String,
    },
    /// The caller did not pass the addresses of a host it had to look up.
    #[error("no address lookup given for {0}")]
    Missing(String),
}

impl RouteError {
    /// The enhanced status code of the failure, as Postfix logs it in `dsn=`.
    pub fn status(&self) -> EnhancedStatus {
        match self {
            // RFC 7505 section 4.2 (and RFC 3463 as updated by RFC 7505 section 5).
            RouteError::NullMx { .. } => EnhancedStatus::new(5, 1, 10),
            RouteError::LoopsBack { .. } => EnhancedStatus::new(5, 4, 6),
            RouteError::NotFound { .. } | RouteError::NoData { .. } => EnhancedStatus::new(5, 4, 4),
            RouteError::TryAgain { .. } | RouteError::Missing(_) => EnhancedStatus::new(4, 4, 3),
        }
    }

    /// The SMTP reply code to report with it (RFC 7505 section 4.2: 556
    /// for a null MX).
    pub fn reply_code(&self) -> u16 {
        match self {
            RouteError::NullMx { .. } => 556,
            e if e.is_permanent() => 550,
            _ => 451,
        }
    }

    /// Whether to bounce (`true`) or retry later.
    pub fn is_permanent(&self) -> bool {
        self.status().is_permanent()
    }
}

/// SplitMix64: a small deterministic generator, so that the caller's seed
/// fixes the order among equals.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64's step: the mixer adds the increment itself.
        let r = crate::util::splitmix64(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        r
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn is_root(exchange: &str) -> bool {
    exchange.is_empty() || exchange == "."
}

fn norm(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Orders the addresses of one host: within a family as given (already
/// shuffled), families by `pref`.
fn order_addresses(addrs: &[IpAddr], pref: AddressPreference, rng: &mut Rng) -> Vec<IpAddr> {
    let mut v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
    let mut v6: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv6).collect();
    // Postfix's smtp_randomize_addresses: spread load over a host's addresses.
    rng.shuffle(&mut v4);
    rng.shuffle(&mut v6);
    let v6_first = match pref {
        AddressPreference::Ipv6 => true,
        AddressPreference::Ipv4 => false,
        AddressPreference::Any => rng.next() & 1 == 1,
    };
    let (mut first, second) = if v6_first { (v6, v4) } else { (v4, v6) };
    first.extend(second);
    first
}

/// The names whose addresses the caller must look up before [`select`]:
/// the MX hosts, or the target itself (implicit MX, or no MX lookup).
/// Empty when the answer already decides (null MX, an error, a literal).
pub fn hosts_to_resolve(target: &Target, mx: Option<&MxLookup>) -> Vec<String> {
    if target.literal.is_some() {
        return Vec::new();
    }
    match (target.mx_lookup, mx) {
        (true, Some(MxLookup::Records(rs))) => {
            if rs.iter().all(|r| is_root(&r.exchange)) {
                return Vec::new();
            }
            let mut hosts: Vec<String> = rs
                .iter()
                .filter(|r| !is_root(&r.exchange))
                .map(|r| norm(&r.exchange))
                .collect();
            hosts.sort();
            hosts.dedup();
            hosts
        }
        (true, Some(MxLookup::NxDomain | MxLookup::TempFail(_))) | (true, None) => Vec::new(),
        _ => vec![target.name.clone()],
    }
}

/// The hosts to try for `target`, best first (RFC 5321 section 5.1):
///
/// * MX records sorted by preference, equal ones in random order (from
///   `seed`); an MX of `.` alone is RFC 7505's null MX, a permanent
///   failure (`5.1.10`); a `.` among other records is skipped;
/// * no MX records: the domain itself, preference 0 (the implicit MX);
/// * an MX host that is us (by name or address) is dropped with every MX
///   of equal or worse preference; if none is left, "loops back to
///   myself" (`5.4.6`). Only for MX lookups, as Postfix: `[host]` and
///   transport-table hosts are taken as given;
/// * hosts without addresses are skipped; if none has any, the failure is
///   temporary (`4.4.3`) when any lookup was, else permanent (`5.4.4`);
///   an NXDOMAIN for the domain is `5.4.4`, a SERVFAIL or timeout `4.4.3`.
///
/// `addrs` holds the answers for [`hosts_to_resolve`]'s names.
pub fn select(
    target: &Target,
    mx: Option<&MxLookup>,
    addrs: &BTreeMap<String, AddrLookup>,
    opts: &SelectOptions,
    seed: u64,
) -> Result<Vec<Hop>, RouteError> {
    let mut rng = Rng(seed);
    if let Some(ip) = target.literal {
        return Ok(vec![Hop {
            host: target.name.clone(),
            preference: None,
            addresses: vec![ip],
            port: target.port,
        }]);
    }
    let domain = &target.name;
    // (host, preference) in the order to try.
    let mut candidates: Vec<(String, Option<u16>)> = if target.mx_lookup {
        match mx {
            None => return Err(RouteError::Missing(domain.clone())),
            Some(MxLookup::NxDomain) => {
                return Err(RouteError::NotFound {
                    name: domain.clone(),
                    qtype: QueryType::Mx,
                })
            }
            Some(MxLookup::TempFail(reason)) => {
                return Err(RouteError::TryAgain {
                    name: domain.clone(),
                    qtype: QueryType::Mx,
                    reason: reason.clone(),
                })
            }
            Some(MxLookup::NoRecords) => vec![(domain.clone(), Some(0))],
            Some(MxLookup::Records(rs)) => {
                if rs.iter().all(|r| is_root(&r.exchange)) {
                    // RFC 7505 section 3: a single MX with the root as
                    // exchange says the domain takes no mail.
                    return Err(RouteError::NullMx {
                        domain: domain.clone(),
                    });
                }
                let mut rs: Vec<&MxRecord> = rs.iter().filter(|r| !is_root(&r.exchange)).collect();
                // Shuffle, then a stable sort: random among equals.
                rng.shuffle(&mut rs);
                rs.sort_by_key(|r| r.preference);
                let mut seen = std::collections::HashSet::new();
                rs.into_iter()
                    .map(|r| (norm(&r.exchange), Some(r.preference)))
                    .filter(|(h, _)| seen.insert(h.clone()))
                    .collect()
            }
        }
    } else {
        vec![(domain.clone(), None)]
    };

    if target.mx_lookup {
        // RFC 5321 section 5.1: if we are among the MX hosts, discard us
        // and every host of equal or worse preference.
        let is_us = |host: &str| {
            opts.local_names.iter().any(|n| norm(n) == host)
                || matches!(addrs.get(host), Some(AddrLookup::Found(a))
                    if a.iter().any(|ip| opts.local_addrs.contains(ip)))
        };
        if let Some(cut) = candidates
            .iter()
            .filter(|(h, _)| is_us(h))
            .filter_map(|(_, p)| *p)
            .min()
        {
            candidates.retain(|(_, p)| p.is_some_and(|p| p < cut));
            if candidates.is_empty() {
                return Err(RouteError::LoopsBack {
                    domain: domain.clone(),
                });
            }
        }
    }

    let mut hops = Vec::new();
    let mut first_failure: Option<RouteError> = None;
    let mut temporary: Option<RouteError> = None;
    for (host, preference) in candidates {
        let failure = match addrs.get(&host) {
            Some(AddrLookup::Found(a)) if !a.is_empty() => {
                hops.push(Hop {
                    addresses: order_addresses(a, opts.preference, &mut rng),
                    host,
                    preference,
                    port: target.port,
                });
                continue;
            }
            Some(AddrLookup::Found(_) | AddrLookup::NoRecords) => RouteError::NoData {
                name: host,
                qtype: QueryType::Address,
            },
            Some(AddrLookup::NxDomain) => RouteError::NotFound {
                name: host,
                qtype: QueryType::Address,
            },
            Some(AddrLookup::TempFail(reason)) => RouteError::TryAgain {
                name: host,
                qtype: QueryType::Address,
                reason: reason.clone(),
            },
            None => RouteError::Missing(host),
        };
        if !failure.is_permanent() && temporary.is_none() {
            temporary = Some(failure.clone());
        }
        first_failure.get_or_insert(failure);
    }
    if hops.is_empty() {
        // Postfix defers when any host might have an address later.
        return Err(temporary
            .or(first_failure)
            .unwrap_or_else(|| RouteError::Missing(domain.clone())));
    }
    Ok(hops)
}

#[cfg(test)]
mod tests;
