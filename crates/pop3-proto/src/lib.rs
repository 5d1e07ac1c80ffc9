//! Sans-I/O POP3 (RFC 1939 with RFC 2449 CAPA and response codes, RFC 2595
//! STLS, RFC 5034 SASL AUTH).
//!
//! The crate does no I/O and reads no clock: the host moves bytes between
//! the network and a session, answers the session's [`Event`]s (password
//! checks, opening the maildrop, message data, expunging), and passes time
//! in as an [`std::time::Instant`] value.
//!
//! * Codec: [`Command`], [`Response`], byte-stuffing ([`DotStuffer`],
//!   [`DotUnstuffer`], [`TopFilter`]).
//! * [`ServerSession`]: the server side (what `pop3d` drives).
//! * [`ClientSession`]: the client side, for tools and tests.
//!
//! # Framing decisions
//!
//! Command lines are at most 255 octets including CRLF (RFC 2449 section
//! 4). A longer line gets `-ERR Input line too long.` and is skipped up to
//! its end; none of its bytes are ever parsed as a command. A bare LF ends
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
//!      [`ServerSession::enqueue_input`] then
//!      [`ServerSession::handle_timeout`]`(now)`; on the deadline call
//!      `handle_timeout(now)`; on end of file drop the session (nothing is
//!      deleted; release the maildrop lock if one is held). Loop.
//!    * `Ok(event)`: answer it with the method its docs name (for example
//!      [`Event::Authenticate`] with [`ServerSession::auth_result`]), loop.
//!    * `Err(Interrupt::AwaitingHost)`: an event is unanswered; only seen
//!      while streaming a message: give the next chunk or end it.
//!    * `Err(Interrupt::Close)`: all output has been handed out; close the
//!      connection (and release the maildrop lock if held).
//! 3. For [`Event::Retrieve`], read the message file in chunks (CRLF line
//!    ends): for each chunk call [`ServerSession::message_data`] and write
//!    out what `next` returns as `Output` until it returns `AwaitingHost`;
//!    stop early when `message_data` returns `false`; finally call
//!    [`ServerSession::message_end`] (or [`ServerSession::message_failed`]).
//!
//! The session is also fine to feed one byte at a time: the output is the
//! same as for one big input.
//!
//! # Example: the APOP login of RFC 1939 section 7
//!
//! ```
//! use std::time::Instant;
//! use pop3_proto::*;
//!
//! let config = ServerConfig {
//!     greeting: "POP3 server ready".into(),
//!     apop_timestamp: Some("<1896.697170952@dbc.mtview.ca.us>".into()),
//!     ..ServerConfig::default()
//! };
//! let mut s = ServerSession::new(config, Instant::now());
//! let mut wire = Vec::new();
//! s.enqueue_input(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\n");
//! loop {
//!     match s.next() {
//!         Err(Interrupt::Output(b)) => wire.extend(b),
//!         Ok(Event::Authenticate(Credentials::Apop { timestamp, digest, .. })) => {
//!             let ok = digest_eq(&apop_digest(&timestamp, "tanstaaf"), &digest);
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

mod auth;
pub mod client;
pub mod command;
mod framer;
pub mod response;
mod secret;
pub mod server;
pub mod stuff;

pub use auth::{apop_digest, cram_md5_digest, digest_eq};
pub use client::{
    parse_list, parse_stat, parse_uidl, ClientError, ClientEvent, ClientInterrupt, ClientSession,
};
pub use command::{Command, CommandError, MAX_COMMAND_LINE};
pub use response::{Response, ResponseCode, ResponseError, Status};
pub use secret::Secret;
pub use server::{
    apop_timestamp, AuthResult, Credentials, Direction, Event, Interrupt, MaildropError,
    MessageInfo, MessageRef, SaslMechanism, ServerConfig, ServerSession, SessionState, Style,
    TranscriptLine, UsageError, MAX_SASL_LINE, MIN_IDLE_TIMEOUT,
};
pub use stuff::{stuff, unstuff, DotStuffer, DotUnstuffer, TopFilter};
