//! transport(5) tables parse or are refused with a line number, never
//! panic; a table that parses prints back as one that parses to the same
//! entries, and lookups of arbitrary addresses never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstore::nexthop::{decide, TransportTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = text.parse::<TransportTable>() else {
        return;
    };
    let again: TransportTable = table.to_string().parse().expect("printed table parses");
    assert_eq!(again.entries(), table.entries());
    for line in text.lines().take(8) {
        let addr = line.split_whitespace().next().unwrap_or("");
        let _ = table.lookup(addr);
        let _ = decide(addr, Some(&table), None);
    }
});
