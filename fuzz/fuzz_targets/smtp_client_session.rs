//! Client session fed arbitrary server bytes in arbitrary splits: no
//! panic, no unbounded output, and it always reaches Close.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use smtp_proto::{ClientConfig, ClientSession, Interrupt, OutgoingMessage, Secret};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut cfg = ClientConfig::new("client.fuzz");
    if flags & 1 != 0 {
        cfg.credentials = Some(("user2".into(), Secret::new("pw".into())));
    }
    cfg.pipelining = flags & 2 != 0;
    let msgs = vec![
        OutgoingMessage {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into(), "g@h.i".into()],
            body: b".x\r\ny".to_vec(),
        },
        OutgoingMessage {
            from: String::new(),
            to: vec!["postmaster".into()],
            body: Vec::new(),
        },
    ];
    let mut c = ClientSession::new(cfg, msgs, Duration::ZERO);
    let split = usize::from(flags >> 2) + 1;
    let mut chunks = rest.chunks(split);
    let mut sent = 0usize;
    let mut now = Duration::ZERO;
    for _ in 0..1_000_000 {
        match c.next() {
            Ok(_) => {}
            Err(Interrupt::Output(b)) => {
                sent += b.len();
                assert!(sent < 1 << 20);
            }
            Err(Interrupt::NeedInput) => match chunks.next() {
                Some(chunk) => c.enqueue_input(now, chunk),
                None => {
                    now += Duration::from_secs(601);
                    c.handle_timeout(now);
                }
            },
            Err(Interrupt::Close) => return,
            Err(Interrupt::AwaitingHost) => panic!("client never awaits"),
        }
    }
    panic!("no progress");
});
