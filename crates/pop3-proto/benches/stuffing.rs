//! RETR byte-stuffing throughput on a 1 MiB message.

use criterion::{black_box, criterion_main, Criterion, Throughput};
use std::time::Duration;

use pop3_proto::{
    AuthResult, DotStuffer, Event, Interrupt, MessageInfo, ServerConfig, ServerSession,
};

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

/// Byte-at-a-time reference stuffer, to show what the substring search buys.
fn naive_stuff(input: &[u8], out: &mut Vec<u8>) {
    let mut at_start = true;
    for &b in input {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
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
    g.bench_function("1MiB_naive_bytewise_reference", |b| {
        b.iter(|| {
            out.clear();
            naive_stuff(black_box(&msg), &mut out);
            black_box(out.len())
        })
    });
    // Worst case: every line starts with a dot.
    let dots: Vec<u8> = msg
        .split(|&b| b == b'\n')
        .flat_map(|l| std::iter::once(b'.').chain(l.iter().copied()).chain(*b"\n"))
        .take(1 << 20)
        .collect();
    g.bench_function("1MiB_every_line_dotted", |b| {
        b.iter(|| {
            out.clear();
            let mut s = DotStuffer::new();
            s.push(black_box(&dots), &mut out);
            s.finish(&mut out);
            black_box(out.len())
        })
    });
    // The whole server path: RETR through a logged-in session, the message
    // handed over in 64 KiB chunks as a file reader would.
    let mut s = ServerSession::new(ServerConfig::default(), Duration::ZERO);
    s.enqueue_input(Duration::ZERO, b"USER u\r\nPASS p\r\n");
    loop {
        match s.next() {
            Err(Interrupt::Output(_)) => {}
            Ok(Event::Authenticate(_)) => s.auth_result(AuthResult::Accepted).unwrap(),
            Ok(Event::OpenMaildrop { .. }) => s
                .maildrop_opened(vec![MessageInfo {
                    size: msg.len() as u64,
                    uid: "1".into(),
                }])
                .unwrap(),
            Err(Interrupt::NeedInput) => break,
            other => panic!("{other:?}"),
        }
    }
    g.bench_function("1MiB_server_session", |b| {
        b.iter(|| {
            let mut sent = 0usize;
            s.enqueue_input(Duration::ZERO, b"RETR 1\r\n");
            let Ok(Event::Retrieve { .. }) = s.next() else {
                panic!("no retrieve event");
            };
            for c in msg.chunks(64 * 1024) {
                s.message_data(c).unwrap();
                while let Err(Interrupt::Output(b)) = s.next() {
                    sent += b.len();
                }
            }
            s.message_end().unwrap();
            while let Err(Interrupt::Output(b)) = s.next() {
                sent += b.len();
            }
            black_box(sent)
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
