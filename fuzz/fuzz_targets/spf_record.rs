//! `mail_auth_glue::spf::record` on any text: parsing never panics, and a
//! record that parses writes back as text that parses to the same record
//! (the serialise/parse pair the proptest checks, on inputs it would not
//! think of). Macro-strings are parsed alone too, as explanations are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_auth_glue::spf::record::{MacroString, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Record::parse(text) {
        let again = r.to_string();
        assert_eq!(
            Record::parse(&again).as_ref(),
            Ok(&r),
            "{text:?} -> {again:?}"
        );
    }
    for exp in [false, true] {
        if let Ok(m) = MacroString::parse(text, exp) {
            assert_eq!(MacroString::parse(&m.to_string(), exp).as_ref(), Ok(&m));
        }
    }
});
