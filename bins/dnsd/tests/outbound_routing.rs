//! `netkit::resolve` against our own `dnsd`: MX records of several
//! preferences, a null MX, an MX pointing at a CNAME, a CNAME at the
//! domain, a domain with only addresses, and the failures, each through
//! the resolver and `mailstore::nexthop` as outbound delivery will call
//! them.

use std::net::IpAddr;
use std::time::Duration;

use mail_config::{AddressPreference, Config};
use mailstore::nexthop::{AddrLookup, MxLookup, RouteError, SelectOptions, Target};
use netkit::resolve::DnsResolver;
use netkit::Service;

const ZONE: &str = r#"$TTL 300
$ORIGIN route.test.
@        IN SOA  ns root 1 1H 1H 1W 300
@        IN NS   ns
ns       IN A    127.0.0.1
; several preferences, two of them equal
multi    IN MX   20 mx2
multi    IN MX   10 mx1a
multi    IN MX   10 mx1b
multi    IN MX   30 mx3
mx1a     IN A    192.0.2.11
mx1b     IN A    192.0.2.12
mx2      IN A    192.0.2.2
mx2      IN AAAA 2001:db8::2
mx3      IN AAAA 2001:db8::3
; RFC 7505
null     IN MX   0 .
; an MX pointing at an alias (RFC 2181 section 10.3 forbids it; it
; happens): the alias lives in another zone, as our zone checker refuses
; one inside the zone
alias    IN MX   10 mx.alias.test.
real     IN A    192.0.2.50
; a CNAME at the domain
cnamed   IN CNAME multi
; no MX: the implicit MX
plain    IN A    192.0.2.60
plain    IN AAAA 2001:db8::60
; neither MX nor address
txtonly  IN TXT  "no mail here"
; an MX host without address beside a good one
half     IN MX   10 nowhere
half     IN MX   20 mx2
"#;

const ALIAS_ZONE: &str = r#"$TTL 300
$ORIGIN alias.test.
@        IN SOA  ns.route.test. root.route.test. 1 1H 1H 1W 300
@        IN NS   ns.route.test.
mx       IN CNAME real.route.test.
"#;

struct Lab {
    dns: dnsd::Running,
    resolver: DnsResolver,
    _dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("route.test.zone"), ZONE).unwrap();
    std::fs::write(dir.path().join("alias.test.zone"), ALIAS_ZONE).unwrap();
    let cfg = Config::from_toml_str(
        "[dnsd]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n\
         zones = [{ origin = \"route.test\", file = \"route.test.zone\" },\n\
         { origin = \"alias.test\", file = \"alias.test.zone\" }]\n",
        dir.path(),
    )
    .unwrap();
    let dns = dnsd::start(cfg).await.unwrap();
    let addr = dns.local_addrs()[0];
    let resolver = DnsResolver::with_name_servers(&[addr], Duration::from_secs(2)).unwrap();
    Lab {
        dns,
        resolver,
        _dir: dir,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn target(d: &str) -> Target {
    Target::for_domain(d).unwrap()
}

#[tokio::test]
async fn mx_preferences_and_random_equals() {
    let lab = lab().await;
    let r = &lab.resolver;
    let MxLookup::Records(mut recs) = r.mx_hosts("multi.route.test").await else {
        panic!()
    };
    recs.sort_by_key(|m| m.preference);
    assert_eq!(recs.len(), 4);
    let opts = SelectOptions {
        preference: AddressPreference::Ipv6,
        ..Default::default()
    };
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let hops = r
            .route(&target("multi.route.test"), &opts, seed)
            .await
            .unwrap();
        let names: Vec<&str> = hops.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names.len(), 4);
        assert!(names[..2].contains(&"mx1a.route.test") && names[..2].contains(&"mx1b.route.test"));
        assert_eq!(names[2..], ["mx2.route.test", "mx3.route.test"]);
        assert_eq!(hops[2].addresses, vec![ip("2001:db8::2"), ip("192.0.2.2")]);
        assert_eq!(hops[3].addresses, vec![ip("2001:db8::3")]);
        assert!(hops.iter().all(|h| h.port == 25));
        firsts.insert(names[0].to_string());
    }
    assert_eq!(
        firsts.len(),
        2,
        "both equal-preference hosts come first for some seed"
    );
    lab.dns.stop().await;
}

#[tokio::test]
async fn null_mx_cname_and_implicit_mx() {
    let lab = lab().await;
    let r = &lab.resolver;
    let opts = SelectOptions::default();

    let e = r
        .route(&target("null.route.test"), &opts, 0)
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::NullMx { .. }), "{e}");
    assert_eq!(
        (e.reply_code(), e.status().to_string()),
        (556, "5.1.10".to_string())
    );

    // The MX host is an alias: its addresses are the alias target's.
    let hops = r
        .route(&target("alias.route.test"), &opts, 0)
        .await
        .unwrap();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].host, "mx.alias.test");
    assert_eq!(hops[0].addresses, vec![ip("192.0.2.50")]);

    // A CNAME at the domain: processed as the name it points at.
    let hops = r
        .route(&target("cnamed.route.test"), &opts, 0)
        .await
        .unwrap();
    assert_eq!(hops.len(), 4);
    assert_eq!(hops[3].host, "mx3.route.test");

    // No MX: the domain's own addresses, preference IPv4 first.
    assert_eq!(r.mx_hosts("plain.route.test").await, MxLookup::NoRecords);
    let v4 = SelectOptions {
        preference: AddressPreference::Ipv4,
        ..Default::default()
    };
    let hops = r.route(&target("plain.route.test"), &v4, 0).await.unwrap();
    assert_eq!(hops[0].host, "plain.route.test");
    assert_eq!(
        hops[0].addresses,
        vec![ip("192.0.2.60"), ip("2001:db8::60")]
    );

    // An MX host without an address is skipped.
    let hops = r.route(&target("half.route.test"), &opts, 0).await.unwrap();
    let names: Vec<&str> = hops.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["mx2.route.test"]);
    lab.dns.stop().await;
}

#[tokio::test]
async fn failures_are_permanent_or_temporary_as_postfix() {
    let lab = lab().await;
    let r = &lab.resolver;
    let opts = SelectOptions::default();

    // NXDOMAIN: 5.4.4.
    assert_eq!(r.mx_hosts("nosuch.route.test").await, MxLookup::NxDomain);
    assert_eq!(r.addresses("nosuch.route.test").await, AddrLookup::NxDomain);
    let e = r
        .route(&target("nosuch.route.test"), &opts, 0)
        .await
        .unwrap_err();
    assert_eq!(e.status().to_string(), "5.4.4", "{e}");
    assert!(e.to_string().contains("type=MX: Host not found"), "{e}");

    // The name exists with neither MX nor address: 5.4.4 too.
    assert_eq!(
        r.addresses("txtonly.route.test").await,
        AddrLookup::NoRecords
    );
    let e = r
        .route(&target("txtonly.route.test"), &opts, 0)
        .await
        .unwrap_err();
    assert_eq!(e.status().to_string(), "5.4.4", "{e}");

    // A zone the server does not serve: it refuses, so try again (4.4.3).
    let e = r
        .route(&target("elsewhere.example"), &opts, 0)
        .await
        .unwrap_err();
    assert_eq!(e.status().to_string(), "4.4.3", "{e}");

    // MX hosts that are us: loops back.
    let us = SelectOptions {
        local_addrs: vec![ip("192.0.2.11"), ip("192.0.2.12")],
        ..Default::default()
    };
    let e = r
        .route(&target("multi.route.test"), &us, 0)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "mail for multi.route.test loops back to myself"
    );
    lab.dns.stop().await;
}

#[tokio::test]
async fn a_silent_server_is_a_temporary_failure() {
    // A bound UDP socket that never answers (and no TCP listener).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r =
        DnsResolver::with_name_servers(&[silent.local_addr().unwrap()], Duration::from_millis(200))
            .unwrap();
    let t = target("multi.route.test");
    let started = std::time::Instant::now();
    let e = r.route(&t, &SelectOptions::default(), 0).await.unwrap_err();
    assert_eq!(e.status().to_string(), "4.4.3", "{e}");
    assert!(!e.is_permanent());
    assert!(started.elapsed() < Duration::from_secs(10));
}
