//! Aliases parsing never panics and every entry can be looked up.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailstore::AliasMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = AliasMap::parse(text, Path::new("fuzz"));
    for (name, targets) in m.entries() {
        assert_eq!(m.get(name), Some(targets));
        assert!(!name.is_empty());
    }
});
