//! The client side of a POP3 connection (Sans-I/O), for tools and tests.
//!
//! Drive it like the server: [`ClientSession::enqueue_input`] with bytes
//! from the server, [`ClientSession::send`] to queue commands (pipelining
//! is fine: responses come back in order), and loop on
//! [`ClientSession::next`] until it asks for input.
//!
//! Multi-line bodies are un-stuffed and handed over whole, so a retrieved
//! message is held in memory (up to [`ClientSession::max_body`] octets).
//!
//! # TLS
//!
//! `STLS` (RFC 2595 section 4): send [`Command::Stls`]; commands queued
//! after it are held back, never sent in clear text. When its answer comes
//! as [`ClientEvent::Response`] with `+OK`, the session returns
//! [`Interrupt::AwaitingHost`] until the host has run the TLS handshake and
//! called [`ClientSession::tls_established`], which discards whatever
//! arrived in clear text after the `+OK` and sends the held commands inside
//! TLS. After `-ERR` they are sent at once. Over implicit TLS (pop3s, port
//! 995, RFC 8314) start with [`ClientSession::new_tls`].

use std::collections::VecDeque;
use std::time::Duration;

use mail_session::{apop_digest, DotUnstuffer, Interrupt};

use crate::command::Command;
use crate::response::{Response, ResponseError};
use crate::server::UsageError;

/// Longest status line the client accepts, CRLF included. RFC 2449
/// section 4 limits responses to 512 octets; some servers are generous.
pub const MAX_STATUS_LINE: usize = 1024;

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The greeting.
    Greeting {
        /// The status line.
        response: Response,
        /// The APOP timestamp `<...@...>` if the greeting has one.
        timestamp: Option<String>,
    },
    /// A single-line answer (also `-ERR` to a multi-line command).
    Response {
        /// The command it answers.
        command: Command,
        /// The status line.
        response: Response,
    },
    /// A `+OK` multi-line answer with its un-stuffed body (CRLF lines,
    /// terminator removed).
    MultiLine {
        /// The command it answers.
        command: Command,
        /// The status line.
        response: Response,
        /// The body.
        body: Vec<u8>,
    },
    /// A SASL challenge (`+ base64`) during AUTH; answer with
    /// [`ClientSession::send_sasl_response`].
    Challenge(String),
    /// The server broke the protocol, closed early or did not answer in
    /// time; the session is over (every later `next` says `Close`).
    Failed(ClientError),
}

/// A protocol violation by the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A status line could not be parsed.
    #[error("bad status line: {0}")]
    BadResponse(#[from] ResponseError),
    /// The greeting was `-ERR`.
    #[error("server refused the connection: {0}")]
    Refused(String),
    /// A status line exceeded [`MAX_STATUS_LINE`].
    #[error("status line too long")]
    LineTooLong,
    /// A multi-line body exceeded the configured limit.
    #[error("response body too large")]
    BodyTooLarge,
    /// The server sent a line when no response was expected.
    #[error("unexpected data from server")]
    Unexpected,
    /// APOP was requested but the greeting had no timestamp.
    #[error("greeting has no APOP timestamp")]
    NoTimestamp,
    /// The server closed the connection while answers were due.
    #[error("connection closed by the server")]
    ConnectionClosed,
    /// No answer within [`ClientSession::response_timeout`].
    #[error("timeout waiting for the server")]
    Timeout,
}

#[derive(Debug)]
struct Body {
    command: Command,
    response: Response,
    unstuffer: DotUnstuffer,
    data: Vec<u8>,
}

/// A client-side POP3 session.
#[derive(Debug)]
pub struct ClientSession {
    input: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    greeted: bool,
    timestamp: Option<String>,
    pending: VecDeque<Command>,
    body: Option<Body>,
    failed: bool,
    timed_out: bool,
    eof: bool,
    last_activity: Duration,
    /// TLS is active (implicit, or after STLS and the handshake).
    tls_active: bool,
    /// `+OK` to STLS handed out; waiting for the host's handshake.
    tls_pending: bool,
    /// Commands queued after STLS, held until TLS is up or refused.
    held: Vec<Command>,
    /// Largest multi-line body accepted (default 64 MiB).
    pub max_body: usize,
    /// How long to wait for the server while answers are due (default 10
    /// minutes, the idle time RFC 1939 section 3 gives a server).
    pub response_timeout: Duration,
}

impl Default for ClientSession {
    fn default() -> Self {
        ClientSession::new()
    }
}

fn is_multiline(c: &Command) -> bool {
    matches!(
        c,
        Command::List(None)
            | Command::Uidl(None)
            | Command::Retr(_)
            | Command::Top { .. }
            | Command::Capa
            | Command::Auth {
                mechanism: None,
                ..
            }
    )
}

/// The `<...>` part of a greeting holding an `@` (RFC 1939 section 7).
fn find_timestamp(text: &str) -> Option<String> {
    let start = text.find('<')?;
    let rest = text.get(start..)?;
    let end = rest.find('>')?;
    let ts = rest.get(..=end)?;
    ts.contains('@').then(|| ts.to_owned())
}

impl ClientSession {
    /// A session waiting for the greeting.
    pub fn new() -> ClientSession {
        ClientSession {
            input: Vec::new(),
            pos: 0,
            out: Vec::new(),
            greeted: false,
            timestamp: None,
            pending: VecDeque::new(),
            body: None,
            failed: false,
            timed_out: false,
            eof: false,
            last_activity: Duration::ZERO,
            tls_active: false,
            tls_pending: false,
            held: Vec::new(),
            max_body: 64 << 20,
            response_timeout: Duration::from_secs(600),
        }
    }

    /// A session over a connection that is TLS from its first octet
    /// (pop3s, RFC 8314 section 3.3).
    pub fn new_tls() -> ClientSession {
        ClientSession {
            tls_active: true,
            ..ClientSession::new()
        }
    }

    /// Whether TLS is active (implicit, or after
    /// [`tls_established`](Self::tls_established)).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Call once the TLS handshake that followed `+OK` to STLS is
    /// complete: input received before it is discarded (a man in the
    /// middle may have appended answers in clear text), and the commands
    /// held since STLS are sent. From now on
    /// [`enqueue_input`](Self::enqueue_input) takes decrypted bytes.
    pub fn tls_established(&mut self) -> Result<(), UsageError> {
        if !self.tls_pending {
            return Err(UsageError::NotAwaiting("StartTls"));
        }
        self.tls_pending = false;
        self.tls_active = true;
        self.input.clear();
        self.pos = 0;
        self.release_held();
        Ok(())
    }

    fn release_held(&mut self) {
        for c in std::mem::take(&mut self.held) {
            self.send(c);
        }
    }

    /// Bytes received from the server at time `now` (the host's clock,
    /// any epoch).
    pub fn enqueue_input(&mut self, now: Duration, bytes: &[u8]) {
        self.last_activity = now;
        if self.pos > 0 && self.pos >= self.input.len() / 2 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The server closed its side: answers still buffered are handed out,
    /// then, if more were due, [`ClientEvent::Failed`] with
    /// [`ClientError::ConnectionClosed`].
    pub fn input_closed(&mut self) {
        self.eof = true;
    }

    /// When [`ClientSession::handle_timeout`] should be called: while the
    /// greeting or answers are due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let waiting = !self.greeted || !self.pending.is_empty();
        (waiting && !self.failed).then(|| self.last_activity.saturating_add(self.response_timeout))
    }

    /// Tells the session the time; past the deadline it fails.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.timed_out = true;
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

    /// The APOP timestamp from the greeting, once received.
    pub fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }

    /// Commands sent and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues a command; its answer comes back as an event in order.
    /// After STLS the command waits until TLS is up or STLS is refused.
    pub fn send(&mut self, command: Command) {
        if self.tls_pending || self.pending.contains(&Command::Stls) {
            self.held.push(command);
            return;
        }
        command.write_to(&mut self.out);
        self.pending.push_back(command);
    }

    /// Queues `APOP user digest` computed from the greeting's timestamp.
    pub fn send_apop(&mut self, user: &str, secret: &str) -> Result<(), ClientError> {
        let ts = self.timestamp.as_deref().ok_or(ClientError::NoTimestamp)?;
        let digest = apop_digest(ts, secret);
        self.send(Command::Apop {
            name: user.to_owned(),
            digest,
        });
        Ok(())
    }

    /// Queues a SASL response line (base64, or `*` to cancel).
    pub fn send_sasl_response(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn fail(&mut self, e: ClientError) -> ClientEvent {
        self.failed = true;
        ClientEvent::Failed(e)
    }

    /// Nothing more will come: fail if answers were due, else close.
    fn ended(&mut self, e: ClientError) -> Result<ClientEvent, Interrupt> {
        if !self.greeted || !self.pending.is_empty() || self.body.is_some() {
            return Ok(self.fail(e));
        }
        self.failed = true;
        Err(Interrupt::Close)
    }

    fn take_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        match memchr::memchr(b'\n', rest) {
            Some(j) if j + 1 > MAX_STATUS_LINE => Err(ClientError::LineTooLong),
            Some(j) => {
                let mut line = rest.get(..j).unwrap_or_default();
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                let line = line.to_vec();
                self.pos += j + 1;
                Ok(Some(line))
            }
            None if rest.len() >= MAX_STATUS_LINE => Err(ClientError::LineTooLong),
            None => Ok(None),
        }
    }

    /// Returns the next server answer, or what I/O is needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<ClientEvent, Interrupt> {
        if self.failed {
            return Err(Interrupt::Close);
        }
        if self.tls_pending {
            // Nothing is read or written in clear text after `+OK` to STLS.
            return Err(Interrupt::AwaitingHost);
        }
        if !self.out.is_empty() {
            return Err(Interrupt::Output(std::mem::take(&mut self.out)));
        }
        if self.timed_out {
            return self.ended(ClientError::Timeout);
        }
        if let Some(mut b) = self.body.take() {
            let rest = self.input.get(self.pos..).unwrap_or_default();
            let end = b.unstuffer.push(rest, &mut b.data);
            if b.data.len() > self.max_body {
                return Ok(self.fail(ClientError::BodyTooLarge));
            }
            match end {
                Some(n) => {
                    self.pos += n;
                    return Ok(ClientEvent::MultiLine {
                        command: b.command,
                        response: b.response,
                        body: b.data,
                    });
                }
                None => {
                    self.pos = self.input.len();
                    self.body = Some(b);
                    if self.eof {
                        return self.ended(ClientError::ConnectionClosed);
                    }
                    return Err(Interrupt::NeedInput);
                }
            }
        }
        let line = match self.take_line() {
            Ok(Some(l)) => l,
            Ok(None) if self.eof => return self.ended(ClientError::ConnectionClosed),
            Ok(None) => return Err(Interrupt::NeedInput),
            Err(e) => return Ok(self.fail(e)),
        };
        if !self.greeted {
            let response = match Response::parse(&line) {
                Ok(r) => r,
                Err(e) => return Ok(self.fail(e.into())),
            };
            if !response.is_ok() {
                return Ok(self.fail(ClientError::Refused(response.text)));
            }
            self.greeted = true;
            self.timestamp = find_timestamp(&response.text);
            return Ok(ClientEvent::Greeting {
                timestamp: self.timestamp.clone(),
                response,
            });
        }
        // "+ challenge" during AUTH (RFC 5034 section 4).
        if let Some(ch) = line
            .strip_prefix(b"+ ")
            .or((line == b"+").then_some(&b""[..]))
        {
            if matches!(
                self.pending.front(),
                Some(Command::Auth {
                    mechanism: Some(_),
                    ..
                })
            ) {
                return Ok(ClientEvent::Challenge(
                    String::from_utf8_lossy(ch).into_owned(),
                ));
            }
            return Ok(self.fail(ClientError::Unexpected));
        }
        let Some(command) = self.pending.pop_front() else {
            return Ok(self.fail(ClientError::Unexpected));
        };
        let response = match Response::parse(&line) {
            Ok(r) => r,
            Err(e) => return Ok(self.fail(e.into())),
        };
        if response.is_ok() && is_multiline(&command) {
            self.body = Some(Body {
                command,
                response,
                unstuffer: DotUnstuffer::new(),
                data: Vec::new(),
            });
            return self.next();
        }
        if command == Command::Stls {
            if response.is_ok() {
                self.tls_pending = true;
            } else {
                self.release_held();
            }
        }
        Ok(ClientEvent::Response { command, response })
    }
}

// The client has TLS but no transcript.
mail_session::impl_session!(ClientSession, ClientEvent, tls);

/// Parses a `STAT` answer text `count size`.
pub fn parse_stat(r: &Response) -> Option<(u32, u64)> {
    let mut it = r.text.split(' ');
    let n = it.next()?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    Some((n, s))
}

/// Parses a `LIST` body into (number, size) pairs; `None` if malformed.
pub fn parse_list(body: &[u8]) -> Option<Vec<(u32, u64)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Parses a `UIDL` body into (number, unique id) pairs; `None` if malformed.
pub fn parse_uidl(body: &[u8]) -> Option<Vec<(u32, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .map(|l| {
            let (n, u) = l.split_once(' ')?;
            Some((n.parse().ok()?, u.to_owned()))
        })
        .collect()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
