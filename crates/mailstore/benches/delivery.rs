//! Deliveries per second of 4 KiB messages with full durability, side by
//! side with the physical limit of the design on the same disk: a plain
//! write + fsync + rename + fsync-directory loop.
//!
//! Run: `cargo bench -j2 -p mailstore --bench delivery`
//! (files go under `target/tmp`, i.e. the build disk, not a tmpfs).
#![allow(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailstore::{Envelope, Protocol, Store};

/// A 4 KiB message with CRLF lines of 64 bytes, as SMTP hands it over.
fn message() -> Vec<u8> {
    let mut m = Vec::with_capacity(4096);
    let line = [b'x'; 62];
    while m.len() + 64 <= 4096 {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn bench(c: &mut Criterion) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mailstore-bench");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let msg = message();
    let mut g = c.benchmark_group("deliver_4k");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(2));

    let store = Store::with_hostname(base.join("store"), "bench.example").unwrap();
    store.create_maildir("user1").unwrap();
    let env = Envelope {
        mail_from: "user2@csuvnetwork.com".into(),
        recipients: vec!["user1@csuvnetwork.com".into()],
        mailboxes: vec!["user1".into()],
        helo: "client.example".into(),
        client_ip: "127.0.0.1".parse().unwrap(),
        protocol: Protocol::Esmtpa,
        tls: None,
        our_hostname: "mail.csuvnetwork.com".into(),
        queue_id: "4F2A91C0B7D3".into(),
        time: SystemTime::now(),
    };
    g.bench_function("mailstore", |b| {
        b.iter(|| {
            let mut d = store.begin_delivery(&env).unwrap();
            // SMTP hands data over in network-sized pieces.
            for chunk in msg.chunks(1460) {
                d.write(chunk).unwrap();
            }
            d.commit().unwrap()
        })
    });

    let raw = base.join("raw");
    for sub in ["tmp", "new"] {
        fs::create_dir_all(raw.join(sub)).unwrap();
    }
    let mut n = 0u64;
    g.bench_function("write_fsync_rename_fsyncdir", |b| {
        b.iter(|| {
            n += 1;
            let name = format!("{n}.bench");
            let tmp = raw.join("tmp").join(&name);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .unwrap();
            f.write_all(&msg).unwrap();
            f.sync_all().unwrap();
            drop(f);
            fs::rename(&tmp, raw.join("new").join(&name)).unwrap();
            File::open(raw.join("new")).unwrap().sync_all().unwrap();
        })
    });
    g.finish();
    let _ = fs::remove_dir_all(&base);
}

/// Opening a maildrop of 1000 messages (listing with sizes from `,W=`,
/// no stat or read per message) and reading one 4 KiB message back.
fn bench_maildrop(c: &mut Criterion) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mailstore-bench-drop");
    let _ = fs::remove_dir_all(&base);
    let store = Store::with_hostname(&base, "bench.example").unwrap();
    let msg = message();
    let env = Envelope {
        mail_from: "user2@csuvnetwork.com".into(),
        recipients: vec!["user1@csuvnetwork.com".into()],
        mailboxes: vec!["user1".into()],
        helo: "client.example".into(),
        client_ip: "127.0.0.1".parse().unwrap(),
        protocol: Protocol::Esmtpa,
        tls: None,
        our_hostname: "mail.csuvnetwork.com".into(),
        queue_id: "4F2A91C0B7D3".into(),
        time: SystemTime::now(),
    };
    for _ in 0..1000 {
        let mut d = store.begin_delivery(&env).unwrap();
        d.write(&msg).unwrap();
        d.commit().unwrap();
    }
    let mut g = c.benchmark_group("maildrop");
    g.sample_size(20);
    g.bench_function("open_1000", |b| {
        b.iter(|| store.open_maildrop("user1").unwrap().messages().len())
    });
    let md = store.open_maildrop("user1").unwrap();
    g.throughput(Throughput::Bytes(md.messages()[0].size));
    g.bench_function("read_4k_crlf", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(8192);
            std::io::Read::read_to_end(&mut md.open_message(0).unwrap(), &mut v).unwrap();
            v.len()
        })
    });
    g.finish();
    drop(md);
    let _ = fs::remove_dir_all(&base);
}

criterion_group!(benches, bench, bench_maildrop);
criterion_main!(benches);
