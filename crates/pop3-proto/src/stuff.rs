//! Multi-line response bodies: byte-stuffing on the way out, un-stuffing
//! and terminator detection on the way in (RFC 1939 section 3), and the
//! `TOP` line limiter (RFC 1939 section 7).
//!
//! All three work on a stream of chunks of any size: a line may be split
//! anywhere, and no state beyond a few flags is kept between chunks.

use memchr::memmem;

/// Streaming byte-stuffer: every line that starts with `.` gets one more
/// `.` in front; [`DotStuffer::finish`] adds a missing final CRLF and the
/// `.CRLF` terminator.
///
/// The scan looks for the two-byte pattern `\n.` with a vectorised
/// substring search, so the common case (no dot-lines) is a copy.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    last_cr: bool,
    finder: memmem::Finder<'static>,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            last_cr: false,
            finder: memmem::Finder::new(b"\n."),
        }
    }

    /// Appends `input`, stuffed, to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        out.reserve(input.len() + 8);
        if self.at_line_start && input.first() == Some(&b'.') {
            out.push(b'.');
        }
        let mut start = 0;
        for pos in self.finder.find_iter(input) {
            // Copy through the LF, then the extra dot; the original dot
            // follows with the next segment.
            out.extend_from_slice(input.get(start..=pos).unwrap_or_default());
            out.push(b'.');
            start = pos + 1;
        }
        out.extend_from_slice(input.get(start..).unwrap_or_default());
        self.at_line_start = last == b'\n';
        self.last_cr = last == b'\r';
    }

    /// Ends the body: adds CRLF if the data did not end with a line end
    /// (or just LF after a trailing CR), then `.CRLF`. The stuffer is then
    /// ready for a new message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            if self.last_cr {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
        self.last_cr = false;
    }
}

/// Stuffs a whole body and terminates it (convenience for small bodies).
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut s = DotStuffer::new();
    s.push(body, &mut out);
    s.finish(&mut out);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnstuffState {
    LineStart,
    Dot,
    DotCr,
    Mid,
}

/// Streaming un-stuffer for the client side: strips the stuffing dot and
/// finds the `.CRLF` terminator (RFC 1939 section 3). Only CRLF ends the
/// terminator line; `.` followed by anything else is a stuffed line.
#[derive(Debug, Clone)]
pub struct DotUnstuffer {
    state: UnstuffState,
}

impl Default for DotUnstuffer {
    fn default() -> Self {
        DotUnstuffer::new()
    }
}

impl DotUnstuffer {
    /// An un-stuffer at the start of a body.
    pub fn new() -> DotUnstuffer {
        DotUnstuffer {
            state: UnstuffState::LineStart,
        }
    }

    /// Appends the un-stuffed content of `input` to `out`. Returns
    /// `Some(n)` when the terminator ends at `input[n - 1]` (bytes from
    /// `n` on belong to the next response), `None` if all of `input` was
    /// body.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                UnstuffState::LineStart => {
                    if b == b'.' {
                        self.state = UnstuffState::Dot;
                        i += 1;
                    } else {
                        self.state = UnstuffState::Mid;
                    }
                }
                UnstuffState::Dot => {
                    if b == b'\r' {
                        self.state = UnstuffState::DotCr;
                        i += 1;
                    } else {
                        // The leading dot was stuffing: drop it.
                        self.state = UnstuffState::Mid;
                    }
                }
                UnstuffState::DotCr => {
                    if b == b'\n' {
                        self.state = UnstuffState::LineStart;
                        return Some(i + 1);
                    }
                    // ".\r" then something else: a stuffed line holding CR.
                    out.push(b'\r');
                    self.state = UnstuffState::Mid;
                }
                UnstuffState::Mid => {
                    let rest = input.get(i..).unwrap_or_default();
                    match memchr::memchr(b'\n', rest) {
                        Some(j) => {
                            out.extend_from_slice(rest.get(..=j).unwrap_or_default());
                            self.state = UnstuffState::LineStart;
                            i += j + 1;
                        }
                        None => {
                            out.extend_from_slice(rest);
                            return None;
                        }
                    }
                }
            }
        }
        None
    }
}

/// Un-stuffs a complete body that ends with `.CRLF`; `None` if the
/// terminator is missing.
pub fn unstuff(stuffed: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(stuffed.len());
    let mut u = DotUnstuffer::new();
    match u.push(stuffed, &mut out) {
        Some(n) if n == stuffed.len() => Some(out),
        _ => None,
    }
}

/// Cuts a message stream to what `TOP msg n` sends: the header section,
/// the blank line, then at most `n` body lines (RFC 1939 section 7).
#[derive(Debug, Clone)]
pub struct TopFilter {
    in_headers: bool,
    line_len: usize,
    line_first: u8,
    remaining: u32,
    done: bool,
}

impl TopFilter {
    /// A filter that passes `lines` body lines.
    pub fn new(lines: u32) -> TopFilter {
        TopFilter {
            in_headers: true,
            line_len: 0,
            line_first: 0,
            remaining: lines,
            done: false,
        }
    }

    /// True once everything `TOP` sends has passed; later input is dropped.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Returns the prefix of `chunk` that belongs to the output.
    pub fn filter<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        if self.done {
            return &[];
        }
        if !self.in_headers && self.remaining == 0 {
            self.done = true;
            return &[];
        }
        let mut i = 0;
        while i < chunk.len() {
            let rest = chunk.get(i..).unwrap_or_default();
            let Some(j) = memchr::memchr(b'\n', rest) else {
                if self.line_len == 0 {
                    self.line_first = rest.first().copied().unwrap_or(0);
                }
                self.line_len += rest.len();
                return chunk;
            };
            let end = i + j + 1;
            if self.in_headers {
                if self.line_len == 0 && j > 0 {
                    self.line_first = rest.first().copied().unwrap_or(0);
                }
                let len = self.line_len + j;
                let blank = len == 0 || (len == 1 && self.line_first == b'\r');
                self.line_len = 0;
                if blank {
                    self.in_headers = false;
                    if self.remaining == 0 {
                        self.done = true;
                        return chunk.get(..end).unwrap_or_default();
                    }
                }
            } else {
                self.remaining -= 1;
                if self.remaining == 0 {
                    self.done = true;
                    return chunk.get(..end).unwrap_or_default();
                }
            }
            i = end;
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stuffs_dot_lines() {
        assert_eq!(stuff(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(stuff(b""), b".\r\n");
        assert_eq!(stuff(b"abc"), b"abc\r\n.\r\n");
        assert_eq!(stuff(b"abc\r"), b"abc\r\n.\r\n");
        assert_eq!(stuff(b"x\r\n..y\r\n"), b"x\r\n...y\r\n.\r\n");
    }

    #[test]
    fn stuffs_across_chunks() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.push(b"a\r\n", &mut out);
        s.push(b".b\r", &mut out);
        s.push(b"\n", &mut out);
        s.push(b".", &mut out);
        s.push(b"", &mut out);
        s.push(b"c", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n..c\r\n.\r\n");
    }

    #[test]
    fn unstuffs() {
        assert_eq!(unstuff(b"..a\r\n.\r\n").unwrap(), b".a\r\n");
        assert_eq!(unstuff(b".\r\n").unwrap(), b"");
        assert_eq!(unstuff(b"a\r\n"), None);
        assert_eq!(unstuff(b".\r\nextra"), None);
        // ".\r" followed by something else is a stuffed line, not the end.
        assert_eq!(unstuff(b".\rx\r\n.\r\n").unwrap(), b"\rx\r\n");
        let mut u = DotUnstuffer::new();
        let mut out = Vec::new();
        assert_eq!(u.push(b"a\r\n.\r\n+OK\r\n", &mut out), Some(6));
        assert_eq!(out, b"a\r\n");
    }

    fn top(msg: &[u8], n: u32) -> Vec<u8> {
        let mut f = TopFilter::new(n);
        f.filter(msg).to_vec()
    }

    #[test]
    fn top_filter() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top(m, 3), m);
        assert_eq!(top(m, 100), m);
        assert_eq!(top(b"A: 1\r\n", 0), b"A: 1\r\n");
        assert_eq!(top(b"A: 1\r\n\r\nno end", 5), b"A: 1\r\n\r\nno end");
        // A header line holding only "\r" before other bytes is not blank.
        assert_eq!(top(b"A\r\n\rX\r\n\r\nb\r\n", 0), b"A\r\n\rX\r\n\r\n");
    }

    fn top_chunked(msg: &[u8], n: u32, size: usize) -> Vec<u8> {
        let mut f = TopFilter::new(n);
        let mut out = Vec::new();
        for c in msg.chunks(size) {
            out.extend_from_slice(f.filter(c));
        }
        out
    }

    proptest! {
        #[test]
        fn stuff_then_unstuff_is_identity(
            lines in proptest::collection::vec("[.a-z\r]{0,6}", 0..10),
        ) {
            let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let stuffed = stuff(&body);
            prop_assert_eq!(unstuff(&stuffed), Some(body));
        }

        #[test]
        fn stuffing_is_split_independent(
            body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64),
            size in 1usize..8,
        ) {
            let whole = stuff(&body);
            let mut s = DotStuffer::new();
            let mut out = Vec::new();
            for c in body.chunks(size) { s.push(c, &mut out); }
            s.finish(&mut out);
            prop_assert_eq!(&out, &whole);
            // Un-stuffing byte by byte finds the terminator at the end.
            let mut u = DotUnstuffer::new();
            let mut plain = Vec::new();
            let mut end = None;
            for (i, b) in whole.iter().enumerate() {
                if let Some(n) = u.push(std::slice::from_ref(b), &mut plain) {
                    prop_assert_eq!(n, 1);
                    end = Some(i + 1);
                    break;
                }
            }
            prop_assert_eq!(end, Some(whole.len()));
        }

        #[test]
        fn top_is_split_independent(
            body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64),
            n in 0u32..5,
            size in 1usize..8,
        ) {
            prop_assert_eq!(top_chunked(&body, n, size), top(&body, n));
        }
    }
}
