use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn table(s: &str) -> TransportTable {
    s.parse().unwrap()
}

fn dest(s: &str) -> SmtpDestination {
    s.parse().unwrap()
}

fn mx(records: &[(u16, &str)]) -> MxLookup {
    MxLookup::Records(
        records
            .iter()
            .map(|&(preference, e)| MxRecord {
                preference,
                exchange: e.into(),
            })
            .collect(),
    )
}

fn found(pairs: &[(&str, &[&str])]) -> BTreeMap<String, AddrLookup> {
    pairs
        .iter()
        .map(|(h, a)| {
            (
                h.to_string(),
                AddrLookup::Found(a.iter().map(|s| ip(s)).collect()),
            )
        })
        .collect()
}

fn domain(d: &str) -> Target {
    Target::for_domain(d).unwrap()
}

fn hosts(hops: &[Hop]) -> Vec<&str> {
    hops.iter().map(|h| h.host.as_str()).collect()
}

// --- transport tables ---------------------------------------------------

#[test]
fn parses_postfix_syntax() {
    let t = table(
        "# per-domain next hops\n\
         \n\
         example.com      smtp:[127.0.0.1]:2526\n\
         .example.com     smtp:mx.example.net\n\
         \x20  # a comment inside is skipped\n\
         user@Example.ORG local:\n\
         bounce.test      error:5.1.1 mailbox\n\
         \x20\x20unavailable here\n\
         soft.test        retry:4.3.0 try later\n\
         softer.test      retry:busy\n\
         plain.test       error:no such domain\n\
         drop.test        discard:silently\n\
         relay.test       relay:[relay.test]\n\
         empty.test       :[mx.empty.test]:26\n\
         nohop.test       smtp:\n\
         bare.test        smtp\n\
         *                smtp:[smarthost]:587\n",
    );
    assert_eq!(t.entries().len(), 13);
    assert_eq!(
        t.lookup("x@example.com"),
        Some(&TransportAction::Smtp(Some(dest("[127.0.0.1]:2526"))))
    );
    assert_eq!(
        t.lookup("x@example.org"),
        Some(&TransportAction::Smtp(Some(dest("[smarthost]:587"))))
    );
    assert_eq!(t.lookup("USER@example.org"), Some(&TransportAction::Local));
    assert_eq!(
        t.lookup("a@bounce.test"),
        Some(&TransportAction::Error {
            status: "5.1.1".parse().unwrap(),
            text: "mailbox unavailable here".into()
        })
    );
    let Some(TransportAction::Error { status, .. }) = t.lookup("a@soft.test") else {
        panic!()
    };
    assert!(!status.is_permanent());
    let Some(TransportAction::Error { status, text }) = t.lookup("a@softer.test") else {
        panic!()
    };
    assert_eq!(
        (status.to_string().as_str(), text.as_str()),
        ("4.0.0", "busy")
    );
    assert_eq!(
        t.lookup("a@plain.test"),
        Some(&TransportAction::Error {
            status: "5.0.0".parse().unwrap(),
            text: "no such domain".into()
        })
    );
    assert_eq!(
        t.lookup("a@drop.test"),
        Some(&TransportAction::Discard("silently".into()))
    );
    assert_eq!(
        t.lookup("a@relay.test"),
        Some(&TransportAction::Smtp(Some(dest("[relay.test]"))))
    );
    assert_eq!(
        t.lookup("a@empty.test"),
        Some(&TransportAction::Smtp(Some(dest("[mx.empty.test]:26"))))
    );
    assert_eq!(t.lookup("a@nohop.test"), Some(&TransportAction::Smtp(None)));
    assert_eq!(t.lookup("a@bare.test"), Some(&TransportAction::Smtp(None)));
}

#[test]
fn lookup_order_is_postfixs() {
    let t = table(
        "bob@a.example.com   smtp:[addr]\n\
         a.example.com       smtp:[domain]\n\
         .example.com        smtp:[parent]\n\
         .com                smtp:[tld]\n\
         *                   smtp:[star]\n",
    );
    let hop = |r: &str| match t.lookup(r) {
        Some(TransportAction::Smtp(Some(d))) => d.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(hop("bob@a.example.com"), "[addr]");
    assert_eq!(hop("Bob@A.Example.Com."), "[addr]");
    assert_eq!(hop("alice@a.example.com"), "[domain]");
    // ".example.com" matches subdomains at any depth, not the domain itself.
    assert_eq!(hop("x@b.a.example.com"), "[parent]");
    assert_eq!(hop("x@example.com"), "[tld]");
    assert_eq!(hop("x@example.org"), "[star]");
    // Without "*", nothing.
    let t = table("example.com smtp:[x]\n");
    assert_eq!(t.lookup("a@example.net"), None);
    // The nearest parent wins.
    let t = table(".example.com smtp:[far]\n.b.example.com smtp:[near]\n");
    assert_eq!(
        t.lookup("a@c.b.example.com"),
        Some(&TransportAction::Smtp(Some(dest("[near]"))))
    );
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("example.com\n", 1, "without a value"),
        ("# c\n\nexample.com bogus:x\n", 3, "unknown transport"),
        (
            "a.test error:5.1.1 x\n  continued\nb..test smtp:y\n",
            3,
            "not a host name",
        ),
        ("  leading continuation\n", 1, "continuation"),
        ("a.test smtp:[x\n", 1, "without ']'"),
        (
            "a.test smtp:x\n\nA.test local:\n",
            3,
            "already given on line 1",
        ),
        ("a.test error:4.0.0 busy\n", 1, "retry:4.x.y defers"),
        ("a.test retry:5.0.0 gone\n", 1, "error:5.x.y bounces"),
        ("a.test error:2.0.0 fine\n", 1, "takes a 5.x.y status"),
        ("@a.test local:\n", 1, "empty local part"),
        ("a.test smtp:host:0\n", 1, "not a port"),
    ];
    for (text, line, what) in cases {
        let e = text.parse::<TransportTable>().unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(what), "{text:?}: {e}");
        assert!(e
            .to_string()
            .starts_with(&format!("transport table line {line}:")));
    }
}

#[test]
fn crlf_and_tabs() {
    let t = table("example.com\tsmtp:[127.0.0.1]:2526\r\n*\tsmtp:\r\n");
    assert_eq!(t.entries().len(), 2);
}

#[test]
fn enhanced_status_syntax() {
    for good in ["5.1.1", "4.4.3", "5.1.10", "2.0.0", "5.999.999"] {
        assert_eq!(good.parse::<EnhancedStatus>().unwrap().to_string(), good);
    }
    for bad in [
        "", "5", "5.1", "3.1.1", "5.1.1.1", "5.1000.1", "5.a.1", "5..1", "5.+1.1",
    ] {
        assert!(bad.parse::<EnhancedStatus>().is_err(), "{bad}");
    }
}

fn arb_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9][a-z0-9_-]{0,10}", 1..4).prop_map(|l| l.join("."))
}

fn arb_key() -> impl Strategy<Value = TransportKey> {
    prop_oneof![
        ("[a-z0-9.+_-]{1,10}", arb_name())
            .prop_map(|(l, d)| TransportKey::Address(format!("{l}@{d}"))),
        arb_name().prop_map(TransportKey::Domain),
        arb_name().prop_map(TransportKey::Subdomains),
        Just(TransportKey::Default),
    ]
}

fn arb_destination() -> impl Strategy<Value = SmtpDestination> {
    let host = prop_oneof![
        arb_name().prop_map(DestinationHost::Name),
        any::<std::net::Ipv4Addr>().prop_map(|a| DestinationHost::Ip(a.into())),
        any::<std::net::Ipv6Addr>().prop_map(|a| DestinationHost::Ip(a.into())),
    ];
    (host, any::<bool>(), prop::option::of(1u16..)).prop_map(|(host, mx, port)| {
        let mx_lookup = mx && matches!(host, DestinationHost::Name(_));
        SmtpDestination {
            host,
            mx_lookup,
            port,
        }
    })
}

fn arb_action() -> impl Strategy<Value = TransportAction> {
    // Texts: words separated by single spaces (whitespace runs are folded).
    let text = prop::collection::vec("[!-~]{1,8}", 0..4).prop_map(|w| w.join(" "));
    prop_oneof![
        prop::option::of(arb_destination()).prop_map(TransportAction::Smtp),
        Just(TransportAction::Local),
        (
            prop_oneof![Just(4u8), Just(5u8)],
            0u16..1000,
            0u16..1000,
            text.clone()
        )
            .prop_map(|(c, s, d, text)| TransportAction::Error {
                status: EnhancedStatus::new(c, s, d),
                text,
            }),
        text.prop_map(TransportAction::Discard),
    ]
}

proptest! {
    #[test]
    fn serialise_then_parse_is_identity(
        entries in prop::collection::vec((arb_key(), arb_action()), 0..20)
    ) {
        let mut t = TransportTable::new();
        for (k, a) in entries {
            t.insert(k, a);
        }
        let text = t.to_string();
        let back: TransportTable = text.parse().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, t);
    }

    #[test]
    fn parser_never_panics(text in "[ -~\t\n]{0,200}") {
        let _ = text.parse::<TransportTable>();
    }

    #[test]
    fn destination_round_trips(d in arb_destination()) {
        prop_assert_eq!(d.to_string().parse::<SmtpDestination>(), Ok(d));
    }
}

// --- decisions ------------------------------------------------------------

#[test]
fn decide_uses_table_then_relayhost_then_mx() {
    let t = table(
        "lab.test smtp:[127.0.0.1]:2526\n\
         mx.test smtp:\n\
         loc.test local:\n\
         err.test error:5.1.1 no\n\
         null.test discard:gone\n",
    );
    let relay = dest("[smtp.example.net]:587");
    let relay2 = dest("relay.example:2525");
    let smtp = |r, rh| match decide(r, Some(&t), rh) {
        Decision::Smtp(t) => t,
        other => panic!("{other:?}"),
    };
    let lab = smtp("a@lab.test", Some(&relay));
    assert_eq!(lab.literal, Some(ip("127.0.0.1")));
    assert_eq!(lab.port, 2526);
    assert!(!lab.mx_lookup);
    // No entry: relayhost, without MX lookup (brackets), on its port.
    let r = smtp("a@other.test", Some(&relay));
    assert_eq!(
        (r.name.as_str(), r.mx_lookup, r.port),
        ("smtp.example.net", false, 587)
    );
    // An entry without nexthop takes the default too.
    assert_eq!(smtp("a@mx.test", Some(&relay)).name, "smtp.example.net");
    let m = smtp("a@mx.test", None);
    assert_eq!(
        (m.name.as_str(), m.mx_lookup, m.port),
        ("mx.test", true, 25)
    );
    let m = smtp("a@Other.Test.", None);
    assert_eq!(m.name, "other.test");
    // relayhost "host:port" keeps the MX lookup, as Postfix.
    let r = smtp("a@x.test", Some(&relay2));
    assert!(r.mx_lookup);
    assert_eq!(r.port, 2525);
    assert_eq!(decide("a@loc.test", Some(&t), None), Decision::Local);
    assert!(
        matches!(decide("a@err.test", Some(&t), None), Decision::Error { text, .. } if text == "no")
    );
    assert_eq!(
        decide("a@null.test", Some(&t), None),
        Decision::Discard("gone".into())
    );
    assert!(matches!(
        decide("a@bad..domain", None, None),
        Decision::BadDomain(_)
    ));
    // Address-literal domains connect to the address.
    let l = smtp("a@[192.0.2.9]", None);
    assert_eq!(l.literal, Some(ip("192.0.2.9")));
}

// --- selection --------------------------------------------------------------

#[test]
fn mx_sorted_by_preference() {
    let m = mx(&[(30, "c.test."), (10, "A.test"), (20, "b.test")]);
    let a = found(&[
        ("a.test", &["192.0.2.1"]),
        ("b.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
    ]);
    let t = domain("example.test");
    assert_eq!(
        hosts_to_resolve(&t, Some(&m)),
        vec!["a.test", "b.test", "c.test"]
    );
    let hops = select(&t, Some(&m), &a, &SelectOptions::default(), 1).unwrap();
    assert_eq!(hosts(&hops), ["a.test", "b.test", "c.test"]);
    assert_eq!(hops[0].preference, Some(10));
    assert_eq!(hops[0].addresses, vec![ip("192.0.2.1")]);
    assert!(hops.iter().all(|h| h.port == 25));
}

#[test]
fn equal_preferences_in_random_order_fixed_by_seed() {
    let m = mx(&[
        (10, "a.test"),
        (10, "b.test"),
        (10, "c.test"),
        (5, "first.test"),
        (20, "last.test"),
    ]);
    let a = found(&[
        ("a.test", &["192.0.2.1"]),
        ("b.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
        ("first.test", &["192.0.2.4"]),
        ("last.test", &["192.0.2.5"]),
    ]);
    let t = domain("example.test");
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let hops = select(&t, Some(&m), &a, &SelectOptions::default(), seed).unwrap();
        let h = hosts(&hops);
        assert_eq!(h.first(), Some(&"first.test"));
        assert_eq!(h.last(), Some(&"last.test"));
        orders.insert(h[1..4].join(","));
        // Deterministic for a seed.
        assert_eq!(
            select(&t, Some(&m), &a, &SelectOptions::default(), seed).unwrap(),
            hops
        );
    }
    assert_eq!(
        orders.len(),
        6,
        "all permutations of the equals appear: {orders:?}"
    );
}

#[test]
fn implicit_mx_when_no_records() {
    let t = domain("plain.test");
    assert_eq!(
        hosts_to_resolve(&t, Some(&MxLookup::NoRecords)),
        vec!["plain.test"]
    );
    let a = found(&[("plain.test", &["192.0.2.7", "2001:db8::7"])]);
    let opts = SelectOptions {
        preference: AddressPreference::Ipv6,
        ..Default::default()
    };
    let hops = select(&t, Some(&MxLookup::NoRecords), &a, &opts, 0).unwrap();
    assert_eq!(hosts(&hops), ["plain.test"]);
    assert_eq!(hops[0].preference, Some(0));
    assert_eq!(hops[0].addresses, vec![ip("2001:db8::7"), ip("192.0.2.7")]);
}

#[test]
fn address_preference() {
    let t = domain("h.test");
    let a = found(&[(
        "h.test",
        &["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"],
    )]);
    let with = |preference, seed| {
        let opts = SelectOptions {
            preference,
            ..Default::default()
        };
        select(&t, Some(&MxLookup::NoRecords), &a, &opts, seed).unwrap()[0]
            .addresses
            .clone()
    };
    for seed in 0..16 {
        let v4 = with(AddressPreference::Ipv4, seed);
        assert!(v4[..2].iter().all(IpAddr::is_ipv4) && v4[2..].iter().all(IpAddr::is_ipv6));
        let v6 = with(AddressPreference::Ipv6, seed);
        assert!(v6[..2].iter().all(IpAddr::is_ipv6) && v6[2..].iter().all(IpAddr::is_ipv4));
    }
    let firsts: std::collections::BTreeSet<bool> = (0..32)
        .map(|s| with(AddressPreference::Any, s)[0].is_ipv6())
        .collect();
    assert_eq!(firsts.len(), 2, "any: either family may come first");
}

#[test]
fn null_mx_is_permanent_5_1_10() {
    let t = domain("null.test");
    for m in [mx(&[(0, ".")]), mx(&[(0, "")])] {
        assert!(hosts_to_resolve(&t, Some(&m)).is_empty());
        let e = select(&t, Some(&m), &BTreeMap::new(), &SelectOptions::default(), 0).unwrap_err();
        assert_eq!(
            e,
            RouteError::NullMx {
                domain: "null.test".into()
            }
        );
        assert_eq!(e.status().to_string(), "5.1.10");
        assert_eq!(e.reply_code(), 556);
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "Domain null.test does not accept mail (nullMX)"
        );
    }
    // A root exchange beside real ones is skipped, not a null MX.
    let m = mx(&[(0, "."), (10, "mx.test")]);
    assert_eq!(hosts_to_resolve(&t, Some(&m)), vec!["mx.test"]);
    let hops = select(
        &t,
        Some(&m),
        &found(&[("mx.test", &["192.0.2.1"])]),
        &SelectOptions::default(),
        0,
    )
    .unwrap();
    assert_eq!(hosts(&hops), ["mx.test"]);
}

#[test]
fn mx_pointing_at_us_drops_equal_and_worse() {
    let m = mx(&[
        (10, "a.test"),
        (20, "us.test"),
        (20, "b.test"),
        (30, "c.test"),
    ]);
    let a = found(&[
        ("a.test", &["192.0.2.1"]),
        ("us.test", &["192.0.2.100"]),
        ("b.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
    ]);
    let t = domain("example.test");
    // By address.
    let opts = SelectOptions {
        local_addrs: vec![ip("192.0.2.100")],
        ..Default::default()
    };
    assert_eq!(
        hosts(&select(&t, Some(&m), &a, &opts, 3).unwrap()),
        ["a.test"]
    );
    // By name.
    let opts = SelectOptions {
        local_names: vec!["US.test.".into()],
        ..Default::default()
    };
    assert_eq!(
        hosts(&select(&t, Some(&m), &a, &opts, 3).unwrap()),
        ["a.test"]
    );
    // We are the best MX: nothing is left.
    let opts = SelectOptions {
        local_addrs: vec![ip("192.0.2.1")],
        ..Default::default()
    };
    let e = select(&t, Some(&m), &a, &opts, 3).unwrap_err();
    assert_eq!(e.to_string(), "mail for example.test loops back to myself");
    assert_eq!(e.status().to_string(), "5.4.6");
    assert!(e.is_permanent());
    // The implicit MX that is us loops too.
    let a = found(&[("self.test", &["127.0.0.1"])]);
    let opts = SelectOptions {
        local_addrs: vec![ip("127.0.0.1")],
        ..Default::default()
    };
    let e = select(
        &domain("self.test"),
        Some(&MxLookup::NoRecords),
        &a,
        &opts,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, RouteError::LoopsBack { .. }));
    // A [host] next hop is taken as given, even on our own address (a
    // transport entry to a test server on another port).
    let t = Target::from(&dest("[self.test]:2526"));
    assert_eq!(select(&t, None, &a, &opts, 0).unwrap()[0].port, 2526);
}

#[test]
fn dns_failures_map_to_postfix_statuses() {
    let t = domain("gone.test");
    let e = select(
        &t,
        Some(&MxLookup::NxDomain),
        &BTreeMap::new(),
        &SelectOptions::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(e.status().to_string(), "5.4.4");
    assert_eq!(
        e.to_string(),
        "Host or domain name not found. Name service error for name=gone.test type=MX: Host not found"
    );
    let e = select(
        &t,
        Some(&MxLookup::TempFail("SERVFAIL".into())),
        &BTreeMap::new(),
        &SelectOptions::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(e.status().to_string(), "4.4.3");
    assert!(!e.is_permanent());
    assert_eq!(e.reply_code(), 451);
    assert!(e.to_string().contains("try again"));
    // No MX and no address: permanent.
    let mut a = BTreeMap::new();
    a.insert("gone.test".to_string(), AddrLookup::NoRecords);
    let e = select(
        &t,
        Some(&MxLookup::NoRecords),
        &a,
        &SelectOptions::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(e.status().to_string(), "5.4.4");
    assert!(e.to_string().contains("no data record"));
    // Forgotten lookups are temporary, never a bounce.
    let e = select(&t, None, &BTreeMap::new(), &SelectOptions::default(), 0).unwrap_err();
    assert!(!e.is_permanent());
}

#[test]
fn hosts_without_addresses_are_skipped_temp_wins() {
    let t = domain("example.test");
    let m = mx(&[(10, "dead.test"), (20, "slow.test"), (30, "ok.test")]);
    let mut a = BTreeMap::new();
    a.insert("dead.test".to_string(), AddrLookup::NxDomain);
    a.insert(
        "slow.test".to_string(),
        AddrLookup::TempFail("timeout".into()),
    );
    a.insert(
        "ok.test".to_string(),
        AddrLookup::Found(vec![ip("192.0.2.3")]),
    );
    assert_eq!(
        hosts(&select(&t, Some(&m), &a, &SelectOptions::default(), 0).unwrap()),
        ["ok.test"]
    );
    a.remove("ok.test");
    a.insert("ok.test".to_string(), AddrLookup::NoRecords);
    let e = select(&t, Some(&m), &a, &SelectOptions::default(), 0).unwrap_err();
    assert_eq!(e.status().to_string(), "4.4.3", "{e}");
    assert!(e.to_string().contains("name=slow.test type=A/AAAA"));
    a.insert("slow.test".to_string(), AddrLookup::NxDomain);
    let e = select(&t, Some(&m), &a, &SelectOptions::default(), 0).unwrap_err();
    assert_eq!(e.status().to_string(), "5.4.4");
    assert!(
        e.to_string().contains("name=dead.test"),
        "the best host's reason: {e}"
    );
}

#[test]
fn duplicate_exchanges_once_at_best_preference() {
    let t = domain("example.test");
    let m = mx(&[(20, "mx.test"), (10, "MX.test.")]);
    assert_eq!(hosts_to_resolve(&t, Some(&m)), vec!["mx.test"]);
    let hops = select(
        &t,
        Some(&m),
        &found(&[("mx.test", &["192.0.2.1"])]),
        &SelectOptions::default(),
        0,
    )
    .unwrap();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].preference, Some(10));
}

#[test]
fn literal_and_bracketed_targets() {
    let t = Target::from(&dest("[192.0.2.5]:2526"));
    assert!(hosts_to_resolve(&t, None).is_empty());
    let hops = select(&t, None, &BTreeMap::new(), &SelectOptions::default(), 0).unwrap();
    assert_eq!(hops[0].addresses, vec![ip("192.0.2.5")]);
    assert_eq!(hops[0].port, 2526);
    let t = Target::from(&dest("[relay.test]"));
    assert_eq!(hosts_to_resolve(&t, None), vec!["relay.test"]);
    let hops = select(
        &t,
        None,
        &found(&[("relay.test", &["192.0.2.6"])]),
        &SelectOptions::default(),
        0,
    )
    .unwrap();
    assert_eq!(
        (hops[0].host.as_str(), hops[0].preference, hops[0].port),
        ("relay.test", None, 25)
    );
    // A [host] that does not exist is permanent, one that times out temporary.
    let mut a = BTreeMap::new();
    a.insert("relay.test".to_string(), AddrLookup::NxDomain);
    assert!(select(&t, None, &a, &SelectOptions::default(), 0)
        .unwrap_err()
        .is_permanent());
}
