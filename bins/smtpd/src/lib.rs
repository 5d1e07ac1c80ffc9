//! `smtpd`: the ESMTP server of the system, a thin tokio host around
//! [`smtp_proto::ServerSession`].
//!
//! Per connection it moves bytes between the socket and the session and
//! answers the session's events with [`mailstore`]'s policy: credentials
//! by [`mailstore::auth`], recipients and VRFY by [`mailstore::policy`]
//! (`550 5.1.1` for unknown local users, `554 5.7.1 Relay access denied`
//! for other domains unless the client may relay), messages by
//! [`mailstore::pipeline`].
//!
//! A message is durable before `250 2.0.0 Ok: queued as <id>` is sent: a
//! message held in memory (up to 256 KiB) is written to the queue journal
//! (one shared flush) and delivered into the Maildirs right after the
//! reply, with retries if that fails; a larger one is streamed into its
//! Maildir file and committed there before the reply. Messages the journal
//! holds at start (after a crash) are delivered then.
//!
//! Three kinds of listener: inbound (port 25: local recipients need no
//! AUTH), submission (port 587, RFC 6409: AUTH before MAIL) and
//! submissions (port 465, RFC 8314: submission over implicit TLS).
//! STARTTLS (RFC 3207) is offered on the first two when certificates are
//! configured; passwords in the clear (PLAIN, LOGIN) are taken only
//! inside TLS, except from `[tls] plaintext_auth_networks` (loopback).
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

mod relay;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use mail_auth_glue::{Action, Checker, Signer};
use mail_config::{BareNewline, Config, TlsLevel};
use mail_session::driver::{Driver, Stop};
use mail_session::tls::{Stream, TlsInfo};
use mailstore::auth::{loggable_user, AuthPenalty, Authenticator, PenaltyPolicy};
use mailstore::pipeline::{Incoming, Pipeline, PipelineConfig, RetrySchedule};
use mailstore::policy::{Client, PolicyReply, Recipient, RecipientPolicy};
use mailstore::{Accounts, Aliases, LocalDomains, QueueIdGenerator, Recipients, Router, Store};
use netkit::tls::{ServerTls, TlsError};
use netkit::{
    canonical_ip, ConnLimiter, ConnPermit, LimitExceeded, Login, ShutdownWatch, Standing,
};
use smtp_proto::{
    AbortReason, AuthResult, BareLf, Credentials, Delivery, Event, ForwardPath, Mechanism, Reply,
    ReversePath, ServerConfig, ServerSession, Verdict,
};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn};

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
    /// A certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A DKIM key could not be loaded, or the checks' resolver set up.
    #[error(transparent)]
    MailAuth(#[from] mail_auth_glue::Error),
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// Port 25: mail for our domains, relaying only when allowed.
    Inbound,
    /// Port 587: AUTH before MAIL, STARTTLS offered.
    Submission,
    /// Port 465: as submission, TLS from the first byte.
    Submissions,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Inbound => "inbound",
            Listener::Submission => "submission",
            Listener::Submissions => "submissions",
        }
    }
}

/// Everything a connection needs that SIGHUP may replace.
pub(crate) struct Settings {
    cfg: Config,
    policy: RecipientPolicy,
    auth: Authenticator,
    /// Certificates and the TLS configuration; `None` without
    /// certificates.
    tls: Option<ServerTls>,
    /// `[dkim]`'s keys.
    signer: Arc<Signer>,
}

impl Settings {
    fn new(
        cfg: Config,
        accounts: &Arc<Accounts>,
        ticketer: &Arc<dyn netkit::tls::rustls::server::ProducesTickets>,
    ) -> Result<Self, Error> {
        let certs = if cfg.smtpd.tls_certificates.is_empty() {
            &cfg.tls.certificates
        } else {
            &cfg.smtpd.tls_certificates
        };
        // No ALPN list: RFC 8314 names none for SMTP submission, and a
        // list would make rustls refuse clients that offer other names.
        let tls = ServerTls::new(certs, &cfg.tls, &[], Arc::clone(ticketer))?;
        let aliases = if cfg.global.aliases_file.exists() {
            Some(Arc::new(Aliases::open(&cfg.global.aliases_file)?))
        } else {
            None
        };
        let domains = &cfg.global.local_domains;
        let router = Router::new(domains, Arc::clone(accounts), aliases);
        let auth = Authenticator::new(
            Arc::clone(accounts),
            LocalDomains::new(domains),
            cfg.smtpd.auth_failure_delay.duration(),
        );
        let signer = Arc::new(Signer::from_config(&cfg.dkim)?);
        Ok(Settings {
            signer,
            // Other domains go to the outbound queue (Postfix relays for
            // permitted clients).
            policy: RecipientPolicy::new(router).with_outbound(true),
            auth,
            cfg,
            tls,
        })
    }
}

pub(crate) struct Shared {
    settings: RwLock<Arc<Settings>>,
    pipeline: Pipeline,
    accounts: Arc<Accounts>,
    queue_ids: QueueIdGenerator,
    limiter: Arc<ConnLimiter>,
    next_session: AtomicU64,
    /// Failed AUTHs per client address, across connections.
    penalty: Arc<AuthPenalty>,
    /// The TLS session-ticket key, kept across reloads.
    ticketer: Arc<dyn netkit::tls::rustls::server::ProducesTickets>,
    /// The outbound queue and its manager, when mail to other domains is
    /// accepted.
    relay: Option<RelayHandle>,
    /// Wakes the pickup scan (SIGUSR1 from `sendmail`).
    pickup_wake: Arc<tokio::sync::Notify>,
    /// The SPF/DKIM/DMARC checker (its resolver and DNS cache), when
    /// `[auth_checks] enabled` at start.
    checker: Option<Checker>,
}

/// The outbound queue and its manager.
pub(crate) struct RelayHandle {
    queue: mailstore::outbound::OutboundQueue,
    engine: outbound::engine::Engine<relay::DaemonRoute, relay::Bouncer>,
}

impl Shared {
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }
}

fn penalty_policy(cfg: &Config) -> PenaltyPolicy {
    PenaltyPolicy::new(
        cfg.smtpd.auth_penalty.duration(),
        cfg.smtpd.auth_penalty_max.duration(),
    )
}

/// Postfix-like backoff: the first retry soon, doubling up to
/// `queue_retry_delay` (Postfix's `maximal_backoff_time`).
fn retry_schedule(cfg: &Config) -> RetrySchedule {
    RetrySchedule::backoff(
        mailstore::pipeline::FIRST_RETRY,
        cfg.smtpd.queue_retry_delay.duration(),
    )
}

/// The queue manager's settings from `[outbound]` (Postfix's names).
fn engine_config(
    o: &mail_config::Outbound,
    mut client: outbound::deliver::ClientSettings,
) -> outbound::engine::EngineConfig {
    client.connect_timeout = o.smtp_connect_timeout.duration();
    client.handshake_timeout = o.smtp_starttls_timeout.duration();
    let mut e = outbound::engine::EngineConfig::new(client);
    e.schedule = outbound::schedule::Schedule {
        minimal_backoff: o.minimal_backoff_time.duration(),
        maximal_backoff: o.maximal_backoff_time.duration(),
        lifetime: o.maximal_queue_lifetime.duration(),
        bounce_lifetime: o.bounce_queue_lifetime.duration(),
        delay_warning: (o.delay_warning_time.0 > 0).then(|| o.delay_warning_time.duration()),
    };
    e.max_in_flight = o.default_process_limit;
    e.per_destination = o.default_destination_concurrency_limit;
    e.rate_delay = o.default_destination_rate_delay.duration();
    e.reuse = o
        .smtp_connection_cache_on_demand
        .then(|| outbound::engine::Reuse {
            idle: o.smtp_connection_cache_time_limit.duration(),
            lifetime: o.smtp_connection_reuse_time_limit.duration(),
            count: o.smtp_connection_reuse_count_limit,
        });
    e
}

/// A started server: its listeners are bound and accepting.
pub struct Running {
    shared: Arc<Shared>,
    serving: netkit::Serving,
    /// The pickup scan, ended by stop.
    pickup: Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)>,
    inbound: Vec<SocketAddr>,
    submission: Vec<SocketAddr>,
    submissions: Vec<SocketAddr>,
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

    /// Addresses of the submissions (port 465, implicit TLS) listeners.
    pub fn submissions_addrs(&self) -> &[SocketAddr] {
        &self.submissions
    }
}

impl netkit::Service for Running {
    type Error = Error;

    /// Apply a reread configuration (SIGHUP): host name, domains, relay
    /// networks, limits, certificates and the aliases file take effect for
    /// new connections (open ones keep theirs). Listeners, store and
    /// passwd-file paths need a restart. A certificate that does not load
    /// leaves the old settings in force.
    fn reload(&self, cfg: Config) -> Result<(), Error> {
        let old = self.shared.settings();
        if cfg.smtpd.listen != old.cfg.smtpd.listen
            || cfg.smtpd.submission_listen != old.cfg.smtpd.submission_listen
            || cfg.smtpd.submissions_listen != old.cfg.smtpd.submissions_listen
            || cfg.global.maildir_root != old.cfg.global.maildir_root
            || cfg.global.passwd_file != old.cfg.global.passwd_file
            || cfg.smtpd.queue_directory != old.cfg.smtpd.queue_directory
        {
            warn!(
                "listeners, maildir_root, passwd_file and queue_directory change only on restart"
            );
        }
        if cfg.auth_checks.enabled && self.shared.checker.is_none() {
            warn!("[auth_checks] enabled takes effect on restart (its resolver is made at start)");
        }
        let new = Settings::new(cfg, &self.shared.accounts, &self.shared.ticketer)?;
        self.shared.pipeline.set_retry(retry_schedule(&new.cfg));
        self.shared.penalty.set_policy(penalty_policy(&new.cfg));
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
        if let Some((task, stop)) = self.pickup {
            stop.notify_one();
            // A scan in progress finishes the message it is on.
            let _ = task.await;
        }
        if let Some(r) = &self.shared.relay {
            // Deliveries in flight may finish; the rest stays queued.
            r.engine
                .stop(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
        let shared = Arc::clone(&self.shared);
        let r = tokio::task::spawn_blocking(move || {
            let left = shared.pipeline.settle(deadline);
            // Flush what was delivered, so the next start has nothing to check.
            (left, shared.pipeline.queue().checkpoint())
        })
        .await;
        match r {
            Ok((left, checkpoint)) => {
                if left > 0 {
                    warn!(
                        in_progress = left,
                        "stopping with deliveries in progress; the queue keeps them for the next start"
                    );
                }
                if let Err(e) = checkpoint {
                    warn!(error = %e, "final queue checkpoint failed; the next start redoes it");
                }
            }
            Err(e) => warn!(error = %e, "final queue checkpoint task failed"),
        }
    }
}

/// Reads a `transport(5)` table, naming the file in errors.
fn load_transport(path: &std::path::Path) -> Result<mailstore::nexthop::TransportTable, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    text.parse().map_err(|e| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        ))
    })
}

/// The relay password file (`smtp_sasl_password_maps`), with a warning
/// when others may read it, as it holds passwords in the clear.
fn load_passwords(path: &std::path::Path) -> Result<mailstore::saslpass::PasswordMap, Error> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mailstore::saslpass::world_readable(mode) {
            warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o7777),
                "relay password file is readable by other users; chmod 600 it"
            );
        }
    }
    text.parse().map_err(|e| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        ))
    })
}

/// The pickup directory (`sendmail`), scanned at start, every second and
/// on SIGUSR1 (Postfix's pickup daemon, woken by postdrop).
fn spawn_pickup(
    shared: &Arc<Shared>,
    dir: std::path::PathBuf,
) -> Option<(tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>)> {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!(error = %e, dir = %dir.display(), "no pickup directory: sendmail will fail");
        return None;
    }
    // Anyone on the host may run sendmail: writable by all, sticky so
    // no one removes another's file (Postfix's maildrop is 1730 with a
    // setgid postdrop; without one, 1733).
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1733));
    }
    let weak = Arc::downgrade(shared);
    let wake = Arc::clone(&shared.pickup_wake);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        loop {
            // Only a weak reference between scans: stop releases the queue
            // (and its lock) at once.
            let Some(shared) = weak.upgrade() else { return };
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || relay::pickup_scan(&shared, &d)).await;
            tokio::select! {
                () = stopped.notified() => return,
                _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()) => {}
            }
        }
    });
    Some((task, stop))
}

/// `mailctl queue flush` sends SIGUSR1: retry every deferred delivery now
/// (Postfix's `postqueue -f`).
/// The handler is installed by [`sigusr1`] before the queue's lock file
/// names this process: `sendmail` signals whoever that file names, and
/// SIGUSR1's default action would end a daemon still starting.
fn spawn_flush_on_sigusr1(shared: &Arc<Shared>, usr1: Option<tokio::signal::unix::Signal>) {
    let Some(mut usr1) = usr1 else { return };
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let Some(shared) = weak.upgrade() else { return };
            let n = shared.pipeline.flush();
            let m = shared.relay.as_ref().map_or(0, |r| r.engine.flush());
            info!(messages = n, outbound = m, "queue flush requested");
            shared.pickup_wake.notify_one();
        }
    });
}

/// SIGUSR1's handler, installed at once (see [`spawn_flush_on_sigusr1`]).
fn sigusr1() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::user_defined1()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "no SIGUSR1 handler: `mailctl queue flush` will not work");
            None
        }
    }
}

/// Open the store and accounts, bind every listener and start serving.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    // Before anything names this process in the queue's lock file.
    let usr1 = sigusr1();
    let store = Store::with_hostname(&cfg.global.maildir_root, &cfg.global.hostname)?;
    match store.clean_stale_tmp(SystemTime::now(), mailstore::STALE_TMP_AGE) {
        Ok(0) => {}
        Ok(n) => info!(removed = n, "removed stale Maildir tmp files"),
        Err(e) => warn!(error = %e, "cleaning stale Maildir tmp files failed"),
    }
    let accounts = Arc::new(Accounts::open(&cfg.global.passwd_file)?);
    let dir = cfg.smtpd.queue_directory.clone();
    let config = PipelineConfig {
        retry: retry_schedule(&cfg),
        ..PipelineConfig::default()
    };
    let (pipeline, recovered) = tokio::task::spawn_blocking(move || {
        let opened = Pipeline::open(dir, store.clone(), config)?;
        // After the queue looked at tmp/ (a placed mark's file there means
        // its rename never happened) and before anything is delivered:
        // files of killed deliveries, which nobody would finish.
        match store.clean_dead_tmp() {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "removed tmp files of interrupted deliveries"),
            Err(e) => warn!(error = %e, "cleaning tmp files of interrupted deliveries failed"),
        }
        Ok::<_, mailstore::Error>(opened)
    })
    .await
    .map_err(std::io::Error::other)??;
    if !recovered.is_empty() {
        info!(
            messages = recovered.len(),
            "delivering messages queued before the last stop"
        );
    }
    let inbound = netkit::bind_all(&cfg.smtpd.listen).await?;
    let submission = netkit::bind_all(&cfg.smtpd.submission_listen).await?;
    let submissions = netkit::bind_all(&cfg.smtpd.submissions_listen).await?;
    let limiter = ConnLimiter::with_fd_limit(
        "smtpd",
        cfg.smtpd.max_connections,
        cfg.smtpd.max_connections_per_client,
    );
    let penalty = Arc::new(AuthPenalty::new(penalty_policy(&cfg)));
    let queue_dir = cfg.smtpd.queue_directory.clone();
    let (out_queue, out_recovered) = {
        let dir = queue_dir.join(mailstore::outbound::DIR_NAME);
        tokio::task::spawn_blocking(move || mailstore::outbound::OutboundQueue::open(dir))
            .await
            .map_err(std::io::Error::other)??
    };
    let resolver =
        netkit::resolve::DnsResolver::from_config(&cfg.resolver).map_err(std::io::Error::other)?;
    // The inbound checks ask through the same resolver and cache.
    let checker = cfg.auth_checks.enabled.then(|| {
        Checker::from_config(
            resolver.hickory().clone(),
            &cfg.auth_checks,
            &cfg.global.hostname,
        )
    });
    let route = relay::DaemonRoute {
        resolver,
        table: match &cfg.smtpd.transport_file {
            Some(p) => Some(load_transport(p)?),
            None => None,
        },
        relayhost: cfg.smtpd.relayhost.clone(),
        port: cfg.outbound.smtp_port,
        select: mailstore::nexthop::SelectOptions {
            preference: cfg.smtpd.address_preference,
            local_names: vec![cfg.global.hostname.clone()],
            local_addrs: cfg
                .smtpd
                .listen
                .iter()
                .chain(&cfg.smtpd.submission_listen)
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .collect(),
        },
    };
    let mut client = outbound::deliver::ClientSettings::new(
        cfg.global.hostname.clone(),
        Some(outbound::deliver::unauthenticated_connector().map_err(std::io::Error::other)?),
    );
    if let Some(p) = &cfg.smtpd.relay_password_file {
        client.passwords = Some(Arc::new(load_passwords(p)?));
    }
    let engine_cfg = engine_config(&cfg.outbound, client);
    let lifetime = cfg.outbound.maximal_queue_lifetime.duration();
    let ticketer = netkit::tls::ticketer()?;
    let settings = Settings::new(cfg, &accounts, &ticketer)?;
    if let Some(tls) = &settings.tls {
        for c in tls.certificates() {
            info!(cert = %c.path.display(), names = ?c.names, not_after = c.not_after, "TLS certificate");
        }
    }
    let shared = Arc::new_cyclic(|weak| Shared {
        relay: Some(RelayHandle {
            engine: outbound::engine::Engine::start(
                out_queue.clone(),
                Vec::new(),
                engine_cfg,
                route,
                relay::Bouncer {
                    shared: weak.clone(),
                    queue: out_queue.clone(),
                    lifetime,
                },
            ),
            queue: out_queue,
        }),
        pickup_wake: Arc::new(tokio::sync::Notify::new()),
        checker,
        ticketer,
        penalty,
        settings: RwLock::new(Arc::new(settings)),
        pipeline,
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
    let (in_addrs, sub_addrs, subs_addrs) =
        (addrs(&inbound)?, addrs(&submission)?, addrs(&submissions)?);
    let listeners: Vec<_> = inbound
        .into_iter()
        .map(|l| (l, Listener::Inbound))
        .chain(submission.into_iter().map(|l| (l, Listener::Submission)))
        .chain(submissions.into_iter().map(|l| (l, Listener::Submissions)))
        .collect();
    for (l, kind) in &listeners {
        info!(addr = %l.local_addr()?, "smtpd listening ({})", kind.name());
    }
    for q in recovered {
        shared.pipeline.submit(q);
    }
    if let Some(r) = &shared.relay {
        if !out_recovered.is_empty() {
            info!(
                messages = out_recovered.len(),
                "mail for other domains queued before the last stop"
            );
        }
        for m in &out_recovered {
            r.engine.add(m);
        }
    }
    spawn_flush_on_sigusr1(&shared, usr1);
    let pickup = spawn_pickup(&shared, queue_dir.join(mailstore::pickup::DIR_NAME));
    let handler_shared = Arc::clone(&shared);
    let serving = netkit::Serving::spawn(listeners, move |stream, peer, kind, watch| {
        connection(Arc::clone(&handler_shared), stream, peer, kind, watch)
    });
    Ok(Running {
        shared,
        serving,
        inbound: in_addrs,
        submission: sub_addrs,
        submissions: subs_addrs,
        pickup,
    })
}

/// What the host knows of the transaction the session is in.
#[derive(Default)]
struct Txn {
    from: String,
    /// MAIL's RFC 3461 `RET=` and `ENVID=`, as given.
    ret: Option<String>,
    /// MAIL had `SMTPUTF8` (RFC 6531): the Received `with` says so.
    smtputf8: bool,
    envid: Option<String>,
    rcpts: Recipients,
    /// Recipients in other domains (the client may relay).
    remote: Vec<mailstore::outbound::OutRcpt>,
    /// The local part of the message being received.
    delivery: Option<Incoming>,
    /// The part for other domains, on its way into the outbound queue.
    outgoing: Option<relay::Outgoing>,
    /// Local recipients that asked for `NOTIFY=SUCCESS` (RFC 3461
    /// section 4.1): address and `ORCPT=`.
    notify_success: Vec<(String, Option<String>)>,
    /// What the delivered notice needs, set when the message starts and
    /// someone asked for it.
    success: Option<SuccessNotice>,
    /// A write failed: the message ends in `451`.
    broken: bool,
    active: bool,
    /// The message is held whole until its end, to be DKIM-signed or
    /// checked before any of it is written.
    held: Option<Vec<u8>>,
    /// Sign it (an authenticated or relay-network client).
    sign: bool,
    /// Check it (an unauthenticated client on the inbound listener).
    check: bool,
    /// MAIL FROM, kept for the checks after the envelope took it.
    sender: String,
}

/// The "delivered" notice of a message being received: its envelope and
/// the start of its content (the notice returns the header, or the whole
/// message up to Postfix's `bounce_size_limit` for `RET=FULL`).
struct SuccessNotice {
    queue_id: String,
    sender: String,
    envid: Option<String>,
    ret: Option<mailstore::dsn::Ret>,
    arrival: SystemTime,
    recipients: Vec<(String, Option<String>)>,
    copy: Vec<u8>,
}

impl SuccessNotice {
    /// Keeps content up to one octet past the size limit: enough for the
    /// header, and to tell that the whole message is too large to return.
    fn push(&mut self, bytes: &[u8]) {
        let room = (mailstore::dsn::BOUNCE_SIZE_LIMIT + 1).saturating_sub(self.copy.len());
        self.copy
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    /// Injects the notice (durable when it returns). Blocks.
    fn send(self, shared: &Shared) -> Result<Option<String>, String> {
        let of = relay::Bounced {
            queue_id: &self.queue_id,
            sender: &self.sender,
            envid: self.envid.as_deref(),
            ret: self.ret,
            arrival: self.arrival,
            original: &self.copy,
        };
        let now = SystemTime::now();
        let rcpts = self
            .recipients
            .into_iter()
            .map(|(address, orcpt)| relay::Failed {
                address,
                orcpt,
                status: "2.0.0".into(),
                remote: None,
                text: "delivered to maildir".into(),
                when: Some(now),
                until: None,
            })
            .collect();
        let sent = relay::notice(shared, of, mailstore::dsn::Action::Delivered, rcpts)?;
        Ok(sent.and_then(|n| n.relayed))
    }
}

struct Conn {
    shared: Arc<Shared>,
    /// The connection's slot, told what the connection is doing so that a
    /// full server evicts idle unauthenticated connections first and
    /// authenticated ones never.
    permit: ConnPermit,
    settings: Arc<Settings>,
    peer: SocketAddr,
    /// The address the client reached us at: a recipient at its literal
    /// (`user@[192.0.2.1]`) is local.
    local_ip: Option<IpAddr>,
    listener: Listener,
    sid: String,
    helo: String,
    esmtp: bool,
    /// What the TLS handshake agreed, once TLS is active.
    tls: Option<TlsInfo>,
    txn: Txn,
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    shutdown: ShutdownWatch,
) {
    let settings = shared.settings();
    let hostname = settings.cfg.global.hostname.clone();
    // Postfix's wording for smtpd_client_connection_count_limit.
    let refusal = |which| match which {
        LimitExceeded::PerClient => format!(
            "421 4.7.0 {hostname} Error: too many connections from {}\r\n",
            peer.ip()
        ),
        LimitExceeded::Total => format!("421 4.3.2 {hostname} Error: too many connections\r\n"),
    };
    let Some(permit) = shared
        .limiter
        .admit(&mut stream, peer, &shutdown, refusal)
        .await
    else {
        return;
    };
    let sid = format!("{:X}", shared.next_session.fetch_add(1, Ordering::Relaxed));
    info!(sid, client = %peer, listener = kind.name(), "connect");
    let local_ip = stream.local_addr().ok().map(|a| canonical_ip(a.ip()));
    let (stream, tls) = match (kind, &settings.tls) {
        (Listener::Submissions, Some(tls)) => {
            let Some((stream, info)) =
                netkit::tls::accept_implicit(stream, tls, &permit, &sid, peer).await
            else {
                return;
            };
            (stream, Some(info))
        }
        // The configuration check makes this impossible.
        (Listener::Submissions, None) => return,
        _ => (Stream::Plain(stream), None),
    };
    let config = session_config(&settings, kind, peer);
    let session = ServerSession::new(config, Duration::ZERO);
    let driver = netkit::driver(stream, &permit, &sid, &settings.cfg.global);
    if let Some(info) = &tls {
        // The transcript marks where TLS began, here before the greeting.
        driver.note(&format!("TLS established: {info}"));
    }
    let mut conn = Conn {
        shared,
        permit,
        settings,
        peer,
        local_ip,
        listener: kind,
        sid,
        helo: String::new(),
        esmtp: false,
        tls,
        txn: Txn::default(),
    };
    let result = conn.drive(session, driver).await;
    if conn.txn.delivery.is_some() || conn.txn.outgoing.is_some() {
        conn.abort_delivery().await;
    }
    match result {
        Ok(()) => info!(sid = conn.sid, "disconnect"),
        Err(e) => info!(sid = conn.sid, error = %e, "disconnect"),
    }
}

fn session_config(settings: &Settings, kind: Listener, peer: SocketAddr) -> ServerConfig {
    let cfg = &settings.cfg;
    let s = &cfg.smtpd;
    let mut c = ServerConfig::new(cfg.global.hostname.clone());
    c.max_message_size = s.message_size_limit;
    c.max_recipients = s.recipient_limit;
    c.vrfy = !s.disable_vrfy_command;
    c.max_errors = s.error_limit;
    c.max_junk_commands = s.junk_command_limit;
    c.bare_lf = match s.bare_newline {
        BareNewline::Normalize => BareLf::Normalize,
        BareNewline::Reject => BareLf::Reject,
    };
    c.auth_mechanisms = s
        .auth_mechanisms
        .iter()
        .filter_map(|m| Mechanism::from_name(m))
        .collect();
    c.auth_required = kind != Listener::Inbound;
    let level = match kind {
        Listener::Inbound => s.tls_security_level,
        Listener::Submission => s.submission_tls_security_level,
        Listener::Submissions => TlsLevel::Encrypt,
    };
    c.tls_available = settings.tls.is_some() && level != TlsLevel::None;
    c.tls_required = c.tls_available && level == TlsLevel::Encrypt;
    c.tls_active = kind == Listener::Submissions;
    // Dovecot's disable_plaintext_auth, Postfix's smtpd_tls_auth_only.
    c.plaintext_auth_requires_tls = !cfg.tls.plaintext_auth_allowed(canonical_ip(peer.ip()));
    c.max_auth_failures = s.auth_failure_limit;
    c.command_timeout = s.command_timeout.duration();
    c.data_timeout = s.data_timeout.duration();
    c.command_line_timeout = s.command_line_timeout.duration();
    c.first_command_timeout = s.first_command_timeout.duration();
    c.record_transcript = cfg.global.transcript;
    c
}

impl Conn {
    async fn drive(
        &mut self,
        mut session: ServerSession,
        mut driver: Driver<Stream>,
    ) -> std::io::Result<()> {
        loop {
            // Shutdown ends a session only between transactions; one in
            // flight may finish within shutdown_grace. Eviction (the server
            // is full and this client holds the most) ends one in flight
            // too, as 421 may at any time (RFC 5321 section 3.8).
            let idle = !self.txn.active || self.permit.is_evicted();
            match driver.next(&mut session, idle).await {
                Ok(Event::StartTls) => self.start_tls(&mut session, &mut driver).await?,
                Ok(event) => {
                    // The answer may take a while (a password check, a
                    // flush): the client sees what is ready first.
                    driver.flush().await?;
                    self.answer(&mut session, event).await;
                    self.permit
                        .set_standing(if session.authenticated_user().is_some() {
                            Standing::Authenticated
                        } else if self.txn.active {
                            Standing::Transaction
                        } else {
                            Standing::PreAuth
                        });
                }
                Err(Stop::Closed) => return Ok(()),
                Err(Stop::Shutdown | Stop::Evicted) => {
                    let host = &self.settings.cfg.global.hostname;
                    let text = if self.permit.is_evicted() {
                        // Its slot went to a client with fewer connections.
                        info!(sid = self.sid, client = %self.peer, "evicted: server full");
                        format!("421 4.3.2 {host} Error: too many connections, closing transmission channel\r\n")
                    } else {
                        format!(
                            "421 4.3.2 {host} Service shutting down, closing transmission channel\r\n"
                        )
                    };
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

    /// `220 2.0.0 Ready to start TLS` is queued: flush it and shake hands.
    /// The session then forgets everything from before (RFC 3207 section
    /// 4.2) and has already dropped any plaintext pipelined after the
    /// command. A failed handshake ends the connection: its stream is gone.
    async fn start_tls(
        &mut self,
        session: &mut ServerSession,
        driver: &mut Driver<Stream>,
    ) -> std::io::Result<()> {
        let Some(tls) = self.settings.tls.clone() else {
            return Err(std::io::Error::other("STARTTLS without certificates (bug)"));
        };
        let info = netkit::tls::start_tls(driver, &tls, &self.permit, &self.sid, self.peer).await?;
        self.tls = Some(info);
        self.helo.clear();
        self.esmtp = false;
        self.txn = Txn::default();
        if let Err(e) = session.tls_established() {
            error!(sid = self.sid, error = %e, "session refused the TLS answer (bug)");
        }
        Ok(())
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
            Event::Mail { from, params } => {
                self.txn = Txn {
                    from: match from {
                        ReversePath::Null => String::new(),
                        ReversePath::Mailbox(m) => m.to_string(),
                    },
                    ret: params.ret.as_deref().map(str::to_owned),
                    envid: params.envid.as_deref().map(str::to_owned),
                    smtputf8: params.smtputf8,
                    ..Txn::default()
                };
                session.decide(Verdict::Accept)
            }
            Event::Rcpt { to, params } => {
                let verdict = self.route_recipient(session, &to, &params);
                session.decide(verdict)
            }
            Event::Vrfy { argument } => {
                let verdict = self.verify_address(&argument);
                session.decide(verdict)
            }
            Event::MessageStart => {
                self.txn.active = true;
                self.plan_auth(session);
                let env = self.envelope(session);
                self.txn.success = self.success_notice(&env);
                self.txn.outgoing = self.outgoing(&env);
                if !env.mailboxes.is_empty() {
                    self.txn.delivery = Some(self.shared.pipeline.incoming(env));
                }
                Ok(())
            }
            Event::BodyChunk(bytes) => {
                if let Some(n) = self.txn.success.as_mut() {
                    n.push(&bytes);
                }
                if let Some(held) = self.txn.held.as_mut() {
                    held.extend_from_slice(&bytes);
                    return;
                }
                if self.txn.delivery.as_mut().is_some_and(|m| m.push(&bytes)) {
                    self.write_out().await;
                }
                if self.txn.outgoing.as_mut().is_some_and(|m| m.push(&bytes)) {
                    self.write_out_remote().await;
                }
                Ok(())
            }
            Event::MessageEnd(_) => {
                let result = match self.release_held().await {
                    Some(refused) => refused,
                    None => self.finish_message().await,
                };
                session.message_result(result)
            }
            Event::MessageAborted(reason) => {
                if reason != AbortReason::Closed {
                    debug!(sid = self.sid, ?reason, "message aborted");
                }
                self.abort_delivery().await;
                Ok(())
            }
            // Handled in drive(), which has the connection.
            Event::StartTls => Ok(()),
        };
        if let Err(e) = answered {
            error!(sid = self.sid, error = %e, "session refused an answer (bug)");
        }
    }

    async fn check_credentials(&self, creds: Credentials) -> AuthResult {
        let user = creds.username().to_owned();
        let mech = creds.mechanism_name();
        let client = canonical_ip(self.peer.ip());
        let settings = Arc::clone(&self.settings);
        let check = move || settings.auth.check_session(&creds);
        match netkit::login(&self.shared.penalty, client, &self.sid, check).await {
            Login::Accepted(_) => {
                info!(sid = self.sid, user, %mech, "authenticated");
                AuthResult::Success
            }
            Login::Rejected { delay } => {
                // Postfix's wording, which fail2ban's stock postfix filter
                // (mode=auth, postfix-sasl jail) matches; Postfix writes
                // "unknown" for a client without a verified name.
                warn!(
                    sid = self.sid,
                    user = loggable_user(&user),
                    "warning: unknown[{client}]: SASL {mech} authentication failed: authentication failure"
                );
                tokio::time::sleep(delay).await;
                AuthResult::Failure
            }
            Login::Deferred | Login::Unavailable => AuthResult::TemporaryFailure,
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

    fn route_recipient(
        &mut self,
        session: &ServerSession,
        to: &ForwardPath<'_>,
        params: &smtp_proto::RcptParameters<'_>,
    ) -> Verdict {
        let addr = to.to_string();
        let client = Client {
            authenticated: session.authenticated_user().is_some(),
            relay_network: self.settings.cfg.global.is_relay_client(self.peer.ip()),
        };
        // RFC 1123 section 5.2.17: "An SMTP MUST accept and recognize a
        // domain literal for any of its own IP addresses". Such a
        // recipient is routed by its local part (the envelope keeps the
        // address as written); relaying it would send it back to us.
        let routed = match to {
            ForwardPath::Mailbox(m)
                if literal_ip(&m.domain)
                    .is_some_and(|ip| self.local_ip == Some(ip) || self.is_listen_ip(ip)) =>
            {
                m.local_part.to_string()
            }
            _ => addr.clone(),
        };
        match self.settings.policy.recipient(&routed, client) {
            Recipient::Local(mailboxes) => {
                let notify = params
                    .notify
                    .as_deref()
                    .and_then(|n| mailstore::dsn::Notify::parse(n).ok());
                if mailstore::dsn::should_notify(notify.as_ref(), mailstore::dsn::DsnEvent::Success)
                {
                    let orcpt = params.orcpt.as_deref().map(str::to_owned);
                    self.txn.notify_success.push((addr.clone(), orcpt));
                }
                self.txn.rcpts.add(addr, mailboxes);
                Verdict::Accept
            }
            Recipient::Remote(addr) => {
                self.txn.remote.push(relay::out_rcpt(addr, params));
                Verdict::Accept
            }
            Recipient::Refused(r) => {
                if let mailstore::policy::Refusal::LookupFailed(e) = &r.why {
                    error!(sid = self.sid, error = %e, "recipient lookup failed");
                }
                Verdict::Reject(reply(r.reply))
            }
        }
    }

    /// Whether `ip` is one of the addresses smtpd listens on by name.
    fn is_listen_ip(&self, ip: IpAddr) -> bool {
        let s = &self.settings.cfg.smtpd;
        s.listen
            .iter()
            .chain(&s.submission_listen)
            .chain(&s.submissions_listen)
            .any(|a| !a.ip().is_unspecified() && canonical_ip(a.ip()) == ip)
    }

    fn verify_address(&self, argument: &str) -> Verdict {
        match self.settings.policy.vrfy(argument) {
            Some(r) => Verdict::Reject(reply(r.reply)),
            None => Verdict::Accept,
        }
    }

    /// The envelope of the message starting now: the transaction ends
    /// with it (RFC 5321 section 3.3), so its sender and recipients move in.
    fn envelope(&mut self, session: &ServerSession) -> mailstore::Envelope {
        let authed = session.authenticated_user().is_some();
        // RFC 3848's names, RFC 6531 section 3.7.3's for SMTPUTF8 mail;
        // HELO over TLS stays "SMTP", as Postfix writes.
        use mailstore::Protocol as P;
        let protocol = match (self.esmtp, self.txn.smtputf8, self.tls.is_some(), authed) {
            (false, _, _, _) => P::Smtp,
            (true, false, false, false) => P::Esmtp,
            (true, false, false, true) => P::Esmtpa,
            (true, false, true, false) => P::Esmtps,
            (true, false, true, true) => P::Esmtpsa,
            (true, true, false, false) => P::Utf8smtp,
            (true, true, false, true) => P::Utf8smtpa,
            (true, true, true, false) => P::Utf8smtps,
            (true, true, true, true) => P::Utf8smtpsa,
        };
        let now = SystemTime::now();
        let mut rcpts = std::mem::take(&mut self.txn.rcpts);
        // All of them, for the `for` clause of Received (one recipient).
        rcpts
            .addresses
            .extend(self.txn.remote.iter().map(|r| r.address.clone()));
        mailstore::Envelope {
            mail_from: std::mem::take(&mut self.txn.from),
            recipients: rcpts.addresses,
            mailboxes: rcpts.mailboxes,
            helo: self.helo.clone(),
            client_ip: canonical_ip(self.peer.ip()),
            protocol,
            tls: self.tls.as_ref().map(TlsInfo::received_clause),
            our_hostname: self.settings.cfg.global.hostname.clone(),
            queue_id: self.shared.queue_ids.next_id(now),
            time: now,
        }
    }

    /// The part of the message for other domains, if it has recipients
    /// there.
    fn outgoing(&mut self, env: &mailstore::Envelope) -> Option<relay::Outgoing> {
        let remote = std::mem::take(&mut self.txn.remote);
        if remote.is_empty() {
            return None;
        }
        let queue = self.shared.relay.as_ref()?.queue.clone();
        let out = mailstore::outbound::OutEnvelope {
            id: env.queue_id.clone(),
            sender: env.mail_from.clone(),
            arrival: env.time,
            envid: self.txn.envid.clone(),
            ret: self
                .txn
                .ret
                .as_deref()
                .and_then(|r| mailstore::dsn::Ret::parse(r).ok()),
            recipients: remote,
        };
        let received = mailstore::store::received_header(env);
        Some(relay::Outgoing::new(queue, out, &received))
    }

    /// The delivered notice for the local recipients that asked for it;
    /// none for the null sender (RFC 3461 section 4.1: never a notice about
    /// a notice).
    fn success_notice(&mut self, env: &mailstore::Envelope) -> Option<SuccessNotice> {
        let recipients = std::mem::take(&mut self.txn.notify_success);
        if recipients.is_empty() || env.mail_from.is_empty() || env.mailboxes.is_empty() {
            return None;
        }
        Some(SuccessNotice {
            queue_id: env.queue_id.clone(),
            sender: env.mail_from.clone(),
            envid: self.txn.envid.clone(),
            ret: self
                .txn
                .ret
                .as_deref()
                .and_then(|r| mailstore::dsn::Ret::parse(r).ok()),
            arrival: env.time,
            recipients,
            copy: Vec::new(),
        })
    }

    /// Decides, as the message starts, whether it is DKIM-signed (mail
    /// from authenticated users and relay networks, OpenDKIM's signing
    /// mode for `InternalHosts` and authenticated clients) or checked
    /// (everything else arriving on the inbound listener, OpenDKIM's
    /// verifying mode); either holds it whole until its end.
    fn plan_auth(&mut self, session: &ServerSession) {
        let authed = session.authenticated_user().is_some();
        let ours = authed || self.settings.cfg.global.is_relay_client(self.peer.ip());
        self.txn.sign = ours && !self.settings.signer.is_empty();
        self.txn.check = !ours
            && self.listener == Listener::Inbound
            && self.settings.cfg.auth_checks.enabled
            && self.shared.checker.is_some();
        self.txn.held = (self.txn.sign || self.txn.check).then(Vec::new);
        self.txn.sender = self.txn.from.clone();
    }

    /// The end of a held message: the checks (which may refuse it) or the
    /// signature, then the header fields they give and the message go to
    /// the delivery as streamed ones do. `Some` is the refusal.
    async fn release_held(&mut self) -> Option<Delivery> {
        let held = self.txn.held.take()?;
        let mut top = String::new();
        let mut stripped = None;
        if self.txn.check {
            if let Some(checker) = &self.shared.checker {
                let cfg = &self.settings.cfg;
                let policy =
                    mail_auth_glue::Policy::from_config(&cfg.auth_checks, &cfg.global.hostname);
                let env = mail_auth_glue::Envelope {
                    ip: canonical_ip(self.peer.ip()),
                    helo: &self.helo,
                    mail_from: &self.txn.sender,
                };
                let out = checker.with_policy(policy).check(&env, &held).await;
                let s = &out.summary;
                info!(
                    sid = self.sid,
                    spf_helo = %s.spf_helo,
                    spf = %s.spf,
                    spf_problem = s.spf_problem.as_deref().unwrap_or(""),
                    dkim = ?s.dkim,
                    dmarc = s.dmarc,
                    policy = s.dmarc_policy,
                    "authentication results"
                );
                if let Action::Reject { code, status, text } = out.action {
                    info!(sid = self.sid, code, %text, "refused by the authentication policy");
                    self.abort_delivery().await;
                    let (c, s, d) = status;
                    return Some(Delivery::Failed(Reply::new(
                        code,
                        (c, u16::from(s), u16::from(d)),
                        text,
                    )));
                }
                top = out.header;
                stripped = out.stripped;
            }
        }
        let mut body = stripped.unwrap_or(held);
        if self.txn.sign {
            // An RSA signature costs milliseconds (docs/benchmarks.md): off
            // the connection threads, as the disk writes are.
            let signer = Arc::clone(&self.settings.signer);
            let signed = tokio::task::spawn_blocking(move || {
                let sig = signer.sign(&body);
                (body, sig)
            })
            .await;
            match signed {
                Ok((b, Ok(sig))) => {
                    body = b;
                    top.push_str(&sig);
                }
                // Unsigned mail still goes: a signature is not a promise
                // made to the client.
                Ok((b, Err(e))) => {
                    body = b;
                    error!(sid = self.sid, error = %e, "DKIM signing failed");
                }
                Err(e) => {
                    error!(sid = self.sid, error = %e, "DKIM signing task failed");
                    self.abort_delivery().await;
                    return Some(Delivery::Failed(Reply::new(
                        451,
                        (4, 3, 0),
                        "Error: queue file write error",
                    )));
                }
            }
        }
        for part in [top.as_bytes(), &body] {
            if self.txn.delivery.as_mut().is_some_and(|m| m.push(part)) {
                self.write_out().await;
            }
            if self.txn.outgoing.as_mut().is_some_and(|m| m.push(part)) {
                self.write_out_remote().await;
            }
        }
        None
    }

    /// Writes what the message holds to its Maildir file; after an error
    /// the message is dropped (its temporary file removed) and ends in 451.
    async fn write_out(&mut self) {
        let Some(mut m) = self.txn.delivery.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || m.write_out().map(|()| m)).await {
            Ok(Ok(m)) => self.txn.delivery = Some(m),
            Ok(Err(e)) => {
                self.txn.broken = true;
                error!(sid = self.sid, error = %e, "writing message failed")
            }
            Err(e) => {
                self.txn.broken = true;
                error!(sid = self.sid, error = %e, "delivery task failed")
            }
        }
    }

    /// The same for the part for other domains.
    async fn write_out_remote(&mut self) {
        let Some(mut m) = self.txn.outgoing.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || m.write_out().map(|()| m)).await {
            Ok(Ok(m)) => self.txn.outgoing = Some(m),
            Ok(Err(e)) => {
                self.txn.broken = true;
                error!(sid = self.sid, error = %e, "writing message to the outbound queue failed")
            }
            Err(e) => {
                self.txn.broken = true;
                error!(sid = self.sid, error = %e, "outbound queue task failed")
            }
        }
    }

    /// The end of DATA: both parts durable before `250`: the part for
    /// other domains in the outbound queue, then the local part by the
    /// pipeline (queue journal, or its Maildir files). If the local part
    /// fails, the other is taken out again, so that the client's retry
    /// does not send it twice.
    async fn finish_message(&mut self) -> Delivery {
        self.txn.active = false;
        let failed = Delivery::Failed(Reply::new(451, (4, 3, 0), "Error: queue file write error"));
        let local = self.txn.delivery.take();
        let outgoing = self.txn.outgoing.take();
        let success = self.txn.success.take();
        if self.txn.broken || (local.is_none() && outgoing.is_none()) {
            self.txn.broken = false;
            return failed;
        }
        let shared = Arc::clone(&self.shared);
        // The pipeline logs under the session's id.
        let span = tracing::info_span!("smtpd", sid = self.sid);
        let r = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let relayed = match outgoing {
                    Some(o) => {
                        let id = o.id().to_owned();
                        o.commit()?;
                        Some(id)
                    }
                    None => None,
                };
                let id = match (local, &relayed) {
                    (Some(m), _) => match m.finish(&shared.pipeline) {
                        Ok(accepted) => accepted.queue_id().to_string(),
                        Err(e) => {
                            if let (Some(id), Some(r)) = (&relayed, &shared.relay) {
                                if let Err(undo) = relay::Outgoing::undo(&r.queue, id) {
                                    error!(error = %undo, "taking the relayed part out again failed");
                                }
                            }
                            return Err(e);
                        }
                    },
                    (None, Some(id)) => id.clone(),
                    (None, None) => return Err(mailstore::Error::NoRecipients),
                };
                // The local part is committed (journal or Maildir) and its
                // delivery is retried until it succeeds, never bounced: the
                // delivered notice goes now, durable before our `250`. A
                // crash between the two makes the client send again, and
                // the notice comes once more with the copy (at least
                // once); a notice that cannot be queued is logged, not
                // worth refusing a message already committed.
                let notice = success.and_then(|n| match n.send(&shared) {
                    Ok(id) => id,
                    Err(e) => {
                        error!(queue_id = id, error = e, "delivered notice failed");
                        None
                    }
                });
                Ok::<_, mailstore::Error>((id, relayed, notice))
            })
        });
        match r.await {
            Ok(Ok((queue_id, relayed, notice))) => {
                if let (Some(id), Some(r)) = (relayed, &self.shared.relay) {
                    info!(sid = self.sid, queue_id = id, "queued for other domains");
                    r.engine.submit(&id);
                }
                if let (Some(id), Some(r)) = (notice, &self.shared.relay) {
                    r.engine.submit(&id);
                }
                Delivery::Accepted { queue_id }
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

    async fn abort_delivery(&mut self) {
        self.txn.active = false;
        self.txn.broken = false;
        self.txn.success = None;
        self.txn.held = None;
        let local = self.txn.delivery.take().filter(Incoming::on_disk);
        let outgoing = self.txn.outgoing.take();
        if local.is_some() || outgoing.is_some() {
            // Removing their temporary files blocks.
            let _ = tokio::task::spawn_blocking(move || drop((local, outgoing))).await;
        }
    }
}

/// The policy's reply as SMTP sends it.
fn reply(r: PolicyReply) -> Reply {
    Reply::new(r.code, r.status, r.text)
}

/// The address of a domain literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`,
/// RFC 5321 section 4.1.3), canonical as `canonical_ip` makes it; `None`
/// for a domain name or a malformed literal.
fn literal_ip(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let ip = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => IpAddr::V6(inner.get(5..)?.parse().ok()?),
        _ => IpAddr::V4(inner.parse().ok()?),
    };
    Some(canonical_ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_literals() {
        assert_eq!(
            literal_ip("[127.0.0.1]"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(
            literal_ip("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        // An IPv4-mapped IPv6 literal is the IPv4 address, as a dual-stack
        // socket reports it.
        assert_eq!(
            literal_ip("[IPv6:::ffff:192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        for d in [
            "127.0.0.1",
            "[127.0.0]",
            "[1.2.3.4.5]",
            "[IPv6:zz]",
            "[]",
            "[2001:db8::1]",
            "csuvnetwork.com",
        ] {
            assert_eq!(literal_ip(d), None, "{d}");
        }
    }
}
