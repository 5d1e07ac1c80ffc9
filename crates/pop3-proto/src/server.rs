//! The server side of a POP3 connection, driven by the host.
//!
//! See the crate documentation for the driving loop and exactly when to
//! call each method.

use std::time::Duration;

use mail_session::sasl::{Credentials, Mechanism, ServerExchange, ServerStep};
use mail_session::{
    BareLf, Direction, DotStuffer, Frame, Framer, Interrupt, Secret, Transcript, TranscriptEntry,
};

use crate::command::{Command, MAX_COMMAND_LINE};
use crate::response::{Response, ResponseCode};
use crate::top::TopFilter;

/// Longest SASL client response line, line end included. RFC 5034 lets
/// responses exceed the 255-octet command limit; 8 KiB holds any PLAIN,
/// LOGIN or CRAM-MD5 response with room to spare.
pub const MAX_SASL_LINE: usize = 8192;

/// Whether a command line may exceed [`MAX_COMMAND_LINE`]: `PASS` (a long
/// password) and `AUTH` (an initial response as long as any SASL response,
/// RFC 5034 section 4) may, up to [`MAX_SASL_LINE`], as Dovecot takes
/// them; any other longer line is refused.
fn long_line_allowed(line: &[u8]) -> bool {
    let kw = line.get(..5).unwrap_or_default();
    kw.eq_ignore_ascii_case(b"PASS ") || kw.eq_ignore_ascii_case(b"AUTH ")
}

/// The shortest idle timeout RFC 1939 section 3 allows.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Output is handed to the host once this much is queued, so that a long
/// pipeline does not build one huge buffer.
const OUTPUT_HIGH_WATER: usize = 16 * 1024;

/// Which response texts the server uses where RFC 1939 leaves them free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// Dovecot's texts (`+OK Logged in.`, `+OK Marked to be deleted.`,
    /// `+OK Logging out.`).
    #[default]
    Dovecot,
    /// The texts of the RFC 1939 examples (`+OK mrose's maildrop has 2
    /// messages (320 octets)`, `+OK message 1 deleted`, `+OK dewey POP3
    /// server signing off (maildrop empty)`).
    Rfc1939,
}

/// Server settings, fixed for the life of a session.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Greeting text after `+OK ` (the APOP timestamp is appended).
    pub greeting: String,
    /// APOP timestamp `<unique@host>` (RFC 1939 section 7), unique per
    /// connection; enables APOP and CRAM-MD5 (as the challenge). `None`
    /// disables both.
    pub apop_timestamp: Option<String>,
    /// Server host name used in [`Style::Rfc1939`] sign-off texts.
    pub hostname: String,
    /// Response text style.
    pub style: Style,
    /// Offer USER/PASS (RFC 2449 `USER` capability).
    pub user_pass: bool,
    /// Refuse plaintext logins (USER/PASS, PLAIN, LOGIN) until TLS is
    /// active, like Dovecot's `disable_plaintext_auth`; APOP and CRAM-MD5
    /// send no password and stay usable. Before TLS, CAPA omits `USER` and
    /// lists only CRAM-MD5 under `SASL`.
    pub plaintext_requires_tls: bool,
    /// Refuse every login (USER, PASS, APOP, AUTH) until TLS is active,
    /// like Dovecot's `ssl = required`; before TLS, CAPA lists neither
    /// `USER` nor `SASL`. Meaningful with `tls_available`.
    pub tls_required: bool,
    /// SASL mechanisms offered by AUTH. CRAM-MD5 is only offered when
    /// there is an APOP timestamp.
    pub sasl: Vec<Mechanism>,
    /// The host can start TLS (STLS is offered while not yet active).
    pub tls_available: bool,
    /// The connection is already TLS (implicit TLS, pop3s, port 995, RFC
    /// 8314 section 3.3): STLS is neither offered nor accepted.
    pub tls_active: bool,
    /// Failed logins after which the session closes (at least 1).
    pub max_failed_logins: u32,
    /// Invalid commands in a row (unknown, malformed, too long, not valid
    /// in the state) after which a session not yet logged in is closed with
    /// `-ERR Too many bad commands.` (at least 1). Dovecot closes its login
    /// processes after 3: a client that is not speaking POP3, e.g. a web
    /// browser made to post to port 110 (the ALPACA cross-protocol
    /// attack), gets no long run of replies to its lines.
    pub max_bad_commands_before_login: u32,
    /// The same limit once logged in (Dovecot: 20).
    pub max_bad_commands: u32,
    /// Idle timeout; values below [`MIN_IDLE_TIMEOUT`] are raised to it.
    pub idle_timeout: Duration,
    /// Total time to log in, from the greeting: the AUTHORIZATION state
    /// is not held for ten idle minutes by a client that never logs in
    /// (Dovecot closes such a login process after a minute). `None`: the
    /// idle timeout only.
    pub login_timeout: Option<Duration>,
    /// Total time for one command line from its first octet: the idle
    /// timer restarts with every octet, so a client trickling octets would
    /// otherwise hold the session for ever. `None`: no budget.
    pub command_line_timeout: Option<Duration>,
    /// `IMPLEMENTATION` capability text; `None` omits it.
    pub implementation: Option<String>,
    /// Record a transcript (see [`ServerSession::poll_transcript`]).
    pub transcript: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            greeting: "POP3 server ready.".into(),
            apop_timestamp: None,
            hostname: "localhost".into(),
            style: Style::Dovecot,
            user_pass: true,
            plaintext_requires_tls: false,
            tls_required: false,
            sasl: vec![Mechanism::Plain, Mechanism::Login],
            tls_available: false,
            tls_active: false,
            max_failed_logins: 3,
            max_bad_commands_before_login: 3,
            max_bad_commands: 20,
            idle_timeout: MIN_IDLE_TIMEOUT,
            login_timeout: None,
            command_line_timeout: None,
            implementation: Some(
                concat!("csuv-mail pop3-proto ", env!("CARGO_PKG_VERSION")).into(),
            ),
            transcript: false,
        }
    }
}

/// One message of the maildrop snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Exact size in octets with CRLF line ends (RFC 1939 section 5).
    pub size: u64,
    /// Unique id: 1 to 70 characters in 0x21..=0x7E (RFC 1939 section 7).
    pub uid: String,
}

/// Formats an APOP timestamp `<process.unique@host>` (RFC 1939 section
/// 7). The host supplies values that make it unique per connection, e.g.
/// its process id and a counter or the current time in nanoseconds.
pub fn apop_timestamp(process: u32, unique: u64, host: &str) -> String {
    format!("<{process}.{unique}@{host}>")
}

/// A message the host is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// Message number in this session (1-based).
    pub number: u32,
    /// The message's unique id from the snapshot.
    pub uid: String,
}

/// The host's verdict on [`Event::Authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// Credentials are right; the session goes on to [`Event::OpenMaildrop`].
    Accepted,
    /// Wrong user or password: `-ERR [AUTH] Authentication failed.`
    Rejected,
    /// The account store failed: `-ERR [SYS/TEMP] ...` (not counted as a
    /// failed login).
    TempFail,
}

/// Why the maildrop could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaildropError {
    /// Another session holds the lock: `-ERR [IN-USE] ...` (RFC 1939
    /// section 8 requires exclusive access).
    InUse,
    /// A temporary failure: `-ERR [SYS/TEMP] ...`.
    TempFail,
    /// A permanent failure: `-ERR [SYS/PERM] ...`.
    PermFail,
    /// The user logs in more often than policy allows: `-ERR
    /// [LOGIN-DELAY] ...` (RFC 2449 section 8.1.1).
    LoginDelay,
}

/// Something the host must decide or do. Answer it with the method named
/// in each variant before calling [`ServerSession::next`] again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check these credentials; answer with [`ServerSession::auth_result`].
    Authenticate(Credentials),
    /// Lock and list the maildrop of `user`; answer with
    /// [`ServerSession::maildrop_opened`] (the snapshot) or
    /// [`ServerSession::maildrop_failed`]. The host keeps the lock until
    /// [`Event::Update`] is answered or the connection ends.
    OpenMaildrop {
        /// The authenticated user.
        user: String,
    },
    /// Stream this message (CRLF line ends): call
    /// [`ServerSession::message_data`] for each chunk, then
    /// [`ServerSession::message_end`]; or [`ServerSession::message_failed`].
    Retrieve {
        /// Which message.
        message: MessageRef,
        /// Its size from the snapshot.
        size: u64,
        /// `Some(n)` for `TOP msg n`: the session itself cuts the stream to
        /// the headers and n body lines, and tells the host when it has
        /// enough.
        top: Option<u32>,
    },
    /// QUIT in TRANSACTION (RFC 1939 section 6): remove these messages,
    /// release the lock, then answer with [`ServerSession::update_result`].
    /// Sent even when nothing is to be removed, so the host always learns
    /// the session is done.
    Update {
        /// Messages marked deleted, in number order.
        deleted: Vec<MessageRef>,
    },
    /// STLS was accepted and `+OK` has been handed out: flush it, run the
    /// TLS handshake, then call [`ServerSession::tls_established`] (or close the
    /// connection if the handshake fails).
    StartTls,
}

/// The host called an answer method that does not fit the pending event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No event of that kind is waiting for an answer.
    #[error("no {0} event is awaiting an answer")]
    NotAwaiting(&'static str),
    /// A unique id in the snapshot is empty, too long or not printable
    /// ASCII (RFC 1939 section 7); the session answered `-ERR [SYS/TEMP]`.
    #[error("invalid unique id in maildrop listing")]
    InvalidUid,
}

/// Session state (RFC 1939 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Before a successful login.
    Authorization,
    /// Logged in, maildrop open.
    Transaction,
    /// After QUIT in TRANSACTION, until the host confirms the update.
    Update,
    /// The connection is to be closed.
    Closed,
}

#[derive(Debug)]
struct Maildrop {
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn live(&self) -> impl Iterator<Item = (u32, &MessageInfo)> {
        self.messages
            .iter()
            .zip(self.deleted.iter())
            .zip(1u32..)
            .filter(|((_, d), _)| !**d)
            .map(|((m, _), n)| (n, m))
    }

    fn totals(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(c, s), (_, m)| (c + 1, s.saturating_add(m.size)))
    }

    /// Message `n` if it exists and is not deleted.
    fn get(&self, n: u32) -> Result<&MessageInfo, Response> {
        let i = usize::try_from(n).unwrap_or(usize::MAX).wrapping_sub(1);
        match (self.messages.get(i), self.deleted.get(i)) {
            (Some(_), Some(true)) => Err(Response::err("Message is deleted.")),
            (Some(m), Some(false)) => Ok(m),
            _ => Err(Response::err(format!("There's no message {n}."))),
        }
    }
}

#[derive(Debug)]
struct Stream {
    /// The message number, for [`ServerSession::message_gone`].
    number: u32,
    status: Option<Response>,
    stuffer: DotStuffer,
    top: Option<TopFilter>,
}

#[derive(Debug)]
enum Awaiting {
    Auth,
    Maildrop,
    Message(Box<Stream>),
    Update,
    Tls,
}

impl Awaiting {
    fn name(&self) -> &'static str {
        match self {
            Awaiting::Auth => "Authenticate",
            Awaiting::Maildrop => "OpenMaildrop",
            Awaiting::Message(_) => "Retrieve",
            Awaiting::Update => "Update",
            Awaiting::Tls => "StartTls",
        }
    }
}

/// A server-side POP3 session (Sans-I/O).
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    state: SessionState,
    input: Framer,
    out: Vec<u8>,
    event: Option<Event>,
    awaiting: Option<Awaiting>,
    user: Option<String>,
    user_arg: Option<String>,
    sasl: Option<ServerExchange>,
    pending_user: Option<String>,
    maildrop: Option<Maildrop>,
    failed_logins: u32,
    /// Invalid commands in a row, and whether the command being handled
    /// was one.
    bad_commands: u32,
    bad_command: bool,
    tls_active: bool,
    last_activity: Duration,
    /// When the session started (greeting), for `login_timeout`.
    started: Duration,
    /// When the first octet of the partial line now buffered arrived.
    line_started: Option<Duration>,
    eof: bool,
    transcript: Transcript,
}

impl ServerSession {
    /// Starts a session at time `now`; the greeting is the first output.
    pub fn new(mut config: ServerConfig, now: Duration) -> ServerSession {
        config.idle_timeout = config.idle_timeout.max(MIN_IDLE_TIMEOUT);
        config.max_failed_logins = config.max_failed_logins.max(1);
        config.max_bad_commands_before_login = config.max_bad_commands_before_login.max(1);
        config.max_bad_commands = config.max_bad_commands.max(1);
        let tls_active = config.tls_active;
        let transcript = config.transcript;
        let mut s = ServerSession {
            config,
            state: SessionState::Authorization,
            // Bare LF ends a command line as CRLF does (see the crate docs).
            input: Framer::new(MAX_COMMAND_LINE, BareLf::Normalize),
            out: Vec::new(),
            event: None,
            awaiting: None,
            user: None,
            user_arg: None,
            sasl: None,
            pending_user: None,
            maildrop: None,
            failed_logins: 0,
            bad_commands: 0,
            bad_command: false,
            tls_active,
            last_activity: now,
            started: now,
            line_started: None,
            eof: false,
            transcript: Transcript::new(transcript),
        };
        let mut text = s.config.greeting.clone();
        if let Some(ts) = &s.config.apop_timestamp {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(ts);
        }
        s.reply(Response::ok(text));
        s
    }

    /// Current RFC 1939 state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The logged-in user, once the maildrop is open.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether TLS is active (from the config or after STLS).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Octets enqueued and not yet framed (none right after
    /// [`tls_established`](Self::tls_established)).
    pub fn buffered_input(&self) -> usize {
        self.input.buffered()
    }

    /// Bytes received from the client at time `now` (the host's clock, any
    /// epoch; it restarts the idle timer). Call [`ServerSession::next`]
    /// after.
    pub fn enqueue_input(&mut self, now: Duration, bytes: &[u8]) {
        if self.state == SessionState::Closed || bytes.is_empty() {
            return;
        }
        self.last_activity = now;
        if self.input.buffered() == 0 {
            self.line_started = Some(now);
        }
        self.input.push(bytes);
    }

    /// The client closed its side (the read returned 0). Complete commands
    /// already buffered still run (a pipelined `QUIT` still deletes); then
    /// the session closes. Without a `QUIT`, nothing is deleted.
    pub fn input_closed(&mut self) {
        self.eof = true;
    }

    /// When [`ServerSession::handle_timeout`] should be called if no input
    /// arrives; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.state == SessionState::Closed {
            return None;
        }
        Some(
            self.budget_deadline()
                .map_or(self.idle_deadline(), |d| d.min(self.idle_deadline())),
        )
    }

    fn idle_deadline(&self) -> Duration {
        self.last_activity.saturating_add(self.config.idle_timeout)
    }

    /// The earlier of the login and command line budgets, if any.
    fn budget_deadline(&self) -> Option<Duration> {
        let login = self
            .config
            .login_timeout
            .filter(|_| self.state == SessionState::Authorization)
            .map(|t| self.started.saturating_add(t));
        let line = self
            .config
            .command_line_timeout
            .zip(self.line_started.filter(|_| self.input.buffered() > 0))
            .map(|(t, first_octet)| first_octet.saturating_add(t));
        match (login, line) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tells the session the time when no input arrived. When the client
    /// was idle for the timeout, the session closes without a response and
    /// without deleting anything (RFC 1939 section 3). Time the host spends
    /// on an event does not count as the client's.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.awaiting.is_some() || self.event.is_some() {
            self.last_activity = now;
            return;
        }
        if self.budget_deadline().is_some_and(|d| now >= d) {
            // Not the RFC 1939 idle timer: say why, as Dovecot does.
            self.reply(Response::err("Disconnected for inactivity."));
            self.state = SessionState::Closed;
        } else if self.poll_timeout().is_some_and(|d| now >= d) {
            self.state = SessionState::Closed;
        }
    }

    /// Takes the next transcript line, if transcripts are on.
    pub fn poll_transcript(&mut self) -> Option<TranscriptEntry> {
        self.transcript.pop()
    }

    /// Drives the session: returns the next event for the host, or an
    /// [`Interrupt`] saying what I/O it needs.
    // Named like imap-next's `next`; it is not an iterator (it needs the
    // host's answers in between).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Event, Interrupt> {
        loop {
            if self.event.is_some() || self.awaiting.is_some() || self.state == SessionState::Closed
            {
                if !self.out.is_empty() {
                    return Err(Interrupt::Output(std::mem::take(&mut self.out)));
                }
                if let Some(ev) = self.event.take() {
                    return Ok(ev);
                }
                if self.awaiting.is_some() {
                    return Err(Interrupt::AwaitingHost);
                }
                return Err(Interrupt::Close);
            }
            if self.out.len() >= OUTPUT_HIGH_WATER {
                return Err(Interrupt::Output(std::mem::take(&mut self.out)));
            }
            // Before login a PASS or AUTH line may be long (see
            // `long_line_allowed`); which one it is shows once it is read.
            let limit = if self.sasl.is_some() || self.state == SessionState::Authorization {
                MAX_SASL_LINE
            } else {
                MAX_COMMAND_LINE
            };
            self.input.set_line_cap(limit);
            match self.input.next_frame() {
                Frame::Line { line, len, .. }
                    if len > MAX_COMMAND_LINE
                        && self.sasl.is_none()
                        && !long_line_allowed(line) =>
                {
                    self.log(Direction::Client, "<line too long, skipped>".into());
                    self.bad(Response::err("Input line too long."));
                    self.count_bad_command();
                }
                Frame::Line { line, .. } => {
                    let line = line.to_vec();
                    // What is left started no earlier than the last input.
                    let rest = self.input.buffered() > 0;
                    self.line_started = rest.then_some(self.last_activity);
                    self.handle_line(&line);
                }
                Frame::LineTooLong => {
                    self.log(Direction::Client, "<line too long, skipped>".into());
                    self.sasl = None;
                    self.bad(Response::err("Input line too long."));
                    self.count_bad_command();
                }
                // Line mode only: the framer is never switched to DATA or
                // BDAT here.
                Frame::Data(_) | Frame::DataEnd { .. } | Frame::Chunk(_) | Frame::ChunkEnd => {}
                Frame::NeedMore => {
                    if !self.out.is_empty() {
                        return Err(Interrupt::Output(std::mem::take(&mut self.out)));
                    }
                    if self.eof {
                        // The client is gone; without QUIT nothing is
                        // deleted (RFC 1939 section 6).
                        self.state = SessionState::Closed;
                        continue;
                    }
                    return Err(Interrupt::NeedInput);
                }
            }
        }
    }

    // ----- answers to events ------------------------------------------

    fn expect(&mut self, what: &'static str) -> Result<Awaiting, UsageError> {
        match self.awaiting.take() {
            Some(a) if a.name() == what => Ok(a),
            other => {
                self.awaiting = other;
                Err(UsageError::NotAwaiting(what))
            }
        }
    }

    /// Answers [`Event::Authenticate`].
    pub fn auth_result(&mut self, result: AuthResult) -> Result<(), UsageError> {
        self.expect("Authenticate")?;
        let user = self.pending_user.take().unwrap_or_default();
        match result {
            AuthResult::Accepted => {
                self.awaiting = Some(Awaiting::Maildrop);
                self.event = Some(Event::OpenMaildrop { user: user.clone() });
                self.pending_user = Some(user);
            }
            AuthResult::Rejected => {
                self.failed_logins += 1;
                self.reply(Response::err_code(
                    ResponseCode::Auth,
                    "Authentication failed.",
                ));
                if self.failed_logins >= self.config.max_failed_logins {
                    self.state = SessionState::Closed;
                }
            }
            AuthResult::TempFail => self.reply(Response::err_code(
                ResponseCode::SysTemp,
                "Temporary authentication failure.",
            )),
        }
        Ok(())
    }

    /// Answers [`Event::OpenMaildrop`] with the snapshot. Messages arriving
    /// later are not seen by this session.
    pub fn maildrop_opened(&mut self, messages: Vec<MessageInfo>) -> Result<(), UsageError> {
        self.expect("OpenMaildrop")?;
        let user = self.pending_user.take().unwrap_or_default();
        let bad = messages.iter().any(|m| {
            m.uid.is_empty()
                || m.uid.len() > 70
                || !m.uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
        });
        if bad {
            self.reply(Response::err_code(
                ResponseCode::SysTemp,
                "Couldn't open mailbox.",
            ));
            return Err(UsageError::InvalidUid);
        }
        let deleted = vec![false; messages.len()];
        let md = Maildrop { messages, deleted };
        let text = match self.config.style {
            Style::Dovecot => "Logged in.".to_owned(),
            Style::Rfc1939 => {
                let (n, size) = md.totals();
                format!("{user}'s maildrop has {n} messages ({size} octets)")
            }
        };
        self.maildrop = Some(md);
        self.user = Some(user);
        self.state = SessionState::Transaction;
        self.reply(Response::ok(text));
        Ok(())
    }

    /// Answers [`Event::OpenMaildrop`] with a failure; the session stays in
    /// AUTHORIZATION.
    pub fn maildrop_failed(&mut self, error: MaildropError) -> Result<(), UsageError> {
        self.expect("OpenMaildrop")?;
        self.pending_user = None;
        let r = match error {
            MaildropError::InUse => Response::err_code(
                ResponseCode::InUse,
                "Mailbox is locked by another POP3 session.",
            ),
            MaildropError::TempFail => {
                Response::err_code(ResponseCode::SysTemp, "Couldn't open mailbox.")
            }
            MaildropError::PermFail => {
                Response::err_code(ResponseCode::SysPerm, "Couldn't open mailbox.")
            }
            MaildropError::LoginDelay => {
                Response::err_code(ResponseCode::LoginDelay, "Logging in too often.")
            }
        };
        self.reply(r);
        Ok(())
    }

    /// Gives the next chunk of the message of [`Event::Retrieve`]. Chunks
    /// may split lines anywhere. Returns `false` once the session needs no
    /// more data (TOP has its lines); the host should then call
    /// [`ServerSession::message_end`].
    pub fn message_data(&mut self, chunk: &[u8]) -> Result<bool, UsageError> {
        let Some(Awaiting::Message(stream)) = self.awaiting.as_mut() else {
            return Err(UsageError::NotAwaiting("Retrieve"));
        };
        let data = match stream.top.as_mut() {
            Some(t) => t.filter(chunk),
            None => chunk,
        };
        if let Some(status) = stream.status.take() {
            status.write_to(&mut self.out);
            if self.transcript.is_on() {
                self.transcript.line(Direction::Server, status.to_string());
            }
        }
        stream.stuffer.push(data, &mut self.out);
        Ok(!stream.top.as_ref().is_some_and(TopFilter::is_done))
    }

    /// Moves the output produced so far to the end of `dst`, for a host
    /// that gathers replies in a write buffer of its own: it then gets
    /// them without a fresh `Vec` per reply, which [`Interrupt::Output`]
    /// costs. [`ServerSession::next`] returns only output produced after.
    /// Returns the number of bytes moved.
    pub fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        dst.extend_from_slice(&self.out);
        self.out.clear();
        // Keep a message-sized buffer for the next reply, not a large one.
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        n
    }

    /// Ends the message of [`Event::Retrieve`]: adds a final CRLF if the
    /// message lacked one, then the `.` terminator.
    pub fn message_end(&mut self) -> Result<(), UsageError> {
        let Awaiting::Message(mut stream) = self.expect("Retrieve")? else {
            return Err(UsageError::NotAwaiting("Retrieve"));
        };
        if let Some(status) = stream.status.take() {
            status.write_to(&mut self.out);
            if self.transcript.is_on() {
                self.transcript.line(Direction::Server, status.to_string());
            }
        }
        stream.stuffer.finish(&mut self.out);
        self.log(Direction::Server, ".".into());
        Ok(())
    }

    /// The message of [`Event::Retrieve`] could not be read. Before any
    /// data the client gets `-ERR [SYS/TEMP]`; after some data the
    /// response cannot be repaired and the session closes.
    pub fn message_failed(&mut self) -> Result<(), UsageError> {
        let Awaiting::Message(stream) = self.expect("Retrieve")? else {
            return Err(UsageError::NotAwaiting("Retrieve"));
        };
        if stream.status.is_some() {
            self.reply(Response::err_code(
                ResponseCode::SysTemp,
                "Couldn't read message.",
            ));
        } else {
            self.state = SessionState::Closed;
        }
        Ok(())
    }

    /// The message of [`Event::Retrieve`] is no longer in the maildrop
    /// (another program removed it after the snapshot). Before any data the
    /// client gets `-ERR Message N expunged.`, as from Dovecot, without the
    /// `[SYS/TEMP]` of [`message_failed`](Self::message_failed): asking
    /// again will not help (RFC 3206 section 4). After some data the
    /// session closes.
    pub fn message_gone(&mut self) -> Result<(), UsageError> {
        let Awaiting::Message(stream) = self.expect("Retrieve")? else {
            return Err(UsageError::NotAwaiting("Retrieve"));
        };
        if stream.status.is_some() {
            self.reply(Response::err(format!(
                "Message {} expunged.",
                stream.number
            )));
        } else {
            self.state = SessionState::Closed;
        }
        Ok(())
    }

    /// Answers [`Event::Update`]: `true` if every marked message was
    /// removed. The session then says goodbye and closes.
    pub fn update_result(&mut self, ok: bool) -> Result<(), UsageError> {
        self.expect("Update")?;
        let r = if ok {
            match self.config.style {
                Style::Dovecot => Response::ok("Logging out."),
                Style::Rfc1939 => {
                    let left = self.maildrop.as_ref().map_or(0, |m| m.totals().0);
                    let host = &self.config.hostname;
                    if left == 0 {
                        Response::ok(format!("{host} POP3 server signing off (maildrop empty)"))
                    } else {
                        Response::ok(format!(
                            "{host} POP3 server signing off ({left} messages left)"
                        ))
                    }
                }
            }
        } else {
            Response::err_code(
                ResponseCode::SysTemp,
                "Some deleted messages were not removed.",
            )
        };
        self.reply(r);
        self.state = SessionState::Closed;
        Ok(())
    }

    /// Answers [`Event::StartTls`] once the handshake succeeded. Input
    /// received before the handshake is discarded, and a user name given
    /// by USER before STLS is forgotten (RFC 2595 section 4: nothing sent
    /// in clear text is acted on inside TLS).
    pub fn tls_established(&mut self) -> Result<(), UsageError> {
        self.expect("StartTls")?;
        self.input.discard_buffered();
        self.line_started = None;
        self.user_arg = None;
        self.tls_active = true;
        Ok(())
    }

    // ----- command handling -------------------------------------------

    fn log(&mut self, direction: Direction, text: String) {
        self.transcript.line(direction, text);
    }

    fn reply(&mut self, r: Response) {
        r.write_to(&mut self.out);
        if self.transcript.is_on() {
            self.transcript.line(Direction::Server, r.to_string());
        }
    }

    fn reply_multi(&mut self, r: Response, lines: &[String]) {
        self.reply(r);
        let mut s = DotStuffer::new();
        for l in lines {
            s.push(l.as_bytes(), &mut self.out);
            s.push(b"\r\n", &mut self.out);
            self.log(Direction::Server, l.clone());
        }
        s.finish(&mut self.out);
        self.log(Direction::Server, ".".into());
    }

    fn log_command(&mut self, line: &[u8]) {
        if !self.transcript.is_on() {
            return;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        let kw_end = text.find(' ');
        let kw = kw_end.map_or(&*text, |i| text.get(..i).unwrap_or(""));
        // `PASS <password>` and `AUTH <mech> <initial response>` carry
        // credentials after their first one or two words.
        let visible = if kw.eq_ignore_ascii_case("PASS") {
            kw_end.map(|i| i + 1)
        } else if kw.eq_ignore_ascii_case("AUTH") {
            kw_end.and_then(|i| {
                let after = i + 1;
                text.get(after..)
                    .and_then(|rest| rest.find(' '))
                    .map(|j| after + j + 1)
            })
        } else {
            None
        };
        self.transcript.push(match visible {
            Some(v) => TranscriptEntry::credentials(text, v),
            None => TranscriptEntry {
                direction: Direction::Client,
                kind: mail_session::EntryKind::Line,
                text,
            },
        });
    }

    /// `tls_required` and TLS not yet active: no login at all.
    fn login_needs_tls(&self) -> bool {
        self.config.tls_required && !self.tls_active
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls_active || !(self.config.plaintext_requires_tls || self.config.tls_required)
    }

    fn mechanisms(&self) -> Vec<Mechanism> {
        if self.login_needs_tls() {
            return Vec::new();
        }
        self.config
            .sasl
            .iter()
            .copied()
            .filter(|m| match m {
                Mechanism::CramMd5 => self.config.apop_timestamp.is_some(),
                _ => self.plaintext_allowed(),
            })
            .collect()
    }

    fn handle_line(&mut self, line: &[u8]) {
        if let Some(sasl) = self.sasl.take() {
            if self.transcript.is_on() {
                let text = String::from_utf8_lossy(line).into_owned();
                self.transcript.push(TranscriptEntry::credentials(text, 0));
            }
            let step = sasl.step(line);
            self.sasl_step(step);
            return;
        }
        self.log_command(line);
        match Command::parse(line) {
            Ok(cmd) => match self.state {
                SessionState::Authorization => self.authorization(cmd),
                SessionState::Transaction => self.transaction(cmd),
                // No input is read in UPDATE or after closing.
                SessionState::Update | SessionState::Closed => {}
            },
            Err(e) => self.bad(Response::err(e.to_string())),
        }
        self.count_bad_command();
    }

    /// Replies to a command that is not valid here; see
    /// [`ServerConfig::max_bad_commands`].
    fn bad(&mut self, r: Response) {
        self.reply(r);
        self.bad_command = true;
    }

    /// Counts the command just handled towards the bad-command limit, or
    /// resets the count after a valid one; at the limit the session closes.
    fn count_bad_command(&mut self) {
        if !std::mem::take(&mut self.bad_command) {
            self.bad_commands = 0;
            return;
        }
        self.bad_commands += 1;
        let limit = match self.state {
            SessionState::Authorization => self.config.max_bad_commands_before_login,
            _ => self.config.max_bad_commands,
        };
        if self.bad_commands >= limit && self.state != SessionState::Closed {
            self.reply(Response::err("Too many bad commands."));
            self.state = SessionState::Closed;
        }
    }

    fn capa(&mut self) {
        // AUTH-RESP-CODE: the [AUTH] and [SYS/...] codes of RFC 3206.
        // CAPA itself first, as Dovecot lists it.
        let mut caps: Vec<String> = vec![
            "CAPA".into(),
            "TOP".into(),
            "UIDL".into(),
            "RESP-CODES".into(),
            "PIPELINING".into(),
            "AUTH-RESP-CODE".into(),
        ];
        // The login capabilities are listed after login too, though their
        // commands are then refused: RFC 2449 section 5 ("Capabilities
        // available in the AUTHORIZATION state MUST be announced in both
        // states"; USER and SASL are "both / no" in section 6, STLS in RFC
        // 2595 section 4). Dovecot drops them after login.
        if self.config.user_pass && self.plaintext_allowed() {
            caps.push("USER".into());
        }
        let mechs = self.mechanisms();
        if !mechs.is_empty() {
            let names: Vec<&str> = mechs.iter().map(|m| m.as_str()).collect();
            caps.push(format!("SASL {}", names.join(" ")));
        }
        if self.config.tls_available && !self.tls_active {
            caps.push("STLS".into());
        }
        if let Some(i) = &self.config.implementation {
            caps.push(format!("IMPLEMENTATION {i}"));
        }
        self.reply_multi(Response::ok("Capability list follows"), &caps);
    }

    fn start_auth(&mut self, creds: Credentials) {
        self.pending_user = Some(creds.username().to_owned());
        self.awaiting = Some(Awaiting::Auth);
        self.event = Some(Event::Authenticate(creds));
    }

    fn authorization(&mut self, cmd: Command) {
        match cmd {
            Command::Apop { .. }
            | Command::Auth {
                mechanism: Some(_), ..
            } if self.login_needs_tls() => {
                self.user_arg = None;
                self.reply(tls_refused());
            }
            Command::User(name) => {
                if !self.config.user_pass {
                    self.reply(Response::err("USER/PASS is not enabled."));
                } else if !self.plaintext_allowed() {
                    self.reply(plaintext_refused());
                } else {
                    self.user_arg = Some(name);
                    self.reply(Response::ok(""));
                }
            }
            Command::Pass(_) if !self.plaintext_allowed() => {
                self.user_arg = None;
                self.reply(plaintext_refused());
            }
            Command::Pass(password) => match self.user_arg.take() {
                None => self.reply(Response::err("No username given.")),
                Some(username) => self.start_auth(Credentials::Login { username, password }),
            },
            Command::Apop { name, digest } => match self.config.apop_timestamp.clone() {
                None => self.reply(Response::err("APOP is not enabled.")),
                Some(timestamp) => {
                    self.user_arg = None;
                    self.start_auth(Credentials::Apop {
                        username: name,
                        timestamp,
                        digest: Secret::new(digest.to_ascii_lowercase()),
                    });
                }
            },
            Command::Auth {
                mechanism: None, ..
            } => {
                let names: Vec<String> = self
                    .mechanisms()
                    .iter()
                    .map(|m| m.as_str().to_owned())
                    .collect();
                self.reply_multi(Response::ok(""), &names);
            }
            Command::Auth {
                mechanism: Some(mech),
                initial_response,
            } => self.auth(&mech, initial_response),
            Command::Capa => self.capa(),
            Command::Stls => {
                // Dovecot's order: "already active" also on a pop3s
                // listener without STLS.
                if self.tls_active {
                    self.reply(Response::err("TLS is already active."));
                } else if !self.config.tls_available {
                    self.reply(Response::err("TLS support isn't enabled."));
                } else {
                    self.reply(Response::ok("Begin TLS negotiation now."));
                    // Anything pipelined after STLS was sent in clear text
                    // and must not be acted on (RFC 2595 section 4).
                    self.input.discard_buffered();
                    self.awaiting = Some(Awaiting::Tls);
                    self.event = Some(Event::StartTls);
                }
            }
            Command::Quit => {
                self.reply(Response::ok("Logging out"));
                self.state = SessionState::Closed;
            }
            Command::Noop
            | Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => {
                self.bad(Response::err("Command not valid in AUTHORIZATION state."))
            }
        }
    }

    fn auth(&mut self, mech: &str, initial: Option<Secret<String>>) {
        let Some(m) = self
            .config
            .sasl
            .iter()
            .copied()
            .find(|m| m.as_str().eq_ignore_ascii_case(mech))
        else {
            self.reply(Response::err_code(
                ResponseCode::Auth,
                "Unsupported authentication mechanism.",
            ));
            return;
        };
        if m.is_plaintext() && !self.plaintext_allowed() {
            self.reply(plaintext_refused());
            return;
        }
        // CRAM-MD5's challenge is the APOP timestamp.
        let challenge = match (m, self.config.apop_timestamp.clone()) {
            (Mechanism::CramMd5, None) => {
                self.reply(Response::err("Unsupported authentication mechanism."));
                return;
            }
            (Mechanism::CramMd5, Some(_)) if initial.is_some() => {
                // CRAM-MD5 is server-first: an initial response is a
                // protocol error (RFC 4422 section 3.3).
                self.reply(Response::err("Initial response not allowed for CRAM-MD5."));
                return;
            }
            (_, ts) => ts.unwrap_or_default(),
        };
        let initial = initial.as_ref().map(|ir| ir.expose().as_bytes());
        match ServerExchange::start(m, initial, &challenge) {
            ServerStep::BadBase64 => self.reply(Response::err_code(
                ResponseCode::Auth,
                "Invalid base64 data in initial response.",
            )),
            step => self.sasl_step(step),
        }
    }

    fn challenge(&mut self, next: ServerExchange, b64: &str) {
        self.out.extend_from_slice(b"+ ");
        self.out.extend_from_slice(b64.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.log(Direction::Server, format!("+ {b64}"));
        self.sasl = Some(next);
    }

    fn sasl_fail(&mut self) {
        self.failed_logins += 1;
        self.reply(Response::err_code(
            ResponseCode::Auth,
            "Authentication failed.",
        ));
        if self.failed_logins >= self.config.max_failed_logins {
            self.state = SessionState::Closed;
        }
    }

    fn sasl_step(&mut self, step: ServerStep) {
        match step {
            ServerStep::Challenge(next, text) => self.challenge(next, &text),
            // RFC 5034 section 4: the client cancels; reply -ERR.
            ServerStep::Cancelled => self.reply(Response::err("Authentication aborted by client.")),
            ServerStep::BadBase64 => self.reply(Response::err_code(
                ResponseCode::Auth,
                "Invalid base64 data in continued response.",
            )),
            ServerStep::Malformed => self.sasl_fail(),
            // Acting as another user is not supported.
            ServerStep::Done(Credentials::Plain {
                authzid, username, ..
            }) if !authzid.is_empty() && authzid != username => self.sasl_fail(),
            ServerStep::Done(creds) => self.start_auth(creds),
        }
    }

    fn transaction(&mut self, cmd: Command) {
        let Some(md) = self.maildrop.as_mut() else {
            return;
        };
        let style = self.config.style;
        match cmd {
            Command::Stat => {
                let (n, size) = md.totals();
                self.reply(Response::ok(format!("{n} {size}")));
            }
            Command::List(None) => {
                let (n, size) = md.totals();
                let lines: Vec<String> =
                    md.live().map(|(i, m)| format!("{i} {}", m.size)).collect();
                let text = match style {
                    Style::Dovecot => format!("{n} messages:"),
                    Style::Rfc1939 => format!("{n} messages ({size} octets)"),
                };
                self.reply_multi(Response::ok(text), &lines);
            }
            Command::List(Some(i)) => {
                let r = md.get(i).map(|m| Response::ok(format!("{i} {}", m.size)));
                self.reply(r.unwrap_or_else(|e| e));
            }
            Command::Uidl(None) => {
                let lines: Vec<String> = md.live().map(|(i, m)| format!("{i} {}", m.uid)).collect();
                self.reply_multi(Response::ok(""), &lines);
            }
            Command::Uidl(Some(i)) => {
                let r = md.get(i).map(|m| Response::ok(format!("{i} {}", m.uid)));
                self.reply(r.unwrap_or_else(|e| e));
            }
            Command::Retr(i) | Command::Top { msg: i, .. } => {
                let top = match cmd {
                    Command::Top { lines, .. } => Some(lines),
                    _ => None,
                };
                match md.get(i) {
                    Err(e) => self.reply(e),
                    Ok(m) => {
                        let status = match top {
                            None => Response::ok(format!("{} octets", m.size)),
                            Some(_) => Response::ok(""),
                        };
                        let ev = Event::Retrieve {
                            message: MessageRef {
                                number: i,
                                uid: m.uid.clone(),
                            },
                            size: m.size,
                            top,
                        };
                        self.awaiting = Some(Awaiting::Message(Box::new(Stream {
                            number: i,
                            status: Some(status),
                            stuffer: DotStuffer::new(),
                            top: top.map(TopFilter::new),
                        })));
                        self.event = Some(ev);
                    }
                }
            }
            Command::Dele(i) => {
                let r = match md.get(i) {
                    Err(e) => e,
                    Ok(_) => {
                        let idx = usize::try_from(i).unwrap_or(usize::MAX).wrapping_sub(1);
                        if let Some(d) = md.deleted.get_mut(idx) {
                            *d = true;
                        }
                        match style {
                            Style::Dovecot => Response::ok("Marked to be deleted."),
                            Style::Rfc1939 => Response::ok(format!("message {i} deleted")),
                        }
                    }
                };
                self.reply(r);
            }
            Command::Rset => {
                md.deleted.iter_mut().for_each(|d| *d = false);
                let r = match style {
                    Style::Dovecot => Response::ok(""),
                    Style::Rfc1939 => {
                        let (n, size) = md.totals();
                        Response::ok(format!("maildrop has {n} messages ({size} octets)"))
                    }
                };
                self.reply(r);
            }
            Command::Noop => self.reply(Response::ok("")),
            Command::Quit => {
                let deleted: Vec<MessageRef> = md
                    .messages
                    .iter()
                    .zip(md.deleted.iter())
                    .zip(1u32..)
                    .filter(|((_, d), _)| **d)
                    .map(|((m, _), number)| MessageRef {
                        number,
                        uid: m.uid.clone(),
                    })
                    .collect();
                self.state = SessionState::Update;
                self.awaiting = Some(Awaiting::Update);
                self.event = Some(Event::Update { deleted });
            }
            Command::Capa => self.capa(),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => self.bad(Response::err("Command not valid in TRANSACTION state.")),
        }
    }
}

/// Dovecot's answer to a login before TLS under `ssl = required`.
fn tls_refused() -> Response {
    Response::err_code(
        ResponseCode::Auth,
        "Authentication not allowed until SSL/TLS is enabled.",
    )
}

fn plaintext_refused() -> Response {
    Response::err_code(
        ResponseCode::Auth,
        "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
    )
}

mail_session::impl_session!(ServerSession, Event, transcript_and_tls);

#[cfg(test)]
#[path = "server_tests.rs"]
pub(crate) mod tests;
