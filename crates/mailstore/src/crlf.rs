//! Line-end conversion between the SMTP/POP3 wire form (CRLF) and the
//! Maildir on-disk form (LF), as Postfix's local delivery and Dovecot keep it.
//!
//! The two directions are defined so that the POP3 size is exact:
//! on disk, an LF that is *not* preceded by CR is read back as CRLF; every
//! other byte is read back unchanged. [`PopSizer`] counts with the same rule,
//! so `,W=` in the file name and [`CrlfReader`] always agree.

use std::io::{self, Read};

/// Streaming CRLF -> LF converter. Chunks may be split anywhere, including
/// between CR and LF; a CR held back at a chunk end is decided by the next
/// chunk (or emitted by [`ToLf::finish`]).
#[derive(Debug, Default, Clone)]
pub struct ToLf {
    pending_cr: bool,
}

impl ToLf {
    /// A converter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts `input`, appending the LF form to `out`.
    pub fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            if input.first() == Some(&b'\n') {
                out.push(b'\n');
                input = input.get(1..).unwrap_or_default();
            } else {
                out.push(b'\r');
            }
        }
        while let Some(pos) = input.iter().position(|&b| b == b'\r') {
            let (before, rest) = input.split_at(pos);
            out.extend_from_slice(before);
            // rest[0] is the CR.
            match rest.get(1) {
                Some(b'\n') => {
                    out.push(b'\n');
                    input = rest.get(2..).unwrap_or_default();
                }
                Some(_) => {
                    out.push(b'\r');
                    input = rest.get(1..).unwrap_or_default();
                }
                None => {
                    self.pending_cr = true;
                    return;
                }
            }
        }
        out.extend_from_slice(input);
    }

    /// Ends the stream: a trailing lone CR is kept as is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

/// Counts the on-disk size and the POP3 (CRLF) size of a byte stream as it
/// is written to disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PopSizer {
    /// Bytes on disk (`,S=`).
    pub disk: u64,
    /// Bytes when read back with CRLF line ends (`,W=`).
    pub crlf: u64,
    last_was_cr: bool,
}

impl PopSizer {
    /// A counter at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for `disk_bytes` appended to the file.
    pub fn update(&mut self, disk_bytes: &[u8]) {
        let mut prev_cr = self.last_was_cr;
        let mut bare_lf = 0u64;
        for &b in disk_bytes {
            if b == b'\n' && !prev_cr {
                bare_lf += 1;
            }
            prev_cr = b == b'\r';
        }
        if !disk_bytes.is_empty() {
            self.last_was_cr = prev_cr;
        }
        let n = disk_bytes.len() as u64;
        self.disk += n;
        self.crlf += n + bare_lf;
    }
}

/// Computes the POP3 size of a whole file's content (used when the name
/// carries no `,W=`).
pub fn pop_size_of(mut r: impl Read) -> io::Result<u64> {
    let mut sizer = PopSizer::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sizer.update(buf.get(..n).unwrap_or_default());
    }
    Ok(sizer.crlf)
}

/// Appends `src` (a stored message, LF line ends) to `dst` with every LF
/// not preceded by CR written as CRLF, as [`CrlfReader`] yields it.
pub fn lf_to_crlf(src: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(src.len() + src.len() / 32 + 2);
    let mut rest = src;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        let (run, tail) = rest.split_at(i);
        dst.extend_from_slice(run);
        // An LF right after an LF (empty run) has no CR before it either.
        if run.last() != Some(&b'\r') {
            dst.push(b'\r');
        }
        dst.push(b'\n');
        rest = tail.get(1..).unwrap_or_default();
    }
    dst.extend_from_slice(rest);
}

/// A reader that yields the CRLF form of an LF file: every LF not preceded
/// by CR comes out as CRLF. The number of bytes it yields equals
/// [`PopSizer::crlf`] for the same content.
#[derive(Debug)]
pub struct CrlfReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    prev_cr: bool,
    /// An LF whose CR has been emitted but which itself has not been yet.
    owe_lf: bool,
}

impl<R: Read> CrlfReader<R> {
    /// Wraps `inner` (positioned at the start of the message).
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0u8; 16 * 1024],
            start: 0,
            end: 0,
            prev_cr: false,
            owe_lf: false,
        }
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for CrlfReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut written = 0usize;
        if self.owe_lf {
            if let Some(slot) = out.get_mut(0) {
                *slot = b'\n';
            }
            self.owe_lf = false;
            self.prev_cr = false;
            written = 1;
        }
        loop {
            if self.start == self.end {
                if written > 0 {
                    return Ok(written);
                }
                let n = loop {
                    match self.inner.read(&mut self.buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    return Ok(0);
                }
                self.start = 0;
                self.end = n;
            }
            while self.start < self.end {
                if written >= out.len() {
                    return Ok(written);
                }
                let avail = self.buf.get(self.start..self.end).unwrap_or_default();
                let room = out.len() - written;
                // Copy the run up to the next LF (or as much as fits) at once.
                let window = avail.get(..avail.len().min(room)).unwrap_or(avail);
                let run = memchr::memchr(b'\n', window).unwrap_or(window.len());
                if run > 0 {
                    let (src, dst) = (avail.get(..run), out.get_mut(written..written + run));
                    if let (Some(src), Some(dst)) = (src, dst) {
                        dst.copy_from_slice(src);
                        self.prev_cr = src.last() == Some(&b'\r');
                    }
                    written += run;
                    self.start += run;
                    continue;
                }
                // At an LF with room for at least one byte.
                self.start += 1;
                if self.prev_cr {
                    if let Some(slot) = out.get_mut(written) {
                        *slot = b'\n';
                    }
                    written += 1;
                } else {
                    if let Some(slot) = out.get_mut(written) {
                        *slot = b'\r';
                    }
                    written += 1;
                    match out.get_mut(written) {
                        Some(slot) => {
                            *slot = b'\n';
                            written += 1;
                        }
                        None => {
                            self.owe_lf = true;
                            self.prev_cr = false;
                            return Ok(written);
                        }
                    }
                }
                self.prev_cr = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_lf_chunked(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut c = ToLf::new();
        let mut out = Vec::new();
        let mut pos = 0;
        for &cut in cuts {
            let cut = cut.min(input.len()).max(pos);
            c.convert(&input[pos..cut], &mut out);
            pos = cut;
        }
        c.convert(&input[pos..], &mut out);
        c.finish(&mut out);
        out
    }

    #[test]
    fn crlf_split_between_cr_and_lf() {
        let mut c = ToLf::new();
        let mut out = Vec::new();
        c.convert(b"a\r", &mut out);
        assert_eq!(out, b"a");
        c.convert(b"\nb\r", &mut out);
        c.convert(b"x", &mut out);
        c.finish(&mut out);
        assert_eq!(out, b"a\nb\rx");
    }

    #[test]
    fn trailing_cr_kept() {
        assert_eq!(to_lf_chunked(b"a\r", &[]), b"a\r");
        assert_eq!(to_lf_chunked(b"\r\r\n", &[1]), b"\r\n");
    }

    #[test]
    fn reader_expands_bare_lf_only() {
        let mut r = CrlfReader::new(&b"a\nb\r\nc\r\rd\n"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"a\r\nb\r\nc\r\rd\r\n");
    }

    #[test]
    fn reader_one_byte_buffer() {
        let mut r = CrlfReader::new(&b"x\n\ny"[..]);
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = r.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[..n]);
        }
        assert_eq!(out, b"x\r\n\r\ny");
    }

    proptest! {
        /// Any CRLF message, any chunking: LF on disk, CRLF back, exact size.
        #[test]
        fn round_trip_crlf_lines(lines in proptest::collection::vec("[ -~]{0,40}", 0..30),
                                 cuts in proptest::collection::vec(0usize..2000, 0..10)) {
            let mut msg = Vec::new();
            for l in &lines {
                msg.extend_from_slice(l.as_bytes());
                msg.extend_from_slice(b"\r\n");
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let disk = to_lf_chunked(&msg, &cuts);
            prop_assert!(!disk.windows(2).any(|w| w == b"\r\n"));
            let mut s = PopSizer::new();
            s.update(&disk);
            let mut back = Vec::new();
            CrlfReader::new(&disk[..]).read_to_end(&mut back).unwrap();
            prop_assert_eq!(&back, &msg);
            prop_assert_eq!(s.crlf, msg.len() as u64);
            prop_assert_eq!(s.disk, disk.len() as u64);
        }

        /// Arbitrary bytes (bare CR/LF included): sizes always equal bytes read.
        #[test]
        fn lf_to_crlf_matches_reader(data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..500)) {
            let mut via_reader = Vec::new();
            CrlfReader::new(&data[..]).read_to_end(&mut via_reader).unwrap();
            let mut direct = b"kept".to_vec();
            lf_to_crlf(&data, &mut direct);
            prop_assert_eq!(&direct[..4], b"kept");
            prop_assert_eq!(&direct[4..], &via_reader[..]);
        }

        #[test]
        fn size_matches_reader(data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..500),
                               cuts in proptest::collection::vec(0usize..500, 0..10),
                               bufsz in 1usize..20) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let disk = to_lf_chunked(&data, &cuts);
            let mut whole = Vec::new();
            ToLf::new().convert(&data, &mut whole);
            let mut t = ToLf::new();
            let mut whole2 = Vec::new();
            t.convert(&data, &mut whole2);
            t.finish(&mut whole2);
            prop_assert_eq!(&disk, &whole2);
            let mut s = PopSizer::new();
            for c in disk.chunks(7) { s.update(c); }
            let mut r = CrlfReader::new(&disk[..]);
            let mut back = Vec::new();
            let mut buf = vec![0u8; bufsz];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                back.extend_from_slice(&buf[..n]);
            }
            prop_assert_eq!(back.len() as u64, s.crlf);
            prop_assert_eq!(pop_size_of(&disk[..]).unwrap(), s.crlf);
        }
    }
}
