//! The RFC 3461 parameter parsers of `mailstore::dsn` never panic, and
//! whatever they accept survives the trip back to the wire: encoding a
//! parsed value and parsing it again gives the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstore::dsn::{
    utf8_addr_decode, utf8_addr_encode, xtext_decode, xtext_encode, Envid, Notify, Orcpt, Ret,
    Status,
};

fuzz_target!(|data: &[u8]| {
    // Raw octets as xtext input to encode.
    let enc = xtext_encode(data);
    assert_eq!(xtext_decode(&enc).as_deref(), Ok(data));

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = xtext_decode(s) {
        assert_eq!(xtext_decode(&xtext_encode(&raw)), Ok(raw));
    }
    if let Ok(n) = Notify::parse(s) {
        assert_eq!(Notify::parse(&n.to_string()), Ok(n));
    }
    if let Ok(r) = Ret::parse(s) {
        assert_eq!(Ret::parse(r.as_str()), Ok(r));
    }
    if let Ok(e) = Envid::parse(s) {
        assert!(e.as_str().bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert_eq!(Envid::parse(&e.to_xtext()).as_ref(), Ok(&e));
    }
    if let Ok(o) = Orcpt::parse(s) {
        let p = o.to_param();
        assert!(p.is_ascii());
        // Re-encoding may lengthen past the 500 limit; compare only when
        // it fits.
        if p.len() <= mailstore::dsn::ORCPT_MAX {
            assert_eq!(Orcpt::parse(&p).as_ref(), Ok(&o));
        }
    }
    if let Ok(a) = utf8_addr_decode(s) {
        assert_eq!(utf8_addr_decode(&utf8_addr_encode(&a)).as_ref(), Ok(&a));
    }
    if let Some(st) = Status::parse(s) {
        assert_eq!(Status::parse(&st.to_string()), Some(st));
    }
});
