//! Criterion benchmarks: command parsing and DATA unstuffing throughput.
// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smtp_proto::{
    BareLf, Command, Delivery, Event, Frame, Framer, Interrupt, ServerConfig, ServerSession,
    Verdict,
};

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, line) in [
        (
            "mail",
            &b"MAIL FROM:<user2@mail.csuvnetwork.com> SIZE=1234"[..],
        ),
        ("rcpt", b"RCPT TO:<user1@csuvnetwork.com>"),
        (
            "mail_params",
            b"MAIL FROM:<user2@mail.csuvnetwork.com> SIZE=1234 BODY=8BITMIME AUTH=<>",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(Command::parse(black_box(line))).is_ok())
        });
    }
    g.finish();
}

/// About 1 MiB of ordinary text: 72-character lines, one in 20 starting
/// with a dot.
fn message() -> Vec<u8> {
    let mut m = Vec::with_capacity(1 << 20);
    let mut i = 0u32;
    while m.len() < (1 << 20) - 100 {
        if i % 20 == 0 {
            m.push(b'.');
        }
        m.extend_from_slice(
            format!("{i:08} The quick brown fox jumps over the lazy dog; pack my box.\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn unstuff(c: &mut Criterion) {
    let msg = message();
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("framer_unstuff_1MiB", |b| {
        b.iter(|| {
            let mut f = Framer::new(512, BareLf::Normalize);
            f.expect_data();
            // 64 KiB reads, as a host would do.
            let mut n = 0;
            'outer: for piece in msg.chunks(64 * 1024) {
                f.push(piece);
                loop {
                    match f.next_frame() {
                        Frame::Data(d) => n += d.len(),
                        Frame::DataEnd { .. } => break 'outer,
                        Frame::NeedMore => break,
                        other => panic!("{other:?}"),
                    }
                }
            }
            black_box(n)
        })
    });
    // The whole server path, in 64 KiB reads as a host would do.
    g.bench_function("session_data_1MiB", |b| {
        b.iter(|| {
            let mut s = ServerSession::new(ServerConfig::new("mx"), Duration::ZERO);
            s.enqueue_input(
                Duration::ZERO,
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
            );
            let mut chunks = msg.chunks(64 * 1024);
            let mut n = 0;
            loop {
                match s.next() {
                    Ok(Event::Mail { .. } | Event::Rcpt { .. }) => {
                        s.decide(Verdict::Accept).unwrap()
                    }
                    Ok(Event::BodyChunk(b)) => n += b.len(),
                    Ok(Event::MessageEnd(_)) => {
                        s.message_result(Delivery::Accepted {
                            queue_id: "Q".into(),
                        })
                        .unwrap();
                        break;
                    }
                    Ok(_) | Err(Interrupt::Output(_)) => {}
                    Err(Interrupt::NeedInput) => {
                        s.enqueue_input(Duration::ZERO, chunks.next().unwrap())
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, parse, unstuff);
criterion_main!(benches);
