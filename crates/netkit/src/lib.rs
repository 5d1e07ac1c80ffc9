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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Instant;

use mail_session::driver::{Driver, TranscriptLog};
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
    /// Too many connections in total.
    Total,
    /// Too many connections from this client address.
    PerClient,
}

/// Counts connections in total and per client address.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_client: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl ConnLimiter {
    /// A limiter allowing `max_total` connections, `max_per_client` from
    /// any one address.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_client,
            state: Mutex::new(Counts::default()),
        })
    }

    /// Count a new connection from `ip`, or say which limit it exceeds. The
    /// permit gives the slot back when dropped.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, LimitExceeded> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.total >= self.max_total {
            return Err(LimitExceeded::Total);
        }
        let n = s.per_client.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            return Err(LimitExceeded::PerClient);
        }
        *n += 1;
        s.total += 1;
        Ok(ConnPermit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// Admits a new connection, or writes `refusal(limit)` to it (the
    /// protocol's own "too many connections" line), logs the refusal and
    /// returns `None`; the caller then drops the connection.
    pub async fn admit(
        self: &Arc<Self>,
        stream: &mut TcpStream,
        peer: SocketAddr,
        refusal: impl FnOnce(LimitExceeded) -> String,
    ) -> Option<ConnPermit> {
        match self.try_acquire(peer.ip()) {
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
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self
            .limiter
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_client.remove(&self.ip);
            }
        }
    }
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

/// The session driver for an accepted mail connection: it stops waiting
/// for input on shutdown, and logs the transcript under `sid` when the
/// configuration asks for one (`transcript`, `transcript_show_secrets`).
pub fn driver(
    stream: TcpStream,
    shutdown: &ShutdownWatch,
    sid: &str,
    global: &mail_config::Global,
) -> Driver<TcpStream> {
    let driver = Driver::new(stream).with_shutdown(shutdown.token());
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

    #[tokio::test]
    async fn admit_writes_the_refusal_and_counts() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limiter = ConnLimiter::new(1, 1);
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let (mut s1, p1) = listener.accept().await.unwrap();
        let permit = limiter.admit(&mut s1, p1, |_| "refused\r\n".into()).await;
        assert!(permit.is_some());
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (mut s2, p2) = listener.accept().await.unwrap();
        let refused = limiter
            .admit(&mut s2, p2, |which| format!("no: {which:?}\r\n"))
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
        assert!(l.state.lock().unwrap().per_client.is_empty());
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
