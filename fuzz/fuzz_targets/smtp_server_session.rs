//! Server session fed arbitrary bytes in arbitrary splits, with the host's
//! answers drawn from the input and the TLS policy from its second byte:
//! no panic, output and buffered input bounded by the configured limits,
//! nothing buffered survives STARTTLS, and the TLS policy holds (no
//! MAIL/RCPT/VRFY/AUTH before TLS under `tls_required`, no plaintext
//! credentials before TLS under `plaintext_auth_requires_tls`).
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use smtp_proto::{
    AuthResult, BareLf, Delivery, Event, Interrupt, Mechanism, Reply, ServerConfig, ServerSession,
    Verdict,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&tls_flags, rest)) = rest.split_first() else {
        return;
    };
    let mut cfg = ServerConfig::new("mx.fuzz");
    cfg.bare_lf = if flags & 1 == 0 {
        BareLf::Normalize
    } else {
        BareLf::Reject
    };
    cfg.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];
    cfg.auth_required = flags & 2 != 0;
    cfg.tls_available = flags & 4 != 0;
    cfg.max_message_size = 4096;
    cfg.max_recipients = 8;
    cfg.record_transcript = flags & 8 != 0;
    cfg.vrfy = flags & 16 == 0;
    cfg.plaintext_auth_requires_tls = tls_flags & 1 != 0;
    cfg.tls_required = tls_flags & 2 != 0;
    cfg.tls_active = tls_flags & 4 != 0;
    let (plaintext_needs_tls, tls_required) = (cfg.plaintext_auth_requires_tls, cfg.tls_required);
    let cap = cfg.line_limit.max(smtp_proto::server::SASL_LINE_LIMIT);
    let mut s = ServerSession::new(cfg, Duration::ZERO);
    // Split points and answers come from the input itself.
    let split = usize::from(flags >> 4) + 1;
    let mut chunks = rest.chunks(split);
    let mut answer = 0u8;
    let mut now = Duration::ZERO;
    let mut steps = 0u32;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "no progress");
        answer = answer.wrapping_add(1);
        let yes = answer % 3 != 0;
        let ev = s.next();
        if let Ok(
            Event::Mail { .. }
            | Event::Rcpt { .. }
            | Event::Vrfy { .. }
            | Event::Auth(_)
            | Event::AuthChallenge,
        ) = &ev
        {
            assert!(!tls_required || s.tls_active(), "{ev:?} before TLS");
        }
        if let Ok(Event::Auth(c)) = &ev {
            let plaintext = c.mechanism_name() != "CRAM-MD5";
            assert!(!(plaintext_needs_tls && plaintext) || s.tls_active());
        }
        if let Ok(Event::MessageEnd(env)) = &ev {
            assert_eq!(env.tls, s.tls_active());
        }
        match ev {
            Ok(Event::Mail { .. } | Event::Rcpt { .. } | Event::Vrfy { .. }) => {
                let v = if yes {
                    Verdict::Accept
                } else {
                    Verdict::Reject(Reply::new(550, (5, 1, 1), "no"))
                };
                s.decide(v).unwrap();
            }
            Ok(Event::Auth(_)) => s
                .auth_result(if yes {
                    AuthResult::Success
                } else {
                    AuthResult::Failure
                })
                .unwrap(),
            Ok(Event::AuthChallenge) => s.provide_challenge("<1.2@mx.fuzz>").unwrap(),
            Ok(Event::MessageEnd(_)) => s
                .message_result(Delivery::Accepted {
                    queue_id: "Q".into(),
                })
                .unwrap(),
            Ok(Event::StartTls) => {
                // Never offered or accepted inside TLS.
                assert!(!s.tls_active());
                s.tls_established().unwrap();
                assert_eq!(s.buffered_input(), 0);
            }
            Ok(Event::BodyChunk(b)) => assert!(!b.is_empty()),
            Ok(_) => {}
            Err(Interrupt::Output(b)) => assert!(!b.is_empty()),
            Err(Interrupt::NeedInput) => {
                // Bounded: at most a partial line remains buffered.
                assert!(s.buffered_input() <= cap + split);
                match chunks.next() {
                    Some(c) => s.enqueue_input(now, c),
                    // End by EOF or by the idle timeout.
                    None if flags & 8 == 0 => s.input_closed(),
                    None => {
                        now += Duration::from_secs(600);
                        s.handle_timeout(now);
                    }
                }
            }
            Err(Interrupt::Close) => break,
            Err(Interrupt::AwaitingHost) => panic!("unanswered"),
        }
        while s.poll_transcript().is_some() {}
    }
});
