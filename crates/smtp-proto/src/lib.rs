//! Sans-I/O ESMTP engine: command and reply codec, one framing layer, and
//! server and client sessions that a host drives with bytes, time values
//! and answers to decision events. No sockets, no async runtime, no clock.
//!
//! * [`command`]: [`Command::parse`] (zero-copy, every RFC 5321 command
//!   plus AUTH, STARTTLS, BDAT) and formatting.
//! * [`reply`]: [`Reply`] with RFC 3463 enhanced status codes, single and
//!   multi-line, formatting and [`Reply::parse`].
//! * [`framer`]: the only code that cuts input into command lines, SASL
//!   responses, DATA bodies (dot-unstuffing, smuggling-proof end of data)
//!   and BDAT chunks.
//! * [`server`]: [`ServerSession`], the receiver, with Postfix's reply texts.
//! * [`client`]: [`ClientSession`], the sender (EHLO/HELO, STARTTLS, AUTH,
//!   PIPELINING).
//! * [`transcript`]: `C:`/`S:` lines of a dialogue, credentials marked.
//!
//! What SMTP shares with POP3 (the [`Session`] contract, [`Interrupt`], the
//! framer, dot-stuffing, SASL, [`Secret`], the transcript) lives in the
//! `mail-session` crate and is re-exported here; its `driver` (feature
//! `tokio`) runs the loop below over a tokio socket.
//!
//! # TLS
//!
//! The sessions never see TLS records; the host runs the handshake when a
//! session asks and then feeds decrypted bytes.
//!
//! * STARTTLS (RFC 3207): with [`ServerConfig::tls_available`] the server
//!   advertises it before TLS, answers `220 2.0.0 Ready to start TLS` and
//!   returns [`Event::StartTls`]. Plaintext pipelined behind STARTTLS is
//!   discarded, never executed inside TLS (the CVE-2011-0411 class), and
//!   [`ServerSession::tls_established`] forgets EHLO, AUTH and the
//!   transaction (section 4.2). STARTTLS inside TLS gets `554 5.5.1 Error:
//!   TLS already active`, with an argument `501 5.5.4 Syntax: STARTTLS`.
//! * Implicit TLS (RFC 8314, `submissions` on port 465):
//!   [`ServerConfig::tls_active`].
//! * Policy: [`ServerConfig::plaintext_auth_requires_tls`] (PLAIN and LOGIN
//!   only inside TLS, `538 5.7.11` of RFC 4954 section 6 before; CRAM-MD5
//!   stays usable) and [`ServerConfig::tls_required`] (`530 5.7.0 Must
//!   issue a STARTTLS command first`, RFC 3207 section 4).
//!   [`Envelope::protocol`] names the `Received:` protocol (`ESMTPS`,
//!   `ESMTPSA`, RFC 3848).
//! * The client upgrades per [`ClientTls`] and reports
//!   [`ClientEvent::StartTls`]; see [`client`].
//!
//! # Driving a server session
//!
//! One [`ServerSession`] serves one connection. The host owns the socket
//! and the clock (any monotonic clock, given as a [`Duration`] since an
//! epoch the host picks, e.g. `Instant::now() - start`). Call
//! [`ServerSession::next`] in a loop and act on what it returns:
//!
//! | `next()` returns | the host then |
//! |---|---|
//! | `Err(Interrupt::Output(bytes))` | writes all `bytes` to the client |
//! | `Err(Interrupt::NeedInput)` | waits for the socket to be readable, or for [`ServerSession::poll_timeout`] to pass; passes what it read to [`ServerSession::enqueue_input`] or calls [`ServerSession::handle_timeout`] |
//! | (the read returned 0: end of file) | calls [`ServerSession::input_closed`] and goes on calling `next` (a complete pipelined message is still delivered, an unfinished one is aborted) |
//! | `Err(Interrupt::Close)` | closes the connection (sticky: every later call says `Close`) |
//! | `Ok(Event::Mail { .. })`, `Ok(Event::Rcpt { .. })`, `Ok(Event::Vrfy { .. })` | decides, calls [`ServerSession::decide`] |
//! | `Ok(Event::Auth(credentials))` | checks them, calls [`ServerSession::auth_result`] |
//! | `Ok(Event::AuthChallenge)` | calls [`ServerSession::provide_challenge`] with a fresh CRAM-MD5 challenge |
//! | `Ok(Event::MessageStart)` | opens a temporary file |
//! | `Ok(Event::BodyChunk(bytes))` | appends the (already dot-unstuffed) bytes |
//! | `Ok(Event::MessageEnd(envelope))` | makes the message durable (fsync, rename), then calls [`ServerSession::message_result`]; `250` is sent only now |
//! | `Ok(Event::MessageAborted(_))` | discards the temporary file |
//! | `Ok(Event::StartTls)` | the `220` reply has already been returned as `Output`: runs the TLS handshake, then calls [`ServerSession::tls_established`] and from then on passes decrypted bytes (or closes if the handshake fails) |
//! | `Ok(Event::Helo { .. })` | nothing required (logging) |
//!
//! A decision event must be answered before `next` is called again
//! (otherwise it returns [`Interrupt::AwaitingHost`]). While the host
//! decides, the session keeps any pipelined input buffered and replies in
//! order afterwards; replies are batched as RFC 2920 section 3.2 says and
//! handed out when the buffered input is exhausted, at once for EHLO, DATA,
//! BDAT LAST, QUIT and unknown commands. Read from the socket only after
//! `NeedInput`: memory then stays bounded by the configured limits.
//! With [`ServerConfig::record_transcript`] set, [`ServerSession::poll_transcript`]
//! yields the dialogue line by line for `C:`/`S:` logs.
//!
//! ```
//! use std::time::Duration;
//! use smtp_proto::{Delivery, Event, Interrupt, ServerConfig, ServerSession, Verdict};
//!
//! let mut session = ServerSession::new(ServerConfig::new("mail.example.org"), Duration::ZERO);
//! // What a client sends, here all at once (pipelined); any split works.
//! let mut input: Vec<&[u8]> = vec![b"EHLO client.example\r\nMAIL FROM:<a@example.net>\r\n\
//!     RCPT TO:<b@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n"];
//! let (mut sent, mut body) = (Vec::new(), Vec::new());
//! loop {
//!     match session.next() {
//!         Ok(Event::Mail { .. } | Event::Rcpt { .. } | Event::Vrfy { .. }) => {
//!             session.decide(Verdict::Accept).unwrap()
//!         }
//!         Ok(Event::BodyChunk(bytes)) => body.extend_from_slice(&bytes),
//!         Ok(Event::MessageEnd(envelope)) => {
//!             assert_eq!(envelope.recipients.len(), 1);
//!             // ... store `body` durably, then:
//!             session.message_result(Delivery::Accepted { queue_id: "4F2A".into() }).unwrap();
//!         }
//!         Ok(_) => {}
//!         Err(Interrupt::Output(bytes)) => sent.extend_from_slice(&bytes),
//!         Err(Interrupt::NeedInput) => match input.pop() {
//!             Some(bytes) => session.enqueue_input(Duration::from_secs(1), bytes),
//!             None => session.handle_timeout(session.poll_timeout().unwrap()),
//!         },
//!         Err(Interrupt::Close) => break,
//!         Err(Interrupt::AwaitingHost) => unreachable!(),
//!     }
//! }
//! assert_eq!(body, b"Subject: hi\r\n\r\n.dot\r\n");
//! let sent = String::from_utf8(sent).unwrap();
//! assert!(sent.starts_with("220 mail.example.org ESMTP\r\n250-mail.example.org\r\n"));
//! assert!(sent.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n\
//!     250 2.0.0 Ok: queued as 4F2A\r\n221 2.0.0 Bye\r\n"));
//! ```
//!
//! [`Duration`]: std::time::Duration
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod client;
pub mod command;
pub mod downgrade;
pub mod reply;
pub mod server;

/// The framing layer, shared with POP3 (see [`mail_session::framer`]).
pub use mail_session::framer;
/// SASL mechanisms and credentials, shared with POP3.
pub use mail_session::sasl;
/// The `C:`/`S:` transcript, shared with POP3.
pub use mail_session::transcript;

pub use client::{
    ClientConfig, ClientError, ClientEvent, ClientSession, ClientTls, MessageReport, NotSent,
    OutgoingMessage, RcptDsn, DATA_BLOCK_TIMEOUT,
};
pub use command::{
    BodyType, Command, ForwardPath, MailParameters, Mailbox, ParseError, RcptParameters,
    ReversePath, Verb,
};
pub use mail_session::{
    cram_md5_digest, stuff_data, BareLf, Credentials, Direction, EntryKind, Frame, Framer,
    Interrupt, Mechanism, Secret, Session, TranscriptEntry,
};
pub use reply::{EnhancedStatus, Reply, ReplyError};
pub use server::{
    AbortReason, AuthResult, Delivery, Envelope, Event, ServerConfig, ServerSession, UsageError,
    Verdict,
};
