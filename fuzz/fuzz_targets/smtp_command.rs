//! Command parser: no panic; whatever parses formats to a line that parses
//! back to the same command.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::parse(data) {
        let line = cmd.to_string();
        let again = Command::parse(line.as_bytes()).expect("formatted command must parse");
        assert_eq!(again, cmd);
        assert_eq!(cmd.clone().into_owned(), cmd);
    }
});
