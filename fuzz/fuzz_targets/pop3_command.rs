//! Command parser: never panics; whatever parses formats back to a line
//! that parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::parse(data) {
        let line = cmd.to_bytes();
        let again = Command::parse(line.strip_suffix(b"\r\n").unwrap_or(&line));
        assert_eq!(again.as_ref(), Ok(&cmd), "round trip of {data:?}");
    }
});
