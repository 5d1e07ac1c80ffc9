//! Login checking shared by the SMTP server (AUTH) and the POP3 server
//! (USER/PASS, APOP, AUTH): one place for the passwd-file lookup, the
//! login-name mapping, PLAIN's authorization identity, the mechanisms that
//! need the clear secret, and the pause after a failure.
//!
//! The protocol crates turn what a client sent into their own credential
//! types; the host converts those into the neutral [`Credentials`] here.
//! Digests over the shared secret (APOP, CRAM-MD5) stay with the protocol
//! crate: the host passes a closure that checks the client's digest
//! against the secret, so this module knows no protocol and no MD5.
//!
//! Everything here blocks (password hashes are slow on purpose): async
//! hosts call [`Authenticator::authenticate`] from `spawn_blocking`, and
//! wait [`AuthOutcome::Rejected`]'s `delay` themselves before answering.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use mailstore::auth::{AuthOutcome, Authenticator, Credentials};
//! use mailstore::{Accounts, LocalDomains, LAB_DOMAINS};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}secret\n").unwrap();
//! let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
//! let auth = Authenticator::new(accounts, LocalDomains::new(LAB_DOMAINS), Duration::from_secs(1));
//!
//! // Foxmail logs in with the whole address.
//! let login = Credentials::Password {
//!     authzid: "",
//!     user: "user1@csuvnetwork.com",
//!     password: b"secret",
//! };
//! let AuthOutcome::Accepted(account) = auth.authenticate(&login) else { panic!() };
//! assert_eq!(account.name, "user1");
//!
//! // APOP / CRAM-MD5: the protocol's digest check gets the clear secret.
//! let proof = |secret: &[u8]| secret == b"secret";
//! let apop = Credentials::SharedSecret { user: "user1", proof: &proof };
//! assert!(matches!(auth.authenticate(&apop), AuthOutcome::Accepted(_)));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::accounts::{Account, Accounts};
use crate::routing::LocalDomains;
use crate::Error;

/// What a client presented to log in, in protocol-neutral form.
pub enum Credentials<'a> {
    /// A clear password: POP3 USER/PASS, AUTH PLAIN, AUTH LOGIN.
    Password {
        /// PLAIN's authorization identity (RFC 4616 section 2); empty when
        /// absent, and always for LOGIN and USER/PASS.
        authzid: &'a str,
        /// The user name as the client typed it.
        user: &'a str,
        /// The password.
        password: &'a [u8],
    },
    /// A proof computed over the shared secret: APOP (RFC 1939 section 7)
    /// or CRAM-MD5 (RFC 2195). Only accounts whose passwd-file entry holds
    /// the secret itself (`{PLAIN}`) can use it.
    SharedSecret {
        /// The user name as the client typed it.
        user: &'a str,
        /// Whether the client's digest matches this secret (the protocol
        /// crate computes it; it should compare in constant time).
        proof: &'a dyn Fn(&[u8]) -> bool,
    },
}

impl Credentials<'_> {
    /// The user name as the client typed it.
    pub fn user(&self) -> &str {
        match self {
            Credentials::Password { user, .. } | Credentials::SharedSecret { user, .. } => user,
        }
    }
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { authzid, user, .. } => f
                .debug_struct("Password")
                .field("authzid", authzid)
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::SharedSecret { user, .. } => f
                .debug_struct("SharedSecret")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

/// The answer to a login attempt.
#[derive(Debug)]
pub enum AuthOutcome {
    /// The credentials are right: the account as the passwd-file names it
    /// (a POP3 server opens this account's maildrop).
    Accepted(Account),
    /// Wrong password, unknown user, foreign domain, an authorization
    /// identity other than the user, or a shared-secret mechanism for an
    /// account without a clear secret: indistinguishable on purpose. The
    /// host waits `delay` before answering, against password guessing.
    Rejected {
        /// How long to wait before the failure reply.
        delay: Duration,
    },
    /// The account database could not be consulted: a temporary failure
    /// (SMTP `454 4.7.0`, POP3 `-ERR [SYS/TEMP]`), without delay.
    Unavailable(Error),
}

/// Checks credentials against the passwd-file. `Send + Sync`; cheap to
/// build, so a host makes a new one when its configuration is reloaded.
#[derive(Debug, Clone)]
pub struct Authenticator {
    accounts: Arc<Accounts>,
    domains: LocalDomains,
    failure_delay: Duration,
}

impl Authenticator {
    /// An authenticator over `accounts`. A login `user@domain` with one of
    /// `domains` is the account `user`; `failure_delay` is the pause after
    /// each failure (Postfix's `smtpd_error_sleep_time`, Dovecot's
    /// `auth_failure_delay`).
    pub fn new(accounts: Arc<Accounts>, domains: LocalDomains, failure_delay: Duration) -> Self {
        Self {
            accounts,
            domains,
            failure_delay,
        }
    }

    /// The account database.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// The pause after a failed login.
    pub fn failure_delay(&self) -> Duration {
        self.failure_delay
    }

    /// Checks what a client presented in SMTP or POP3, as the shared
    /// session core hands it over: PLAIN (with its authorization
    /// identity), LOGIN and USER/PASS by password; CRAM-MD5 and APOP by
    /// recomputing the client's digest over the clear `{PLAIN}` secret.
    /// Blocks like [`Authenticator::authenticate`].
    pub fn check_session(&self, creds: &mail_session::Credentials) -> AuthOutcome {
        use mail_session::Credentials as C;
        match creds {
            C::Plain {
                authzid,
                username,
                password,
            } => self.authenticate(&Credentials::Password {
                authzid,
                user: username,
                password: password.expose().as_bytes(),
            }),
            C::Login { username, password } => self.authenticate(&Credentials::Password {
                authzid: "",
                user: username,
                password: password.expose().as_bytes(),
            }),
            C::CramMd5 { username, .. } | C::Apop { username, .. } => {
                let proof = |secret: &[u8]| creds.verify_password(&String::from_utf8_lossy(secret));
                self.authenticate(&Credentials::SharedSecret {
                    user: username,
                    proof: &proof,
                })
            }
        }
    }

    /// Checks `creds`. Blocks on the passwd-file and on password hashing.
    pub fn authenticate(&self, creds: &Credentials<'_>) -> AuthOutcome {
        match self.check(creds) {
            Ok(Some(account)) => AuthOutcome::Accepted(account),
            Ok(None) => AuthOutcome::Rejected {
                delay: self.failure_delay,
            },
            Err(e) => AuthOutcome::Unavailable(e),
        }
    }

    fn check(&self, creds: &Credentials<'_>) -> Result<Option<Account>, Error> {
        // `user1@csuvnetwork.com` logs in as `user1`: clients such as
        // Foxmail offer the whole address as the user name.
        let Some(login) = self.domains.login_name(creds.user()) else {
            return Ok(None);
        };
        match creds {
            Credentials::Password {
                authzid,
                user,
                password,
            } => {
                // Acting as another user (a different authzid, RFC 4616
                // section 2) is not supported.
                if !authzid.is_empty() && authzid != user {
                    return Ok(None);
                }
                self.accounts.verify_password(&login, password)
            }
            Credentials::SharedSecret { proof, .. } => {
                // The digest is over the secret itself: only {PLAIN}
                // accounts hold it.
                let Some(secret) = self.accounts.plain_secret(&login)? else {
                    return Ok(None);
                };
                if !proof(secret.expose()) {
                    return Ok(None);
                }
                self.accounts.lookup(&login)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::LAB_DOMAINS;

    const DELAY: Duration = Duration::from_millis(1500);

    fn authenticator(passwd: &str) -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        let accounts = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let auth = Authenticator::new(accounts, LocalDomains::new(LAB_DOMAINS), DELAY);
        (dir, auth)
    }

    #[test]
    fn session_credentials_of_both_protocols() {
        use mail_session::{apop_digest, cram_md5_digest, Credentials as C, Secret};
        let (_d, auth) = authenticator("user1:{PLAIN}pw1\nuser2:{PLAIN}pw2\n");
        let ok = |c: &C| matches!(auth.check_session(c), AuthOutcome::Accepted(_));
        let pw = |p: &str| Secret::new(p.to_owned());
        let plain = |z: &str, u: &str, p: &str| C::Plain {
            authzid: z.into(),
            username: u.into(),
            password: pw(p),
        };
        assert!(ok(&plain("", "user1", "pw1")));
        assert!(ok(&plain(
            "user1@csuvnetwork.com",
            "user1@csuvnetwork.com",
            "pw1"
        )));
        assert!(!ok(&plain("", "user1", "pw2")));
        // Acting as another user is not supported.
        assert!(!ok(&plain("user2", "user1", "pw1")));
        assert!(ok(&C::Login {
            username: "user2".into(),
            password: pw("pw2")
        }));
        let ts = "<1.2@mail.csuvnetwork.com>";
        let apop = |secret: &str| C::Apop {
            username: "user1".into(),
            timestamp: ts.into(),
            digest: Secret::new(apop_digest(ts, secret)),
        };
        assert!(ok(&apop("pw1")));
        assert!(!ok(&apop("pw2")));
        let cram = |secret: &str| C::CramMd5 {
            username: "user2".into(),
            challenge: ts.into(),
            digest: Secret::new(cram_md5_digest(secret.as_bytes(), ts.as_bytes())),
        };
        assert!(ok(&cram("pw2")));
        assert!(matches!(
            auth.check_session(&cram("pw1")),
            AuthOutcome::Rejected { delay: DELAY }
        ));
    }

    fn password<'a>(authzid: &'a str, user: &'a str, pw: &'a str) -> Credentials<'a> {
        Credentials::Password {
            authzid,
            user,
            password: pw.as_bytes(),
        }
    }

    fn accepted(o: AuthOutcome) -> String {
        match o {
            AuthOutcome::Accepted(a) => a.name,
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn rejected(o: AuthOutcome) {
        match o {
            AuthOutcome::Rejected { delay } => assert_eq!(delay, DELAY),
            other => panic!("not rejected: {other:?}"),
        }
    }

    /// A real {SHA512-CRYPT} entry (`doveadm pw`, password `lab-pass-2`).
    const HASHED: &str = "user2:{SHA512-CRYPT}$6$xjd4.YS82xhMgx0k$7koR.r4HlXH3XK6cPwQnsM5jsurjS7LBn1org.e2QC1UbBWb9tmEyeIFhqmr48h0fzt1FPL9bQvi.3lSpaUhP1\n";

    #[test]
    fn passwords_and_login_names() {
        let (_d, auth) = authenticator(&format!("User1:{{PLAIN}}secret\n{HASHED}"));
        // The canonical name comes from the file, whatever the case typed.
        assert_eq!(
            accepted(auth.authenticate(&password("", "user1", "secret"))),
            "User1"
        );
        assert_eq!(
            accepted(auth.authenticate(&password("", "USER1@CSUVnetwork.com", "secret"))),
            "User1"
        );
        assert_eq!(
            accepted(auth.authenticate(&password("", "user2@mail.csuvnetwork.com", "lab-pass-2"))),
            "user2"
        );
        rejected(auth.authenticate(&password("", "user1", "wrong")));
        rejected(auth.authenticate(&password("", "user1", "")));
        rejected(auth.authenticate(&password("", "user2", "lab-pass-")));
        rejected(auth.authenticate(&password("", "nobody", "secret")));
        // Another domain is not ours: no account there.
        rejected(auth.authenticate(&password("", "user1@example.org", "secret")));
        rejected(auth.authenticate(&password("", "@csuvnetwork.com", "secret")));
        assert_eq!(auth.failure_delay(), DELAY);
    }

    #[test]
    fn plain_authzid_must_be_the_user() {
        let (_d, auth) = authenticator("user1:{PLAIN}secret\nuser2:{PLAIN}other\n");
        assert_eq!(
            accepted(auth.authenticate(&password("user1", "user1", "secret"))),
            "user1"
        );
        rejected(auth.authenticate(&password("user2", "user1", "secret")));
        rejected(auth.authenticate(&password("admin", "user1", "secret")));
    }

    #[test]
    fn shared_secret_needs_a_plain_account() {
        let (_d, auth) = authenticator(&format!("user1:{{PLAIN}}secret\n{HASHED}"));
        let asked = std::cell::RefCell::new(Vec::new());
        let right = |s: &[u8]| {
            asked.borrow_mut().push(s.to_vec());
            s == b"secret"
        };
        let wrong = |_: &[u8]| false;
        let ok = Credentials::SharedSecret {
            user: "user1@localhost",
            proof: &right,
        };
        assert_eq!(accepted(auth.authenticate(&ok)), "user1");
        assert_eq!(asked.borrow().as_slice(), [b"secret".to_vec()]);
        let bad = Credentials::SharedSecret {
            user: "user1",
            proof: &wrong,
        };
        rejected(auth.authenticate(&bad));
        // A hashed account has no secret to prove: the proof is never asked.
        asked.borrow_mut().clear();
        let hashed = Credentials::SharedSecret {
            user: "user2",
            proof: &right,
        };
        rejected(auth.authenticate(&hashed));
        let unknown = Credentials::SharedSecret {
            user: "ghost",
            proof: &right,
        };
        rejected(auth.authenticate(&unknown));
        assert!(asked.borrow().is_empty());
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = password("", "user1", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("user1"),
            "{shown}"
        );
        assert_eq!(c.user(), "user1");
    }

    #[test]
    fn follows_passwd_file_changes() {
        let (d, auth) = authenticator("user1:{PLAIN}one\n");
        rejected(auth.authenticate(&password("", "user9", "nine")));
        crate::util::atomic_write(
            &d.path().join("passwd"),
            b"user1:{PLAIN}one\nuser9:{PLAIN}nine\n",
            0o600,
        )
        .unwrap();
        assert_eq!(
            accepted(auth.authenticate(&password("", "user9", "nine"))),
            "user9"
        );
    }
}
