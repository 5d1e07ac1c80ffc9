//! Storage and identity layer of the mail system: durable Maildir delivery,
//! a queue journal to answer `250` from ([`Queue`]: one shared flush, then
//! delivery), POP3 maildrops, Dovecot-compatible passwd-file accounts and
//! address routing with Postfix's `mydestination` meaning.
//!
//! It also holds the mail policy the daemons share, so that each daemon is
//! a thin shell and each rule has its tests here:
//!
//! * [`auth`]: login checking for SMTP AUTH and POP3 (passwd-file schemes,
//!   login names, APOP/CRAM-MD5 secrets, the delay after a failure);
//! * [`policy`]: which recipients the SMTP server takes, with the reply for
//!   those it refuses;
//! * [`pipeline`]: queue journal or direct delivery, the memory budget, the
//!   delivery threads and the retry schedule;
//! * [`local`]: route, envelope and delivery for mail injected on the host;
//! * [`dsn`]: RFC 3461 parameters, RFC 3464 delivery status notifications
//!   and the rules of who gets one, for the outbound queue;
//! * [`nexthop`]: routing of remote mail (transport table, relayhost, MX
//!   selection per RFC 5321 section 5.1), from DNS answers passed in;
//! * [`outbound`]: the outbound queue's files, per-recipient state;
//! * [`pickup`]: messages handed over by the `sendmail` command;
//! * the editors of the passwd-file and the aliases file
//!   ([`add_account`], [`add_alias`], ...), beside their parsers.
//!
//! Everything here is blocking `std` file I/O; the types are `Send + Sync`
//! and cheap to share (`Store` is a clone of an `Arc`; wrap [`Accounts`],
//! [`Aliases`] and [`Router`] in an `Arc`). Async daemons call them from
//! `tokio::task::spawn_blocking` or a dedicated thread.
//!
//! # Example: the lab's dialogue, store side
//!
//! ```
//! use std::{io::Read, sync::Arc, time::SystemTime};
//! use mailstore::{Accounts, Envelope, Protocol, QueueIdGenerator, Route, Router, Store, LAB_DOMAINS};
//!
//! # fn main() -> Result<(), mailstore::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}pw1\nuser2:{PLAIN}pw2\n").unwrap();
//! let accounts = Arc::new(Accounts::open(dir.path().join("passwd"))?);
//! let router = Router::new(LAB_DOMAINS, accounts.clone(), None);
//! let store = Store::open(dir.path().join("mail"))?;
//!
//! // AUTH LOGIN as user2, then RCPT TO:<user1@csuvnetwork.com>.
//! assert!(accounts.verify_password("user2", b"pw2")?.is_some());
//! let Route::Local(mailboxes) = router.route("user1@csuvnetwork.com")? else { panic!() };
//!
//! // DATA: stream the message, commit before answering 250.
//! let queue_id = QueueIdGenerator::new().next_id(SystemTime::now());
//! let env = Envelope {
//!     mail_from: "user2@csuvnetwork.com".into(),
//!     recipients: vec!["user1@csuvnetwork.com".into()],
//!     mailboxes,
//!     helo: "client.example".into(),
//!     client_ip: "127.0.0.1".parse().unwrap(),
//!     protocol: Protocol::Esmtpa,
//!     tls: None,
//!     our_hostname: "mail.csuvnetwork.com".into(),
//!     queue_id: queue_id.clone(),
//!     time: SystemTime::now(),
//! };
//! let mut delivery = store.begin_delivery(&env)?;
//! delivery.write(b"Subject: lab\r\n\r\nHello user1\r\n")?;
//! let report = delivery.commit()?; // now "250 2.0.0 Ok: queued as {queue_id}"
//!
//! // POP3: user1 reads it back with CRLF line ends, exactly LIST's size.
//! let mut maildrop = store.open_maildrop("user1")?;
//! let msg = &maildrop.messages()[0];
//! assert_eq!(msg.size, report.pop3_size);
//! let mut bytes = Vec::new();
//! maildrop.open_message(0)?.read_to_end(&mut bytes).unwrap();
//! assert_eq!(bytes.len() as u64, msg.size);
//! assert!(bytes.ends_with(b"\r\n\r\nHello user1\r\n"));
//! maildrop.mark_seen(0)?;
//! maildrop.finish(&[0])?; // QUIT after DELE 1
//! assert!(store.open_maildrop("user1")?.messages().is_empty());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

pub mod accounts;
pub mod auth;
pub mod crlf;
pub mod dsn;
pub mod local;
pub mod maildrop;
pub mod nexthop;
pub mod outbound;
pub mod pickup;
pub mod pipeline;
pub mod policy;
pub mod queue;
pub mod routing;
pub mod saslpass;
pub mod store;
mod util;

pub use accounts::{
    add_account, hash_password, normalize_name, remove_account, set_password, verify_password,
    Account, Accounts, PasswdFile, Scheme, Secret,
};
pub use auth::{AuthPenalty, Authenticator, PenaltyPolicy};
pub use local::{deliver_local, Recipients};
pub use maildrop::{FinishReport, Maildrop, MessageInfo, MessageReader};
pub use pipeline::{Pipeline, PipelineConfig, RetrySchedule};
pub use policy::RecipientPolicy;
pub use queue::{Queue, Queued};
pub use routing::{
    add_alias, normalize_alias_target, remove_alias, AliasMap, Aliases, LocalDomains, Route,
    Router, LAB_DOMAINS,
};
pub use store::{
    Delivery, DeliveryReport, Envelope, Protocol, QueueIdGenerator, Store, STALE_TMP_AGE,
};
pub use util::{atomic_write, civil_from_days, days_from_civil, fsync_dir, rfc5322_date};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The maildrop is locked by another session (POP3 `-ERR [IN-USE]`,
    /// RFC 2449 section 8.1.1).
    #[error("maildrop of {0} is in use by another session")]
    InUse(String),
    /// A user or mailbox name that cannot be used as a directory name.
    #[error("invalid mailbox name {0:?}")]
    BadName(String),
    /// A delivery without any mailbox.
    #[error("delivery has no local recipient")]
    NoRecipients,
    /// A message index outside the snapshot.
    #[error("no such message: index {0}")]
    NoSuchMessage(usize),
    /// A message of the snapshot was removed by someone else.
    #[error("message {0} is gone")]
    MessageGone(String),
    /// A delivery used after it failed.
    #[error("delivery already closed")]
    DeliveryClosed,
    /// Hashing a password failed or the scheme is unsupported.
    #[error("password hashing: {0}")]
    Hash(String),
    /// An account or alias without a password.
    #[error("empty password")]
    EmptyPassword,
    /// A file to edit or list could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating an account or alias that exists.
    #[error("{kind} {name:?} already exists")]
    Exists {
        /// `user` or `alias`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Changing an account or alias that does not exist, or naming one as
    /// an alias target.
    #[error("no {kind} named {name:?}")]
    NotFound {
        /// `user`, `alias`, or `account or alias`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// An account name, alias name or alias target that is not allowed.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// A recipient of a local delivery that routes to no local mailbox.
    #[error("cannot deliver to {address:?}: {why}")]
    Undeliverable {
        /// The address as given.
        address: String,
        /// Why.
        why: &'static str,
    },
    /// Reading the message to deliver failed.
    #[error("reading the message: {0}")]
    Input(#[source] io::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shareable_types() {
        assert_send_sync::<Store>();
        assert_send_sync::<Accounts>();
        assert_send_sync::<Aliases>();
        assert_send_sync::<Router>();
        assert_send_sync::<Delivery>();
        assert_send_sync::<Maildrop>();
        assert_send_sync::<Queue>();
        assert_send_sync::<Pipeline>();
        assert_send_sync::<Authenticator>();
        assert_send_sync::<RecipientPolicy>();
        assert_send_sync::<Queued>();
        assert_send_sync::<QueueIdGenerator>();
        assert_send_sync::<Error>();
    }
}
