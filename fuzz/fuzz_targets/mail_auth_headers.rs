//! `mail_auth_glue::headers` on any octets: the body offset lies inside
//! the message, every field's range lies inside the header section and
//! starts with the field's name, the `From:` domain (if any) is made of
//! lowercase letters, digits, `-` and `.`, and removing forged `Authentication-Results:`
//! fields only ever removes octets. `keys::load_pem` never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_auth_glue::headers::{body_offset, fields, from_domain, strip_forged_results};

fuzz_target!(|data: &[u8]| {
    let end = body_offset(data);
    assert!(end <= data.len());
    for f in fields(data) {
        assert!(f.range.start < f.range.end && f.range.end <= end);
        let field = &data[f.range.clone()];
        assert!(field.starts_with(f.name.as_bytes()));
        let _ = f.value(data);
    }
    if let Some(d) = from_domain(data) {
        assert!(
            d.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'),
            "unexpected domain {d:?}"
        );
    }
    for id in ["mx.example.net", ""] {
        if let Some(out) = strip_forged_results(data, id) {
            assert!(out.len() < data.len(), "nothing removed but Some returned");
        }
    }
    let _ = mail_auth_glue::keys::load_pem(data);
});
