//! SMTP commands: parsing (zero-copy) and formatting.
//!
//! [`Command::parse`] takes one complete command line *without* its line end
//! (the [`framer`](crate::framer) cuts lines) and borrows every string from
//! it. [`Command::into_owned`] detaches the result from the input.
//!
//! Grammar: RFC 5321 section 4.1 (commands, paths, ESMTP parameters),
//! RFC 6531 (UTF-8 in addresses), RFC 4954 (AUTH), RFC 3207 (STARTTLS),
//! RFC 3030 (BDAT), RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME), RFC 3461
//! (RET, ENVID, NOTIFY, ORCPT; kept as data).

use std::borrow::Cow;
use std::fmt;

/// The verb of a command, used to name it in errors and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `EHLO`
    Ehlo,
    /// `HELO`
    Helo,
    /// `MAIL`
    Mail,
    /// `RCPT`
    Rcpt,
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `VRFY`
    Vrfy,
    /// `EXPN`
    Expn,
    /// `HELP`
    Help,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `AUTH`
    Auth,
    /// `STARTTLS`
    StartTls,
    /// `BDAT`
    Bdat,
}

impl Verb {
    /// The verb as sent on the wire (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Ehlo => "EHLO",
            Verb::Helo => "HELO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Rset => "RSET",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Help => "HELP",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Auth => "AUTH",
            Verb::StartTls => "STARTTLS",
            Verb::Bdat => "BDAT",
        }
    }

    /// The usage hint Postfix gives in its `501 5.5.4 Syntax: ...` replies.
    pub fn usage(self) -> &'static str {
        match self {
            Verb::Ehlo => "EHLO hostname",
            Verb::Helo => "HELO hostname",
            Verb::Mail => "MAIL FROM:<address>",
            Verb::Rcpt => "RCPT TO:<address>",
            Verb::Data => "DATA",
            Verb::Rset => "RSET",
            Verb::Vrfy => "VRFY address",
            Verb::Expn => "EXPN address",
            Verb::Help => "HELP [topic]",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Auth => "AUTH mechanism [initial-response]",
            Verb::StartTls => "STARTTLS",
            Verb::Bdat => "BDAT chunk-size [LAST]",
        }
    }

    /// Recognise a verb, ignoring ASCII case (RFC 5321 section 2.4).
    pub fn from_bytes(verb: &[u8]) -> Option<Verb> {
        if verb.len() == 8 {
            return verb
                .eq_ignore_ascii_case(b"STARTTLS")
                .then_some(Verb::StartTls);
        }
        let four = <[u8; 4]>::try_from(verb)
            .ok()?
            .map(|c| c.to_ascii_uppercase());
        Some(match &four {
            b"MAIL" => Verb::Mail,
            b"RCPT" => Verb::Rcpt,
            b"EHLO" => Verb::Ehlo,
            b"HELO" => Verb::Helo,
            b"DATA" => Verb::Data,
            b"RSET" => Verb::Rset,
            b"VRFY" => Verb::Vrfy,
            b"EXPN" => Verb::Expn,
            b"HELP" => Verb::Help,
            b"NOOP" => Verb::Noop,
            b"QUIT" => Verb::Quit,
            b"AUTH" => Verb::Auth,
            b"BDAT" => Verb::Bdat,
            _ => return None,
        })
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command line could not be parsed. Each maps to the reply a server
/// sends ([`ParseError::reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty line or unknown verb (`500 5.5.2`).
    #[error("command not recognized")]
    UnknownCommand,
    /// Known verb, malformed arguments (`501 5.5.4 Syntax: ...`).
    #[error("syntax error in {0} command")]
    Syntax(Verb),
    /// Malformed mailbox or path in MAIL or RCPT (`501 5.1.7` / `501 5.1.3`).
    #[error("bad address syntax in {0} command")]
    BadAddress(Verb),
    /// Malformed ESMTP parameter (`501 5.5.4`), or one given twice.
    #[error("bad parameter syntax in {0} command")]
    BadParameter(Verb),
    /// A known ESMTP parameter with a value (or without one) that this
    /// implementation does not support, e.g. `BODY=FOO`, a bare `SIZE`,
    /// `SMTPUTF8=YES` (`555 5.5.4`, RFC 5321 section 4.1.1.11).
    #[error("unsupported parameter value in {0} command")]
    UnsupportedParameter(Verb),
}

impl ParseError {
    /// The reply a server sends for this error (texts as Postfix words them).
    pub fn reply(&self) -> crate::Reply {
        use crate::Reply;
        match self {
            ParseError::UnknownCommand => {
                Reply::new(500, (5, 5, 2), "Error: command not recognized")
            }
            ParseError::Syntax(v) => Reply::new(501, (5, 5, 4), format!("Syntax: {}", v.usage())),
            ParseError::BadAddress(Verb::Mail) => {
                Reply::new(501, (5, 1, 7), "Bad sender address syntax")
            }
            ParseError::BadAddress(_) => Reply::new(501, (5, 1, 3), "Bad recipient address syntax"),
            ParseError::BadParameter(v) => Reply::new(
                501,
                (5, 5, 4),
                format!("Bad {} parameter syntax", v.as_str()),
            ),
            // Postfix words it "Unsupported option: <param>".
            ParseError::UnsupportedParameter(_) => Reply::new(555, (5, 5, 4), "Unsupported option"),
        }
    }
}

/// A mailbox `local-part@domain` (RFC 5321 section 4.1.2).
///
/// `local_part` is kept as written: a quoted local part keeps its quotes and
/// backslashes, so formatting gives back the original text. `domain` is a
/// domain name or an address literal including its brackets
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox<'a> {
    /// Local part as written (quoted form kept).
    pub local_part: Cow<'a, str>,
    /// Domain or bracketed address literal.
    pub domain: Cow<'a, str>,
}

impl Mailbox<'_> {
    /// Detach from the input line.
    pub fn into_owned(self) -> Mailbox<'static> {
        Mailbox {
            local_part: Cow::Owned(self.local_part.into_owned()),
            domain: Cow::Owned(self.domain.into_owned()),
        }
    }

    /// True when the address is all ASCII (no SMTPUTF8 needed, RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }

    /// True when the domain is an address literal (`[...]`).
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }
}

impl fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The argument of `MAIL FROM:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath<'a> {
    /// The null reverse-path `<>` (bounces, RFC 5321 section 4.5.5).
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox<'a>),
}

impl ReversePath<'_> {
    /// Detach from the input line.
    pub fn into_owned(self) -> ReversePath<'static> {
        match self {
            ReversePath::Null => ReversePath::Null,
            ReversePath::Mailbox(m) => ReversePath::Mailbox(m.into_owned()),
        }
    }

    /// True when no SMTPUTF8 is needed.
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ReversePath<'_> {
    /// Formats the address without brackets (empty for the null path).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The argument of `RCPT TO:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath<'a> {
    /// `<postmaster>` without a domain: this server's postmaster
    /// (RFC 5321 section 4.1.1.3; matched without regard to case).
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox<'a>),
}

impl ForwardPath<'_> {
    /// Detach from the input line.
    pub fn into_owned(self) -> ForwardPath<'static> {
        match self {
            ForwardPath::Postmaster => ForwardPath::Postmaster,
            ForwardPath::Mailbox(m) => ForwardPath::Mailbox(m.into_owned()),
        }
    }

    /// True when no SMTPUTF8 is needed.
    pub fn is_ascii(&self) -> bool {
        match self {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ForwardPath<'_> {
    /// Formats the address without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// `BODY=` values (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyType {
    /// `7BIT`
    SevenBit,
    /// `8BITMIME`
    EightBitMime,
    /// `BINARYMIME`
    BinaryMime,
}

impl BodyType {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// An ESMTP parameter this crate does not interpret: keyword and optional
/// value, as written.
pub type OtherParam<'a> = (Cow<'a, str>, Option<Cow<'a, str>>);

/// ESMTP parameters of `MAIL FROM:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MailParameters<'a> {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152).
    pub body: Option<BodyType>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `AUTH=` (RFC 4954 section 5): xtext mailbox, or `<>` as Outlook sends.
    pub auth: Option<Cow<'a, str>>,
    /// `RET=` (RFC 3461), kept as written.
    pub ret: Option<Cow<'a, str>>,
    /// `ENVID=` (RFC 3461), kept as written.
    pub envid: Option<Cow<'a, str>>,
    /// Any other parameter, in order.
    pub other: Vec<OtherParam<'a>>,
}

impl MailParameters<'_> {
    /// Detach from the input line.
    pub fn into_owned(self) -> MailParameters<'static> {
        MailParameters {
            size: self.size,
            body: self.body,
            smtputf8: self.smtputf8,
            auth: self.auth.map(own),
            ret: self.ret.map(own),
            envid: self.envid.map(own),
            other: own_other(self.other),
        }
    }
}

/// ESMTP parameters of `RCPT TO:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RcptParameters<'a> {
    /// `NOTIFY=` (RFC 3461), kept as written.
    pub notify: Option<Cow<'a, str>>,
    /// `ORCPT=` (RFC 3461), kept as written.
    pub orcpt: Option<Cow<'a, str>>,
    /// Any other parameter, in order.
    pub other: Vec<OtherParam<'a>>,
}

impl RcptParameters<'_> {
    /// Detach from the input line.
    pub fn into_owned(self) -> RcptParameters<'static> {
        RcptParameters {
            notify: self.notify.map(own),
            orcpt: self.orcpt.map(own),
            other: own_other(self.other),
        }
    }
}

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

fn own_other(v: Vec<OtherParam<'_>>) -> Vec<OtherParam<'static>> {
    v.into_iter()
        .map(|(k, val)| (own(k), val.map(own)))
        .collect()
}

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command<'a> {
    /// `EHLO domain-or-literal`
    Ehlo(Cow<'a, str>),
    /// `HELO domain`
    Helo(Cow<'a, str>),
    /// `MAIL FROM:<reverse-path> [params]`
    Mail {
        /// Sender.
        from: ReversePath<'a>,
        /// ESMTP parameters.
        params: MailParameters<'a>,
    },
    /// `RCPT TO:<forward-path> [params]`
    Rcpt {
        /// Recipient.
        to: ForwardPath<'a>,
        /// ESMTP parameters.
        params: RcptParameters<'a>,
    },
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `VRFY string`
    Vrfy(Cow<'a, str>),
    /// `EXPN string`
    Expn(Cow<'a, str>),
    /// `HELP [string]`
    Help(Option<Cow<'a, str>>),
    /// `NOOP [string]`
    Noop(Option<Cow<'a, str>>),
    /// `QUIT`
    Quit,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The mechanism is kept
    /// as written; the initial response is base64 text (or `=` for empty).
    Auth {
        /// SASL mechanism name.
        mechanism: Cow<'a, str>,
        /// Initial response, base64 or `=`.
        initial_response: Option<Cow<'a, str>>,
    },
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// Final chunk.
        last: bool,
    },
}

impl<'a> Command<'a> {
    /// Parse one command line given without its line end.
    ///
    /// Verbs and parameter keywords are matched without regard to case. A
    /// single space separates the verb from its arguments; after `FROM:` and
    /// `TO:` spaces are tolerated (as Postfix does), and a path may be given
    /// without angle brackets. Non-ASCII UTF-8 is accepted in addresses and
    /// parameter values; whether SMTPUTF8 permits it is the session's call
    /// ([`Mailbox::is_ascii`]).
    pub fn parse(line: &'a [u8]) -> Result<Command<'a>, ParseError> {
        // Verbs are four letters but STARTTLS: look there first.
        let space = if line.get(4) == Some(&b' ') {
            Some(4)
        } else {
            line.iter().position(|&c| c == b' ')
        };
        let (verb_bytes, args) = match space {
            Some(i) => (line.get(..i).unwrap_or(line), line.get(i + 1..)),
            None => (line, None),
        };
        let verb = Verb::from_bytes(verb_bytes).ok_or(ParseError::UnknownCommand)?;
        let args = match args {
            None => None,
            Some(a) => Some(std::str::from_utf8(a).map_err(|_| ParseError::Syntax(verb))?),
        };
        if let Some(a) = args {
            // Control characters (a bare CR among them) have no place in a
            // command line; RFC 5321 section 4.1.1 allows only printable text.
            // Branch-free so that it vectorises: true when any octet is
            // below 0x20 or is DEL.
            if a.bytes()
                .fold(false, |bad, b| bad | (b < 0x20) | (b == 0x7f))
            {
                return Err(ParseError::Syntax(verb));
            }
        }
        match verb {
            Verb::Ehlo | Verb::Helo => {
                let domain = args
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or(ParseError::Syntax(verb))?;
                Ok(if verb == Verb::Ehlo {
                    Command::Ehlo(Cow::Borrowed(domain))
                } else {
                    Command::Helo(Cow::Borrowed(domain))
                })
            }
            Verb::Mail => {
                let rest = strip_keyword(args.ok_or(ParseError::Syntax(verb))?, "FROM:")
                    .ok_or(ParseError::Syntax(verb))?;
                let (path, rest) = split_path(rest).ok_or(ParseError::BadAddress(verb))?;
                let from = if path.is_empty() {
                    ReversePath::Null
                } else {
                    ReversePath::Mailbox(parse_mailbox(path).ok_or(ParseError::BadAddress(verb))?)
                };
                let mut params = MailParameters::default();
                let bad = ParseError::BadParameter(verb);
                let unsupported = ParseError::UnsupportedParameter(verb);
                for_each_param(
                    rest,
                    |k, v| {
                        if k.eq_ignore_ascii_case("SIZE") {
                            params.size = Some(parse_decimal(v.ok_or(unsupported)?).ok_or(bad)?);
                        } else if k.eq_ignore_ascii_case("BODY") {
                            let v = v.ok_or(unsupported)?;
                            params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                                BodyType::SevenBit
                            } else if v.eq_ignore_ascii_case("8BITMIME") {
                                BodyType::EightBitMime
                            } else if v.eq_ignore_ascii_case("BINARYMIME") {
                                BodyType::BinaryMime
                            } else {
                                return Err(unsupported);
                            });
                        } else if k.eq_ignore_ascii_case("SMTPUTF8") {
                            if v.is_some() {
                                return Err(unsupported);
                            }
                            params.smtputf8 = true;
                        } else if k.eq_ignore_ascii_case("AUTH") {
                            params.auth = Some(Cow::Borrowed(v.ok_or(bad)?));
                        } else if k.eq_ignore_ascii_case("RET") {
                            // RFC 3461 section 4.3: "FULL" / "HDRS", once
                            // (section 4: a parameter at most once).
                            let v = v
                                .filter(|v| {
                                    v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS")
                                })
                                .filter(|_| params.ret.is_none())
                                .ok_or(bad)?;
                            params.ret = Some(Cow::Borrowed(v));
                        } else if k.eq_ignore_ascii_case("ENVID") {
                            let v = v.filter(|_| params.envid.is_none()).ok_or(bad)?;
                            params.envid = Some(Cow::Borrowed(v));
                        } else {
                            params.other.push((Cow::Borrowed(k), v.map(Cow::Borrowed)));
                        }
                        Ok(())
                    },
                    bad,
                )?;
                Ok(Command::Mail { from, params })
            }
            Verb::Rcpt => {
                let rest = strip_keyword(args.ok_or(ParseError::Syntax(verb))?, "TO:")
                    .ok_or(ParseError::Syntax(verb))?;
                let (path, rest) = split_path(rest).ok_or(ParseError::BadAddress(verb))?;
                let to = if path.eq_ignore_ascii_case("postmaster") {
                    ForwardPath::Postmaster
                } else {
                    ForwardPath::Mailbox(parse_mailbox(path).ok_or(ParseError::BadAddress(verb))?)
                };
                let mut params = RcptParameters::default();
                let bad = ParseError::BadParameter(verb);
                for_each_param(
                    rest,
                    |k, v| {
                        // RFC 3461 section 4: each at most once.
                        if k.eq_ignore_ascii_case("NOTIFY") {
                            let v = v
                                .filter(|v| is_notify_value(v) && params.notify.is_none())
                                .ok_or(bad)?;
                            params.notify = Some(Cow::Borrowed(v));
                        } else if k.eq_ignore_ascii_case("ORCPT") {
                            let v = v
                                .filter(|v| is_orcpt_value(v) && params.orcpt.is_none())
                                .ok_or(bad)?;
                            params.orcpt = Some(Cow::Borrowed(v));
                        } else {
                            params.other.push((Cow::Borrowed(k), v.map(Cow::Borrowed)));
                        }
                        Ok(())
                    },
                    bad,
                )?;
                Ok(Command::Rcpt { to, params })
            }
            // Arguments to QUIT are ignored, as Postfix ignores them: the
            // client means to leave, and a 501 would leave it waiting.
            Verb::Quit => Ok(Command::Quit),
            Verb::Data | Verb::Rset | Verb::StartTls => {
                if args.is_some() {
                    return Err(ParseError::Syntax(verb));
                }
                Ok(match verb {
                    Verb::Data => Command::Data,
                    Verb::Rset => Command::Rset,
                    _ => Command::StartTls,
                })
            }
            Verb::Vrfy | Verb::Expn => {
                let a = args
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or(ParseError::Syntax(verb))?;
                Ok(if verb == Verb::Vrfy {
                    Command::Vrfy(Cow::Borrowed(a))
                } else {
                    Command::Expn(Cow::Borrowed(a))
                })
            }
            Verb::Help | Verb::Noop => {
                let a = args
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Cow::Borrowed);
                Ok(if verb == Verb::Help {
                    Command::Help(a)
                } else {
                    Command::Noop(a)
                })
            }
            Verb::Auth => {
                let a = args.ok_or(ParseError::Syntax(verb))?;
                let (mech, ir) = match a.split_once(' ') {
                    Some((m, ir)) => (m, Some(ir)),
                    None => (a, None),
                };
                // RFC 4422 section 3.1: 1-20 of upper-case letters, digits,
                // '-' and '_'; lower case accepted since verbs are caseless.
                if mech.is_empty()
                    || mech.len() > 20
                    || !mech
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(ParseError::Syntax(verb));
                }
                // One token; whether it decodes is the SASL exchange's
                // question, answered "501 5.5.2" (RFC 4954 section 4).
                if let Some(ir) = ir {
                    if ir.is_empty() || !ir.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(ParseError::Syntax(verb));
                    }
                }
                Ok(Command::Auth {
                    mechanism: Cow::Borrowed(mech),
                    initial_response: ir.map(Cow::Borrowed),
                })
            }
            Verb::Bdat => {
                let a = args.ok_or(ParseError::Syntax(verb))?;
                let (size, last) = match a.split_once(' ') {
                    Some((s, l)) if l.eq_ignore_ascii_case("LAST") => (s, true),
                    Some(_) => return Err(ParseError::Syntax(verb)),
                    None => (a, false),
                };
                let size = parse_decimal(size).ok_or(ParseError::Syntax(verb))?;
                Ok(Command::Bdat { size, last })
            }
        }
    }

    /// The command's verb.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Ehlo(_) => Verb::Ehlo,
            Command::Helo(_) => Verb::Helo,
            Command::Mail { .. } => Verb::Mail,
            Command::Rcpt { .. } => Verb::Rcpt,
            Command::Data => Verb::Data,
            Command::Rset => Verb::Rset,
            Command::Vrfy(_) => Verb::Vrfy,
            Command::Expn(_) => Verb::Expn,
            Command::Help(_) => Verb::Help,
            Command::Noop(_) => Verb::Noop,
            Command::Quit => Verb::Quit,
            Command::Auth { .. } => Verb::Auth,
            Command::StartTls => Verb::StartTls,
            Command::Bdat { .. } => Verb::Bdat,
        }
    }

    /// Detach from the input line.
    pub fn into_owned(self) -> Command<'static> {
        match self {
            Command::Ehlo(d) => Command::Ehlo(own(d)),
            Command::Helo(d) => Command::Helo(own(d)),
            Command::Mail { from, params } => Command::Mail {
                from: from.into_owned(),
                params: params.into_owned(),
            },
            Command::Rcpt { to, params } => Command::Rcpt {
                to: to.into_owned(),
                params: params.into_owned(),
            },
            Command::Data => Command::Data,
            Command::Rset => Command::Rset,
            Command::Vrfy(s) => Command::Vrfy(own(s)),
            Command::Expn(s) => Command::Expn(own(s)),
            Command::Help(s) => Command::Help(s.map(own)),
            Command::Noop(s) => Command::Noop(s.map(own)),
            Command::Quit => Command::Quit,
            Command::Auth {
                mechanism,
                initial_response,
            } => Command::Auth {
                mechanism: own(mechanism),
                initial_response: initial_response.map(own),
            },
            Command::StartTls => Command::StartTls,
            Command::Bdat { size, last } => Command::Bdat { size, last },
        }
    }

    /// The command line with its CRLF, ready to send.
    pub fn to_line(&self) -> Vec<u8> {
        let mut s = self.to_string();
        s.push_str("\r\n");
        s.into_bytes()
    }
}

impl fmt::Display for Command<'_> {
    /// Formats the command line without its CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(d) => write!(f, "EHLO {d}"),
            Command::Helo(d) => write!(f, "HELO {d}"),
            Command::Mail { from, params } => {
                write!(f, "MAIL FROM:<{from}>")?;
                if let Some(s) = params.size {
                    write!(f, " SIZE={s}")?;
                }
                if let Some(b) = params.body {
                    write!(f, " BODY={}", b.as_str())?;
                }
                if params.smtputf8 {
                    f.write_str(" SMTPUTF8")?;
                }
                if let Some(a) = &params.auth {
                    write!(f, " AUTH={a}")?;
                }
                if let Some(r) = &params.ret {
                    write!(f, " RET={r}")?;
                }
                if let Some(e) = &params.envid {
                    write!(f, " ENVID={e}")?;
                }
                write_other(f, &params.other)
            }
            Command::Rcpt { to, params } => {
                write!(f, "RCPT TO:<{to}>")?;
                if let Some(n) = &params.notify {
                    write!(f, " NOTIFY={n}")?;
                }
                if let Some(o) = &params.orcpt {
                    write!(f, " ORCPT={o}")?;
                }
                write_other(f, &params.other)
            }
            Command::Data => f.write_str("DATA"),
            Command::Rset => f.write_str("RSET"),
            Command::Vrfy(s) => write!(f, "VRFY {s}"),
            Command::Expn(s) => write!(f, "EXPN {s}"),
            Command::Help(None) => f.write_str("HELP"),
            Command::Help(Some(s)) => write!(f, "HELP {s}"),
            Command::Noop(None) => f.write_str("NOOP"),
            Command::Noop(Some(s)) => write!(f, "NOOP {s}"),
            Command::Quit => f.write_str("QUIT"),
            Command::Auth {
                mechanism,
                initial_response: None,
            } => write!(f, "AUTH {mechanism}"),
            Command::Auth {
                mechanism,
                initial_response: Some(ir),
            } => write!(f, "AUTH {mechanism} {ir}"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
        }
    }
}

fn write_other(f: &mut fmt::Formatter<'_>, other: &[OtherParam<'_>]) -> fmt::Result {
    for (k, v) in other {
        match v {
            Some(v) => write!(f, " {k}={v}")?,
            None => write!(f, " {k}")?,
        }
    }
    Ok(())
}

/// Strip a case-insensitive keyword (`FROM:` / `TO:`, given in upper
/// case) and following spaces.
fn strip_keyword<'s>(s: &'s str, kw: &str) -> Option<&'s str> {
    let bytes = s.as_bytes();
    // `kw` is upper case: fold one side only.
    if !bytes
        .get(..kw.len())?
        .iter()
        .zip(kw.as_bytes())
        .all(|(&c, &k)| c.to_ascii_uppercase() == k)
    {
        return None;
    }
    let mut i = kw.len();
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    s.get(i..)
}

/// Split `<path> params` (or `path params` without brackets) into the path
/// contents (source route removed) and the rest of the line.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let (inner, rest) = if let Some(after) = s.strip_prefix('<') {
        // Find the closing '>': not inside a quoted local part, nor inside
        // an address literal, whose dcontent may hold '"', '<' and '>'
        // (RFC 5321 section 4.1.3).
        let bytes = after.as_bytes();
        let mut i = 0;
        if bytes.first() == Some(&b'@') {
            // A source route holds neither quotes nor brackets.
            i = memchr::memchr(b':', bytes)? + 1;
        }
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match *bytes.get(i)? {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            i += 1;
        }
        let end = loop {
            let j = i + memchr::memchr2(b'>', b'[', bytes.get(i..)?)?;
            if bytes.get(j) == Some(&b'>') {
                break j;
            }
            i = j + memchr::memchr(b']', bytes.get(j..)?)? + 1;
        };
        (after.get(..end)?, after.get(end + 1..)?)
    } else {
        if s.is_empty() {
            return None;
        }
        match s.find(' ') {
            Some(i) => (s.get(..i)?, s.get(i..)?),
            None => (s, ""),
        }
    };
    // RFC 5321 section 4.1.2 / appendix C: an A-d-l source route
    // (`@a,@b:`) is accepted and ignored.
    let inner = if inner.starts_with('@') {
        let (route, mbox) = inner.split_once(':')?;
        if !route
            .split(',')
            .all(|hop| hop.strip_prefix('@').is_some_and(is_domain))
        {
            return None;
        }
        mbox
    } else {
        inner
    };
    Some((inner, rest))
}

/// Parse `local-part@domain`.
fn parse_mailbox(s: &str) -> Option<Mailbox<'_>> {
    let at = if s.starts_with('"') {
        // Quoted-string = DQUOTE *QcontentSMTP DQUOTE
        let bytes = s.as_bytes();
        let mut i = 1;
        loop {
            let b = *bytes.get(i)?;
            match b {
                b'\\' => {
                    let n = *bytes.get(i + 1)?;
                    // quoted-pairSMTP = %d92 %d32-126
                    if !(32..=126).contains(&n) {
                        return None;
                    }
                    i += 2;
                    continue;
                }
                b'"' => break i + 1,
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8
                32..=126 | 0x80.. => {}
                _ => return None,
            }
            i += 1;
        }
    } else {
        // Dot-string = Atom *("." Atom), checked while looking for the '@'
        // (not atext, so the first '@' ends a valid local part). Dots out
        // of place (`a..b`, `.a`, `a.`) are let through, as Postfix lets
        // them (`strict_rfc821_envelopes = no`): such addresses are in use
        // (some mobile carriers hand them out), and refusing their mail
        // would lose it for a rule no one can read anything else from.
        let bytes = s.as_bytes();
        let mut atext_seen = false;
        let mut i = 0;
        loop {
            let c = *bytes.get(i)?;
            if c == b'@' {
                break;
            } else if is_atext(c) {
                atext_seen = true;
            } else if c != b'.' {
                return None;
            }
            i += 1;
        }
        // No atext at all (empty, or dots only). A later '@' would belong to
        // the local part, which then is no dot-string; a domain name cannot
        // hold one, an address literal can.
        if !atext_seen || (bytes.get(i + 1) == Some(&b'[') && bytes.get(i + 1..)?.contains(&b'@')) {
            return None;
        }
        i
    };
    let local = s.get(..at)?;
    let domain = s.get(at..)?.strip_prefix('@')?;
    if local.is_empty() {
        return None;
    }
    if !(is_domain(domain) || is_address_literal(domain)) {
        return None;
    }
    Some(Mailbox {
        local_part: Cow::Borrowed(local),
        domain: Cow::Borrowed(domain),
    })
}

/// Octet classes for the address grammar.
const C_LETDIG: u8 = 1; // ALPHA / DIGIT, or an octet of a UTF-8 sequence
const C_ATEXT: u8 = 2; // atext (RFC 5322 section 3.2.3)
const C_HYPHEN: u8 = 4;

// Evaluated at compile time, where an out-of-range index cannot panic at
// run time (it would be a compile error).
#[allow(clippy::indexing_slicing)]
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b >= 0x80 {
            t[i] = C_LETDIG | C_ATEXT;
        }
        i += 1;
    }
    let specials = b"!#$%&'*+-/=?^_`{|}~";
    let mut j = 0;
    while j < specials.len() {
        t[specials[j] as usize] |= C_ATEXT;
        j += 1;
    }
    t[b'-' as usize] |= C_HYPHEN;
    t
};

fn class(b: u8) -> u8 {
    CLASS.get(usize::from(b)).copied().unwrap_or(0)
}

/// atext (RFC 5322 section 3.2.3) by byte; octets >= 0x80 belong to
/// UTF-8 sequences (the line is valid UTF-8), allowed by RFC 6531.
fn is_atext(b: u8) -> bool {
    class(b) & C_ATEXT != 0
}

/// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str],
/// with U-labels (non-ASCII) allowed as RFC 6531 section 3.3 says. One pass.
pub(crate) fn is_domain(s: &str) -> bool {
    if s.len() > 255 {
        return false;
    }
    let mut label_len = 0usize;
    let mut prev = b'.';
    for &c in s.as_bytes() {
        // Letters and digits first: they are most of a name.
        if class(c) & C_LETDIG != 0 || (c == b'-' && label_len > 0) {
            label_len += 1;
        } else if c == b'.' {
            if label_len == 0 || prev == b'-' {
                return false;
            }
            label_len = 0;
        } else {
            return false;
        }
        prev = c;
    }
    label_len > 0 && prev != b'-'
}

/// address-literal = "[" ( IPv4 / IPv6 / General ) "]" (section 4.1.3).
fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = inner
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
        .and_then(|_| inner.get(5..))
    {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if let Some((tag, content)) = inner.split_once(':') {
        // General-address-literal = Standardized-tag ":" 1*dcontent
        return !tag.is_empty()
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !content.is_empty()
            && content
                .bytes()
                .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
    }
    inner.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Call `f` for each `keyword[=value]` of the parameter part (after the
/// path), which must be empty or start with a space. Byte-wise, in one
/// forward pass: the separators are ASCII, so every piece is valid UTF-8.
fn for_each_param<'s>(
    rest: &'s str,
    mut f: impl FnMut(&'s str, Option<&'s str>) -> Result<(), ParseError>,
    bad: ParseError,
) -> Result<(), ParseError> {
    let bytes = rest.as_bytes();
    if bytes.first().is_some_and(|&c| c != b' ') {
        return Err(bad);
    }
    let mut i = 0;
    loop {
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        let k_start = i;
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        match bytes.get(i) {
            None => return Ok(()),
            Some(c) if c.is_ascii_alphanumeric() => i += 1,
            Some(_) => return Err(bad),
        }
        while bytes
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-')
        {
            i += 1;
        }
        let k = rest.get(k_start..i).ok_or(bad)?;
        let v = match bytes.get(i) {
            None | Some(b' ') => None,
            Some(b'=') => {
                i += 1;
                let v_start = i;
                // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531)
                while let Some(&c) = bytes.get(i) {
                    if c == b' ' {
                        break;
                    }
                    if !((33..=126).contains(&c) && c != b'=' || c >= 0x80) {
                        return Err(bad);
                    }
                    i += 1;
                }
                if i == v_start {
                    return Err(bad);
                }
                Some(rest.get(v_start..i).ok_or(bad)?)
            }
            Some(_) => return Err(bad),
        };
        f(k, v)?;
    }
}

/// Decimal with at most 19 digits (fits u64 without overflow checks).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    // At most 19 digits: below 10^19 < 2^64, so no overflow.
    s.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// RFC 3461 section 4.1: `NEVER`, or a comma-separated list of
/// `SUCCESS`, `FAILURE` and `DELAY` (keywords are caseless, RFC 5321
/// section 2.4).
fn is_notify_value(v: &str) -> bool {
    v.eq_ignore_ascii_case("NEVER")
        || v.split(',').all(|e| {
            ["SUCCESS", "FAILURE", "DELAY"]
                .iter()
                .any(|k| e.eq_ignore_ascii_case(k))
        })
}

/// RFC 3461 section 4.2: `ORCPT=addr-type;xtext`, the address type an
/// atom (`rfc822`, `utf-8`), the address not empty.
fn is_orcpt_value(v: &str) -> bool {
    v.split_once(';').is_some_and(|(t, a)| {
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !a.is_empty()
    })
}

/// An unknown command line that is no SMTP at all: one that does not start
/// with a letter (`.`, a body line, a binary blob), a message header field
/// (`Subject: hi`) or an HTTP request (`GET`, `POST`, `CONNECT`). A server
/// that sees one has lost the command stream: a client that went on
/// pipelining its message after a refused DATA (RFC 2920 section 3.1
/// forbids it), or a web page speaking to the port. Executing the rest
/// would run commands written inside a message, so the session ends (as
/// Postfix's `smtpd_forbidden_commands` and its header check do).
pub fn is_non_smtp_line(line: &[u8]) -> bool {
    // No SMTP verb starts with anything but a letter: Postfix's default
    // `smtpd_forbidden_commands` ends the session on `/^[^A-Z]/` too, so
    // a `.` or a body line after a refused DATA is never answered.
    if line.first().is_some_and(|b| !b.is_ascii_alphabetic()) {
        return true;
    }
    let word_end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t' || b == b':')
        .unwrap_or(line.len());
    let word = line.get(..word_end).unwrap_or_default();
    if [&b"CONNECT"[..], b"GET", b"POST"]
        .iter()
        .any(|v| word.eq_ignore_ascii_case(v))
    {
        return true;
    }
    // RFC 5322 section 3.6.8: field-name is 1*ftext (printable US-ASCII
    // but ':'); obsolete syntax allows white space before the colon.
    let rest = line.get(word_end..).unwrap_or_default();
    let after_ws = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .and_then(|i| rest.get(i));
    !word.is_empty() && word.iter().all(|&b| (33..=126).contains(&b)) && after_ws == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command<'_>, ParseError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn dsn_parameter_values() {
        for ok in [
            "RCPT TO:<a@b> NOTIFY=NEVER",
            "RCPT TO:<a@b> NOTIFY=never",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY",
            "RCPT TO:<a@b> NOTIFY=delay",
            "MAIL FROM:<a@b> RET=FULL",
            "MAIL FROM:<a@b> RET=hdrs",
        ] {
            assert!(p(ok).is_ok(), "{ok}");
        }
        for (bad, verb) in [
            ("RCPT TO:<a@b> NOTIFY=BOGUS", Verb::Rcpt),
            ("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", Verb::Rcpt),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,", Verb::Rcpt),
            ("RCPT TO:<a@b> NOTIFY=", Verb::Rcpt),
            ("MAIL FROM:<a@b> RET=ALL", Verb::Mail),
            ("MAIL FROM:<a@b> RET=", Verb::Mail),
            // Each at most once (RFC 3461 section 4), as Postfix checks.
            ("MAIL FROM:<a@b> RET=FULL RET=HDRS", Verb::Mail),
            ("MAIL FROM:<a@b> RET=FULL ret=FULL", Verb::Mail),
            ("MAIL FROM:<a@b> ENVID=a ENVID=b", Verb::Mail),
            ("RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=SUCCESS", Verb::Rcpt),
            (
                "RCPT TO:<a@b> ORCPT=rfc822;a@b ORCPT=rfc822;c@d",
                Verb::Rcpt,
            ),
            // Section 4.2: addr-type ";" xtext.
            ("RCPT TO:<a@b> ORCPT=bogus", Verb::Rcpt),
            ("RCPT TO:<a@b> ORCPT=;a@b", Verb::Rcpt),
            ("RCPT TO:<a@b> ORCPT=rfc822;", Verb::Rcpt),
            ("RCPT TO:<a@b> ORCPT=rfc 822;a@b", Verb::Rcpt),
        ] {
            assert_eq!(p(bad), Err(ParseError::BadParameter(verb)), "{bad}");
        }
    }

    #[test]
    fn non_smtp_lines() {
        for l in [
            "Subject: hi",
            "From:x@y",
            "X-Mailer : old",
            "Received: from a by b",
            "GET / HTTP/1.0",
            "post /x HTTP/1.1",
            "CONNECT mail:25 HTTP/1.0",
            // Not starting with a letter (Postfix: /^[^A-Z]/).
            " ",
            " NOOP",
            ":x",
            ".",
            "..",
            "*",
            "1",
            "<a>",
            "\u{0}NOOP",
        ] {
            assert!(is_non_smtp_line(l.as_bytes()), "{l}");
        }
        for l in [
            "",
            "FOO",
            "FOO bar: baz",
            "MAIL FROM:<a@b>",
            "RCPT TO:<a@b>",
            "GETX",
            "hello world",
        ] {
            assert!(!is_non_smtp_line(l.as_bytes()), "{l}");
        }
    }

    fn mb<'a>(l: &'a str, d: &'a str) -> Mailbox<'a> {
        Mailbox {
            local_part: l.into(),
            domain: d.into(),
        }
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(p("DATA"), Ok(Command::Data));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("rSeT"), Ok(Command::Rset));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("StartTLS"), Ok(Command::StartTls));
        assert_eq!(p("NOOP"), Ok(Command::Noop(None)));
        assert_eq!(p("NOOP hello"), Ok(Command::Noop(Some("hello".into()))));
        assert_eq!(p("HELP"), Ok(Command::Help(None)));
        assert_eq!(p("HELP MAIL"), Ok(Command::Help(Some("MAIL".into()))));
        assert_eq!(p("DATA x"), Err(ParseError::Syntax(Verb::Data)));
        // Postfix ignores QUIT's arguments; so do we.
        assert_eq!(p("QUIT now"), Ok(Command::Quit));
        assert_eq!(p("STARTTLS x"), Err(ParseError::Syntax(Verb::StartTls)));
        assert_eq!(p("RSET x"), Err(ParseError::Syntax(Verb::Rset)));
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(p(""), Err(ParseError::UnknownCommand));
        assert_eq!(p("FOO bar"), Err(ParseError::UnknownCommand));
        assert_eq!(p("MAILX FROM:<>"), Err(ParseError::UnknownCommand));
        assert_eq!(p(" MAIL FROM:<>"), Err(ParseError::UnknownCommand));
        assert_eq!(Command::parse(b"\xff\xfe"), Err(ParseError::UnknownCommand));
    }

    #[test]
    fn ehlo_helo() {
        assert_eq!(
            p("EHLO client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            p("ehlo [192.0.2.1]"),
            Ok(Command::Ehlo("[192.0.2.1]".into()))
        );
        assert_eq!(p("HELO x"), Ok(Command::Helo("x".into())));
        assert_eq!(p("EHLO"), Err(ParseError::Syntax(Verb::Ehlo)));
        assert_eq!(p("EHLO "), Err(ParseError::Syntax(Verb::Ehlo)));
        assert_eq!(p("HELO"), Err(ParseError::Syntax(Verb::Helo)));
        assert_eq!(p("EHLO a\rb"), Err(ParseError::Syntax(Verb::Ehlo)));
    }

    #[test]
    fn mail_paths() {
        assert_eq!(
            p("MAIL FROM:<>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: MailParameters::default()
            })
        );
        assert_eq!(
            p("mail from:<user2@mail.csuvnetwork.com>"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mb("user2", "mail.csuvnetwork.com")),
                params: MailParameters::default()
            })
        );
        // Space after the colon, as Foxmail sends (the lab capture).
        let c = p("MAIL FROM: <user2@mail.csuvnetwork.com> SIZE=1234").unwrap();
        assert_eq!(
            c,
            Command::Mail {
                from: ReversePath::Mailbox(mb("user2", "mail.csuvnetwork.com")),
                params: MailParameters {
                    size: Some(1234),
                    ..Default::default()
                }
            }
        );
        // Without brackets.
        assert!(matches!(
            p("MAIL FROM:a@b.c"),
            Ok(Command::Mail { from: ReversePath::Mailbox(m), .. }) if m == mb("a", "b.c")
        ));
        // Quoted local part with '>' and '@' inside.
        assert!(matches!(
            p(r#"MAIL FROM:<"a>b@c\"d"@example.com>"#),
            Ok(Command::Mail { from: ReversePath::Mailbox(m), .. })
                if m == mb(r#""a>b@c\"d""#, "example.com")
        ));
        // Address literals.
        assert!(matches!(
            p("MAIL FROM:<u@[192.0.2.1]>"),
            Ok(Command::Mail { from: ReversePath::Mailbox(m), .. }) if m.is_address_literal()
        ));
        assert!(matches!(
            p("MAIL FROM:<u@[IPv6:2001:db8::1]>"),
            Ok(Command::Mail { from: ReversePath::Mailbox(m), .. }) if m.domain == "[IPv6:2001:db8::1]"
        ));
        assert!(p("MAIL FROM:<u@[x-tag:abc]>").is_ok());
        // Found by the smtp_command fuzz target: general literals may hold
        // '"', '<' and '>', which must not end or open anything.
        let c = p(r#"RCPT TO:<e@[NNNNE:E99"9NNNNENN998=o:E99o3:;>]> NOTIFY=NEVER"#).unwrap();
        assert!(
            matches!(&c, Command::Rcpt { to: ForwardPath::Mailbox(m), params }
            if m.domain == r#"[NNNNE:E99"9NNNNENN998=o:E99o3:;>]"# && params.notify.is_some())
        );
        assert_eq!(Command::parse(c.to_string().as_bytes()), Ok(c));
        let c = p(r#"RcpT To: eAUT@[NNNNE:E99"9NNNNENN998=o:E99o3:;]"#).unwrap();
        assert_eq!(Command::parse(c.to_string().as_bytes()), Ok(c));
        assert_eq!(
            p("MAIL FROM:<u@[x:a>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<u@[999.0.2.1]>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<u@[IPv6:zz]>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        // Source route ignored.
        assert!(matches!(
            p("MAIL FROM:<@relay.one,@relay.two:joe@example.com>"),
            Ok(Command::Mail { from: ReversePath::Mailbox(m), .. }) if m == mb("joe", "example.com")
        ));
        assert_eq!(
            p("MAIL FROM:<@bad..route:joe@example.com>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        // UTF-8 address (SMTPUTF8 checked by the session).
        match p("MAIL FROM:<用户@例子.广告> SMTPUTF8").unwrap() {
            Command::Mail { from, params } => {
                assert!(!from.is_ascii());
                assert!(params.smtputf8);
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn mail_errors() {
        assert_eq!(p("MAIL"), Err(ParseError::Syntax(Verb::Mail)));
        assert_eq!(p("MAIL TO:<a@b>"), Err(ParseError::Syntax(Verb::Mail)));
        assert_eq!(p("MAIL FROM:"), Err(ParseError::BadAddress(Verb::Mail)));
        assert_eq!(p("MAIL FROM:<a@b"), Err(ParseError::BadAddress(Verb::Mail)));
        assert_eq!(p("MAIL FROM:<a>"), Err(ParseError::BadAddress(Verb::Mail)));
        assert_eq!(p("MAIL FROM:<a@>"), Err(ParseError::BadAddress(Verb::Mail)));
        // Dots out of place are let through, as Postfix lets them; a local
        // part of dots alone is not.
        for ok in ["MAIL FROM:<.a@b>", "MAIL FROM:<a..b@c>", "MAIL FROM:<a.@c>"] {
            let c = p(ok).unwrap();
            assert_eq!(p(&c.to_string()), Ok(c.clone()), "{ok}");
        }
        for bad in ["MAIL FROM:<.@b>", "MAIL FROM:<..@b>", "RCPT TO:<.@b>"] {
            assert!(matches!(p(bad), Err(ParseError::BadAddress(_))), "{bad}");
        }
        assert_eq!(
            p("MAIL FROM:<a@-b.c>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<a@b..c>"),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        assert_eq!(
            p(r#"MAIL FROM:<"a@b>"#),
            Err(ParseError::BadAddress(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<a@b>SIZE=1"),
            Err(ParseError::BadParameter(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=x"),
            Err(ParseError::BadParameter(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=99999999999999999999"),
            Err(ParseError::BadParameter(Verb::Mail))
        );
        // A known parameter with a value we do not support: 555, as
        // Postfix answers (RFC 5321 section 4.1.1.11).
        for l in [
            "MAIL FROM:<a@b> SIZE",
            "MAIL FROM:<a@b> BODY=9BIT",
            "MAIL FROM:<a@b> BODY",
            "MAIL FROM:<a@b> SMTPUTF8=yes",
        ] {
            assert_eq!(
                p(l),
                Err(ParseError::UnsupportedParameter(Verb::Mail)),
                "{l}"
            );
            assert_eq!(p(l).unwrap_err().reply().code(), 555);
        }
        assert_eq!(
            p("MAIL FROM:<a@b> -X=1"),
            Err(ParseError::BadParameter(Verb::Mail))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> X=a=b"),
            Err(ParseError::BadParameter(Verb::Mail))
        );
    }

    #[test]
    fn mail_params() {
        let c = p("MAIL FROM:<a@b> size=10 body=8bitmime SMTPUTF8 AUTH=<> RET=HDRS ENVID=QQ314159 X-FOO=bar XFLAG").unwrap();
        let Command::Mail { params, .. } = c else {
            panic!()
        };
        assert_eq!(params.size, Some(10));
        assert_eq!(params.body, Some(BodyType::EightBitMime));
        assert!(params.smtputf8);
        assert_eq!(params.auth.as_deref(), Some("<>"));
        assert_eq!(params.ret.as_deref(), Some("HDRS"));
        assert_eq!(params.envid.as_deref(), Some("QQ314159"));
        assert_eq!(
            params.other,
            vec![("X-FOO".into(), Some("bar".into())), ("XFLAG".into(), None)]
        );
        let Command::Mail { params, .. } = p("MAIL FROM:<a@b> BODY=7BIT").unwrap() else {
            panic!()
        };
        assert_eq!(params.body, Some(BodyType::SevenBit));
        let Command::Mail { params, .. } = p("MAIL FROM:<a@b> BODY=BINARYMIME").unwrap() else {
            panic!()
        };
        assert_eq!(params.body, Some(BodyType::BinaryMime));
        let Command::Mail { params, .. } = p("MAIL FROM:<a@b> AUTH=joe+40example.com").unwrap()
        else {
            panic!()
        };
        assert_eq!(params.auth.as_deref(), Some("joe+40example.com"));
    }

    #[test]
    fn rcpt_forms() {
        assert_eq!(
            p("RCPT TO:<postmaster>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                params: RcptParameters::default()
            })
        );
        assert_eq!(
            p("rcpt to:<PostMaster>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                params: RcptParameters::default()
            })
        );
        assert!(matches!(
            p("RCPT TO:<Postmaster@csuvnetwork.com>"),
            Ok(Command::Rcpt { to: ForwardPath::Mailbox(m), .. }) if m == mb("Postmaster", "csuvnetwork.com")
        ));
        let c = p("RCPT TO: <user1@csuvnetwork.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user1@csuvnetwork.com XX=1").unwrap();
        let Command::Rcpt { to, params } = c else {
            panic!()
        };
        assert_eq!(to, ForwardPath::Mailbox(mb("user1", "csuvnetwork.com")));
        assert_eq!(params.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(
            params.orcpt.as_deref(),
            Some("rfc822;user1@csuvnetwork.com")
        );
        assert_eq!(params.other, vec![("XX".into(), Some("1".into()))]);
        assert_eq!(p("RCPT TO:<>"), Err(ParseError::BadAddress(Verb::Rcpt)));
        assert_eq!(p("RCPT FROM:<a@b>"), Err(ParseError::Syntax(Verb::Rcpt)));
        assert_eq!(p("RCPT"), Err(ParseError::Syntax(Verb::Rcpt)));
        assert_eq!(
            p("RCPT TO:<a@b> NOTIFY"),
            Err(ParseError::BadParameter(Verb::Rcpt))
        );
    }

    #[test]
    fn vrfy_expn() {
        assert_eq!(p("VRFY user1"), Ok(Command::Vrfy("user1".into())));
        assert_eq!(p("EXPN staff"), Ok(Command::Expn("staff".into())));
        assert_eq!(p("VRFY"), Err(ParseError::Syntax(Verb::Vrfy)));
        assert_eq!(p("EXPN  "), Err(ParseError::Syntax(Verb::Expn)));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            p("AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial_response: None
            })
        );
        assert_eq!(
            p("auth plain AHVzZXIxAHBhc3M="),
            Ok(Command::Auth {
                mechanism: "plain".into(),
                initial_response: Some("AHVzZXIxAHBhc3M=".into())
            })
        );
        assert_eq!(
            p("AUTH PLAIN ="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("=".into())
            })
        );
        assert_eq!(p("AUTH"), Err(ParseError::Syntax(Verb::Auth)));
        assert_eq!(p("AUTH LO*GIN"), Err(ParseError::Syntax(Verb::Auth)));
        assert_eq!(p("AUTH PLAIN a b"), Err(ParseError::Syntax(Verb::Auth)));
        // Not base64: parsed, and refused by the exchange with 5.5.2.
        assert!(matches!(
            p("AUTH PLAIN !!!"),
            Ok(Command::Auth { initial_response: Some(ir), .. }) if ir == "!!!"
        ));
        assert_eq!(
            p("AUTH ABCDEFGHIJKLMNOPQRSTU"),
            Err(ParseError::Syntax(Verb::Auth))
        );
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            p("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("bdat 1000 last"),
            Ok(Command::Bdat {
                size: 1000,
                last: true
            })
        );
        assert_eq!(
            p("BDAT 86"),
            Ok(Command::Bdat {
                size: 86,
                last: false
            })
        );
        assert_eq!(p("BDAT"), Err(ParseError::Syntax(Verb::Bdat)));
        assert_eq!(p("BDAT x"), Err(ParseError::Syntax(Verb::Bdat)));
        assert_eq!(p("BDAT 1 FIRST"), Err(ParseError::Syntax(Verb::Bdat)));
        assert_eq!(p("BDAT -1"), Err(ParseError::Syntax(Verb::Bdat)));
    }

    #[test]
    fn error_replies() {
        assert_eq!(
            ParseError::UnknownCommand.reply().to_string(),
            "500 5.5.2 Error: command not recognized\r\n"
        );
        assert_eq!(
            ParseError::Syntax(Verb::Mail).reply().to_string(),
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        );
        assert_eq!(
            ParseError::BadAddress(Verb::Mail).reply().to_string(),
            "501 5.1.7 Bad sender address syntax\r\n"
        );
        assert_eq!(
            ParseError::BadAddress(Verb::Rcpt).reply().to_string(),
            "501 5.1.3 Bad recipient address syntax\r\n"
        );
        assert_eq!(
            ParseError::BadParameter(Verb::Rcpt).reply().to_string(),
            "501 5.5.4 Bad RCPT parameter syntax\r\n"
        );
    }

    #[test]
    fn format_and_owned() {
        let line = "MAIL FROM:<a@b.c> SIZE=5 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=FULL ENVID=x X=y Z";
        let c = p(line).unwrap();
        assert_eq!(c.to_string(), line);
        let owned = c.clone().into_owned();
        assert_eq!(owned, c);
        assert_eq!(
            Command::Bdat {
                size: 3,
                last: true
            }
            .to_line(),
            b"BDAT 3 LAST\r\n"
        );
        assert_eq!(owned.verb(), Verb::Mail);
    }
}
