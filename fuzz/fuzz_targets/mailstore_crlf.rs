//! CRLF -> LF on the way in and LF -> CRLF on the way out, with arbitrary
//! chunking: the size counted while writing always equals the bytes read,
//! and CRLF-only input comes back unchanged.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use mailstore::crlf::{pop_size_of, CrlfReader, PopSizer, ToLf};

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 31) + 1;
    let mut conv = ToLf::new();
    let mut disk = Vec::new();
    for chunk in input.chunks(step) {
        conv.convert(chunk, &mut disk);
    }
    conv.finish(&mut disk);
    let mut sizer = PopSizer::new();
    for chunk in disk.chunks(step + 3) {
        sizer.update(chunk);
    }
    assert_eq!(sizer.disk, disk.len() as u64);
    let mut back = Vec::new();
    let mut r = CrlfReader::new(&disk[..]);
    let mut buf = vec![0u8; step];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(back.len() as u64, sizer.crlf);
    // The whole-buffer conversion agrees with the reader.
    let mut whole = Vec::new();
    mailstore::crlf::lf_to_crlf(&disk, &mut whole);
    assert_eq!(whole, back);
    assert_eq!(pop_size_of(&disk[..]).unwrap(), sizer.crlf);
    // Input whose every CR and LF is part of a CRLF pair round-trips.
    let pairs_only = {
        let mut ok = true;
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => i += 2,
                b'\r' | b'\n' => {
                    ok = false;
                    break;
                }
                _ => i += 1,
            }
        }
        ok
    };
    if pairs_only {
        assert_eq!(back, input);
    }
});
