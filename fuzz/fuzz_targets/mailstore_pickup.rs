//! A pickup file (what `sendmail` leaves for smtpd) parses or is refused,
//! never panics; what parses has recipients and a body that is a suffix of
//! the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = mailstore::pickup::parse(data) {
        assert!(!m.recipients.is_empty());
        assert!(data.ends_with(&m.content));
    }
});
