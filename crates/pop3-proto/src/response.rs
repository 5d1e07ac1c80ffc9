//! POP3 status lines: `+OK` / `-ERR` with optional RFC 2449 response codes.

use std::fmt;

/// `+OK` or `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `+OK`
    Ok,
    /// `-ERR`
    Err,
}

/// An extended response code (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: the maildrop is locked by another session.
    InUse,
    /// `[LOGIN-DELAY]`: logging in too often.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server failure (RFC 3206).
    SysTemp,
    /// `[SYS/PERM]`: a permanent server failure (RFC 3206).
    SysPerm,
    /// `[AUTH]`: the credentials were wrong (RFC 3206).
    Auth,
    /// Any other code, as sent (without brackets).
    Other(String),
}

impl ResponseCode {
    /// The code as written between the brackets.
    pub fn as_str(&self) -> &str {
        match self {
            ResponseCode::InUse => "IN-USE",
            ResponseCode::LoginDelay => "LOGIN-DELAY",
            ResponseCode::SysTemp => "SYS/TEMP",
            ResponseCode::SysPerm => "SYS/PERM",
            ResponseCode::Auth => "AUTH",
            ResponseCode::Other(s) => s,
        }
    }

    fn parse(s: &str) -> ResponseCode {
        // Response codes are case-insensitive (RFC 2449 section 8).
        match s.to_ascii_uppercase().as_str() {
            "IN-USE" => ResponseCode::InUse,
            "LOGIN-DELAY" => ResponseCode::LoginDelay,
            "SYS/TEMP" => ResponseCode::SysTemp,
            "SYS/PERM" => ResponseCode::SysPerm,
            "AUTH" => ResponseCode::Auth,
            _ => ResponseCode::Other(s.to_owned()),
        }
    }
}

/// A status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `+OK` or `-ERR`.
    pub status: Status,
    /// Optional RFC 2449 response code.
    pub code: Option<ResponseCode>,
    /// Free text after the status (and code); may be empty.
    pub text: String,
}

/// Why a server line is not a valid status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// It starts with neither `+OK` nor `-ERR`.
    #[error("status line does not start with +OK or -ERR")]
    BadStatus,
    /// It is not UTF-8 or contains CR, LF or NUL.
    #[error("invalid bytes in status line")]
    InvalidBytes,
    /// A response code is not closed, empty or holds invalid characters.
    #[error("malformed response code")]
    BadCode,
}

impl Response {
    /// `+OK text`.
    pub fn ok(text: impl Into<String>) -> Response {
        Response {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR text`.
    pub fn err(text: impl Into<String>) -> Response {
        Response {
            status: Status::Err,
            code: None,
            text: text.into(),
        }
    }

    /// `-ERR [code] text`.
    pub fn err_code(code: ResponseCode, text: impl Into<String>) -> Response {
        Response {
            status: Status::Err,
            code: Some(code),
            text: text.into(),
        }
    }

    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// Parses a status line without its line ending.
    pub fn parse(line: &[u8]) -> Result<Response, ResponseError> {
        let (status, rest) = if let Some(r) = strip_prefix_ci(line, b"+OK") {
            (Status::Ok, r)
        } else if let Some(r) = strip_prefix_ci(line, b"-ERR") {
            (Status::Err, r)
        } else {
            return Err(ResponseError::BadStatus);
        };
        if rest.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(ResponseError::InvalidBytes);
        }
        let rest = std::str::from_utf8(rest).map_err(|_| ResponseError::InvalidBytes)?;
        let text = match rest.strip_prefix(' ') {
            Some(t) => t,
            None if rest.is_empty() => "",
            // "+OKAY" is not a status line.
            None => return Err(ResponseError::BadStatus),
        };
        // A code is recognised only right after the status (RFC 2449
        // section 8); other text starting with '[' is not expected.
        if let Some(after) = text.strip_prefix('[') {
            let end = after.find(']').ok_or(ResponseError::BadCode)?;
            let code = after.get(..end).ok_or(ResponseError::BadCode)?;
            if code.is_empty()
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']')
            {
                return Err(ResponseError::BadCode);
            }
            let tail = after.get(end + 1..).unwrap_or("");
            let tail = tail.strip_prefix(' ').unwrap_or(tail);
            return Ok(Response {
                status,
                code: Some(ResponseCode::parse(code)),
                text: tail.to_owned(),
            });
        }
        Ok(Response {
            status,
            code: None,
            text: text.to_owned(),
        })
    }

    /// Appends the status line with CRLF to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.status {
            Status::Ok => b"+OK",
            Status::Err => b"-ERR",
        });
        if let Some(c) = &self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(c.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            out.extend_from_slice(self.text.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The status line with CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        let s = String::from_utf8_lossy(b.get(..b.len().saturating_sub(2)).unwrap_or(&[]));
        f.write_str(&s)
    }
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        line.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_examples() {
        assert_eq!(Response::parse(b"+OK 2 320"), Ok(Response::ok("2 320")));
        assert_eq!(Response::parse(b"+OK"), Ok(Response::ok("")));
        assert_eq!(
            Response::parse(b"-ERR [IN-USE] Mailbox locked"),
            Ok(Response::err_code(ResponseCode::InUse, "Mailbox locked"))
        );
        assert_eq!(
            Response::parse(b"-ERR [sys/temp]"),
            Ok(Response::err_code(ResponseCode::SysTemp, ""))
        );
        assert_eq!(
            Response::parse(b"-ERR [AUTH] Authentication failed."),
            Ok(Response::err_code(
                ResponseCode::Auth,
                "Authentication failed."
            ))
        );
        assert_eq!(
            Response::parse(b"-ERR [X-FOO/BAR] x"),
            Ok(Response::err_code(
                ResponseCode::Other("X-FOO/BAR".into()),
                "x"
            ))
        );
        assert_eq!(
            Response::parse(b"-ERR [LOGIN-DELAY] wait"),
            Ok(Response::err_code(ResponseCode::LoginDelay, "wait"))
        );
        assert_eq!(
            Response::parse(b"-ERR [SYS/PERM] x"),
            Ok(Response::err_code(ResponseCode::SysPerm, "x"))
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Response::parse(b""), Err(ResponseError::BadStatus));
        assert_eq!(Response::parse(b"+ abc"), Err(ResponseError::BadStatus));
        assert_eq!(Response::parse(b"+OKAY"), Err(ResponseError::BadStatus));
        assert_eq!(Response::parse(b"-ERR [AUTH"), Err(ResponseError::BadCode));
        assert_eq!(Response::parse(b"-ERR [] x"), Err(ResponseError::BadCode));
        assert_eq!(
            Response::parse(b"-ERR \xff"),
            Err(ResponseError::InvalidBytes)
        );
        assert_eq!(
            Response::parse(b"+OK a\rb"),
            Err(ResponseError::InvalidBytes)
        );
    }

    #[test]
    fn format_examples() {
        assert_eq!(
            Response::err_code(ResponseCode::Auth, "Authentication failed.").to_bytes(),
            b"-ERR [AUTH] Authentication failed.\r\n"
        );
        assert_eq!(Response::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(Response::ok("Logged in.").to_string(), "+OK Logged in.");
    }

    fn code() -> impl Strategy<Value = ResponseCode> {
        prop_oneof![
            Just(ResponseCode::InUse),
            Just(ResponseCode::LoginDelay),
            Just(ResponseCode::SysTemp),
            Just(ResponseCode::SysPerm),
            Just(ResponseCode::Auth),
            "X-[A-Z/]{1,10}".prop_map(ResponseCode::Other),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse(
            ok in any::<bool>(),
            code in proptest::option::of(code()),
            text in "([!-Z\\\\^-~][ -~]{0,60})?",
        ) {
            let r = Response {
                status: if ok { Status::Ok } else { Status::Err },
                code,
                text,
            };
            let b = r.to_bytes();
            prop_assert_eq!(Response::parse(&b[..b.len() - 2]), Ok(r));
        }

        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Response::parse(&line);
        }
    }
}
