//! Status-line parser and un-stuffer: never panic; parsed lines format
//! back to lines that parse the same; un-stuffing then stuffing restores
//! the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::{stuff, DotUnstuffer, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Response::parse(data) {
        let line = r.to_bytes();
        let again = Response::parse(line.strip_suffix(b"\r\n").unwrap_or(&line));
        assert_eq!(again.as_ref(), Ok(&r));
    }
    // Any byte stream: un-stuff it as a multi-line body, in two pieces.
    let mid = data.len() / 2;
    let mut u = DotUnstuffer::new();
    let mut body = Vec::new();
    let end = match u.push(&data[..mid], &mut body) {
        Some(n) => Some(n),
        None => u.push(&data[mid..], &mut body).map(|n| n + mid),
    };
    if let Some(n) = end {
        // Re-stuffing the body gives a stream that un-stuffs to the same
        // body (it need not equal the input: ".x" and "x" differ only in
        // optional stuffing for lines not starting with a dot).
        let restuffed = stuff(&body);
        let mut u2 = DotUnstuffer::new();
        let mut body2 = Vec::new();
        assert_eq!(u2.push(&restuffed, &mut body2), Some(restuffed.len()));
        if body.is_empty() || body.ends_with(b"\n") {
            assert_eq!(body2, body);
        }
        assert!(n <= data.len());
    }
});
