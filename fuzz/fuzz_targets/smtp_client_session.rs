//! Client session fed arbitrary server bytes in arbitrary splits, with the
//! STARTTLS policy from the second byte: no panic, no unbounded output, it
//! always reaches Close, and under `ClientTls::Required` nothing but EHLO,
//! STARTTLS and QUIT is sent before TLS.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use smtp_proto::{
    ClientConfig, ClientEvent, ClientSession, ClientTls, Interrupt, OutgoingMessage, Secret,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&tls_flags, rest)) = rest.split_first() else {
        return;
    };
    let mut cfg = ClientConfig::new("client.fuzz");
    if flags & 1 != 0 {
        cfg.credentials = Some(("user2".into(), Secret::new("pw".into())));
    }
    cfg.pipelining = flags & 2 != 0;
    cfg.tls = match tls_flags % 3 {
        0 => ClientTls::None,
        1 => ClientTls::Opportunistic,
        _ => ClientTls::Required,
    };
    cfg.tls_active = tls_flags & 4 != 0;
    let required = cfg.tls == ClientTls::Required;
    let msgs = vec![
        OutgoingMessage {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into(), "g@h.i".into()],
            body: b".x\r\ny".to_vec(),
            ..Default::default()
        },
        OutgoingMessage {
            from: String::new(),
            to: vec!["postmaster".into()],
            body: Vec::new(),
            ..Default::default()
        },
    ];
    let mut c = ClientSession::new(cfg, msgs, Duration::ZERO);
    let split = usize::from(flags >> 2) + 1;
    let mut chunks = rest.chunks(split);
    let mut sent = 0usize;
    let mut now = Duration::ZERO;
    for _ in 0..1_000_000 {
        match c.next() {
            Ok(ClientEvent::StartTls) => {
                assert!(!c.tls_active());
                c.tls_established().unwrap();
            }
            Ok(ClientEvent::Authenticated | ClientEvent::Message(_)) => {
                assert!(!required || c.tls_active());
            }
            Ok(_) => {}
            Err(Interrupt::Output(b)) => {
                if required && !c.tls_active() {
                    for line in b.split(|&x| x == b'\n') {
                        assert!(
                            line.is_empty()
                                || line.starts_with(b"EHLO ")
                                || line == b"STARTTLS\r"
                                || line == b"QUIT\r",
                            "{:?} sent before TLS",
                            String::from_utf8_lossy(line)
                        );
                    }
                }
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
            Err(Interrupt::AwaitingHost) => panic!("StartTls is answered at once"),
        }
    }
    panic!("no progress");
});
