//! Command-line framing for the server side.
//!
//! A line ends at LF. A CR right before the LF is part of the line ending;
//! a bare LF is accepted as a line ending too, as Dovecot does for POP3
//! command lines (clients such as `telnet` in line mode send it, and POP3
//! has no message-data phase from client to server, so there is nothing a
//! bare LF could smuggle). A CR anywhere else stays in the line and the
//! command parser refuses it.
//!
//! A line longer than the limit (line end included) is skipped up to and
//! including its LF, however long it is, and reported once as
//! [`Frame::TooLong`]: its bytes are never parsed, so the tail of an
//! oversized line can never be read as a command.

/// One framed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A line without its line ending.
    Line(Vec<u8>),
    /// A line over the limit was skipped.
    TooLong,
}

/// Buffers input and cuts it into lines.
#[derive(Debug, Default)]
pub(crate) struct LineFramer {
    buf: Vec<u8>,
    pos: usize,
    skipping: bool,
}

impl LineFramer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        // Compact lazily so feeding byte by byte stays linear.
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Drops everything buffered (after STLS, RFC 2595 section 4: input
    /// received before the TLS handshake must not be used after it).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.skipping = false;
    }

    /// Number of buffered bytes not yet framed.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Next complete line, with `limit` the maximum length including the
    /// line ending.
    pub(crate) fn next_frame(&mut self, limit: usize) -> Option<Frame> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match memchr::memchr(b'\n', rest) {
            Some(j) => {
                let start = self.pos;
                self.pos += j + 1;
                if std::mem::take(&mut self.skipping) || j + 1 > limit {
                    return Some(Frame::TooLong);
                }
                let mut end = start + j;
                if end > start && self.buf.get(end - 1) == Some(&b'\r') {
                    end -= 1;
                }
                Some(Frame::Line(
                    self.buf.get(start..end).unwrap_or_default().to_vec(),
                ))
            }
            None => {
                if self.skipping || rest.len() >= limit {
                    // Cannot fit any more: forget the bytes, remember to
                    // skip up to the next LF.
                    self.skipping = true;
                    self.buf.clear();
                    self.pos = 0;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_crlf_and_bare_lf() {
        let mut f = LineFramer::default();
        f.push(b"STAT\r\nNOOP\nLIST");
        assert_eq!(f.next_frame(255), Some(Frame::Line(b"STAT".to_vec())));
        assert_eq!(f.next_frame(255), Some(Frame::Line(b"NOOP".to_vec())));
        assert_eq!(f.next_frame(255), None);
        assert_eq!(f.pending(), 4);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(255), Some(Frame::Line(b"LIST".to_vec())));
        assert_eq!(f.next_frame(255), None);
    }

    #[test]
    fn limit_is_inclusive_of_crlf() {
        let mut f = LineFramer::default();
        let ok = [b'a'; 253];
        f.push(&ok);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(255), Some(Frame::Line(ok.to_vec())));
        let long = [b'a'; 254];
        f.push(&long);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(255), Some(Frame::TooLong));
        assert_eq!(f.next_frame(255), None);
    }

    #[test]
    fn oversized_tail_is_never_a_command() {
        let mut f = LineFramer::default();
        let mut line = vec![b'x'; 300];
        line.extend_from_slice(b" DELE 1\r\nNOOP\r\n");
        let mut frames = Vec::new();
        for b in &line {
            f.push(std::slice::from_ref(b));
            frames.extend(f.next_frame(255));
            // Memory stays bounded by the limit while skipping.
            assert!(f.buf.len() <= 256);
        }
        assert_eq!(frames, vec![Frame::TooLong, Frame::Line(b"NOOP".to_vec())]);
    }

    #[test]
    fn clear_drops_input() {
        let mut f = LineFramer::default();
        f.push(b"USER a\r\n");
        f.clear();
        assert_eq!(f.next_frame(255), None);
    }
}
