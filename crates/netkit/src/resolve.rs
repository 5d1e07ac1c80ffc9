//! DNS lookups for outbound delivery: MX, A and AAAA through
//! hickory-resolver (with its cache), turned into the data
//! `mailstore::nexthop` decides from.
//!
//! The name servers are those of `/etc/resolv.conf`, or the configured
//! `[resolver] name_servers` (the lab's `dnsd`). Names are asked fully
//! qualified: no search domains, as Postfix's SMTP client asks.
//!
//! ```no_run
//! # async fn f() -> Result<(), netkit::resolve::SetupError> {
//! use mailstore::nexthop::{SelectOptions, Target};
//! use netkit::resolve::DnsResolver;
//!
//! let resolver = DnsResolver::with_name_servers(
//!     &["127.0.0.1:5300".parse().unwrap()],
//!     std::time::Duration::from_secs(5),
//! )?;
//! let target = Target::for_domain("csuvnetwork.com").unwrap();
//! let hops = resolver.route(&target, &SelectOptions::default(), netkit::resolve::random_seed()).await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{ResolverBuilder, TokioResolver};

use crate::tls::rustls;
use mailstore::nexthop::{
    self, AddrLookup, Hop, MxLookup, MxRecord, RouteError, SelectOptions, Target,
};

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `/etc/resolv.conf` could not be read or parsed.
    #[error("cannot read the system resolver configuration: {0}")]
    System(#[source] NetError),
    /// The resolver could not be built from its configuration.
    #[error("cannot set up the resolver: {0}")]
    Build(#[source] NetError),
    /// rustls refused the (unused) TLS client configuration.
    #[error("cannot set up the resolver's TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// The outcome class of one query.
enum Outcome<T> {
    Found(T),
    NoData,
    NxDomain,
    TempFail(String),
}

/// Sorts a resolver error into what routing distinguishes: NXDOMAIN
/// (permanent), NODATA (the name exists), anything else (SERVFAIL,
/// REFUSED, timeouts, I/O) temporary.
fn classify<T>(e: &NetError) -> Outcome<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Outcome::NxDomain,
            ResponseCode::NoError => Outcome::NoData,
            other => Outcome::TempFail(format!("server answered {other}")),
        },
        _ => Outcome::TempFail(e.to_string()),
    }
}

/// A cheap random seed for [`nexthop::select`]'s order among equals.
pub fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// A resolver for outbound delivery; clones share the cache.
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver").finish_non_exhaustive()
    }
}

/// A TLS client configuration trusting no one, for hickory's resolver
/// builder, which wants one when TLS is compiled in; nothing uses it.
fn unused_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    // ring, as for our TLS (see crate::tls).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// [`ResolverConfig`] for these name servers: UDP, then TCP for
/// truncated answers; no search domains.
fn servers_config(servers: &[SocketAddr]) -> ResolverConfig {
    let name_servers = servers
        .iter()
        .map(|a| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = a.port();
                    c
                })
                .collect();
            // Trust NXDOMAIN (no asking the next server), as 0.25's
            // NameServerConfig::new did.
            NameServerConfig::new(a.ip(), true, connections)
        })
        .collect();
    ResolverConfig::from_name_servers(name_servers)
}

fn options(mut opts: ResolverOpts, timeout: Duration, attempts: usize) -> ResolverOpts {
    opts.timeout = timeout;
    opts.attempts = attempts;
    // Postfix's smtp_host_lookup = dns: /etc/hosts is not a mail route.
    opts.use_hosts_file = ResolveHosts::Never;
    // Answers kept, whatever hickory's default (32 in 0.25, 8192 in 0.26).
    opts.cache_size = 4096;
    opts.ndots = 0;
    opts
}

impl DnsResolver {
    /// From `[resolver]`: its name servers, or `/etc/resolv.conf`'s when
    /// none are given, with its timeout and attempts.
    pub fn from_config(cfg: &mail_config::Resolver) -> Result<Self, SetupError> {
        let (timeout, attempts) = (cfg.timeout.duration(), cfg.attempts);
        if cfg.name_servers.is_empty() {
            Self::system_with(timeout, attempts)
        } else {
            Self::servers_with(&cfg.name_servers, timeout, attempts)
        }
    }

    /// The name servers and options of `/etc/resolv.conf`, with `timeout`
    /// per query.
    pub fn system(timeout: Duration) -> Result<Self, SetupError> {
        Self::system_with(timeout, 2)
    }

    fn system_with(timeout: Duration, attempts: usize) -> Result<Self, SetupError> {
        let mut b = TokioResolver::builder_tokio().map_err(SetupError::System)?;
        let opts = options(b.options_mut().clone(), timeout, attempts);
        *b.options_mut() = opts;
        Self::build(b)
    }

    fn build(b: ResolverBuilder<TokioRuntimeProvider>) -> Result<Self, SetupError> {
        // Name servers are asked over UDP and TCP only, but with TLS
        // compiled in (mail-auth's features turn it on in the daemons)
        // hickory otherwise builds a client configuration from the
        // system's CA certificates, reading them at every setup and
        // failing where there are none. An empty one is never used.
        let b = b.with_tls_config(unused_tls_config().map_err(SetupError::Tls)?);
        b.build()
            .map(|inner| DnsResolver { inner })
            .map_err(SetupError::Build)
    }

    /// The hickory resolver underneath, for other lookups on the same
    /// settings (smtpd's inbound checks): clones share its cache and
    /// connections.
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    /// These name servers, asked over UDP and over TCP when an answer is
    /// truncated, with `timeout` per query and two attempts. Nothing is
    /// read from the system, so this fails only if the TLS set-up the
    /// resolver builds fails (see `build`).
    pub fn with_name_servers(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        Self::servers_with(servers, timeout, 2)
    }

    fn servers_with(
        servers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
    ) -> Result<Self, SetupError> {
        let mut b = TokioResolver::builder_with_config(
            servers_config(servers),
            TokioRuntimeProvider::default(),
        );
        *b.options_mut() = options(ResolverOpts::default(), timeout, attempts);
        Self::build(b)
    }

    fn fqdn(name: &str) -> Result<Name, String> {
        let n = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        Name::from_ascii(&n).map_err(|e| format!("{name:?}: {e}"))
    }

    /// The MX records of `domain` (a CNAME at the domain followed by the
    /// resolver), or why there are none.
    pub async fn mx_hosts(&self, domain: &str) -> MxLookup {
        let name = match Self::fqdn(domain) {
            Ok(n) => n,
            // Not a name DNS could hold: it cannot exist.
            Err(_) => return MxLookup::NxDomain,
        };
        match self.inner.mx_lookup(name).await {
            Ok(l) => {
                // The answer section also holds the CNAMEs followed.
                let records: Vec<MxRecord> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: mx.exchange.to_ascii(),
                        }),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    MxLookup::NoRecords
                } else {
                    MxLookup::Records(records)
                }
            }
            Err(e) => match classify::<()>(&e) {
                Outcome::NoData | Outcome::Found(()) => MxLookup::NoRecords,
                Outcome::NxDomain => MxLookup::NxDomain,
                Outcome::TempFail(r) => MxLookup::TempFail(r),
            },
        }
    }

    async fn v4(&self, name: Name) -> Outcome<Vec<IpAddr>> {
        match self.inner.ipv4_lookup(name).await {
            Ok(l) => Outcome::Found(
                l.answers()
                    .iter()
                    .filter_map(|r| match r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => classify(&e),
        }
    }

    async fn v6(&self, name: Name) -> Outcome<Vec<IpAddr>> {
        match self.inner.ipv6_lookup(name).await {
            Ok(l) => Outcome::Found(
                l.answers()
                    .iter()
                    .filter_map(|r| match r.data {
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => classify(&e),
        }
    }

    /// The A and AAAA records of `host`, asked at once, IPv6 first in the
    /// list (the order [`nexthop::select`] applies its preference to).
    pub async fn addresses(&self, host: &str) -> AddrLookup {
        let name = match Self::fqdn(host) {
            Ok(n) => n,
            Err(_) => return AddrLookup::NxDomain,
        };
        let (v6, v4) = tokio::join!(self.v6(name.clone()), self.v4(name));
        let mut found = Vec::new();
        let mut temp = None;
        let mut nx = 0;
        for o in [v6, v4] {
            match o {
                Outcome::Found(a) => found.extend(a),
                Outcome::NoData => {}
                Outcome::NxDomain => nx += 1,
                Outcome::TempFail(r) => temp = Some(r),
            }
        }
        if !found.is_empty() {
            // One family answering is enough to deliver.
            AddrLookup::Found(found)
        } else if let Some(r) = temp {
            AddrLookup::TempFail(r)
        } else if nx == 2 {
            AddrLookup::NxDomain
        } else {
            AddrLookup::NoRecords
        }
    }

    /// The answers [`nexthop::select`] needs for `target`: its MX lookup
    /// (when it takes one) and the addresses of every host to try.
    pub async fn lookups(
        &self,
        target: &Target,
    ) -> (Option<MxLookup>, BTreeMap<String, AddrLookup>) {
        let mx = if target.mx_lookup && target.literal.is_none() {
            Some(self.mx_hosts(&target.name).await)
        } else {
            None
        };
        let hosts = nexthop::hosts_to_resolve(target, mx.as_ref());
        // At most a handful of MX hosts: ask for all of them together.
        let answers = futures_join_all(hosts.iter().map(|h| self.addresses(h))).await;
        (mx, hosts.into_iter().zip(answers).collect())
    }

    /// Looks up `target` and orders its hosts (RFC 5321 section 5.1); the
    /// error says whether to bounce (5.x.y) or retry (4.x.y).
    pub async fn route(
        &self,
        target: &Target,
        opts: &SelectOptions,
        seed: u64,
    ) -> Result<Vec<Hop>, RouteError> {
        let (mx, addrs) = self.lookups(target).await;
        nexthop::select(target, mx.as_ref(), &addrs, opts, seed)
    }
}

/// Runs the futures concurrently and returns their outputs in order
/// (`futures::future::join_all` without the dependency).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, f) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::xfer::Protocol;

    #[tokio::test]
    async fn configured_servers_over_udp_and_tcp() {
        let cfg = mail_config::Resolver {
            name_servers: vec!["127.0.0.1:5300".parse().unwrap()],
            timeout: mail_config::Secs(3),
            attempts: 1,
        };
        let r = DnsResolver::from_config(&cfg).unwrap();
        let config = servers_config(&cfg.name_servers);
        let servers = config.name_servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].ip, cfg.name_servers[0].ip());
        assert!(servers[0].trust_negative_responses);
        let conns: Vec<_> = servers[0]
            .connections
            .iter()
            .map(|c| (c.port, c.protocol.to_protocol()))
            .collect();
        assert_eq!(conns, [(5300, Protocol::Udp), (5300, Protocol::Tcp)]);
        assert!(config.search().is_empty() && config.domain().is_none());
        assert_eq!(r.inner.options().timeout, Duration::from_secs(3));
        assert_eq!(r.inner.options().attempts, 1);
        assert_eq!(r.inner.options().use_hosts_file, ResolveHosts::Never);
        assert_eq!(r.inner.options().cache_size, 4096);
        assert_eq!(r.inner.options().ndots, 0);
    }

    #[tokio::test]
    async fn empty_list_reads_resolv_conf() {
        if !std::path::Path::new("/etc/resolv.conf").exists() {
            return;
        }
        let r = DnsResolver::from_config(&mail_config::Resolver::default()).unwrap();
        assert_eq!(r.inner.options().timeout, Duration::from_secs(5));
    }

    /// What mailstore::nexthop tells apart: NXDOMAIN bounces, NODATA
    /// falls back to the address records, the rest is retried.
    #[test]
    fn errors_sort_into_nxdomain_nodata_and_temporary() {
        use hickory_resolver::net::NoRecords;
        use hickory_resolver::proto::op::Query;
        let none = |code| {
            NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
                Query::default(),
                code,
            )))
        };
        assert!(matches!(
            classify::<()>(&none(ResponseCode::NXDomain)),
            Outcome::NxDomain
        ));
        assert!(matches!(
            classify::<()>(&none(ResponseCode::NoError)),
            Outcome::NoData
        ));
        for e in [
            none(ResponseCode::ServFail),
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)),
            NetError::Timeout,
        ] {
            assert!(matches!(classify::<()>(&e), Outcome::TempFail(_)), "{e}");
        }
    }

    #[test]
    fn names_are_asked_fully_qualified() {
        assert_eq!(
            DnsResolver::fqdn("a.example").unwrap().to_ascii(),
            "a.example."
        );
        assert_eq!(
            DnsResolver::fqdn("a.example.").unwrap().to_ascii(),
            "a.example."
        );
        assert!(DnsResolver::fqdn("a..example").is_err());
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let out = futures_join_all((0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            i
        }))
        .await;
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }
}
