//! What the TCP daemons (`smtpd`, `pop3d`) share: connection limits in
//! total and per client address, a shutdown signal that every connection
//! task can watch, Unix signal handling and logging setup.
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

/// Serve signals until SIGTERM or SIGINT: call `reload` on each SIGHUP,
/// return on a stop signal.
pub async fn until_stop_signal(mut reload: impl FnMut()) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    loop {
        match signals.recv().await {
            Signal::Stop => return Ok(()),
            Signal::Reload => reload(),
        }
    }
}

/// A started daemon that the signal loop can reconfigure and stop.
pub trait Service {
    /// Why a reload was refused.
    type Error: std::fmt::Display;
    /// Apply a reread configuration (SIGHUP).
    fn reload(&self, cfg: mail_config::Config) -> Result<(), Self::Error>;
    /// Stop gracefully (SIGTERM, SIGINT).
    fn stop(self) -> impl std::future::Future<Output = ()> + Send;
}

/// Run `service` until SIGTERM or SIGINT, then stop it gracefully; on
/// SIGHUP reread `config_path` (or the built-in configuration) and reload.
/// A configuration that fails to load or apply leaves the old one in
/// force, with the reason logged.
pub async fn serve_until_signalled<S: Service>(
    service: S,
    config_path: Option<std::path::PathBuf>,
) -> std::io::Result<()> {
    until_stop_signal(|| {
        let r = mail_config::Config::load_or_builtin(config_path.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|cfg| service.reload(cfg).map_err(|e| e.to_string()));
        match r {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed; keeping the old configuration"),
        }
    })
    .await?;
    tracing::info!("stopping");
    service.stop().await;
    Ok(())
}

/// The command line every TCP daemon shares.
#[derive(Debug, clap::Parser)]
struct DaemonArgs {
    /// The shared configuration file. Without it, the built-in lab
    /// configuration is used.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
    /// Log every protocol line (`C:`/`S:`), as `transcript = true` does.
    #[arg(long)]
    transcript: bool,
}

/// The whole `main` of a TCP daemon: parse `--config`/`--transcript`, set
/// up logging, load the configuration (exit 2 with the reason if it is
/// bad), `start` the service, serve signals until stopped.
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
    use clap::{CommandFactory, FromArgMatches};
    use std::process::ExitCode;
    let matches = DaemonArgs::command()
        .name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = match DaemonArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    init_tracing("info");
    let mut cfg = match mail_config::Config::load_or_builtin(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    cfg.global.transcript |= args.transcript;
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
        let service = match start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match serve_until_signalled(service, args.config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
