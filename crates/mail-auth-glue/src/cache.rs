//! A DNS cache for mail-auth's lookups and our SPF evaluator's, shared by
//! all connections: parsed TXT records (DKIM keys, DMARC), SPF's TXT
//! records as text (negative answers too), addresses, MX and PTR, kept
//! until their TTL runs out, bounded in size. Tests fill it by hand to
//! stand in for DNS.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mail_auth::{Parameters, RecordSet, ResolverCache, Txt, MX};

/// Entries per record type before the cache is emptied and refilled
/// (simple, and a flood of distinct names cannot grow it without bound).
pub const MAX_ENTRIES: usize = 10_000;

/// One record type's entries with their expiry.
pub struct Map<K, V> {
    entries: Mutex<HashMap<K, (V, Option<Instant>)>>,
}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Map {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Map<K, V> {
    /// Adds an entry that never expires (tests, benchmarks).
    pub fn preload(&self, key: K, value: V) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (value, None));
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Map<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (v, until) = map.get(name)?;
        match until {
            Some(t) if *t <= Instant::now() => None,
            _ => Some(v.clone()),
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, t)| t.is_none_or(|t| t > now));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, Some(valid_until)));
    }
}

/// The caches of every record type mail-auth asks for.
#[derive(Default)]
pub struct Caches {
    /// Parsed TXT records (SPF, DKIM keys, DMARC) by fully qualified name.
    pub txt: Map<Box<str>, Txt>,
    /// MX records.
    pub mx: Map<Box<str>, RecordSet<MX>>,
    /// A records.
    pub ipv4: Map<Box<str>, RecordSet<Ipv4Addr>>,
    /// AAAA records.
    pub ipv6: Map<Box<str>, RecordSet<Ipv6Addr>>,
    /// PTR records.
    pub ptr: Map<IpAddr, RecordSet<Box<str>>>,
    /// TXT records as text, for our SPF evaluator ([`crate::spf`]), which
    /// needs every record of a name (section 4.5: two SPF records are
    /// `permerror`) and the negative answers (void lookups, section 4.6.4).
    pub spf_txt: Map<Box<str>, crate::spf::Answer<String>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// mail-auth's parameters with every cache of `caches`.
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    Map<Box<str>, Txt>,
    Map<Box<str>, RecordSet<MX>>,
    Map<Box<str>, RecordSet<Ipv4Addr>>,
    Map<Box<str>, RecordSet<Ipv6Addr>>,
    Map<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    /// `params` with these caches.
    pub fn params<P>(&self, params: P) -> Cached<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// Puts a TXT record into the cache as if DNS had answered with it, for
    /// good: `parse` is the record type's parser (SPF, DKIM key, DMARC).
    pub fn preload_txt(&self, name: &str, record: Txt) {
        self.txt.preload(fqdn(name), record);
    }

    /// Puts a TXT record given as text into the cache for good, parsed as
    /// what its version tag says: `v=spf1` (SPF), `v=DMARC1` (DMARC),
    /// otherwise a DKIM key record.
    pub fn preload_record(&self, name: &str, text: &str) {
        use mail_auth::common::parse::TxtRecordParser;
        let b = text.as_bytes();
        let record = if crate::spf::record::is_spf(text) {
            self.preload_spf(name, &[text]);
            return;
        } else if text.starts_with("v=DMARC1") {
            Txt::from(mail_auth::dmarc::Dmarc::parse(b))
        } else {
            Txt::from(mail_auth::common::verify::DomainKey::parse(b))
        };
        self.preload_txt(name, record);
    }

    /// Puts the TXT records of `name` into the SPF evaluator's cache for
    /// good (one string per record).
    pub fn preload_spf(&self, name: &str, records: &[&str]) {
        self.spf_txt.preload(
            fqdn(name),
            crate::spf::Answer::Records(records.iter().map(|r| r.to_string()).collect()),
        );
    }

    /// Caches "no such name" (NXDOMAIN) for a TXT lookup of `name`, by
    /// mail-auth (DKIM, DMARC) and by the SPF evaluator.
    pub fn preload_nxdomain(&self, name: &str) {
        use mail_auth::hickory_resolver::proto::op::ResponseCode;
        self.spf_txt
            .preload(fqdn(name), crate::spf::Answer::NxDomain);
        self.preload_txt(
            name,
            Txt::Error(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(
                ResponseCode::NXDomain,
            ))),
        );
    }

    /// Puts A records into the cache for good.
    pub fn preload_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.ipv4.preload(
            fqdn(name),
            RecordSet {
                rrset: addrs.to_vec().into(),
                dnssec_status: Default::default(),
            },
        );
    }
}

/// `name.` lowercased, the key form mail-auth looks up.
pub fn fqdn(name: &str) -> Box<str> {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n.into()
}
