//! passwd-file parsing and password checks never panic; every account the
//! parser yields can be looked up again by its name (ASCII case-insensitively).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailstore::PasswdFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = PasswdFile::parse(text, Path::new("fuzz"));
    for a in f.accounts() {
        assert!(f.get(&a.name).is_some());
        if a.name.is_ascii() {
            assert!(f.get(&a.name.to_ascii_uppercase()).is_some());
        }
        // Cheap schemes only: crypt rounds could make a run slow.
        if matches!(a.scheme, mailstore::Scheme::Plain) {
            let _ = f.verify(&a.name, b"password");
            let _ = f.plain_secret(&a.name);
        }
    }
});
