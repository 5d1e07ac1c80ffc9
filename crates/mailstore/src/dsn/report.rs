//! RFC 3464 delivery status notifications, worded as Postfix's bounce(8).
//!
//! The message is `multipart/report; report-type=delivery-status` (RFC
//! 6522) with three parts: a text/plain explanation from Postfix's built-in
//! templates (bounce.cf.default), the `message/delivery-status` report, and
//! the original as `message/rfc822` or its header as `text/rfc822-headers`.
//!
//! # 8-bit content
//!
//! `message/rfc822` may only carry 7bit, 8bit or binary content (RFC 2046
//! section 5.2.1), so an original with 8-bit octets is attached unchanged
//! with `Content-Transfer-Encoding: 8bit`, and the enclosing multipart is
//! labelled 8bit too (a multipart cannot be narrower than its parts, RFC
//! 2045 section 6.4). Re-encoding the original would alter the message the
//! sender gets back and break its signatures. [`Dsn::eight_bit`] then tells
//! the queue to send with `BODY=8BITMIME`; the report part itself stays
//! US-ASCII (remote replies are made printable, non-ASCII addresses use
//! RFC 6533's utf-8-addr-xtext). An original that is not valid 8bit (a
//! line over 998 octets, a NUL) is returned as headers only.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use super::params::{utf8_addr_encode, Envid, Orcpt, Ret};
use super::{Action, DsnEvent, Notice, Status};
use crate::rfc5322_date;

/// Postfix's `bounce_size_limit` default: the largest original returned
/// whole; a larger one is returned as headers only.
pub const BOUNCE_SIZE_LIMIT: usize = 50_000;

/// Longest line of a message without its CRLF (RFC 5322 section 2.1.1).
const MAX_LINE: usize = 998;
/// Where header fields and text are wrapped (RFC 5322 section 2.1.1's
/// "SHOULD be no more than 78").
const WRAP: usize = 78;
/// The longest run without whitespace kept on one line; a longer one is
/// cut, which is the only way to stay under [`MAX_LINE`].
const HARD_CHUNK: usize = 900;
/// Continuation indent, as Postfix writes it.
const INDENT: &str = "    ";
const CRLF: &str = "\r\n";

/// Errors of [`DsnBuilder::build`]: inputs that would make a malformed
/// message. Queue bugs, not remote input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A report without any recipient.
    #[error("a delivery status notification needs at least one recipient")]
    NoRecipients,
    /// A host name, queue id or unique token with characters that do not
    /// belong there.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A status whose class does not match the action (RFC 3464 section
    /// 2.3.4: failed is 5.x.x, delayed 4.x.x, the others 2.x.x).
    #[error("status {status} does not go with action {action} for {recipient}")]
    StatusMismatch {
        /// The recipient.
        recipient: String,
        /// Its action.
        action: Action,
        /// Its status.
        status: Status,
    },
}

/// What the report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The address delivery was attempted to (`Final-Recipient:`).
    pub final_recipient: String,
    /// `ORCPT=` as given at `RCPT` (`Original-Recipient:`).
    pub original: Option<Orcpt>,
    /// `Action:`.
    pub action: Action,
    /// `Status:`.
    pub status: Status,
    /// The remote host that answered (`Remote-MTA: dns; host`).
    pub remote_mta: Option<String>,
    /// The remote reply, lines joined with spaces (`Diagnostic-Code:
    /// smtp; ...`), or our own reason (see `diagnostic_type`).
    pub diagnostic: Option<String>,
    /// The diagnostic's type (RFC 3464 section 2.3.6): `smtp` for a remote
    /// reply (the default); Postfix writes its own reasons as `X-Postfix`,
    /// which bounce processors know, and so do we.
    pub diagnostic_type: &'static str,
    /// The sentence for the text part after `<address>: `, as Postfix
    /// writes it: `host mx.example[192.0.2.1] said: 550 ... (in reply to
    /// RCPT TO command)`. Empty: built from `remote_mta` and `diagnostic`.
    pub reason: String,
    /// When delivery was last tried (`Last-Attempt-Date:`).
    pub last_attempt: Option<SystemTime>,
    /// For delays: when the queue gives up (`Will-Retry-Until:`).
    pub will_retry_until: Option<SystemTime>,
}

impl RecipientStatus {
    /// A recipient with only the required fields.
    pub fn new(final_recipient: impl Into<String>, action: Action, status: Status) -> Self {
        RecipientStatus {
            final_recipient: final_recipient.into(),
            original: None,
            action,
            status,
            remote_mta: None,
            diagnostic: None,
            diagnostic_type: "smtp",
            reason: String::new(),
            last_attempt: None,
            will_retry_until: None,
        }
    }
}

/// How much of the original a notification carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Returned {
    /// The whole message, as `message/rfc822`.
    Full,
    /// Its header only, as `text/rfc822-headers`.
    Headers,
}

/// A built notification and the envelope to send it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The message, CRLF line ends, no line over 998 octets.
    pub message: Vec<u8>,
    /// Envelope sender: empty (`MAIL FROM:<>`) for a notification to the
    /// sender, the double-bounce address for a postmaster notice.
    pub mail_from: String,
    /// Envelope recipient.
    pub rcpt_to: String,
    /// The body has 8-bit octets: send with `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The header has UTF-8 (a non-ASCII sender address): send with
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// What was attached of the original.
    pub returned: Returned,
}

/// Builds a delivery status notification. Deterministic: every time and
/// the unique token come from the caller.
#[derive(Debug, Clone)]
pub struct DsnBuilder<'a> {
    kind: DsnEvent,
    reporting_mta: &'a str,
    queue_id: &'a str,
    notice: &'a Notice,
    unique: &'a str,
    arrival: SystemTime,
    date: SystemTime,
    envid: Option<&'a Envid>,
    ret: Option<Ret>,
    size_limit: usize,
    delay_times: Option<(Duration, Duration)>,
    recipients: Vec<RecipientStatus>,
}

impl<'a> DsnBuilder<'a> {
    /// A notification of `kind` about message `queue_id`, from host
    /// `reporting_mta` (our `myhostname`), to `notice`.
    ///
    /// `unique` makes `Message-Id: <unique@reporting_mta>` and the MIME
    /// boundary; it must be unique per notification (Postfix uses queue id
    /// and time). `arrival` is when the original was queued (`Arrival-Date:`),
    /// `date` is now (`Date:`).
    pub fn new(
        kind: DsnEvent,
        reporting_mta: &'a str,
        queue_id: &'a str,
        notice: &'a Notice,
        unique: &'a str,
        arrival: SystemTime,
        date: SystemTime,
    ) -> Self {
        DsnBuilder {
            kind,
            reporting_mta,
            queue_id,
            notice,
            unique,
            arrival,
            date,
            envid: None,
            ret: None,
            size_limit: BOUNCE_SIZE_LIMIT,
            delay_times: None,
            recipients: Vec::new(),
        }
    }

    /// `ENVID=` of the original (`Original-Envelope-Id:`).
    pub fn envid(mut self, envid: Option<&'a Envid>) -> Self {
        self.envid = envid;
        self
    }

    /// `RET=` of the original. Absent, failures return the whole message
    /// and delay and success notices the header, as Postfix does (RFC 3461
    /// section 4.3 leaves it to the MTA).
    pub fn ret(mut self, ret: Option<Ret>) -> Self {
        self.ret = ret;
        self
    }

    /// Largest original returned whole (Postfix `bounce_size_limit`,
    /// default [`BOUNCE_SIZE_LIMIT`]).
    pub fn size_limit(mut self, limit: usize) -> Self {
        self.size_limit = limit;
        self
    }

    /// For delay notices: Postfix `delay_warning_time` and
    /// `maximal_queue_lifetime`, quoted in the text.
    pub fn delay_times(mut self, warning_after: Duration, lifetime: Duration) -> Self {
        self.delay_times = Some((warning_after, lifetime));
        self
    }

    /// Adds a recipient to the report.
    pub fn recipient(mut self, r: RecipientStatus) -> Self {
        self.recipients.push(r);
        self
    }

    /// Builds the message for `original` (the message as queued; bare LF
    /// or CR line ends are made CRLF).
    pub fn build(&self, original: &[u8]) -> Result<Dsn, BuildError> {
        let host = self.reporting_mta;
        check("host name", host, |b| {
            b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
        })?;
        check("unique token", self.unique, |b| {
            b.is_ascii_alphanumeric() || b"._-".contains(&b)
        })?;
        check("queue id", self.queue_id, |b| b.is_ascii_graphic())?;
        check_address("notice recipient", self.notice.rcpt_to())?;
        // Never a notification to the null sender (RFC 5321 section 4.5.5).
        if super::dsn_recipient(self.notice.rcpt_to()).is_none() {
            return Err(BuildError::Invalid {
                what: "notice recipient",
                value: self.notice.rcpt_to().to_owned(),
            });
        }
        if self.recipients.is_empty() {
            return Err(BuildError::NoRecipients);
        }
        for r in &self.recipients {
            check_address("recipient", &r.final_recipient)?;
            if let Some(mta) = &r.remote_mta {
                check("remote MTA", mta, |b| b.is_ascii_graphic())?;
            }
            if r.status.class != r.action.status_class() {
                return Err(BuildError::StatusMismatch {
                    recipient: r.final_recipient.clone(),
                    action: r.action,
                    status: r.status,
                });
            }
        }

        let original = to_crlf(original);
        let (attachment, returned) = self.attachment(&original);
        let attach_8bit = !attachment.is_ascii();
        let text = self.human_text();
        let text_8bit = !text.is_ascii();
        let report = self.delivery_status();
        let boundary = unique_boundary(self.unique, host, &[&attachment, text.as_bytes()]);
        let to = self.notice.rcpt_to();
        let eight_bit = attach_8bit || text_8bit;

        let mut m = String::new();
        m.push_str(&format!("Date: {}{CRLF}", rfc5322_date(self.date)));
        m.push_str(&format!(
            "From: MAILER-DAEMON@{host} (Mail Delivery System){CRLF}"
        ));
        m.push_str(&field("To:", to));
        m.push_str(&format!("Subject: {}{CRLF}", self.subject()));
        m.push_str(&format!("Message-Id: <{}@{host}>{CRLF}", self.unique));
        // RFC 3834 section 5: tells auto-responders not to answer.
        m.push_str(&format!("Auto-Submitted: auto-replied{CRLF}"));
        m.push_str(&format!("MIME-Version: 1.0{CRLF}"));
        m.push_str(&format!(
            "Content-Type: multipart/report; report-type=delivery-status;{CRLF}\tboundary=\"{boundary}\"{CRLF}"
        ));
        if eight_bit {
            m.push_str(&format!("Content-Transfer-Encoding: 8bit{CRLF}"));
        }
        m.push_str(&format!(
            "{CRLF}This is a MIME-encapsulated message.{CRLF}{CRLF}"
        ));

        m.push_str(&format!("--{boundary}{CRLF}"));
        m.push_str(&format!("Content-Description: Notification{CRLF}"));
        if text_8bit {
            m.push_str(&format!(
                "Content-Type: text/plain; charset=utf-8{CRLF}Content-Transfer-Encoding: 8bit{CRLF}"
            ));
        } else {
            m.push_str(&format!("Content-Type: text/plain; charset=us-ascii{CRLF}"));
        }
        m.push_str(CRLF);
        m.push_str(&text);
        m.push_str(CRLF);

        m.push_str(&format!("--{boundary}{CRLF}"));
        m.push_str(&format!(
            "Content-Description: Delivery report{CRLF}Content-Type: message/delivery-status{CRLF}{CRLF}"
        ));
        m.push_str(&report);
        m.push_str(CRLF);

        m.push_str(&format!("--{boundary}{CRLF}"));
        let what = match self.kind {
            DsnEvent::Failure => "Undelivered Message",
            DsnEvent::Delay => "Delayed Message",
            DsnEvent::Success => "Delivered Message",
        };
        match returned {
            Returned::Full => m.push_str(&format!(
                "Content-Description: {what}{CRLF}Content-Type: message/rfc822{CRLF}"
            )),
            Returned::Headers => m.push_str(&format!(
                "Content-Description: {what} Headers{CRLF}Content-Type: text/rfc822-headers{CRLF}"
            )),
        }
        if attach_8bit {
            m.push_str(&format!("Content-Transfer-Encoding: 8bit{CRLF}"));
        }
        m.push_str(CRLF);
        let mut message = m.into_bytes();
        message.extend_from_slice(&attachment);
        message.extend_from_slice(format!("{CRLF}--{boundary}--{CRLF}").as_bytes());

        Ok(Dsn {
            message,
            mail_from: self.notice.mail_from().to_owned(),
            rcpt_to: to.to_owned(),
            eight_bit,
            smtputf8: !to.is_ascii(),
            returned,
        })
    }

    fn subject(&self) -> &'static str {
        match (self.notice, self.kind) {
            (Notice::Sender(_), DsnEvent::Failure) => "Undelivered Mail Returned to Sender",
            (Notice::Sender(_), DsnEvent::Delay) => "Delayed Mail (still being retried)",
            (Notice::Postmaster { .. }, DsnEvent::Failure) => "Postmaster Copy: Undelivered Mail",
            (Notice::Postmaster { .. }, DsnEvent::Delay) => "Postmaster Warning: Delayed Mail",
            (_, DsnEvent::Success) => "Successful Mail Delivery Report",
        }
    }

    /// The text/plain part: Postfix's template, then one paragraph per
    /// recipient.
    fn human_text(&self) -> String {
        let mut t = format!(
            "This is the mail system at host {}.{CRLF}{CRLF}",
            self.reporting_mta
        );
        let lines: Vec<Cow<'_, str>> = match (self.notice, self.kind) {
            (Notice::Postmaster { .. }, _) => vec![
                "A message with the null sender (usually a delivery status".into(),
                "notification) could not be delivered. This copy is for the".into(),
                "postmaster; the report and the message are attached below.".into(),
            ],
            (_, DsnEvent::Failure) => vec![
                "I'm sorry to have to inform you that your message could not".into(),
                "be delivered to one or more recipients. It's attached below.".into(),
                "".into(),
                "For further assistance, please send mail to postmaster.".into(),
                "".into(),
                "If you do so, please include this problem report. You can".into(),
                "delete your own text from the attached returned message.".into(),
            ],
            (_, DsnEvent::Delay) => {
                let mut v: Vec<Cow<'_, str>> = vec![
                    "####################################################################".into(),
                    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #".into(),
                    "####################################################################".into(),
                    "".into(),
                ];
                match self.delay_times {
                    Some((warn, life)) => {
                        v.push(
                            format!(
                                "Your message could not be delivered for more than {} hour(s).",
                                in_units(warn, 3600)
                            )
                            .into(),
                        );
                        v.push(
                            format!(
                                "It will be retried until it is {} day(s) old.",
                                in_units(life, 86_400)
                            )
                            .into(),
                        );
                    }
                    None => {
                        v.push("Your message could not be delivered yet.".into());
                        v.push("It will be retried until it expires in the queue.".into());
                    }
                }
                v.extend([
                    "".into(),
                    "For further assistance, please send mail to postmaster.".into(),
                    "".into(),
                    "If you do so, please include this problem report. You can".into(),
                    "delete your own text from the attached returned message.".into(),
                ]);
                v
            }
            (_, DsnEvent::Success) => vec![
                "Your message was successfully delivered to the destination(s)".into(),
                "listed below. If the message was delivered to mailbox you will".into(),
                "receive no further notifications. Otherwise you may still receive".into(),
                "notifications of mail delivery errors from other systems.".into(),
            ],
        };
        for l in lines {
            t.push_str(&l);
            t.push_str(CRLF);
        }
        t.push_str(&format!("{CRLF}                   The mail system{CRLF}"));
        for r in &self.recipients {
            t.push_str(CRLF);
            let reason = if !r.reason.is_empty() {
                text_value(&r.reason, true)
            } else {
                match (&r.remote_mta, &r.diagnostic) {
                    (Some(mta), Some(d)) => format!("host {mta} said: {}", text_value(d, true)),
                    (None, Some(d)) => text_value(d, true),
                    (_, None) => r.action.as_str().to_owned(),
                }
            };
            t.push_str(&wrap(
                "",
                &format!("<{}>: {reason}", r.final_recipient),
                INDENT,
            ));
        }
        t
    }

    /// The `message/delivery-status` body (RFC 3464 section 2), fields in
    /// the grammar's order, extension fields last.
    fn delivery_status(&self) -> String {
        let mut s = String::new();
        if let Some(e) = self.envid {
            s.push_str(&field("Original-Envelope-Id:", e.as_str()));
        }
        s.push_str(&format!("Reporting-MTA: dns; {}{CRLF}", self.reporting_mta));
        s.push_str(&format!(
            "Arrival-Date: {}{CRLF}",
            rfc5322_date(self.arrival)
        ));
        s.push_str(&format!("X-Queue-ID: {}{CRLF}", self.queue_id));
        for r in &self.recipients {
            s.push_str(CRLF);
            if let Some(o) = &r.original {
                s.push_str(&field(
                    "Original-Recipient:",
                    &format!("{}; {}", o.addr_type(), o.field_address()),
                ));
            }
            s.push_str(&field(
                "Final-Recipient:",
                &final_recipient_value(&r.final_recipient),
            ));
            s.push_str(&format!("Action: {}{CRLF}", r.action));
            s.push_str(&format!("Status: {}{CRLF}", r.status));
            if let Some(mta) = &r.remote_mta {
                s.push_str(&format!("Remote-MTA: dns; {mta}{CRLF}"));
            }
            if let Some(d) = &r.diagnostic {
                // RFC 3464 section 2.3.6: the reply as received, folded
                // as a header field may be.
                s.push_str(&wrap(
                    &format!("Diagnostic-Code: {};", r.diagnostic_type),
                    &text_value(d, false),
                    INDENT,
                ));
            }
            if let Some(t) = r.last_attempt {
                s.push_str(&format!("Last-Attempt-Date: {}{CRLF}", rfc5322_date(t)));
            }
            if let (Action::Delayed, Some(t)) = (r.action, r.will_retry_until) {
                s.push_str(&format!("Will-Retry-Until: {}{CRLF}", rfc5322_date(t)));
            }
        }
        s
    }

    /// The third part: the whole original when asked for (or by default
    /// for failures), small enough and valid 8bit; else its header.
    fn attachment(&self, original: &[u8]) -> (Vec<u8>, Returned) {
        let ret = self.ret.unwrap_or(match self.kind {
            DsnEvent::Failure => Ret::Full,
            DsnEvent::Delay | DsnEvent::Success => Ret::Hdrs,
        });
        if ret == Ret::Full && original.len() <= self.size_limit && is_8bit_clean(original) {
            return (original.to_vec(), Returned::Full);
        }
        (header_block(original, self.size_limit), Returned::Headers)
    }
}

fn check(what: &'static str, value: &str, ok: impl Fn(u8) -> bool) -> Result<(), BuildError> {
    if value.is_empty() || value.len() > 255 || !value.bytes().all(ok) {
        return Err(BuildError::Invalid {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// An address that goes in a header field: non-empty, no control
/// characters (CR or LF would inject fields). Non-ASCII is allowed.
fn check_address(what: &'static str, a: &str) -> Result<(), BuildError> {
    if a.is_empty() || a.chars().any(char::is_control) {
        return Err(BuildError::Invalid {
            what,
            value: a.to_owned(),
        });
    }
    Ok(())
}

/// `rfc822; addr`, or `utf-8; utf-8-addr-xtext` for an internationalised
/// address so the report stays US-ASCII (RFC 6533 section 3).
fn final_recipient_value(addr: &str) -> String {
    if addr.is_ascii() {
        format!("rfc822; {addr}")
    } else {
        format!("utf-8; {}", utf8_addr_encode(addr))
    }
}

/// Remote text made safe for a field or the text part: control characters
/// (CR and LF of multi-line replies included) become spaces, runs of
/// whitespace one space; non-ASCII becomes `?` unless `keep_utf8` (Postfix's
/// `printable()` does the same for the report).
fn text_value(s: &str, keep_utf8: bool) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                ' '
            } else if !c.is_ascii() && !keep_utf8 {
                '?'
            } else {
                c
            }
        })
        .collect();
    cleaned
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `name value` on one line when it fits in 998 octets, so that an
/// address keeps its spaces exactly; [`wrap`]ped otherwise.
fn field(name: &str, value: &str) -> String {
    if name.len() + 1 + value.len() <= MAX_LINE {
        format!("{name} {value}{CRLF}")
    } else {
        wrap(name, value, INDENT)
    }
}

/// The [`RecipientStatus::reason`] Postfix writes for a remote reply:
/// `host mx.example.org[192.0.2.25] said: 550 ... (in reply to RCPT TO
/// command)`. `reply` is the reply with its lines joined by spaces;
/// `command` the command it answered (`MAIL FROM`, `RCPT TO`, `end of
/// DATA`...).
pub fn host_said(host: &str, ip: Option<std::net::IpAddr>, reply: &str, command: &str) -> String {
    let ip = ip.map(|a| format!("[{a}]")).unwrap_or_default();
    format!("host {host}{ip} said: {reply} (in reply to {command} command)")
}

/// `prefix value`, folded at spaces to [`WRAP`] columns with `indent`
/// (RFC 5322 section 2.2.3: CRLF before whitespace), ending with CRLF.
/// A run without spaces longer than [`HARD_CHUNK`] is cut, so no line
/// exceeds 998 octets whatever the input. An empty `indent` puts a single
/// space before continuation chunks (header fields need whitespace).
fn wrap(prefix: &str, value: &str, indent: &str) -> String {
    let indent = if indent.is_empty() { " " } else { indent };
    let mut out = String::new();
    let mut line = prefix.to_owned();
    let mut has_content = !prefix.is_empty();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for chunk in chunks(word, HARD_CHUNK) {
            if has_content && line.len() + 1 + chunk.len() > WRAP {
                out.push_str(&line);
                out.push_str(CRLF);
                line = indent.to_owned();
            } else if has_content {
                line.push(' ');
            }
            line.push_str(chunk);
            has_content = true;
        }
    }
    out.push_str(&line);
    out.push_str(CRLF);
    out
}

/// `s` cut into pieces of at most `max` bytes, on character boundaries.
fn chunks(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

/// 4 for 14400 s in hours; 1.5 for 5400 s.
fn in_units(d: Duration, unit: u64) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(unit) {
        (s / unit).to_string()
    } else {
        format!("{:.1}", s as f64 / unit as f64)
    }
}

/// `msg` with every line ending CRLF (bare LF and bare CR become CRLF),
/// the last line included.
fn to_crlf(msg: &[u8]) -> Cow<'_, [u8]> {
    let mut prev = 0u8;
    let clean = msg.iter().enumerate().all(|(i, &b)| {
        let ok = match b {
            b'\n' => prev == b'\r',
            b'\r' => msg.get(i + 1) == Some(&b'\n'),
            _ => true,
        };
        prev = b;
        ok
    });
    if clean && (msg.is_empty() || msg.ends_with(b"\r\n")) {
        return Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut it = msg.iter().peekable();
    while let Some(&b) = it.next() {
        match b {
            b'\r' => {
                if it.peek() == Some(&&b'\n') {
                    it.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

/// Whether CRLF text may travel as 8bit (RFC 2045 section 2.8): no NUL,
/// no line over 998 octets.
fn is_8bit_clean(msg: &[u8]) -> bool {
    !msg.contains(&0) && msg.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1)
}

/// The header of `msg` (up to the empty line, which is left out), with NUL
/// dropped and long lines folded, cut at a line end to at most `limit`
/// octets.
fn header_block(msg: &[u8], limit: usize) -> Vec<u8> {
    let end = if msg.starts_with(b"\r\n") {
        0
    } else {
        msg.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(msg.len(), |p| p + 2)
    };
    let head = msg.get(..end).unwrap_or(msg);
    let mut out = Vec::with_capacity(head.len());
    for line in head.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        let mut folded = Vec::with_capacity(body.len() + 2);
        let mut rest: Vec<u8> = body.iter().copied().filter(|&b| b != 0).collect();
        // Cut an over-long line into continuation lines (a leading space
        // makes each one part of the same field).
        while rest.len() > MAX_LINE {
            let mut cut = HARD_CHUNK;
            while cut > 1 && rest.get(cut).is_some_and(|b| (0x80..0xc0).contains(b)) {
                cut -= 1;
            }
            let tail = rest.split_off(cut);
            folded.extend_from_slice(&rest);
            folded.extend_from_slice(b"\r\n ");
            rest = tail;
        }
        folded.extend_from_slice(&rest);
        folded.extend_from_slice(b"\r\n");
        if out.len() + folded.len() > limit {
            break;
        }
        out.extend_from_slice(&folded);
    }
    out
}

/// `unique/host`, at most 70 characters (RFC 2046 section 5.1.1), with a
/// `.N` suffix if it happens to occur in a part.
fn unique_boundary(unique: &str, host: &str, parts: &[&[u8]]) -> String {
    let mut base = format!("{unique}/{host}");
    base.truncate(66);
    let found = |b: &str| {
        let needle = format!("--{b}");
        parts
            .iter()
            .any(|p| p.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    if !found(&base) {
        return base;
    }
    (1..1000)
        .map(|n| format!("{base}.{n}"))
        .find(|b| !found(b))
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_reason_is_an_x_postfix_diagnostic() {
        let mut r = RecipientStatus::new("a@example.org", Action::Failed, Status::new(5, 3, 4));
        r.diagnostic = Some("message size 2000 exceeds size limit 1000".into());
        r.diagnostic_type = "X-Postfix";
        let b = DsnBuilder::new(
            DsnEvent::Failure,
            "mail.example.com",
            "Q1",
            &Notice::Sender("s@example.com".into()),
            "Q1.1",
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
        )
        .recipient(r)
        .build(b"Subject: x\r\n\r\nbody\r\n")
        .unwrap();
        let text = String::from_utf8_lossy(&b.message);
        assert!(
            text.contains("Diagnostic-Code: X-Postfix; message size 2000 exceeds size limit 1000"),
            "{text}"
        );
    }

    #[test]
    fn wrap_folds_and_cuts() {
        assert_eq!(wrap("A:", "b c", INDENT), "A: b c\r\n");
        let long = "word ".repeat(40);
        let w = wrap("Diagnostic-Code: smtp;", &long, INDENT);
        for l in w.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= WRAP, "{l:?}");
        }
        assert!(w.contains("\r\n    word"));
        let huge = "x".repeat(3000);
        let w = wrap("Diagnostic-Code: smtp;", &huge, INDENT);
        assert!(w.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(w.replace("\r\n    ", "").matches('x').count(), 3000);
    }

    #[test]
    fn postfix_reason() {
        assert_eq!(
            host_said(
                "mx.example.org",
                "192.0.2.25".parse().ok(),
                "550 5.1.1 no",
                "RCPT TO"
            ),
            "host mx.example.org[192.0.2.25] said: 550 5.1.1 no (in reply to RCPT TO command)"
        );
        assert_eq!(
            host_said("mx", None, "452 full", "end of DATA"),
            "host mx said: 452 full (in reply to end of DATA command)"
        );
    }

    #[test]
    fn long_fields_stay_under_998() {
        let a = format!("{}@example.org", "l".repeat(2000));
        let f = field("Final-Recipient:", &format!("rfc822; {a}"));
        assert!(f.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(field("To:", "\"a  b\"@c"), "To: \"a  b\"@c\r\n");
    }

    #[test]
    fn text_values_are_clean() {
        assert_eq!(
            text_value("550-5.1.1 a\r\n550 5.1.1  b\tc", false),
            "550-5.1.1 a 550 5.1.1 b c"
        );
        assert_eq!(text_value("naïve\u{7}", false), "na?ve");
        assert_eq!(text_value("naïve", true), "naïve");
    }

    #[test]
    fn crlf_normalised() {
        assert_eq!(&*to_crlf(b"a\r\nb\r\n"), b"a\r\nb\r\n");
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"a\nb\rc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(&*to_crlf(b""), b"");
    }

    #[test]
    fn header_blocks() {
        let m = b"A: 1\r\nB: 2\r\n\r\nbody\r\n";
        assert_eq!(header_block(m, 1000), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(m, 8), b"A: 1\r\n");
        assert_eq!(header_block(b"\r\nbody\r\n", 1000), b"");
        assert_eq!(header_block(b"A: 1\r\n", 1000), b"A: 1\r\n");
        let long = format!("X: {}\r\n\r\n", "y".repeat(2000));
        let h = header_block(long.as_bytes(), 100_000);
        assert!(h.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1));
        assert_eq!(h.iter().filter(|&&b| b == b'y').count(), 2000);
    }

    #[test]
    fn boundaries_avoid_content() {
        assert_eq!(unique_boundary("T1", "h", &[b"x"]), "T1/h");
        assert_eq!(unique_boundary("T1", "h", &[b"--T1/h\r\n"]), "T1/h.1");
        let long = unique_boundary(&"u".repeat(80), "host", &[]);
        assert_eq!(long.len(), 66);
    }

    #[test]
    fn units() {
        assert_eq!(in_units(Duration::from_secs(4 * 3600), 3600), "4");
        assert_eq!(in_units(Duration::from_secs(5400), 3600), "1.5");
        assert_eq!(in_units(Duration::from_secs(5 * 86_400), 86_400), "5");
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    pub(crate) const ORIGINAL: &[u8] = b"From: user2@csuvnetwork.com\r\nTo: bob@example.org, carol@example.org\r\nSubject: lab\r\nMessage-Id: <lab.1@csuvnetwork.com>\r\n\r\nHello Bob\r\n";

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    pub(crate) fn failed() -> Dsn {
        let notice = Notice::Sender("user2@csuvnetwork.com".into());
        let mut bob = RecipientStatus::new("bob@example.org", Action::Failed, Status::new(5, 1, 1));
        bob.original = Some(Orcpt::Rfc822("Bob@example.org".into()));
        bob.remote_mta = Some("mx.example.org".into());
        bob.diagnostic = Some(
            "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
                .into(),
        );
        bob.reason = "host mx.example.org[192.0.2.25] said: 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)".into();
        bob.last_attempt = Some(t(1_796_000_100));
        let envid = Envid::parse("QQ314159").unwrap();
        DsnBuilder::new(
            DsnEvent::Failure,
            "mail.csuvnetwork.com",
            "4XyZ12",
            &notice,
            "4XyZ12.1796000100",
            t(1_796_000_000),
            t(1_796_000_100),
        )
        .envid(Some(&envid))
        .recipient(bob)
        .build(ORIGINAL)
        .unwrap()
    }

    pub(crate) fn delayed() -> Dsn {
        let notice = Notice::Sender("user2@csuvnetwork.com".into());
        let mut carol =
            RecipientStatus::new("carol@example.org", Action::Delayed, Status::new(4, 4, 1));
        carol.diagnostic = None;
        carol.reason = "connect to mx.example.org[192.0.2.25]:25: Connection refused".into();
        carol.last_attempt = Some(t(1_796_014_400));
        carol.will_retry_until = Some(t(1_796_432_000));
        DsnBuilder::new(
            DsnEvent::Delay,
            "mail.csuvnetwork.com",
            "4XyZ12",
            &notice,
            "4XyZ12.1796014400",
            t(1_796_000_000),
            t(1_796_014_400),
        )
        .delay_times(
            Duration::from_secs(4 * 3600),
            Duration::from_secs(5 * 86_400),
        )
        .recipient(carol)
        .build(ORIGINAL)
        .unwrap()
    }

    /// `expected` written with LF; the message must be it with CRLF and
    /// nothing else.
    fn assert_golden(dsn: &Dsn, expected: &str) {
        let got = String::from_utf8(dsn.message.clone()).unwrap();
        assert!(!got.replace("\r\n", "").contains('\n'), "bare LF");
        assert!(!got.replace("\r\n", "").contains('\r'), "bare CR");
        assert_eq!(got, expected.replace('\n', "\r\n"));
    }

    #[test]
    fn golden_failed() {
        let d = failed();
        assert_eq!(
            (d.mail_from.as_str(), d.rcpt_to.as_str()),
            ("", "user2@csuvnetwork.com")
        );
        assert!(!d.eight_bit && !d.smtputf8);
        assert_eq!(d.returned, Returned::Full);
        assert_golden(&d, FAILED);
    }

    #[test]
    fn golden_delayed() {
        let d = delayed();
        assert_eq!(d.returned, Returned::Headers);
        assert_golden(&d, DELAYED);
    }

    const FAILED: &str = r#"Date: Mon, 30 Nov 2026 00:55:00 +0000
From: MAILER-DAEMON@mail.csuvnetwork.com (Mail Delivery System)
To: user2@csuvnetwork.com
Subject: Undelivered Mail Returned to Sender
Message-Id: <4XyZ12.1796000100@mail.csuvnetwork.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4XyZ12.1796000100/mail.csuvnetwork.com"

This is a MIME-encapsulated message.

--4XyZ12.1796000100/mail.csuvnetwork.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.csuvnetwork.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<bob@example.org>: host mx.example.org[192.0.2.25] said: 550 5.1.1
    <bob@example.org>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4XyZ12.1796000100/mail.csuvnetwork.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Original-Envelope-Id: QQ314159
Reporting-MTA: dns; mail.csuvnetwork.com
Arrival-Date: Mon, 30 Nov 2026 00:53:20 +0000
X-Queue-ID: 4XyZ12

Original-Recipient: rfc822; Bob@example.org
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address
    rejected: User unknown in virtual mailbox table
Last-Attempt-Date: Mon, 30 Nov 2026 00:55:00 +0000

--4XyZ12.1796000100/mail.csuvnetwork.com
Content-Description: Undelivered Message
Content-Type: message/rfc822

From: user2@csuvnetwork.com
To: bob@example.org, carol@example.org
Subject: lab
Message-Id: <lab.1@csuvnetwork.com>

Hello Bob

--4XyZ12.1796000100/mail.csuvnetwork.com--
"#;

    const DELAYED: &str = r#"Date: Mon, 30 Nov 2026 04:53:20 +0000
From: MAILER-DAEMON@mail.csuvnetwork.com (Mail Delivery System)
To: user2@csuvnetwork.com
Subject: Delayed Mail (still being retried)
Message-Id: <4XyZ12.1796014400@mail.csuvnetwork.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4XyZ12.1796014400/mail.csuvnetwork.com"

This is a MIME-encapsulated message.

--4XyZ12.1796014400/mail.csuvnetwork.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.csuvnetwork.com.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<carol@example.org>: connect to mx.example.org[192.0.2.25]:25: Connection
    refused

--4XyZ12.1796014400/mail.csuvnetwork.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.csuvnetwork.com
Arrival-Date: Mon, 30 Nov 2026 00:53:20 +0000
X-Queue-ID: 4XyZ12

Final-Recipient: rfc822; carol@example.org
Action: delayed
Status: 4.4.1
Last-Attempt-Date: Mon, 30 Nov 2026 04:53:20 +0000
Will-Retry-Until: Sat, 5 Dec 2026 00:53:20 +0000

--4XyZ12.1796014400/mail.csuvnetwork.com
Content-Description: Delayed Message Headers
Content-Type: text/rfc822-headers

From: user2@csuvnetwork.com
To: bob@example.org, carol@example.org
Subject: lab
Message-Id: <lab.1@csuvnetwork.com>

--4XyZ12.1796014400/mail.csuvnetwork.com--
"#;
}

#[cfg(test)]
mod behaviour {
    use super::golden::ORIGINAL;
    use super::*;
    use proptest::prelude::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000)
    }

    fn build(
        kind: DsnEvent,
        notice: &Notice,
        ret: Option<Ret>,
        limit: usize,
        rcpt: RecipientStatus,
        original: &[u8],
    ) -> Result<Dsn, BuildError> {
        DsnBuilder::new(kind, "mail.example", "Q1", notice, "Q1.1", t0(), t0())
            .ret(ret)
            .size_limit(limit)
            .recipient(rcpt)
            .build(original)
    }

    fn failed(addr: &str) -> RecipientStatus {
        RecipientStatus::new(addr, Action::Failed, Status::new(5, 0, 0))
    }

    /// CRLF everywhere, no bare CR or LF, no line over 998 octets.
    fn lines_ok(m: &[u8]) -> bool {
        let crlf_only = m.iter().enumerate().all(|(i, &b)| match b {
            b'\n' => i > 0 && m.get(i - 1) == Some(&b'\r'),
            b'\r' => m.get(i + 1) == Some(&b'\n'),
            _ => true,
        });
        crlf_only
            && m.ends_with(b"\r\n")
            && m.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1)
    }

    fn text(d: &Dsn) -> String {
        String::from_utf8_lossy(&d.message).into_owned()
    }

    #[test]
    fn eight_bit_original_is_attached_as_8bit() {
        let n = Notice::Sender("a@b".into());
        let orig = "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes();
        let d = build(
            DsnEvent::Failure,
            &n,
            None,
            BOUNCE_SIZE_LIMIT,
            failed("x@y"),
            orig,
        )
        .unwrap();
        assert!(d.eight_bit);
        assert!(!d.smtputf8);
        assert_eq!(d.returned, Returned::Full);
        let s = text(&d);
        // The top level and the message/rfc822 part say 8bit; the report
        // part stays 7bit.
        assert_eq!(s.matches("Content-Transfer-Encoding: 8bit").count(), 2);
        assert!(s.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: caf\u{e9}"));
        assert!(s.contains("Content-Type: text/plain; charset=us-ascii\r\n\r\n"));
    }

    #[test]
    fn what_is_returned() {
        let n = Notice::Sender("a@b".into());
        let r = |ret, limit, orig: &[u8]| {
            build(DsnEvent::Failure, &n, ret, limit, failed("x@y"), orig)
                .unwrap()
                .returned
        };
        assert_eq!(r(Some(Ret::Full), 50_000, ORIGINAL), Returned::Full);
        assert_eq!(r(Some(Ret::Hdrs), 50_000, ORIGINAL), Returned::Headers);
        // Postfix bounce_size_limit: over it, headers only.
        assert_eq!(r(None, ORIGINAL.len(), ORIGINAL), Returned::Full);
        assert_eq!(r(None, ORIGINAL.len() - 1, ORIGINAL), Returned::Headers);
        // Not valid 8bit: headers only.
        let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(999));
        assert_eq!(r(None, 50_000, long.as_bytes()), Returned::Headers);
        assert_eq!(
            r(None, 50_000, b"Subject: x\r\n\r\na\0b\r\n"),
            Returned::Headers
        );
        let h = build(
            DsnEvent::Failure,
            &n,
            Some(Ret::Hdrs),
            50_000,
            failed("x@y"),
            ORIGINAL,
        )
        .unwrap();
        let s = text(&h);
        assert!(s.contains("Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: user2@csuvnetwork.com\r\n"));
        assert!(!s.contains("Hello Bob"));
        // Success notices return the header unless RET=FULL.
        let ok = RecipientStatus::new("x@y", Action::Delivered, Status::new(2, 0, 0));
        let d = build(DsnEvent::Success, &n, None, 50_000, ok.clone(), ORIGINAL).unwrap();
        assert_eq!(d.returned, Returned::Headers);
        assert!(text(&d).contains("Subject: Successful Mail Delivery Report\r\n"));
        assert!(text(&d).contains("Your message was successfully delivered"));
        let d = build(DsnEvent::Success, &n, Some(Ret::Full), 50_000, ok, ORIGINAL).unwrap();
        assert_eq!(d.returned, Returned::Full);
    }

    #[test]
    fn double_bounce_goes_to_postmaster() {
        let n = crate::dsn::notice_for("", "postmaster@mail.example", "double-bounce@mail.example")
            .unwrap();
        let d = build(DsnEvent::Failure, &n, None, 50_000, failed("a@b"), ORIGINAL).unwrap();
        assert_eq!(d.mail_from, "double-bounce@mail.example");
        assert_eq!(d.rcpt_to, "postmaster@mail.example");
        let s = text(&d);
        assert!(s.contains("\r\nTo: postmaster@mail.example\r\n"));
        assert!(s.contains("\r\nSubject: Postmaster Copy: Undelivered Mail\r\n"));
        assert!(!s.contains("I'm sorry"));
    }

    #[test]
    fn internationalised_addresses() {
        let n = Notice::Sender("j\u{f6}rg@b\u{fc}cher.example".into());
        let mut r = failed("\u{f8}l@example.org");
        r.original = Some(Orcpt::Utf8("\u{f8}l@example.org".into()));
        let d = build(DsnEvent::Failure, &n, None, 50_000, r, ORIGINAL).unwrap();
        assert!(d.smtputf8 && d.eight_bit);
        let s = text(&d);
        assert!(s.contains("\r\nOriginal-Recipient: utf-8; \\x{F8}l@example.org\r\n"));
        assert!(s.contains("\r\nFinal-Recipient: utf-8; \\x{F8}l@example.org\r\n"));
        assert!(s.contains(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        ));
        assert!(s.contains("\r\n<\u{f8}l@example.org>: failed\r\n"));
        // The report part is US-ASCII.
        let report = s
            .split("message/delivery-status")
            .nth(1)
            .unwrap()
            .split("\r\n--Q1.1")
            .next()
            .unwrap();
        assert!(report.is_ascii());
    }

    #[test]
    fn remote_text_cannot_break_the_message() {
        let n = Notice::Sender("a@b".into());
        let mut r = failed("x@y");
        r.remote_mta = Some("mx.y".into());
        r.diagnostic = Some(format!(
            "550-5.7.1 first\r\n550 5.7.1 Bcc: evil@z\r\n\r\n{} \u{e9}",
            "z".repeat(5000)
        ));
        let d = build(DsnEvent::Failure, &n, None, 50_000, r, ORIGINAL).unwrap();
        assert!(lines_ok(&d.message));
        let s = text(&d);
        assert!(
            s.contains("Diagnostic-Code: smtp; 550-5.7.1 first 550 5.7.1 Bcc: evil@z\r\n    zzz")
        );
        assert!(!s.contains("\r\nBcc:"));
        assert!(s.contains(" ?\r\n"));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let n = Notice::Sender("a@b".into());
        let b = |host: &str, unique: &str, rcpts: Vec<RecipientStatus>| {
            let mut x = DsnBuilder::new(DsnEvent::Failure, host, "Q1", &n, unique, t0(), t0());
            for r in rcpts {
                x = x.recipient(r);
            }
            x.build(ORIGINAL)
        };
        assert_eq!(b("h", "u", vec![]), Err(BuildError::NoRecipients));
        assert!(matches!(
            b("h h", "u", vec![failed("x@y")]),
            Err(BuildError::Invalid {
                what: "host name",
                ..
            })
        ));
        assert!(matches!(
            b("h", "u/1", vec![failed("x@y")]),
            Err(BuildError::Invalid {
                what: "unique token",
                ..
            })
        ));
        assert!(matches!(
            b("h", "u", vec![failed("x@y\r\nBcc: z")]),
            Err(BuildError::Invalid {
                what: "recipient",
                ..
            })
        ));
        let wrong = RecipientStatus::new("x@y", Action::Failed, Status::new(4, 0, 0));
        assert!(matches!(
            b("h", "u", vec![wrong]),
            Err(BuildError::StatusMismatch { .. })
        ));
        let bad_to = Notice::Sender("a@b\nBcc: c".into());
        let r = DsnBuilder::new(DsnEvent::Failure, "h", "Q1", &bad_to, "u", t0(), t0())
            .recipient(failed("x@y"))
            .build(ORIGINAL);
        assert!(matches!(
            r,
            Err(BuildError::Invalid {
                what: "notice recipient",
                ..
            })
        ));
        for null in ["", "<>"] {
            let to_null = Notice::Sender(null.into());
            let r = DsnBuilder::new(DsnEvent::Failure, "h", "Q1", &to_null, "u", t0(), t0())
                .recipient(failed("x@y"))
                .build(ORIGINAL);
            assert!(
                matches!(
                    r,
                    Err(BuildError::Invalid {
                        what: "notice recipient",
                        ..
                    })
                ),
                "{null:?}"
            );
        }
    }

    #[test]
    fn several_recipients_one_group_each() {
        let n = Notice::Sender("a@b".into());
        let d = DsnBuilder::new(DsnEvent::Failure, "h", "Q1", &n, "u", t0(), t0())
            .recipient(failed("x@y"))
            .recipient(failed("z@y"))
            .build(ORIGINAL)
            .unwrap();
        let s = text(&d);
        assert!(s.contains("Final-Recipient: rfc822; x@y\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\nFinal-Recipient: rfc822; z@y\r\n"));
    }

    proptest! {
        #[test]
        fn any_input_gives_well_formed_lines(
            original in proptest::collection::vec(any::<u8>(), 0..3000),
            diag in "\\PC{0,1200}",
            reason in any::<String>(),
            full in any::<bool>(),
            addr in "\\PC{1,1200}",
        ) {
            let n = Notice::Sender(format!("a{addr}"));
            let mut r = failed(&addr);
            r.original = Some(Orcpt::Utf8(addr.clone()));
            r.diagnostic = Some(diag);
            r.reason = reason;
            let ret = Some(if full { Ret::Full } else { Ret::Hdrs });
            let d = build(DsnEvent::Failure, &n, ret, 2000, r, &original).unwrap();
            prop_assert!(lines_ok(&d.message));
            prop_assert_eq!(d.eight_bit, !d.message.is_ascii());
            prop_assert!(d.message.ends_with(b"\r\n--Q1.1/mail.example--\r\n") || d.message.ends_with(b"--\r\n"));
        }
    }
}
