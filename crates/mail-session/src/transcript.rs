//! Protocol transcript: what a session received and sent, line by line, so
//! a host can log `C:`/`S:` lines as the lab's packet capture shows them.
//!
//! Entries keep the raw text and mark where credentials are; the host
//! decides whether to show them ([`TranscriptEntry::redacted`] or
//! [`TranscriptEntry::text`]), so one switch (`transcript_show_secrets`)
//! works for every protocol.

use std::collections::VecDeque;
use std::fmt;

/// Who sent a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (`C:`).
    Client,
    /// From the server (`S:`).
    Server,
}

impl Direction {
    /// `C` or `S`.
    pub fn letter(self) -> &'static str {
        match self {
            Direction::Client => "C",
            Direction::Server => "S",
        }
    }
}

/// What a transcript line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A command or reply line.
    Line,
    /// A line carrying credentials (a password, a SASL response; base64 is
    /// not encryption). Its first `visible` bytes (e.g. `AUTH PLAIN `,
    /// `PASS `) are not secret; the rest is.
    Credentials {
        /// Length of the public prefix.
        visible: usize,
    },
    /// A summary standing for message octets (never the message itself).
    Body,
}

/// One transcript line (line end removed, non-UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Sender of the line.
    pub direction: Direction,
    /// Kind of content.
    pub kind: EntryKind,
    /// The line as sent, credentials included.
    pub text: String,
}

impl TranscriptEntry {
    /// A client line that carries credentials after the first `visible`
    /// bytes.
    pub fn credentials(text: String, visible: usize) -> Self {
        TranscriptEntry {
            direction: Direction::Client,
            kind: EntryKind::Credentials { visible },
            text,
        }
    }

    /// The line with credentials replaced by `<redacted>`: `AUTH PLAIN
    /// <redacted>`, `PASS <redacted>`, or `<redacted>` for a SASL response.
    pub fn redacted(&self) -> String {
        match self.kind {
            EntryKind::Credentials { visible } => {
                let public = self.text.get(..visible).unwrap_or_default();
                format!("{public}<redacted>")
            }
            EntryKind::Line | EntryKind::Body => self.text.clone(),
        }
    }

    /// The text to log: raw with `show_secrets`, redacted otherwise.
    pub fn display_text(&self, show_secrets: bool) -> String {
        if show_secrets {
            self.text.clone()
        } else {
            self.redacted()
        }
    }
}

impl fmt::Display for TranscriptEntry {
    /// `C: line` or `S: line`, with credentials redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.direction.letter(), self.redacted())
    }
}

/// Entries kept when the host does not collect them: the oldest go first,
/// so a host that never polls costs bounded memory.
pub const MAX_TRANSCRIPT: usize = 1024;

/// A session's transcript: off (records nothing) or a bounded queue.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    on: bool,
    entries: VecDeque<TranscriptEntry>,
}

impl Transcript {
    /// A transcript that records when `on`.
    pub fn new(on: bool) -> Self {
        Transcript {
            on,
            entries: VecDeque::new(),
        }
    }

    /// Whether entries are recorded (callers skip building text if not).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Records an entry.
    pub fn push(&mut self, entry: TranscriptEntry) {
        if !self.on {
            return;
        }
        if self.entries.len() >= MAX_TRANSCRIPT {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Records a plain line.
    pub fn line(&mut self, direction: Direction, text: impl Into<String>) {
        if self.on {
            self.push(TranscriptEntry {
                direction,
                kind: EntryKind::Line,
                text: text.into(),
            });
        }
    }

    /// Records the lines of `bytes` (CRLF-separated, as sent).
    pub fn lines(&mut self, direction: Direction, bytes: &[u8]) {
        if !self.on {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        for l in text.split("\r\n").filter(|l| !l.is_empty()) {
            self.line(direction, l);
        }
    }

    /// Takes the oldest entry.
    pub fn pop(&mut self) -> Option<TranscriptEntry> {
        self.entries.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let e = TranscriptEntry::credentials("AUTH PLAIN AHVzZXIxAHB3".into(), 11);
        assert_eq!(e.to_string(), "C: AUTH PLAIN <redacted>");
        assert_eq!(e.display_text(true), "AUTH PLAIN AHVzZXIxAHB3");
        let e = TranscriptEntry::credentials("dXNlcjI=".into(), 0);
        assert_eq!(e.to_string(), "C: <redacted>");
        let e = TranscriptEntry::credentials("PASS secret".into(), 5);
        assert_eq!(e.display_text(false), "PASS <redacted>");
        let e = TranscriptEntry {
            direction: Direction::Server,
            kind: EntryKind::Line,
            text: "250 2.1.0 Ok".into(),
        };
        assert_eq!(e.to_string(), "S: 250 2.1.0 Ok");
        // A prefix length past the text (or inside a character) hides all.
        let e = TranscriptEntry::credentials("é".into(), 1);
        assert_eq!(e.redacted(), "<redacted>");
    }

    #[test]
    fn bounded_and_off() {
        let mut t = Transcript::new(false);
        t.line(Direction::Client, "NOOP");
        assert_eq!(t.pop(), None);
        let mut t = Transcript::new(true);
        for i in 0..MAX_TRANSCRIPT + 10 {
            t.line(Direction::Client, i.to_string());
        }
        assert_eq!(t.pop().map(|e| e.text), Some("10".to_owned()));
        t.lines(Direction::Server, b"250-a\r\n250 b\r\n");
        let last: Vec<_> = std::iter::from_fn(|| t.pop()).map(|e| e.text).collect();
        assert_eq!(last.len(), MAX_TRANSCRIPT);
        assert_eq!(last.last().map(String::as_str), Some("250 b"));
    }
}
