//! `pop3d`: the POP3 server of the system, a thin tokio host around
//! [`pop3_proto::ServerSession`].
//!
//! Per connection it moves bytes between the socket and the session and
//! answers the session's events from [`mailstore`]: logins checked by
//! [`mailstore::auth`], the same authenticator smtpd uses (APOP and
//! CRAM-MD5 only for `{PLAIN}` accounts, which hold the secret itself), the
//! maildrop opened with an exclusive lock
//! (`-ERR [IN-USE]` for a second session, RFC 1939 section 8), messages
//! streamed from their files in chunks (never held whole), and deletions
//! carried out only on QUIT. A connection that ends without QUIT deletes
//! nothing.
//!
//! TLS: `STLS` (RFC 2595) on the POP3 listeners and implicit TLS on the
//! pop3s ones (port 995, RFC 8314) when certificates are configured;
//! passwords in the clear (USER/PASS, PLAIN, LOGIN) are taken only inside
//! TLS, except from `[tls] plaintext_auth_networks` (loopback), while APOP
//! and CRAM-MD5 stay usable (Dovecot's `disable_plaintext_auth`).
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use netkit::Service;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("pop3d-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("passwd"), "user1:{PLAIN}secret\n")?;
//! let cfg = mail_config::Config::from_toml_str(
//!     r#"
//!     [global]
//!     maildir_root = "mail"
//!     passwd_file = "passwd"
//!     [pop3d]
//!     listen = ["127.0.0.1:0"]
//!     "#,
//!     &dir,
//! )?;
//! let running = pop3d::start(cfg).await?;
//! let addr = running.addrs()[0];
//! let stat = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
//!     let mut conn = std::net::TcpStream::connect(addr)?;
//!     let mut lines = BufReader::new(conn.try_clone()?).lines();
//!     lines.next(); // +OK greeting
//!     conn.write_all(b"USER user1\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")?;
//!     lines.nth(2).unwrap_or(Ok(String::new()))
//! })
//! .await??;
//! assert_eq!(stat, "+OK 0 0"); // an empty maildrop
//! running.stop().await;
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use mail_config::{Config, TlsLevel};
use mail_session::driver::{Driver, Stop, FLUSH_AT};
use mail_session::tls::Stream;
use mailstore::auth::{loggable_user, AuthPenalty, Authenticator, PenaltyPolicy};
use mailstore::{Accounts, LocalDomains, Maildrop, Store};
use netkit::tls::rustls::server::ProducesTickets;
use netkit::tls::{ServerTls, TlsError};
use netkit::{
    canonical_ip, ConnLimiter, ConnPermit, LimitExceeded, Login, ShutdownWatch, Standing,
};
use pop3_proto::{
    apop_timestamp, AuthResult, Credentials, Event, Interrupt, MaildropError, Mechanism,
    MessageInfo, ServerConfig, ServerSession, SessionState,
};
use tokio::net::TcpStream;
use tracing::{error, info, warn};

/// Bytes read from a message file per trip to the blocking pool: a typical
/// message is one read; a large one streams in steps of this size.
const CHUNK: usize = 128 * 1024;

/// Messages smaller than this are read on the connection's own task.
const INLINE_READ_MAX: u64 = 32 * 1024;

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] mail_config::ConfigError),
    /// The Maildir store or the passwd-file could not be opened.
    #[error(transparent)]
    Store(#[from] mailstore::Error),
    /// A listener could not be bound, or another socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

struct Shared {
    cfg: RwLock<Arc<Config>>,
    /// Built from `cfg`, replaced with it.
    auth: RwLock<Arc<Authenticator>>,
    store: Store,
    accounts: Arc<Accounts>,
    limiter: Arc<ConnLimiter>,
    next_session: AtomicU64,
    /// Failed logins per client address, across connections.
    penalty: Arc<AuthPenalty>,
    /// Certificates and TLS configuration (`None` without certificates),
    /// replaced on reload.
    tls: RwLock<Option<ServerTls>>,
    /// The TLS session-ticket key, kept across reloads.
    ticketer: Arc<dyn ProducesTickets>,
}

impl Shared {
    fn cfg(&self) -> Arc<Config> {
        Arc::clone(&self.cfg.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn auth(&self) -> Arc<Authenticator> {
        Arc::clone(&self.auth.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn tls(&self) -> Option<ServerTls> {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The TLS setup for `cfg`: pop3d's own certificates, else `[tls]`'s;
/// ALPN `pop3` (RFC 8314 section 7.2 registers it).
fn server_tls(
    cfg: &Config,
    ticketer: &Arc<dyn ProducesTickets>,
) -> Result<Option<ServerTls>, TlsError> {
    let certs = if cfg.pop3d.tls_certificates.is_empty() {
        &cfg.tls.certificates
    } else {
        &cfg.pop3d.tls_certificates
    };
    ServerTls::new(certs, &cfg.tls, &[b"pop3"], Arc::clone(ticketer))
}

fn authenticator(cfg: &Config, accounts: &Arc<Accounts>) -> Authenticator {
    Authenticator::new(
        Arc::clone(accounts),
        LocalDomains::new(&cfg.global.local_domains),
        cfg.pop3d.auth_failure_delay.duration(),
    )
}

fn penalty_policy(cfg: &Config) -> PenaltyPolicy {
    PenaltyPolicy::new(
        cfg.pop3d.auth_penalty.duration(),
        cfg.pop3d.auth_penalty_max.duration(),
    )
}

/// A started server: its listeners are bound and accepting.
pub struct Running {
    shared: Arc<Shared>,
    serving: netkit::Serving,
    addrs: Vec<SocketAddr>,
    pop3s_addrs: Vec<SocketAddr>,
}

impl Running {
    /// Addresses of the POP3 listeners.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Addresses of the pop3s (implicit TLS) listeners.
    pub fn pop3s_addrs(&self) -> &[SocketAddr] {
        &self.pop3s_addrs
    }
}

impl netkit::Service for Running {
    type Error = Error;

    /// Apply a reread configuration (SIGHUP) to new connections (open ones
    /// keep their certificates). Listeners, the Maildir root and the
    /// passwd-file path change only on restart. A certificate that does
    /// not load leaves the old settings in force.
    fn reload(&self, cfg: Config) -> Result<(), Error> {
        let old = self.shared.cfg();
        let tls = server_tls(&cfg, &self.shared.ticketer)?;
        *self
            .shared
            .tls
            .write()
            .unwrap_or_else(PoisonError::into_inner) = tls;
        if cfg.pop3d.listen != old.pop3d.listen
            || cfg.pop3d.pop3s_listen != old.pop3d.pop3s_listen
            || cfg.global.maildir_root != old.global.maildir_root
            || cfg.global.passwd_file != old.global.passwd_file
        {
            warn!("listeners, maildir_root and passwd_file change only on restart");
        }
        *self
            .shared
            .auth
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            Arc::new(authenticator(&cfg, &self.shared.accounts));
        self.shared.penalty.set_policy(penalty_policy(&cfg));
        *self
            .shared
            .cfg
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
        self.shared.accounts.reload_if_changed()?;
        Ok(())
    }

    /// Stop accepting; idle sessions are told and closed, sessions busy
    /// with a command finish it (up to `shutdown_grace`). Nothing is
    /// deleted for a session that did not QUIT.
    async fn stop(self) {
        let grace = self.shared.cfg().pop3d.shutdown_grace.duration();
        self.serving.stop(grace).await;
    }
}

/// Open the store and accounts, bind every listener and start serving.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    let store = Store::with_hostname(&cfg.global.maildir_root, &cfg.global.hostname)?;
    let accounts = Arc::new(Accounts::open(&cfg.global.passwd_file)?);
    let ticketer = netkit::tls::ticketer()?;
    let tls = server_tls(&cfg, &ticketer)?;
    for c in tls.iter().flat_map(ServerTls::certificates) {
        info!(cert = %c.path.display(), names = ?c.names, not_after = c.not_after, "TLS certificate");
    }
    let plain = netkit::bind_all(&cfg.pop3d.listen).await?;
    let implicit = netkit::bind_all(&cfg.pop3d.pop3s_listen).await?;
    let local = |ls: &[tokio::net::TcpListener]| {
        ls.iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()
    };
    let (addrs, pop3s_addrs) = (local(&plain)?, local(&implicit)?);
    for a in &addrs {
        info!(addr = %a, "pop3d listening");
    }
    for a in &pop3s_addrs {
        info!(addr = %a, "pop3d listening (pop3s)");
    }
    let listeners = plain
        .into_iter()
        .map(|l| (l, false))
        .chain(implicit.into_iter().map(|l| (l, true)))
        .collect();
    let shared = Arc::new(Shared {
        tls: RwLock::new(tls),
        ticketer,
        limiter: ConnLimiter::with_fd_limit(
            "pop3d",
            cfg.pop3d.max_connections,
            cfg.pop3d.max_connections_per_client,
        ),
        auth: RwLock::new(Arc::new(authenticator(&cfg, &accounts))),
        penalty: Arc::new(AuthPenalty::new(penalty_policy(&cfg))),
        cfg: RwLock::new(Arc::new(cfg)),
        store,
        accounts,
        next_session: AtomicU64::new(1),
    });
    let handler_shared = Arc::clone(&shared);
    let serving = netkit::Serving::spawn(listeners, move |stream, peer, pop3s, watch| {
        connection(Arc::clone(&handler_shared), stream, peer, pop3s, watch)
    });
    Ok(Running {
        shared,
        serving,
        addrs,
        pop3s_addrs,
    })
}

/// The session's settings; `tls_available` says STLS can be offered,
/// `pop3s` that TLS is already on.
fn session_config(
    cfg: &Config,
    session: u64,
    peer: SocketAddr,
    tls_available: bool,
    pop3s: bool,
) -> ServerConfig {
    let p = &cfg.pop3d;
    let offer = tls_available && !pop3s && p.tls_security_level != TlsLevel::None;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // RFC 1939 section 7: the timestamp must differ in every greeting.
    // The session number does that within this process (per second), the
    // time and the process id across restarts.
    let unique = (now.as_secs() << 32) | (session & 0xFFFF_FFFF);
    ServerConfig {
        greeting: format!("{} POP3 ready.", cfg.global.hostname),
        apop_timestamp: p
            .apop
            .then(|| apop_timestamp(std::process::id(), unique, &cfg.global.hostname)),
        hostname: cfg.global.hostname.clone(),
        sasl: p
            .auth_mechanisms
            .iter()
            .filter_map(|m| Mechanism::from_name(m))
            .collect(),
        max_failed_logins: p.failed_login_limit.max(1),
        idle_timeout: p.idle_timeout.duration(),
        login_timeout: Some(p.login_timeout.duration()),
        command_line_timeout: Some(p.command_line_timeout.duration()),
        transcript: cfg.global.transcript,
        tls_available: offer,
        tls_active: pop3s,
        tls_required: offer && p.tls_security_level == TlsLevel::Encrypt,
        plaintext_requires_tls: !cfg.tls.plaintext_auth_allowed(canonical_ip(peer.ip())),
        ..ServerConfig::default()
    }
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    pop3s: bool,
    shutdown: ShutdownWatch,
) {
    let cfg = shared.cfg();
    let refusal = |which| match which {
        LimitExceeded::PerClient => {
            "-ERR [SYS/TEMP] Maximum number of connections from your IP exceeded.\r\n".to_owned()
        }
        LimitExceeded::Total => {
            "-ERR [SYS/TEMP] Too many connections, try again later.\r\n".to_owned()
        }
    };
    let Some(permit) = shared
        .limiter
        .admit(&mut stream, peer, &shutdown, refusal)
        .await
    else {
        return;
    };
    let number = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let sid = format!("{number:X}");
    info!(sid, client = %peer, pop3s, "connect");
    let tls = shared.tls();
    let (stream, established) = match (&tls, pop3s) {
        (Some(t), true) => match netkit::tls::accept_implicit(stream, t, &permit, &sid, peer).await
        {
            Some((s, info)) => (s, Some(info)),
            None => return,
        },
        // The configuration check makes this impossible.
        (None, true) => return,
        (_, false) => (Stream::Plain(stream), None),
    };
    let config = session_config(&cfg, number, peer, tls.is_some(), pop3s);
    let session = ServerSession::new(config, Duration::ZERO);
    let mut driver = netkit::driver(stream, &permit, &sid, &cfg.global);
    if let Some(info) = established {
        // The transcript marks where TLS began, here before the greeting.
        driver.note(&format!("TLS established: {info}"));
    }
    let mut conn = Conn {
        tls,
        shared,
        permit,
        peer,
        sid,
        account: None,
        maildrop: None,
    };
    let result = conn.drive(session, &mut driver).await;
    // Dropping the maildrop without finish() deletes nothing and releases
    // the lock (RFC 1939 section 6: no QUIT, no UPDATE state).
    if let Some(m) = conn.maildrop.take() {
        let _ = tokio::task::spawn_blocking(move || drop(m)).await;
    }
    match result {
        Ok(()) => info!(sid = conn.sid, "disconnect"),
        Err(e) => info!(sid = conn.sid, error = %e, "disconnect"),
    }
}

struct Conn {
    shared: Arc<Shared>,
    /// The TLS setup this connection started with.
    tls: Option<ServerTls>,
    /// The connection's slot; marked authenticated once logged in, so that
    /// it is never evicted when full.
    permit: ConnPermit,
    peer: SocketAddr,
    sid: String,
    /// The canonical account name after a successful login.
    account: Option<String>,
    maildrop: Option<Maildrop>,
}

impl Conn {
    async fn drive(
        &mut self,
        mut session: ServerSession,
        driver: &mut Driver<Stream>,
    ) -> std::io::Result<()> {
        loop {
            // On shutdown a session that has not logged in ends at once;
            // one that has may finish (and QUIT, which is when deletions
            // happen) within shutdown_grace.
            let interruptible = session.state() == SessionState::Authorization;
            match driver.next(&mut session, interruptible).await {
                Ok(event) => {
                    if !matches!(event, Event::Retrieve { .. }) {
                        // The answer may take a while (a password hash, a
                        // delay after a failure): send what is ready first.
                        // A message's status line and body go out together.
                        driver.flush().await?;
                    }
                    self.answer(&mut session, event, driver).await?;
                    self.permit.set_standing(match session.state() {
                        SessionState::Authorization => Standing::PreAuth,
                        _ => Standing::Authenticated,
                    });
                }
                Err(Stop::Closed) => return Ok(()),
                Err(Stop::Shutdown | Stop::Evicted) => {
                    let line: &[u8] = if self.permit.is_evicted() {
                        // Its slot went to a client with fewer connections.
                        info!(sid = self.sid, "evicted: server full");
                        b"-ERR [SYS/TEMP] Too many connections, disconnecting.\r\n"
                    } else {
                        b"-ERR [SYS/TEMP] Server shutting down.\r\n"
                    };
                    return driver.write_now(line).await;
                }
                Err(Stop::Unanswered) => {
                    error!(sid = self.sid, "event left unanswered (bug)");
                    return Ok(());
                }
                Err(Stop::Io(e)) => return Err(e),
            }
        }
    }

    async fn answer(
        &mut self,
        session: &mut ServerSession,
        event: Event,
        driver: &mut Driver<Stream>,
    ) -> std::io::Result<()> {
        let answered = match event {
            Event::Authenticate(creds) => {
                let result = self.check_credentials(creds).await;
                session.auth_result(result)
            }
            Event::OpenMaildrop { user } => {
                let name = self.account.clone().unwrap_or(user);
                let store = self.shared.store.clone();
                match tokio::task::spawn_blocking(move || store.open_maildrop(&name)).await {
                    Ok(Ok(m)) => {
                        let list = m
                            .messages()
                            .iter()
                            .map(|i| MessageInfo {
                                size: i.size,
                                uid: i.uid.clone(),
                            })
                            .collect();
                        info!(
                            sid = self.sid,
                            user = m.user(),
                            messages = m.messages().len(),
                            "maildrop opened"
                        );
                        self.maildrop = Some(m);
                        session.maildrop_opened(list)
                    }
                    Ok(Err(mailstore::Error::InUse(u))) => {
                        warn!(sid = self.sid, user = u, "maildrop in use");
                        session.maildrop_failed(MaildropError::InUse)
                    }
                    Ok(Err(e)) => {
                        error!(sid = self.sid, error = %e, "opening maildrop failed");
                        session.maildrop_failed(MaildropError::TempFail)
                    }
                    Err(e) => {
                        error!(sid = self.sid, error = %e, "maildrop task failed");
                        session.maildrop_failed(MaildropError::TempFail)
                    }
                }
            }
            Event::Retrieve { message, top, size } => {
                let index = (message.number as usize).saturating_sub(1);
                return self
                    .retrieve(session, index, size, top.is_none(), driver)
                    .await;
            }
            Event::Update { deleted } => {
                let indices: Vec<usize> = deleted
                    .iter()
                    .map(|m| (m.number as usize).saturating_sub(1))
                    .collect();
                let ok = match self.maildrop.take() {
                    Some(m) => {
                        match tokio::task::spawn_blocking(move || m.finish(&indices)).await {
                            Ok(Ok(report)) => {
                                info!(sid = self.sid, deleted = report.deleted, "maildrop updated");
                                true
                            }
                            Ok(Err(e)) => {
                                error!(sid = self.sid, error = %e, "expunge failed");
                                false
                            }
                            Err(e) => {
                                error!(sid = self.sid, error = %e, "expunge task failed");
                                false
                            }
                        }
                    }
                    None => true,
                };
                session.update_result(ok)
            }
            Event::StartTls => {
                let Some(tls) = self.tls.clone() else {
                    return Err(std::io::Error::other("STLS without certificates (bug)"));
                };
                // The session dropped what was pipelined after STLS.
                netkit::tls::start_tls(driver, &tls, &self.permit, &self.sid, self.peer).await?;
                session.tls_established()
            }
        };
        if let Err(e) = answered {
            error!(sid = self.sid, error = %e, "session refused an answer (bug)");
        }
        Ok(())
    }

    async fn check_credentials(&mut self, creds: Credentials) -> AuthResult {
        let user = creds.username().to_owned();
        let mech = creds.mechanism_name();
        let client = canonical_ip(self.peer.ip());
        let auth = self.shared.auth();
        let check = move || auth.check_session(&creds);
        match netkit::login(&self.shared.penalty, client, &self.sid, check).await {
            Login::Accepted(account) => {
                info!(sid = self.sid, user = account.name, "logged in");
                self.account = Some(account.name);
                AuthResult::Accepted
            }
            Login::Rejected { delay } => {
                // Dovecot's passdb wording, which fail2ban's stock dovecot
                // filter matches (given `_daemon=pop3d`).
                warn!(
                    sid = self.sid,
                    method = mech,
                    "passwd-file({},{client}): Password mismatch",
                    loggable_user(&user)
                );
                tokio::time::sleep(delay).await;
                AuthResult::Rejected
            }
            Login::Deferred | Login::Unavailable => AuthResult::TempFail,
        }
    }

    /// Stream message `index` through the session: open it and read a
    /// chunk in the blocking pool (one trip for a typical message), hand it
    /// over, write out what the session produced, and go on until the
    /// session has enough (TOP) or the file ends.
    async fn retrieve(
        &mut self,
        session: &mut ServerSession,
        index: usize,
        size: u64,
        whole: bool,
        driver: &mut Driver<Stream>,
    ) -> std::io::Result<()> {
        if size < INLINE_READ_MAX {
            return self.retrieve_small(session, index, whole, driver).await;
        }
        let Some(maildrop) = self.maildrop.take() else {
            let _ = session.message_failed();
            return Ok(());
        };
        // The snapshot knows the size: no larger buffer than needed (a big
        // zeroed buffer per RETR would cost page faults, not just memory).
        // One octet more than listed, so that a short read shows the end
        // of the file without a second trip.
        let first = usize::try_from(size)
            .unwrap_or(CHUNK)
            .saturating_add(1)
            .min(CHUNK);
        let open_and_read = move |maildrop: Maildrop| {
            let r = maildrop.open_message(index).map_err(std::io::Error::other);
            let step = r.and_then(|mut reader| {
                let mut buf = vec![0; first];
                let n = read_full(&mut reader, &mut buf)?;
                Ok((reader, buf, n))
            });
            (maildrop, step)
        };
        // Larger messages go to the blocking pool chunk by chunk.
        let opened = tokio::task::spawn_blocking(move || open_and_read(maildrop)).await;
        let mut step = match opened {
            Ok((maildrop, step)) => {
                self.maildrop = Some(maildrop);
                step
            }
            Err(e) => Err(std::io::Error::other(e)),
        };
        loop {
            let (reader, buf, n) = match step {
                Ok(v) => v,
                Err(e) => {
                    let gone = e
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<mailstore::Error>())
                        .is_some_and(|e| matches!(e, mailstore::Error::MessageGone(_)));
                    message_unreadable(session, &self.sid, &e, gone);
                    return Ok(());
                }
            };
            let more = session
                .message_data(buf.get(..n).unwrap_or_default())
                .unwrap_or_default();
            // Write out what the session stuffed so far; it then says
            // AwaitingHost (wants the next chunk or the end).
            while let Err(Interrupt::Output(bytes)) = session.next() {
                driver.write(&bytes).await?;
            }
            if !more || n < buf.len() {
                break;
            }
            step = match tokio::task::spawn_blocking(move || {
                let (mut reader, mut buf) = (reader, buf);
                buf.resize(CHUNK, 0);
                let n = read_full(&mut reader, &mut buf)?;
                Ok((reader, buf, n))
            })
            .await
            {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e)),
            };
        }
        let _ = session.message_end();
        if whole {
            if let Some(m) = self.maildrop.as_mut() {
                // RETR marks the message seen (moved to cur/ at QUIT), as
                // Dovecot does; TOP does not.
                let _ = m.mark_seen(index);
            }
        }
        Ok(())
    }
}

thread_local! {
    /// Per worker thread: a small message's bytes as stored and in CRLF
    /// form, reused by every small RETR on the thread, so a RETR allocates
    /// nothing and idle connections hold no buffer.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl Conn {
    /// RETR/TOP of a message of a few pages, done right here: it is almost
    /// always in the page cache (just listed), and the trip to the blocking
    /// pool and back (two thread switches) would cost more than the read.
    /// The stuffed reply goes straight into the write buffer.
    async fn retrieve_small(
        &mut self,
        session: &mut ServerSession,
        index: usize,
        whole: bool,
        driver: &mut Driver<Stream>,
    ) -> std::io::Result<()> {
        let (maildrop, out) = (self.maildrop.as_mut(), driver.output_buffer());
        let Some(maildrop) = maildrop else {
            let _ = session.message_failed();
            return Ok(());
        };
        let read = SCRATCH.with_borrow_mut(|(raw, crlf)| {
            let r = maildrop.read_message(index, raw, crlf);
            if r.is_ok() {
                let _ = session.message_data(crlf);
                session.drain_output(out);
            }
            r
        });
        if let Err(e) = read {
            let gone = matches!(e, mailstore::Error::MessageGone(_));
            message_unreadable(session, &self.sid, &e, gone);
            return Ok(());
        }
        let _ = session.message_end();
        if whole {
            // RETR marks the message seen (moved to cur/ at QUIT), as
            // Dovecot does; TOP does not.
            let _ = maildrop.mark_seen(index);
        }
        if driver.output_buffer().len() >= FLUSH_AT {
            driver.flush().await?;
        }
        Ok(())
    }
}

/// Answers a RETR or TOP whose message could not be read: `gone` when
/// another program removed the file after the listing (`-ERR Message N
/// expunged.`, nothing to retry), else `-ERR [SYS/TEMP]`.
fn message_unreadable(
    session: &mut ServerSession,
    sid: &str,
    e: &dyn std::fmt::Display,
    gone: bool,
) {
    if gone {
        info!(sid, error = %e, "message removed by another program");
        let _ = session.message_gone();
    } else {
        warn!(sid, error = %e, "reading message failed");
        let _ = session.message_failed();
    }
}

/// Fill `buf` as far as the reader allows; short only at end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
