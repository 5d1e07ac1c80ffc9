//! Client session fed arbitrary server bytes: never panics, keeps bodies
//! within its limit, and gives the same events for piecewise and whole
//! input.
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
        Command::Auth { mechanism: Some("LOGIN".into()), initial_response: None },
        Command::Quit,
    ]
}

fn run(input: &[u8], step: usize) -> (Vec<ClientEvent>, Option<ClientError>) {
    let mut c = ClientSession::new();
    c.max_body = 4096;
    commands().into_iter().for_each(|cmd| c.send(cmd));
    let mut evs = Vec::new();
    for piece in input.chunks(step) {
        c.enqueue_input(Duration::ZERO, piece);
        loop {
            match c.next() {
                Ok(ClientEvent::Failed(e)) => {
                    // Errors are final.
                    assert_eq!(c.next(), Err(Interrupt::Close));
                    return (evs, Some(e));
                }
                Ok(e) => evs.push(e),
                Err(Interrupt::Output(_)) => {}
                Err(Interrupt::NeedInput) => break,
                Err(Interrupt::Close | Interrupt::AwaitingHost) => unreachable!("close without failure"),
            }
        }
    }
    (evs, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 13) + 1;
    let a = run(input, step);
    let b = run(input, input.len().max(1));
    // A body over the limit may be detected at a different point, and a
    // line over the status limit likewise; otherwise results must match.
    if a.1.is_none() && b.1.is_none() {
        assert_eq!(a.0, b.0);
    }
    for e in &a.0 {
        if let ClientEvent::MultiLine { body, .. } = e {
            assert!(body.len() <= 4096 + input.len());
        }
    }
});
