//! Outbound delivery: mail for other domains, sent over SMTP by
//! smtp-proto's client session on the one session driver, with STARTTLS
//! (opportunistic by default, as Postfix's `smtp_tls_security_level =
//! may`), retried on Postfix's schedule.
//!
//! - [`schedule`]: when to retry and when to give up (pure).
//! - [`deliver`]: one attempt of one message to one destination's hosts,
//!   with a verdict per recipient in Postfix's words
//!   ([`deliver::deliver_then_close`] returns them before `QUIT`, so that
//!   they are recorded first).
//! - [`engine`]: the queue manager over [`mailstore::outbound`]: due
//!   messages delivered per destination within concurrency limits, every
//!   outcome recorded before going on, deferrals rescheduled, finished
//!   messages handed to the host (failure notices) and removed.
//!
//! ```no_run
//! use outbound::deliver::{deliver, unauthenticated_connector, ClientSettings, Hop, Message};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = ClientSettings::new("mail.example.org", Some(unauthenticated_connector()?));
//! let hops = [Hop { host: "mx.example.net".into(), preference: Some(10), addresses: vec!["192.0.2.25".parse()?], port: 25 }];
//! let rcpts = [(0, "someone@example.net".to_string())];
//! let msg = Message {
//!     sender: "me@example.org",
//!     recipients: &rcpts,
//!     content: b"Subject: hi\r\n\r\nhello\r\n",
//!     envelope: None,
//!     plaintext_fallback: false,
//! };
//! for r in deliver(&hops, msg, &settings).await {
//!     println!("{} {:?} {}", r.rcpt, r.verdict, r.text);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod deliver;
pub mod engine;
pub mod schedule;
