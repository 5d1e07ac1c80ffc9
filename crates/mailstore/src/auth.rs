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
//! Against password guessing over many connections, [`AuthPenalty`] keeps
//! Dovecot's auth penalty per client network, shared by every connection
//! of a process: the host asks it before checking a password how long
//! that client must wait first, and sleeps that long itself.
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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// How [`AuthPenalty`] slows a client network down after failed logins:
/// Dovecot's auth penalty (`AUTH_PENALTY_INIT_SECS`, `_MAX_SECS`,
/// `_TIMEOUT` in `src/auth/auth-penalty.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PenaltyPolicy {
    /// Wait after the first failure; doubled by each further one.
    /// Zero turns the penalty off.
    pub initial: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// A network without attempts for this long is forgotten.
    pub forget_after: Duration,
    /// The longest an attempt is made to wait for its turn; a network
    /// whose next turn is further away gets a temporary failure at once,
    /// so that its waiting attempts (and the connections and tasks they
    /// hold) stay few.
    pub max_wait: Duration,
    /// Networks remembered at most; the least recently seen go first.
    pub max_entries: usize,
}

impl PenaltyPolicy {
    /// Dovecot's: 2 s doubling up to 15 s.
    pub const DOVECOT: PenaltyPolicy =
        PenaltyPolicy::new(Duration::from_secs(2), Duration::from_secs(15));

    /// `initial` doubling up to `max`, forgotten after Dovecot's timeout
    /// (initial + 2·initial + 4·initial + max, 29 s for Dovecot's values),
    /// waits of at most 2·max, at most 10,000 networks remembered (about
    /// 1 MB).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        let forget_after = initial.saturating_mul(7).saturating_add(max);
        PenaltyPolicy {
            initial,
            max,
            forget_after,
            max_wait: max.saturating_mul(2),
            max_entries: 10_000,
        }
    }

    /// No penalty.
    pub const OFF: PenaltyPolicy = PenaltyPolicy::new(Duration::ZERO, Duration::ZERO);

    /// The spacing after `failures` failures: 0, initial, 2·initial, ...
    /// up to `max`.
    fn spacing(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doubled = 1u32
            .checked_shl(failures.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(doubled).min(self.max)
    }
}

/// The unit a penalty applies to: an IPv4 address, or an IPv6 /64 (one
/// end site's subnet: its hosts pick any address in it at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4(u32),
    V6(u64),
}

impl Network {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Network::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::V4(u32::from(v4)),
                None => Network::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Failures since the last success or since the entry was forgotten.
    failures: u32,
    /// Attempts told to go ahead whose outcome is not known yet.
    in_flight: u32,
    /// The earliest time the next attempt may be checked.
    next_allowed: Instant,
    /// The last attempt begun or finished.
    last_seen: Instant,
}

#[derive(Debug)]
struct Table {
    policy: PenaltyPolicy,
    entries: HashMap<Network, Entry>,
}

impl Table {
    fn expired(&self, e: &Entry, now: Instant) -> bool {
        e.in_flight == 0
            && now.saturating_duration_since(e.next_allowed.max(e.last_seen))
                >= self.policy.forget_after
    }

    /// Make room for one more entry: drop the forgotten ones, then, if the
    /// table is still full, the least recently seen eighth (so that a
    /// flood of new addresses costs one sort per many insertions).
    fn make_room(&mut self, now: Instant) {
        let policy = self.policy;
        self.entries.retain(|_, e| {
            !(e.in_flight == 0
                && now.saturating_duration_since(e.next_allowed.max(e.last_seen))
                    >= policy.forget_after)
        });
        if self.entries.len() < policy.max_entries {
            return;
        }
        let mut seen: Vec<Instant> = self.entries.values().map(|e| e.last_seen).collect();
        seen.sort_unstable();
        let drop = (seen.len() / 8).max(1);
        if let Some(&cutoff) = seen.get(drop.saturating_sub(1)) {
            self.entries.retain(|_, e| e.last_seen > cutoff);
        }
    }
}

/// Dovecot's auth penalty, per client network and across connections:
/// each failed login from a network makes its next attempt wait longer
/// (0, then 2 s doubling up to 15 s with [`PenaltyPolicy::DOVECOT`]),
/// and the wait comes before the password check. Attempts from one
/// network are spaced out, not each delayed: every attempt moves the
/// network's "next allowed" time forward, counting the attempts still in
/// flight as failures, so 16 parallel connections guess no faster than
/// one. Other networks are never slowed. A success resets the network;
/// a quiet one is forgotten.
///
/// Sync and clock-free: the host passes `now` and sleeps
/// [`PenaltyAttempt::wait`] itself. One table per process, shared by its
/// connections through an `Arc`.
///
/// ```
/// use std::{sync::Arc, time::{Duration, Instant}};
/// use mailstore::auth::{AuthPenalty, PenaltyPolicy};
///
/// let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
/// let attacker = "192.0.2.7".parse().unwrap();
/// let t0 = Instant::now();
/// let first = table.begin(attacker, t0).unwrap();
/// assert_eq!(first.wait(), Duration::ZERO);
/// first.finish(false, t0);
/// // The next guess from that address waits 2 s, whichever connection.
/// assert_eq!(table.begin(attacker, t0).unwrap().wait(), Duration::from_secs(2));
/// // Another client is not slowed.
/// let other = table.begin("198.51.100.1".parse().unwrap(), t0).unwrap();
/// assert_eq!(other.wait(), Duration::ZERO);
/// ```
#[derive(Debug)]
pub struct AuthPenalty {
    table: Mutex<Table>,
}

impl AuthPenalty {
    /// An empty table.
    pub fn new(policy: PenaltyPolicy) -> Self {
        AuthPenalty {
            table: Mutex::new(Table {
                policy,
                entries: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere leaves the table consistent enough: every
        // update is a few field writes.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply a reloaded configuration; what the table remembers stays.
    pub fn set_policy(&self, policy: PenaltyPolicy) {
        self.lock().policy = policy;
    }

    /// The current policy.
    pub fn policy(&self) -> PenaltyPolicy {
        self.lock().policy
    }

    /// Networks remembered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no network is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A login attempt from `client` begins at `now`: wait
    /// [`PenaltyAttempt::wait`], check the credentials, then
    /// [`PenaltyAttempt::finish`] with the outcome. Dropping the attempt
    /// unfinished (a connection closed while waiting, a temporary
    /// failure) counts neither as success nor as failure.
    ///
    /// `None` when the client's turn is more than
    /// [`PenaltyPolicy::max_wait`] away: answer with a temporary failure
    /// without checking anything (the attempt takes no turn).
    pub fn begin(self: &Arc<Self>, client: IpAddr, now: Instant) -> Option<PenaltyAttempt> {
        let network = Network::of(client);
        let mut t = self.lock();
        if t.policy.initial.is_zero() {
            return Some(PenaltyAttempt {
                table: None,
                network,
                wait: Duration::ZERO,
            });
        }
        if !t.entries.contains_key(&network) && t.entries.len() >= t.policy.max_entries {
            t.make_room(now);
        }
        let policy = t.policy;
        let fresh = Entry {
            failures: 0,
            in_flight: 0,
            next_allowed: now,
            last_seen: now,
        };
        let expired = t.entries.get(&network).is_some_and(|e| t.expired(e, now));
        let e = t.entries.entry(network).or_insert(fresh);
        if expired {
            e.failures = 0;
            e.next_allowed = now;
        }
        let slot = e.next_allowed.max(now);
        if slot.saturating_duration_since(now) > policy.max_wait {
            e.last_seen = now;
            return None;
        }
        // Pessimistic: an attempt still being checked counts as a failure,
        // or parallel connections would all go at once.
        let spacing = policy.spacing(e.failures.saturating_add(e.in_flight));
        e.next_allowed = slot + spacing;
        e.in_flight = e.in_flight.saturating_add(1);
        e.last_seen = now;
        Some(PenaltyAttempt {
            table: Some(Arc::clone(self)),
            network,
            wait: slot.saturating_duration_since(now),
        })
    }

    /// `outcome`: whether the attempt was accepted, and when it ended;
    /// `None` for an abandoned attempt.
    fn finish(&self, network: Network, outcome: Option<(bool, Instant)>) {
        let mut t = self.lock();
        let policy = t.policy;
        let Some(e) = t.entries.get_mut(&network) else {
            // Dropped to make room meanwhile.
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if let Some((_, now)) = outcome {
            e.last_seen = e.last_seen.max(now);
        }
        match outcome {
            Some((true, now)) => {
                // As Dovecot: the right password clears the penalty. Slots
                // already handed out stay; new attempts may go at once.
                e.failures = 0;
                e.next_allowed = e.next_allowed.min(now);
            }
            Some((false, now)) => {
                e.failures = e.failures.saturating_add(1).min(64);
                // The attempt's own slot assumed it would succeed.
                let after = now + policy.spacing(e.failures);
                e.next_allowed = e.next_allowed.max(after);
            }
            None => {}
        }
    }
}

/// One login attempt registered with an [`AuthPenalty`].
#[derive(Debug)]
#[must_use = "wait, check the credentials, then finish"]
pub struct PenaltyAttempt {
    /// `None` when the penalty is off.
    table: Option<Arc<AuthPenalty>>,
    network: Network,
    wait: Duration,
}

impl PenaltyAttempt {
    /// How long to wait before checking the credentials.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Record the outcome: `accepted` clears the network's penalty, a
    /// failure lengthens it.
    pub fn finish(mut self, accepted: bool, now: Instant) {
        if let Some(t) = self.table.take() {
            t.finish(self.network, Some((accepted, now)));
        }
    }
}

impl Drop for PenaltyAttempt {
    fn drop(&mut self) {
        if let Some(t) = self.table.take() {
            t.finish(self.network, None);
        }
    }
}

/// `user` as a client typed it, fit for a log line that fail2ban reads:
/// at most 64 characters, whitespace, brackets, parentheses, commas and
/// control characters replaced by `?`, so that no user name can make a
/// failure line escape the stock filters (or forge another line).
pub fn loggable_user(user: &str) -> String {
    user.chars()
        .take(64)
        .map(|c| {
            if c.is_whitespace() || c.is_control() || "()[]<>,=\\\"".contains(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
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

    fn begin(table: &Arc<AuthPenalty>, client: IpAddr, now: Instant) -> PenaltyAttempt {
        table.begin(client, now).expect("within max_wait")
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Fail `n` attempts from `client` back to back, each at its slot.
    fn fail(table: &Arc<AuthPenalty>, client: &str, mut now: Instant, n: usize) -> Instant {
        for _ in 0..n {
            let a = begin(table, ip(client), now);
            now += a.wait();
            a.finish(false, now);
        }
        now
    }

    #[test]
    fn penalty_doubles_up_to_the_cap() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        let t0 = Instant::now();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let a = begin(&table, ip("192.0.2.1"), now);
            waits.push(a.wait().as_secs());
            now += a.wait();
            a.finish(false, now);
        }
        assert_eq!(waits, [0, 2, 4, 8, 15, 15, 15]);
        // Many more failures: still the cap, no overflow.
        let now = fail(&table, "192.0.2.1", now, 100);
        assert_eq!(begin(&table, ip("192.0.2.1"), now).wait(), secs(15));
    }

    #[test]
    fn parallel_attempts_are_spaced_not_overlapped() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        assert_eq!(PenaltyPolicy::DOVECOT.max_wait, secs(30));
        let t0 = Instant::now();
        // 16 connections ask at the same instant, before any outcome:
        // turns 0, 0, 2, 6, 14, 29 s (at most one a second after the
        // first two); turns beyond max_wait are refused, taking none.
        let attempts: Vec<_> = (0..16).map(|_| table.begin(ip("192.0.2.1"), t0)).collect();
        let waits: Vec<Option<u64>> = attempts
            .iter()
            .map(|a| a.as_ref().map(|a| a.wait().as_secs()))
            .collect();
        assert_eq!(
            &waits[..7],
            [Some(0), Some(0), Some(2), Some(6), Some(14), Some(29), None]
        );
        assert!(waits[6..].iter().all(Option::is_none), "{waits:?}");
        // The refused ones took no turn: once the granted ones have
        // failed, the next turn is 15 s after the last granted one.
        let mut now = t0;
        for a in attempts.into_iter().flatten() {
            now = t0 + a.wait();
            a.finish(false, now);
        }
        assert_eq!(begin(&table, ip("192.0.2.1"), now).wait(), secs(15));
    }

    #[test]
    fn other_clients_are_never_slowed_and_success_resets() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        let t0 = Instant::now();
        let now = fail(&table, "192.0.2.1", t0, 5);
        for other in ["192.0.2.2", "2001:db8:1::1", "::ffff:192.0.2.3"] {
            let a = begin(&table, ip(other), now);
            assert_eq!(a.wait(), Duration::ZERO, "{other}");
            a.finish(true, now);
        }
        // The attacker's address finally gets it right: penalty cleared.
        let a = begin(&table, ip("192.0.2.1"), now);
        let now = now + a.wait();
        a.finish(true, now);
        assert_eq!(begin(&table, ip("192.0.2.1"), now).wait(), Duration::ZERO);
    }

    #[test]
    fn quiet_networks_are_forgotten() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        assert_eq!(PenaltyPolicy::DOVECOT.forget_after, secs(29));
        let t0 = Instant::now();
        let now = fail(&table, "192.0.2.1", t0, 3);
        // 28 s after the next allowed attempt: still remembered, so a
        // second parallel attempt waits (3 failures + 1 in flight).
        let t1 = now + secs(8) + secs(28);
        let a = begin(&table, ip("192.0.2.1"), t1);
        let b = begin(&table, ip("192.0.2.1"), t1);
        assert_eq!((a.wait(), b.wait()), (Duration::ZERO, secs(8)));
        // Abandoned attempts count neither way.
        drop((a, b));
        // Quiet for 29 s after the last slot handed out: forgotten.
        let t2 = t1 + secs(8 + 15) + secs(29);
        let a = begin(&table, ip("192.0.2.1"), t2);
        let b = begin(&table, ip("192.0.2.1"), t2);
        assert_eq!((a.wait(), b.wait()), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn abandoned_attempts_release_their_place() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        let t0 = Instant::now();
        drop(begin(&table, ip("192.0.2.1"), t0));
        drop(begin(&table, ip("192.0.2.1"), t0));
        // No failure recorded: still nothing in flight.
        let a = begin(&table, ip("192.0.2.1"), t0 + secs(10));
        assert_eq!(a.wait(), Duration::ZERO);
        a.finish(true, t0 + secs(10));
    }

    #[test]
    fn ipv6_is_one_network_per_64() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        let t0 = Instant::now();
        let now = fail(&table, "2001:db8:1:2::1", t0, 1);
        // Another address in the same /64: the same network.
        assert_eq!(
            begin(&table, ip("2001:db8:1:2:ffff::9"), now).wait(),
            secs(2)
        );
        // The neighbouring /64 is someone else.
        assert_eq!(
            begin(&table, ip("2001:db8:1:3::1"), now).wait(),
            Duration::ZERO
        );
        // IPv4-mapped addresses are their IPv4 address.
        let now = fail(&table, "192.0.2.9", now, 1);
        assert_eq!(begin(&table, ip("::ffff:192.0.2.9"), now).wait(), secs(2));
    }

    #[test]
    fn table_size_is_bounded() {
        let policy = PenaltyPolicy {
            max_entries: 64,
            ..PenaltyPolicy::DOVECOT
        };
        let table = Arc::new(AuthPenalty::new(policy));
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let now = t0 + Duration::from_millis(u64::from(i));
            begin(&table, client, now).finish(false, now);
            assert!(table.len() <= 64, "{}", table.len());
        }
        // The most recent attacker is still remembered.
        let last = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 999));
        assert_eq!(
            begin(&table, last, t0 + secs(1)).wait(),
            secs(2) - Duration::from_millis(1)
        );
    }

    #[test]
    fn penalty_off() {
        let table = Arc::new(AuthPenalty::new(PenaltyPolicy::OFF));
        let t0 = Instant::now();
        let now = fail(&table, "192.0.2.1", t0, 10);
        assert_eq!(begin(&table, ip("192.0.2.1"), now).wait(), Duration::ZERO);
        assert!(table.is_empty());
        table.set_policy(PenaltyPolicy::DOVECOT);
        assert_eq!(table.policy(), PenaltyPolicy::DOVECOT);
    }

    #[test]
    fn loggable_user_cannot_break_the_line() {
        assert_eq!(
            loggable_user("user1@csuvnetwork.com"),
            "user1@csuvnetwork.com"
        );
        assert_eq!(loggable_user("a b(c),[d]<e>\n=\"f"), "a?b?c???d??e????f");
        assert_eq!(loggable_user(&"x".repeat(100)).len(), 64);
    }
}
