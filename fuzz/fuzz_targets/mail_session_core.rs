//! The shared core's parsers fed arbitrary bytes: the server SASL exchange
//! (every mechanism, any sequence of client lines) and the framer in line,
//! DATA and chunk modes. Checks: no panic; a completed exchange yields
//! credentials whose user name is never empty; framing the same input in
//! one piece or in small pieces gives the same frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_session::sasl::{Mechanism, ServerExchange, ServerStep};
use mail_session::{BareLf, Frame, Framer};

fn frames(input: &[u8], step: usize, policy: BareLf) -> Vec<String> {
    let mut f = Framer::new(64, policy);
    let mut out = Vec::new();
    let mut data = Vec::new();
    for piece in input.chunks(step.max(1)) {
        f.push(piece);
        loop {
            match f.next_frame() {
                Frame::NeedMore => break,
                Frame::Line { line, bare_lf, .. } => {
                    let line = line.to_vec();
                    // A line "DATA" switches to a body, "BDAT n" to a chunk.
                    if line.eq_ignore_ascii_case(b"DATA") {
                        f.expect_data();
                    } else if let Some(n) = line.strip_prefix(b"BDAT ") {
                        let n = std::str::from_utf8(n)
                            .ok()
                            .and_then(|n| n.parse::<u64>().ok());
                        f.expect_chunk(n.unwrap_or(0) % 300);
                    }
                    out.push(format!("L{bare_lf}:{line:?}"));
                }
                Frame::LineTooLong => out.push("long".into()),
                // Data and chunk octets may be cut anywhere: compare their
                // concatenation at the next boundary.
                Frame::Data(d) | Frame::Chunk(d) => data.extend_from_slice(&d),
                Frame::DataEnd { bare_lf } => {
                    out.push(format!("D{bare_lf}:{:?}", std::mem::take(&mut data)));
                }
                Frame::ChunkEnd => out.push(format!("C:{:?}", std::mem::take(&mut data))),
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let policy = if ctl & 1 == 0 {
        BareLf::Normalize
    } else {
        BareLf::Reject
    };
    let step = usize::from(ctl >> 1) % 7 + 1;
    assert_eq!(frames(rest, step, policy), frames(rest, rest.len(), policy));

    let mech = Mechanism::ALL[usize::from(ctl) % Mechanism::ALL.len()];
    let mut lines = rest.split(|&b| b == b'\n');
    let initial = if ctl & 0x80 != 0 { lines.next() } else { None };
    let mut step = ServerExchange::start(mech, initial, "<1.2@fuzz>");
    loop {
        match step {
            ServerStep::Challenge(state, _) => match lines.next() {
                Some(l) => step = state.step(l),
                None => break,
            },
            ServerStep::Done(c) => {
                assert!(!c.username().is_empty());
                break;
            }
            ServerStep::Cancelled | ServerStep::BadBase64 | ServerStep::Malformed => break,
        }
    }
});
