//! Delivery status notifications: RFC 3461 parameters, RFC 3464 reports
//! and the rules of who gets one.
//!
//! Pure code, for the outbound queue: no files, no clock (times are
//! arguments), no I/O.
//!
//! * [`params`]: xtext and the `NOTIFY=`, `RET=`, `ENVID=`, `ORCPT=`
//!   values smtp-proto keeps as written;
//! * [`report`]: a `multipart/report; report-type=delivery-status` message
//!   worded as Postfix's bounce(8) writes it;
//! * here: [`should_notify`], [`notice_for`] (never a notification to the
//!   null sender; double bounce to postmaster; never a triple bounce) and
//!   [`delay_warning_due`].
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use mailstore::dsn::{self, Action, DsnBuilder, DsnEvent, Notice, Notify, RecipientStatus, Status};
//!
//! let notify = Notify::parse("FAILURE,DELAY").unwrap();
//! assert!(dsn::should_notify(Some(&notify), DsnEvent::Failure));
//! let notice = dsn::notice_for("user2@csuvnetwork.com", "postmaster", "double-bounce@mail.csuvnetwork.com").unwrap();
//!
//! let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
//! let mut rcpt = RecipientStatus::new("bob@example.org", Action::Failed, Status::new(5, 1, 1));
//! rcpt.remote_mta = Some("mx.example.org".into());
//! rcpt.diagnostic = Some("550 5.1.1 <bob@example.org>: User unknown".into());
//! let built = DsnBuilder::new(DsnEvent::Failure, "mail.csuvnetwork.com", "4XyZ12", &notice, "4XyZ12.1796000000", t, t)
//!     .recipient(rcpt)
//!     .build(b"Subject: hi\r\n\r\nhello\r\n")
//!     .unwrap();
//! assert_eq!(built.mail_from, "");
//! assert_eq!(built.rcpt_to, "user2@csuvnetwork.com");
//! assert!(built.message.starts_with(b"Date: "));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

pub mod params;
pub mod report;

pub use params::{
    utf8_addr_decode, utf8_addr_encode, xtext_decode, xtext_encode, Envid, Notify, Orcpt,
    ParamError, Ret, ENVID_MAX, ORCPT_MAX,
};
pub use report::{
    host_said, BuildError, Dsn, DsnBuilder, RecipientStatus, Returned, BOUNCE_SIZE_LIMIT,
};

/// What happened to a recipient, as far as notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnEvent {
    /// Delivery failed for good (5xx, or the queue lifetime ran out).
    Failure,
    /// Delivery is late and still being retried.
    Delay,
    /// Delivered, relayed to a next hop without DSN support, or expanded.
    Success,
}

/// Whether a recipient gets a notification of `event` (RFC 3461 section
/// 4.1).
///
/// Without `NOTIFY=`, RFC 3461 lets the MTA act as for `FAILURE` or
/// `FAILURE,DELAY`. Like Postfix, a delay is reported only when the queue
/// decides a warning is due, which it does only when `delay_warning_time`
/// is set (see [`delay_warning_due`]); so with `NOTIFY` absent this
/// answers yes for `Failure` and `Delay`, no for `Success`.
pub fn should_notify(notify: Option<&Notify>, event: DsnEvent) -> bool {
    match (notify, event) {
        (None, DsnEvent::Failure | DsnEvent::Delay) => true,
        (None, DsnEvent::Success) => false,
        (Some(n), DsnEvent::Failure) => n.failure,
        (Some(n), DsnEvent::Delay) => n.delay,
        (Some(n), DsnEvent::Success) => n.success,
    }
}

/// Whether a delay warning is due for a message that arrived at `arrival`
/// (Postfix `delay_warning_time`; `None`, Postfix's `0h` default, turns
/// warnings off). One warning per message: `already_warned` stops a second.
pub fn delay_warning_due(
    arrival: SystemTime,
    now: SystemTime,
    delay_warning_time: Option<Duration>,
    already_warned: bool,
) -> bool {
    match delay_warning_time {
        Some(after) if !after.is_zero() && !already_warned => now
            .duration_since(arrival)
            .map(|age| age >= after)
            .unwrap_or(false),
        _ => false,
    }
}

/// The recipient of a notification about a message with envelope sender
/// `envelope_sender`: `None` for the null sender `<>` (RFC 5321 section
/// 4.5.5: never a notification to it).
pub fn dsn_recipient(envelope_sender: &str) -> Option<&str> {
    let s = envelope_sender.trim();
    (!s.is_empty() && s != "<>").then_some(s)
}

/// Where a notification goes and with which envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The ordinary case: to the envelope sender, from the null sender
    /// (`MAIL FROM:<>`, RFC 3464 section 2, RFC 5321 section 4.5.5).
    Sender(String),
    /// A double bounce: the message that failed had the null sender (it
    /// was a notification itself), so postmaster hears of it instead,
    /// from a sender of its own (Postfix's `double-bounce@$myorigin`) so
    /// that its failure is recognised and dropped.
    Postmaster {
        /// The postmaster address (Postfix `2bounce_notice_recipient`).
        postmaster: String,
        /// The envelope sender of the double bounce.
        double_bounce_sender: String,
    },
}

impl Notice {
    /// The envelope sender to send the notification with.
    pub fn mail_from(&self) -> &str {
        match self {
            Notice::Sender(_) => "",
            Notice::Postmaster {
                double_bounce_sender,
                ..
            } => double_bounce_sender,
        }
    }

    /// The envelope recipient, also the `To:` of the notification.
    pub fn rcpt_to(&self) -> &str {
        match self {
            Notice::Sender(s) => s,
            Notice::Postmaster { postmaster, .. } => postmaster,
        }
    }
}

/// Who hears about a failed (or delayed, or delivered) message whose
/// envelope sender is `envelope_sender`.
///
/// * a normal sender: [`Notice::Sender`];
/// * the null sender: [`Notice::Postmaster`], a double bounce;
/// * `double_bounce_sender`, the sender of double bounces: `None`. A
///   double bounce that fails is dropped, never a triple bounce (Postfix
///   logs "undeliverable postmaster notification discarded").
///
/// Only failures of null-sender mail deserve a double bounce; the queue
/// drops delay and success notices for them rather than call this.
pub fn notice_for(
    envelope_sender: &str,
    postmaster: &str,
    double_bounce_sender: &str,
) -> Option<Notice> {
    match dsn_recipient(envelope_sender) {
        Some(s) if s.eq_ignore_ascii_case(double_bounce_sender) => None,
        Some(s) => Some(Notice::Sender(s.to_owned())),
        None => Some(Notice::Postmaster {
            postmaster: postmaster.to_owned(),
            double_bounce_sender: double_bounce_sender.to_owned(),
        }),
    }
}

/// The `Action:` of a recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Could not be delivered; no further attempts.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Delivered to the mailbox.
    Delivered,
    /// Handed to a next hop that does not do DSN.
    Relayed,
    /// Delivered to an alias or list that expanded to several addresses.
    Expanded,
}

impl Action {
    /// The field value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The notification event this action reports.
    pub fn event(&self) -> DsnEvent {
        match self {
            Action::Failed => DsnEvent::Failure,
            Action::Delayed => DsnEvent::Delay,
            Action::Delivered | Action::Relayed | Action::Expanded => DsnEvent::Success,
        }
    }

    /// The status class that goes with it: 5 for failed, 4 for delayed, 2
    /// otherwise (RFC 3464 section 2.3.4).
    pub fn status_class(&self) -> u8 {
        match self {
            Action::Failed => 5,
            Action::Delayed => 4,
            _ => 2,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// 2 success, 4 persistent transient failure, 5 permanent failure.
    pub class: u8,
    /// Subject, 0 to 999.
    pub subject: u16,
    /// Detail, 0 to 999.
    pub detail: u16,
}

impl Status {
    /// A status from its three numbers.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Status {
        Status {
            class,
            subject,
            detail,
        }
    }

    /// Parses `x.y.z` (RFC 3463 section 2: class 2, 4 or 5, then two
    /// numbers of one to three digits).
    pub fn parse(s: &str) -> Option<Status> {
        let mut it = s.split('.');
        let class = match it.next()? {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let mut num = || -> Option<u16> {
            let p = it.next()?;
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let (subject, detail) = (num()?, num()?);
        it.next()
            .is_none()
            .then_some(Status::new(class, subject, detail))
    }

    /// The status of an SMTP reply: its enhanced code when the text starts
    /// with one of the same class (RFC 2034), else `class.0.0` from the
    /// reply code (as Postfix does for servers without ENHANCEDSTATUSCODES).
    /// `None` for a code that is not 2xx, 4xx or 5xx.
    pub fn from_reply(code: u16, text: &str) -> Option<Status> {
        let class = u8::try_from(code / 100)
            .ok()
            .filter(|c| matches!(c, 2 | 4 | 5))?;
        let first = text.split_ascii_whitespace().next().unwrap_or("");
        Some(
            Status::parse(first)
                .filter(|s| s.class == class)
                .unwrap_or(Status::new(class, 0, 0)),
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_rules() {
        use DsnEvent::*;
        // RFC 3461 section 4.1 default: failures, and delays when the MTA
        // warns at all; never success.
        assert!(should_notify(None, Failure));
        assert!(should_notify(None, Delay));
        assert!(!should_notify(None, Success));
        let never = Notify::NEVER;
        for e in [Failure, Delay, Success] {
            assert!(!should_notify(Some(&never), e));
        }
        let s = Notify::parse("SUCCESS").unwrap();
        assert!(should_notify(Some(&s), Success));
        assert!(!should_notify(Some(&s), Failure));
        assert!(!should_notify(Some(&s), Delay));
        let fd = Notify::parse("FAILURE,DELAY").unwrap();
        assert!(should_notify(Some(&fd), Failure));
        assert!(should_notify(Some(&fd), Delay));
        assert!(!should_notify(Some(&fd), Success));
    }

    #[test]
    fn delay_warnings() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let four_h = Some(Duration::from_secs(4 * 3600));
        let later = |s| t0 + Duration::from_secs(s);
        assert!(!delay_warning_due(t0, later(4 * 3600), None, false));
        assert!(!delay_warning_due(
            t0,
            later(4 * 3600),
            Some(Duration::ZERO),
            false
        ));
        assert!(!delay_warning_due(t0, later(4 * 3600 - 1), four_h, false));
        assert!(delay_warning_due(t0, later(4 * 3600), four_h, false));
        assert!(!delay_warning_due(t0, later(4 * 3600), four_h, true));
        // A clock that went backwards is not a delay.
        assert!(!delay_warning_due(later(10), t0, four_h, false));
    }

    #[test]
    fn who_hears() {
        let db = "double-bounce@mail.example";
        assert_eq!(dsn_recipient(""), None);
        assert_eq!(dsn_recipient("<>"), None);
        assert_eq!(dsn_recipient("a@b"), Some("a@b"));
        let n = notice_for("a@b", "postmaster", db).unwrap();
        assert_eq!(n, Notice::Sender("a@b".into()));
        assert_eq!((n.mail_from(), n.rcpt_to()), ("", "a@b"));
        // The null sender never gets one: postmaster hears instead.
        let d = notice_for("", "postmaster", db).unwrap();
        assert_eq!((d.mail_from(), d.rcpt_to()), (db, "postmaster"));
        // A failed double bounce is dropped: no triple bounce.
        assert_eq!(notice_for(db, "postmaster", db), None);
        assert_eq!(
            notice_for("Double-Bounce@MAIL.example", "postmaster", db),
            None
        );
    }

    #[test]
    fn status() {
        assert_eq!(Status::parse("5.1.1"), Some(Status::new(5, 1, 1)));
        assert_eq!(Status::parse("4.7.100"), Some(Status::new(4, 7, 100)));
        assert_eq!(Status::new(2, 0, 0).to_string(), "2.0.0");
        for bad in [
            "", "5", "5.1", "3.1.1", "5.1.1.1", "5.1000.1", "5..1", "5.a.1",
        ] {
            assert_eq!(Status::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Status::from_reply(550, "5.1.1 <x@y>: User unknown"),
            Some(Status::new(5, 1, 1))
        );
        assert_eq!(
            Status::from_reply(450, "Try later"),
            Some(Status::new(4, 0, 0))
        );
        // An enhanced code of another class than the reply is ignored.
        assert_eq!(
            Status::from_reply(452, "5.2.2 full"),
            Some(Status::new(4, 0, 0))
        );
        assert_eq!(Status::from_reply(354, "go"), None);
        assert_eq!(Action::Expanded.event(), DsnEvent::Success);
        assert_eq!(Action::Delayed.status_class(), 4);
    }
}
