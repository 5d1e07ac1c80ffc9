//! Server session driven by arbitrary client bytes, split at fuzzer-chosen
//! points and fed at fuzzer-chosen times (the idle timer runs), with a host
//! that accepts logins and streams messages. Checks: no panic, bounded
//! output per input, a session idle past its timeout closes, and feeding
//! the same bytes in one piece gives the same output. The TLS policy comes
//! from the second byte: no login reaches the host before TLS under
//! `tls_required`, no plaintext one under `plaintext_requires_tls`, and
//! nothing buffered survives STLS.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pop3_proto::*;

const MESSAGES: [&[u8]; 3] = [
    b"Subject: a\r\n\r\nbody\r\n.dot\r\n",
    b"no header end\r\n..x",
    b"",
];

/// Runs the session until it needs input; true once closed. `flags` is
/// the TLS policy byte given to [`config`].
fn drive(s: &mut ServerSession, out: &mut Vec<u8>, chunk: usize, flags: u8) -> bool {
    let (plaintext_requires_tls, tls_required) = (flags & 1 != 0, flags & 2 != 0);
    loop {
        let ev = s.next();
        if let Ok(Event::Authenticate(c)) = &ev {
            let plaintext = matches!(c, Credentials::Plain { .. } | Credentials::Login { .. });
            assert!(!tls_required || s.tls_active(), "login before TLS: {c:?}");
            assert!(
                !(plaintext_requires_tls && plaintext) || s.tls_active(),
                "plaintext before TLS"
            );
        }
        match ev {
            Err(Interrupt::Output(b)) => out.extend(b),
            Err(Interrupt::NeedInput) => return false,
            Err(Interrupt::Close) => return true,
            Err(Interrupt::AwaitingHost) => panic!("event left unanswered"),
            Ok(Event::Authenticate(c)) => {
                let r = match c.password().map(|p| p.expose().as_str()) {
                    Some("pw") => AuthResult::Accepted,
                    Some("tmp") => AuthResult::TempFail,
                    None => AuthResult::Accepted,
                    Some(_) => AuthResult::Rejected,
                };
                s.auth_result(r).unwrap();
            }
            Ok(Event::OpenMaildrop { user }) => {
                if user == "busy" {
                    s.maildrop_failed(MaildropError::InUse).unwrap();
                } else {
                    let list = MESSAGES
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MessageInfo {
                            size: m.len() as u64,
                            uid: format!("u{i}"),
                        })
                        .collect();
                    s.maildrop_opened(list).unwrap();
                }
            }
            Ok(Event::Retrieve { message, .. }) => {
                let m = MESSAGES[message.number as usize - 1];
                for c in m.chunks(chunk.max(1)) {
                    let more = s.message_data(c).unwrap();
                    loop {
                        match s.next() {
                            Err(Interrupt::Output(b)) => out.extend(b),
                            Err(Interrupt::AwaitingHost) => break,
                            other => panic!("{other:?}"),
                        }
                    }
                    if !more {
                        break;
                    }
                }
                s.message_end().unwrap();
            }
            Ok(Event::Update { .. }) => s.update_result(true).unwrap(),
            Ok(Event::StartTls) => {
                assert!(!s.tls_active());
                s.tls_established().unwrap();
                assert_eq!(s.buffered_input(), 0);
            }
        }
    }
}

fn config(flags: u8) -> ServerConfig {
    ServerConfig {
        apop_timestamp: Some("<1.2@fuzz>".into()),
        tls_available: true,
        plaintext_requires_tls: flags & 1 != 0,
        tls_required: flags & 2 != 0,
        tls_active: flags & 4 != 0,
        sasl: vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5],
        max_failed_logins: 5,
        // The default bad-command limits end most random inputs at the
        // third line; keep them for some runs only.
        max_bad_commands_before_login: if flags & 8 != 0 { 3 } else { u32::MAX },
        max_bad_commands: if flags & 8 != 0 { 20 } else { u32::MAX },
        ..ServerConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let Some((&flags, input)) = input.split_first() else {
        return;
    };
    // Piecewise, each piece some seconds after the last.
    let mut s = ServerSession::new(config(flags), Duration::ZERO);
    let mut out = Vec::new();
    let step = usize::from(split % 17) + 1;
    let gap = Duration::from_secs(u64::from(split / 17) * 10);
    let mut now = Duration::ZERO;
    let mut timed_out = false;
    let mut closed = drive(&mut s, &mut out, step, flags);
    for piece in input.chunks(step) {
        if closed {
            break;
        }
        now += gap;
        if let Some(deadline) = s.poll_timeout() {
            s.handle_timeout(now);
            if now >= deadline {
                // Idle past the timeout: closed, without a response.
                timed_out = true;
                let before = out.len();
                assert!(
                    drive(&mut s, &mut out, step, flags),
                    "not closed after timeout"
                );
                assert_eq!(out.len(), before, "output after timeout");
                break;
            }
        }
        s.enqueue_input(now, piece);
        closed = drive(&mut s, &mut out, step, flags);
    }
    // Whole, with a different message chunking. STLS discards what was
    // buffered after it, so only compare when the input did not use it.
    let stls = input.windows(4).any(|w| w.eq_ignore_ascii_case(b"STLS"));
    let mut s2 = ServerSession::new(config(flags), Duration::ZERO);
    let mut out2 = Vec::new();
    if !drive(&mut s2, &mut out2, 1000, flags) {
        s2.enqueue_input(Duration::ZERO, input);
        drive(&mut s2, &mut out2, 1000, flags);
    }
    if !stls && !timed_out {
        assert_eq!(out, out2);
    }
    // Output stays proportional to input (responses are short, messages
    // are small here).
    assert!(
        out.len() <= 200 + input.len() * 64,
        "{} for {}",
        out.len(),
        input.len()
    );
});
