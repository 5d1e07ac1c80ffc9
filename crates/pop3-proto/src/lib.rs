//! Sans-I/O POP3 (RFC 1939 with RFC 2449 CAPA and response codes, RFC 2595
//! STLS, RFC 5034 SASL AUTH).
//!
//! The crate does no I/O and reads no clock: the host moves bytes between
//! the network and a session, answers the session's [`Event`]s (password
//! checks, opening the maildrop, message data, expunging), and passes time
//! in as a [`std::time::Duration`] since an epoch it picks. What POP3
//! shares with SMTP (the session contract [`Session`], [`Interrupt`], the
//! framer, dot-stuffing, SASL, [`Secret`], the transcript) comes from the
//! `mail-session` crate and is re-exported here.
//!
//! * Codec: [`Command`], [`Response`], byte-stuffing ([`DotStuffer`],
//!   [`DotUnstuffer`]) and [`TopFilter`].
//! * [`ServerSession`]: the server side (what `pop3d` drives).
//! * [`ClientSession`]: the client side, for tools and tests.
//!
//! # TLS
//!
//! The sessions never see TLS records; the host runs the handshake when a
//! session asks and then feeds decrypted bytes.
//!
//! * STLS (RFC 2595 section 4): with [`ServerConfig::tls_available`] the
//!   server lists `STLS` in CAPA before TLS, answers `+OK Begin TLS
//!   negotiation now.` and returns [`Event::StartTls`]; whatever the client
//!   pipelined behind STLS is discarded, never executed inside TLS, and
//!   [`ServerSession::tls_established`] forgets a user name given with
//!   USER. STLS inside TLS or in the TRANSACTION state is refused.
//! * Implicit TLS (RFC 8314, pop3s on port 995): [`ServerConfig::tls_active`].
//! * Policy, as Dovecot: [`ServerConfig::plaintext_requires_tls`]
//!   (`disable_plaintext_auth`: USER/PASS, PLAIN and LOGIN only inside
//!   TLS; APOP and CRAM-MD5 stay usable) and [`ServerConfig::tls_required`]
//!   (`ssl = required`: no login at all before TLS).
//! * [`ClientSession`] speaks STLS: see [`client`].
//!
//! # Framing decisions
//!
//! Command lines are at most 255 octets including CRLF (RFC 2449 section
//! 4), except that before login `PASS` and `AUTH` lines may be as long as
//! a SASL response (a long password, a long initial response), as Dovecot
//! takes them. A longer line gets `-ERR Input line too long.` and is
//! skipped up to its end; none of its bytes are ever parsed as a command. A bare LF ends
//! a command line as CRLF does (Dovecot accepts bare LF on POP3 command
//! lines; the client sends no message data, so there is nothing to
//! smuggle). A CR elsewhere in a line makes it invalid. SASL responses
//! may be up to [`MAX_SASL_LINE`] octets.
//!
//! # Driving a server session
//!
//! 1. Create it with [`ServerSession::new`]`(config, now)`; the greeting is
//!    already queued.
//! 2. Loop on [`ServerSession::next`]:
//!    * `Err(Interrupt::Output(bytes))`: write `bytes` to the socket, loop.
//!    * `Err(Interrupt::NeedInput)`: read from the socket with a deadline of
//!      [`ServerSession::poll_timeout`]. On data call
//!      [`ServerSession::enqueue_input`]`(now, bytes)`; on the deadline call
//!      [`ServerSession::handle_timeout`]`(now)`; on end of file call
//!      [`ServerSession::input_closed`] (buffered commands still run, then
//!      the session closes; nothing is deleted without `QUIT`). Loop.
//!    * `Ok(event)`: answer it with the method its docs name (for example
//!      [`Event::Authenticate`] with [`ServerSession::auth_result`]), loop.
//!    * `Err(Interrupt::AwaitingHost)`: an event is unanswered; only seen
//!      while streaming a message: give the next chunk or end it.
//!    * `Err(Interrupt::Close)`: all output has been handed out; close the
//!      connection (and release the maildrop lock if held).
//!
//! `mail-session`'s driver (feature `tokio`) runs this loop over a tokio
//! socket.
//! 3. For [`Event::Retrieve`], read the message file in chunks (CRLF line
//!    ends): for each chunk call [`ServerSession::message_data`] and write
//!    out what `next` returns as `Output` until it returns `AwaitingHost`;
//!    stop early when `message_data` returns `false`; finally call
//!    [`ServerSession::message_end`] (or [`ServerSession::message_failed`], or
//!    [`ServerSession::message_gone`] when the message was removed since).
//!
//! The session is also fine to feed one byte at a time: the output is the
//! same as for one big input.
//!
//! # Example: the APOP login of RFC 1939 section 7
//!
//! ```
//! use std::time::Duration;
//! use pop3_proto::*;
//!
//! let config = ServerConfig {
//!     greeting: "POP3 server ready".into(),
//!     apop_timestamp: Some("<1896.697170952@dbc.mtview.ca.us>".into()),
//!     ..ServerConfig::default()
//! };
//! let mut s = ServerSession::new(config, Duration::ZERO);
//! let mut wire = Vec::new();
//! s.enqueue_input(Duration::from_secs(1), b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\n");
//! loop {
//!     match s.next() {
//!         Err(Interrupt::Output(b)) => wire.extend(b),
//!         Ok(Event::Authenticate(creds @ Credentials::Apop { .. })) => {
//!             // The host looks up the user's secret; APOP needs it clear.
//!             let ok = creds.verify_password("tanstaaf");
//!             s.auth_result(if ok { AuthResult::Accepted } else { AuthResult::Rejected })?;
//!         }
//!         Ok(Event::OpenMaildrop { user }) => {
//!             assert_eq!(user, "mrose");
//!             s.maildrop_opened(vec![
//!                 MessageInfo { size: 120, uid: "a1".into() },
//!                 MessageInfo { size: 200, uid: "b2".into() },
//!             ])?;
//!         }
//!         Err(Interrupt::NeedInput) => break,
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! assert_eq!(
//!     String::from_utf8(wire)?,
//!     "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n\
//!      +OK Logged in.\r\n\
//!      +OK 2 320\r\n"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
pub mod response;
pub mod server;
pub mod top;

/// SASL mechanisms and credentials, shared with SMTP.
pub use mail_session::sasl;
/// The `C:`/`S:` transcript, shared with SMTP.
pub use mail_session::transcript;

pub use client::{parse_list, parse_stat, parse_uidl, ClientError, ClientEvent, ClientSession};
pub use command::{Command, CommandError, MAX_COMMAND_LINE};
pub use mail_session::{
    apop_digest, cram_md5_digest, digest_eq, stuff, unstuff, Credentials, Direction, DotStuffer,
    DotUnstuffer, EntryKind, Interrupt, Mechanism, Secret, Session, TranscriptEntry,
};
pub use response::{Response, ResponseCode, ResponseError, Status};
pub use server::{
    apop_timestamp, AuthResult, Event, MaildropError, MessageInfo, MessageRef, ServerConfig,
    ServerSession, SessionState, Style, UsageError, MAX_SASL_LINE, MIN_IDLE_TIMEOUT,
};
pub use top::TopFilter;
