//! Per-message cost of the inbound checks (SPF of HELO and MAIL FROM, DKIM,
//! DMARC, the Authentication-Results field) with every DNS answer already
//! in the cache, as for a steady stream from known senders; and of signing.
//!
//! `cargo bench -p mail-auth-glue --bench checks`
#![allow(missing_docs)]

use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mail_auth::MessageAuthenticator;
use mail_auth_glue::cache::Caches;
use mail_auth_glue::check::{Checker, Envelope, Policy};
use mail_auth_glue::keys::{self, Algorithm};
use mail_auth_glue::sign::{Entry, Signer};
use mail_auth_glue::spf::{Request, SpfResult};

fn signer(c: &Caches, alg: Algorithm, selector: &str) -> Signer {
    let g = keys::generate(alg).expect("keygen");
    c.preload_record(&keys::record_owner(selector, "example.com"), &g.record);
    Signer::new(
        vec![Entry {
            domain: "example.com".into(),
            selector: selector.into(),
            key: keys::load_pem(g.private_pem.as_bytes()).expect("key"),
        }],
        mail_config::Dkim::default().sign_headers,
    )
}

fn message() -> Vec<u8> {
    let mut m = b"From: Joe <joe@example.com>\r\nTo: a@example.net\r\nSubject: bench\r\n\
Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <b@example.com>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        .to_vec();
    // A typical 4 KiB text message.
    while m.len() < 4096 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = mail_config::Resolver {
        // Nothing listens here: a lookup that missed the cache would show
        // as a timeout, not as a fast answer.
        name_servers: vec!["127.0.0.1:9".parse().expect("addr")],
        timeout: mail_config::Secs(1),
        attempts: 1,
    };
    let cache = Arc::new(Caches::default());
    cache.preload_record("example.com", "v=spf1 ip4:192.0.2.0/24 -all");
    cache.preload_record("mail.example.com", "v=spf1 a -all");
    cache.preload_a("mail.example.com", &["192.0.2.1".parse().expect("ip")]);
    cache.preload_record("_dmarc.example.com", "v=DMARC1; p=reject");
    cache.preload_nxdomain("_dmarc.com");
    let checker = Checker::new(
        MessageAuthenticator(
            netkit::resolve::DnsResolver::from_config(&cfg)
                .expect("resolver")
                .hickory()
                .clone(),
        ),
        Arc::clone(&cache),
        Policy {
            authserv_id: "mx.example.net".into(),
            dmarc_reject: true,
            spf_reject: false,
        },
    );
    let env = Envelope {
        ip: IpAddr::from([192, 0, 2, 1]),
        helo: "mail.example.com",
        mail_from: "joe@example.com",
    };
    // SPF alone (HELO and MAIL FROM), every answer cached.
    c.bench_function("spf_cached", |b| {
        b.iter(|| {
            rt.block_on(async {
                let h = checker
                    .check_spf(&Request::helo(env.ip, env.helo, "mx.example.net"))
                    .await;
                let m = checker
                    .check_spf(&Request::mail_from(
                        env.ip,
                        env.helo,
                        env.mail_from,
                        "mx.example.net",
                    ))
                    .await;
                assert_eq!((h.result, m.result), (SpfResult::Pass, SpfResult::Pass));
            })
        })
    });
    let plain = message();
    for (alg, sel) in [(Algorithm::Ed25519, "ed"), (Algorithm::Rsa, "rsa")] {
        let s = signer(&cache, alg, sel);
        let mut signed = s.sign(&plain).expect("sign").into_bytes();
        signed.extend_from_slice(&plain);
        let out = rt.block_on(checker.check(&env, &signed));
        assert_eq!(out.summary.dmarc, "pass", "{}", out.header);
        assert_eq!(out.summary.dkim, ["pass"], "{}", out.header);
        // Every SPF answer came from the cache.
        assert_eq!(
            (out.summary.spf_helo, out.summary.spf),
            (SpfResult::Pass, SpfResult::Pass),
            "{}",
            out.header
        );
        c.bench_function(&format!("check_all_cached_{sel}"), |b| {
            b.iter(|| rt.block_on(checker.check(&env, &signed)))
        });
        c.bench_function(&format!("sign_{sel}"), |b| b.iter(|| s.sign(&plain)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
