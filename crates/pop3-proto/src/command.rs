//! POP3 commands (RFC 1939 section 3-7, RFC 2449 CAPA, RFC 2595 STLS,
//! RFC 5034 AUTH): parsing one command line and formatting it back.

use mail_session::Secret;

/// Longest command line, terminating CRLF included (RFC 2449 section 4).
pub const MAX_COMMAND_LINE: usize = 255;

/// One POP3 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 1939 section 7).
    User(String),
    /// `PASS string`: the whole rest of the line, spaces included, as RFC
    /// 1939 section 7 permits and Dovecot does.
    Pass(Secret<String>),
    /// `APOP name digest` (RFC 1939 section 7).
    Apop {
        /// Mailbox name.
        name: String,
        /// MD5 digest in lower-case hex as sent.
        digest: String,
    },
    /// `QUIT`.
    Quit,
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<u32>),
    /// `RETR msg`.
    Retr(u32),
    /// `DELE msg`.
    Dele(u32),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `TOP msg n`.
    Top {
        /// Message number (1-based).
        msg: u32,
        /// Number of body lines.
        lines: u32,
    },
    /// `UIDL [msg]`.
    Uidl(Option<u32>),
    /// `CAPA` (RFC 2449).
    Capa,
    /// `STLS` (RFC 2595).
    Stls,
    /// `AUTH [mechanism [initial-response]]` (RFC 5034). Without a
    /// mechanism it asks for the list of mechanisms, as Dovecot allows.
    Auth {
        /// SASL mechanism name as sent (compare case-insensitively).
        mechanism: Option<String>,
        /// Base64 initial response, `=` meaning empty (RFC 5034 section 4).
        initial_response: Option<Secret<String>>,
    },
}

/// Why a command line was refused. The `Display` text is what the server
/// puts after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The line was empty.
    #[error("Unknown command.")]
    Empty,
    /// The keyword is not a POP3 command.
    #[error("Unknown command: {0}")]
    Unknown(String),
    /// A required argument is missing.
    #[error("Missing argument.")]
    MissingArgument,
    /// More arguments than the command takes.
    #[error("Too many arguments.")]
    TooManyArguments,
    /// A message number or line count is not plain decimal (or is zero
    /// where a message number is required).
    #[error("Invalid message number: {0}")]
    InvalidNumber(String),
    /// A decimal number does not fit in 32 bits.
    #[error("Message number too large: {0}")]
    NumberTooLarge(String),
    /// `TOP`'s line count is not plain decimal.
    #[error("Invalid line count: {0}")]
    InvalidLineCount(String),
    /// An argument holds control characters, invalid UTF-8 or is malformed.
    #[error("Invalid arguments.")]
    InvalidArgument,
}

impl Command {
    /// The command keyword in upper case, e.g. `"RETR"`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top { .. } => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Auth { .. } => "AUTH",
        }
    }

    /// Parses one command line, without its line ending.
    ///
    /// Keywords are case-insensitive (RFC 1939 section 3). Arguments are
    /// separated by single spaces; message numbers are positive decimal
    /// numbers that fit in `u32`.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        let (kw, rest) = match memchr::memchr(b' ', line) {
            Some(i) => (line.get(..i).unwrap_or(b""), line.get(i + 1..)),
            None => (line, None),
        };
        let upper = kw.to_ascii_uppercase();
        // PASS takes the raw rest of the line (spaces included).
        if upper == b"PASS" {
            let rest = rest.ok_or(CommandError::MissingArgument)?;
            if rest.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
                return Err(CommandError::InvalidArgument);
            }
            let s = std::str::from_utf8(rest).map_err(|_| CommandError::InvalidArgument)?;
            return Ok(Command::Pass(Secret::new(s.to_owned())));
        }
        let args: Vec<&str> = match rest {
            None => Vec::new(),
            Some(r) => {
                if r.iter().any(|&b| b < 0x20 || b == 0x7f) {
                    return Err(CommandError::InvalidArgument);
                }
                let s = std::str::from_utf8(r).map_err(|_| CommandError::InvalidArgument)?;
                // Tolerate repeated or trailing spaces between arguments.
                s.split(' ').filter(|a| !a.is_empty()).collect()
            }
        };
        let cmd = match upper.as_slice() {
            b"USER" => Command::User(one(&args)?.to_owned()),
            b"APOP" => {
                let (name, digest) = two(&args)?;
                if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CommandError::InvalidArgument);
                }
                Command::Apop {
                    name: name.to_owned(),
                    digest: digest.to_owned(),
                }
            }
            // Arguments to these are ignored, as Dovecot ignores them: a
            // `QUIT now` refused would leave the client's deletions undone.
            b"QUIT" => Command::Quit,
            b"STAT" => Command::Stat,
            b"NOOP" => Command::Noop,
            b"RSET" => Command::Rset,
            b"CAPA" => Command::Capa,
            b"STLS" => none(&args, Command::Stls)?,
            b"LIST" => Command::List(opt_msg(&args)?),
            b"UIDL" => Command::Uidl(opt_msg(&args)?),
            b"RETR" => Command::Retr(msg_number(one(&args)?)?),
            b"DELE" => Command::Dele(msg_number(one(&args)?)?),
            b"TOP" => {
                let (m, n) = two(&args)?;
                Command::Top {
                    msg: msg_number(m)?,
                    lines: line_count(n)?,
                }
            }
            b"AUTH" => match args.as_slice() {
                [] => Command::Auth {
                    mechanism: None,
                    initial_response: None,
                },
                [m] => Command::Auth {
                    mechanism: Some(mechanism(m)?),
                    initial_response: None,
                },
                [m, ir] => Command::Auth {
                    mechanism: Some(mechanism(m)?),
                    initial_response: Some(Secret::new((*ir).to_owned())),
                },
                _ => return Err(CommandError::TooManyArguments),
            },
            _ => {
                return Err(CommandError::Unknown(printable_keyword(kw)));
            }
        };
        Ok(cmd)
    }

    /// Appends the command line, CRLF included, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let kw = self.keyword().as_bytes();
        out.extend_from_slice(kw);
        let mut arg = |a: &str| {
            out.push(b' ');
            out.extend_from_slice(a.as_bytes());
        };
        match self {
            Command::User(n) => arg(n),
            Command::Pass(p) => arg(p.expose()),
            Command::Apop { name, digest } => {
                arg(name);
                arg(digest);
            }
            Command::List(Some(m))
            | Command::Uidl(Some(m))
            | Command::Retr(m)
            | Command::Dele(m) => arg(&m.to_string()),
            Command::Top { msg, lines } => {
                arg(&msg.to_string());
                arg(&lines.to_string());
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                if let Some(m) = mechanism {
                    arg(m);
                    if let Some(ir) = initial_response {
                        arg(ir.expose());
                    }
                }
            }
            Command::Quit
            | Command::Stat
            | Command::List(None)
            | Command::Noop
            | Command::Rset
            | Command::Uidl(None)
            | Command::Capa
            | Command::Stls => {}
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The command line, CRLF included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// A keyword made safe to echo in an error response: printable ASCII only,
/// at most 16 characters.
fn printable_keyword(kw: &[u8]) -> String {
    printable(kw, 16)
}

/// `arg` made safe to echo: printable ASCII only, at most `max` characters.
fn printable(arg: &[u8], max: usize) -> String {
    arg.iter()
        .take(max)
        .map(|&b| {
            if (0x21..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

fn none(args: &[&str], c: Command) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(c)
    } else {
        Err(CommandError::TooManyArguments)
    }
}

fn one<'a>(args: &[&'a str]) -> Result<&'a str, CommandError> {
    match args {
        [] => Err(CommandError::MissingArgument),
        [a] => Ok(a),
        _ => Err(CommandError::TooManyArguments),
    }
}

fn two<'a>(args: &[&'a str]) -> Result<(&'a str, &'a str), CommandError> {
    match args {
        [] | [_] => Err(CommandError::MissingArgument),
        [a, b] => Ok((a, b)),
        _ => Err(CommandError::TooManyArguments),
    }
}

fn opt_msg(args: &[&str]) -> Result<Option<u32>, CommandError> {
    match args {
        [] => Ok(None),
        [a] => msg_number(a).map(Some),
        _ => Err(CommandError::TooManyArguments),
    }
}

fn mechanism(m: &str) -> Result<String, CommandError> {
    // RFC 4422 section 3.1: 1-20 characters of [A-Z0-9-_].
    if m.is_empty()
        || m.len() > 20
        || !m
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CommandError::InvalidArgument);
    }
    Ok(m.to_owned())
}

/// Parses a non-negative decimal number: digits only, no sign, no overflow.
pub(crate) fn decimal(s: &str) -> Result<u32, CommandError> {
    // A number is echoed up to 64 characters (Dovecot echoes it whole;
    // 16, the keyword's bound, cut ordinary 20-digit numbers).
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::InvalidNumber(printable(s.as_bytes(), 64)));
    }
    s.parse::<u32>()
        .map_err(|_| CommandError::NumberTooLarge(printable(s.as_bytes(), 64)))
}

/// The line count of `TOP`: any non-negative decimal number (RFC 1939
/// section 7 sets no bound). Clients ask for "the whole message" with
/// huge counts, so one beyond `u32` is taken as `u32::MAX` (no message
/// has that many lines) rather than refused, as Dovecot does.
pub(crate) fn line_count(s: &str) -> Result<u32, CommandError> {
    match decimal(s) {
        Err(CommandError::NumberTooLarge(_)) => Ok(u32::MAX),
        Err(CommandError::InvalidNumber(n)) => Err(CommandError::InvalidLineCount(n)),
        r => r,
    }
}

/// A message number: decimal and at least 1 (RFC 1939 section 5).
pub(crate) fn msg_number(s: &str) -> Result<u32, CommandError> {
    match decimal(s)? {
        0 => Err(CommandError::InvalidNumber(printable_keyword(s.as_bytes()))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(p("USER mrose"), Ok(Command::User("mrose".into())));
        assert_eq!(
            p("PASS secret with spaces"),
            Ok(Command::Pass(Secret::new("secret with spaces".into())))
        );
        assert_eq!(
            p("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                name: "mrose".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("LIST 2"), Ok(Command::List(Some(2))));
        assert_eq!(p("RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(p("DELE 1"), Ok(Command::Dele(1)));
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("TOP 1 10"), Ok(Command::Top { msg: 1, lines: 10 }));
        assert_eq!(p("TOP 1 0"), Ok(Command::Top { msg: 1, lines: 0 }));
        assert_eq!(p("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(p("UIDL 3"), Ok(Command::Uidl(Some(3))));
        assert_eq!(p("CAPA"), Ok(Command::Capa));
        assert_eq!(p("STLS"), Ok(Command::Stls));
        assert_eq!(
            p("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial_response: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AHVzZXIxAHB3"),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some(Secret::new("AHVzZXIxAHB3".into()))
            })
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(p("stat"), Ok(Command::Stat));
        assert_eq!(p("rEtR 7"), Ok(Command::Retr(7)));
        assert_eq!(p("Top 7 0"), Ok(Command::Top { msg: 7, lines: 0 }));
    }

    #[test]
    fn number_validation() {
        assert_eq!(p("RETR 0"), Err(CommandError::InvalidNumber("0".into())));
        assert_eq!(p("RETR -1"), Err(CommandError::InvalidNumber("-1".into())));
        assert_eq!(p("RETR +1"), Err(CommandError::InvalidNumber("+1".into())));
        assert_eq!(p("RETR 1x"), Err(CommandError::InvalidNumber("1x".into())));
        assert_eq!(p("RETR 4294967295"), Ok(Command::Retr(u32::MAX)));
        assert_eq!(
            p("RETR 4294967296"),
            Err(CommandError::NumberTooLarge("4294967296".into()))
        );
        assert_eq!(
            p("LIST 99999999999999999999999"),
            Err(CommandError::NumberTooLarge(
                "99999999999999999999999".into()
            ))
        );
        assert_eq!(
            p("TOP 1 -1"),
            Err(CommandError::InvalidLineCount("-1".into()))
        );
        assert_eq!(p("TOP x 1"), Err(CommandError::InvalidNumber("x".into())));
        // A line count beyond u32 means "all of it", not an error.
        assert_eq!(
            p("TOP 1 99999999999"),
            Ok(Command::Top {
                msg: 1,
                lines: u32::MAX
            })
        );
        assert_eq!(
            p("TOP 1 99999999999999999999999999"),
            Ok(Command::Top {
                msg: 1,
                lines: u32::MAX
            })
        );
        assert_eq!(
            p("TOP 4294967296 1"),
            Err(CommandError::NumberTooLarge("4294967296".into()))
        );
        assert_eq!(p("TOP 0 1"), Err(CommandError::InvalidNumber("0".into())));
    }

    #[test]
    fn argument_counts() {
        assert_eq!(p("RETR"), Err(CommandError::MissingArgument));
        assert_eq!(p("RETR 1 2"), Err(CommandError::TooManyArguments));
        // Ignored where there are none to take, as Dovecot ignores them.
        for c in ["STAT 1", "QUIT now", "NOOP x y", "RSET x", "CAPA foo"] {
            assert!(p(c).is_ok(), "{c}");
        }
        assert_eq!(p("QUIT now"), Ok(Command::Quit));
        assert_eq!(p("STLS x"), Err(CommandError::TooManyArguments));
        assert_eq!(p("TOP 1"), Err(CommandError::MissingArgument));
        assert_eq!(p("USER"), Err(CommandError::MissingArgument));
        assert_eq!(p("USER a b"), Err(CommandError::TooManyArguments));
        assert_eq!(p("PASS"), Err(CommandError::MissingArgument));
        assert_eq!(p("APOP mrose"), Err(CommandError::MissingArgument));
        assert_eq!(p("APOP mrose xyz"), Err(CommandError::InvalidArgument));
        assert_eq!(p("AUTH PLAIN a b"), Err(CommandError::TooManyArguments));
        assert_eq!(p("AUTH P!AIN"), Err(CommandError::InvalidArgument));
        assert_eq!(p("LIST 1 "), Ok(Command::List(Some(1))));
    }

    #[test]
    fn bad_bytes() {
        assert_eq!(p(""), Err(CommandError::Empty));
        assert_eq!(p("FOO"), Err(CommandError::Unknown("FOO".into())));
        assert_eq!(
            Command::parse(b"F\x00O bar"),
            Err(CommandError::Unknown("F?O".into()))
        );
        assert_eq!(
            Command::parse(b"USER a\x01"),
            Err(CommandError::InvalidArgument)
        );
        assert_eq!(
            Command::parse(b"USER \xff"),
            Err(CommandError::InvalidArgument)
        );
        assert_eq!(
            Command::parse(b"PASS a\rb"),
            Err(CommandError::InvalidArgument)
        );
        assert_eq!(
            CommandError::Unknown("FOO".into()).to_string(),
            "Unknown command: FOO"
        );
    }

    fn token() -> impl Strategy<Value = String> {
        "[!-~]{1,20}"
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            token().prop_map(Command::User),
            "[ -~\t]{0,40}".prop_map(|s| Command::Pass(Secret::new(s))),
            (token(), "[0-9a-f]{32}").prop_map(|(name, digest)| Command::Apop { name, digest }),
            Just(Command::Quit),
            Just(Command::Stat),
            proptest::option::of(1u32..).prop_map(Command::List),
            (1u32..).prop_map(Command::Retr),
            (1u32..).prop_map(Command::Dele),
            Just(Command::Noop),
            Just(Command::Rset),
            (1u32.., any::<u32>()).prop_map(|(msg, lines)| Command::Top { msg, lines }),
            proptest::option::of(1u32..).prop_map(Command::Uidl),
            Just(Command::Capa),
            Just(Command::Stls),
            Just(Command::Auth {
                mechanism: None,
                initial_response: None
            }),
            (
                "[A-Za-z0-9_-]{1,20}",
                proptest::option::of("[A-Za-z0-9+/=]{1,40}")
            )
                .prop_map(|(m, ir)| Command::Auth {
                    mechanism: Some(m),
                    initial_response: ir.map(Secret::new)
                }),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse(c in command()) {
            let bytes = c.to_bytes();
            prop_assert!(bytes.ends_with(b"\r\n"));
            let line = &bytes[..bytes.len() - 2];
            prop_assert_eq!(Command::parse(line), Ok(c));
        }

        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Command::parse(&line);
        }
    }
}
