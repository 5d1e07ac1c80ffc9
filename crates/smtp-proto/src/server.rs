//! The server session: a Sans-I/O ESMTP receiver.
//!
//! See the [crate docs](crate) for the driving loop and exactly when to call
//! each method.

use std::collections::VecDeque;
use std::time::Duration;

use mail_session::sasl::{b64_encode, Credentials, Mechanism, ServerExchange, ServerStep};
use mail_session::{
    BareLf, Direction, EntryKind, Frame, Framer, Interrupt, Transcript, TranscriptEntry,
};

use crate::command::{BodyType, Command, ForwardPath, MailParameters, RcptParameters, ReversePath};
use crate::reply::{write_line, Reply};

/// RFC 4954 section 4: an AUTH command line or SASL response may be up to
/// 12288 octets, more than the 512 of ordinary commands.
pub const SASL_LINE_LIMIT: usize = 12288;

/// Server configuration. [`ServerConfig::new`] gives Postfix-like defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Host name in the greeting, EHLO and 421 replies.
    pub hostname: String,
    /// Greeting text after the host name: `220 <hostname> <greeting>`.
    pub greeting: String,
    /// Message size limit in octets, advertised as `SIZE n`; 0 = none.
    pub max_message_size: u64,
    /// Recipients per transaction (`452 4.5.3` beyond).
    pub max_recipients: usize,
    /// Client errors before `421 4.7.0 ... too many errors` and close. A
    /// message accepted forgives the errors so far, as Postfix does.
    pub max_errors: u32,
    /// NOOP, RSET, VRFY, HELP, HELO and EHLO commands before each further
    /// one counts as an error (Postfix's `smtpd_junk_command_limit`), so a
    /// client cannot hold a session with them for ever; 0: no limit. A
    /// message accepted starts the count again.
    pub max_junk_commands: u32,
    /// Command line limit in octets, CRLF included (RFC 5321 section
    /// 4.5.3.1.4: at least 512, more with the parameters of the
    /// extensions offered).
    pub line_limit: usize,
    /// Bare LF policy for command lines and DATA.
    pub bare_lf: BareLf,
    /// SASL mechanisms offered (empty: no AUTH).
    pub auth_mechanisms: Vec<Mechanism>,
    /// Submission policy: MAIL needs a successful AUTH first (530).
    pub auth_required: bool,
    /// Plaintext SASL mechanisms (PLAIN, LOGIN) only inside TLS (Postfix
    /// `smtpd_tls_auth_only`, Dovecot `disable_plaintext_auth`): before
    /// TLS, EHLO lists only the others (CRAM-MD5), and `AUTH PLAIN` or
    /// `AUTH LOGIN` gets `538 5.7.11` (RFC 4954 section 6).
    pub plaintext_auth_requires_tls: bool,
    /// Failed AUTH commands before `421 4.7.0` and close, against
    /// password guessing on one connection; 0: no limit.
    pub max_auth_failures: u32,
    /// The host can do TLS: STARTTLS is advertised until TLS is active.
    pub tls_available: bool,
    /// Nothing but EHLO, HELO, STARTTLS, NOOP, RSET, QUIT and HELP before
    /// TLS: the rest gets `530 5.7.0 Must issue a STARTTLS command first`
    /// and AUTH is not advertised (Postfix `smtpd_tls_security_level =
    /// encrypt`, RFC 3207 section 4). Meaningful with `tls_available`.
    pub tls_required: bool,
    /// The connection is TLS from its first octet (implicit TLS, the
    /// `submissions` port 465 of RFC 8314 section 3.3): STARTTLS is
    /// neither advertised nor accepted, and AUTH is offered as inside TLS.
    pub tls_active: bool,
    /// MAIL needs HELO/EHLO first (503), as RFC 5321 section 4.1.4 expects.
    pub require_helo: bool,
    /// Advertise and accept SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Advertise and accept CHUNKING / BDAT (RFC 3030).
    pub chunking: bool,
    /// Advertise and answer VRFY (RFC 5321 section 3.5.3), as Postfix
    /// does; off, VRFY gets `502 5.5.1` (Postfix's
    /// `disable_vrfy_command = yes`), so addresses cannot be probed.
    pub vrfy: bool,
    /// Advertise `DSN` (RFC 3461 section 4), as Postfix does: the host
    /// stores `RET=`, `ENVID=`, `NOTIFY=` and `ORCPT=` and honours them.
    /// Off, those parameters get `555` like any unknown one (section 4:
    /// they are only for a server that offers the extension).
    pub dsn: bool,
    /// Waiting for a command (RFC 5321 section 4.5.3.2.7: 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for more DATA or BDAT octets (section 4.5.3.2.5: 3 minutes).
    pub data_timeout: Duration,
    /// Total time for one command line, from its first octet to its line
    /// end. `command_timeout` restarts with every octet, so a client
    /// trickling one octet a minute would hold the connection for ever
    /// (slowloris); this budget does not restart.
    pub command_line_timeout: Duration,
    /// Total time from the greeting to the end of the first command line:
    /// a connection that never says anything is let go early.
    pub first_command_timeout: Duration,
    /// Record a transcript ([`ServerSession::poll_transcript`]).
    pub record_transcript: bool,
}

impl ServerConfig {
    /// Defaults: 10240000-octet messages, 1000 recipients, 20 errors,
    /// 3 failed AUTHs, 2048-octet lines, bare LF normalised, no AUTH, no
    /// TLS (and so no TLS policy), HELO required, SMTPUTF8, CHUNKING, VRFY and DSN on, 300 s / 180 s
    /// timeouts; 300 s budgets for a command line and for the first command
    /// (section 4.5.3.2.7's five minutes per command, as a total).
    pub fn new(hostname: impl Into<String>) -> Self {
        ServerConfig {
            hostname: hostname.into(),
            greeting: "ESMTP".into(),
            max_message_size: 10_240_000,
            max_recipients: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            // RFC 5321 section 4.5.3.1.4's 512 octets grow with the
            // extensions offered: AUTH= (RFC 4954 section 5) and ORCPT=
            // (RFC 3461 section 4.2) up to 500 more each, ENVID= up to
            // 100, plus SIZE, BODY, RET, NOTIFY, SMTPUTF8. Postfix's
            // line_length_limit, 2048, covers them all.
            line_limit: 2048,
            bare_lf: BareLf::Normalize,
            auth_mechanisms: Vec::new(),
            auth_required: false,
            plaintext_auth_requires_tls: false,
            max_auth_failures: 3,
            tls_available: false,
            tls_required: false,
            tls_active: false,
            require_helo: true,
            smtputf8: true,
            chunking: true,
            vrfy: true,
            dsn: true,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            command_line_timeout: Duration::from_secs(300),
            first_command_timeout: Duration::from_secs(300),
            record_transcript: false,
        }
    }
}

/// The envelope of a complete message, given with [`Event::MessageEnd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `MAIL FROM`.
    pub from: ReversePath<'static>,
    /// MAIL parameters.
    pub params: MailParameters<'static>,
    /// Accepted recipients, in order, with their parameters.
    pub recipients: Vec<(ForwardPath<'static>, RcptParameters<'static>)>,
    /// HELO/EHLO argument.
    pub helo: Option<String>,
    /// EHLO (true) or HELO (false).
    pub esmtp: bool,
    /// Authenticated user, if any.
    pub authenticated: Option<String>,
    /// TLS was active (after STARTTLS, or implicit TLS).
    pub tls: bool,
    /// Body size in octets as handed over.
    pub size: u64,
    /// Received with BDAT (CHUNKING) rather than DATA.
    pub chunked: bool,
}

impl Envelope {
    /// The `with` keyword of the `Received:` field (RFC 5321 section
    /// 4.4, registry of RFC 3848): `ESMTP`, `ESMTPS` (TLS), `ESMTPA`
    /// (AUTH), `ESMTPSA` (both); `UTF8SMTP`, `UTF8SMTPS`, `UTF8SMTPA`,
    /// `UTF8SMTPSA` for a `MAIL ... SMTPUTF8` transaction (RFC 6531
    /// section 3.7.3); `SMTP` after HELO, which RFC 3848 gives no TLS or
    /// AUTH variant (AUTH needs EHLO anyway).
    pub fn protocol(&self) -> &'static str {
        let utf8 = self.params.smtputf8;
        match (self.esmtp, utf8, self.tls, self.authenticated.is_some()) {
            (false, _, _, _) => "SMTP",
            (true, false, false, false) => "ESMTP",
            (true, false, false, true) => "ESMTPA",
            (true, false, true, false) => "ESMTPS",
            (true, false, true, true) => "ESMTPSA",
            (true, true, false, false) => "UTF8SMTP",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, true, true) => "UTF8SMTPSA",
        }
    }
}

/// Why a message body that was started ([`Event::MessageStart`]) will not
/// be completed: the host discards what it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// It exceeded the size limit (552 follows at its end).
    TooBig,
    /// It contained a bare LF under [`BareLf::Reject`] (550 sent).
    BareLf,
    /// RSET, EHLO/HELO or a BDAT error ended the transaction.
    Reset,
    /// The session timed out or closed.
    Closed,
}

/// Something the host learns or must decide. Decision events say which
/// method answers them; until it is called, [`ServerSession::next`] returns
/// [`Interrupt::AwaitingHost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// HELO or EHLO accepted (information).
    Helo {
        /// The client's argument.
        domain: String,
        /// EHLO (true) or HELO.
        extended: bool,
    },
    /// Check credentials; answer with [`ServerSession::auth_result`].
    Auth(Credentials),
    /// CRAM-MD5 needs a fresh challenge such as `<random.time@host>`;
    /// answer with [`ServerSession::provide_challenge`].
    AuthChallenge,
    /// Accept a sender; answer with [`ServerSession::decide`].
    Mail {
        /// Sender.
        from: ReversePath<'static>,
        /// Parameters.
        params: MailParameters<'static>,
    },
    /// Accept a recipient; answer with [`ServerSession::decide`].
    Rcpt {
        /// Recipient.
        to: ForwardPath<'static>,
        /// Parameters.
        params: RcptParameters<'static>,
    },
    /// VRFY; answer with [`ServerSession::decide`]: `Accept` sends
    /// `252 2.0.0 <argument>`, `Reject(reply)` sends `reply`.
    Vrfy {
        /// The argument as given.
        argument: String,
    },
    /// A message body begins (after 354 or with the first BDAT): open a
    /// temporary file (information).
    MessageStart,
    /// Body octets, dot-unstuffed, CRLF line ends (information).
    BodyChunk(Vec<u8>),
    /// The body is complete: make it durable, then answer with
    /// [`ServerSession::message_result`]. 250 is sent only then.
    MessageEnd(Envelope),
    /// The body begun will not complete: discard it (information).
    MessageAborted(AbortReason),
    /// `220 2.0.0 Ready to start TLS` has been handed out: do the TLS
    /// handshake, then call [`ServerSession::tls_established`] (or drop the
    /// connection if it fails).
    StartTls,
}

/// The host's verdict on MAIL, RCPT or VRFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept (`250 2.1.0 Ok`, `250 2.1.5 Ok`, `252 2.0.0 <arg>`).
    Accept,
    /// Send this reply instead (e.g. `550 5.1.1 ... User unknown`).
    Reject(Reply),
}

/// The host's answer to a credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// `235 2.7.0 Authentication successful`.
    Success,
    /// `535 5.7.8 Error: authentication failed`.
    Failure,
    /// `454 4.7.0 Temporary authentication failure`.
    TemporaryFailure,
}

/// The host's answer to [`Event::MessageEnd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The message is durable: `250 2.0.0 Ok: queued as <queue_id>`.
    Accepted {
        /// Identifier for the reply and the logs.
        queue_id: String,
    },
    /// Not stored: send this reply (e.g. `451 4.3.0 Error: queue file
    /// write error`).
    Failed(Reply),
}

/// Misuse of the answer methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The method does not answer the pending event (or none is pending).
    #[error("no matching decision is pending")]
    NotAwaiting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaiting {
    Auth(String),
    Challenge,
    Mail(ReversePath<'static>, MailParameters<'static>),
    Rcpt(ForwardPath<'static>, RcptParameters<'static>),
    Vrfy(String),
    Message,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    Command,
    Sasl(ServerExchange),
    Data,
    Chunk {
        size: u64,
        last: bool,
        error: Option<Reply>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Body {
    size: u64,
    too_big: bool,
    chunked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Transaction {
    from: ReversePath<'static>,
    params: MailParameters<'static>,
    recipients: Vec<(ForwardPath<'static>, RcptParameters<'static>)>,
    body: Option<Body>,
}

/// What to do to the framer once a frame's borrow has ended.
enum After {
    Nothing,
    ExpectData,
    ExpectChunk(u64),
    DiscardInput,
}

#[derive(Debug)]
struct Core {
    cfg: ServerConfig,
    out: Vec<u8>,
    flush: bool,
    events: VecDeque<Event>,
    transcript: Transcript,
    awaiting: Option<Awaiting>,
    input: Input,
    helo: Option<String>,
    esmtp: bool,
    user: Option<String>,
    auth_failures: u32,
    tls: bool,
    tx: Option<Transaction>,
    errors: u32,
    /// NOOP, RSET, VRFY, HELP, HELO and EHLO since the start or the last
    /// accepted message.
    junk: u32,
    last_input: Duration,
    /// When the session started (greeting), for `first_command_timeout`.
    started: Duration,
    /// A command line has been received.
    commanded: bool,
    /// When the first octet of the partial line now buffered arrived.
    line_started: Option<Duration>,
    closing: bool,
    closed: bool,
    eof: bool,
}

/// A Sans-I/O SMTP server session for one connection.
#[derive(Debug)]
pub struct ServerSession {
    framer: Framer,
    core: Core,
}

impl ServerSession {
    /// Start a session; the greeting is the first output. `now` is the
    /// current time on the host's clock (any epoch, e.g. time since the
    /// process started), the same clock as for every later call.
    pub fn new(config: ServerConfig, now: Duration) -> Self {
        let cap = config.line_limit.max(SASL_LINE_LIMIT);
        let framer = Framer::new(cap, config.bare_lf);
        let record = config.record_transcript;
        let tls = config.tls_active;
        let mut core = Core {
            cfg: config,
            out: Vec::new(),
            flush: false,
            events: VecDeque::new(),
            transcript: Transcript::new(record),
            awaiting: None,
            input: Input::Command,
            helo: None,
            esmtp: false,
            user: None,
            auth_failures: 0,
            tls,
            tx: None,
            errors: 0,
            junk: 0,
            last_input: now,
            started: now,
            commanded: false,
            line_started: None,
            closing: false,
            closed: false,
            eof: false,
        };
        let greeting = format!("{} {}", core.cfg.hostname, core.cfg.greeting);
        core.reply_plain(220, greeting.trim_end());
        core.flush = true;
        ServerSession { framer, core }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.core.cfg
    }

    /// Hand over bytes read from the client, with the current time (it
    /// restarts the idle timer). Call it after [`Interrupt::NeedInput`];
    /// input given while a decision is pending is buffered (pipelining).
    /// Input after close is ignored.
    pub fn enqueue_input(&mut self, now: Duration, bytes: &[u8]) {
        if self.core.closing || self.core.closed || self.core.eof {
            return;
        }
        self.core.last_input = now;
        if self.framer.buffered() == 0 && !bytes.is_empty() {
            self.core.line_started = Some(now);
        }
        self.framer.push(bytes);
    }

    /// The client closed its side (read returned 0). Input already
    /// enqueued is still processed (a complete pipelined message is still
    /// delivered); then a message left unfinished is aborted
    /// ([`Event::MessageAborted`]) and the session closes.
    pub fn input_closed(&mut self) {
        self.core.eof = true;
    }

    /// Drive the session: returns the next event, or what the host must do
    /// first. Call it in a loop; see the crate docs.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Event, Interrupt> {
        loop {
            let core = &mut self.core;
            if core.flush {
                core.flush = false;
                if !core.out.is_empty() {
                    return Err(Interrupt::Output(std::mem::take(&mut core.out)));
                }
            }
            if let Some(e) = core.events.pop_front() {
                return Ok(e);
            }
            if core.closed {
                return Err(Interrupt::Close);
            }
            if core.closing {
                if !core.out.is_empty() {
                    return Err(Interrupt::Output(std::mem::take(&mut core.out)));
                }
                core.closed = true;
                return Err(Interrupt::Close);
            }
            if core.awaiting.is_some() {
                return Err(Interrupt::AwaitingHost);
            }
            let after = match self.framer.next_frame() {
                Frame::NeedMore if core.eof => {
                    // The client is gone: whatever it started is dropped.
                    core.abort_body(AbortReason::Closed);
                    core.closing = true;
                    After::Nothing
                }
                Frame::NeedMore => {
                    // RFC 2920 section 3.2: flush when no more input is
                    // buffered.
                    if !core.out.is_empty() {
                        return Err(Interrupt::Output(std::mem::take(&mut core.out)));
                    }
                    return Err(Interrupt::NeedInput);
                }
                Frame::Line { line, bare_lf, len } => {
                    core.commanded = true;
                    core.on_line(line, bare_lf, len)
                }
                Frame::LineTooLong => core.on_line_too_long(),
                Frame::Data(bytes) | Frame::Chunk(bytes) => {
                    core.on_body(bytes);
                    After::Nothing
                }
                Frame::DataEnd { bare_lf } => core.on_data_end(bare_lf),
                Frame::ChunkEnd => core.on_chunk_end(),
            };
            match after {
                After::Nothing => {}
                After::ExpectData => self.framer.expect_data(),
                After::ExpectChunk(n) => self.framer.expect_chunk(n),
                After::DiscardInput => self.framer.discard_buffered(),
            }
            // What is left started no earlier than the last input.
            let rest = self.framer.buffered() > 0;
            self.core.line_started = rest.then_some(self.core.last_input);
        }
    }

    /// The next deadline on the host's clock, if the session is waiting for
    /// the client: call [`handle_timeout`](Self::handle_timeout) once it
    /// has passed. `None` while closed or waiting for the host.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let c = &self.core;
        if c.closing || c.closed || c.awaiting.is_some() {
            return None;
        }
        let t = match c.input {
            Input::Data | Input::Chunk { .. } => {
                return Some(c.last_input.saturating_add(c.cfg.data_timeout))
            }
            _ => c.cfg.command_timeout,
        };
        let mut deadline = c.last_input.saturating_add(t);
        if !c.commanded {
            deadline = deadline.min(c.started.saturating_add(c.cfg.first_command_timeout));
        }
        if let Some(first_octet) = c.line_started.filter(|_| self.framer.buffered() > 0) {
            deadline = deadline.min(first_octet.saturating_add(c.cfg.command_line_timeout));
        }
        Some(deadline)
    }

    /// Tell the session the time. If its deadline has passed it queues
    /// `421 4.4.2 <host> Error: timeout exceeded` and closes.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            let c = &mut self.core;
            c.abort_body(AbortReason::Closed);
            let text = format!("{} Error: timeout exceeded", c.cfg.hostname);
            c.reply(421, (4, 4, 2), &text);
            c.closing = true;
        }
    }

    /// Octets enqueued and not yet framed. After [`Interrupt::NeedInput`]
    /// this is at most a partial line (bounded by the line caps), so a host
    /// that reads only on `NeedInput` keeps memory bounded.
    pub fn buffered_input(&self) -> usize {
        self.framer.buffered()
    }

    /// True once [`Interrupt::Close`] has been returned.
    pub fn is_closed(&self) -> bool {
        self.core.closed
    }

    /// The authenticated user, if any.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.core.user.as_deref()
    }

    /// True after [`tls_established`](Self::tls_established).
    pub fn tls_active(&self) -> bool {
        self.core.tls
    }

    /// Next transcript entry (only with
    /// [`ServerConfig::record_transcript`]): what was received and sent,
    /// in order, one line per entry.
    pub fn poll_transcript(&mut self) -> Option<TranscriptEntry> {
        self.core.transcript.pop()
    }

    /// Answer [`Event::Mail`], [`Event::Rcpt`] or [`Event::Vrfy`].
    pub fn decide(&mut self, verdict: Verdict) -> Result<(), UsageError> {
        let c = &mut self.core;
        match c.awaiting.take() {
            Some(Awaiting::Mail(from, params)) => {
                match verdict {
                    Verdict::Accept => {
                        c.tx = Some(Transaction {
                            from,
                            params,
                            recipients: Vec::new(),
                            body: None,
                        });
                        c.reply(250, (2, 1, 0), "Ok");
                    }
                    Verdict::Reject(r) => c.reply_error(&r),
                }
                Ok(())
            }
            Some(Awaiting::Rcpt(to, params)) => {
                match verdict {
                    Verdict::Accept => {
                        if let Some(tx) = c.tx.as_mut() {
                            tx.recipients.push((to, params));
                        }
                        c.reply(250, (2, 1, 5), "Ok");
                    }
                    Verdict::Reject(r) => c.reply_error(&r),
                }
                Ok(())
            }
            Some(Awaiting::Vrfy(arg)) => {
                match verdict {
                    Verdict::Accept => c.reply(252, (2, 0, 0), &arg),
                    Verdict::Reject(r) => c.send_reply(&r),
                }
                c.count_junk();
                Ok(())
            }
            other => {
                c.awaiting = other;
                Err(UsageError::NotAwaiting)
            }
        }
    }

    /// Answer [`Event::Auth`].
    pub fn auth_result(&mut self, result: AuthResult) -> Result<(), UsageError> {
        let c = &mut self.core;
        match c.awaiting.take() {
            Some(Awaiting::Auth(user)) => {
                // The client waits for this reply.
                c.flush = true;
                match result {
                    AuthResult::Success => {
                        c.user = Some(user);
                        c.reply(235, (2, 7, 0), "Authentication successful");
                    }
                    AuthResult::Failure => {
                        c.reply(535, (5, 7, 8), "Error: authentication failed");
                        c.count_error();
                        c.count_auth_failure();
                    }
                    AuthResult::TemporaryFailure => {
                        c.reply(454, (4, 7, 0), "Temporary authentication failure");
                    }
                }
                Ok(())
            }
            other => {
                c.awaiting = other;
                Err(UsageError::NotAwaiting)
            }
        }
    }

    /// Answer [`Event::AuthChallenge`] with a fresh challenge (sent base64
    /// encoded in a `334` reply).
    pub fn provide_challenge(&mut self, challenge: &str) -> Result<(), UsageError> {
        let c = &mut self.core;
        match c.awaiting.take() {
            Some(Awaiting::Challenge) => {
                c.flush = true;
                c.reply_plain(334, &b64_encode(challenge.as_bytes()));
                c.input = Input::Sasl(ServerExchange::CramMd5(challenge.to_owned()));
                Ok(())
            }
            other => {
                c.awaiting = other;
                Err(UsageError::NotAwaiting)
            }
        }
    }

    /// Answer [`Event::MessageEnd`] once the message is durable (or not).
    pub fn message_result(&mut self, delivery: Delivery) -> Result<(), UsageError> {
        let c = &mut self.core;
        match c.awaiting.take() {
            Some(Awaiting::Message) => {
                c.tx = None;
                // The reply to the end of a message (DATA or BDAT LAST) is
                // never held back behind later pipelined commands.
                c.flush = true;
                match delivery {
                    Delivery::Accepted { queue_id } => {
                        // A client that delivers is forgiven its errors
                        // (Postfix: error and junk counts start again), so
                        // a connection reused for many messages, each
                        // with a rejected recipient, is not cut off.
                        c.errors = 0;
                        c.junk = 0;
                        c.reply(250, (2, 0, 0), &format!("Ok: queued as {queue_id}"));
                    }
                    Delivery::Failed(r) => c.send_reply(&r),
                }
                Ok(())
            }
            other => {
                c.awaiting = other;
                Err(UsageError::NotAwaiting)
            }
        }
    }

    /// Answer [`Event::StartTls`] once the TLS handshake is complete: the
    /// session forgets HELO, AUTH and any transaction (RFC 3207 section
    /// 4.2) and drops input buffered before the handshake; from now on
    /// [`enqueue_input`](Self::enqueue_input) takes decrypted bytes.
    pub fn tls_established(&mut self) -> Result<(), UsageError> {
        let c = &mut self.core;
        match c.awaiting.take() {
            Some(Awaiting::Tls) => {
                c.tls = true;
                c.helo = None;
                c.esmtp = false;
                c.user = None;
                c.tx = None;
                c.input = Input::Command;
                self.framer.discard_buffered();
                Ok(())
            }
            other => {
                c.awaiting = other;
                Err(UsageError::NotAwaiting)
            }
        }
    }
}

impl Core {
    // ---- output -------------------------------------------------------

    fn record(&mut self, direction: Direction, kind: EntryKind, text: String) {
        self.transcript.push(TranscriptEntry {
            direction,
            kind,
            text,
        });
    }

    fn record_sent(&mut self, from: usize) {
        self.transcript
            .lines(Direction::Server, self.out.get(from..).unwrap_or_default());
    }

    fn reply(&mut self, code: u16, st: (u8, u16, u16), text: &str) {
        let from = self.out.len();
        write_line(&mut self.out, code, false, Some(st.into()), text);
        self.record_sent(from);
    }

    fn reply_plain(&mut self, code: u16, text: &str) {
        let from = self.out.len();
        write_line(&mut self.out, code, false, None, text);
        self.record_sent(from);
    }

    fn send_reply(&mut self, r: &Reply) {
        let from = self.out.len();
        r.write_to(&mut self.out);
        self.record_sent(from);
    }

    /// A host-supplied rejection: counts as an error as Postfix counts it.
    fn reply_error(&mut self, r: &Reply) {
        self.send_reply(r);
        if r.code() >= 400 {
            self.count_error();
        }
    }

    /// Count a client error; at the limit, 421 and close.
    fn count_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.cfg.max_errors && !self.closing {
            self.abort_body(AbortReason::Closed);
            let text = format!("{} Error: too many errors", self.cfg.hostname);
            self.reply(421, (4, 7, 0), &text);
            self.closing = true;
        }
    }

    /// Count a NOOP, RSET, VRFY, HELP, HELO or EHLO, after its reply; past
    /// `max_junk_commands` each counts as an error too.
    fn count_junk(&mut self) {
        self.junk = self.junk.saturating_add(1);
        let limit = self.cfg.max_junk_commands;
        // Counted as Postfix counts (`junk_cmds++ > limit`): the first
        // error comes with the (limit + 2)th such command.
        if limit > 0 && self.junk > limit.saturating_add(1) {
            self.count_error();
        }
    }

    /// Count a failed AUTH; at the limit, 421 and close, so that a
    /// password guesser reconnects (and meets the host's per-address
    /// penalty) rather than trying on one connection for ever.
    fn count_auth_failure(&mut self) {
        self.auth_failures = self.auth_failures.saturating_add(1);
        let limit = self.cfg.max_auth_failures;
        if limit > 0 && self.auth_failures >= limit && !self.closing {
            let text = format!(
                "{} Error: too many failed authentication attempts",
                self.cfg.hostname
            );
            self.reply(421, (4, 7, 0), &text);
            self.closing = true;
        }
    }

    fn error(&mut self, code: u16, st: (u8, u16, u16), text: &str) {
        self.reply(code, st, text);
        self.count_error();
    }

    fn abort_body(&mut self, reason: AbortReason) {
        if let Some(tx) = self.tx.as_mut() {
            if tx.body.take().is_some() {
                self.events.push_back(Event::MessageAborted(reason));
            }
        }
    }

    // ---- input --------------------------------------------------------

    fn on_line_too_long(&mut self) -> After {
        self.record(Direction::Client, EntryKind::Line, "<line too long>".into());
        if matches!(self.input, Input::Sasl(_)) {
            self.input = Input::Command;
            // Postfix's text for an oversized SASL response.
            self.error(500, (5, 5, 6), "Authentication Exchange line is too long");
        } else {
            self.error(500, (5, 5, 2), "Error: line too long");
        }
        self.flush = true;
        After::Nothing
    }

    fn on_line(&mut self, line: &[u8], bare_lf: bool, len: usize) -> After {
        if let Input::Sasl(sasl) = std::mem::replace(&mut self.input, Input::Command) {
            if self.transcript.is_on() {
                let text = String::from_utf8_lossy(line).into_owned();
                self.transcript.push(TranscriptEntry::credentials(text, 0));
            }
            if bare_lf && self.cfg.bare_lf == BareLf::Reject {
                self.error(500, (5, 5, 2), "Error: bare <LF> received");
                return After::Nothing;
            }
            self.on_sasl(sasl, line);
            return After::Nothing;
        }
        let is_auth = line
            .get(..5)
            .is_some_and(|v| v.eq_ignore_ascii_case(b"AUTH "));
        if self.transcript.is_on() {
            let text = String::from_utf8_lossy(line).into_owned();
            // `AUTH <mech> <initial response>`: the response is a secret.
            let secret_at = text
                .get(5..)
                .filter(|_| is_auth)
                .and_then(|rest| rest.find(' '))
                .map(|i| i + 6);
            self.transcript.push(match secret_at {
                Some(visible) => TranscriptEntry::credentials(text, visible),
                None => TranscriptEntry {
                    direction: Direction::Client,
                    kind: EntryKind::Line,
                    text,
                },
            });
        }
        if bare_lf && self.cfg.bare_lf == BareLf::Reject {
            self.error(500, (5, 5, 2), "Error: bare <LF> received");
            self.flush = true;
            return After::Nothing;
        }
        if len > self.cfg.line_limit && !is_auth {
            self.error(500, (5, 5, 2), "Error: line too long");
            self.flush = true;
            return After::Nothing;
        }
        match Command::parse(line) {
            Err(crate::ParseError::UnknownCommand) if crate::command::is_non_smtp_line(line) => {
                // A header field or an HTTP request: the client is not
                // speaking SMTP (or is sending a message whose DATA was
                // refused). Executing what follows would run commands
                // written inside that message; Postfix ends the session
                // with this reply.
                self.abort_body(AbortReason::Closed);
                self.reply(221, (2, 7, 0), "Error: I can break rules, too. Goodbye.");
                self.closing = true;
                After::Nothing
            }
            Err(crate::ParseError::Syntax(crate::Verb::Bdat)) => {
                // A BDAT line whose chunk size cannot be read: the client
                // sends that many octets next, and without the size they
                // would be read as commands. The dialogue cannot be kept
                // in step, so the session ends, with Postfix's reply.
                self.abort_body(AbortReason::Closed);
                self.reply(521, (5, 5, 4), "Syntax: BDAT chunk-size [LAST]");
                self.closing = true;
                After::Nothing
            }
            Err(e) => {
                let r = e.reply();
                self.send_reply(&r);
                self.count_error();
                if e == crate::ParseError::UnknownCommand {
                    // RFC 2920 section 3.2: never hold back the reply to an
                    // unknown command.
                    self.flush = true;
                }
                After::Nothing
            }
            Ok(cmd) => self.on_command(cmd),
        }
    }

    fn on_command(&mut self, cmd: Command<'_>) -> After {
        let before_tls_ok = matches!(
            cmd,
            Command::Ehlo(_)
                | Command::Helo(_)
                | Command::StartTls
                | Command::Noop(_)
                | Command::Rset
                | Command::Quit
                | Command::Help(_)
                // BDAT's chunk must be consumed: on_bdat refuses it.
                | Command::Bdat { .. }
        );
        if self.must_starttls() && !before_tls_ok {
            // Postfix's text under smtpd_tls_security_level = encrypt.
            self.error(530, (5, 7, 0), "Must issue a STARTTLS command first");
            return After::Nothing;
        }
        match cmd {
            Command::Ehlo(d) => self.on_helo(d.into_owned(), true),
            Command::Helo(d) => self.on_helo(d.into_owned(), false),
            Command::Mail { from, params } => self.on_mail(from, params),
            Command::Rcpt { to, params } => self.on_rcpt(to, params),
            Command::Data => self.on_data(),
            Command::Bdat { size, last } => self.on_bdat(size, last),
            Command::Rset => {
                self.abort_body(AbortReason::Reset);
                self.tx = None;
                self.reply(250, (2, 0, 0), "Ok");
                self.count_junk();
                After::Nothing
            }
            Command::Noop(_) => {
                self.reply(250, (2, 0, 0), "Ok");
                self.count_junk();
                After::Nothing
            }
            Command::Vrfy(_) if !self.cfg.vrfy => {
                self.reply(502, (5, 5, 1), "VRFY command is disabled");
                self.count_junk();
                After::Nothing
            }
            Command::Vrfy(arg) => {
                let argument = arg.into_owned();
                self.awaiting = Some(Awaiting::Vrfy(argument.clone()));
                self.events.push_back(Event::Vrfy { argument });
                After::Nothing
            }
            Command::Expn(_) => {
                self.reply(502, (5, 5, 1), "Error: command not implemented");
                After::Nothing
            }
            Command::Help(_) => {
                let text = if self.cfg.vrfy {
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET VRFY NOOP QUIT AUTH STARTTLS HELP"
                } else {
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT AUTH STARTTLS HELP"
                };
                self.reply(214, (2, 0, 0), text);
                self.count_junk();
                After::Nothing
            }
            Command::Quit => {
                self.abort_body(AbortReason::Closed);
                self.reply(221, (2, 0, 0), "Bye");
                self.closing = true;
                After::Nothing
            }
            Command::StartTls => self.on_starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.on_auth(&mechanism, initial_response.as_deref()),
        }
    }

    fn on_helo(&mut self, domain: String, extended: bool) -> After {
        // RFC 5321 section 4.1.4: EHLO/HELO also resets the transaction.
        self.abort_body(AbortReason::Reset);
        self.tx = None;
        self.helo = Some(domain.clone());
        self.esmtp = extended;
        self.events.push_back(Event::Helo { domain, extended });
        let host = self.cfg.hostname.clone();
        if !extended {
            self.reply_plain(250, &host);
        } else {
            let mut lines = vec![host, "PIPELINING".to_owned()];
            lines.push(if self.cfg.max_message_size > 0 {
                format!("SIZE {}", self.cfg.max_message_size)
            } else {
                "SIZE".to_owned()
            });
            // Postfix's order: PIPELINING, SIZE, VRFY, (ETRN,) STARTTLS...
            if self.cfg.vrfy {
                lines.push("VRFY".into());
            }
            if self.cfg.tls_available && !self.tls {
                lines.push("STARTTLS".into());
            }
            let mechs: Vec<&str> = self.offered_mechanisms().map(|m| m.as_str()).collect();
            if !mechs.is_empty() {
                lines.push(format!("AUTH {}", mechs.join(" ")));
            }
            lines.push("ENHANCEDSTATUSCODES".into());
            lines.push("8BITMIME".into());
            if self.cfg.dsn {
                lines.push("DSN".into());
            }
            if self.cfg.smtputf8 {
                lines.push("SMTPUTF8".into());
            }
            if self.cfg.chunking {
                lines.push("CHUNKING".into());
            }
            self.send_reply(&Reply::multiline(250, None, lines));
        }
        // RFC 2920 section 3.2: the EHLO reply is never held back.
        self.flush = true;
        // Postfix counts HELO and EHLO as junk too: a loop of them (each
        // resets the transaction) must not hold the session for ever.
        self.count_junk();
        After::Nothing
    }

    /// `tls_required` and TLS not yet active: only the commands RFC 3207
    /// section 4 leaves a client before STARTTLS are accepted.
    fn must_starttls(&self) -> bool {
        self.cfg.tls_required && !self.tls
    }

    /// Whether `m` may be used now: a plaintext mechanism only inside TLS
    /// when `plaintext_auth_requires_tls` says so.
    fn mechanism_usable(&self, m: Mechanism) -> bool {
        self.tls || !self.cfg.plaintext_auth_requires_tls || !m.is_plaintext()
    }

    /// The mechanisms EHLO advertises now.
    fn offered_mechanisms(&self) -> impl Iterator<Item = Mechanism> + '_ {
        let allowed = !self.must_starttls();
        self.cfg
            .auth_mechanisms
            .iter()
            .copied()
            .filter(move |m| allowed && self.mechanism_usable(*m))
    }

    fn on_mail(&mut self, from: ReversePath<'_>, params: MailParameters<'_>) -> After {
        if self.cfg.require_helo && self.helo.is_none() {
            self.error(503, (5, 5, 1), "Error: send HELO/EHLO first");
        } else if self.tx.is_some() {
            self.error(503, (5, 5, 1), "Error: nested MAIL command");
        } else if self.cfg.auth_required && self.user.is_none() {
            self.error(530, (5, 7, 0), "Authentication required");
        } else if let Some(opt) = self.unsupported_mail_option(&params) {
            self.error(555, (5, 5, 4), &format!("Unsupported option: {opt}"));
        } else if !from.is_ascii() && !params.smtputf8 {
            self.error(
                553,
                (5, 6, 7),
                "Must declare SMTPUTF8 to send unicode address",
            );
        } else if self.cfg.max_message_size > 0
            && params.size.is_some_and(|s| s > self.cfg.max_message_size)
        {
            self.error(552, (5, 3, 4), "Message size exceeds fixed limit");
        } else {
            let from = from.into_owned();
            let params = params.into_owned();
            self.awaiting = Some(Awaiting::Mail(from.clone(), params.clone()));
            self.events.push_back(Event::Mail { from, params });
        }
        After::Nothing
    }

    fn unsupported_mail_option(&self, p: &MailParameters<'_>) -> Option<String> {
        if let Some((k, v)) = p.other.first() {
            return Some(match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            });
        }
        if p.body == Some(BodyType::BinaryMime) {
            return Some("BODY=BINARYMIME".into());
        }
        if p.smtputf8 && !self.cfg.smtputf8 {
            return Some("SMTPUTF8".into());
        }
        if !self.cfg.dsn {
            if let Some(r) = &p.ret {
                return Some(format!("RET={r}"));
            }
            if let Some(e) = &p.envid {
                return Some(format!("ENVID={e}"));
            }
        }
        None
    }

    fn on_rcpt(&mut self, to: ForwardPath<'_>, params: RcptParameters<'_>) -> After {
        let Some(tx) = self.tx.as_ref() else {
            self.error(503, (5, 5, 1), "Error: need MAIL command");
            return After::Nothing;
        };
        let smtputf8 = tx.params.smtputf8;
        let count = tx.recipients.len();
        if count >= self.cfg.max_recipients {
            // RFC 5321 section 4.5.3.1.10: 452, not counted as an error.
            self.reply(452, (4, 5, 3), "Error: too many recipients");
        } else if let Some((k, v)) = params.other.first() {
            let opt = match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            };
            self.error(555, (5, 5, 4), &format!("Unsupported option: {opt}"));
        } else if let Some(opt) = (!self.cfg.dsn)
            .then(|| {
                params
                    .notify
                    .as_ref()
                    .map(|n| format!("NOTIFY={n}"))
                    .or_else(|| params.orcpt.as_ref().map(|o| format!("ORCPT={o}")))
            })
            .flatten()
        {
            self.error(555, (5, 5, 4), &format!("Unsupported option: {opt}"));
        } else if !to.is_ascii() && !smtputf8 {
            self.error(
                553,
                (5, 6, 7),
                "Must declare SMTPUTF8 to send unicode address",
            );
        } else {
            let to = to.into_owned();
            let params = params.into_owned();
            self.awaiting = Some(Awaiting::Rcpt(to.clone(), params.clone()));
            self.events.push_back(Event::Rcpt { to, params });
        }
        After::Nothing
    }

    fn on_data(&mut self) -> After {
        match self.tx.as_mut() {
            None => {
                self.error(503, (5, 5, 1), "Error: need RCPT command");
            }
            Some(tx) if tx.body.is_some() => {
                self.error(503, (5, 5, 1), "Error: BDAT in progress");
            }
            Some(tx) if tx.recipients.is_empty() => {
                self.error(554, (5, 5, 1), "Error: no valid recipients");
            }
            Some(tx) => {
                tx.body = Some(Body {
                    size: 0,
                    too_big: false,
                    chunked: false,
                });
                self.input = Input::Data;
                self.events.push_back(Event::MessageStart);
                self.reply_plain(354, "End data with <CR><LF>.<CR><LF>");
                // RFC 2920 section 3.2: the 354 is never held back.
                self.flush = true;
                return After::ExpectData;
            }
        }
        After::Nothing
    }

    fn on_bdat(&mut self, size: u64, last: bool) -> After {
        // The chunk's octets are consumed whatever the verdict, so that
        // they are never read as commands (RFC 3030 section 2).
        let error = if !self.cfg.chunking {
            Some(Reply::new(502, (5, 5, 1), "Error: command not implemented"))
        } else if self.must_starttls() {
            Some(Reply::new(
                530,
                (5, 7, 0),
                "Must issue a STARTTLS command first",
            ))
        } else {
            match self.tx.as_mut() {
                None => Some(Reply::new(503, (5, 5, 1), "Error: need RCPT command")),
                Some(tx) if tx.recipients.is_empty() => {
                    Some(Reply::new(554, (5, 5, 1), "Error: no valid recipients"))
                }
                Some(tx) => {
                    if tx.body.is_none() {
                        tx.body = Some(Body {
                            size: 0,
                            too_big: false,
                            chunked: true,
                        });
                        self.events.push_back(Event::MessageStart);
                    }
                    None
                }
            }
        };
        self.input = Input::Chunk { size, last, error };
        After::ExpectChunk(size)
    }

    fn on_body(&mut self, bytes: Vec<u8>) {
        if matches!(self.input, Input::Chunk { error: Some(_), .. }) {
            return;
        }
        let limit = self.cfg.max_message_size;
        let Some(body) = self.tx.as_mut().and_then(|t| t.body.as_mut()) else {
            return;
        };
        body.size = body.size.saturating_add(bytes.len() as u64);
        if body.too_big {
            return;
        }
        if limit > 0 && body.size > limit {
            // RFC 1870 section 6: the reply comes at the end of the data;
            // the host can discard what it stored now. The octets up to
            // the limit go first, so that the events are the same however
            // the input was split into reads.
            body.too_big = true;
            let before = body.size.saturating_sub(bytes.len() as u64);
            let room = usize::try_from(limit.saturating_sub(before)).unwrap_or(usize::MAX);
            if let Some(head) = bytes.get(..room).filter(|h| !h.is_empty()) {
                self.events.push_back(Event::BodyChunk(head.to_vec()));
            }
            self.events
                .push_back(Event::MessageAborted(AbortReason::TooBig));
            return;
        }
        self.events.push_back(Event::BodyChunk(bytes));
    }

    fn on_data_end(&mut self, bare_lf: bool) -> After {
        self.input = Input::Command;
        let Some(mut tx) = self.tx.take() else {
            return After::Nothing;
        };
        let body = tx.body.take().unwrap_or(Body {
            size: 0,
            too_big: false,
            chunked: false,
        });
        self.record(
            Direction::Client,
            EntryKind::Body,
            format!("<message body, {} octets>", body.size),
        );
        if body.too_big {
            self.reply(552, (5, 3, 4), "Message size exceeds fixed limit");
        } else if bare_lf {
            // Only reported under BareLf::Reject.
            self.events
                .push_back(Event::MessageAborted(AbortReason::BareLf));
            self.reply(550, (5, 5, 2), "Error: bare <LF> received");
        } else {
            self.finish_message(tx, body);
        }
        After::Nothing
    }

    fn finish_message(&mut self, tx: Transaction, body: Body) {
        let env = Envelope {
            from: tx.from,
            params: tx.params,
            recipients: tx.recipients,
            helo: self.helo.clone(),
            esmtp: self.esmtp,
            authenticated: self.user.clone(),
            tls: self.tls,
            size: body.size,
            chunked: body.chunked,
        };
        self.awaiting = Some(Awaiting::Message);
        self.events.push_back(Event::MessageEnd(env));
        // The final reply is never held back behind later input.
        self.flush = true;
    }

    fn on_chunk_end(&mut self) -> After {
        let Input::Chunk { size, last, error } = std::mem::replace(&mut self.input, Input::Command)
        else {
            return After::Nothing;
        };
        self.record(
            Direction::Client,
            EntryKind::Body,
            format!("<chunk, {size} octets>"),
        );
        if let Some(r) = error {
            self.reply_error(&r);
            return After::Nothing;
        }
        let too_big = self
            .tx
            .as_ref()
            .and_then(|t| t.body.as_ref())
            .is_some_and(|b| b.too_big);
        if too_big {
            // The transaction is over; later BDATs get 503.
            self.tx = None;
            self.reply(552, (5, 3, 4), "Message size exceeds fixed limit");
            self.flush = true;
        } else if last {
            if let Some(mut tx) = self.tx.take() {
                let body = tx.body.take().unwrap_or(Body {
                    size: 0,
                    too_big: false,
                    chunked: true,
                });
                self.finish_message(tx, body);
            }
        } else {
            self.reply(250, (2, 0, 0), &format!("Ok: {size} bytes"));
        }
        After::Nothing
    }

    fn on_starttls(&mut self) -> After {
        // Postfix's order: "already active" also where STARTTLS is not
        // configured (an implicit-TLS listener).
        if self.tls {
            self.error(554, (5, 5, 1), "Error: TLS already active");
            return After::Nothing;
        }
        if !self.cfg.tls_available {
            self.reply(502, (5, 5, 1), "Error: command not implemented");
            return After::Nothing;
        }
        self.reply(220, (2, 0, 0), "Ready to start TLS");
        self.flush = true;
        self.awaiting = Some(Awaiting::Tls);
        self.events.push_back(Event::StartTls);
        // RFC 3207 section 4.2 / CVE-2011-0411: nothing pipelined after
        // STARTTLS in plaintext may be executed after the handshake.
        After::DiscardInput
    }

    fn on_auth(&mut self, mechanism: &str, ir: Option<&str>) -> After {
        if self.cfg.auth_mechanisms.is_empty() {
            self.error(503, (5, 5, 1), "Error: authentication not enabled");
            return After::Nothing;
        }
        if self.helo.is_none() {
            self.error(503, (5, 5, 1), "Error: send HELO/EHLO first");
            return After::Nothing;
        }
        if self.user.is_some() {
            self.error(503, (5, 5, 1), "Error: already authenticated");
            return After::Nothing;
        }
        if self.tx.is_some() {
            self.error(503, (5, 5, 1), "Error: MAIL transaction in progress");
            return After::Nothing;
        }
        let Some(mech) =
            Mechanism::from_name(mechanism).filter(|m| self.cfg.auth_mechanisms.contains(m))
        else {
            self.error(504, (5, 5, 4), "Unrecognized authentication type");
            return After::Nothing;
        };
        if !self.mechanism_usable(mech) {
            // RFC 4954 section 6; the password was not sent unless the
            // client gave an initial response, which is not looked at.
            self.error(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            );
            return After::Nothing;
        }
        match (mech, ir) {
            (Mechanism::CramMd5, Some(_)) => {
                self.error(501, (5, 7, 0), "Error: initial response not allowed");
            }
            (Mechanism::CramMd5, None) => {
                self.awaiting = Some(Awaiting::Challenge);
                self.events.push_back(Event::AuthChallenge);
            }
            (Mechanism::Plain, None) => {
                // RFC 4954 section 4: an empty challenge is "334 ".
                let from = self.out.len();
                self.out.extend_from_slice(b"334 \r\n");
                self.record_sent(from);
                self.input = Input::Sasl(ServerExchange::Plain);
            }
            (Mechanism::Login, None) => {
                self.reply_plain(334, "VXNlcm5hbWU6");
                self.input = Input::Sasl(ServerExchange::LoginUser);
            }
            (m, Some(ir)) => {
                let step = ServerExchange::start(m, Some(ir.as_bytes()), "");
                self.on_sasl_step(step);
            }
        }
        // Replies to AUTH steps go out at once: the client waits for them.
        self.flush = true;
        After::Nothing
    }

    fn on_sasl(&mut self, sasl: ServerExchange, line: &[u8]) {
        self.on_sasl_step(sasl.step(line));
    }

    fn on_sasl_step(&mut self, step: ServerStep) {
        self.flush = true;
        match step {
            ServerStep::Challenge(state, challenge) => {
                self.reply_plain(334, &challenge);
                self.input = Input::Sasl(state);
            }
            ServerStep::Done(creds) => self.ask_auth(creds),
            ServerStep::Cancelled => self.error(501, (5, 7, 0), "Authentication aborted"),
            ServerStep::BadBase64 => self.error(501, (5, 5, 2), "Cannot decode response"),
            ServerStep::Malformed => {
                self.error(535, (5, 7, 8), "Error: authentication failed");
                self.count_auth_failure();
            }
        }
    }

    fn ask_auth(&mut self, creds: Credentials) {
        self.awaiting = Some(Awaiting::Auth(creds.username().to_owned()));
        self.events.push_back(Event::Auth(creds));
    }
}

impl ServerSession {
    /// Appends the output that is ready to `dst` (see
    /// [`Session::drain_output`](mail_session::Session::drain_output)); returns the number of bytes added.
    pub fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
        let n = self.core.out.len();
        dst.append(&mut self.core.out);
        n
    }
}

mail_session::impl_session!(ServerSession, Event, transcript_and_tls);

#[cfg(test)]
#[path = "server_tests.rs"]
pub(crate) mod tests;
