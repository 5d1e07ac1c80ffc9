//! RETR byte-stuffing throughput on a 1 MiB message.

use criterion::{black_box, criterion_main, Criterion, Throughput};
use pop3_proto::DotStuffer;

/// A 1 MiB message of 72-octet CRLF lines, one in 50 starting with a dot.
fn message() -> Vec<u8> {
    let mut m = Vec::with_capacity(1 << 20);
    let mut i = 0u32;
    while m.len() < (1 << 20) - 80 {
        if i % 50 == 0 {
            m.push(b'.');
        }
        for j in 0..70u32 {
            m.push(b'a' + ((i + j) % 26) as u8);
        }
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m.resize(1 << 20, b'x');
    m
}

fn bench(c: &mut Criterion) {
    let msg = message();
    let mut g = c.benchmark_group("retr_stuffing");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    let mut out = Vec::with_capacity(msg.len() + (msg.len() / 40));
    g.bench_function("1MiB_whole", |b| {
        b.iter(|| {
            out.clear();
            let mut s = DotStuffer::new();
            s.push(black_box(&msg), &mut out);
            s.finish(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("1MiB_64KiB_chunks", |b| {
        b.iter(|| {
            out.clear();
            let mut s = DotStuffer::new();
            for c in black_box(&msg).chunks(64 * 1024) {
                s.push(c, &mut out);
            }
            s.finish(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
