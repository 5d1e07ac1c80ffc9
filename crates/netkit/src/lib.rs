//! What the daemons (`smtpd`, `pop3d`, `dnsd`) share: one `main`
//! ([`daemon_main`], [`run_daemon`]) with one command line ([`CommonArgs`]),
//! one lifecycle (the [`Service`] trait: start, reload on SIGHUP, stop on
//! SIGTERM or SIGINT), logging setup, and for the TCP services connection
//! limits in total and per client address and a shutdown signal that every
//! connection task can watch.
//!
//! ```
//! use netkit::{ConnLimiter, Shutdown};
//!
//! let limiter = ConnLimiter::new(2, 1);
//! let ip = "192.0.2.1".parse().unwrap();
//! let first = limiter.try_acquire(ip).unwrap();
//! assert!(limiter.try_acquire(ip).is_err()); // one per client address
//! drop(first);
//! assert!(limiter.try_acquire(ip).is_ok());
//!
//! let shutdown = Shutdown::new();
//! let watcher = shutdown.subscribe();
//! assert!(!watcher.is_triggered());
//! shutdown.trigger();
//! assert!(watcher.is_triggered());
//! ```
#![forbid(unsafe_code)]

pub mod certgen;
pub mod resolve;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Instant;

use mail_session::driver::{Driver, TranscriptLog};
use mail_session::tls::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Sleep until `deadline`, or forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Why a connection was refused by a [`ConnLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// Too many connections in total, and none could be evicted for this
    /// one.
    Total,
    /// Too many connections from this client address.
    PerClient,
}

/// Which clients count as one for the per-client limit and for eviction:
/// an IPv4 address, or an IPv6 /64 (one customer's LAN: an attacker holds
/// a whole /64 as easily as one address). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key `ip` counts under.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientKey(IpAddr::V6(std::net::Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => ClientKey(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(a) => write!(f, "{a}/64"),
            IpAddr::V4(a) => write!(f, "{a}"),
        }
    }
}

/// Counts connections in total and per client ([`ClientKey`]), and when
/// full makes room for a client with few connections by evicting one of
/// the client that holds the most.
///
/// Eviction is fair admission rather than first come, first served: a
/// flood of idle or trickling connections from a few addresses cannot lock
/// out everyone else. Authenticated connections are never evicted;
/// connections in a transaction only when the client holding the most has
/// no idle ones ([`Standing`], [`ConnPermit::set_standing`]): a slow
/// sender that opens a mail transaction must not be safe for ever. The
/// oldest of the chosen client's candidates goes first, since it has had
/// the longest to make progress.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_client: usize,
    state: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    next_id: u64,
    /// Per client, its connections by id; ids grow, so the first is the
    /// oldest.
    clients: HashMap<ClientKey, BTreeMap<u64, Slot>>,
}

#[derive(Debug)]
struct Slot {
    standing: Standing,
    /// Cancelled on shutdown and on eviction.
    cancel: CancellationToken,
    /// Cancelled on eviction only: it interrupts the session even inside a
    /// transaction, which shutdown lets finish.
    evict: CancellationToken,
}

/// What a connection is doing, for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Standing {
    /// Not authenticated, no transaction: evicted first.
    #[default]
    PreAuth,
    /// In a transaction (an SMTP mail transaction) without having
    /// authenticated: evicted only when no client has a `PreAuth` one to
    /// give.
    Transaction,
    /// Authenticated (logged in): never evicted.
    Authenticated,
}

impl Table {
    /// The connection to evict so that a client holding `mine` connections
    /// gets one: the oldest `PreAuth` connection of the client with the
    /// most that has one, else the oldest `Transaction` one likewise; only
    /// from a client that would still hold at least as many as the
    /// newcomer afterwards (no eviction among equals, so no ping-pong).
    /// Ties go to the client whose candidate is oldest.
    fn victim(&self, mine: usize) -> Option<(ClientKey, u64)> {
        self.victim_at(mine, Standing::PreAuth)
            .or_else(|| self.victim_at(mine, Standing::Transaction))
    }

    fn victim_at(&self, mine: usize, standing: Standing) -> Option<(ClientKey, u64)> {
        let mut best: Option<(usize, u64, ClientKey)> = None;
        for (key, conns) in &self.clients {
            let n = conns.len();
            if n <= mine.saturating_add(1) || best.is_some_and(|(bn, _, _)| n < bn) {
                continue;
            }
            let Some((&id, _)) = conns.iter().find(|(_, s)| s.standing == standing) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((bn, bid, _)) => n > bn || id < bid,
            };
            if better {
                best = Some((n, id, *key));
            }
        }
        best.map(|(_, id, key)| (key, id))
    }

    fn remove(&mut self, key: ClientKey, id: u64) -> Option<Slot> {
        let conns = self.clients.get_mut(&key)?;
        let slot = conns.remove(&id)?;
        if conns.is_empty() {
            self.clients.remove(&key);
        }
        self.total = self.total.saturating_sub(1);
        Some(slot)
    }
}

impl ConnLimiter {
    /// A limiter allowing `max_total` connections, `max_per_client` from
    /// any one client.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_client,
            state: Mutex::new(Table::default()),
        })
    }

    /// As [`ConnLimiter::new`], with `max_total` lowered to what the file
    /// descriptor limit allows ([`fd_connection_budget`]); logs the limit
    /// chosen for `service`.
    pub fn with_fd_limit(service: &str, max_total: usize, max_per_client: usize) -> Arc<Self> {
        let soft = nofile_limit();
        let budget = soft.map_or(usize::MAX, fd_connection_budget);
        let chosen = max_total.min(budget).max(1);
        if chosen < max_total {
            // Expected where the hard limit is low: said, not alarmed.
            tracing::info!(
                service,
                configured = max_total,
                max_connections = chosen,
                nofile = soft,
                "max_connections lowered to fit the file descriptor limit"
            );
        } else {
            tracing::info!(
                service,
                max_connections = chosen,
                max_connections_per_client = max_per_client,
                nofile = soft,
                "connection limits"
            );
        }
        Self::new(chosen, max_per_client)
    }

    /// The total limit in force.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count a new connection from `ip`, or say which limit it exceeds.
    /// When full, a connection of a client with more is evicted for it (its
    /// [`ConnPermit::token`] is cancelled and its slot given to this one).
    /// The permit gives the slot back when dropped.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, LimitExceeded> {
        self.acquire(ip, CancellationToken::new())
    }

    fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        cancel: CancellationToken,
    ) -> Result<ConnPermit, LimitExceeded> {
        let key = ClientKey::of(ip);
        let mut t = self.table();
        let mine = t.clients.get(&key).map_or(0, BTreeMap::len);
        if mine >= self.max_per_client {
            return Err(LimitExceeded::PerClient);
        }
        if t.total >= self.max_total {
            let (vkey, vid) = t.victim(mine).ok_or(LimitExceeded::Total)?;
            if let Some(slot) = t.remove(vkey, vid) {
                slot.evict.cancel();
                slot.cancel.cancel();
                tracing::info!(client = %vkey, newcomer = %key, "connection evicted to admit another client");
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        t.total += 1;
        let evict = CancellationToken::new();
        t.clients.entry(key).or_default().insert(
            id,
            Slot {
                standing: Standing::PreAuth,
                cancel: cancel.clone(),
                evict: evict.clone(),
            },
        );
        Ok(ConnPermit {
            limiter: Arc::clone(self),
            key,
            id,
            standing: Standing::PreAuth,
            cancel,
            evict,
        })
    }

    /// Admits a new connection, or writes `refusal(limit)` to it (the
    /// protocol's own "too many connections" line), logs the refusal and
    /// returns `None`; the caller then drops the connection. The permit's
    /// token is cancelled on `shutdown` and on eviction.
    pub async fn admit(
        self: &Arc<Self>,
        stream: &mut TcpStream,
        peer: SocketAddr,
        shutdown: &ShutdownWatch,
        refusal: impl FnOnce(LimitExceeded) -> String,
    ) -> Option<ConnPermit> {
        match self.acquire(peer.ip(), shutdown.token.child_token()) {
            Ok(p) => Some(p),
            Err(which) => {
                let _ = stream.write_all(refusal(which).as_bytes()).await;
                tracing::warn!(client = %peer, "connection refused: {:?} limit", which);
                None
            }
        }
    }

    /// Connections counted now.
    pub fn active(&self) -> usize {
        self.table().total
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: ClientKey,
    id: u64,
    standing: Standing,
    cancel: CancellationToken,
    evict: CancellationToken,
}

impl ConnPermit {
    /// Say what the connection is doing now (see [`Standing`]).
    pub fn set_standing(&mut self, standing: Standing) {
        if self.standing == standing {
            return;
        }
        self.standing = standing;
        let mut t = self.limiter.table();
        if let Some(slot) = t
            .clients
            .get_mut(&self.key)
            .and_then(|c| c.get_mut(&self.id))
        {
            slot.standing = standing;
        }
    }

    /// Cancelled when this connection is evicted or on shutdown: give it
    /// to the session driver.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether this connection was evicted to admit another client (it no
    /// longer counts; it should say why and close).
    pub fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }

    /// Cancelled only when this connection is evicted (for
    /// `Driver::with_eviction`, which interrupts any wait for input).
    pub fn eviction_token(&self) -> CancellationToken {
        self.evict.clone()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut t = self.limiter.table();
        t.remove(self.key, self.id);
    }
}

/// File descriptors kept for everything but client connections: listeners,
/// the queue journal, Maildir files, the passwd file, logging.
const RESERVED_FDS: u64 = 256;

/// How many connections `nofile` file descriptors carry: what is left
/// after the 256 kept for everything else (listeners, the queue journal,
/// Maildir files, the passwd file, logging), of which a quarter is kept
/// for the second descriptor a connection may hold while it writes a
/// message or reads a maildrop.
pub fn fd_connection_budget(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(RESERVED_FDS) / 4 * 3;
    usize::try_from(usable).unwrap_or(usize::MAX).max(1)
}

/// The soft `RLIMIT_NOFILE` now; `None` when unlimited.
pub fn nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, Resource};
    getrlimit(Resource::Nofile).current
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, so an event-driven
/// server can hold as many connections as it is allowed; returns the soft
/// limit in force afterwards. An unlimited hard limit is not a valid soft
/// limit on Linux (above `fs.nr_open`): 1 Mi is tried then.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let target = now.maximum.unwrap_or(1 << 20);
    if now.current.is_some_and(|c| c < target) {
        let new = Rlimit {
            current: Some(target),
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, new) {
            tracing::warn!(error = %e, target, "cannot raise RLIMIT_NOFILE");
        }
    }
    nofile_limit()
}

/// The sending side of a shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything watching to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// A handle for a task that must stop when asked.
    pub fn subscribe(&self) -> ShutdownWatch {
        ShutdownWatch {
            token: self.token.clone(),
        }
    }
}

/// The watching side of a shutdown signal.
#[derive(Debug, Clone)]
pub struct ShutdownWatch {
    token: CancellationToken,
}

impl ShutdownWatch {
    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is asked for (at once if it already was).
    pub async fn triggered(&mut self) {
        self.token.cancelled().await;
    }

    /// The signal as a token, for `mail_session::driver::Driver`.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// What a daemon was told by a Unix signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (Ctrl-C): stop gracefully.
    Stop,
    /// SIGHUP: reread the configuration.
    Reload,
}

/// Unix signal listeners for a daemon's main loop.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (SIGTERM, SIGINT, SIGHUP).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Where the signal loop gets its signals: the process's, or a test's.
trait SignalSource {
    async fn next_signal(&mut self) -> Signal;
}

impl SignalSource for Signals {
    async fn next_signal(&mut self) -> Signal {
        self.recv().await
    }
}

/// Call `reload` on each SIGHUP; return on SIGTERM or SIGINT.
async fn serve_signals(mut signals: impl SignalSource, mut reload: impl FnMut()) {
    loop {
        match signals.next_signal().await {
            Signal::Stop => return,
            Signal::Reload => reload(),
        }
    }
}

/// A started daemon that the signal loop can reconfigure and stop.
pub trait Service {
    /// Why a reload was refused.
    type Error: std::fmt::Display;
    /// Apply a reread configuration (SIGHUP). May block (files, zone
    /// parsing): the signal loop calls it where blocking is allowed.
    fn reload(&self, cfg: mail_config::Config) -> Result<(), Self::Error>;
    /// Stop gracefully (SIGTERM, SIGINT).
    fn stop(self) -> impl std::future::Future<Output = ()> + Send;
}

/// Run `service` until SIGTERM or SIGINT, then stop it gracefully; on each
/// SIGHUP call `load` for the configuration and hand it to
/// [`Service::reload`], once. A configuration that fails to load or apply
/// leaves the old one in force, with the reason logged. Install `signals`
/// before starting the service: a signal that arrives meanwhile is then
/// served here rather than ending the process.
pub async fn serve_until_signalled<S: Service>(
    signals: Signals,
    service: S,
    load: impl Fn() -> Result<mail_config::Config, String>,
) {
    serve_service(signals, service, load).await;
}

async fn serve_service<S: Service>(
    signals: impl SignalSource,
    service: S,
    load: impl Fn() -> Result<mail_config::Config, String>,
) {
    serve_signals(signals, || {
        let r = blocking_allowed(|| {
            load().and_then(|cfg| service.reload(cfg).map_err(|e| e.to_string()))
        });
        match r {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed; keeping the old configuration"),
        }
    })
    .await;
    tracing::info!("stopping");
    service.stop().await;
}

/// Run blocking work from async code: on a multi-threaded runtime the
/// other workers take over this one's tasks meanwhile; a single-threaded
/// runtime (tests) just runs it.
fn blocking_allowed<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The command line every daemon shares. A daemon with options of its own
/// flattens it into its parser (`#[command(flatten)]`) and implements
/// [`DaemonArgs`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// The shared configuration file. Without it, the built-in lab
    /// configuration is used.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Log every protocol exchange (`C:`/`S:` lines; dnsd: one line per
    /// query), as `transcript = true` does.
    #[arg(long)]
    pub transcript: bool,
}

/// A daemon's parsed command line: the [`CommonArgs`] and the daemon's own
/// overrides of the configuration.
pub trait DaemonArgs {
    /// The options every daemon has.
    fn common(&self) -> &CommonArgs;

    /// Apply this command line's overrides to a freshly loaded
    /// configuration. Called at start and again on every SIGHUP, so an
    /// option given at start keeps its effect across reloads.
    fn apply(&self, cfg: &mut mail_config::Config) -> Result<(), String> {
        let _ = cfg;
        Ok(())
    }

    /// The configuration file (or the built-in one) with `--transcript` and
    /// [`apply`](DaemonArgs::apply) applied.
    fn load(&self) -> Result<mail_config::Config, String> {
        let common = self.common();
        let mut cfg = mail_config::Config::load_or_builtin(common.config.as_deref())
            .map_err(|e| e.to_string())?;
        cfg.global.transcript |= common.transcript;
        self.apply(&mut cfg)?;
        Ok(cfg)
    }
}

impl DaemonArgs for CommonArgs {
    fn common(&self) -> &CommonArgs {
        self
    }
}

/// The whole `main` of a daemon with only the common command line
/// (`--config`, `--transcript`): see [`run_daemon`].
pub fn daemon_main<S, E, F, Fut>(
    name: &'static str,
    about: &'static str,
    start: F,
) -> std::process::ExitCode
where
    S: Service,
    E: std::fmt::Display,
    F: FnOnce(mail_config::Config) -> Fut,
    Fut: std::future::Future<Output = Result<S, E>>,
{
    use clap::{Args, FromArgMatches};
    let cmd = clap::Command::new(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let matches = CommonArgs::augment_args(cmd).get_matches();
    match CommonArgs::from_arg_matches(&matches) {
        Ok(args) => run_daemon(name, args, start),
        Err(e) => e.exit(),
    }
}

/// Run a daemon whose command line is parsed: set up logging, load the
/// configuration (exit 2 with the reason if it is bad), install the signal
/// handlers, `start` the service, then serve signals until stopped. Each
/// SIGHUP reloads through [`DaemonArgs::load`], so command-line overrides
/// survive it.
pub fn run_daemon<A, S, E, F, Fut>(name: &'static str, args: A, start: F) -> std::process::ExitCode
where
    A: DaemonArgs,
    S: Service,
    E: std::fmt::Display,
    F: FnOnce(mail_config::Config) -> Fut,
    Fut: std::future::Future<Output = Result<S, E>>,
{
    use std::process::ExitCode;
    init_tracing("info");
    // Each connection holds a descriptor: allow as many as the hard limit.
    let nofile = raise_nofile_limit();
    tracing::info!(nofile, "file descriptor limit");
    let cfg = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Before starting: a SIGHUP or SIGTERM that arrives while the
        // service starts is then served, not fatal.
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let service = match start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        serve_service(signals, service, || args.load()).await;
        ExitCode::SUCCESS
    })
}

/// Bind every address, failing with the address in the message.
pub async fn bind_all(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}

/// Listeners being served: each accepted connection runs
/// `handle(stream, peer, tag, shutdown)` in its own task, where `tag` says
/// which listener it came from and `shutdown` tells the connection to wind
/// down.
#[derive(Debug)]
pub struct Serving {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Start accepting on every listener.
    pub fn spawn<T, F, Fut>(listeners: Vec<(TcpListener, T)>, handle: F) -> Serving
    where
        T: Copy + Send + 'static,
        F: Fn(TcpStream, SocketAddr, T, ShutdownWatch) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(accept_loop(listeners, shutdown.subscribe(), handle));
        Serving { shutdown, task }
    }

    /// Close the listeners, tell every connection to wind down, and wait
    /// for them up to `grace`; then drop what is left.
    pub async fn stop(self, grace: std::time::Duration) {
        self.shutdown.trigger();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!("shutdown grace period over; closing remaining sessions");
            task.abort();
        }
    }
}

/// Accept connections until shutdown is triggered; after that the
/// listeners are closed and this waits for the connection tasks.
async fn accept_loop<T, F, Fut>(
    listeners: Vec<(TcpListener, T)>,
    shutdown: ShutdownWatch,
    handle: F,
) where
    T: Copy + Send + 'static,
    F: Fn(TcpStream, SocketAddr, T, ShutdownWatch) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut acceptors = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr, T)>(64);
    for (l, tag) in listeners {
        let tx = tx.clone();
        let mut sd = shutdown.clone();
        acceptors.spawn(async move {
            loop {
                tokio::select! {
                    r = l.accept() => match r {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            if tx.send((s, peer, tag)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                    _ = sd.triggered() => return,
                }
            }
        });
    }
    drop(tx);
    let mut conns = tokio::task::JoinSet::new();
    while let Some((stream, peer, tag)) = rx.recv().await {
        conns.spawn(handle(stream, peer, tag, shutdown.clone()));
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// Set up `tracing` output on stderr; `RUST_LOG` overrides `default`.
/// Calling it twice is harmless.
pub fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`; logs,
/// penalties and trace headers use the IPv4 form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What a login attempt through [`login`] came to.
#[derive(Debug)]
pub enum Login {
    /// The credentials are right.
    Accepted(mailstore::Account),
    /// Wrong credentials: the host logs the failure in its protocol's
    /// words, waits `delay` and answers.
    Rejected {
        /// The pause before answering.
        delay: std::time::Duration,
    },
    /// Too many attempts from this address are already waiting for their
    /// turn: nothing was checked; answer with a temporary failure.
    Deferred,
    /// The account store failed (logged here): a temporary failure.
    Unavailable,
}

/// Checks a login for either mail daemon: first the client address's turn
/// under the auth penalty (parallel connections from one address take
/// turns instead of each waiting its own delay, as Dovecot's auth penalty
/// does), then `check` (the password check, e.g.
/// `Authenticator::check_session`) in the blocking pool, then the penalty
/// learns the result.
pub async fn login(
    penalty: &Arc<mailstore::auth::AuthPenalty>,
    client: IpAddr,
    sid: &str,
    check: impl FnOnce() -> mailstore::auth::AuthOutcome + Send + 'static,
) -> Login {
    use mailstore::auth::AuthOutcome;
    let Some(attempt) = penalty.begin(client, Instant::now()) else {
        // Its turn is too far away: keep the waiting attempts (and what
        // they hold) few.
        tracing::info!(
            sid,
            %client,
            "authentication refused for now: too many attempts from this address waiting"
        );
        return Login::Deferred;
    };
    if !attempt.wait().is_zero() {
        tracing::debug!(sid, wait_ms = attempt.wait().as_millis(), "auth penalty");
        tokio::time::sleep(attempt.wait()).await;
    }
    match tokio::task::spawn_blocking(check).await {
        Ok(AuthOutcome::Accepted(account)) => {
            attempt.finish(true, Instant::now());
            Login::Accepted(account)
        }
        Ok(AuthOutcome::Rejected { delay }) => {
            attempt.finish(false, Instant::now());
            Login::Rejected { delay }
        }
        Ok(AuthOutcome::Unavailable(e)) => {
            tracing::error!(sid, error = %e, "account lookup failed");
            Login::Unavailable
        }
        Err(e) => {
            tracing::error!(sid, error = %e, "account lookup task failed");
            Login::Unavailable
        }
    }
}

/// The session driver for an accepted mail connection: it stops waiting
/// for input on shutdown or eviction (the permit's token; see
/// [`ConnPermit::is_evicted`] for which), and logs the transcript under
/// `sid` when the configuration asks for one (`transcript`,
/// `transcript_show_secrets`).
pub fn driver(
    stream: Stream,
    permit: &ConnPermit,
    sid: &str,
    global: &mail_config::Global,
) -> Driver<Stream> {
    let driver = Driver::new(stream)
        .with_shutdown(permit.token())
        .with_eviction(permit.eviction_token());
    if !global.transcript {
        return driver;
    }
    driver.with_transcript(TranscriptLog {
        sid: sid.to_owned(),
        show_secrets: global.transcript_show_secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn login_spaces_failures_from_one_address_and_reports_each_outcome() {
        use mailstore::auth::{AuthOutcome, AuthPenalty, PenaltyPolicy};
        use mailstore::Error;
        let penalty = Arc::new(AuthPenalty::new(PenaltyPolicy::DOVECOT));
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let reject = || AuthOutcome::Rejected {
            delay: std::time::Duration::ZERO,
        };
        // The first failure costs nothing; the second waits its turn.
        let t0 = tokio::time::Instant::now();
        assert!(matches!(
            login(&penalty, attacker, "1", reject).await,
            Login::Rejected { .. }
        ));
        assert!(t0.elapsed() < std::time::Duration::from_millis(10));
        assert!(matches!(
            login(&penalty, attacker, "1", reject).await,
            Login::Rejected { .. }
        ));
        assert!(t0.elapsed() >= std::time::Duration::from_secs(2));
        // Another address is not slowed; a store failure is a temporary one.
        let t1 = tokio::time::Instant::now();
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        let failed = || AuthOutcome::Unavailable(Error::Input(std::io::Error::other("unreadable")));
        assert!(matches!(
            login(&penalty, other, "2", failed).await,
            Login::Unavailable
        ));
        assert!(t1.elapsed() < std::time::Duration::from_millis(10));
    }

    #[tokio::test]
    async fn admit_writes_the_refusal_and_counts() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limiter = ConnLimiter::new(1, 5);
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let (mut s1, p1) = listener.accept().await.unwrap();
        let sd = Shutdown::new().subscribe();
        let permit = limiter
            .admit(&mut s1, p1, &sd, |_| "refused\r\n".into())
            .await;
        assert!(permit.is_some());
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (mut s2, p2) = listener.accept().await.unwrap();
        let refused = limiter
            .admit(&mut s2, p2, &sd, |which| format!("no: {which:?}\r\n"))
            .await;
        assert!(refused.is_none());
        drop(s2);
        let mut got = String::new();
        c2.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "no: Total\r\n");
        assert_eq!(limiter.active(), 1);
        drop(permit);
        assert_eq!(limiter.active(), 0);
        drop((c1.shutdown().await, s1));
    }

    #[test]
    fn total_limit() {
        let l = ConnLimiter::new(2, 5);
        let a = l.try_acquire("10.0.0.1".parse().unwrap()).unwrap();
        let _b = l.try_acquire("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            l.try_acquire("10.0.0.3".parse().unwrap()).unwrap_err(),
            LimitExceeded::Total
        );
        assert_eq!(l.active(), 2);
        drop(a);
        assert_eq!(l.active(), 1);
        assert!(l.try_acquire("10.0.0.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn per_client_limit_frees_entries() {
        let l = ConnLimiter::new(10, 2);
        let ip: IpAddr = "::1".parse().unwrap();
        let a = l.try_acquire(ip).unwrap();
        let b = l.try_acquire(ip).unwrap();
        assert_eq!(l.try_acquire(ip).unwrap_err(), LimitExceeded::PerClient);
        drop((a, b));
        assert!(l.table().clients.is_empty());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn full_evicts_the_oldest_pre_auth_connection_of_the_biggest_client() {
        let l = ConnLimiter::new(6, 10);
        let a: Vec<_> = (0..3)
            .map(|_| l.try_acquire(ip("10.0.0.1")).unwrap())
            .collect();
        let mut b: Vec<_> = (0..3)
            .map(|_| l.try_acquire(ip("10.0.0.2")).unwrap())
            .collect();
        // b's oldest has logged in: b's candidate is its second, younger
        // than a's oldest; both hold 3, so a's oldest goes.
        b[0].set_standing(Standing::Authenticated);
        let fresh = l.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(a[0].token().is_cancelled() && a[0].is_evicted());
        assert!(a[1..].iter().all(|p| !p.is_evicted()));
        assert!(b.iter().all(|p| !p.is_evicted()));
        assert_eq!(l.active(), 6);
        // Now b holds the most (3 against 2): its oldest not logged in goes.
        let _fresh2 = l.try_acquire(ip("192.0.2.8")).unwrap();
        assert!(!b[0].is_evicted() && b[1].is_evicted() && !b[2].is_evicted());
        // Dropping an evicted permit does not free a slot twice.
        drop(a);
        assert_eq!(l.active(), 4);
        drop(fresh);
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn no_eviction_among_equals_or_of_authenticated_connections() {
        let l = ConnLimiter::new(4, 10);
        let a: Vec<_> = (0..2)
            .map(|_| l.try_acquire(ip("10.0.0.1")).unwrap())
            .collect();
        let _b: Vec<_> = (0..2)
            .map(|_| l.try_acquire(ip("10.0.0.2")).unwrap())
            .collect();
        // A newcomer takes one from a client with two; then, holding one,
        // it may not take another from a client with two (they would only
        // swap).
        let _c = l.try_acquire(ip("10.0.0.3")).unwrap();
        assert!(a[0].is_evicted());
        assert_eq!(l.active(), 4);
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).unwrap_err(),
            LimitExceeded::Total
        );
        let l2 = ConnLimiter::new(3, 10);
        let mut e: Vec<_> = (0..3)
            .map(|_| l2.try_acquire(ip("10.0.0.5")).unwrap())
            .collect();
        for p in &mut e {
            p.set_standing(Standing::Authenticated);
        }
        assert_eq!(
            l2.try_acquire(ip("10.0.0.6")).unwrap_err(),
            LimitExceeded::Total
        );
        e[2].set_standing(Standing::PreAuth);
        assert!(l2.try_acquire(ip("10.0.0.6")).is_ok());
        assert!(e[2].is_evicted());
    }

    #[test]
    fn transactions_are_evicted_only_when_no_idle_connection_is_left() {
        let l = ConnLimiter::new(5, 10);
        let mut a: Vec<_> = (0..3)
            .map(|_| l.try_acquire(ip("10.0.0.1")).unwrap())
            .collect();
        let mut b: Vec<_> = (0..2)
            .map(|_| l.try_acquire(ip("10.0.0.2")).unwrap())
            .collect();
        for p in &mut a {
            p.set_standing(Standing::Transaction);
        }
        // b's idle connection goes first though a holds more...
        b[0].set_standing(Standing::Transaction);
        let _n1 = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(b[1].is_evicted() && a.iter().all(|p| !p.is_evicted()));
        // ...then, with no idle connection anywhere, a's oldest transaction.
        let _n2 = l.try_acquire(ip("192.0.2.2")).unwrap();
        assert!(a[0].is_evicted() && !a[1].is_evicted() && !b[0].is_evicted());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = ConnLimiter::new(10, 2);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.try_acquire(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2::77")).unwrap_err(),
            LimitExceeded::PerClient
        );
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.1")),
            ClientKey::of(ip("192.0.2.1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8::1")).to_string(),
            "2001:db8::/64"
        );
    }

    #[test]
    fn shutdown_cancels_admitted_connections_without_evicting_them() {
        let sd = Shutdown::new();
        let l = ConnLimiter::new(2, 2);
        let p = l
            .acquire(ip("10.0.0.1"), sd.subscribe().token.child_token())
            .unwrap();
        sd.trigger();
        assert!(p.token().is_cancelled() && !p.is_evicted());
    }

    #[test]
    fn fd_budget_leaves_headroom() {
        assert_eq!(fd_connection_budget(1024), 576);
        assert_eq!(fd_connection_budget(100), 1);
        assert!(fd_connection_budget(1 << 20) > 700_000);
        // The process's own limit can be raised to its hard limit.
        let soft = raise_nofile_limit();
        assert_eq!(soft, nofile_limit());
    }

    impl SignalSource for tokio::sync::mpsc::UnboundedReceiver<Signal> {
        async fn next_signal(&mut self) -> Signal {
            self.recv().await.unwrap_or(Signal::Stop)
        }
    }

    /// Counts what the signal loop asks of it.
    #[derive(Default)]
    struct Counting {
        reloads: std::sync::Mutex<Vec<bool>>,
        stopped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Service for Arc<Counting> {
        type Error = String;
        fn reload(&self, cfg: mail_config::Config) -> Result<(), String> {
            self.reloads.lock().unwrap().push(cfg.global.transcript);
            Ok(())
        }
        async fn stop(self) {
            self.stopped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn each_sighup_reloads_once_with_the_command_line_applied() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let service = Arc::new(Counting::default());
        let args = CommonArgs {
            config: None,
            transcript: true,
        };
        for s in [Signal::Reload, Signal::Reload, Signal::Stop] {
            tx.send(s).unwrap();
        }
        serve_service(rx, Arc::clone(&service), || args.load()).await;
        // `--transcript` survives the reload of a file that does not set it.
        assert_eq!(*service.reloads.lock().unwrap(), vec![true, true]);
        assert!(service.stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_load_keeps_the_service_running() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let service = Arc::new(Counting::default());
        tx.send(Signal::Reload).unwrap();
        tx.send(Signal::Stop).unwrap();
        serve_service(rx, Arc::clone(&service), || Err("bad".into())).await;
        assert!(service.reloads.lock().unwrap().is_empty());
        assert!(service.stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn daemon_args_apply_overrides_after_the_file() {
        struct Args(CommonArgs);
        impl DaemonArgs for Args {
            fn common(&self) -> &CommonArgs {
                &self.0
            }
            fn apply(&self, cfg: &mut mail_config::Config) -> Result<(), String> {
                cfg.dnsd.query_log = true;
                Ok(())
            }
        }
        let dir = std::env::temp_dir().join(format!("netkit-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mail.toml");
        std::fs::write(&file, "[dnsd]\nworkers = 3\n").unwrap();
        let args = Args(CommonArgs {
            config: Some(file.clone()),
            transcript: false,
        });
        let cfg = args.load().unwrap();
        assert_eq!(cfg.dnsd.workers, 3);
        assert!(cfg.dnsd.query_log && !cfg.global.transcript);
        std::fs::write(&file, "[dns]\nworkers = 3\n").unwrap();
        let e = args.load().unwrap_err();
        assert!(e.contains("mail.toml") && e.contains("`dns`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn shutdown_wakes_watchers() {
        let s = Shutdown::new();
        let mut w = s.subscribe();
        let t = tokio::spawn(async move { w.triggered().await });
        s.trigger();
        t.await.unwrap();
        // A watcher made after the fact sees it at once.
        s.subscribe().triggered().await;
    }
}
