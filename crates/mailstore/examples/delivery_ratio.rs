//! Interleaved measurement of durable 4 KiB deliveries against the bare
//! write + fsync + rename + fsync-directory loop on the same disk.
//!
//! fsync latency on a shared disk drifts by a factor of two within seconds,
//! so the two loops alternate in short blocks and the ratio is taken from
//! the per-block medians: drift hits both sides alike.
//!
//! `cargo run --release -p mailstore --example delivery_ratio -- [DIR] [ROUNDS] [BLOCK]`
//! (default DIR: target/tmp/delivery-ratio; see scripts/bench-mailstore.sh).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mailstore::{Envelope, Protocol, Store};

fn message() -> Vec<u8> {
    let mut m = Vec::with_capacity(4096);
    while m.len() + 64 <= 4096 {
        m.extend_from_slice(&[b'x'; 62]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/tmp/delivery-ratio".into()),
    );
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let block: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let msg = message();

    let store = Store::with_hostname(dir.join("store"), "bench.example")?;
    store.create_maildir("user1")?;
    let env = Envelope {
        mail_from: "user2@csuvnetwork.com".into(),
        recipients: vec!["user1@csuvnetwork.com".into()],
        mailboxes: vec!["user1".into()],
        helo: "client.example".into(),
        client_ip: "127.0.0.1".parse()?,
        protocol: Protocol::Esmtpa,
        tls: None,
        our_hostname: "mail.csuvnetwork.com".into(),
        queue_id: "4F2A91C0B7D3".into(),
        time: SystemTime::now(),
    };
    let raw = dir.join("raw");
    fs::create_dir_all(raw.join("tmp"))?;
    fs::create_dir_all(raw.join("new"))?;
    let mut n = 0u64;

    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let (mut total_ours, mut total_bare) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        // Alternate which side goes first, against ordering bias.
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            for _ in 0..block {
                if side == 0 {
                    let mut d = store.begin_delivery(&env)?;
                    for chunk in msg.chunks(1460) {
                        d.write(chunk)?;
                    }
                    d.commit()?;
                } else {
                    n += 1;
                    let name = format!("{n}.bench");
                    let tmp = raw.join("tmp").join(&name);
                    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                    f.write_all(&msg)?;
                    f.sync_all()?;
                    drop(f);
                    fs::rename(&tmp, raw.join("new").join(&name))?;
                    File::open(raw.join("new"))?.sync_all()?;
                }
            }
            let el = t.elapsed();
            let per_sec = block as f64 / el.as_secs_f64();
            if side == 0 {
                ours.push(per_sec);
                total_ours += el;
            } else {
                bare.push(per_sec);
                total_bare += el;
            }
        }
    }
    let (mo, mb) = (median(&mut ours), median(&mut bare));
    println!(
        "rounds={rounds} block={block} message=4096 bytes dir={}",
        dir.display()
    );
    println!("mailstore deliveries/s (median of blocks): {mo:.1}");
    println!("write+fsync+rename+fsync-dir ops/s (median of blocks): {mb:.1}");
    println!("ratio of medians: {:.3}", mo / mb);
    println!(
        "ratio of totals: {:.3}",
        total_bare.as_secs_f64() / total_ours.as_secs_f64()
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}
