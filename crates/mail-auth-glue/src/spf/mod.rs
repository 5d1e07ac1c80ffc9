//! SPF (RFC 7208), our own evaluator: mail-auth 0.13 takes an unknown
//! mechanism (`v=spf1 foo -all`) for a modifier and does not count void
//! lookups, and both happen inside its record fetching, where the glue
//! cannot reach. This module parses records ([`record`]), expands macros
//! ([`macros`]) and evaluates `check_host()` (sections 4 and 5) with the
//! limits of section 4.6.4: 10 DNS-querying terms, 2 void lookups, 10
//! names per `mx` (more is `permerror`) and per `ptr` (the rest ignored).
//!
//! DNS comes through the [`Dns`] trait, so the suite and the unit tests
//! answer from memory; smtpd's answers come from the checker's resolver and
//! cache (`check::AuthDns`). The evaluation is a loop over an explicit stack
//! of records (includes, redirects), not recursion, so its future is plain
//! and `Send`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod macros;
pub mod record;

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use macros::MacroContext;
pub use mail_auth::SpfResult;
use record::{MacroString, Mechanism, Part, Qualifier, Record, Term};

/// Section 4.6.4: terms that query DNS, per evaluation.
pub const MAX_LOOKUPS: usize = 10;
/// Section 4.6.4: lookups answered NXDOMAIN or with no records.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// Section 4.6.4: names looked at per `mx` or `ptr`.
pub const MAX_NAMES: usize = 10;

/// One DNS answer, told apart as SPF needs it (sections 4.4, 4.6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// RCODE 0 with these records (none: a void lookup).
    Records(Vec<T>),
    /// RCODE 3, NXDOMAIN (a void lookup).
    NxDomain,
    /// A server failure, a timeout, any other error.
    TempError,
}

impl<T> Answer<T> {
    fn is_void(&self) -> bool {
        match self {
            Answer::Records(r) => r.is_empty(),
            Answer::NxDomain => true,
            Answer::TempError => false,
        }
    }
}

/// The lookups SPF makes. Names come without the trailing dot, as
/// expanded; implementations add it.
pub trait Dns {
    /// TXT records of `name`, each one's strings joined (section 3.3).
    fn txt(&self, name: &str) -> impl Future<Output = Answer<String>> + Send;
    /// A records.
    fn a(&self, name: &str) -> impl Future<Output = Answer<Ipv4Addr>> + Send;
    /// AAAA records.
    fn aaaa(&self, name: &str) -> impl Future<Output = Answer<Ipv6Addr>> + Send;
    /// MX exchanges, any order.
    fn mx(&self, name: &str) -> impl Future<Output = Answer<String>> + Send;
    /// PTR names of `ip`.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Answer<String>> + Send;
}

/// What is checked: `check_host(<ip>, <domain>, <sender>)` plus what the
/// macros need.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The domain whose record is checked.
    pub domain: &'a str,
    /// `<sender>`: MAIL FROM, or `postmaster@<helo>`.
    pub sender: &'a str,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// Our host name (`%{r}`).
    pub receiver: &'a str,
    /// Seconds since the epoch (`%{t}`).
    pub now: u64,
}

impl<'a> Request<'a> {
    /// The MAIL FROM identity (section 2.4): its domain, or the HELO name
    /// for `<>` (`postmaster@<helo>`).
    pub fn mail_from(ip: IpAddr, helo: &'a str, mail_from: &'a str, receiver: &'a str) -> Self {
        let domain = match mail_from.rsplit_once('@') {
            Some((_, d)) => d,
            None if mail_from.is_empty() => helo,
            None => mail_from,
        };
        Request {
            ip,
            domain,
            sender: mail_from,
            helo,
            receiver,
            now: 0,
        }
    }

    /// The HELO identity (section 2.3).
    pub fn helo(ip: IpAddr, helo: &'a str, receiver: &'a str) -> Self {
        Request {
            ip,
            domain: helo,
            sender: "",
            helo,
            receiver,
            now: 0,
        }
    }
}

/// The outcome of one `check_host()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The result (section 2.6).
    pub result: SpfResult,
    /// The `exp=` text of a `fail` (section 6.2).
    pub explanation: Option<String>,
    /// Why the result is `permerror` or `temperror`, for the log.
    pub problem: Option<String>,
    /// DNS-querying terms evaluated.
    pub lookups: usize,
    /// Void lookups met.
    pub void_lookups: usize,
}

/// A record as section 4.5 selects it from a name's TXT records.
enum Loaded {
    Record(Record),
    None,
    Err(SpfResult, String),
}

struct Frame {
    domain: String,
    record: Record,
    pos: usize,
    /// Its result goes to the include in the frame below it.
    included: bool,
}

/// What a frame's next term leads to.
enum Step {
    /// Evaluate an included record.
    Push(Frame),
    /// `redirect=`: this record's place goes to that domain's.
    Replace(String, Record),
    /// No match: the next term.
    Next,
    /// The frame's result.
    Done(SpfResult),
}

/// Stops the evaluation with this result.
struct Stop(SpfResult, String);

struct Eval<'a, D> {
    dns: &'a D,
    req: &'a Request<'a>,
    ip: IpAddr,
    local: &'a str,
    sender_domain: &'a str,
    lookups: usize,
    voids: usize,
    validated: Option<Option<String>>,
}

/// `check_host()` (section 4) of `req`.
pub async fn check_host<D: Dns>(dns: &D, req: &Request<'_>) -> Verdict {
    // An IPv4-mapped IPv6 client is the IPv4 one (RFC 4291 section 2.5.5.2).
    let ip = match req.ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(req.ip, IpAddr::V4),
        v4 => v4,
    };
    // Section 4.3: no local-part is `postmaster`; the domain alone is
    // `postmaster@domain`.
    let (local, sender_domain) = match req.sender.rsplit_once('@') {
        Some(("", d)) => ("postmaster", d),
        Some((l, d)) => (l, d),
        None => ("postmaster", req.domain),
    };
    let mut eval = Eval {
        dns,
        req,
        ip,
        local,
        sender_domain,
        lookups: 0,
        voids: 0,
        validated: None,
    };
    let (result, explanation, problem) = match eval.run().await {
        Ok((r, e)) => (r, e, None),
        Err(Stop(r, why)) => (r, None, Some(why)),
    };
    Verdict {
        result,
        explanation,
        problem,
        lookups: eval.lookups,
        void_lookups: eval.voids,
    }
}

/// Section 4.3: a name SPF can look up at all: at most 253 octets, two
/// labels or more, none empty or over 63 octets, no address literal.
pub fn valid_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && !d.starts_with('[')
        && d.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

fn qualifier_result(q: Qualifier) -> SpfResult {
    match q {
        Qualifier::Pass => SpfResult::Pass,
        Qualifier::Fail => SpfResult::Fail,
        Qualifier::SoftFail => SpfResult::SoftFail,
        Qualifier::Neutral => SpfResult::Neutral,
    }
}

fn in_net4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let len = u32::from(len.min(32));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_net6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let len = u32::from(len.min(128));
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn uses_p(ms: &MacroString) -> bool {
    ms.0.iter()
        .any(|p| matches!(p, Part::Macro(m) if m.letter == 'p'))
}

fn same_or_sub(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}

impl<D: Dns> Eval<'_, D> {
    fn ctx<'b>(&'b self, domain: &'b str) -> MacroContext<'b> {
        MacroContext {
            local: self.local,
            sender_domain: self.sender_domain,
            domain,
            ip: self.ip,
            helo: self.req.helo,
            receiver: self.req.receiver,
            now: self.req.now,
            validated: self.validated.as_ref().and_then(|v| v.as_deref()),
        }
    }

    async fn expand(&mut self, ms: &MacroString, domain: &str) -> String {
        if uses_p(ms) && self.validated.is_none() {
            let v = self.validated_names(domain).await;
            self.validated = Some(v);
        }
        self.ctx(domain).expand_domain(ms)
    }

    /// `%{p}` (section 7.3): a PTR name of the client that maps back to
    /// it, one in `domain` preferred. Not counted toward the limits, as
    /// section 4.6.4 names only terms.
    async fn validated_names(&mut self, domain: &str) -> Option<String> {
        let Answer::Records(names) = self.dns.ptr(self.ip).await else {
            return None;
        };
        let mut first = None;
        for name in names.iter().take(MAX_NAMES) {
            if self.has_address(name).await == Some(true) {
                if same_or_sub(name, domain) {
                    return Some(name.trim_end_matches('.').to_string());
                }
                first.get_or_insert_with(|| name.trim_end_matches('.').to_string());
            }
        }
        first
    }

    /// Whether `name`'s addresses of the client's family include it;
    /// `None` on a DNS error.
    async fn has_address(&self, name: &str) -> Option<bool> {
        match self.ip {
            IpAddr::V4(ip) => match self.dns.a(name).await {
                Answer::Records(r) => Some(r.contains(&ip)),
                Answer::NxDomain => Some(false),
                Answer::TempError => None,
            },
            IpAddr::V6(ip) => match self.dns.aaaa(name).await {
                Answer::Records(r) => Some(r.contains(&ip)),
                Answer::NxDomain => Some(false),
                Answer::TempError => None,
            },
        }
    }

    fn void(&mut self) -> Result<(), Stop> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(Stop(
                SpfResult::PermError,
                format!("more than {MAX_VOID_LOOKUPS} void lookups"),
            ));
        }
        Ok(())
    }

    fn count(&mut self) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(Stop(
                SpfResult::PermError,
                format!("more than {MAX_LOOKUPS} DNS lookups"),
            ));
        }
        Ok(())
    }

    /// Section 4.5: the one `v=spf1` record of `domain`.
    async fn load(&self, domain: &str) -> Loaded {
        if !valid_domain(domain) {
            return Loaded::None;
        }
        let txts = match self.dns.txt(domain).await {
            Answer::Records(r) => r,
            Answer::NxDomain => return Loaded::None,
            Answer::TempError => {
                return Loaded::Err(SpfResult::TempError, format!("DNS error for {domain}"))
            }
        };
        let mut spf = txts.iter().filter(|t| record::is_spf(t));
        let Some(first) = spf.next() else {
            return Loaded::None;
        };
        if spf.next().is_some() {
            return Loaded::Err(
                SpfResult::PermError,
                format!("more than one SPF record for {domain}"),
            );
        }
        match Record::parse(first) {
            Ok(r) => Loaded::Record(r),
            Err(e) => Loaded::Err(SpfResult::PermError, format!("{domain}: {e}")),
        }
    }

    async fn run(&mut self) -> Result<(SpfResult, Option<String>), Stop> {
        let top = self.req.domain.trim_end_matches('.').to_string();
        let record = match self.load(&top).await {
            Loaded::Record(r) => r,
            Loaded::None => return Ok((SpfResult::None, None)),
            Loaded::Err(r, why) => return Err(Stop(r, why)),
        };
        let mut stack = vec![Frame {
            domain: top,
            record,
            pos: 0,
            included: false,
        }];
        loop {
            let Some(frame) = stack.last() else {
                return Ok((SpfResult::None, None));
            };
            // What the frame's next term says, worked out while the frame
            // is borrowed; the stack changes after.
            let step = match frame.record.terms.get(frame.pos) {
                Some(Term::Directive(_, Mechanism::Include(target))) => {
                    self.count()?;
                    let target = self.expand(target, &frame.domain).await;
                    match self.load(&target).await {
                        Loaded::Record(record) => Step::Push(Frame {
                            domain: target,
                            record,
                            pos: 0,
                            included: true,
                        }),
                        // Section 5.2: an include without a record is
                        // permerror; errors go up as they are.
                        Loaded::None => {
                            return Err(Stop(
                                SpfResult::PermError,
                                format!("include:{target} has no SPF record"),
                            ))
                        }
                        Loaded::Err(r, why) => return Err(Stop(r, why)),
                    }
                }
                Some(Term::Directive(q, m)) => {
                    if m.queries_dns() {
                        self.count()?;
                    }
                    if self.matches(m, &frame.domain).await? {
                        Step::Done(qualifier_result(*q))
                    } else {
                        Step::Next
                    }
                }
                Some(_) => Step::Next,
                // Section 6.1: redirect only when nothing matched and the
                // record has no `all`.
                None => match frame.record.redirect() {
                    Some(target) if !frame.record.has_all() => {
                        self.count()?;
                        let target = self.expand(target, &frame.domain).await;
                        match self.load(&target).await {
                            Loaded::Record(record) => Step::Replace(target, record),
                            Loaded::None => {
                                return Err(Stop(
                                    SpfResult::PermError,
                                    format!("redirect={target} has no SPF record"),
                                ))
                            }
                            Loaded::Err(r, why) => return Err(Stop(r, why)),
                        }
                    }
                    _ => Step::Done(SpfResult::Neutral),
                },
            };
            let finished = match step {
                Step::Push(f) => {
                    stack.push(f);
                    continue;
                }
                Step::Replace(domain, record) => {
                    if let Some(f) = stack.last_mut() {
                        f.domain = domain;
                        f.record = record;
                        f.pos = 0;
                    }
                    continue;
                }
                Step::Next => None,
                Step::Done(r) => Some(r),
            };
            let Some(mut result) = finished else {
                if let Some(f) = stack.last_mut() {
                    f.pos += 1;
                }
                continue;
            };
            // A frame ended with `result`: hand it to the include below,
            // or it is the answer.
            loop {
                let Some(done) = stack.pop() else {
                    return Ok((result, None));
                };
                if !done.included {
                    let exp = if result == SpfResult::Fail {
                        self.explain(&done).await
                    } else {
                        None
                    };
                    return Ok((result, exp));
                }
                let Some(parent) = stack.last_mut() else {
                    return Ok((result, None));
                };
                // Section 5.2: pass matches; fail, softfail, neutral do not.
                if result == SpfResult::Pass {
                    let q = match parent.record.terms.get(parent.pos) {
                        Some(Term::Directive(q, _)) => *q,
                        _ => Qualifier::Pass,
                    };
                    result = qualifier_result(q);
                    continue;
                }
                parent.pos += 1;
                break;
            }
        }
    }

    /// Whether `m` matches. A target that expands to no valid domain name
    /// (an empty label, a label over 63 octets) names nothing and matches
    /// nothing: RFC 7208 leaves it undefined (the suite's
    /// `invalid-domain-*` cases accept this or permerror).
    async fn matches(&mut self, m: &Mechanism, domain: &str) -> Result<bool, Stop> {
        let temp = |what: &str| Stop(SpfResult::TempError, format!("DNS error for {what}"));
        Ok(match m {
            Mechanism::All => true,
            Mechanism::Include(_) => false,
            Mechanism::Ip4 { addr, len } => match self.ip {
                IpAddr::V4(ip) => in_net4(ip, *addr, len.unwrap_or(32)),
                IpAddr::V6(_) => false,
            },
            Mechanism::Ip6 { addr, len } => match self.ip {
                IpAddr::V6(ip) => in_net6(ip, *addr, len.unwrap_or(128)),
                IpAddr::V4(_) => false,
            },
            Mechanism::A { domain: d, v4, v6 } => {
                let target: Cow<'_, str> = match d {
                    Some(d) => self.expand(d, domain).await.into(),
                    None => domain.into(),
                };
                if !valid_domain(&target) {
                    return Ok(false);
                }
                match self.addresses_match(&target, *v4, *v6).await {
                    Some(Ok(hit)) => hit,
                    Some(Err(())) => return Err(temp(&target)),
                    None => {
                        self.void()?;
                        false
                    }
                }
            }
            Mechanism::Mx { domain: d, v4, v6 } => {
                let target: Cow<'_, str> = match d {
                    Some(d) => self.expand(d, domain).await.into(),
                    None => domain.into(),
                };
                if !valid_domain(&target) {
                    return Ok(false);
                }
                let answer = self.dns.mx(&target).await;
                if answer.is_void() {
                    self.void()?;
                }
                let names = match answer {
                    Answer::Records(n) => n,
                    Answer::NxDomain => Vec::new(),
                    Answer::TempError => return Err(temp(&target)),
                };
                // Section 4.6.4: more than 10 MX names is permerror.
                if names.len() > MAX_NAMES {
                    return Err(Stop(
                        SpfResult::PermError,
                        format!("more than {MAX_NAMES} MX names for {target}"),
                    ));
                }
                let mut hit = false;
                for name in &names {
                    match self.addresses_match(name, *v4, *v6).await {
                        Some(Ok(true)) => {
                            hit = true;
                            break;
                        }
                        Some(Err(())) => return Err(temp(name)),
                        _ => {}
                    }
                }
                hit
            }
            Mechanism::Ptr(d) => {
                let target = match d {
                    Some(d) => self.expand(d, domain).await,
                    None => domain.to_string(),
                };
                // Section 5.5: a DNS error in the PTR lookup is no match.
                let names = match self.dns.ptr(self.ip).await {
                    Answer::Records(n) if !n.is_empty() => n,
                    Answer::TempError => return Ok(false),
                    _ => {
                        self.void()?;
                        return Ok(false);
                    }
                };
                let mut hit = false;
                // Section 4.6.4: names past the tenth are ignored.
                for name in names.iter().take(MAX_NAMES) {
                    if same_or_sub(name, &target) && self.has_address(name).await == Some(true) {
                        hit = true;
                        break;
                    }
                }
                hit
            }
            Mechanism::Exists(d) => {
                let target = self.expand(d, domain).await;
                if !valid_domain(&target) {
                    return Ok(false);
                }
                // Section 5.7: always an A query, whatever the client's family.
                match self.dns.a(&target).await {
                    Answer::Records(r) if !r.is_empty() => true,
                    Answer::TempError => return Err(temp(&target)),
                    _ => {
                        self.void()?;
                        false
                    }
                }
            }
        })
    }

    /// The client's family's addresses of `name` against the client, with
    /// the prefix lengths; `None` for a void lookup, `Err` for a DNS error.
    async fn addresses_match(
        &self,
        name: &str,
        v4: Option<u8>,
        v6: Option<u8>,
    ) -> Option<Result<bool, ()>> {
        match self.ip {
            IpAddr::V4(ip) => match self.dns.a(name).await {
                Answer::Records(r) if !r.is_empty() => {
                    Some(Ok(r.iter().any(|a| in_net4(ip, *a, v4.unwrap_or(32)))))
                }
                Answer::TempError => Some(Err(())),
                _ => None,
            },
            IpAddr::V6(ip) => match self.dns.aaaa(name).await {
                Answer::Records(r) if !r.is_empty() => {
                    Some(Ok(r.iter().any(|a| in_net6(ip, *a, v6.unwrap_or(128)))))
                }
                Answer::TempError => Some(Err(())),
                _ => None,
            },
        }
    }

    /// Section 6.2: the `exp=` text of a `fail`, when its lookup gives
    /// exactly one TXT record that expands; nothing otherwise.
    async fn explain(&mut self, frame: &Frame) -> Option<String> {
        let target = frame.record.exp()?;
        let name = self.expand(target, &frame.domain).await;
        if !valid_domain(&name) {
            return None;
        }
        let Answer::Records(txts) = self.dns.txt(&name).await else {
            return None;
        };
        let [text] = txts.as_slice() else {
            return None;
        };
        let ms = MacroString::parse(text, true).ok()?;
        if ms
            .0
            .iter()
            .any(|p| matches!(p, Part::Macro(m) if m.letter == 'p'))
            && self.validated.is_none()
        {
            let v = self.validated_names(&frame.domain).await;
            self.validated = Some(v);
        }
        let out = self.ctx(&frame.domain).expand(&ms);
        out.is_ascii().then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = Ipv4Addr::new(192, 0, 2, 129);
        assert!(in_net4(ip, Ipv4Addr::new(192, 0, 2, 128), 28));
        assert!(!in_net4(ip, Ipv4Addr::new(192, 0, 2, 144), 28));
        assert!(in_net4(ip, Ipv4Addr::new(1, 2, 3, 4), 0));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(in_net6(v6, "2001:db8::".parse().unwrap(), 32));
        assert!(!in_net6(v6, "2001:db9::".parse().unwrap(), 32));
        assert!(in_net6(v6, "::".parse().unwrap(), 0));
    }

    #[test]
    fn domains() {
        assert!(valid_domain("example.com"));
        assert!(valid_domain("example.com."));
        assert!(!valid_domain("nolabels"));
        assert!(!valid_domain("a..example.com"));
        assert!(!valid_domain("[192.0.2.1]"));
        assert!(!valid_domain(&format!("{}.example.com", "a".repeat(64))));
        assert!(valid_domain(&format!("{}.example.com", "a".repeat(63))));
    }
}
