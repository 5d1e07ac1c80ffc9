//! SMTP replies: code, RFC 3463 enhanced status code and text; single and
//! multi-line (RFC 5321 section 4.2), formatting and parsing.

use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// 0..=999
    pub subject: u16,
    /// 0..=999
    pub detail: u16,
}

impl EnhancedStatus {
    /// Build from a `(class, subject, detail)` triple.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Parse `d.ddd.ddd` (RFC 3463 section 2: class 2, 4 or 5; subject and
    /// detail 1 to 3 digits).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let num = |p: &str| -> Option<u16> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(EnhancedStatus {
            class,
            subject: num(subject)?,
            detail: num(detail)?,
        })
    }
}

impl From<(u8, u16, u16)> for EnhancedStatus {
    fn from((c, s, d): (u8, u16, u16)) -> Self {
        EnhancedStatus::new(c, s, d)
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply.
///
/// Formatting writes the enhanced status code (when present) at the start of
/// every line, as Postfix does; parsing recognises it when the first line
/// carries one whose class matches the reply code, and strips it from every
/// line that repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

/// Why a reply could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// More input is needed to finish the reply.
    #[error("incomplete reply")]
    Incomplete,
    /// A line does not start with a three-digit code followed by ' ', '-'
    /// or the line end.
    #[error("malformed reply line")]
    Malformed,
    /// The lines of a multi-line reply carry different codes.
    #[error("reply code changed within a multi-line reply")]
    CodeMismatch,
    /// The reply exceeds the parser's size limit.
    #[error("reply too long")]
    TooLong,
}

/// Largest reply [`Reply::parse`] accepts (all lines, with line ends). RFC
/// 5321 section 4.5.3.1.5 limits a reply line to 512 octets; EHLO replies
/// have a few dozen lines.
pub const MAX_REPLY_LEN: usize = 64 * 1024;

impl Reply {
    /// A single-line reply. `status` may be anything convertible into an
    /// [`EnhancedStatus`], e.g. `(2, 1, 0)`.
    pub fn new(code: u16, status: impl Into<EnhancedStatus>, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: Some(status.into()),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced status code (greeting, EHLO, 334, ...).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply; `lines` must not be empty (an empty list is
    /// formatted as one empty line).
    pub fn multiline(code: u16, status: Option<EnhancedStatus>, lines: Vec<String>) -> Self {
        Reply {
            code,
            status,
            lines,
        }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if any.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The text lines (without codes).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The text of all lines joined with a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// 2yz
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3yz
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4yz
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5yz
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Append the wire form (with CRLFs) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            write_line(out, self.code, i + 1 < n, self.status, text);
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    /// Parse one complete reply from the start of `input`, returning it and
    /// the number of bytes used. Lines must end in CRLF (a bare LF is
    /// accepted too, since a client has no smuggling risk to fear from a
    /// server's replies). Non-UTF-8 text is replaced lossily.
    pub fn parse(input: &[u8]) -> Result<(Reply, usize), ReplyError> {
        let mut pos = 0;
        let mut code = None;
        let mut raw_lines: Vec<String> = Vec::new();
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                return Err(if input.len() > MAX_REPLY_LEN {
                    ReplyError::TooLong
                } else {
                    ReplyError::Incomplete
                });
            };
            if pos + lf + 1 > MAX_REPLY_LEN {
                return Err(ReplyError::TooLong);
            }
            let line = rest.get(..lf).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += lf + 1;
            let (c, more, text) = parse_line(line)?;
            match code {
                None => code = Some(c),
                Some(prev) if prev != c => return Err(ReplyError::CodeMismatch),
                Some(_) => {}
            }
            raw_lines.push(text);
            if !more {
                break;
            }
        }
        let code = code.ok_or(ReplyError::Malformed)?;
        // Enhanced status: taken from the first line when its class agrees
        // with the reply code (RFC 3463 section 2), then stripped from every
        // line that repeats it.
        let status = raw_lines
            .first()
            .and_then(|l| l.split(' ').next())
            .and_then(EnhancedStatus::parse)
            .filter(|s| u16::from(s.class) == code / 100);
        let lines = match status {
            None => raw_lines,
            Some(st) => {
                let prefix = st.to_string();
                raw_lines
                    .into_iter()
                    .map(|l| match l.strip_prefix(prefix.as_str()) {
                        Some("") => String::new(),
                        Some(r) if r.starts_with(' ') => r.get(1..).unwrap_or_default().to_owned(),
                        _ => l,
                    })
                    .collect()
            }
        };
        Ok((
            Reply {
                code,
                status,
                lines,
            },
            pos,
        ))
    }
}

fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    // RFC 5321 section 4.2: the first digit is 2 to 5.
    if !(200..600).contains(&code) {
        return Err(ReplyError::Malformed);
    }
    let (more, text) = match line.get(3) {
        None => (false, &[][..]),
        Some(b' ') => (false, line.get(4..).unwrap_or_default()),
        Some(b'-') => (true, line.get(4..).unwrap_or_default()),
        Some(_) => return Err(ReplyError::Malformed),
    };
    Ok((code, more, String::from_utf8_lossy(text).into_owned()))
}

/// Write one reply line. Shared with the server's fast path.
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    code: u16,
    more: bool,
    status: Option<EnhancedStatus>,
    text: &str,
) {
    use std::io::Write;
    let sep = if more { '-' } else { ' ' };
    // Writing to a Vec cannot fail.
    let _ = match (status, text.is_empty()) {
        (Some(st), true) => write!(out, "{code}{sep}{st}"),
        (Some(st), false) => write!(out, "{code}{sep}{st} {text}"),
        (None, true) if more => write!(out, "{code}-"),
        (None, true) => write!(out, "{code}"),
        (None, false) => write!(out, "{code}{sep}{text}"),
    };
    out.extend_from_slice(b"\r\n");
}

impl fmt::Display for Reply {
    /// The wire form, CRLFs included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_single_and_multi() {
        assert_eq!(
            Reply::new(250, (2, 1, 0), "Ok").to_string(),
            "250 2.1.0 Ok\r\n"
        );
        assert_eq!(
            Reply::plain(334, "VXNlcm5hbWU6").to_string(),
            "334 VXNlcm5hbWU6\r\n"
        );
        assert_eq!(Reply::plain(334, "").to_string(), "334\r\n");
        let r = Reply::multiline(
            250,
            None,
            vec![
                "mail.example".into(),
                "PIPELINING".into(),
                "8BITMIME".into(),
            ],
        );
        assert_eq!(
            r.to_string(),
            "250-mail.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        let r = Reply::multiline(
            550,
            Some(EnhancedStatus::new(5, 1, 1)),
            vec!["no".into(), "such user".into()],
        );
        assert_eq!(r.to_string(), "550-5.1.1 no\r\n550 5.1.1 such user\r\n");
    }

    #[test]
    fn parse_replies() {
        let (r, n) = Reply::parse(b"250 2.1.0 Ok\r\nextra").unwrap();
        assert_eq!(n, 14);
        assert_eq!(r, Reply::new(250, (2, 1, 0), "Ok"));
        let input =
            b"250-mail.csuvnetwork.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n";
        let (r, n) = Reply::parse(input).unwrap();
        assert_eq!(n, input.len());
        assert_eq!(r.code(), 250);
        assert_eq!(r.status(), None);
        assert_eq!(r.lines().len(), 4);
        assert_eq!(r.lines()[2], "SIZE 10240000");
        let (r, _) = Reply::parse(b"354 End data with <CR><LF>.<CR><LF>\r\n").unwrap();
        assert!(r.is_intermediate());
        assert_eq!(r.text(), "End data with <CR><LF>.<CR><LF>");
        // Code only.
        let (r, _) = Reply::parse(b"334\r\n").unwrap();
        assert_eq!(r.lines(), &[String::new()]);
        // A status whose class disagrees with the code is text.
        let (r, _) = Reply::parse(b"250 5.1.1 odd\r\n").unwrap();
        assert_eq!(r.status(), None);
        assert_eq!(r.text(), "5.1.1 odd");
        // Bare LF accepted.
        let (r, _) = Reply::parse(b"221 2.0.0 Bye\n").unwrap();
        assert_eq!(r, Reply::new(221, (2, 0, 0), "Bye"));
        assert!(r.is_positive() && !r.is_transient() && !r.is_permanent());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Reply::parse(b"250 Ok"), Err(ReplyError::Incomplete));
        assert_eq!(Reply::parse(b"250-a\r\n"), Err(ReplyError::Incomplete));
        assert_eq!(Reply::parse(b"25 Ok\r\n"), Err(ReplyError::Malformed));
        assert_eq!(Reply::parse(b"250xOk\r\n"), Err(ReplyError::Malformed));
        assert_eq!(Reply::parse(b"150 Ok\r\n"), Err(ReplyError::Malformed));
        assert_eq!(Reply::parse(b"abc Ok\r\n"), Err(ReplyError::Malformed));
        assert_eq!(
            Reply::parse(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch)
        );
        let long = vec![b'2'; MAX_REPLY_LEN + 1];
        assert_eq!(Reply::parse(&long), Err(ReplyError::TooLong));
    }

    #[test]
    fn enhanced_status_parse() {
        assert_eq!(
            EnhancedStatus::parse("2.0.0"),
            Some(EnhancedStatus::new(2, 0, 0))
        );
        assert_eq!(
            EnhancedStatus::parse("5.999.999"),
            Some(EnhancedStatus::new(5, 999, 999))
        );
        assert_eq!(EnhancedStatus::parse("3.0.0"), None);
        assert_eq!(EnhancedStatus::parse("2.0"), None);
        assert_eq!(EnhancedStatus::parse("2.0.0.0"), None);
        assert_eq!(EnhancedStatus::parse("2.1000.0"), None);
        assert_eq!(EnhancedStatus::parse("2..0"), None);
    }
}
