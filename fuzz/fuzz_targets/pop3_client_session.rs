//! Client session fed arbitrary server bytes: never panics, keeps bodies
//! within its limit, and gives the same events for piecewise and whole
//! input. With STLS first (a bit of the first byte), nothing but STLS is
//! sent before the host's handshake, which `tls_established` answers.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pop3_proto::{ClientError, ClientEvent, ClientSession, Command, Interrupt};

fn commands() -> Vec<Command> {
    vec![
        Command::Capa,
        Command::Stat,
        Command::List(None),
        Command::Uidl(None),
        Command::Retr(1),
        Command::Top { msg: 1, lines: 2 },
        Command::Auth {
            mechanism: Some("LOGIN".into()),
            initial_response: None,
        },
        Command::Quit,
    ]
}

/// Events, the final error, and whether STLS was answered `+OK`.
fn run(input: &[u8], step: usize, stls: bool) -> (Vec<ClientEvent>, Option<ClientError>, bool) {
    let mut c = ClientSession::new();
    c.max_body = 4096;
    if stls {
        c.send(Command::Stls);
    }
    commands().into_iter().for_each(|cmd| c.send(cmd));
    let mut evs = Vec::new();
    let mut upgraded = false;
    for piece in input.chunks(step) {
        c.enqueue_input(Duration::ZERO, piece);
        loop {
            match c.next() {
                Ok(ClientEvent::Failed(e)) => {
                    // Errors are final.
                    assert_eq!(c.next(), Err(Interrupt::Close));
                    return (evs, Some(e), upgraded);
                }
                Ok(e) => evs.push(e),
                Err(Interrupt::Output(b)) => {
                    // The other commands are held back behind STLS until
                    // it is answered.
                    let answered = evs.iter().any(|e| {
                        matches!(
                            e,
                            ClientEvent::Response {
                                command: Command::Stls,
                                ..
                            }
                        )
                    });
                    if stls && !answered {
                        assert_eq!(b, b"STLS\r\n");
                    }
                }
                Err(Interrupt::NeedInput) => break,
                Err(Interrupt::AwaitingHost) => {
                    assert!(stls && !upgraded);
                    c.tls_established().unwrap();
                    assert!(c.tls_active());
                    upgraded = true;
                    // The rest of this piece was discarded with the
                    // clear-text input.
                }
                Err(Interrupt::Close) => unreachable!("close without failure"),
            }
        }
    }
    (evs, None, upgraded)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 13) + 1;
    let stls = (split / 13) & 1 != 0;
    let a = run(input, step, stls);
    let b = run(input, input.len().max(1), stls);
    // A body over the limit may be detected at a different point, and a
    // line over the status limit likewise; otherwise results must match.
    // After STLS the input discarded depends on the split.
    if a.1.is_none() && b.1.is_none() && !a.2 && !b.2 {
        assert_eq!(a.0, b.0);
    }
    for e in &a.0 {
        if let ClientEvent::MultiLine { body, .. } = e {
            assert!(body.len() <= 4096 + input.len());
        }
    }
});
