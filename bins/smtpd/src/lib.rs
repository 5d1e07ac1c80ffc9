//! `smtpd`: the ESMTP server of the system, a thin tokio host around
//! [`smtp_proto::ServerSession`].
//!
//! Per connection it moves bytes between the socket and the session and
//! answers the session's events from [`mailstore`]: credentials from the
//! passwd-file, recipients through the router (`550 5.1.1` for unknown
//! local users, `554 5.7.1 Relay access denied` for other domains unless
//! the client may relay), and delivery into every local recipient's
//! Maildir.
//!
//! A message is durable before `250 2.0.0 Ok: queued as <id>` is sent: a
//! message held in memory (up to 256 KiB) is written to the queue journal
//! ([`mailstore::Queue`], one shared flush) and delivered into the Maildirs
//! right after the reply, with retries if that fails; a larger one is
//! streamed into its Maildir file and committed there before the reply.
//! Messages the journal holds at start (after a crash) are delivered then.
//!
//! Two kinds of listener: inbound (port 25: local recipients need no AUTH)
//! and submission (port 587, RFC 6409: AUTH before MAIL).
//!
//! The logic lives here so the end-to-end tests and the lab runner start
//! the server in-process with [`start`]; `main.rs` only parses arguments.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use netkit::Service;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("smtpd-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("passwd"), "user1:{PLAIN}secret\n")?;
//! let cfg = mail_config::Config::from_toml_str(
//!     r#"
//!     [global]
//!     maildir_root = "mail"
//!     passwd_file = "passwd"
//!     [smtpd]
//!     listen = ["127.0.0.1:0"]
//!     submission_listen = []
//!     "#,
//!     &dir,
//! )?;
//! let running = smtpd::start(cfg).await?;
//! let addr = running.inbound_addrs()[0];
//! let reply = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
//!     let mut conn = std::net::TcpStream::connect(addr)?;
//!     let mut lines = BufReader::new(conn.try_clone()?).lines();
//!     lines.next(); // 220 greeting
//!     conn.write_all(b"VRFY user1@csuvnetwork.com\r\n")?;
//!     lines.next().unwrap_or(Ok(String::new()))
//! })
//! .await??;
//! assert_eq!(reply, "252 2.0.0 user1@csuvnetwork.com");
//! running.stop().await;
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use mail_config::{BareNewline, Config};
use mail_session::driver::{Driver, Stop, TranscriptLog};
use mailstore::{Accounts, Aliases, Queue, QueueIdGenerator, Queued, Route, Router, Store};
use netkit::{ConnLimiter, LimitExceeded, ShutdownWatch};
use smtp_proto::{
    AbortReason, AuthResult, BareLf, Credentials, Delivery, Event, ForwardPath, Mechanism, Reply,
    ReversePath, ServerConfig, ServerSession, Verdict,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

/// Body bytes gathered before they are written to the Maildir file: a
/// small message costs one trip to the blocking pool, a large one is never
/// held whole in memory.
const FLUSH_AT: usize = 256 * 1024;

/// Memory for queued messages waiting for their Maildir delivery, in KiB.
/// When it is used up, messages are delivered before the reply instead
/// (the direct path), which slows clients down to the disk's pace.
const QUEUE_MEMORY_KIB: usize = 64 * 1024;

/// Deliveries from the queue running at once (each waits on fsyncs; more
/// would only add threads).
const DELIVERY_SLOTS: usize = 16;

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] mail_config::ConfigError),
    /// The Maildir store, passwd-file or aliases could not be opened.
    #[error(transparent)]
    Store(#[from] mailstore::Error),
    /// A listener could not be bound, or another socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Everything a connection needs that SIGHUP may replace.
struct Settings {
    cfg: Config,
    router: Router,
}

impl Settings {
    fn new(cfg: Config, accounts: &Arc<Accounts>) -> Result<Self, Error> {
        let aliases = if cfg.global.aliases_file.exists() {
            Some(Arc::new(Aliases::open(&cfg.global.aliases_file)?))
        } else {
            None
        };
        let router = Router::new(&cfg.global.local_domains, Arc::clone(accounts), aliases);
        Ok(Settings { cfg, router })
    }
}

struct Shared {
    settings: RwLock<Arc<Settings>>,
    store: Store,
    queue: Queue,
    queue_memory: Arc<Semaphore>,
    delivery_slots: Arc<Semaphore>,
    /// Queued messages whose current delivery attempt has not ended (not
    /// counting those waiting to retry); shutdown waits for them.
    attempts: AtomicUsize,
    attempts_done: Notify,
    accounts: Arc<Accounts>,
    queue_ids: QueueIdGenerator,
    limiter: Arc<ConnLimiter>,
    next_session: AtomicU64,
}

impl Shared {
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Delivers a queued message into its Maildirs in the background,
    /// retrying after `queue_retry_delay` while it fails. The message
    /// stays in the journal until delivered, so a stop or crash meanwhile
    /// loses nothing: the next start delivers it.
    fn spawn_delivery(self: &Arc<Self>, mut q: Queued, permit: Option<OwnedSemaphorePermit>) {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let _memory = permit;
            loop {
                let slot = Arc::clone(&shared.delivery_slots).acquire_owned().await;
                let queue = shared.queue.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let r = queue.deliver(&mut q);
                    (q, r)
                })
                .await;
                drop(slot);
                let ended = |shared: &Shared| {
                    if shared.attempts.fetch_sub(1, Ordering::SeqCst) == 1 {
                        shared.attempts_done.notify_waiters();
                    }
                };
                match r {
                    Ok((_, Ok(report))) => {
                        info!(
                            queue_id = report.queue_id,
                            paths = report.paths.len(),
                            "delivered"
                        );
                        ended(&shared);
                        return;
                    }
                    Ok((back, Err(e))) => {
                        let delay = shared.settings().cfg.smtpd.queue_retry_delay.duration();
                        warn!(queue_id = back.queue_id(), error = %e, retry_in = ?delay, "delivery deferred");
                        q = back;
                        ended(&shared);
                        tokio::time::sleep(delay).await;
                        shared.attempts.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        // The message stays in the journal; the next start
                        // delivers it.
                        error!(error = %e, "delivery task failed");
                        ended(&shared);
                        return;
                    }
                }
            }
        });
    }

    /// Waits until no queued message is being delivered (those waiting for
    /// a retry excepted), or until `deadline`.
    async fn deliveries_settled(&self, deadline: Instant) {
        loop {
            let notified = self.attempts_done.notified();
            if self.attempts.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                warn!(
                    in_progress = self.attempts.load(Ordering::SeqCst),
                    "stopping with deliveries in progress; the queue keeps them for the next start"
                );
                return;
            }
        }
    }
}

/// A started server: its listeners are bound and accepting.
pub struct Running {
    shared: Arc<Shared>,
    serving: netkit::Serving,
    inbound: Vec<SocketAddr>,
    submission: Vec<SocketAddr>,
}

impl Running {
    /// Addresses of the inbound (port 25 style) listeners.
    pub fn inbound_addrs(&self) -> &[SocketAddr] {
        &self.inbound
    }

    /// Addresses of the submission (port 587 style) listeners.
    pub fn submission_addrs(&self) -> &[SocketAddr] {
        &self.submission
    }
}

impl netkit::Service for Running {
    type Error = Error;

    /// Apply a reread configuration (SIGHUP): host name, domains, relay
    /// networks, limits and the aliases file take effect for new
    /// connections. Listeners, store and passwd-file paths need a restart.
    fn reload(&self, cfg: Config) -> Result<(), Error> {
        let old = self.shared.settings();
        if cfg.smtpd.listen != old.cfg.smtpd.listen
            || cfg.smtpd.submission_listen != old.cfg.smtpd.submission_listen
            || cfg.global.maildir_root != old.cfg.global.maildir_root
            || cfg.global.passwd_file != old.cfg.global.passwd_file
            || cfg.smtpd.queue_directory != old.cfg.smtpd.queue_directory
        {
            warn!(
                "listeners, maildir_root, passwd_file and queue_directory change only on restart"
            );
        }
        let new = Settings::new(cfg, &self.shared.accounts)?;
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        self.shared.accounts.reload_if_changed()?;
        Ok(())
    }

    /// Stop accepting, let transactions in flight finish (up to
    /// `shutdown_grace`), then return. Idle sessions get `421`.
    async fn stop(self) {
        let grace = self.shared.settings().cfg.smtpd.shutdown_grace.duration();
        let deadline = Instant::now() + grace;
        self.serving.stop(grace).await;
        self.shared.deliveries_settled(deadline).await;
        // Flush what was delivered, so the next start has nothing to check.
        let queue = self.shared.queue.clone();
        match tokio::task::spawn_blocking(move || queue.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "final queue checkpoint failed; the next start redoes it")
            }
            Err(e) => warn!(error = %e, "final queue checkpoint task failed"),
        }
    }
}

/// Open the store and accounts, bind every listener and start serving.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    let store = Store::with_hostname(&cfg.global.maildir_root, &cfg.global.hostname)?;
    match store.clean_stale_tmp(SystemTime::now(), mailstore::STALE_TMP_AGE) {
        Ok(0) => {}
        Ok(n) => info!(removed = n, "removed stale Maildir tmp files"),
        Err(e) => warn!(error = %e, "cleaning stale Maildir tmp files failed"),
    }
    let accounts = Arc::new(Accounts::open(&cfg.global.passwd_file)?);
    let (queue, recovered) = {
        let (dir, store) = (cfg.smtpd.queue_directory.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            Queue::open(
                dir,
                store,
                mailstore::queue::DEFAULT_SEGMENT_SIZE,
                mailstore::queue::DEFAULT_CHECKPOINT_INTERVAL,
            )
        })
        .await
        .map_err(std::io::Error::other)??
    };
    if !recovered.is_empty() {
        info!(
            messages = recovered.len(),
            "delivering messages queued before the last stop"
        );
    }
    let inbound = netkit::bind_all(&cfg.smtpd.listen).await?;
    let submission = netkit::bind_all(&cfg.smtpd.submission_listen).await?;
    let limiter = ConnLimiter::new(
        cfg.smtpd.max_connections,
        cfg.smtpd.max_connections_per_client,
    );
    let settings = Settings::new(cfg, &accounts)?;
    let shared = Arc::new(Shared {
        settings: RwLock::new(Arc::new(settings)),
        store,
        queue,
        queue_memory: Arc::new(Semaphore::new(QUEUE_MEMORY_KIB)),
        delivery_slots: Arc::new(Semaphore::new(DELIVERY_SLOTS)),
        attempts: AtomicUsize::new(0),
        attempts_done: Notify::new(),
        accounts,
        queue_ids: QueueIdGenerator::new(),
        limiter,
        next_session: AtomicU64::new(1),
    });
    let addrs = |ls: &[TcpListener]| -> Result<Vec<SocketAddr>, Error> {
        Ok(ls
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<_, _>>()?)
    };
    let (in_addrs, sub_addrs) = (addrs(&inbound)?, addrs(&submission)?);
    for a in &in_addrs {
        info!(addr = %a, "smtpd listening (inbound)");
    }
    for a in &sub_addrs {
        info!(addr = %a, "smtpd listening (submission)");
    }
    let listeners = inbound
        .into_iter()
        .map(|l| (l, false))
        .chain(submission.into_iter().map(|l| (l, true)))
        .collect();
    for q in recovered {
        shared.spawn_delivery(q, None);
    }
    let handler_shared = Arc::clone(&shared);
    let serving = netkit::Serving::spawn(listeners, move |stream, peer, submission, watch| {
        connection(Arc::clone(&handler_shared), stream, peer, submission, watch)
    });
    Ok(Running {
        shared,
        serving,
        inbound: in_addrs,
        submission: sub_addrs,
    })
}

/// What the host knows of the transaction the session is in.
#[derive(Default)]
struct Txn {
    from: String,
    recipients: Vec<String>,
    mailboxes: Vec<String>,
    queue_id: String,
    pending: Vec<u8>,
    delivery: Option<mailstore::Delivery>,
    failed: bool,
    active: bool,
}

struct Conn {
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    peer: SocketAddr,
    sid: String,
    helo: String,
    esmtp: bool,
    txn: Txn,
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    submission: bool,
    shutdown: ShutdownWatch,
) {
    let settings = shared.settings();
    let hostname = settings.cfg.global.hostname.clone();
    let _permit = match shared.limiter.try_acquire(peer.ip()) {
        Ok(p) => p,
        Err(which) => {
            // Postfix's wording for smtpd_client_connection_count_limit.
            let text = match which {
                LimitExceeded::PerClient => format!(
                    "421 4.7.0 {hostname} Error: too many connections from {}\r\n",
                    peer.ip()
                ),
                LimitExceeded::Total => {
                    format!("421 4.3.2 {hostname} Error: too many connections\r\n")
                }
            };
            let _ = stream.write_all(text.as_bytes()).await;
            warn!(client = %peer, "connection refused: {:?} limit", which);
            return;
        }
    };
    let sid = format!("{:X}", shared.next_session.fetch_add(1, Ordering::Relaxed));
    info!(sid, client = %peer, submission, "connect");
    let session = ServerSession::new(session_config(&settings.cfg, submission), Duration::ZERO);
    let mut driver = Driver::new(stream).with_shutdown(shutdown.token());
    if settings.cfg.global.transcript {
        driver = driver.with_transcript(TranscriptLog {
            sid: sid.clone(),
            show_secrets: settings.cfg.global.transcript_show_secrets,
        });
    }
    let mut conn = Conn {
        shared,
        settings,
        peer,
        sid,
        helo: String::new(),
        esmtp: false,
        txn: Txn::default(),
    };
    let result = conn.drive(session, driver).await;
    if conn.txn.delivery.is_some() {
        conn.abort_delivery().await;
    }
    match result {
        Ok(()) => info!(sid = conn.sid, "disconnect"),
        Err(e) => info!(sid = conn.sid, error = %e, "disconnect"),
    }
}

fn session_config(cfg: &Config, submission: bool) -> ServerConfig {
    let s = &cfg.smtpd;
    let mut c = ServerConfig::new(cfg.global.hostname.clone());
    c.max_message_size = s.message_size_limit;
    c.max_recipients = s.recipient_limit;
    c.max_errors = s.error_limit;
    c.bare_lf = match s.bare_newline {
        BareNewline::Normalize => BareLf::Normalize,
        BareNewline::Reject => BareLf::Reject,
    };
    c.auth_mechanisms = s
        .auth_mechanisms
        .iter()
        .filter_map(|m| Mechanism::from_name(m))
        .collect();
    c.auth_required = submission;
    // No TLS in this build: AUTH over plain text is what the lab does.
    c.auth_requires_tls = false;
    c.tls_available = false;
    c.command_timeout = s.command_timeout.duration();
    c.data_timeout = s.data_timeout.duration();
    c.record_transcript = cfg.global.transcript;
    c
}

impl Conn {
    async fn drive(
        &mut self,
        mut session: ServerSession,
        mut driver: Driver<TcpStream>,
    ) -> std::io::Result<()> {
        loop {
            // Shutdown ends a session only between transactions; one in
            // flight may finish within shutdown_grace.
            let idle = !self.txn.active;
            match driver.next(&mut session, idle).await {
                Ok(event) => {
                    // The answer may take a while (a password check, a
                    // flush): the client sees what is ready first.
                    driver.flush().await?;
                    self.answer(&mut session, event).await;
                }
                Err(Stop::Closed) => return Ok(()),
                Err(Stop::Shutdown) => {
                    let text = format!(
                        "421 4.3.2 {} Service shutting down, closing transmission channel\r\n",
                        self.settings.cfg.global.hostname
                    );
                    return driver.write_now(text.as_bytes()).await;
                }
                Err(Stop::Unanswered) => {
                    error!(sid = self.sid, "event left unanswered (bug)");
                    return Ok(());
                }
                Err(Stop::Io(e)) => return Err(e),
            }
        }
    }

    async fn answer(&mut self, session: &mut ServerSession, event: Event) {
        let answered = match event {
            Event::Helo { domain, extended } => {
                self.helo = domain;
                self.esmtp = extended;
                Ok(())
            }
            Event::Auth(creds) => {
                let result = self.check_credentials(creds).await;
                session.auth_result(result)
            }
            Event::AuthChallenge => {
                let challenge = self.cram_challenge();
                session.provide_challenge(&challenge)
            }
            Event::Mail { from, .. } => {
                self.txn = Txn {
                    from: match from {
                        ReversePath::Null => String::new(),
                        ReversePath::Mailbox(m) => m.to_string(),
                    },
                    ..Txn::default()
                };
                session.decide(Verdict::Accept)
            }
            Event::Rcpt { to, .. } => {
                let verdict = self.route_recipient(session, &to);
                session.decide(verdict)
            }
            Event::Vrfy { argument } => {
                let verdict = self.verify_address(&argument);
                session.decide(verdict)
            }
            Event::MessageStart => {
                self.txn.active = true;
                self.txn.queue_id = self.shared.queue_ids.next_id(SystemTime::now());
                Ok(())
            }
            Event::BodyChunk(bytes) => {
                self.txn.pending.extend_from_slice(&bytes);
                if self.txn.pending.len() >= FLUSH_AT && !self.txn.failed {
                    self.flush(session).await;
                }
                Ok(())
            }
            Event::MessageEnd(env) => {
                let result = self.finish_message(session, env.size).await;
                session.message_result(result)
            }
            Event::MessageAborted(reason) => {
                if reason != AbortReason::Closed {
                    debug!(sid = self.sid, ?reason, "message aborted");
                }
                self.abort_delivery().await;
                Ok(())
            }
            Event::StartTls => {
                // Never advertised (tls_available = false), so never sent.
                Ok(())
            }
        };
        if let Err(e) = answered {
            error!(sid = self.sid, error = %e, "session refused an answer (bug)");
        }
    }

    async fn check_credentials(&self, creds: Credentials) -> AuthResult {
        let accounts = Arc::clone(&self.shared.accounts);
        let user = creds.username().to_owned();
        let mech = creds.mechanism_name();
        let settings = Arc::clone(&self.settings);
        let ok = tokio::task::spawn_blocking(move || -> Result<bool, mailstore::Error> {
            // Acting as another user (authzid) is not supported.
            if let Credentials::Plain {
                authzid, username, ..
            } = &creds
            {
                if !authzid.is_empty() && authzid != username {
                    return Ok(false);
                }
            }
            // `user1@csuvnetwork.com` logs in as `user1` (clients such as
            // Foxmail offer the whole address as the user name).
            let Some(name) = settings.router.login_name(creds.username()) else {
                return Ok(false);
            };
            match creds.password() {
                Some(p) => Ok(accounts
                    .verify_password(&name, p.expose().as_bytes())?
                    .is_some()),
                // CRAM-MD5 needs the clear secret: only {PLAIN} accounts.
                None => Ok(accounts
                    .plain_secret(&name)?
                    .and_then(|s| {
                        std::str::from_utf8(s.expose())
                            .ok()
                            .map(|s| creds.verify_password(s))
                    })
                    .unwrap_or(false)),
            }
        })
        .await;
        match ok {
            Ok(Ok(true)) => {
                info!(sid = self.sid, user, %mech, "authenticated");
                AuthResult::Success
            }
            Ok(Ok(false)) => {
                warn!(sid = self.sid, client = %self.peer, user, %mech, "authentication failed");
                tokio::time::sleep(self.settings.cfg.smtpd.auth_failure_delay.duration()).await;
                AuthResult::Failure
            }
            Ok(Err(e)) => {
                error!(sid = self.sid, error = %e, "account lookup failed");
                AuthResult::TemporaryFailure
            }
            Err(e) => {
                error!(sid = self.sid, error = %e, "account lookup task failed");
                AuthResult::TemporaryFailure
            }
        }
    }

    /// `<random.time@hostname>`, RFC 2195's challenge form.
    fn cram_challenge(&self) -> String {
        let mut r = [0u8; 8];
        // A failure of the OS random source leaves zeros; the timestamp
        // still makes the challenge unique per second.
        let _ = getrandom::getrandom(&mut r);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "<{}.{}@{}>",
            u64::from_le_bytes(r),
            now.as_secs(),
            self.settings.cfg.global.hostname
        )
    }

    fn route_recipient(&mut self, session: &ServerSession, to: &ForwardPath<'_>) -> Verdict {
        let addr = to.to_string();
        match self.settings.router.route(&addr) {
            Ok(Route::Local(mailboxes)) => {
                self.txn.recipients.push(addr);
                for m in mailboxes {
                    if !self.txn.mailboxes.contains(&m) {
                        self.txn.mailboxes.push(m);
                    }
                }
                Verdict::Accept
            }
            // Postfix's wording (local_recipient_maps).
            Ok(Route::UnknownUser) => Verdict::Reject(Reply::new(
                550,
                (5, 1, 1),
                format!(
                    "<{addr}>: Recipient address rejected: User unknown in local recipient table"
                ),
            )),
            Ok(Route::NotLocal) => {
                let may_relay = session.authenticated_user().is_some()
                    || self.settings.cfg.global.is_relay_client(self.peer.ip());
                if may_relay {
                    // Allowed to relay, but this server has no outbound
                    // transport: refuse now rather than accept and drop.
                    Verdict::Reject(Reply::new(
                        550,
                        (5, 4, 4),
                        format!("<{addr}>: Recipient address rejected: no route to non-local domains (this server delivers only locally)"),
                    ))
                } else {
                    // Postfix's reject_unauth_destination.
                    Verdict::Reject(Reply::new(
                        554,
                        (5, 7, 1),
                        format!("<{addr}>: Relay access denied"),
                    ))
                }
            }
            Err(e) => {
                error!(sid = self.sid, error = %e, "recipient lookup failed");
                Verdict::Reject(Reply::new(
                    451,
                    (4, 3, 0),
                    format!("<{addr}>: Temporary lookup failure"),
                ))
            }
        }
    }

    /// VRFY as Postfix answers it with `local_recipient_maps`: 252 for a
    /// deliverable local address (RFC 5321 section 3.5.3: "cannot verify,
    /// but will accept"), 550 5.1.1 for an unknown local user.
    fn verify_address(&self, argument: &str) -> Verdict {
        let addr = argument.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        match self.settings.router.route(addr) {
            Ok(Route::UnknownUser) => Verdict::Reject(Reply::new(
                550,
                (5, 1, 1),
                format!(
                    "<{addr}>: Recipient address rejected: User unknown in local recipient table"
                ),
            )),
            _ => Verdict::Accept,
        }
    }

    fn envelope(&self, session: &ServerSession) -> mailstore::Envelope {
        let authed = session.authenticated_user().is_some();
        let protocol = match (self.esmtp, authed) {
            (false, _) => mailstore::Protocol::Smtp,
            (true, false) => mailstore::Protocol::Esmtp,
            (true, true) => mailstore::Protocol::Esmtpa,
        };
        mailstore::Envelope {
            mail_from: self.txn.from.clone(),
            recipients: self.txn.recipients.clone(),
            mailboxes: self.txn.mailboxes.clone(),
            helo: self.helo.clone(),
            client_ip: canonical_ip(self.peer.ip()),
            protocol,
            our_hostname: self.settings.cfg.global.hostname.clone(),
            queue_id: self.txn.queue_id.clone(),
            time: SystemTime::now(),
        }
    }

    /// The open delivery, or the envelope to open one with (built only
    /// when needed: it clones the recipient lists).
    fn take_writer(&mut self, session: &ServerSession) -> Writer {
        match self.txn.delivery.take() {
            Some(d) => Writer::Open(d),
            None => Writer::New(self.envelope(session)),
        }
    }

    /// Write what is pending to the Maildir file (opening it first).
    async fn flush(&mut self, session: &ServerSession) {
        let mut pending = std::mem::take(&mut self.txn.pending);
        let writer = self.take_writer(session);
        let store = self.shared.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            let d = writer.append(&store, &pending)?;
            pending.clear();
            Ok::<_, mailstore::Error>((d, pending))
        })
        .await;
        match r {
            Ok(Ok((d, buf))) => {
                self.txn.delivery = Some(d);
                self.txn.pending = buf;
            }
            Ok(Err(e)) => {
                error!(sid = self.sid, error = %e, "writing message failed");
                self.txn.failed = true;
            }
            Err(e) => {
                error!(sid = self.sid, error = %e, "delivery task failed");
                self.txn.failed = true;
            }
        }
    }

    async fn finish_message(&mut self, session: &ServerSession, size: u64) -> Delivery {
        let failed = Delivery::Failed(Reply::new(451, (4, 3, 0), "Error: queue file write error"));
        if self.txn.failed {
            self.abort_delivery().await;
            return failed;
        }
        let mut pending = std::mem::take(&mut self.txn.pending);
        if self.txn.delivery.is_none() {
            match self.enqueue(session, pending, size).await {
                Enqueued::Queued(queue_id) => return Delivery::Accepted { queue_id },
                Enqueued::Direct(back) => pending = back,
                Enqueued::Failed => {
                    self.txn.active = false;
                    return failed;
                }
            }
        }
        let writer = self.take_writer(session);
        let store = self.shared.store.clone();
        let r =
            tokio::task::spawn_blocking(move || writer.append(&store, &pending)?.commit()).await;
        self.txn.active = false;
        match r {
            Ok(Ok(report)) => {
                info!(
                    sid = self.sid,
                    queue_id = report.queue_id,
                    from = self.txn.from,
                    to = ?self.txn.recipients,
                    size,
                    "delivered"
                );
                Delivery::Accepted {
                    queue_id: report.queue_id,
                }
            }
            Ok(Err(e)) => {
                error!(sid = self.sid, error = %e, "delivery failed");
                failed
            }
            Err(e) => {
                error!(sid = self.sid, error = %e, "delivery task failed");
                failed
            }
        }
    }

    /// Makes a message held whole in memory durable in the queue journal
    /// and starts its delivery; gives the body back when the journal cannot
    /// take it (memory budget used up, too large, or a journal error), for
    /// the direct path.
    async fn enqueue(&mut self, session: &ServerSession, content: Vec<u8>, size: u64) -> Enqueued {
        let queue = self.shared.queue.clone();
        if content.len() > queue.max_content() {
            return Enqueued::Direct(content);
        }
        let kib = u32::try_from(content.len() / 1024 + 1).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.shared.queue_memory).try_acquire_many_owned(kib) else {
            debug!(
                sid = self.sid,
                "queue memory in use; delivering before the reply"
            );
            return Enqueued::Direct(content);
        };
        let env = self.envelope(session);
        let r = tokio::task::spawn_blocking(move || {
            let r = queue.enqueue(&env, &content);
            (content, r)
        })
        .await;
        match r {
            Ok((_, Ok(q))) => {
                self.txn.active = false;
                info!(
                    sid = self.sid,
                    queue_id = q.queue_id(),
                    from = self.txn.from,
                    to = ?self.txn.recipients,
                    size,
                    "queued"
                );
                let queue_id = q.queue_id().to_string();
                self.shared.spawn_delivery(q, Some(permit));
                Enqueued::Queued(queue_id)
            }
            Ok((content, Err(e))) => {
                error!(sid = self.sid, error = %e, "queue journal failed; delivering before the reply");
                Enqueued::Direct(content)
            }
            Err(e) => {
                error!(sid = self.sid, error = %e, "queue task failed");
                Enqueued::Failed
            }
        }
    }

    async fn abort_delivery(&mut self) {
        self.txn.pending.clear();
        self.txn.active = false;
        self.txn.failed = false;
        if let Some(d) = self.txn.delivery.take() {
            let _ = tokio::task::spawn_blocking(move || d.abort()).await;
        }
    }
}

/// What became of a message offered to the queue journal.
enum Enqueued {
    /// Durable in the journal, delivery started: answer 250 with this id.
    Queued(String),
    /// Not taken: deliver it directly (the body comes back).
    Direct(Vec<u8>),
    /// Lost with a failed task: answer 451.
    Failed,
}

/// Where the body of the current message goes next.
enum Writer {
    /// The Maildir file is open.
    Open(mailstore::Delivery),
    /// Nothing written yet: open one for this envelope.
    New(mailstore::Envelope),
}

impl Writer {
    /// Append `bytes`, opening the delivery first if needed. Blocking: runs
    /// in the blocking pool.
    fn append(self, store: &Store, bytes: &[u8]) -> Result<mailstore::Delivery, mailstore::Error> {
        let mut d = match self {
            Writer::Open(d) => d,
            Writer::New(env) => store.begin_delivery(&env)?,
        };
        d.write(bytes)?;
        Ok(d)
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`; trace
/// headers show the IPv4 form.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
