//! Inbound checks: SPF for HELO and MAIL FROM (RFC 7208), every DKIM
//! signature (RFC 6376), DMARC (RFC 7489) and the `Authentication-Results:`
//! field (RFC 8601) that reports them; then what the policy keys make of
//! the results. The lookups go through the daemon's resolver and a cache
//! shared by all connections.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};

use crate::cache::{fqdn, Caches};
use crate::headers;
use crate::spf::{self, Answer};

/// What the policy keys say (`[auth_checks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The authserv-id written into, and matched in, `Authentication-Results:`.
    pub authserv_id: String,
    /// Refuse DMARC failures of `p=reject` domains (OpenDMARC's `RejectFailures`).
    pub dmarc_reject: bool,
    /// Refuse SPF `fail` of MAIL FROM or HELO (policyd-spf's `*_reject = Fail`).
    pub spf_reject: bool,
}

impl Policy {
    /// From `[auth_checks]`, with `hostname` when `authserv_id` is empty.
    pub fn from_config(cfg: &mail_config::AuthChecks, hostname: &str) -> Self {
        Policy {
            authserv_id: if cfg.authserv_id.is_empty() {
                hostname.to_string()
            } else {
                cfg.authserv_id.clone()
            },
            dmarc_reject: cfg.dmarc_reject,
            spf_reject: cfg.spf_reject,
        }
    }
}

/// The SMTP session's part: the client, its HELO and MAIL FROM.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The reverse-path, `""` for `<>`.
    pub mail_from: &'a str,
}

/// What to do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver it, with the header.
    Accept,
    /// Refuse it at the end of DATA with this reply.
    Reject {
        /// The reply code.
        code: u16,
        /// The enhanced status code (RFC 3463).
        status: (u8, u8, u8),
        /// The text.
        text: String,
    },
}

/// The results, in short, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// SPF of HELO.
    pub spf_helo: SpfResult,
    /// SPF of MAIL FROM (of HELO for `<>`).
    pub spf: SpfResult,
    /// Why SPF of MAIL FROM (else of HELO) is `permerror` or `temperror`.
    pub spf_problem: Option<String>,
    /// Each DKIM signature's result: `pass`, `fail`, ….
    pub dkim: Vec<String>,
    /// `pass`, `fail`, `none`, `temperror`, `permerror`.
    pub dmarc: String,
    /// The From: domain's policy.
    pub dmarc_policy: String,
}

/// The outcome of the checks of one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The `Authentication-Results:` field, ending in CRLF.
    pub header: String,
    /// Deliver or refuse.
    pub action: Action,
    /// The results.
    pub summary: Summary,
    /// The message without forged `Authentication-Results:` fields, when
    /// it had any.
    pub stripped: Option<Vec<u8>>,
}

/// The checker: a resolver, a cache, the policy.
#[derive(Clone)]
pub struct Checker {
    auth: MessageAuthenticator,
    cache: Arc<Caches>,
    policy: Policy,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker over `auth` and `cache`.
    pub fn new(auth: MessageAuthenticator, cache: Arc<Caches>, policy: Policy) -> Self {
        Checker {
            auth,
            cache,
            policy,
        }
    }

    /// From `[auth_checks]`, asking through `resolver`: the daemon's own
    /// (`netkit::resolve::DnsResolver::hickory`), so that outbound routing
    /// and the checks share one resolver, one cache and one place that
    /// sets them up from `[resolver]`.
    pub fn from_config(
        resolver: mail_auth::hickory_resolver::TokioResolver,
        checks: &mail_config::AuthChecks,
        hostname: &str,
    ) -> Self {
        Checker::new(
            MessageAuthenticator(resolver),
            Arc::new(Caches::default()),
            Policy::from_config(checks, hostname),
        )
    }

    /// The cache (tests fill it; a reload keeps it).
    pub fn cache(&self) -> &Arc<Caches> {
        &self.cache
    }

    /// The same resolver and cache under another policy (a reload).
    pub fn with_policy(&self, policy: Policy) -> Self {
        Checker {
            policy,
            ..self.clone()
        }
    }

    /// SPF `check_host()` of `req` (RFC 7208) through the checker's
    /// resolver and cache.
    pub async fn check_spf(&self, req: &spf::Request<'_>) -> spf::Verdict {
        let dns = AuthDns {
            auth: &self.auth,
            cache: &self.cache,
        };
        spf::check_host(&dns, req).await
    }

    /// Runs every check on `message` (CRLF line ends, as received).
    pub async fn check(&self, env: &Envelope<'_>, message: &[u8]) -> Outcome {
        let stripped = headers::strip_forged_results(message, &self.policy.authserv_id);
        let raw = stripped.as_deref().unwrap_or(message);
        let host = self.policy.authserv_id.as_str();
        let cache = &*self.cache;
        // SPF is ours (crate::spf), not mail-auth's: see that module for why.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut helo_req = spf::Request::helo(env.ip, env.helo, host);
        helo_req.now = now;
        let helo_verdict = self.check_spf(&helo_req).await;
        let spf_helo = spf_output(env.helo, &helo_verdict);
        // RFC 7208 section 2.4: MAIL FROM's domain, or HELO's for `<>`.
        let (spf_from, from_verdict) = if env.mail_from.is_empty() {
            (spf_helo.clone(), helo_verdict.clone())
        } else {
            let mut req = spf::Request::mail_from(env.ip, env.helo, env.mail_from, host);
            req.now = now;
            let v = self.check_spf(&req).await;
            (spf_output(req.domain, &v), v)
        };
        let mail_from_domain = env
            .mail_from
            .rsplit_once('@')
            .map_or(env.helo, |(_, d)| d)
            .to_ascii_lowercase();

        let mut ar = AuthenticationResults::new(host);
        let parsed = AuthenticatedMessage::parse(raw);
        let (dkim_summary, dmarc) = match &parsed {
            Some(msg) => {
                let raw_dkim = self.auth.verify_dkim(cache.params(msg)).await;
                let dkim: Vec<DkimOutput<'_>> = raw_dkim.iter().map(body_hash_fails).collect();
                ar = ar.with_dkim_results(&dkim, msg.from());
                let dmarc = self
                    .auth
                    .verify_dmarc(cache.params(DmarcParameters::new(
                        msg,
                        &dkim,
                        &mail_from_domain,
                        &spf_from,
                    )))
                    .await;
                (dkim.iter().map(dkim_word).collect(), Some(dmarc))
            }
            None => (Vec::new(), None),
        };
        ar = ar.with_spf_ehlo_result(&spf_helo, env.ip, env.helo);
        if !env.mail_from.is_empty() {
            ar = ar.with_spf_mailfrom_result(&spf_from, env.ip, env.mail_from, env.helo);
        }
        if let Some(d) = &dmarc {
            ar = ar.with_dmarc_result(d);
        }
        let action = decide(&self.policy, &spf_helo, &spf_from, dmarc.as_ref());
        let summary = Summary {
            spf_helo: spf_helo.result(),
            spf: spf_from.result(),
            spf_problem: from_verdict.problem.or(helo_verdict.problem),
            dkim: dkim_summary,
            dmarc: dmarc
                .as_ref()
                .map_or_else(|| "none".to_string(), |d| dmarc_word(d).to_string()),
            dmarc_policy: dmarc
                .as_ref()
                .map_or("none", |d| policy_word(d.policy()))
                .to_string(),
        };
        Outcome {
            header: ar.to_header(),
            action,
            summary,
            stripped,
        }
    }
}

/// mail-auth's report of our SPF verdict, for the header and DMARC.
fn spf_output(domain: &str, v: &spf::Verdict) -> SpfOutput {
    let out = SpfOutput::new(domain.to_ascii_lowercase()).with_result(v.result);
    match &v.explanation {
        Some(e) => out.with_explanation(e.clone()),
        None => out,
    }
}

/// The SPF evaluator's DNS: the checker's resolver (hickory, through
/// mail-auth) and the shared cache. Addresses, MX and PTR go through
/// mail-auth's lookups and caches; TXT records are fetched as text into a
/// cache of their own, negative answers included (for their negative TTL),
/// because SPF needs all of a name's records and tells NXDOMAIN and empty
/// answers (void lookups) apart.
struct AuthDns<'a> {
    auth: &'a MessageAuthenticator,
    cache: &'a Caches,
}

/// How long a negative TXT answer is kept without an SOA to say.
const NEGATIVE_TTL: Duration = Duration::from_secs(300);

fn answer<T, U>(r: Result<T, mail_auth::Error>, f: impl FnOnce(T) -> Vec<U>) -> Answer<U> {
    use mail_auth::hickory_resolver::proto::op::ResponseCode;
    match r {
        Ok(v) => Answer::Records(f(v)),
        Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(code))) => {
            if code == ResponseCode::NXDomain {
                Answer::NxDomain
            } else {
                Answer::Records(Vec::new())
            }
        }
        Err(_) => Answer::TempError,
    }
}

impl spf::Dns for AuthDns<'_> {
    async fn txt(&self, name: &str) -> Answer<String> {
        use mail_auth::hickory_resolver::net::{DnsError, NetError};
        use mail_auth::hickory_resolver::proto::op::ResponseCode;
        use mail_auth::hickory_resolver::proto::rr::{Name, RData};
        use mail_auth::ResolverCache;
        let key = fqdn(name);
        if let Some(a) = self.cache.spf_txt.get(&*key) {
            return a;
        }
        // A name DNS cannot carry names nothing.
        let Ok(qname) = Name::from_str_relaxed(&*key) else {
            return Answer::NxDomain;
        };
        let (answer, until) = match self.auth.resolver().txt_lookup(qname).await {
            Ok(lookup) => {
                let records = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                (Answer::Records(records), lookup.valid_until())
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
                let ttl = nr.negative_ttl.map_or(NEGATIVE_TTL, |t| {
                    Duration::from_secs(u64::from(t)).min(NEGATIVE_TTL)
                });
                let a = if nr.response_code == ResponseCode::NXDomain {
                    Answer::NxDomain
                } else {
                    Answer::Records(Vec::new())
                };
                (a, Instant::now() + ttl)
            }
            // Not cached: the next message asks again.
            Err(_) => return Answer::TempError,
        };
        self.cache.spf_txt.insert(key, answer.clone(), until);
        answer
    }

    async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
        let r = self.auth.ipv4_lookup(name, Some(&self.cache.ipv4)).await;
        answer(r, |s| s.rrset.to_vec())
    }

    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
        let r = self.auth.ipv6_lookup(name, Some(&self.cache.ipv6)).await;
        answer(r, |s| s.rrset.to_vec())
    }

    async fn mx(&self, name: &str) -> Answer<String> {
        let r = self.auth.mx_lookup(name, Some(&self.cache.mx)).await;
        answer(r, |s| {
            s.rrset
                .iter()
                .flat_map(|mx| mx.exchanges.iter().map(|e| e.to_string()))
                .collect()
        })
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        let r = self.auth.ptr_lookup(ip, Some(&self.cache.ptr)).await;
        answer(r, |s| s.rrset.iter().map(|n| n.to_string()).collect())
    }
}

/// A body that does not match its signature's `bh=` as `fail`: RFC 6376
/// section 6.1.3 makes it a PERMFAIL, RFC 8601 section 2.7.1's `fail`
/// ("signed, failed verification"), as OpenDKIM reports it; mail-auth 0.13
/// says `neutral`. Everything else is kept as mail-auth reports it.
fn body_hash_fails<'a>(d: &'a DkimOutput<'_>) -> DkimOutput<'a> {
    match d.result() {
        DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            let mut out = DkimOutput::fail(e.clone());
            if let Some(sig) = d.signature() {
                out = out.with_signature(sig);
            }
            if let Some(addr) = d.failure_report_addr() {
                out = out.with_report(addr.to_string());
            }
            out
        }
        _ => d.clone(),
    }
}

fn dkim_word(d: &DkimOutput<'_>) -> String {
    match d.result() {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
    .to_string()
}

/// DMARC's overall result (RFC 7489 section 6.6.2): mail-auth's ranking of
/// the two mechanisms, `fail` when a record applies and neither passed
/// aligned; the word the header writes.
fn dmarc_word(d: &DmarcOutput) -> &'static str {
    match d.result() {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn policy_word(p: DmarcPolicy) -> &'static str {
    match p {
        DmarcPolicy::Reject => "reject",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::None | DmarcPolicy::Unspecified => "none",
    }
}

/// The policy keys applied to the results. SPF `fail` refuses only with
/// `spf_reject` (RFC 7489 section 10.1: rejecting on SPF alone defeats
/// DMARC's DKIM path); a DMARC failure refuses only when the domain asks
/// `p=reject` and `dmarc_reject` is on, otherwise the header tells
/// (`quarantine` is for the mailbox's filters, as OpenDMARC leaves it).
pub fn decide(
    policy: &Policy,
    spf_helo: &SpfOutput,
    spf_from: &SpfOutput,
    dmarc: Option<&DmarcOutput>,
) -> Action {
    if let Some(d) = dmarc {
        if policy.dmarc_reject && dmarc_word(d) == "fail" && d.policy() == DmarcPolicy::Reject {
            return Action::Reject {
                code: 550,
                status: (5, 7, 1),
                text: format!("Rejected by DMARC policy for {}", sanitize(d.domain())),
            };
        }
    }
    if policy.spf_reject {
        for s in [spf_helo, spf_from] {
            if s.result() == SpfResult::Fail {
                // RFC 7372 section 3.2: 5.7.23, SPF validation failed.
                return Action::Reject {
                    code: 550,
                    status: (5, 7, 23),
                    text: format!("SPF validation failed for {}", sanitize(s.domain())),
                };
            }
        }
    }
    Action::Accept
}

/// Printable ASCII only, for a reply text (RFC 5321 section 4.2).
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Caches;
    use crate::keys::{self, Algorithm};
    use crate::sign::{Entry, Signer};
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::dmarc::Dmarc;
    use mail_auth::Txt;

    /// A checker whose DNS is its cache: anything not preloaded goes to a
    /// port nobody answers on (a temporary error, as a dead server).
    fn checker(policy: Policy) -> Checker {
        let cfg = mail_config::Resolver {
            name_servers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: mail_config::Secs(1),
            attempts: 1,
        };
        let resolver = netkit::resolve::DnsResolver::from_config(&cfg).unwrap();
        Checker::new(
            MessageAuthenticator(resolver.hickory().clone()),
            Arc::new(Caches::default()),
            policy,
        )
    }

    fn policy() -> Policy {
        Policy {
            authserv_id: "mx.example.net".into(),
            dmarc_reject: false,
            spf_reject: false,
        }
    }

    fn spf(c: &Caches, name: &str, record: &str) {
        c.preload_spf(name, &[record]);
    }

    fn nx(c: &Caches, name: &str) {
        c.preload_nxdomain(name);
    }

    fn a(c: &Caches, name: &str, addrs: &[[u8; 4]]) {
        let v: Vec<Ipv4Addr> = addrs.iter().map(|&o| Ipv4Addr::from(o)).collect();
        c.preload_a(name, &v);
    }

    async fn spf_result(c: &Checker, ip: [u8; 4], domain: &str) -> SpfResult {
        spf_verdict(c, ip, domain).await.result
    }

    async fn spf_verdict(c: &Checker, ip: [u8; 4], domain: &str) -> spf::Verdict {
        let sender = format!("user@{domain}");
        c.check_spf(&spf::Request::mail_from(
            IpAddr::from(ip),
            "helo.example.net",
            &sender,
            "mx.example.net",
        ))
        .await
    }

    /// RFC 7208 appendix A's zone: example.com's hosts and MX.
    fn appendix_a(c: &Caches) {
        a(c, "example.com", &[[192, 0, 2, 10], [192, 0, 2, 11]]);
        a(c, "amy.example.com", &[[192, 0, 2, 65]]);
        a(c, "bob.example.com", &[[192, 0, 2, 66]]);
        a(c, "mail-a.example.com", &[[192, 0, 2, 129]]);
        a(c, "mail-b.example.com", &[[192, 0, 2, 130]]);
        a(c, "mail-c.example.org", &[[192, 0, 2, 140]]);
        let mx = |names: &[&str]| RecordSet {
            rrset: vec![MX {
                exchanges: names.iter().map(|n| Box::<str>::from(*n)).collect(),
                preference: 10,
            }]
            .into(),
            dnssec_status: Default::default(),
        };
        c.mx.preload(
            "example.com.".into(),
            mx(&["mail-a.example.com.", "mail-b.example.com."]),
        );
        c.mx.preload("example.org.".into(), mx(&["mail-c.example.org."]));
        // example.org has no A record: an empty answer.
        c.ipv4.preload(
            "example.org.".into(),
            RecordSet {
                rrset: Vec::new().into(),
                dnssec_status: Default::default(),
            },
        );
    }

    use mail_auth::{RecordSet, MX};

    #[tokio::test]
    async fn spf_rfc7208_appendix_a() {
        let c = checker(policy());
        let cache = c.cache.clone();
        appendix_a(&cache);
        // A.1's records, each published at a name of its own; the `a` and
        // `mx` mechanisms name example.com where the RFC's use the
        // current domain.
        let cases: &[(&str, &str, [u8; 4], SpfResult)] = &[
            (
                "t1.example.com",
                "v=spf1 +all",
                [192, 0, 2, 1],
                SpfResult::Pass,
            ),
            (
                "t2.example.com",
                "v=spf1 a:example.com -all",
                [192, 0, 2, 10],
                SpfResult::Pass,
            ),
            (
                "t2.example.com",
                "v=spf1 a:example.com -all",
                [192, 0, 2, 11],
                SpfResult::Pass,
            ),
            (
                "t2.example.com",
                "v=spf1 a:example.com -all",
                [192, 0, 2, 65],
                SpfResult::Fail,
            ),
            (
                "t3.example.com",
                "v=spf1 a:example.org -all",
                [192, 0, 2, 10],
                SpfResult::Fail,
            ),
            (
                "t4.example.com",
                "v=spf1 mx:example.com -all",
                [192, 0, 2, 129],
                SpfResult::Pass,
            ),
            (
                "t4.example.com",
                "v=spf1 mx:example.com -all",
                [192, 0, 2, 130],
                SpfResult::Pass,
            ),
            (
                "t4.example.com",
                "v=spf1 mx:example.com -all",
                [192, 0, 2, 140],
                SpfResult::Fail,
            ),
            (
                "t5.example.com",
                "v=spf1 mx:example.org -all",
                [192, 0, 2, 140],
                SpfResult::Pass,
            ),
            (
                "t6.example.com",
                "v=spf1 mx:example.com mx:example.org -all",
                [192, 0, 2, 140],
                SpfResult::Pass,
            ),
            (
                "t7.example.com",
                "v=spf1 mx:example.com/30 mx:example.org/30 -all",
                [192, 0, 2, 131],
                SpfResult::Pass,
            ),
            (
                "t7.example.com",
                "v=spf1 mx:example.com/30 mx:example.org/30 -all",
                [192, 0, 2, 143],
                SpfResult::Pass,
            ),
            (
                "t7.example.com",
                "v=spf1 mx:example.com/30 mx:example.org/30 -all",
                [192, 0, 2, 144],
                SpfResult::Fail,
            ),
            (
                "t8.example.com",
                "v=spf1 ip4:192.0.2.128/28 -all",
                [192, 0, 2, 129],
                SpfResult::Pass,
            ),
            (
                "t8.example.com",
                "v=spf1 ip4:192.0.2.128/28 -all",
                [192, 0, 2, 65],
                SpfResult::Fail,
            ),
            // The other results (RFC 7208 section 2.6).
            (
                "soft.example.com",
                "v=spf1 ip4:192.0.2.1 ~all",
                [192, 0, 2, 2],
                SpfResult::SoftFail,
            ),
            (
                "neutral.example.com",
                "v=spf1 ip4:192.0.2.1 ?all",
                [192, 0, 2, 2],
                SpfResult::Neutral,
            ),
            (
                "nomatch.example.com",
                "v=spf1 ip4:192.0.2.1",
                [192, 0, 2, 2],
                SpfResult::Neutral,
            ),
            // Syntax errors are permerror (section 4.6): an empty include
            // target, two redirects (section 6), a bad IPv6 network.
            (
                "bad1.example.com",
                "v=spf1 include: -all",
                [192, 0, 2, 2],
                SpfResult::PermError,
            ),
            (
                "bad2.example.com",
                "v=spf1 redirect=a.example.com redirect=b.example.com",
                [192, 0, 2, 2],
                SpfResult::PermError,
            ),
            (
                "bad3.example.com",
                "v=spf1 ip6:zz -all",
                [192, 0, 2, 2],
                SpfResult::PermError,
            ),
        ];
        for (name, record, ip, want) in cases {
            spf(&cache, name, record);
            assert_eq!(
                spf_result(&c, *ip, name).await,
                *want,
                "{record} for {ip:?}"
            );
        }
        // No record at all: none (section 4.5).
        nx(&cache, "none.example.com");
        assert_eq!(
            spf_result(&c, [192, 0, 2, 1], "none.example.com").await,
            SpfResult::None
        );
        // The name server does not answer: temperror (section 4.4).
        assert_eq!(
            spf_result(&c, [192, 0, 2, 1], "unreachable.example.com").await,
            SpfResult::TempError
        );
        // An include that fails to resolve is temperror, one without a
        // record permerror (section 5.2's table).
        spf(
            &cache,
            "inc.example.com",
            "v=spf1 include:none.example.com -all",
        );
        assert_eq!(
            spf_result(&c, [192, 0, 2, 1], "inc.example.com").await,
            SpfResult::PermError
        );
    }

    /// An unknown mechanism is permerror (RFC 7208 sections 4.6.1, 5),
    /// wherever it is in the record (section 4.6: the whole record is
    /// parsed first); mail-auth 0.13 said neutral (it took `foo` for a
    /// modifier and `-all` for its value).
    #[tokio::test]
    async fn spf_unknown_mechanism_is_permerror() {
        let c = checker(policy());
        let cache = c.cache.clone();
        spf(&cache, "unk.example.com", "v=spf1 foo -all");
        spf(&cache, "unk2.example.com", "v=spf1 ip4:192.0.2.2 foo");
        spf(
            &cache,
            "unk3.example.com",
            "v=spf1 include:unk.example.com -all",
        );
        for d in ["unk.example.com", "unk2.example.com", "unk3.example.com"] {
            let v = spf_verdict(&c, [192, 0, 2, 2], d).await;
            assert_eq!(v.result, SpfResult::PermError, "{d}: {v:?}");
        }
        let v = spf_verdict(&c, [192, 0, 2, 2], "unk.example.com").await;
        assert!(v.problem.unwrap().contains("unknown mechanism"));
        // An unknown modifier (name=value) is ignored, as section 6 says.
        spf(&cache, "mod.example.com", "v=spf1 foo=bar -all");
        assert_eq!(
            spf_result(&c, [192, 0, 2, 2], "mod.example.com").await,
            SpfResult::Fail
        );
    }

    /// Section 4.6.4: more than two lookups that find nothing (NXDOMAIN or
    /// an empty answer) is permerror; two are fine.
    #[tokio::test]
    async fn spf_void_lookup_limit() {
        let c = checker(policy());
        let cache = c.cache.clone();
        let v1 = "v1.example.com.";
        let v2 = "v2.example.com.";
        let v3 = "v3.example.com.";
        for n in [v1, v2, v3] {
            cache.ipv4.preload(
                n.into(),
                RecordSet {
                    rrset: Vec::new().into(),
                    dnssec_status: Default::default(),
                },
            );
        }
        spf(
            &cache,
            "two.example.com",
            "v=spf1 a:v1.example.com a:v2.example.com ip4:192.0.2.2 -all",
        );
        spf(
            &cache,
            "three.example.com",
            "v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com ip4:192.0.2.2 -all",
        );
        let v = spf_verdict(&c, [192, 0, 2, 2], "two.example.com").await;
        assert_eq!((v.result, v.void_lookups), (SpfResult::Pass, 2), "{v:?}");
        let v = spf_verdict(&c, [192, 0, 2, 2], "three.example.com").await;
        assert_eq!(v.result, SpfResult::PermError, "{v:?}");
        assert!(v.problem.unwrap().contains("void"));
    }

    /// Section 4.6.4: an `mx` with more than 10 names is permerror.
    #[tokio::test]
    async fn spf_mx_name_limit() {
        let c = checker(policy());
        let cache = c.cache.clone();
        let names: Vec<Box<str>> = (0..11)
            .map(|i| format!("mx{i}.example.com.").into())
            .collect();
        for n in &names {
            a(&cache, n, &[[192, 0, 2, 99]]);
        }
        cache.mx.preload(
            "many.example.com.".into(),
            RecordSet {
                rrset: vec![MX {
                    exchanges: names.clone().into_boxed_slice(),
                    preference: 10,
                }]
                .into(),
                dnssec_status: Default::default(),
            },
        );
        spf(&cache, "many.example.com", "v=spf1 mx -all");
        assert_eq!(
            spf_result(&c, [192, 0, 2, 99], "many.example.com").await,
            SpfResult::PermError
        );
    }

    #[tokio::test]
    async fn spf_ten_lookup_limit() {
        let c = checker(policy());
        let cache = c.cache.clone();
        // A chain of includes: l0 -> l1 -> ... -> lN, the last passes.
        // Section 4.6.4: more than 10 DNS-querying terms is permerror.
        let chain = |prefix: &str, n: usize| {
            for i in 0..n {
                spf(
                    &cache,
                    &format!("{prefix}{i}.example.com"),
                    &format!("v=spf1 include:{prefix}{}.example.com -all", i + 1),
                );
            }
            spf(&cache, &format!("{prefix}{n}.example.com"), "v=spf1 +all");
        };
        chain("ok", 10);
        chain("over", 11);
        assert_eq!(
            spf_result(&c, [192, 0, 2, 1], "ok0.example.com").await,
            SpfResult::Pass
        );
        assert_eq!(
            spf_result(&c, [192, 0, 2, 1], "over0.example.com").await,
            SpfResult::PermError
        );
    }

    fn message(from: &str, body: &str) -> Vec<u8> {
        format!(
            "From: Joe <joe@{from}>\r\nTo: a@example.net\r\nSubject: test\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@{from}>\r\n\r\n{body}"
        )
        .into_bytes()
    }

    /// A signer for `domain` with a new key of `alg`, its record in the cache.
    fn signer(c: &Caches, domain: &str, selector: &str, alg: Algorithm) -> Signer {
        let g = keys::generate(alg).unwrap();
        c.preload_txt(
            &keys::record_owner(selector, domain),
            Txt::from(DomainKey::parse(g.record.as_bytes())),
        );
        Signer::new(
            vec![Entry {
                domain: domain.into(),
                selector: selector.into(),
                key: keys::load_pem(g.private_pem.as_bytes()).unwrap(),
            }],
            mail_config::Dkim::default().sign_headers,
        )
    }

    fn signed(s: &Signer, m: &[u8]) -> Vec<u8> {
        let mut out = s.sign(m).unwrap().into_bytes();
        assert!(out.starts_with(b"DKIM-Signature: v=1; a="), "{out:?}");
        out.extend_from_slice(m);
        out
    }

    #[tokio::test]
    async fn dkim_sign_verify_and_tamper() {
        let c = checker(policy());
        let cache = c.cache.clone();
        for (alg, sel) in [(Algorithm::Ed25519, "ed"), (Algorithm::Rsa, "rsa")] {
            let s = signer(&cache, "example.com", sel, alg);
            let m = signed(&s, &message("example.com", "Hello.\r\n"));
            let text = String::from_utf8_lossy(&m).to_string();
            assert!(text.contains("c=relaxed/relaxed"), "{text}");
            let h = text
                .split("h=")
                .nth(1)
                .and_then(|h| h.split(';').next())
                .unwrap_or_default();
            for name in ["From", "To", "Subject", "Date", "Message-ID"] {
                assert!(h.contains(name), "{name} not signed: {text}");
            }
            let parsed = AuthenticatedMessage::parse(&m).unwrap();
            let out = c.auth.verify_dkim(cache.params(&parsed)).await;
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].result(), &DkimResult::Pass, "{alg:?}");
            // One byte of the body changed.
            let mut bad = m.clone();
            let at = bad.len() - 3;
            bad[at] ^= 1;
            let parsed = AuthenticatedMessage::parse(&bad).unwrap();
            let out = c.auth.verify_dkim(cache.params(&parsed)).await;
            // mail-auth reports a body hash mismatch as neutral, which
            // check() turns into fail (body_hash_fails); never pass.
            assert!(
                matches!(
                    out[0].result(),
                    DkimResult::Fail(_) | DkimResult::Neutral(_)
                ),
                "{alg:?}: {:?}",
                out[0].result()
            );
        }
        // Mail from a domain without a key is not signed.
        let s = signer(&cache, "example.com", "x", Algorithm::Ed25519);
        assert_eq!(s.sign(&message("example.org", "x\r\n")).unwrap(), "");
    }

    #[tokio::test]
    async fn changed_body_is_dkim_fail_and_not_dmarc_pass() {
        let c = checker(policy());
        let cache = c.cache.clone();
        cache.preload_txt(
            "_dmarc.example.com",
            Txt::from(Dmarc::parse(b"v=DMARC1; p=reject")),
        );
        for n in [
            "_dmarc.com",
            "_dmarc.other.example",
            "_dmarc.example",
            "helo.example.net",
        ] {
            nx(&cache, n);
        }
        spf(&cache, "other.example", "v=spf1 ip4:192.0.2.1 -all");
        let env = Envelope {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "helo.example.net",
            mail_from: "bounce@other.example",
        };
        for (alg, sel) in [(Algorithm::Ed25519, "ed"), (Algorithm::Rsa, "rsa")] {
            let s = signer(&cache, "example.com", sel, alg);
            let m = signed(&s, &message("example.com", "Hello.\r\n"));
            let o = c.check(&env, &m).await;
            assert_eq!(o.summary.dkim, ["pass"], "{}", o.header);
            assert_eq!(o.summary.dmarc, "pass", "{}", o.header);
            let bad = [&m[..m.len() - 3], b"!\r\n"].concat();
            let o = c.check(&env, &bad).await;
            // RFC 6376 section 6.1.3: PERMFAIL; RFC 8601 section 2.7.1: fail.
            assert_eq!(o.summary.dkim, ["fail"], "{alg:?}: {}", o.header);
            assert!(
                o.header
                    .contains("dkim=fail (body hash did not verify) header.d=example.com"),
                "{}",
                o.header
            );
            assert!(!o.header.contains("dkim=neutral"), "{}", o.header);
            // SPF passes but does not align: nothing saves DMARC.
            assert_eq!(o.summary.dmarc, "fail", "{}", o.header);
            assert_eq!(o.action, Action::Accept);
        }
    }

    /// DMARC for `From: joe@<from>`, MAIL FROM `bounce@<mail_from>`, from a
    /// client SPF allows for `<mail_from>`, signed by `<d>` when given.
    async fn dmarc_case(
        c: &Checker,
        record: &str,
        from: &str,
        mail_from: &str,
        d: Option<&str>,
    ) -> Outcome {
        let cache = c.cache.clone();
        cache.preload_txt(
            "_dmarc.example.com",
            Txt::from(Dmarc::parse(record.as_bytes())),
        );
        // The DMARC tree walk (RFC 7489bis) asks up to the TLD.
        for n in [
            "_dmarc.mail.example.com",
            "_dmarc.sub.example.com",
            "_dmarc.other.example",
            "_dmarc.com",
            "_dmarc.example",
            "helo.example.net",
        ] {
            nx(&cache, n);
        }
        spf(&cache, "example.com", "v=spf1 ip4:192.0.2.1 -all");
        spf(&cache, "mail.example.com", "v=spf1 ip4:192.0.2.1 -all");
        spf(&cache, "other.example", "v=spf1 ip4:192.0.2.1 -all");
        let mut m = message(from, "Hi.\r\n");
        if let Some(d) = d {
            let s = signer(&cache, d, "sel", Algorithm::Ed25519);
            // Signed for d= whatever the From: domain is.
            let sig = s.sign_for(d, &m).unwrap();
            m = [sig.into_bytes(), m].concat();
        }
        let mf = format!("bounce@{mail_from}");
        let env = Envelope {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "helo.example.net",
            mail_from: &mf,
        };
        c.check(&env, &m).await
    }

    #[tokio::test]
    async fn dmarc_alignment() {
        let c = checker(policy());
        // SPF relaxed: MAIL FROM in a subdomain of From's domain aligns.
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; aspf=r",
            "example.com",
            "mail.example.com",
            None,
        )
        .await;
        assert_eq!(o.summary.dmarc, "pass", "{}", o.header);
        // SPF strict: it does not.
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; aspf=s",
            "example.com",
            "mail.example.com",
            None,
        )
        .await;
        assert_eq!(o.summary.dmarc, "fail", "{}", o.header);
        assert!(o.header.contains("dmarc=fail"), "{}", o.header);
        assert!(o.header.contains("policy.dmarc=reject"), "{}", o.header);
        // Tagged, not refused, while dmarc_reject is off.
        assert_eq!(o.action, Action::Accept);
        // An unrelated MAIL FROM domain never aligns; DKIM by a subdomain
        // does under relaxed alignment, not under strict.
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; adkim=r",
            "example.com",
            "other.example",
            Some("sub.example.com"),
        )
        .await;
        assert_eq!(o.summary.dkim, ["pass"], "{}", o.header);
        assert_eq!(o.summary.dmarc, "pass", "{}", o.header);
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; adkim=s",
            "example.com",
            "other.example",
            Some("sub.example.com"),
        )
        .await;
        assert_eq!(o.summary.dmarc, "fail", "{}", o.header);
        // DKIM by the From: domain itself passes strict alignment.
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; adkim=s",
            "example.com",
            "other.example",
            Some("example.com"),
        )
        .await;
        assert_eq!(o.summary.dmarc, "pass", "{}", o.header);
        assert!(
            o.header
                .starts_with("Authentication-Results: mx.example.net;"),
            "{}",
            o.header
        );
    }

    #[tokio::test]
    async fn dmarc_reject_policy_key() {
        let mut p = policy();
        p.dmarc_reject = true;
        let c = checker(p);
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=reject; aspf=s",
            "example.com",
            "mail.example.com",
            None,
        )
        .await;
        match o.action {
            Action::Reject { code, status, .. } => assert_eq!((code, status), (550, (5, 7, 1))),
            a => panic!("{a:?}"),
        }
        // p=quarantine is tagged even so.
        let o = dmarc_case(
            &c,
            "v=DMARC1; p=quarantine; aspf=s",
            "example.com",
            "mail.example.com",
            None,
        )
        .await;
        assert_eq!(o.action, Action::Accept);
        assert!(o.header.contains("policy.dmarc=quarantine"), "{}", o.header);
    }

    #[tokio::test]
    async fn spf_fail_without_dkim_fails_dmarc() {
        let mut p = policy();
        p.dmarc_reject = true;
        let c = checker(p);
        let cache = c.cache.clone();
        spf(&cache, "forged.org", "v=spf1 ip4:192.0.2.99 -all");
        nx(&cache, "helo.example.net");
        nx(&cache, "_dmarc.org");
        cache.preload_txt(
            "_dmarc.forged.org",
            Txt::from(Dmarc::parse(b"v=DMARC1; p=reject")),
        );
        let m = b"From: ceo@forged.org\r\nSubject: pay\r\n\r\nnow\r\n";
        let env = Envelope {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "helo.example.net",
            mail_from: "ceo@forged.org",
        };
        let o = c.check(&env, m).await;
        assert!(o.header.contains("dmarc=fail"), "{}", o.header);
        assert_eq!(o.summary.dmarc, "fail", "{:?}", o.summary);
        assert!(
            matches!(o.action, Action::Reject { code: 550, .. }),
            "{:?}",
            o.action
        );
    }

    #[tokio::test]
    async fn spf_reject_policy_key_and_forged_results() {
        let mut p = policy();
        p.spf_reject = true;
        let c = checker(p);
        let cache = c.cache.clone();
        spf(&cache, "example.org", "v=spf1 ip4:192.0.2.99 -all");
        nx(&cache, "helo.example.net");
        nx(&cache, "_dmarc.example.org");
        nx(&cache, "_dmarc.org");
        let m = b"Authentication-Results: mx.example.net; dkim=pass\r\nFrom: a@example.org\r\n\r\nx\r\n";
        let env = Envelope {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "helo.example.net",
            mail_from: "a@example.org",
        };
        let o = c.check(&env, m).await;
        assert_eq!(o.summary.spf, SpfResult::Fail);
        match &o.action {
            Action::Reject { code, status, .. } => assert_eq!((*code, *status), (550, (5, 7, 23))),
            a => panic!("{a:?}"),
        }
        assert!(o.header.contains("spf=fail"), "{}", o.header);
        assert_eq!(
            o.stripped.as_deref(),
            Some(&b"From: a@example.org\r\n\r\nx\r\n"[..])
        );
    }
}
