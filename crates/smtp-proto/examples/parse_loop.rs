//! Parse a few command lines many times (for instruction counting).
use std::hint::black_box;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let line: &[u8] = match which.as_str() {
        "rcpt" => b"RCPT TO:<user1@csuvnetwork.com>",
        "params" => b"MAIL FROM:<user2@mail.csuvnetwork.com> SIZE=1234 BODY=8BITMIME AUTH=<>",
        _ => b"MAIL FROM:<user2@mail.csuvnetwork.com> SIZE=1234",
    };
    let mut ok = 0;
    for _ in 0..100_000 {
        ok += usize::from(black_box(smtp_proto::Command::parse(black_box(line))).is_ok());
    }
    println!("{ok}");
}
