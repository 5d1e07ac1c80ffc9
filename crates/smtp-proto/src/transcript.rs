//! Protocol transcript: what a session received and sent, line by line, so
//! a host can log `C:`/`S:` lines as the lab's packet capture shows them.

use std::fmt;

/// Who sent a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (`C:`).
    Client,
    /// From the server (`S:`).
    Server,
}

/// What a transcript line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A command or reply line.
    Line,
    /// An AUTH command with an initial response, or a SASL response line:
    /// it carries credentials (base64 is not encryption); redact it.
    AuthPayload,
    /// A summary standing for message body octets (never the body itself).
    Body,
}

/// One transcript line (line end removed, non-UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Sender of the line.
    pub direction: Direction,
    /// Kind of content.
    pub kind: EntryKind,
    /// The line.
    pub text: String,
}

impl TranscriptEntry {
    /// The line with credentials replaced: `AUTH PLAIN <redacted>` or
    /// `<redacted>` for [`EntryKind::AuthPayload`], the text otherwise.
    pub fn redacted(&self) -> String {
        match self.kind {
            EntryKind::AuthPayload => match self.text.get(..5) {
                Some(v) if v.eq_ignore_ascii_case("AUTH ") => {
                    let mut words = self.text.splitn(3, ' ');
                    let verb = words.next().unwrap_or_default();
                    let mech = words.next().unwrap_or_default();
                    format!("{verb} {mech} <redacted>")
                }
                _ => "<redacted>".to_owned(),
            },
            _ => self.text.clone(),
        }
    }
}

impl fmt::Display for TranscriptEntry {
    /// `C: line` or `S: line`, with credentials redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.direction {
            Direction::Client => "C",
            Direction::Server => "S",
        };
        write!(f, "{who}: {}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let e = TranscriptEntry {
            direction: Direction::Client,
            kind: EntryKind::AuthPayload,
            text: "AUTH PLAIN AHVzZXIxAHB3".into(),
        };
        assert_eq!(e.to_string(), "C: AUTH PLAIN <redacted>");
        let e = TranscriptEntry {
            direction: Direction::Client,
            kind: EntryKind::AuthPayload,
            text: "dXNlcjI=".into(),
        };
        assert_eq!(e.to_string(), "C: <redacted>");
        let e = TranscriptEntry {
            direction: Direction::Server,
            kind: EntryKind::Line,
            text: "250 2.1.0 Ok".into(),
        };
        assert_eq!(e.to_string(), "S: 250 2.1.0 Ok");
    }
}
