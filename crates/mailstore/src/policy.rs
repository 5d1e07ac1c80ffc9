//! The SMTP server's recipient policy: which `RCPT TO` and `VRFY`
//! addresses it takes, and the exact reply for those it refuses.
//!
//! The replies are Postfix's texts for the same decisions, so an
//! administrator who knows Postfix reads the logs and bounces alike. They
//! come as a neutral [`PolicyReply`] (code, enhanced status, text): this
//! crate knows no protocol, the SMTP host turns it into its reply type.
//!
//! ```
//! use std::sync::Arc;
//! use mailstore::policy::{Client, Recipient, RecipientPolicy};
//! use mailstore::{Accounts, Router, LAB_DOMAINS};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}pw\n").unwrap();
//! let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
//! let policy = RecipientPolicy::new(Router::new(LAB_DOMAINS, accounts, None));
//! let stranger = Client { authenticated: false, relay_network: false };
//!
//! let Recipient::Local(mailboxes) = policy.recipient("user1@csuvnetwork.com", stranger) else { panic!() };
//! assert_eq!(mailboxes, ["user1"]);
//! let Recipient::Refused(r) = policy.recipient("someone@example.org", stranger) else { panic!() };
//! assert_eq!(r.reply.to_string(), "554 5.7.1 <someone@example.org>: Relay access denied");
//! ```

use std::fmt;

use crate::routing::{Route, Router};

/// A reply for the protocol host to send: code, enhanced status code
/// (RFC 3463: class, subject, detail) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code.
    pub status: (u8, u16, u16),
    /// The text after the status code.
    pub text: String,
}

impl PolicyReply {
    /// A reply.
    pub fn new(code: u16, status: (u8, u16, u16), text: String) -> Self {
        Self { code, status, text }
    }
}

impl fmt::Display for PolicyReply {
    /// The reply line as SMTP writes it (without CRLF).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, subject, detail) = self.status;
        write!(f, "{} {class}.{subject}.{detail} {}", self.code, self.text)
    }
}

/// What the server knows about the client that matters for relaying
/// (Postfix's `permit_sasl_authenticated, permit_mynetworks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client authenticated (SMTP AUTH).
    pub authenticated: bool,
    /// The client's address is in `relay_networks` (`mynetworks`).
    pub relay_network: bool,
}

impl Client {
    /// Whether the client may send to other domains.
    pub fn may_relay(self) -> bool {
        self.authenticated || self.relay_network
    }
}

/// Why a recipient is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A local domain, but no such account or alias.
    UnknownUser,
    /// Another domain, and the client may not relay.
    RelayDenied,
    /// Another domain and the client may relay, but this server delivers
    /// only locally (no outbound transport yet): refused now rather than
    /// accepted and lost.
    LocalOnly,
    /// The accounts or aliases could not be read (the error's text): the
    /// client should try again later.
    LookupFailed(String),
}

/// A refused recipient: why, and the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub why: Refusal,
    /// The reply for the client.
    pub reply: PolicyReply,
}

/// The decision for one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Delivered locally to these accounts: one for an account, the
    /// expansion for an alias (canonical names, no duplicates).
    Local(Vec<String>),
    /// Another domain, for a client that may relay, when the host has an
    /// outbound queue ([`RecipientPolicy::with_outbound`]): queued for
    /// delivery over SMTP.
    Remote(String),
    /// Refused.
    Refused(Refused),
}

/// The recipient policy over a [`Router`]. `Send + Sync`; a host builds a
/// new one when its configuration (local domains, aliases) is reloaded.
#[derive(Debug)]
pub struct RecipientPolicy {
    router: Router,
    outbound: bool,
}

impl RecipientPolicy {
    /// The policy routing through `router`; other domains are refused
    /// (`550 5.4.4`) even to clients that may relay, until
    /// [`with_outbound`](Self::with_outbound).
    pub fn new(router: Router) -> Self {
        Self {
            router,
            outbound: false,
        }
    }

    /// Whether the host delivers to other domains: then a client that may
    /// relay gets [`Recipient::Remote`] for them.
    pub fn with_outbound(mut self, on: bool) -> Self {
        self.outbound = on;
        self
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Decides `RCPT TO:<address>` (`address` without angle brackets) for
    /// `client`. Blocks on a `stat` of the passwd and aliases files.
    pub fn recipient(&self, address: &str, client: Client) -> Recipient {
        let refused = |why, code, status, text: String| {
            Recipient::Refused(Refused {
                why,
                reply: PolicyReply::new(code, status, text),
            })
        };
        match self.router.route(address) {
            Ok(Route::Local(mailboxes)) => Recipient::Local(mailboxes),
            Ok(Route::UnknownUser) => unknown_user(address),
            Ok(Route::NotLocal) if client.may_relay() && self.outbound => {
                Recipient::Remote(address.to_owned())
            }
            Ok(Route::NotLocal) if client.may_relay() => refused(
                Refusal::LocalOnly,
                550,
                (5, 4, 4),
                format!("<{address}>: Recipient address rejected: no route to non-local domains (this server delivers only locally)"),
            ),
            // Postfix's reject_unauth_destination.
            Ok(Route::NotLocal) => refused(
                Refusal::RelayDenied,
                554,
                (5, 7, 1),
                format!("<{address}>: Relay access denied"),
            ),
            Err(e) => refused(
                Refusal::LookupFailed(e.to_string()),
                451,
                (4, 3, 0),
                format!("<{address}>: Temporary lookup failure"),
            ),
        }
    }

    /// Decides `VRFY` as Postfix does with `local_recipient_maps`: `None`
    /// means "answer 252" (RFC 5321 section 3.5.3: cannot verify, but will
    /// accept), also for other domains and when the lookup fails; an
    /// unknown local user is refused with `550 5.1.1`. The argument may
    /// carry angle brackets and surrounding white space.
    pub fn vrfy(&self, argument: &str) -> Option<Refused> {
        let addr = argument.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        match self.router.route(addr) {
            Ok(Route::UnknownUser) => match unknown_user(addr) {
                Recipient::Refused(r) => Some(r),
                Recipient::Local(_) | Recipient::Remote(_) => None,
            },
            _ => None,
        }
    }
}

/// Postfix's wording for an unknown user (`local_recipient_maps`).
fn unknown_user(address: &str) -> Recipient {
    Recipient::Refused(Refused {
        why: Refusal::UnknownUser,
        reply: PolicyReply::new(
            550,
            (5, 1, 1),
            format!(
                "<{address}>: Recipient address rejected: User unknown in local recipient table"
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Aliases, LAB_DOMAINS};
    use crate::Accounts;
    use std::sync::Arc;

    const STRANGER: Client = Client {
        authenticated: false,
        relay_network: false,
    };
    const AUTHED: Client = Client {
        authenticated: true,
        relay_network: false,
    };
    const NEIGHBOUR: Client = Client {
        authenticated: false,
        relay_network: true,
    };

    fn policy() -> (tempfile::TempDir, RecipientPolicy) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "user1:{PLAIN}a\nuser2:{PLAIN}b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("aliases"), "team: user1, user2\n").unwrap();
        let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let aliases = Arc::new(Aliases::open(dir.path().join("aliases")).unwrap());
        let router = Router::new(LAB_DOMAINS, accounts, Some(aliases));
        (dir, RecipientPolicy::new(router))
    }

    fn refused(r: Recipient) -> Refused {
        match r {
            Recipient::Refused(r) => r,
            Recipient::Local(m) => panic!("accepted for {m:?}"),
            Recipient::Remote(a) => panic!("relayed to {a}"),
        }
    }

    #[test]
    fn local_accounts_and_aliases_for_everyone() {
        let (_d, p) = policy();
        for client in [STRANGER, AUTHED, NEIGHBOUR] {
            assert_eq!(
                p.recipient("user1@csuvnetwork.com", client),
                Recipient::Local(vec!["user1".into()])
            );
            assert_eq!(
                p.recipient("team@mail.csuvnetwork.com", client),
                Recipient::Local(vec!["user1".into(), "user2".into()])
            );
        }
    }

    #[test]
    fn refusals_carry_postfix_replies() {
        let (_d, p) = policy();
        let r = refused(p.recipient("nobody@csuvnetwork.com", AUTHED));
        assert_eq!(r.why, Refusal::UnknownUser);
        assert_eq!(
            r.reply.to_string(),
            "550 5.1.1 <nobody@csuvnetwork.com>: Recipient address rejected: User unknown in local recipient table"
        );
        let r = refused(p.recipient("user1@example.org", STRANGER));
        assert_eq!(r.why, Refusal::RelayDenied);
        assert_eq!(
            r.reply,
            PolicyReply {
                code: 554,
                status: (5, 7, 1),
                text: "<user1@example.org>: Relay access denied".into()
            }
        );
        for client in [AUTHED, NEIGHBOUR] {
            let r = refused(p.recipient("user1@example.org", client));
            assert_eq!(r.why, Refusal::LocalOnly);
            assert_eq!(
                r.reply.to_string(),
                "550 5.4.4 <user1@example.org>: Recipient address rejected: no route to non-local domains (this server delivers only locally)"
            );
        }
        // With an outbound queue, those clients relay; strangers still not.
        let (_d, p) = policy();
        let p = p.with_outbound(true);
        for client in [AUTHED, NEIGHBOUR] {
            assert_eq!(
                p.recipient("user1@Example.org", client),
                Recipient::Remote("user1@Example.org".into())
            );
        }
        assert_eq!(
            refused(p.recipient("user1@example.org", STRANGER)).why,
            Refusal::RelayDenied
        );
        assert_eq!(
            p.recipient("user1@csuvnetwork.com", AUTHED),
            Recipient::Local(vec!["user1".into()])
        );
    }

    #[test]
    fn lookup_failure_is_temporary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}a\n").unwrap();
        let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let aliases = Arc::new(Aliases::open(dir.path().join("aliases")).unwrap());
        let p = RecipientPolicy::new(Router::new(LAB_DOMAINS, accounts, Some(aliases)));
        assert!(matches!(
            p.recipient("user1@localhost", STRANGER),
            Recipient::Local(_)
        ));
        // The aliases file turns into something that cannot be read.
        std::fs::create_dir(dir.path().join("aliases")).unwrap();
        let r = refused(p.recipient("user1@localhost", STRANGER));
        assert!(matches!(r.why, Refusal::LookupFailed(_)), "{r:?}");
        assert_eq!(
            r.reply.to_string(),
            "451 4.3.0 <user1@localhost>: Temporary lookup failure"
        );
    }

    #[test]
    fn vrfy_refuses_only_unknown_local_users() {
        let (_d, p) = policy();
        assert_eq!(p.vrfy("user1@csuvnetwork.com"), None);
        assert_eq!(p.vrfy(" <team> "), None);
        assert_eq!(p.vrfy("anyone@example.org"), None);
        let r = p.vrfy(" <ghost@csuvnetwork.com> ").unwrap();
        assert_eq!(r.why, Refusal::UnknownUser);
        assert_eq!(
            r.reply.to_string(),
            "550 5.1.1 <ghost@csuvnetwork.com>: Recipient address rejected: User unknown in local recipient table"
        );
    }
}
