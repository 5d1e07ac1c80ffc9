//! Queue journal recovery: any segment file parses without panicking.
//! Half the inputs are raw files (headers and checksums rarely hold); the
//! other half are cut into records that get valid checksums, so the
//! payload decoder sees arbitrary mailboxes, ids, names and contents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstore::queue::{fuzz_build_segment, fuzz_parse_segment};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        fuzz_parse_segment(rest);
        return;
    }
    // [kind][len][payload...] repeated.
    let mut records = Vec::new();
    let mut input = rest;
    while let [kind, len, tail @ ..] = input {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        records.push((kind % 3, payload));
        input = next;
    }
    let file = fuzz_build_segment(&records);
    let decoded = fuzz_parse_segment(&file);
    assert!(decoded <= records.len());
});
