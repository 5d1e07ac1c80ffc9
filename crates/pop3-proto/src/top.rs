//! The `TOP` line limiter (RFC 1939 section 7). Dot-stuffing itself is
//! shared with SMTP and lives in [`mail_session::stuff`](mod@mail_session::stuff).

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
        fn top_is_split_independent(
            body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64),
            n in 0u32..5,
            size in 1usize..8,
        ) {
            prop_assert_eq!(top_chunked(&body, n, size), top(&body, n));
        }
    }
}
