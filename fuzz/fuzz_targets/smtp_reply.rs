//! Reply parser: no panic; a parsed reply formats to bytes that parse back
//! to the same reply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::Reply;

fuzz_target!(|data: &[u8]| {
    if let Ok((reply, used)) = Reply::parse(data) {
        assert!(used <= data.len());
        let bytes = reply.to_bytes();
        let (again, n) = Reply::parse(&bytes).expect("formatted reply must parse");
        assert_eq!(n, bytes.len());
        assert_eq!(again.code(), reply.code());
        assert_eq!(again.to_bytes(), bytes);
    }
});
