//! Local delivery: route the recipients, build the envelope, deliver into
//! the Maildirs. The SMTP server does these steps across a session (RCPT,
//! then DATA) with the same [`Recipients`] and [`Store::deliver`];
//! [`deliver_local`] does them at once for a message injected on this host
//! (`mailctl deliver`, like Postfix's `sendmail` or Dovecot's LDA).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use crate::routing::{Route, Router};
use crate::store::{DeliveryReport, Envelope, Protocol, QueueIdGenerator, Store};
use crate::{Error, Result};

/// The recipients of one message: the addresses as given (for the
/// `Received:` header's `for` clause) and the mailboxes they route to,
/// each once, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Addresses as the client gave them.
    pub addresses: Vec<String>,
    /// Local accounts to deliver to, without duplicates (an alias and
    /// one of its members both named get one copy).
    pub mailboxes: Vec<String>,
}

impl Recipients {
    /// Adds `address`, which routes to `mailboxes`.
    pub fn add(&mut self, address: String, mailboxes: Vec<String>) {
        self.addresses.push(address);
        for m in mailboxes {
            if !self.mailboxes.contains(&m) {
                self.mailboxes.push(m);
            }
        }
    }

    /// Routes every address through `router`: the first that reaches no
    /// local mailbox is an [`Error::Undeliverable`].
    pub fn route(router: &Router, addresses: &[String]) -> Result<Self> {
        let mut out = Recipients::default();
        for a in addresses {
            let why = match router.route(a)? {
                Route::Local(m) => {
                    out.add(a.clone(), m);
                    continue;
                }
                Route::UnknownUser => "no such user",
                Route::NotLocal => "not a local domain",
            };
            return Err(Error::Undeliverable {
                address: a.clone(),
                why,
            });
        }
        Ok(out)
    }
}

/// Delivers `message` (read to its end in chunks; CRLF or LF line ends)
/// from `from` (empty for `<>`) to local `recipients` (`user`, `alias` or
/// `user@local.domain`), routed as the SMTP server routes them. The
/// `Received:` header says `by <our_hostname>` with neither `from` nor
/// `with` clause, as Postfix's pickup writes it.
pub fn deliver_local(
    store: &Store,
    router: &Router,
    from: &str,
    recipients: &[String],
    our_hostname: &str,
    message: &mut dyn Read,
) -> Result<DeliveryReport> {
    let rcpts = Recipients::route(router, recipients)?;
    let now = SystemTime::now();
    let env = Envelope {
        mail_from: from.to_string(),
        recipients: rcpts.addresses,
        mailboxes: rcpts.mailboxes,
        helo: String::new(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        protocol: Protocol::Local,
        tls: None,
        our_hostname: our_hostname.to_string(),
        queue_id: QueueIdGenerator::new().next_id(now),
        time: now,
    };
    store.deliver(&env, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Accounts, Aliases, LAB_DOMAINS};
    use std::sync::Arc;

    #[test]
    fn recipients_are_collected_once() {
        let mut r = Recipients::default();
        r.add("team@x".into(), vec!["user1".into(), "user2".into()]);
        r.add("user1@x".into(), vec!["user1".into()]);
        assert_eq!(r.addresses, ["team@x", "user1@x"]);
        assert_eq!(r.mailboxes, ["user1", "user2"]);
    }

    #[test]
    fn delivers_through_aliases_or_names_the_bad_recipient() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "user1:{PLAIN}a\nuser2:{PLAIN}b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("aliases"), "postmaster: user1\n").unwrap();
        let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let aliases = Arc::new(Aliases::open(dir.path().join("aliases")).unwrap());
        let router = Router::new(LAB_DOMAINS, accounts, Some(aliases));
        let store = Store::with_hostname(dir.path().join("mail"), "mx").unwrap();

        let report = deliver_local(
            &store,
            &router,
            "root@localhost",
            &["postmaster".into(), "user2@csuvnetwork.com".into()],
            "mail.csuvnetwork.com",
            &mut &b"Subject: local\n\nhello\n"[..],
        )
        .unwrap();
        assert_eq!(report.paths.len(), 2);
        let text = std::fs::read_to_string(&report.paths[0]).unwrap();
        assert!(
            text.starts_with(
                "Return-Path: <root@localhost>\nReceived: by mail.csuvnetwork.com id "
            ),
            "{text}"
        );
        assert!(text.ends_with("\nSubject: local\n\nhello\n"), "{text}");

        for (rcpt, why) in [
            ("ghost@csuvnetwork.com", "no such user"),
            ("user1@example.org", "not a local domain"),
        ] {
            let e = deliver_local(
                &store,
                &router,
                "",
                &["user1".into(), rcpt.into()],
                "mx",
                &mut &b"x\n"[..],
            )
            .unwrap_err();
            assert_eq!(e.to_string(), format!("cannot deliver to {rcpt:?}: {why}"));
        }
        // Nothing was delivered for the refused messages.
        let new = store.maildir_path("user1").join("new");
        assert_eq!(std::fs::read_dir(new).unwrap().count(), 1);
    }

    #[test]
    fn a_failing_reader_delivers_nothing() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("stdin went away"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}a\n").unwrap();
        let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let router = Router::new(LAB_DOMAINS, accounts, None);
        let store = Store::with_hostname(dir.path().join("mail"), "mx").unwrap();
        let e =
            deliver_local(&store, &router, "", &["user1".into()], "mx", &mut Broken).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
        for sub in ["new", "tmp"] {
            let d = store.maildir_path("user1").join(sub);
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "{sub}");
        }
    }
}
