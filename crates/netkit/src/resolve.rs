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
//! );
//! let target = Target::for_domain("csuvnetwork.com").unwrap();
//! let hops = resolver.route(&target, &SelectOptions::default(), netkit::resolve::random_seed()).await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use mailstore::nexthop::{
    self, AddrLookup, Hop, MxLookup, MxRecord, RouteError, SelectOptions, Target,
};

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `/etc/resolv.conf` could not be read or parsed.
    #[error("cannot read the system resolver configuration: {0}")]
    System(#[source] ResolveError),
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
fn classify<T>(e: &ResolveError) -> Outcome<T> {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
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

fn options(mut opts: ResolverOpts, timeout: Duration, attempts: usize) -> ResolverOpts {
    opts.timeout = timeout;
    opts.attempts = attempts;
    // Postfix's smtp_host_lookup = dns: /etc/hosts is not a mail route.
    opts.use_hosts_file = ResolveHosts::Never;
    // hickory's default of 32 entries is small for a queue of many domains.
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
            Ok(Self::servers_with(&cfg.name_servers, timeout, attempts))
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
        Ok(DnsResolver { inner: b.build() })
    }

    /// These name servers, asked over UDP and over TCP when an answer is
    /// truncated, with `timeout` per query and two attempts.
    pub fn with_name_servers(servers: &[SocketAddr], timeout: Duration) -> Self {
        Self::servers_with(servers, timeout, 2)
    }

    fn servers_with(servers: &[SocketAddr], timeout: Duration, attempts: usize) -> Self {
        let mut group = NameServerConfigGroup::new();
        for &addr in servers {
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                group.push(NameServerConfig::new(addr, protocol));
            }
        }
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut b = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *b.options_mut() = options(ResolverOpts::default(), timeout, attempts);
        DnsResolver { inner: b.build() }
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
                let records: Vec<MxRecord> = l
                    .iter()
                    .map(|mx| MxRecord {
                        preference: mx.preference(),
                        exchange: mx.exchange().to_ascii(),
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
            Ok(l) => Outcome::Found(l.iter().map(|a| IpAddr::V4(a.0)).collect()),
            Err(e) => classify(&e),
        }
    }

    async fn v6(&self, name: Name) -> Outcome<Vec<IpAddr>> {
        match self.inner.ipv6_lookup(name).await {
            Ok(l) => Outcome::Found(l.iter().map(|a| IpAddr::V6(a.0)).collect()),
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

    #[tokio::test]
    async fn configured_servers_over_udp_and_tcp() {
        let cfg = mail_config::Resolver {
            name_servers: vec!["127.0.0.1:5300".parse().unwrap()],
            timeout: mail_config::Secs(3),
            attempts: 1,
        };
        let r = DnsResolver::from_config(&cfg).unwrap();
        let servers = r.inner.config().name_servers();
        assert_eq!(servers.len(), 2);
        assert!(servers.iter().all(|s| s.socket_addr == cfg.name_servers[0]));
        assert_eq!(r.inner.options().timeout, Duration::from_secs(3));
        assert_eq!(r.inner.options().attempts, 1);
        assert_eq!(r.inner.options().use_hosts_file, ResolveHosts::Never);
    }

    #[tokio::test]
    async fn empty_list_reads_resolv_conf() {
        if !std::path::Path::new("/etc/resolv.conf").exists() {
            return;
        }
        let r = DnsResolver::from_config(&mail_config::Resolver::default()).unwrap();
        assert_eq!(r.inner.options().timeout, Duration::from_secs(5));
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
