//! The client session: a Sans-I/O ESMTP sender.
//!
//! A [`ClientSession`] delivers a list of messages over one connection:
//! greeting, EHLO (HELO when EHLO is refused), optional AUTH (PLAIN, else
//! LOGIN), then per message MAIL, RCPT..., DATA with the body dot-stuffed,
//! using PIPELINING (RFC 2920) when the server offers it, and finally QUIT.
//!
//! Per message, from the server's EHLO reply: `SIZE=` (RFC 1870) and no
//! `MAIL` at all when the message exceeds the server's limit
//! ([`NotSent::TooBig`]); `BODY=8BITMIME` for an 8-bit body when offered
//! (RFC 6152), else the body converted to quoted-printable
//! ([`crate::downgrade`], [`ClientConfig::mime_downgrade`]); `SMTPUTF8`
//! (RFC 6531) for non-ASCII addresses or header fields when offered, and
//! no `MAIL` when the addresses need it and it is not
//! ([`NotSent::NeedsSmtputf8`]); the RFC 3461 parameters (`RET`, `ENVID`,
//! `NOTIFY`, `ORCPT`) when the server offers `DSN`.
//! It is driven like the server: call [`ClientSession::next`], write what
//! [`Interrupt::Output`] gives, read on [`Interrupt::NeedInput`], stop at
//! [`Interrupt::Close`].
//!
//! # TLS
//!
//! With [`ClientConfig::tls`] set, the session upgrades with STARTTLS (RFC
//! 3207) when the first EHLO reply offers it: on the server's `220` it
//! returns [`ClientEvent::StartTls`] and then [`Interrupt::AwaitingHost`]
//! until the host has run the TLS handshake and called
//! [`ClientSession::tls_established`]. Whatever arrived in plaintext after
//! the `220` is discarded there (a man in the middle could have appended
//! replies), the EHLO capabilities are forgotten and EHLO is sent again
//! inside TLS (RFC 3207 section 4.2); [`ClientEvent::Ready`] follows the
//! second EHLO. [`ClientTls::Required`] gives up with
//! [`ClientError::TlsUnavailable`] (and QUIT) when STARTTLS is not offered
//! or refused, before any AUTH or MAIL; [`ClientTls::Opportunistic`] goes
//! on in plaintext. Over implicit TLS (RFC 8314, port 465) the host sets
//! [`ClientConfig::tls_active`] and the session never sends STARTTLS.

use std::collections::VecDeque;
use std::time::Duration;

use mail_session::sasl::client as sasl;
use mail_session::{stuff_data, Interrupt, Secret};

use crate::reply::{Reply, ReplyError};
use crate::server::UsageError;

/// How long one write of the message may take before the sender gives up
/// (RFC 5321 section 4.5.3.2.5, "data block": 3 minutes). The session
/// does not see writes; the host applies this to each (the driver's
/// `with_write_timeout`). The reply deadlines the session keeps itself:
/// [`ClientSession::poll_timeout`].
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// When the client upgrades to TLS with STARTTLS (RFC 3207): Postfix's
/// `smtp_tls_security_level` `none`, `may` and `encrypt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientTls {
    /// Never send STARTTLS.
    #[default]
    None,
    /// STARTTLS when the server offers it; plaintext when it does not or
    /// refuses it.
    Opportunistic,
    /// STARTTLS or nothing: give up with [`ClientError::TlsUnavailable`]
    /// before AUTH or MAIL when the server does not offer or refuses it.
    Required,
}

/// Client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our name for EHLO/HELO.
    pub ehlo_domain: String,
    /// User name and password for AUTH, if the server must see them.
    pub credentials: Option<(String, Secret<String>)>,
    /// Use PIPELINING when the server offers it.
    pub pipelining: bool,
    /// STARTTLS policy (default [`ClientTls::None`]).
    pub tls: ClientTls,
    /// The connection is TLS already (implicit TLS, RFC 8314): STARTTLS
    /// is never sent, whatever `tls` says.
    pub tls_active: bool,
    /// Send the credentials only inside TLS: without it the session
    /// gives up with [`ClientError::AuthNeedsTls`] before AUTH (Postfix's
    /// `smtp_sasl_security_options = noplaintext` outside TLS).
    pub auth_requires_tls: bool,
    /// Convert an 8-bit message to quoted-printable for a server without
    /// 8BITMIME ([`crate::downgrade`]; Postfix's
    /// `disable_mime_output_conversion = no`, the default). Off: send it
    /// as it is.
    pub mime_downgrade: bool,
    /// After the last message, stay connected and idle instead of sending
    /// QUIT, so that the host can hand over another message with
    /// [`ClientSession::reuse`] or end with [`ClientSession::end`]
    /// (Postfix's connection cache). Default false.
    pub keep_open: bool,
}

impl ClientConfig {
    /// No AUTH, pipelining when offered, no TLS.
    pub fn new(ehlo_domain: impl Into<String>) -> Self {
        ClientConfig {
            ehlo_domain: ehlo_domain.into(),
            credentials: None,
            pipelining: true,
            tls: ClientTls::None,
            tls_active: false,
            auth_requires_tls: false,
            mime_downgrade: true,
            keep_open: false,
        }
    }
}

/// A message to send: envelope and body (lines ending in CRLF, not
/// dot-stuffed; the session stuffs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Sender address without brackets; empty for the null reverse-path.
    pub from: String,
    /// Recipient addresses without brackets.
    pub to: Vec<String>,
    /// Message content.
    pub body: Vec<u8>,
    /// RFC 3461 `RET=` value (`FULL`, `HDRS`), sent when the server
    /// offers DSN.
    pub ret: Option<String>,
    /// RFC 3461 `ENVID=` value (xtext), sent when the server offers DSN.
    pub envid: Option<String>,
    /// RFC 3461 parameters per recipient, in the order of `to` (missing
    /// entries: none).
    pub rcpt_dsn: Vec<RcptDsn>,
}

/// A recipient's RFC 3461 parameters, as they are to be written (the
/// caller validates them; values that are not printable US-ASCII without
/// spaces are left out so that nothing can be injected into the command).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    /// `NOTIFY=` value (`NEVER`, `SUCCESS,FAILURE`, ...).
    pub notify: Option<String>,
    /// `ORCPT=` value (`rfc822;user+40example.org`).
    pub orcpt: Option<String>,
}

/// Why the session did not offer a message to the server at all: the
/// server lacks what the message needs (decided from its EHLO reply,
/// before `MAIL`, as Postfix does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The message is larger than the server's `SIZE` limit (RFC 1870
    /// section 6.1).
    TooBig {
        /// The message's size as it would be sent.
        size: u64,
        /// The server's limit.
        limit: u64,
    },
    /// An envelope address is not ASCII and the server does not offer
    /// SMTPUTF8 (RFC 6531 section 3.2).
    NeedsSmtputf8,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReport {
    /// Position in the list given to [`ClientSession::new`].
    pub index: usize,
    /// Reply to MAIL.
    pub mail: Reply,
    /// Each recipient with its RCPT reply.
    pub recipients: Vec<(String, Reply)>,
    /// Reply to the end of data (or to DATA when it was refused); `None`
    /// when DATA was not reached.
    pub data: Option<Reply>,
    /// Set when the message was not offered (no `MAIL` sent); `mail`
    /// then holds no reply (code 0).
    pub not_sent: Option<NotSent>,
    /// The server offered DSN (RFC 3461), so the parameters were passed
    /// on; without it a recipient that asked for `NOTIFY=SUCCESS` is owed
    /// a "relayed" notice (section 4.2).
    pub dsn_offered: bool,
    /// The body was converted to 7 bits for a server without 8BITMIME.
    pub downgraded: bool,
}

impl MessageReport {
    /// The server took responsibility for the message (2yz after the
    /// body) for the recipients whose RCPT got 2yz.
    pub fn accepted(&self) -> bool {
        self.data.as_ref().is_some_and(Reply::is_positive)
    }
}

/// Why a session gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server refused at a stage that ends the session (greeting,
    /// HELO, AUTH).
    #[error("server refused {stage}: {reply}")]
    Refused {
        /// What was refused.
        stage: &'static str,
        /// The server's reply.
        reply: Reply,
    },
    /// Credentials configured but the server offers neither PLAIN nor LOGIN.
    #[error("server offers no usable AUTH mechanism")]
    NoAuthMechanism,
    /// Credentials configured with [`ClientConfig::auth_requires_tls`],
    /// and the connection is not TLS (STARTTLS not offered or refused).
    #[error("AUTH needs TLS, which the server did not give")]
    AuthNeedsTls,
    /// The server sent something that is not an SMTP reply.
    #[error("malformed reply: {0}")]
    Protocol(ReplyError),
    /// The server did not answer in time (RFC 5321 section 4.5.3.2).
    #[error("timeout waiting for the server")]
    Timeout,
    /// The server closed the connection while replies were due.
    #[error("connection closed by the server")]
    ConnectionClosed,
    /// [`ClientTls::Required`] and the server did not offer STARTTLS
    /// (`reply` is `None`) or refused it (its reply).
    #[error("TLS required but {}", match reply {
        Some(r) => format!("STARTTLS refused: {}", r.to_string().trim_end()),
        None => "STARTTLS not offered".to_owned(),
    })]
    TlsUnavailable {
        /// The server's reply to STARTTLS, if it was sent.
        reply: Option<Reply>,
    },
}

/// What the client session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting and EHLO/HELO done.
    Ready {
        /// EHLO was accepted (false: HELO fallback).
        extended: bool,
        /// EHLO keywords with their parameters (`SIZE 10240000`, ...).
        capabilities: Vec<String>,
    },
    /// The server said `220` to STARTTLS: flush the output, run the TLS
    /// handshake, then call [`ClientSession::tls_established`] (or drop
    /// the connection if the handshake fails). Until then
    /// [`ClientSession::next`] returns [`Interrupt::AwaitingHost`].
    StartTls,
    /// AUTH succeeded.
    Authenticated,
    /// A message transaction finished (accepted or not).
    Message(MessageReport),
    /// The session gives up (QUIT is sent when the server is still there).
    Failed(ClientError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    AuthPlain,
    AuthLoginStart,
    AuthLoginUser,
    AuthLoginPass,
    Mail,
    Rcpt(usize),
    Data,
    Rset,
    /// The RSET that checks a kept connection before its next message.
    ReuseRset,
    EndOfData,
    Quit,
}

/// A Sans-I/O SMTP client session. See the [module docs](self).
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    messages: Vec<OutgoingMessage>,
    current: usize,
    report: Option<MessageReport>,
    input: Vec<u8>,
    /// Octets of `input` known to hold no complete reply.
    checked: usize,
    out: Vec<u8>,
    expect: VecDeque<Expect>,
    events: VecDeque<ClientEvent>,
    capabilities: Vec<String>,
    pipelining: bool,
    /// TLS is active (implicit, or after the handshake).
    tls: bool,
    /// `220` to STARTTLS seen; waiting for the host's handshake.
    tls_pending: bool,
    last_activity: Duration,
    closing: bool,
    closed: bool,
    eof: bool,
    /// The current message's body converted to 7 bits, when it is sent
    /// that way.
    body_7bit: Option<Vec<u8>>,
}

impl ClientSession {
    /// A session that will deliver `messages` in order, then QUIT. `now`
    /// is the host's clock, as for [`ServerSession`](crate::ServerSession).
    pub fn new(config: ClientConfig, messages: Vec<OutgoingMessage>, now: Duration) -> Self {
        let tls = config.tls_active;
        ClientSession {
            cfg: config,
            messages,
            current: 0,
            report: None,
            input: Vec::new(),
            checked: 0,
            out: Vec::new(),
            expect: VecDeque::from([Expect::Greeting]),
            events: VecDeque::new(),
            capabilities: Vec::new(),
            pipelining: false,
            tls,
            tls_pending: false,
            last_activity: now,
            closing: false,
            closed: false,
            eof: false,
            body_7bit: None,
        }
    }

    /// The server closed its side (the read returned 0). Replies already
    /// enqueued are still used; if more were due, the session reports
    /// [`ClientError::ConnectionClosed`] and closes.
    pub fn input_closed(&mut self) {
        self.eof = true;
    }

    /// Hand over bytes read from the server.
    pub fn enqueue_input(&mut self, now: Duration, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.last_activity = now;
        self.input.extend_from_slice(bytes);
    }

    /// The server's deadline for its next reply (RFC 5321 section
    /// 4.5.3.2: 5 minutes for the greeting, MAIL and RCPT (and EHLO,
    /// AUTH, STARTTLS, QUIT), 2 for the 354 to DATA, 10 after the body),
    /// counted from the last input.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.closed || self.closing {
            return None;
        }
        let t = match self.expect.front()? {
            Expect::Data => 120,
            Expect::EndOfData => 600,
            _ => 300,
        };
        Some(self.last_activity.saturating_add(Duration::from_secs(t)))
    }

    /// Tell the session the time; past the deadline it fails and closes.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.events
                .push_back(ClientEvent::Failed(ClientError::Timeout));
            self.expect.clear();
            self.out.clear();
            self.closing = true;
        }
    }

    /// Appends the output that is ready to `dst` (see
    /// [`Session::drain_output`](mail_session::Session::drain_output));
    /// returns the number of bytes added.
    pub fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        dst.append(&mut self.out);
        n
    }

    /// EHLO keywords seen (empty before EHLO or after HELO; after
    /// STARTTLS, those of the EHLO inside TLS).
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// True over implicit TLS and after [`tls_established`](Self::tls_established).
    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// With [`ClientConfig::keep_open`]: every message is done and the
    /// connection is still up, waiting for [`reuse`](Self::reuse) or
    /// [`end`](Self::end). Do not drive the session while idle.
    pub fn is_idle(&self) -> bool {
        self.cfg.keep_open
            && !self.closed
            && !self.closing
            && !self.eof
            && !self.tls_pending
            && self.expect.is_empty()
            && self.events.is_empty()
            && self.current >= self.messages.len()
    }

    /// Sends one more message on an idle kept connection: `RSET` first,
    /// which tells whether the server is still there (RFC 5321 section
    /// 4.1.1.5; Postfix does the same before it reuses a cached
    /// connection), then the transaction. A refused or unanswered `RSET`
    /// fails the session before `MAIL`, so the message can go over a new
    /// connection. Its report's `index` counts from the first message.
    pub fn reuse(&mut self, message: OutgoingMessage, now: Duration) -> Result<(), UsageError> {
        if !self.is_idle() {
            return Err(UsageError::NotAwaiting);
        }
        self.messages.push(message);
        self.last_activity = now;
        self.checked = 0;
        self.send_line("RSET");
        self.expect.push_back(Expect::ReuseRset);
        Ok(())
    }

    /// A transaction is under way: `MAIL` was sent for a message whose
    /// [`ClientEvent::Message`] has not come yet. A failure now may have
    /// left the message with the server (after the final dot), so the
    /// host must not send it again at once.
    pub fn in_transaction(&self) -> bool {
        self.report.is_some()
    }

    /// Ends an idle kept connection: `QUIT` is sent when the session is
    /// driven next. No effect on a session that is not idle.
    pub fn end(&mut self) {
        if self.is_idle() {
            self.quit();
        }
    }

    /// Answer [`ClientEvent::StartTls`] once the TLS handshake is
    /// complete: input received before it is discarded (plaintext a man
    /// in the middle may have appended after the `220`), the capabilities
    /// are forgotten and EHLO is sent again (RFC 3207 section 4.2). From
    /// now on [`enqueue_input`](Self::enqueue_input) takes decrypted bytes.
    pub fn tls_established(&mut self) -> Result<(), UsageError> {
        if !self.tls_pending {
            return Err(UsageError::NotAwaiting);
        }
        self.tls_pending = false;
        self.tls = true;
        self.input.clear();
        self.checked = 0;
        self.capabilities.clear();
        self.pipelining = false;
        let l = format!("EHLO {}", self.cfg.ehlo_domain);
        self.send_line(&l);
        self.expect.push_back(Expect::Ehlo);
        Ok(())
    }

    /// Drive the session; see the module docs.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<ClientEvent, Interrupt> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            if self.closed {
                return Err(Interrupt::Close);
            }
            if self.tls_pending {
                // Nothing received in plaintext after the 220 is read.
                return Err(Interrupt::AwaitingHost);
            }
            if self.expect.is_empty() {
                if !self.out.is_empty() {
                    return Err(Interrupt::Output(std::mem::take(&mut self.out)));
                }
                self.closed = true;
                return Err(Interrupt::Close);
            }
            // Parse again only once a new line end has arrived, so that a
            // long reply trickling in costs no repeated full parses.
            let fresh = self.input.get(self.checked..).unwrap_or_default();
            let result = if memchr::memchr(b'\n', fresh).is_some() {
                Reply::parse(&self.input)
            } else if self.input.len() > crate::reply::MAX_REPLY_LEN {
                Err(ReplyError::TooLong)
            } else {
                Err(ReplyError::Incomplete)
            };
            match result {
                Ok((reply, used)) => {
                    self.checked = 0;
                    self.input.drain(..used);
                    if let Some(exp) = self.expect.pop_front() {
                        self.on_reply(exp, reply);
                    }
                }
                Err(ReplyError::Incomplete) if self.eof => {
                    // A server may close right after its reply to QUIT
                    // without waiting; anything else due is a failure.
                    if self.expect.iter().any(|e| *e != Expect::Quit) {
                        self.events
                            .push_back(ClientEvent::Failed(ClientError::ConnectionClosed));
                    }
                    self.expect.clear();
                    self.out.clear();
                    self.closed = true;
                }
                Err(ReplyError::Incomplete) => {
                    self.checked = self.input.len();
                    if !self.out.is_empty() {
                        return Err(Interrupt::Output(std::mem::take(&mut self.out)));
                    }
                    return Err(Interrupt::NeedInput);
                }
                Err(e) => {
                    self.events
                        .push_back(ClientEvent::Failed(ClientError::Protocol(e)));
                    self.expect.clear();
                    self.out.clear();
                    self.closing = true;
                }
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn fail(&mut self, err: ClientError) {
        self.events.push_back(ClientEvent::Failed(err));
        self.quit();
    }

    fn quit(&mut self) {
        self.expect.clear();
        self.send_line("QUIT");
        self.expect.push_back(Expect::Quit);
    }

    fn on_reply(&mut self, exp: Expect, reply: Reply) {
        match exp {
            Expect::Greeting => {
                if reply.code() == 220 {
                    let l = format!("EHLO {}", self.cfg.ehlo_domain);
                    self.send_line(&l);
                    self.expect.push_back(Expect::Ehlo);
                } else {
                    self.fail(ClientError::Refused {
                        stage: "connection",
                        reply,
                    });
                }
            }
            Expect::Ehlo => {
                if reply.is_positive() {
                    self.capabilities = reply.lines().iter().skip(1).cloned().collect();
                    if self.wants_tls() {
                        if self.has_capability("STARTTLS") {
                            self.send_line("STARTTLS");
                            self.expect.push_back(Expect::StartTls);
                            return;
                        }
                        if self.cfg.tls == ClientTls::Required {
                            self.fail(ClientError::TlsUnavailable { reply: None });
                            return;
                        }
                    }
                    self.ready_extended();
                } else if reply.code() == 421 {
                    self.fail(ClientError::Refused {
                        stage: "EHLO",
                        reply,
                    });
                } else if self.wants_tls() && self.cfg.tls == ClientTls::Required {
                    // HELO has no STARTTLS: no point falling back to it.
                    self.fail(ClientError::TlsUnavailable { reply: None });
                } else {
                    // RFC 5321 section 3.2: fall back to HELO.
                    let l = format!("HELO {}", self.cfg.ehlo_domain);
                    self.send_line(&l);
                    self.expect.push_back(Expect::Helo);
                }
            }
            Expect::Helo => {
                if reply.is_positive() {
                    self.capabilities.clear();
                    self.pipelining = false;
                    self.events.push_back(ClientEvent::Ready {
                        extended: false,
                        capabilities: Vec::new(),
                    });
                    self.after_hello();
                } else {
                    self.fail(ClientError::Refused {
                        stage: "HELO",
                        reply,
                    });
                }
            }
            Expect::StartTls => {
                if reply.code() == 220 {
                    self.tls_pending = true;
                    self.events.push_back(ClientEvent::StartTls);
                } else if self.cfg.tls == ClientTls::Required {
                    self.fail(ClientError::TlsUnavailable { reply: Some(reply) });
                } else if reply.code() == 421 {
                    self.fail(ClientError::Refused {
                        stage: "STARTTLS",
                        reply,
                    });
                } else {
                    // Opportunistic (RFC 3207 section 4.1): go on in
                    // plaintext with the first EHLO's capabilities.
                    self.ready_extended();
                }
            }
            Expect::AuthPlain | Expect::AuthLoginPass => {
                if reply.code() == 235 {
                    self.events.push_back(ClientEvent::Authenticated);
                    self.next_message();
                } else {
                    self.fail(ClientError::Refused {
                        stage: "AUTH",
                        reply,
                    });
                }
            }
            Expect::AuthLoginStart | Expect::AuthLoginUser => {
                if reply.code() == 334 {
                    let (user, pass) = match &self.cfg.credentials {
                        Some((u, p)) => (u.clone(), p.expose().clone()),
                        None => (String::new(), String::new()),
                    };
                    if exp == Expect::AuthLoginStart {
                        self.send_line(&sasl::login(&user));
                        self.expect.push_back(Expect::AuthLoginUser);
                    } else {
                        self.send_line(&sasl::login(&pass));
                        self.expect.push_back(Expect::AuthLoginPass);
                    }
                } else {
                    self.fail(ClientError::Refused {
                        stage: "AUTH",
                        reply,
                    });
                }
            }
            Expect::Mail => {
                let mail_ok = reply.is_positive();
                if let Some(r) = self.report.as_mut() {
                    r.mail = reply;
                }
                if !self.pipelining {
                    if mail_ok {
                        self.send_rcpt(0);
                    } else {
                        self.finish_message();
                    }
                }
            }
            Expect::Rcpt(i) => {
                let n = self.messages.get(self.current).map_or(0, |m| m.to.len());
                if let Some(r) = self.report.as_mut() {
                    if let Some(slot) = r.recipients.get_mut(i) {
                        slot.1 = reply;
                    }
                }
                if !self.pipelining {
                    if i + 1 < n {
                        self.send_rcpt(i + 1);
                    } else if self.any_recipient_accepted() {
                        self.send_line("DATA");
                        self.expect.push_back(Expect::Data);
                    } else {
                        self.send_line("RSET");
                        self.expect.push_back(Expect::Rset);
                    }
                }
            }
            Expect::Data => {
                if reply.code() == 354 {
                    if self.any_recipient_accepted() {
                        let body = match (&self.body_7bit, self.messages.get(self.current)) {
                            (Some(b), _) => stuff_data(b),
                            (None, Some(m)) => stuff_data(&m.body),
                            (None, None) => b".\r\n".to_vec(),
                        };
                        self.out.extend_from_slice(&body);
                    } else {
                        // RFC 2920 section 3.1: all recipients refused but
                        // 354 given: send an empty message end.
                        self.out.extend_from_slice(b".\r\n");
                    }
                    self.expect.push_back(Expect::EndOfData);
                } else {
                    if let Some(r) = self.report.as_mut() {
                        r.data = Some(reply);
                    }
                    self.finish_message();
                }
            }
            Expect::EndOfData => {
                if let Some(r) = self.report.as_mut() {
                    r.data = Some(reply);
                }
                self.finish_message();
            }
            Expect::Rset => self.finish_message(),
            Expect::ReuseRset => {
                if reply.is_positive() {
                    self.next_message();
                } else {
                    self.fail(ClientError::Refused {
                        stage: "RSET",
                        reply,
                    });
                }
            }
            Expect::Quit => {
                self.closing = true;
            }
        }
    }

    /// STARTTLS is to be tried: wanted by the policy, not active yet.
    fn wants_tls(&self) -> bool {
        !self.tls && self.cfg.tls != ClientTls::None
    }

    /// EHLO done (and STARTTLS, if any): report and go on.
    fn ready_extended(&mut self) {
        self.pipelining = self.cfg.pipelining && self.has_capability("PIPELINING");
        self.events.push_back(ClientEvent::Ready {
            extended: true,
            capabilities: self.capabilities.clone(),
        });
        self.after_hello();
    }

    fn has_capability(&self, kw: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split(' ')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(kw))
        })
    }

    fn auth_mechanisms(&self) -> Vec<String> {
        self.capabilities
            .iter()
            .filter_map(|c| {
                let (k, rest) = c.split_once(' ')?;
                k.eq_ignore_ascii_case("AUTH").then_some(rest)
            })
            .flat_map(|r| r.split(' ').map(str::to_ascii_uppercase))
            .collect()
    }

    fn after_hello(&mut self) {
        let Some((user, pass)) = self.cfg.credentials.clone() else {
            self.next_message();
            return;
        };
        if self.cfg.auth_requires_tls && !self.tls {
            // The password must not cross the network in the clear.
            self.fail(ClientError::AuthNeedsTls);
            return;
        }
        let mechs = self.auth_mechanisms();
        if mechs.iter().any(|m| m == "PLAIN") {
            let l = format!("AUTH PLAIN {}", sasl::plain("", &user, pass.expose()));
            self.send_line(&l);
            self.expect.push_back(Expect::AuthPlain);
        } else if mechs.iter().any(|m| m == "LOGIN") {
            self.send_line("AUTH LOGIN");
            self.expect.push_back(Expect::AuthLoginStart);
        } else {
            self.fail(ClientError::NoAuthMechanism);
        }
    }

    fn next_message(&mut self) {
        self.body_7bit = None;
        let Some(m) = self.messages.get(self.current) else {
            if !self.cfg.keep_open {
                self.quit();
            }
            return;
        };
        let dsn_offered = self.has_capability("DSN");
        let mut report = MessageReport {
            index: self.current,
            mail: Reply::plain(0, ""),
            recipients: m
                .to
                .iter()
                .map(|t| (t.clone(), Reply::plain(0, "not sent")))
                .collect(),
            data: None,
            not_sent: None,
            dsn_offered,
            downgraded: false,
        };
        // RFC 6531 section 3.2: a non-ASCII address cannot go to a server
        // without SMTPUTF8 (Postfix bounces with 5.6.7).
        let utf8_addresses = !m.from.is_ascii() || m.to.iter().any(|t| !t.is_ascii());
        let smtputf8 = self.has_capability("SMTPUTF8");
        if utf8_addresses && !smtputf8 {
            report.not_sent = Some(NotSent::NeedsSmtputf8);
            self.report = Some(report);
            self.finish_message();
            return;
        }
        // RFC 6152 section 3: an 8-bit body goes as it is with
        // BODY=8BITMIME when offered, else converted to 7 bits.
        let eight_bit = crate::downgrade::is_8bit(&m.body);
        let offers_8bit = self.has_capability("8BITMIME");
        if eight_bit && !offers_8bit && self.cfg.mime_downgrade {
            let d = crate::downgrade::downgrade(&m.body);
            report.downgraded = d != m.body;
            self.body_7bit = Some(d);
        }
        let size = self.body_7bit.as_ref().map_or(m.body.len(), Vec::len) as u64;
        // RFC 1870 section 6.1: no point sending what the server said it
        // will refuse (Postfix: "message size exceeds size limit").
        if let Some(limit) = self.size_limit().filter(|l| size > *l) {
            report.not_sent = Some(NotSent::TooBig { size, limit });
            self.report = Some(report);
            self.finish_message();
            return;
        }
        self.report = Some(report);
        let mut line = format!("MAIL FROM:<{}>", m.from);
        if self.has_capability("SIZE") {
            line.push_str(&format!(" SIZE={size}"));
        }
        let still_8bit = self.body_7bit.as_ref().map_or(eight_bit, |b| !b.is_ascii());
        if still_8bit && offers_8bit {
            line.push_str(" BODY=8BITMIME");
        }
        // RFC 6531 section 3.4: also for UTF-8 header fields when the
        // server can take them (not needed otherwise: Postfix sends such
        // a message as it is).
        let header_end = memchr::memmem::find(&m.body, b"\r\n\r\n").unwrap_or(m.body.len());
        let utf8_header = !m.body.get(..header_end).unwrap_or_default().is_ascii();
        if utf8_addresses || (utf8_header && smtputf8) {
            line.push_str(" SMTPUTF8");
        }
        if dsn_offered {
            // RFC 3461 section 4.3/4.4: passed on as received.
            if let Some(r) = m.ret.as_deref().filter(|v| param_safe(v)) {
                line.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = m.envid.as_deref().filter(|v| param_safe(v)) {
                line.push_str(&format!(" ENVID={e}"));
            }
        }
        let n = m.to.len();
        self.send_line(&line);
        self.expect.push_back(Expect::Mail);
        if self.pipelining {
            // RFC 2920 section 3.1: MAIL, RCPTs and DATA in one group.
            for i in 0..n {
                self.send_rcpt(i);
            }
            self.send_line("DATA");
            self.expect.push_back(Expect::Data);
        }
    }

    /// The server's `SIZE` limit, if it gave one (`SIZE 0` or a bare
    /// `SIZE`: no fixed limit, RFC 1870 section 4).
    fn size_limit(&self) -> Option<u64> {
        self.capabilities.iter().find_map(|c| {
            let mut w = c.split(' ');
            let k = w.next()?;
            if !k.eq_ignore_ascii_case("SIZE") {
                return None;
            }
            w.next()?.parse::<u64>().ok().filter(|&n| n > 0)
        })
    }

    fn send_rcpt(&mut self, i: usize) {
        let Some(to) = self
            .messages
            .get(self.current)
            .and_then(|m| m.to.get(i))
            .cloned()
        else {
            return;
        };
        let mut line = format!("RCPT TO:<{to}>");
        if self.has_capability("DSN") {
            // RFC 3461 sections 4.1 and 4.2.
            if let Some(d) = self
                .messages
                .get(self.current)
                .and_then(|m| m.rcpt_dsn.get(i))
            {
                if let Some(n) = d.notify.as_deref().filter(|v| param_safe(v)) {
                    line.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some(o) = d.orcpt.as_deref().filter(|v| param_safe(v)) {
                    line.push_str(&format!(" ORCPT={o}"));
                }
            }
        }
        self.send_line(&line);
        self.expect.push_back(Expect::Rcpt(i));
    }

    fn any_recipient_accepted(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.recipients.iter().any(|(_, rep)| rep.is_positive()))
    }

    fn finish_message(&mut self) {
        if let Some(r) = self.report.take() {
            self.events.push_back(ClientEvent::Message(r));
        }
        self.current += 1;
        self.next_message();
    }
}

/// A parameter value that can be written as it is: printable US-ASCII
/// without spaces (RFC 5321 section 4.1.2 `esmtp-value`; xtext is a
/// subset).
fn param_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

// The client has TLS but no transcript.
mail_session::impl_session!(ClientSession, ClientEvent, tls);

#[cfg(test)]
mod tests {
    use super::*;

    fn script(
        cfg: ClientConfig,
        msgs: Vec<OutgoingMessage>,
        server: &[&str],
    ) -> (String, Vec<ClientEvent>) {
        let mut c = ClientSession::new(cfg, msgs, Duration::ZERO);
        let mut server = server.iter();
        run(&mut c, &mut server, false)
    }

    /// Drives `c` until it needs input that `server` does not have, or
    /// goes idle, or closes.
    fn drive(
        c: &mut ClientSession,
        server: &mut std::slice::Iter<'_, &str>,
    ) -> (String, Vec<ClientEvent>) {
        run(c, server, true)
    }

    /// Drives `c` against the scripted `server` replies until they run out
    /// or the session closes (or, with `stop_idle`, goes idle).
    fn run(
        c: &mut ClientSession,
        server: &mut std::slice::Iter<'_, &str>,
        stop_idle: bool,
    ) -> (String, Vec<ClientEvent>) {
        let (mut sent, mut events) = (String::new(), Vec::new());
        loop {
            if stop_idle && c.is_idle() {
                break;
            }
            match c.next() {
                Ok(e) => events.push(e),
                Err(Interrupt::Output(b)) => sent.push_str(&String::from_utf8(b).unwrap()),
                Err(Interrupt::NeedInput) => match server.next() {
                    Some(s) => c.enqueue_input(Duration::ZERO, s.as_bytes()),
                    None => break,
                },
                Err(Interrupt::Close) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        (sent, events)
    }

    #[test]
    fn a_kept_connection_takes_another_message_after_rset() {
        let mut cfg = ClientConfig::new("client.example");
        cfg.keep_open = true;
        let mut c = ClientSession::new(cfg, vec![msg()], Duration::ZERO);
        let server = [
            "220 hi\r\n",
            "250-mx\r\n250 PIPELINING\r\n",
            "250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n",
            "250 queued\r\n",
            "250 reset\r\n",
            "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            "250 queued 2\r\n",
            "221 bye\r\n",
        ];
        let mut it = server.iter();
        let (sent, events) = drive(&mut c, &mut it);
        assert!(c.is_idle(), "no QUIT after the last message: {sent}");
        assert!(!sent.contains("QUIT"));
        assert!(matches!(events.last(), Some(ClientEvent::Message(r)) if r.index == 0));
        assert!(c.reuse(msg(), Duration::from_secs(1)).is_ok());
        assert!(!c.is_idle());
        assert!(
            c.reuse(msg(), Duration::from_secs(1)).is_err(),
            "one at a time"
        );
        let (sent, events) = drive(&mut c, &mut it);
        assert!(sent.starts_with("RSET\r\nMAIL FROM:"), "{sent}");
        match events.as_slice() {
            [ClientEvent::Message(r)] => {
                assert_eq!(r.index, 1);
                assert_eq!(r.data.as_ref().map(Reply::code), Some(250));
            }
            other => panic!("{other:?}"),
        }
        c.end();
        let (sent, _) = drive(&mut c, &mut it);
        assert_eq!(sent, "QUIT\r\n");
        assert!(!c.is_idle());
    }

    #[test]
    fn a_kept_connection_refusing_rset_fails_before_mail() {
        let mut cfg = ClientConfig::new("client.example");
        cfg.keep_open = true;
        let mut c = ClientSession::new(cfg, vec![msg()], Duration::ZERO);
        let server = [
            "220 hi\r\n",
            "250 mx\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 queued\r\n",
            "421 4.4.2 idle too long\r\n",
        ];
        let mut it = server.iter();
        drive(&mut c, &mut it);
        assert!(c.is_idle());
        c.reuse(msg(), Duration::ZERO).unwrap();
        let (sent, events) = drive(&mut c, &mut it);
        assert!(!sent.contains("MAIL"), "{sent}");
        assert!(matches!(
            events.as_slice(),
            [ClientEvent::Failed(ClientError::Refused {
                stage: "RSET",
                ..
            })]
        ));
    }

    fn msg() -> OutgoingMessage {
        OutgoingMessage {
            from: "user2@mail.csuvnetwork.com".into(),
            to: vec!["user1@csuvnetwork.com".into(), "x@nowhere.invalid".into()],
            body: b"Subject: t\r\n\r\n.hi\r\n".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn helo_fallback_no_pipelining_auth_login() {
        let mut cfg = ClientConfig::new("client.test");
        cfg.credentials = Some(("user2".into(), Secret::new("user2".into())));
        let (sent, events) = script(
            cfg.clone(),
            vec![msg()],
            &[
                "220 mx ESMTP\r\n",
                "250-mx\r\n250 AUTH LOGIN\r\n",
                "334 VXNlcm5hbWU6\r\n",
                "334 UGFzc3dvcmQ6\r\n",
                "235 2.7.0 Authentication successful\r\n",
                "250 2.1.0 Ok\r\n",
                "250 2.1.5 Ok\r\n",
                "550 5.1.1 unknown\r\n",
                "354 go\r\n",
                "250 2.0.0 Ok: queued as X\r\n",
                "221 2.0.0 Bye\r\n",
            ],
        );
        assert_eq!(
            sent,
            "EHLO client.test\r\nAUTH LOGIN\r\ndXNlcjI=\r\ndXNlcjI=\r\nMAIL FROM:<user2@mail.csuvnetwork.com>\r\nRCPT TO:<user1@csuvnetwork.com>\r\nRCPT TO:<x@nowhere.invalid>\r\nDATA\r\nSubject: t\r\n\r\n..hi\r\n.\r\nQUIT\r\n"
        );
        assert!(events.contains(&ClientEvent::Authenticated));
        let report = events
            .iter()
            .find_map(|e| match e {
                ClientEvent::Message(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert!(report.accepted());
        assert_eq!(report.recipients[1].1.code(), 550);
        // HELO fallback and a refused AUTH mechanism list.
        let (sent, events) = script(
            cfg,
            vec![msg()],
            &[
                "220 mx\r\n",
                "502 5.5.2 no\r\n",
                "250 mx\r\n",
                "221 Bye\r\n",
            ],
        );
        assert_eq!(sent, "EHLO client.test\r\nHELO client.test\r\nQUIT\r\n");
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Failed(ClientError::NoAuthMechanism))
        );
    }

    #[test]
    fn pipelining_all_rejected_and_rset() {
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![msg()],
            &[
                "220 mx\r\n",
                "250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
                "250 2.1.0 Ok\r\n550 a\r\n550 b\r\n554 5.5.1 Error: no valid recipients\r\n",
                "221 Bye\r\n",
            ],
        );
        assert_eq!(
            sent,
            "EHLO c\r\nMAIL FROM:<user2@mail.csuvnetwork.com> SIZE=19\r\nRCPT TO:<user1@csuvnetwork.com>\r\nRCPT TO:<x@nowhere.invalid>\r\nDATA\r\nQUIT\r\n"
        );
        let ClientEvent::Message(r) = &events[1] else {
            panic!("{events:?}")
        };
        assert!(!r.accepted());
        assert_eq!(r.data.as_ref().unwrap().code(), 554);
        // Without pipelining, all refused: RSET instead of DATA.
        let mut cfg = ClientConfig::new("c");
        cfg.pipelining = false;
        let (sent, _) = script(
            cfg,
            vec![msg()],
            &[
                "220 mx\r\n",
                "250 mx\r\n",
                "250 Ok\r\n",
                "550 a\r\n",
                "550 b\r\n",
                "250 Ok\r\n",
                "221 Bye\r\n",
            ],
        );
        assert!(
            sent.ends_with("RCPT TO:<x@nowhere.invalid>\r\nRSET\r\nQUIT\r\n"),
            "{sent}"
        );
    }

    #[test]
    fn declares_8bitmime_and_smtputf8() {
        let m = OutgoingMessage {
            from: "用户@例子.广告".into(),
            to: vec!["a@b.c".into()],
            body: "Subject: ü\r\n\r\nü\r\n".as_bytes().to_vec(),
            ..Default::default()
        };
        let (sent, _) = script(
            ClientConfig::new("c"),
            vec![m],
            &[
                "220 mx\r\n",
                "250-mx\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                "250 Ok\r\n",
                "250 Ok\r\n",
                "354 go\r\n",
                "250 Ok\r\n",
                "221 Bye\r\n",
            ],
        );
        assert!(
            sent.contains("MAIL FROM:<用户@例子.广告> BODY=8BITMIME SMTPUTF8\r\n"),
            "{sent}"
        );
    }

    fn dsn_msg() -> OutgoingMessage {
        OutgoingMessage {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into(), "g@h.i".into()],
            body: b"Subject: t\r\n\r\nhi\r\n".to_vec(),
            ret: Some("HDRS".into()),
            envid: Some("QQ314159".into()),
            rcpt_dsn: vec![
                RcptDsn {
                    notify: Some("SUCCESS,FAILURE".into()),
                    orcpt: Some("rfc822;D@e.f".into()),
                },
                RcptDsn {
                    notify: Some("NEVER bad".into()),
                    orcpt: None,
                },
            ],
        }
    }

    const OK_REST: [&str; 5] = [
        "250 Ok\r\n",
        "250 Ok\r\n",
        "250 Ok\r\n",
        "354 go\r\n",
        "250 Ok\r\n",
    ];

    fn with_ok(ehlo: &'static str) -> Vec<&'static str> {
        let mut v = vec!["220 mx\r\n", ehlo];
        v.extend(OK_REST);
        v.push("221 Bye\r\n");
        v
    }

    #[test]
    fn dsn_parameters_only_when_offered() {
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![dsn_msg()],
            &with_ok("250-mx\r\n250 DSN\r\n"),
        );
        assert!(
            sent.contains(
                "MAIL FROM:<a@b.c> RET=HDRS ENVID=QQ314159\r\n\
                 RCPT TO:<d@e.f> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;D@e.f\r\n\
                 RCPT TO:<g@h.i>\r\nDATA\r\n"
            ),
            "{sent}"
        );
        assert!(matches!(&events[1], ClientEvent::Message(r) if r.dsn_offered && r.accepted()));
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![dsn_msg()],
            &with_ok("250 mx\r\n"),
        );
        assert!(
            sent.contains("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@h.i>\r\n"),
            "{sent}"
        );
        assert!(matches!(&events[1], ClientEvent::Message(r) if !r.dsn_offered));
    }

    #[test]
    fn size_limit_refuses_before_mail() {
        let mut big = msg();
        big.body = vec![b'x'; 200];
        big.body.extend_from_slice(b"\r\n");
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![big, msg()],
            &[
                "220 mx\r\n",
                "250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
                "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n",
                "250 Ok\r\n",
                "221 Bye\r\n",
            ],
        );
        // The big one is never offered; the next one is, with SIZE=.
        assert!(
            sent.starts_with("EHLO c\r\nMAIL FROM:<user2@mail.csuvnetwork.com> SIZE=19\r\n"),
            "{sent}"
        );
        let ClientEvent::Message(r) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(
            r.not_sent,
            Some(NotSent::TooBig {
                size: 202,
                limit: 100
            })
        );
        assert_eq!(r.mail.code(), 0);
        assert!(matches!(&events[2], ClientEvent::Message(r) if r.accepted()));
        // SIZE 0, or without a number: no limit.
        for ehlo in ["250-mx\r\n250 SIZE 0\r\n", "250-mx\r\n250 SIZE\r\n"] {
            let mut m = dsn_msg();
            m.body = vec![b'y'; 500];
            let (sent, events) = script(ClientConfig::new("c"), vec![m], &with_ok(ehlo));
            assert!(sent.contains("MAIL FROM:<a@b.c> SIZE=500\r\n"), "{sent}");
            assert!(matches!(&events[1], ClientEvent::Message(r) if r.not_sent.is_none()));
        }
    }

    #[test]
    fn smtputf8_needed_but_not_offered() {
        let mut m = dsn_msg();
        m.to[1] = "用户@例子.广告".into();
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![m.clone()],
            &["220 mx\r\n", "250-mx\r\n250 8BITMIME\r\n", "221 Bye\r\n"],
        );
        assert_eq!(sent, "EHLO c\r\nQUIT\r\n");
        assert!(
            matches!(&events[1], ClientEvent::Message(r) if r.not_sent == Some(NotSent::NeedsSmtputf8))
        );
        // A UTF-8 header with an ASCII envelope: SMTPUTF8 when offered,
        // nothing otherwise.
        let mut m = dsn_msg();
        m.body = "Subject: ü\r\n\r\nhi\r\n".as_bytes().to_vec();
        let (sent, _) = script(
            ClientConfig::new("c"),
            vec![m.clone()],
            &with_ok("250-mx\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"),
        );
        assert!(
            sent.contains("MAIL FROM:<a@b.c> BODY=8BITMIME SMTPUTF8\r\n"),
            "{sent}"
        );
        let (sent, _) = script(
            ClientConfig::new("c"),
            vec![m],
            &with_ok("250-mx\r\n250 8BITMIME\r\n"),
        );
        assert!(
            sent.contains("MAIL FROM:<a@b.c> BODY=8BITMIME\r\n"),
            "{sent}"
        );
    }

    #[test]
    fn eight_bit_body_downgraded_without_8bitmime() {
        let mut m = dsn_msg();
        m.body = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n"
            .as_bytes()
            .to_vec();
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![m.clone()],
            &with_ok("250-mx\r\n250 SIZE 1000\r\n"),
        );
        let want = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                    Gr=C3=BC=C3=9Fe\r\n.\r\n";
        assert!(sent.contains(want), "{sent}");
        assert!(
            sent.contains(&format!("MAIL FROM:<a@b.c> SIZE={}\r\n", want.len() - 3)),
            "{sent}"
        );
        assert!(matches!(&events[1], ClientEvent::Message(r) if r.downgraded));
        // Conversion off: sent as it is, without BODY=.
        let mut cfg = ClientConfig::new("c");
        cfg.mime_downgrade = false;
        let (sent, _) = script(cfg, vec![m], &with_ok("250 mx\r\n"));
        assert!(sent.contains("MAIL FROM:<a@b.c>\r\n"), "{sent}");
        assert!(sent.contains("Grüße\r\n.\r\n"), "{sent}");
    }

    #[test]
    fn failures_and_timeouts() {
        let (sent, events) = script(
            ClientConfig::new("c"),
            vec![],
            &["554 go away\r\n", "221 Bye\r\n"],
        );
        assert_eq!(sent, "QUIT\r\n");
        assert!(matches!(
            events[0],
            ClientEvent::Failed(ClientError::Refused {
                stage: "connection",
                ..
            })
        ));
        let (_, events) = script(ClientConfig::new("c"), vec![], &["garbage\r\n"]);
        assert_eq!(
            events,
            vec![ClientEvent::Failed(ClientError::Protocol(
                ReplyError::Malformed
            ))]
        );
        let mut c = ClientSession::new(ClientConfig::new("c"), vec![], Duration::ZERO);
        assert_eq!(c.next(), Err(Interrupt::NeedInput));
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(300)));
        c.handle_timeout(Duration::from_secs(299));
        assert_eq!(c.next(), Err(Interrupt::NeedInput));
        c.handle_timeout(Duration::from_secs(300));
        assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::Timeout)));
        assert_eq!(c.next(), Err(Interrupt::Close));
        assert_eq!(c.capabilities(), &[] as &[String]);
    }

    // ---- STARTTLS (RFC 3207) ----

    /// Like `script`, with a host that answers StartTls at once ("<TLS>"
    /// marks the handshake in `sent`); `bytewise` feeds every server octet
    /// on its own.
    fn tls_script(
        cfg: ClientConfig,
        msgs: Vec<OutgoingMessage>,
        server: &[&str],
        bytewise: bool,
    ) -> (String, Vec<ClientEvent>, ClientSession) {
        let mut c = ClientSession::new(cfg, msgs, Duration::ZERO);
        let mut input: VecDeque<Vec<u8>> = server
            .iter()
            .flat_map(|s| {
                if bytewise {
                    s.bytes().map(|b| vec![b]).collect::<Vec<_>>()
                } else {
                    vec![s.as_bytes().to_vec()]
                }
            })
            .collect();
        let (mut sent, mut events) = (String::new(), Vec::new());
        loop {
            match c.next() {
                Ok(ClientEvent::StartTls) => {
                    assert_eq!(c.next(), Err(Interrupt::AwaitingHost));
                    assert_eq!(c.poll_timeout(), None);
                    sent.push_str("<TLS>");
                    c.tls_established().unwrap();
                    events.push(ClientEvent::StartTls);
                }
                Ok(e) => events.push(e),
                Err(Interrupt::Output(b)) => sent.push_str(&String::from_utf8(b).unwrap()),
                Err(Interrupt::NeedInput) => match input.pop_front() {
                    Some(s) => c.enqueue_input(Duration::ZERO, &s),
                    None => break,
                },
                Err(Interrupt::Close) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        (sent, events, c)
    }

    fn one_rcpt() -> OutgoingMessage {
        OutgoingMessage {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            body: b"hi\r\n".to_vec(),
            ..Default::default()
        }
    }

    fn tls_cfg(tls: ClientTls) -> ClientConfig {
        let mut cfg = ClientConfig::new("c");
        cfg.tls = tls;
        cfg.credentials = Some(("user1".into(), Secret::new("pw".into())));
        cfg
    }

    const AFTER_TLS_EHLO: &str = "250-mx\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n";

    #[test]
    fn starttls_then_ehlo_auth_and_mail_inside_tls() {
        let server = [
            "220 mx ESMTP\r\n",
            "250-mx\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH CRAM-MD5\r\n",
            "220 2.0.0 Ready to start TLS\r\n",
            AFTER_TLS_EHLO,
            "235 2.7.0 Authentication successful\r\n",
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
            "250 2.0.0 Ok: queued as Q\r\n",
            "221 2.0.0 Bye\r\n",
        ];
        let plain = sasl::plain("", "user1", "pw");
        let want = format!(
            "EHLO c\r\nSTARTTLS\r\n<TLS>EHLO c\r\nAUTH PLAIN {plain}\r\n\
             MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n"
        );
        for tls in [ClientTls::Required, ClientTls::Opportunistic] {
            for bytewise in [false, true] {
                let (sent, events, c) =
                    tls_script(tls_cfg(tls), vec![one_rcpt()], &server, bytewise);
                assert_eq!(sent, want, "{tls:?} {bytewise}");
                assert!(c.tls_active());
                assert_eq!(events[0], ClientEvent::StartTls);
                assert_eq!(
                    events[1],
                    ClientEvent::Ready {
                        extended: true,
                        capabilities: vec!["PIPELINING".into(), "AUTH PLAIN LOGIN".into()],
                    }
                );
                assert_eq!(events[2], ClientEvent::Authenticated);
                assert!(matches!(&events[3], ClientEvent::Message(r) if r.accepted()));
                assert_eq!(events.len(), 4);
            }
        }
    }

    #[test]
    fn plaintext_after_the_220_is_discarded() {
        // A man in the middle appends replies behind the 220: they must
        // not be read as the answer to the EHLO inside TLS.
        let (sent, events, _) = tls_script(
            tls_cfg(ClientTls::Required),
            vec![],
            &[
                "220 mx\r\n",
                "250-mx\r\n250 STARTTLS\r\n",
                "220 2.0.0 Ready\r\n250-evil\r\n250 AUTH PLAIN\r\n235 ok\r\n",
                AFTER_TLS_EHLO,
                "235 2.7.0 Authentication successful\r\n",
                "221 Bye\r\n",
            ],
            false,
        );
        assert!(
            sent.starts_with("EHLO c\r\nSTARTTLS\r\n<TLS>EHLO c\r\nAUTH PLAIN "),
            "{sent}"
        );
        assert_eq!(
            events[1],
            ClientEvent::Ready {
                extended: true,
                capabilities: vec!["PIPELINING".into(), "AUTH PLAIN LOGIN".into()],
            }
        );
    }

    #[test]
    fn required_tls_not_offered_or_refused_fails_before_auth() {
        let (sent, events, c) = tls_script(
            tls_cfg(ClientTls::Required),
            vec![one_rcpt()],
            &["220 mx\r\n", "250-mx\r\n250 AUTH PLAIN\r\n", "221 Bye\r\n"],
            false,
        );
        assert_eq!(sent, "EHLO c\r\nQUIT\r\n");
        assert_eq!(
            events,
            vec![ClientEvent::Failed(ClientError::TlsUnavailable {
                reply: None
            })]
        );
        assert!(!c.tls_active());
        let refusal = "454 4.7.0 TLS not available due to local problem\r\n";
        let (sent, events, _) = tls_script(
            tls_cfg(ClientTls::Required),
            vec![one_rcpt()],
            &[
                "220 mx\r\n",
                "250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n",
                refusal,
                "221 Bye\r\n",
            ],
            true,
        );
        assert_eq!(sent, "EHLO c\r\nSTARTTLS\r\nQUIT\r\n");
        let reply = Reply::parse(refusal.as_bytes()).unwrap().0;
        let err = ClientError::TlsUnavailable { reply: Some(reply) };
        assert_eq!(
            err.to_string(),
            "TLS required but STARTTLS refused: 454 4.7.0 TLS not available due to local problem"
        );
        assert_eq!(events, vec![ClientEvent::Failed(err)]);
        // EHLO refused: HELO could not offer STARTTLS either.
        let (sent, events, _) = tls_script(
            tls_cfg(ClientTls::Required),
            vec![],
            &["220 mx\r\n", "502 5.5.2 no\r\n", "221 Bye\r\n"],
            false,
        );
        assert_eq!(sent, "EHLO c\r\nQUIT\r\n");
        assert_eq!(
            events,
            vec![ClientEvent::Failed(ClientError::TlsUnavailable {
                reply: None
            })]
        );
    }

    #[test]
    fn opportunistic_tls_goes_on_in_plaintext() {
        // Not offered.
        let (sent, events, c) = tls_script(
            tls_cfg(ClientTls::Opportunistic),
            vec![],
            &[
                "220 mx\r\n",
                "250-mx\r\n250 AUTH PLAIN\r\n",
                "235 ok\r\n",
                "221 Bye\r\n",
            ],
            false,
        );
        assert!(sent.starts_with("EHLO c\r\nAUTH PLAIN "), "{sent}");
        assert!(events.contains(&ClientEvent::Authenticated));
        assert!(!c.tls_active());
        // Refused: the first EHLO's capabilities are used.
        let (sent, events, c) = tls_script(
            tls_cfg(ClientTls::Opportunistic),
            vec![],
            &[
                "220 mx\r\n",
                "250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n",
                "454 4.7.0 TLS not available\r\n",
                "334 VXNlcm5hbWU6\r\n",
                "334 UGFzc3dvcmQ6\r\n",
                "235 ok\r\n",
                "221 Bye\r\n",
            ],
            false,
        );
        assert!(
            sent.starts_with("EHLO c\r\nSTARTTLS\r\nAUTH LOGIN\r\n"),
            "{sent}"
        );
        assert_eq!(
            events[0],
            ClientEvent::Ready {
                extended: true,
                capabilities: vec!["STARTTLS".into(), "AUTH LOGIN".into()],
            }
        );
        assert!(!c.tls_active());
        // 421 to STARTTLS ends the session.
        let (_, events, _) = tls_script(
            tls_cfg(ClientTls::Opportunistic),
            vec![],
            &[
                "220 mx\r\n",
                "250-mx\r\n250 STARTTLS\r\n",
                "421 4.3.2 shutting down\r\n",
            ],
            false,
        );
        assert!(matches!(
            events[0],
            ClientEvent::Failed(ClientError::Refused {
                stage: "STARTTLS",
                ..
            })
        ));
    }

    #[test]
    fn auth_only_inside_tls_when_required() {
        let mut cfg = tls_cfg(ClientTls::Opportunistic);
        cfg.auth_requires_tls = true;
        let (sent, events, _) = tls_script(
            cfg.clone(),
            vec![one_rcpt()],
            &["220 mx\r\n", "250-mx\r\n250 AUTH PLAIN\r\n", "221 Bye\r\n"],
            false,
        );
        assert_eq!(sent, "EHLO c\r\nQUIT\r\n");
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Failed(ClientError::AuthNeedsTls))
        );
        let (sent, events, _) = tls_script(
            cfg,
            vec![],
            &[
                "220 mx\r\n",
                "250-mx\r\n250 STARTTLS\r\n",
                "220 go\r\n",
                AFTER_TLS_EHLO,
                "235 ok\r\n",
                "221 Bye\r\n",
            ],
            false,
        );
        assert!(sent.contains("<TLS>EHLO c\r\nAUTH PLAIN "), "{sent}");
        assert!(events.contains(&ClientEvent::Authenticated));
    }

    #[test]
    fn no_starttls_when_off_or_already_tls() {
        let server = [
            "220 mx\r\n",
            "250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n",
            "235 ok\r\n",
            "221 Bye\r\n",
        ];
        let (sent, _, c) = tls_script(tls_cfg(ClientTls::None), vec![], &server, false);
        assert!(sent.starts_with("EHLO c\r\nAUTH PLAIN "), "{sent}");
        assert!(!c.tls_active());
        // Implicit TLS (port 465): STARTTLS is never sent.
        let mut cfg = tls_cfg(ClientTls::Required);
        cfg.tls_active = true;
        let (sent, events, c) = tls_script(cfg, vec![], &server, false);
        assert!(sent.starts_with("EHLO c\r\nAUTH PLAIN "), "{sent}");
        assert!(!events.contains(&ClientEvent::StartTls));
        assert!(c.tls_active());
        assert_eq!(ClientConfig::new("c").tls, ClientTls::None);
        assert_eq!(ClientTls::default(), ClientTls::None);
    }

    #[test]
    fn tls_established_only_after_the_event() {
        let mut c = ClientSession::new(tls_cfg(ClientTls::Required), vec![], Duration::ZERO);
        assert_eq!(c.tls_established(), Err(UsageError::NotAwaiting));
        c.enqueue_input(Duration::ZERO, b"220 mx\r\n250-mx\r\n250 STARTTLS\r\n");
        assert_eq!(
            c.next(),
            Err(Interrupt::Output(b"EHLO c\r\nSTARTTLS\r\n".to_vec()))
        );
        c.enqueue_input(Duration::ZERO, b"220 go\r\n");
        assert_eq!(c.next(), Ok(ClientEvent::StartTls));
        // Plaintext read before the handshake is never looked at.
        c.enqueue_input(Duration::ZERO, b"250 fake\r\n");
        assert_eq!(c.next(), Err(Interrupt::AwaitingHost));
        assert!(!c.tls_active());
        c.tls_established().unwrap();
        assert_eq!(c.tls_established(), Err(UsageError::NotAwaiting));
        assert!(c.tls_active() && mail_session::Session::tls_active(&c));
        assert_eq!(c.next(), Err(Interrupt::Output(b"EHLO c\r\n".to_vec())));
        assert_eq!(c.next(), Err(Interrupt::NeedInput));
    }
}
