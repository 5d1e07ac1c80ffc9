//! What sendmail does to a message and its command line never panics: the
//! prepared message has CRLF line ends only, and every recipient taken
//! from the headers is non-empty and qualified.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let inv = sendmail::Invocation {
        extract_recipients: flags & 1 != 0,
        ignore_dots: flags & 2 != 0,
        full_name: (flags & 4 != 0).then(|| "A \"B\" C".to_owned()),
        ..sendmail::Invocation::default()
    };
    let message = sendmail::read_message(rest, inv.ignore_dots);
    let (out, rcpts) = sendmail::prepare(
        message,
        &inv,
        "s@h.example",
        "h.example",
        std::time::UNIX_EPOCH,
    );
    for (i, b) in out.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r');
        }
    }
    for r in &rcpts {
        assert!(!r.is_empty() && r.contains('@'));
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = sendmail::parse_args(text.split(' '));
        let _ = sendmail::split_addresses(text);
    }
});
