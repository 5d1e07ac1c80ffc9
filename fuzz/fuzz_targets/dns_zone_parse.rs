//! Zone-file parser and checker on arbitrary bytes: no panics, bounded work.
#![no_main]

use dns_zone::{parse, IncludeLoader, Name, ParseOptions, Zone};
use libfuzzer_sys::fuzz_target;

/// Every `$INCLUDE` gets the same small file (exercises nesting limits).
struct Loader;

impl IncludeLoader for Loader {
    fn load(&mut self, path: &str, _including: &str) -> Result<(String, Vec<u8>), String> {
        if path.len() % 2 == 0 {
            Ok((
                path.to_string(),
                format!("inc{} A 192.0.2.1\n$INCLUDE {path}x\n", path.len()).into_bytes(),
            ))
        } else {
            Err("no".into())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(origin) = Name::parse("example.com.", None) else {
        return;
    };
    let opts = ParseOptions {
        origin: Some(origin.clone()),
        max_include_depth: 4,
        max_generate: 256,
    };
    let parsed = parse(data, "fuzz.zone", &opts, &mut Loader);
    for e in &parsed.errors {
        let _ = e.to_string();
    }
    for r in &parsed.records {
        let _ = r.owner.to_string();
    }
    if parsed.errors.is_empty() {
        let _ = Zone::build(&origin, parsed.records);
    }
});
