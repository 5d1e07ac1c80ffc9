//! Parser and responder throughput on a generated mixed zone.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dns_zone::{
    load_zone, parse, Catalog, Name, NoIncludes, Outcome, ParseOptions, Responder, ResponderConfig,
    Transport,
};

/// The same mix as scripts/bench-dns.sh: A, AAAA, MX, TXT, CNAME, SRV.
fn zone(records: usize) -> String {
    let mut s = String::with_capacity(records * 48);
    s.push_str("$TTL 3600\n$ORIGIN bench.test.\n@ IN SOA ns1 hostmaster ( 1 3600 900 604800 300 )\n  IN NS ns1\nns1 IN A 192.0.2.1\n");
    let mut i = 0usize;
    while i < records {
        let _ = match i % 6 {
            0 => writeln!(
                s,
                "h{i} IN A 10.{}.{}.{}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ),
            1 => writeln!(s, "h{i} 300 IN AAAA 2001:db8::{:x}", i & 0xffff),
            2 => writeln!(s, "h{i} IN MX 10 mail{i}.example.net."),
            3 => writeln!(s, "h{i} IN TXT \"v=spf1 ip4:10.0.0.{} -all\"", i & 255),
            4 => writeln!(s, "h{i} IN CNAME h{}", i - 4),
            _ => writeln!(s, "_sip._tcp.h{i} IN SRV 10 5 5060 h{}", i - 5),
        };
        i += 1;
    }
    s
}

fn bench_parse(c: &mut Criterion) {
    let text = zone(100_000);
    let origin = Name::parse("bench.test.", None).unwrap();
    let opts = ParseOptions {
        origin: Some(origin.clone()),
        ..ParseOptions::default()
    };
    let mut g = c.benchmark_group("zone");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse_100k_records", |b| {
        b.iter(|| {
            let p = parse(black_box(text.as_bytes()), "bench", &opts, &mut NoIncludes);
            assert!(p.errors.is_empty());
            p.records.len()
        })
    });
    // The same text through hickory-proto's own zone parser, for the ratio.
    g.bench_function("hickory_parser_100k_records", |b| {
        b.iter(|| {
            let origin = hickory_proto::rr::Name::from_ascii("bench.test.").unwrap();
            let p = hickory_proto::serialize::txt::Parser::new(
                black_box(text.as_str()),
                None,
                Some(origin),
            );
            p.parse().unwrap().1.len()
        })
    });
    g.bench_function("parse_and_build_100k_records", |b| {
        b.iter(|| {
            load_zone(
                black_box(text.as_bytes()),
                "bench",
                &origin,
                &mut NoIncludes,
            )
            .unwrap()
            .0
            .record_count()
        })
    });
    g.finish();
}

fn bench_respond(c: &mut Criterion) {
    let text = zone(10_000);
    let origin = Name::parse("bench.test.", None).unwrap();
    let (z, _) = load_zone(text.as_bytes(), "bench", &origin, &mut NoIncludes).unwrap();
    let mut cat = Catalog::new();
    cat.insert(z);
    let r = Responder::new(Arc::new(cat), ResponderConfig::default());
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x04h600\x05bench\x04test\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut out = Vec::with_capacity(1500);
    let ip = "127.0.0.1".parse().unwrap();
    c.bench_function("respond_a_edns", |b| {
        b.iter(|| {
            let o = r.handle(black_box(&q), Transport::Udp, ip, &mut out);
            assert!(matches!(o, Outcome::Reply));
            out.len()
        })
    });
    // NXDOMAIN: the SOA's owner and RDATA names are compressed against
    // the question.
    let mut nx = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    nx.extend_from_slice(b"\x06nosuch\x05bench\x04test\x00\x00\x01\x00\x01");
    nx.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    c.bench_function("respond_nxdomain_edns", |b| {
        b.iter(|| {
            let o = r.handle(black_box(&nx), Transport::Udp, ip, &mut out);
            assert!(matches!(o, Outcome::Reply));
            out.len()
        })
    });
}

criterion_group!(benches, bench_parse, bench_respond);
criterion_main!(benches);
