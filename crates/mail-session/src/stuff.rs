//! Dot-stuffing: byte-stuffing on the way out, un-stuffing and terminator
//! detection on the way in. The same rule serves SMTP DATA (RFC 5321
//! section 4.5.2) and POP3 multi-line responses (RFC 1939 section 3).
//!
//! Both work on a stream of chunks of any size: a line may be split
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

/// `content` with each bare CR (one not followed by LF) turned into a
/// space: RFC 5321 section 2.3.8 allows CR only in CRLF. Borrowed when
/// there is none, the common case.
pub fn blank_bare_cr(content: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| content.get(i + 1) != Some(&b'\n');
    if !memchr::memchr_iter(b'\r', content).any(bare) {
        return content.into();
    }
    let mut out = content.to_vec();
    for i in memchr::memchr_iter(b'\r', content).filter(|&i| bare(i)) {
        if let Some(b) = out.get_mut(i) {
            *b = b' ';
        }
    }
    out.into()
}

/// Dot-stuffs a message body for SMTP DATA (RFC 5321 section 4.5.2) and
/// appends the end of data. Every line end becomes CRLF (a bare LF too),
/// a bare CR becomes a space (section 2.3.8: a client sends CR only in
/// CRLF), and a missing final line end is added, so a sender using this
/// can never produce an ambiguous end of data (the SMTP smuggling class).
pub fn stuff_data(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut s = DotStuffer::new();
    let mut start = 0;
    // A line here has no LF, so every CR left in it is bare.
    let push_line = |line: &[u8], s: &mut DotStuffer, out: &mut Vec<u8>| {
        s.push(&blank_bare_cr(line), out);
        s.push(b"\r\n", out);
    };
    for lf in memchr::memchr_iter(b'\n', body) {
        let line = body.get(start..lf).unwrap_or_default();
        push_line(line.strip_suffix(b"\r").unwrap_or(line), &mut s, &mut out);
        start = lf + 1;
    }
    let tail = body.get(start..).unwrap_or_default();
    if !tail.is_empty() {
        // A trailing CR is a bare CR too, not half a line end.
        push_line(tail, &mut s, &mut out);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn smtp_data_stuffing_normalises_line_ends() {
        assert_eq!(stuff_data(b""), b".\r\n");
        assert_eq!(stuff_data(b"a\r\n.b\r\n.\r\n"), b"a\r\n..b\r\n..\r\n.\r\n");
        assert_eq!(stuff_data(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(stuff_data(b".x"), b"..x\r\n.\r\n");
        assert!(matches!(
            blank_bare_cr(b"Subject: s\r\n\r\nbody\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            &*blank_bare_cr(b"a\r.\rb\r\n\r\r\nc\r"),
            b"a . b\r\n \r\nc "
        );
        // A bare CR goes as a space (RFC 5321 section 2.3.8).
        assert_eq!(stuff_data(b"a\rb\r\n"), b"a b\r\n.\r\n");
        assert_eq!(stuff_data(b"a\r"), b"a \r\n.\r\n");
        assert_eq!(stuff_data(b"x\r.\r\n"), b"x .\r\n.\r\n");
        assert_eq!(stuff_data(b"\r.\rMAIL\r\r\n"), b" . MAIL \r\n.\r\n");
    }

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
    }
}
