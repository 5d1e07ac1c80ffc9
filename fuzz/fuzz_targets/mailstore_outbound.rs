//! Reading an outbound queue message back from its two files never panics,
//! whatever they hold: the first byte splits the input into the `.msg`
//! file's start and the log. A message read back has a final state for a
//! recipient only if a log line with a good CRC said so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstore::outbound::{decode, RcptState};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (usize::from(cut) * rest.len() / 255).min(rest.len());
    let (head, log) = rest.split_at(cut);
    if let Ok(m) = decode("F1", head, head.len() as u64, log) {
        assert_eq!(m.envelope.id, "F1");
        assert_eq!(m.recipients.len(), m.envelope.recipients.len());
        for r in &m.recipients {
            if r.state != RcptState::Pending {
                assert!(r.attempts > 0 && r.last.is_some());
            }
        }
        assert!(m.size <= head.len() as u64);
    }
});
