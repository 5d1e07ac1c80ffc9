//! The framing layer: the one place where input bytes are cut into units.
//!
//! Like imap-codec's `Fragmentizer`, the [`Framer`] knows nothing of command
//! syntax; it only cuts the input into
//!
//! * command lines and SASL responses ([`Frame::Line`]), capped in size: an
//!   oversized line is skipped to its end and reported as
//!   [`Frame::LineTooLong`], so no tail of it is ever read as a command;
//! * DATA bodies ([`Framer::expect_data`]): dot-unstuffed chunks
//!   ([`Frame::Data`]) and the end ([`Frame::DataEnd`]) at the standard
//!   `<CRLF>.<CRLF>` only;
//! * BDAT chunks ([`Framer::expect_chunk`]): exactly the announced number of
//!   octets ([`Frame::Chunk`], [`Frame::ChunkEnd`]), never looked into.
//!
//! The session switches mode; when a DATA body or BDAT chunk ends, the
//! framer returns to line mode by itself.
//!
//! # Line ends and SMTP smuggling
//!
//! A line ends at LF. A line ending in CRLF is standard; one ending in a
//! bare LF is reported (`bare_lf`) so the session can apply its
//! [`BareLf`] policy. A bare CR is never a line end.
//!
//! In a DATA body the end is a line `.` CRLF whose previous line ended in a
//! real CRLF (the CRLF of the DATA command counts for the first line), as
//! RFC 5321 section 4.1.1.4 defines `<CRLF>.<CRLF>`. A line ending in a bare
//! LF therefore never takes part in the end of data: under
//! [`BareLf::Normalize`] it is passed on with CRLF, under [`BareLf::Reject`]
//! it is passed on as is and [`Frame::DataEnd`] says `bare_lf: true` so
//! that the session refuses the message. `\n.\n`, `\r\n.\n`, `\n.\r\n`,
//! `\r.\r\n` and `\r\n.\r` thus never end a message (CVE-2023-51764 and
//! relatives).
//!
//! A bare CR inside a DATA body is passed on as a space (RFC 5321
//! section 2.3.8 allows CR only before LF; Postfix stores it so), so that
//! `<CR>.<CR>` cannot end a relayed copy early at a laxer next hop.
//!
//! Other lines that start with `.` and have more on them lose that dot
//! (RFC 5321 section 4.5.2); a lone `.` that does not end the data is kept
//! as it is.
//!
//! Memory: the framer holds what the host enqueued and has not been framed,
//! plus at most `line_cap` octets of a command line, or two octets of a
//! DATA line (a pending `.` or CR whose meaning depends on the next byte).

/// A consumed input buffer larger than this is released.
const KEEP_CAPACITY: usize = 4096;

/// Largest input window one [`Frame::Data`] is cut from.
pub const DATA_WINDOW: usize = 64 * 1024;

/// What to do with a line that ends in a bare LF (Postfix 3.9
/// `smtpd_forbid_bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Accept the line as if it ended in CRLF (DATA lines are stored with
    /// CRLF), but never let it take part in the end of data.
    #[default]
    Normalize,
    /// Refuse: a command line is answered with an error and not executed;
    /// a message containing one is refused with `550 5.5.2` after its end.
    Reject,
}

/// One unit cut from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not enough buffered input for the next unit.
    NeedMore,
    /// A complete line without its line end.
    Line {
        /// Line contents, without CRLF or LF.
        line: &'a [u8],
        /// The line ended in a bare LF.
        bare_lf: bool,
        /// Octets the line occupied, line end included.
        len: usize,
    },
    /// A line longer than the cap was skipped through its line end.
    LineTooLong,
    /// Dot-unstuffed DATA body octets (never empty).
    Data(Vec<u8>),
    /// The DATA body ended; the framer is back in line mode.
    DataEnd {
        /// The body contained a line ending in a bare LF.
        bare_lf: bool,
    },
    /// BDAT chunk octets (never empty).
    Chunk(Vec<u8>),
    /// The BDAT chunk is complete; the framer is back in line mode.
    ChunkEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Line,
    Data {
        at_line_start: bool,
        prev_crlf: bool,
        bare_lf: bool,
    },
    Chunk {
        remaining: u64,
    },
    /// The end was seen after some final body octets; report it next.
    DataEndPending {
        bare_lf: bool,
    },
}

/// Cuts buffered input into [`Frame`]s. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    pos: usize,
    mode: Mode,
    policy: BareLf,
    line_cap: usize,
    skipping: bool,
    /// Octets after `pos` already searched for LF (no rescanning when a
    /// long line arrives a byte at a time).
    scanned: usize,
}

impl Framer {
    /// A framer in line mode. `line_cap` is the largest line (line end
    /// included) ever returned; longer lines are skipped.
    pub fn new(line_cap: usize, policy: BareLf) -> Self {
        Framer {
            buf: Vec::new(),
            pos: 0,
            mode: Mode::Line,
            policy,
            line_cap: line_cap.max(3),
            skipping: false,
            scanned: 0,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Change the largest line returned from now on (POP3 allows longer
    /// SASL responses than command lines, RFC 5034 section 4).
    pub fn set_line_cap(&mut self, line_cap: usize) {
        self.line_cap = line_cap.max(3);
    }

    /// Bytes of memory the input buffer holds (framed or not).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Octets buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drop everything buffered (after `220 Ready to start TLS`, RFC 3207
    /// section 4.2: plaintext pipelined after STARTTLS must not be
    /// executed once TLS is up).
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.skipping = false;
        self.scanned = 0;
    }

    /// Switch to DATA body mode (after sending 354).
    pub fn expect_data(&mut self) {
        self.mode = Mode::Data {
            at_line_start: true,
            prev_crlf: true,
            bare_lf: false,
        };
    }

    /// Switch to BDAT chunk mode for `size` octets (also when the chunk
    /// is to be discarded: its octets must never be read as commands).
    pub fn expect_chunk(&mut self, size: u64) {
        self.mode = Mode::Chunk { remaining: size };
    }

    /// True in line mode (commands and SASL responses).
    pub fn in_line_mode(&self) -> bool {
        self.mode == Mode::Line
    }

    /// Cut the next unit.
    pub fn next_frame(&mut self) -> Frame<'_> {
        if self.pos == self.buf.len() && self.buf.capacity() > KEEP_CAPACITY {
            // Everything is framed: give a large buffer back, so a
            // connection that goes idle after a big message holds none.
            self.buf = Vec::new();
            self.pos = 0;
            self.scanned = 0;
        }
        match self.mode {
            Mode::Line => self.line(),
            Mode::Data {
                at_line_start,
                prev_crlf,
                bare_lf,
            } => self.data(at_line_start, prev_crlf, bare_lf),
            Mode::DataEndPending { bare_lf } => {
                self.mode = Mode::Line;
                Frame::DataEnd { bare_lf }
            }
            Mode::Chunk { remaining } => {
                if remaining == 0 {
                    self.mode = Mode::Line;
                    return Frame::ChunkEnd;
                }
                let avail = self.buf.get(self.pos..).unwrap_or_default();
                if avail.is_empty() {
                    return Frame::NeedMore;
                }
                let n = usize::try_from(remaining).map_or(avail.len(), |r| r.min(avail.len()));
                let chunk = avail.get(..n).unwrap_or_default().to_vec();
                self.pos += n;
                self.mode = Mode::Chunk {
                    remaining: remaining - n as u64,
                };
                Frame::Chunk(chunk)
            }
        }
    }

    fn line(&mut self) -> Frame<'_> {
        loop {
            let avail = self.buf.get(self.pos..).unwrap_or_default();
            if self.skipping {
                match memchr::memchr(b'\n', avail) {
                    None => {
                        self.pos = self.buf.len();
                        return Frame::NeedMore;
                    }
                    Some(off) => {
                        self.pos += off + 1;
                        self.skipping = false;
                        return Frame::LineTooLong;
                    }
                }
            }
            let scan = avail
                .get(..self.line_cap.min(avail.len()))
                .unwrap_or_default();
            let from = self.scanned.min(scan.len());
            let found = memchr::memchr(b'\n', scan.get(from..).unwrap_or_default());
            match found.map(|o| o + from) {
                Some(off) => {
                    self.scanned = 0;
                    let start = self.pos;
                    self.pos += off + 1;
                    let raw = self.buf.get(start..start + off).unwrap_or_default();
                    let (line, bare_lf) = match raw.strip_suffix(b"\r") {
                        Some(l) => (l, false),
                        None => (raw, true),
                    };
                    return Frame::Line {
                        line,
                        bare_lf,
                        len: off + 1,
                    };
                }
                None if avail.len() >= self.line_cap => {
                    // Oversized: drop what we have and skip to the line end.
                    self.skipping = true;
                    self.scanned = 0;
                }
                None => {
                    self.scanned = scan.len();
                    return Frame::NeedMore;
                }
            }
        }
    }

    fn data(&mut self, mut at_line_start: bool, mut prev_crlf: bool, mut bare: bool) -> Frame<'_> {
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        // At most DATA_WINDOW octets per frame: bounded chunks for the host
        // and allocations small enough to be reused. Stopping anywhere is
        // safe: it is the same as the input arriving in two pieces.
        let avail = avail.get(..DATA_WINDOW).unwrap_or(avail);
        let mut out = Vec::with_capacity(avail.len() + avail.len() / 64);
        let mut i = 0usize; // next unexamined byte
        let mut run = 0usize; // first byte not yet copied to `out`
        let mut ended = false;
        loop {
            if at_line_start {
                let Some(&first) = avail.get(i) else { break };
                if first == b'.' {
                    match (avail.get(i + 1), avail.get(i + 2)) {
                        (None, _) | (Some(b'\r'), None) => break, // undecidable yet
                        (Some(b'\r'), Some(b'\n')) if prev_crlf => {
                            out.extend_from_slice(avail.get(run..i).unwrap_or_default());
                            i += 3;
                            run = i;
                            ended = true;
                            break;
                        }
                        // A lone "." that does not end the data (it ends
                        // in a bare LF, or follows one): RFC 5321 section
                        // 4.5.2 removes a leading dot only when "there are
                        // other characters on the line", so it is kept;
                        // dropping it would turn the smuggling attempt
                        // into a silently altered blank line.
                        (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => {}
                        _ => {
                            // Dot-stuffed line (RFC 5321 section 4.5.2).
                            out.extend_from_slice(avail.get(run..i).unwrap_or_default());
                            run = i + 1;
                        }
                    }
                }
                at_line_start = false;
            }
            let rest = avail.get(i..).unwrap_or_default();
            // One pass finds both line ends and bare CRs.
            let Some(off) = memchr::memchr2(b'\r', b'\n', rest) else {
                // Partial line, no CR in it: pass it on.
                i = avail.len();
                break;
            };
            let at = i + off;
            if avail.get(at) == Some(&b'\r') {
                match avail.get(at + 1) {
                    // CRLF: the line ends.
                    Some(b'\n') => {
                        prev_crlf = true;
                        i = at + 2;
                        at_line_start = true;
                    }
                    // A bare CR: passed on as a space (RFC 5321 section
                    // 2.3.8 allows CR only before LF; Postfix stores it
                    // so), and the line goes on.
                    Some(_) => {
                        out.extend_from_slice(avail.get(run..at).unwrap_or_default());
                        out.push(b' ');
                        run = at + 1;
                        i = at + 1;
                    }
                    // A trailing CR: its meaning (CRLF or bare CR) depends
                    // on the next byte, so it waits.
                    None => {
                        i = at;
                        break;
                    }
                }
                continue;
            }
            // A bare LF (a CR before it would have been found first).
            prev_crlf = false;
            match self.policy {
                BareLf::Normalize => {
                    out.extend_from_slice(avail.get(run..at).unwrap_or_default());
                    out.extend_from_slice(b"\r\n");
                    run = at + 1;
                }
                BareLf::Reject => bare = true,
            }
            i = at + 1;
            at_line_start = true;
        }
        out.extend_from_slice(avail.get(run..i.max(run)).unwrap_or_default());
        self.pos += i;
        if ended {
            self.mode = Mode::Line;
            if out.is_empty() {
                return Frame::DataEnd { bare_lf: bare };
            }
            // Report the tail first; DataEnd follows on the next call.
            self.mode = Mode::DataEndPending { bare_lf: bare };
            return Frame::Data(out);
        }
        self.mode = Mode::Data {
            at_line_start,
            prev_crlf,
            bare_lf: bare,
        };
        if out.is_empty() {
            Frame::NeedMore
        } else {
            Frame::Data(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes and collect the DATA result.
    fn data(input: &[u8], policy: BareLf, step: usize) -> (Vec<u8>, Option<bool>, Vec<u8>) {
        let mut f = Framer::new(512, policy);
        f.expect_data();
        let mut body = Vec::new();
        let mut end = None;
        for piece in input.chunks(step.max(1)) {
            f.push(piece);
            loop {
                match f.next_frame() {
                    Frame::NeedMore => break,
                    Frame::Data(d) => {
                        assert!(!d.is_empty());
                        assert!(end.is_none());
                        body.extend_from_slice(&d);
                    }
                    Frame::DataEnd { bare_lf } => {
                        end = Some(bare_lf);
                    }
                    Frame::Line { .. } => break,
                    other => panic!("{other:?}"),
                }
                if end.is_some() {
                    break;
                }
            }
        }
        let rest = f.buf[f.pos..].to_vec();
        (body, end, rest)
    }

    fn all_steps(input: &[u8], policy: BareLf) -> (Vec<u8>, Option<bool>, Vec<u8>) {
        let whole = data(input, policy, input.len());
        for step in 1..input.len() {
            assert_eq!(data(input, policy, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn large_buffer_released_once_framed() {
        let mut f = Framer::new(512, BareLf::Normalize);
        f.expect_data();
        let body = vec![b'x'; 100_000];
        f.push(&body);
        f.push(b"\r\n.\r\n");
        while !matches!(f.next_frame(), Frame::DataEnd { .. }) {}
        assert!(matches!(f.next_frame(), Frame::NeedMore));
        assert!(f.capacity() <= KEEP_CAPACITY);
        // A partial line keeps its bytes.
        f.push(b"NOOP");
        assert!(matches!(f.next_frame(), Frame::NeedMore));
        assert_eq!(f.buffered(), 4);
    }

    #[test]
    fn lines_and_caps() {
        let mut f = Framer::new(10, BareLf::Normalize);
        assert_eq!(f.next_frame(), Frame::NeedMore);
        f.push(b"NOOP\r\nQUIT\n12345678\r\n123456789\r\nx");
        assert_eq!(
            f.next_frame(),
            Frame::Line {
                line: b"NOOP",
                bare_lf: false,
                len: 6
            }
        );
        assert_eq!(
            f.next_frame(),
            Frame::Line {
                line: b"QUIT",
                bare_lf: true,
                len: 5
            }
        );
        // Exactly the cap, line end included.
        assert!(matches!(f.next_frame(), Frame::Line { len: 10, .. }));
        assert_eq!(f.next_frame(), Frame::LineTooLong);
        assert_eq!(f.next_frame(), Frame::NeedMore);
        assert_eq!(f.buffered(), 1);
        assert!(f.in_line_mode());
        // Bare CR is not a line end.
        f.push(b"\ry\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Line {
                line: b"x\ry",
                bare_lf: false,
                len: 5
            }
        );
    }

    #[test]
    fn line_fed_a_byte_at_a_time() {
        let mut f = Framer::new(64, BareLf::Normalize);
        let input = b"NOOP abcdefghijklmnopqrstuvwxyz\r\nQUIT\r\n";
        let mut lines = Vec::new();
        for &b in input.iter() {
            f.push(&[b]);
            while let Frame::Line { line, .. } = f.next_frame() {
                lines.push(line.to_vec());
            }
        }
        assert_eq!(
            lines,
            vec![
                b"NOOP abcdefghijklmnopqrstuvwxyz".to_vec(),
                b"QUIT".to_vec()
            ]
        );
    }

    #[test]
    fn oversized_line_skipped_across_pushes() {
        let mut f = Framer::new(16, BareLf::Normalize);
        f.push(&[b'a'; 40]);
        assert_eq!(f.next_frame(), Frame::NeedMore);
        assert_eq!(f.buffered(), 0, "skipped bytes are dropped");
        f.push(b"QUIT\r\nNOOP\r\n");
        assert_eq!(f.next_frame(), Frame::LineTooLong);
        assert!(matches!(f.next_frame(), Frame::Line { line: b"NOOP", .. }));
    }

    #[test]
    fn data_unstuffing_and_end() {
        let (body, end, rest) = all_steps(b"a\r\n..b\r\n.c\r\n\r\n.\r\nNEXT", BareLf::Normalize);
        assert_eq!(body, b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(end, Some(false));
        assert_eq!(rest, b"NEXT");
        // The CRLF of the DATA command counts: an immediate "." ends.
        let (body, end, _) = all_steps(b".\r\n", BareLf::Normalize);
        assert_eq!((body.as_slice(), end), (&b""[..], Some(false)));
        // Lines without a line end are passed on as they come, a bare CR
        // as a space (RFC 5321 section 2.3.8), whatever the split.
        let (body, end, _) = all_steps(b"abc\rdef", BareLf::Normalize);
        assert_eq!((body.as_slice(), end), (&b"abc def"[..], None));
        let (body, end, _) = all_steps(b"a\r\rb\r\r\nc\r.\r\n.\r\n", BareLf::Normalize);
        assert_eq!(
            (body.as_slice(), end),
            (&b"a  b \r\nc .\r\n"[..], Some(false))
        );
    }

    #[test]
    fn smuggling_vectors_never_end_data() {
        // Each vector with the number of its dots the body keeps: a lone
        // "." stays, a dot not at a line start is data, and ".\r" + more
        // loses only its stuffing dot.
        for (v, kept) in [
            (&b"\n.\n"[..], 1),
            (b"\r\n.\n", 1),
            (b"\n.\r\n", 1),
            (b"\r.\r\n", 1),
            (b"\r\n.\r", 0),
            (b"\r\n.\rX\r\n", 0),
        ] {
            for policy in [BareLf::Normalize, BareLf::Reject] {
                let mut input = b"x".to_vec();
                input.extend_from_slice(v);
                input.extend_from_slice(b"MAIL FROM:<a@b.c>\r\n");
                let (body, end, _) = all_steps(&input, policy);
                assert_eq!(end, None, "{v:?} {policy:?} ended the data");
                assert!(body.ends_with(b"MAIL FROM:<a@b.c>\r\n"));
                let dots = body.iter().filter(|&&c| c == b'.').count();
                assert_eq!(dots, 1 + kept, "{v:?} {policy:?}");
                // Only the real end ends it.
                input.extend_from_slice(b".\r\n");
                let (_, end, rest) = all_steps(&input, policy);
                let has_bare_lf = v
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b == b'\n' && (i == 0 || v[i - 1] != b'\r'));
                assert_eq!(
                    end,
                    Some(policy == BareLf::Reject && has_bare_lf),
                    "{v:?} {policy:?}"
                );
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn bare_lf_normalised() {
        // A lone "." that does not end the data keeps its dot (RFC 5321
        // section 4.5.2 removes it only from lines with more on them).
        let (body, end, _) = all_steps(b"a\nb\r\n.\n..\n\n.\r\n", BareLf::Normalize);
        assert_eq!(body, b"a\r\nb\r\n.\r\n.\r\n\r\n.\r\n");
        // "\n.\r\n" after "\n": the preceding line ended in bare LF, so the
        // terminator is not recognised until a line ending in CRLF.
        assert_eq!(end, None);
        let (body, end, _) = all_steps(b"a\nb\r\n.\r\n", BareLf::Reject);
        assert_eq!(body, b"a\nb\r\n");
        assert_eq!(end, Some(true));
    }

    #[test]
    fn chunks_are_exact() {
        let mut f = Framer::new(512, BareLf::Normalize);
        f.push(b"ab\r\n.\r\nQUIT\r\n");
        f.expect_chunk(5);
        assert_eq!(f.next_frame(), Frame::Chunk(b"ab\r\n.".to_vec()));
        assert_eq!(f.next_frame(), Frame::ChunkEnd);
        assert!(f.in_line_mode());
        assert!(matches!(f.next_frame(), Frame::Line { line: b"", .. }));
        f.expect_chunk(0);
        assert_eq!(f.next_frame(), Frame::ChunkEnd);
        f.expect_chunk(10);
        assert_eq!(f.next_frame(), Frame::Chunk(b"QUIT\r\n".to_vec()));
        assert_eq!(f.next_frame(), Frame::NeedMore);
        f.push(b"1234567");
        assert_eq!(f.next_frame(), Frame::Chunk(b"1234".to_vec()));
        assert_eq!(f.next_frame(), Frame::ChunkEnd);
        assert_eq!(f.buffered(), 3);
        f.discard_buffered();
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn compaction_keeps_content() {
        let mut f = Framer::new(512, BareLf::Normalize);
        let line = format!("NOOP {}\r\n", "x".repeat(100));
        for _ in 0..200 {
            f.push(line.as_bytes());
            f.push(&line.as_bytes()[..10]);
            assert!(matches!(f.next_frame(), Frame::Line { len: 107, .. }));
            f.push(&line.as_bytes()[10..]);
            assert!(matches!(f.next_frame(), Frame::Line { len: 107, .. }));
        }
        assert_eq!(f.next_frame(), Frame::NeedMore);
    }
}
