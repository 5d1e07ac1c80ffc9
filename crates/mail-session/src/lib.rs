//! The Sans-I/O core shared by the workspace's mail protocol sessions
//! (`smtp-proto`, `pop3-proto`): what SMTP and POP3 have in common, written
//! once.
//!
//! * [`Session`] and [`Interrupt`]: the contract. A session takes bytes
//!   and time with [`Session::enqueue_input`], and the host pulls what to
//!   do next with `next()`: an event to answer, or an [`Interrupt`] (send
//!   these bytes, need input, awaiting your answer, close). Time is a
//!   [`Duration`](std::time::Duration) since an epoch the host picks.
//! * [`Framer`]: the one audited framing layer. It cuts input into command
//!   lines (capped; an oversized line is skipped whole), SMTP DATA bodies
//!   (dot-unstuffed, ended only by a real `<CRLF>.<CRLF>`) and BDAT chunks.
//! * [`stuff`](mod@stuff): dot-stuffing and un-stuffing, streaming or whole.
//! * [`sasl`]: PLAIN, LOGIN and CRAM-MD5 for servers and clients,
//!   [`Credentials`], and the CRAM-MD5 (HMAC-MD5) and APOP digests.
//! * [`Secret`]: keeps passwords out of `Debug` output.
//! * [`transcript`]: `C:`/`S:` lines with credentials marked, redacted by
//!   the host's choice.
//! * `driver` (feature `tokio`): one async driver that moves bytes between
//!   a tokio socket and any session.
//!
//! No sockets, no files, no clock outside the optional driver.
//!
//! # Example: a SASL PLAIN exchange, server side
//!
//! ```
//! use mail_session::sasl::{client, Credentials, Mechanism, ServerExchange, ServerStep};
//! use mail_session::{stuff, unstuff};
//!
//! // The client sends AUTH PLAIN without an initial response ...
//! let ServerStep::Challenge(state, challenge) = ServerExchange::start(Mechanism::Plain, None, "")
//! else { unreachable!() };
//! assert_eq!(challenge, ""); // sent as "334 " or "+ "
//! // ... then its response line.
//! let line = client::plain("", "user1", "secret");
//! let ServerStep::Done(creds) = state.step(line.as_bytes()) else { unreachable!() };
//! assert_eq!(creds.username(), "user1");
//! assert!(creds.verify_password("secret"));
//! assert!(!format!("{creds:?}").contains("secret")); // redacted in logs
//!
//! // Dot-stuffing round trip (RFC 5321 section 4.5.2, RFC 1939 section 3).
//! let wire = stuff(b".hidden\r\nline\r\n");
//! assert_eq!(wire, b"..hidden\r\nline\r\n.\r\n");
//! assert_eq!(unstuff(&wire).unwrap(), b".hidden\r\nline\r\n");
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

#[cfg(feature = "tokio")]
pub mod driver;
pub mod framer;
pub mod sasl;
mod secret;
mod session;
pub mod stuff;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transcript;

pub use framer::{BareLf, Frame, Framer, DATA_WINDOW};
pub use sasl::{apop_digest, cram_md5_digest, digest_eq, Credentials, Mechanism};
pub use secret::Secret;
pub use session::{Interrupt, Session};
pub use stuff::{blank_bare_cr, stuff, stuff_data, unstuff, DotStuffer, DotUnstuffer};
pub use transcript::{Direction, EntryKind, Transcript, TranscriptEntry};
