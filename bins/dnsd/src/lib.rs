//! `dnsd`: the mail system's authoritative DNS server.
//!
//! A thin tokio host around [`dns_zone`]: it reads zone files, answers
//! over UDP and TCP (one UDP socket per worker with `SO_REUSEPORT`, TCP
//! with an idle timeout, a connection limit and pipelining), transfers
//! zones over TCP to allowed addresses, and reloads on SIGHUP (the new
//! zone set replaces the old atomically; on any error the old one stays).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dnsd::Error> {
//! let mut config = dnsd::DnsdConfig::default();
//! config.listen = vec!["127.0.0.1:5300".parse().unwrap()];
//! config.zones.push(dnsd::ZoneConfig {
//!     origin: "csuvnetwork.com".into(),
//!     file: "zones/csuvnetwork.com.zone".into(),
//! });
//! dnsd::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Zones can also come from memory ([`ZoneSource::Text`]), which is how
//! a combined lab runner serves [`LAB_ZONE`] without a file.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

mod mmsg;

use dns_zone::{
    Catalog, IncludeLoader, Name, Outcome, Prefix, Responder, ResponderConfig, Transport,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, info, warn};

/// The lab's zone file, exactly as the lab writes it.
pub const LAB_ZONE: &str = include_str!("../zones/csuvnetwork.com.zone");
/// The lab's zone origin.
pub const LAB_ORIGIN: &str = "csuvnetwork.com.";

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or binding failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The configuration file is invalid.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: String,
        /// toml's message (it includes line and column).
        msg: String,
    },
    /// Zones did not load; every message is `file:line:column: ...`.
    #[error("zone errors:\n{}", .0.join("\n"))]
    Zones(Vec<String>),
    /// A bad command-line or configuration value.
    #[error("{0}")]
    Invalid(String),
}

/// One zone to serve.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone apex, e.g. `csuvnetwork.com` (a final dot is optional).
    pub origin: String,
    /// Zone file; relative paths are relative to the configuration file.
    pub file: PathBuf,
}

/// The `[dnsd]` section of the shared configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsdConfig {
    /// Addresses to answer on (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// Zones to serve.
    pub zones: Vec<ZoneConfig>,
    /// Largest UDP answer (EDNS payload cap), default 1232.
    pub udp_payload_max: u16,
    /// Seconds a TCP connection may stay idle.
    pub tcp_idle_timeout_secs: u64,
    /// Simultaneous TCP connections.
    pub tcp_max_connections: usize,
    /// Address prefixes allowed to AXFR.
    pub axfr_allow: Vec<String>,
    /// Log one line per query.
    pub query_log: bool,
    /// UDP sockets per address (0: one per core).
    pub workers: usize,
}

impl Default for DnsdConfig {
    fn default() -> Self {
        DnsdConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5300))],
            zones: Vec::new(),
            udp_payload_max: 1232,
            tcp_idle_timeout_secs: 10,
            tcp_max_connections: 256,
            axfr_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            query_log: false,
            workers: 0,
        }
    }
}

#[derive(Deserialize)]
struct SharedFile {
    // Other daemons' sections are theirs; serde ignores them.
    #[serde(default)]
    dnsd: Option<DnsdConfig>,
}

impl DnsdConfig {
    /// Reads the `[dnsd]` section of the shared TOML file; relative zone
    /// paths become relative to the file's directory. Unknown keys inside
    /// `[dnsd]` are errors (with line and column).
    pub fn from_file(path: &Path) -> Result<DnsdConfig, Error> {
        let text = std::fs::read_to_string(path)?;
        let mut cfg = Self::from_toml_str(&text).map_err(|msg| Error::Config {
            path: path.display().to_string(),
            msg,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for z in &mut cfg.zones {
            if z.file.is_relative() {
                z.file = base.join(&z.file);
            }
        }
        Ok(cfg)
    }

    /// Parses the `[dnsd]` section of a TOML document.
    pub fn from_toml_str(text: &str) -> Result<DnsdConfig, String> {
        let f: SharedFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(f.dnsd.unwrap_or_default())
    }

    fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn responder_config(&self) -> Result<ResponderConfig, Error> {
        let axfr_allow = self
            .axfr_allow
            .iter()
            .map(|s| {
                Prefix::parse(s)
                    .ok_or_else(|| Error::Invalid(format!("bad axfr_allow prefix {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResponderConfig {
            udp_payload_max: self.udp_payload_max.max(512),
            axfr_allow,
        })
    }
}

/// Where a zone's text comes from.
#[derive(Debug, Clone)]
pub enum ZoneSource {
    /// A file (re-read on reload; `$INCLUDE` relative to it).
    File(PathBuf),
    /// Text held in memory (e.g. [`LAB_ZONE`]).
    Text {
        /// Name used in messages.
        name: String,
        /// Zone file text.
        text: String,
    },
}

/// Resolves `$INCLUDE` paths relative to the including file.
struct FsLoader;

impl IncludeLoader for FsLoader {
    fn load(&mut self, path: &str, including_file: &str) -> Result<(String, Vec<u8>), String> {
        let p = Path::new(path);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            Path::new(including_file)
                .parent()
                .unwrap_or(Path::new("."))
                .join(p)
        };
        let data = std::fs::read(&full).map_err(|e| e.to_string())?;
        Ok((full.display().to_string(), data))
    }
}

/// Parses an origin as given in configuration (`example.com` or `example.com.`).
pub fn parse_origin(origin: &str) -> Result<Name, Error> {
    let text = if origin.ends_with('.') {
        origin.to_string()
    } else {
        format!("{origin}.")
    };
    Name::parse(&text, None).map_err(|e| Error::Invalid(format!("bad zone origin {origin:?}: {e}")))
}

/// Loads and checks one zone; returns the zone and its warnings, or every
/// error as `file:line:column: message`.
pub fn load_zone(
    origin: &str,
    source: &ZoneSource,
) -> Result<(dns_zone::Zone, Vec<String>), Vec<String>> {
    let origin = parse_origin(origin).map_err(|e| vec![e.to_string()])?;
    let (name, bytes) = match source {
        ZoneSource::File(p) => match std::fs::read(p) {
            Ok(b) => (p.display().to_string(), b),
            Err(e) => return Err(vec![format!("{}: {e}", p.display())]),
        },
        ZoneSource::Text { name, text } => (name.clone(), text.as_bytes().to_vec()),
    };
    match dns_zone::load_zone(&bytes, &name, &origin, &mut FsLoader) {
        Ok((zone, warnings)) => Ok((zone, warnings.iter().map(ToString::to_string).collect())),
        Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
    }
}

/// Loads a whole zone set; any error anywhere fails the whole set.
pub fn load_catalog(zones: &[(String, ZoneSource)]) -> Result<Catalog, Vec<String>> {
    let mut cat = Catalog::new();
    let mut errors = Vec::new();
    for (origin, src) in zones {
        match load_zone(origin, src) {
            Ok((zone, warnings)) => {
                for w in warnings {
                    warn!("{w}");
                }
                info!(zone = %zone.origin(), serial = zone.serial().unwrap_or(0), records = zone.record_count(), "zone loaded");
                cat.insert(zone);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(cat)
    } else {
        Err(errors)
    }
}

/// The responder in use, swapped atomically on reload. Workers keep their
/// own `Arc` and only take the lock when the generation changes.
struct Shared {
    generation: AtomicU64,
    current: RwLock<Arc<Responder>>,
}

impl Shared {
    fn get(&self) -> Arc<Responder> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn swap(&self, r: Responder) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(r),
            Err(p) => *p.into_inner() = Arc::new(r),
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

struct Cached {
    generation: u64,
    responder: Arc<Responder>,
}

impl Cached {
    fn new(shared: &Shared) -> Self {
        Cached {
            generation: shared.generation.load(Ordering::Acquire),
            responder: shared.get(),
        }
    }

    #[inline]
    fn refresh(&mut self, shared: &Shared) -> &Responder {
        let g = shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.responder = shared.get();
        }
        &self.responder
    }
}

/// Loads the configured zones, binds every address and answers until
/// `shutdown` completes (SIGHUP reloads the zones meanwhile).
pub async fn run(
    config: DnsdConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    Server::bind(config).await?.serve(shutdown).await
}

/// A bound server, ready to [`serve`](Server::serve).
pub struct Server {
    config: DnsdConfig,
    sources: Vec<(String, ZoneSource)>,
    shared: Arc<Shared>,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
}

impl Server {
    /// Loads the configured zones and binds every address.
    pub async fn bind(config: DnsdConfig) -> Result<Server, Error> {
        let sources = config
            .zones
            .iter()
            .map(|z| (z.origin.clone(), ZoneSource::File(z.file.clone())))
            .collect();
        Self::bind_with(config, sources).await
    }

    /// Like [`bind`](Server::bind) with explicit zone sources (files or text).
    pub async fn bind_with(
        config: DnsdConfig,
        sources: Vec<(String, ZoneSource)>,
    ) -> Result<Server, Error> {
        let rcfg = config.responder_config()?;
        let catalog = load_catalog(&sources).map_err(Error::Zones)?;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            current: RwLock::new(Arc::new(Responder::new(Arc::new(catalog), rcfg))),
        });
        let workers = config.worker_count();
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for &addr in &config.listen {
            // The first socket fixes the port (useful with port 0); the
            // others share it through SO_REUSEPORT, one per worker.
            let first = bind_udp(addr)?;
            let bound = first.local_addr()?;
            udp.push(first);
            for _ in 1..workers {
                udp.push(bind_udp(bound)?);
            }
            tcp.push(bind_tcp(bound)?);
            addrs.push(bound);
        }
        Ok(Server {
            config,
            sources,
            shared,
            udp,
            tcp,
            addrs,
        })
    }

    /// The bound addresses (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle that reloads the zones (as SIGHUP does).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
            sources: self.sources.clone(),
            config: self.config.clone(),
        }
    }

    /// Answers until `shutdown` completes. SIGHUP reloads the zones.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let query_log = self.config.query_log;
        // UDP: one OS thread per socket doing blocking receive/answer/send,
        // as NSD's server processes do: two system calls per query and no
        // task wake-ups in between.
        let udp_stop = Arc::new(AtomicBool::new(false));
        let mut udp_threads = Vec::new();
        for sock in self.udp {
            sock.set_nonblocking(false)?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let shared = self.shared.clone();
            let stop = udp_stop.clone();
            udp_threads.push(
                std::thread::Builder::new()
                    .name("dnsd-udp".into())
                    .spawn(move || udp_worker(sock, shared, stop, query_log))?,
            );
        }
        let limit = Arc::new(Semaphore::new(self.config.tcp_max_connections.max(1)));
        let idle = Duration::from_secs(self.config.tcp_idle_timeout_secs.max(1));
        for l in self.tcp {
            let l = TcpListener::from_std(l)?;
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            tasks.spawn(tcp_acceptor(
                l,
                shared,
                stop,
                limit.clone(),
                idle,
                query_log,
            ));
        }
        let reloader = Reloader {
            shared: self.shared.clone(),
            sources: self.sources.clone(),
            config: self.config.clone(),
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        info!(addrs = ?self.addrs, "dnsd serving");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = hup.recv() => {
                    info!("SIGHUP: reloading zones");
                    // Parsing is CPU work: keep it off the answering tasks.
                    let r = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                }
            }
        }
        let _ = stop_tx.send(true);
        udp_stop.store(true, Ordering::Release);
        while tasks.join_next().await.is_some() {}
        let _ = tokio::task::spawn_blocking(move || {
            for t in udp_threads {
                let _ = t.join();
            }
        })
        .await;
        info!("dnsd stopped");
        Ok(())
    }
}

/// Reloads zones into a running server.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    sources: Vec<(String, ZoneSource)>,
    config: DnsdConfig,
}

impl Reloader {
    /// Parses every zone again; swaps them in only if all load. Errors are
    /// logged (file:line:column) and returned; the old zones keep serving.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let rcfg = self
            .config
            .responder_config()
            .map_err(|e| vec![e.to_string()])?;
        match load_catalog(&self.sources) {
            Ok(cat) => {
                self.shared.swap(Responder::new(Arc::new(cat), rcfg));
                info!("reload complete");
                Ok(())
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                error!("reload failed; still serving the previous zones");
                Err(errors)
            }
        }
    }
}

/// The error of a failed bind, naming what could not be bound.
fn cannot_listen(proto: &str, addr: SocketAddr) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("cannot listen on {addr} ({proto}): {e}"))
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp_socket(addr).map_err(cannot_listen("UDP", addr))
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp_socket(addr).map_err(cannot_listen("TCP", addr))
}

fn bind_udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts of queries should queue, not drop.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn bind_tcp_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// `qname qtype` of a query, for the query log.
fn describe(query: &[u8]) -> String {
    let q = query.get(12..).unwrap_or_default();
    let mut p = 0usize;
    while let Some(&l) = q.get(p) {
        if l == 0 || l & 0xc0 != 0 {
            break;
        }
        p += 1 + usize::from(l);
    }
    let name = q.get(..p + 1).and_then(|w| Name::from_wire(w).ok());
    let qtype = q
        .get(p + 1..p + 3)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    match (name, qtype) {
        (Some(n), Some(t)) => format!("{n} {}", dns_zone::types::type_to_string(t)),
        _ => "(unparsable)".to_string(),
    }
}

fn log_query(client: SocketAddr, proto: &str, query: &[u8], out: &[u8]) {
    let rcode = out.get(3).map_or(0, |b| b & 0xf);
    info!(target: "dnsd::query", %client, proto, q = %describe(query), rcode, size = out.len(), "query");
}

fn udp_worker(
    sock: std::net::UdpSocket,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    query_log: bool,
) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut cache = Cached::new(&shared);
    let mut batch = mmsg::Batch::new();
    let mut outs: Vec<Vec<u8>> = (0..mmsg::BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut replies: Vec<usize> = Vec::with_capacity(mmsg::BATCH);
    while !stop.load(Ordering::Acquire) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            // The read timeout lets the loop notice shutdown.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                debug!("udp recv: {e}");
                continue;
            }
        };
        let responder = cache.refresh(&shared);
        replies.clear();
        for (i, out) in outs.iter_mut().enumerate().take(n) {
            let Some((query, peer)) = batch.packet(i) else {
                continue;
            };
            match responder.handle(query, Transport::Udp, peer.ip(), out) {
                Outcome::Reply => {
                    if query_log {
                        log_query(peer, "udp", query, out);
                    }
                    replies.push(i);
                }
                Outcome::Drop => {
                    if query_log {
                        info!(target: "dnsd::query", client = %peer, proto = "udp", size = query.len(), "dropped malformed packet");
                    }
                }
                // The responder never starts a transfer over UDP.
                Outcome::Transfer(_) => {}
            }
        }
        batch.send(fd, &replies, &outs);
    }
    drop(sock);
}

async fn tcp_acceptor(
    l: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
    idle: Duration,
    query_log: bool,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!("tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, "TCP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            if let Err(e) = tcp_conn(stream, peer, shared, stop, idle, query_log).await {
                debug!(%peer, "tcp: {e}");
            }
            drop(permit);
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// RFC 7766: length-prefixed messages, several per connection, answered in
/// order; responses to pipelined queries are flushed together.
async fn tcp_conn(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
    query_log: bool,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(16 * 1024, r);
    let mut w = BufWriter::with_capacity(16 * 1024, w);
    let mut cache = Cached::new(&shared);
    let mut msg = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let client: IpAddr = peer.ip();
    loop {
        let mut len = [0u8; 2];
        let read = async {
            r.read_exact(&mut len).await?;
            msg.resize(usize::from(u16::from_be_bytes(len)), 0);
            r.read_exact(&mut msg).await
        };
        tokio::select! {
            res = tokio::time::timeout(idle, read) => match res {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    debug!(%peer, "tcp idle timeout");
                    return Ok(());
                }
            },
            _ = stop.changed() => return Ok(()),
        }
        let responder = cache.refresh(&shared);
        match responder.handle(&msg, Transport::Tcp, client, &mut out) {
            Outcome::Reply => {
                if query_log {
                    log_query(peer, "tcp", &msg, &out);
                }
                write_framed(&mut w, &out).await?;
            }
            Outcome::Drop => return Ok(()),
            Outcome::Transfer(t) => {
                info!(%peer, zone = %t.zone().origin(), "AXFR");
                // Encoding a large zone is CPU work: off the async threads.
                let msgs = tokio::task::spawn_blocking(move || t.messages())
                    .await
                    .map_err(io::Error::other)?;
                for m in &msgs {
                    write_framed(&mut w, m).await?;
                }
            }
        }
        // Flush once no further pipelined query is already buffered.
        if r.buffer().len() < 2 {
            w.flush().await?;
        }
    }
}

async fn write_framed<W: AsyncWriteExt + Unpin>(w: &mut W, m: &[u8]) -> io::Result<()> {
    let len = u16::try_from(m.len()).map_err(|_| io::Error::other("message over 65535 bytes"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(m).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

    #[test]
    fn config_section_and_unknown_keys() {
        let text = r#"
[global]
hostname = "mail"
[smtpd]
listen = ["127.0.0.1:2525"]
whatever = 1
[dnsd]
listen = ["127.0.0.1:5300", "[::1]:5300"]
zones = [{ origin = "csuvnetwork.com", file = "zones/csuvnetwork.com.zone" }]
udp_payload_max = 1400
query_log = true
"#;
        let c = DnsdConfig::from_toml_str(text).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.udp_payload_max, 1400);
        assert_eq!(c.tcp_max_connections, 256);
        assert!(c.query_log);
        assert_eq!(c.zones[0].origin, "csuvnetwork.com");
        // Unknown key inside [dnsd]: an error that names the line.
        let e = DnsdConfig::from_toml_str("[smtpd]\nx = 1\n[dnsd]\nlisten = []\nbogus = 3\n")
            .unwrap_err();
        assert!(e.contains("line 5") && e.contains("bogus"), "{e}");
        let e = DnsdConfig::from_toml_str(
            "[dnsd]\nzones = [{ origin = \"a\", file = \"b\", x = 1 }]\n",
        )
        .unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        // No [dnsd] section: defaults.
        assert_eq!(
            DnsdConfig::from_toml_str("[pop3d]\n").unwrap(),
            DnsdConfig::default()
        );
    }

    #[test]
    fn config_file_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mail.toml");
        std::fs::write(
            &p,
            "[dnsd]\nzones = [{ origin = \"x\", file = \"z/x.zone\" }]\n",
        )
        .unwrap();
        let c = DnsdConfig::from_file(&p).unwrap();
        assert_eq!(c.zones[0].file, dir.path().join("z/x.zone"));
        std::fs::write(&p, "[dnsd]\nlisten = \"nope\"\n").unwrap();
        assert!(matches!(
            DnsdConfig::from_file(&p),
            Err(Error::Config { .. })
        ));
        let bad = DnsdConfig {
            axfr_allow: vec!["10.0.0.0/99".into()],
            ..DnsdConfig::default()
        };
        assert!(bad.responder_config().is_err());
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(42);
        m.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii(name).unwrap(),
            t,
        ));
        m.to_bytes().unwrap()
    }

    fn lab_sources() -> Vec<(String, ZoneSource)> {
        vec![(
            LAB_ORIGIN.to_string(),
            ZoneSource::Text {
                name: "lab".into(),
                text: LAB_ZONE.into(),
            },
        )]
    }

    #[test]
    fn lab_zone_constant_is_the_file() {
        assert!(LAB_ZONE.contains("@      IN MX   10    mail"));
        assert!(load_catalog(&lab_sources()).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_udp_and_tcp_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let zf = dir.path().join("lab.zone");
        std::fs::write(&zf, LAB_ZONE).unwrap();
        let config = DnsdConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 2,
            zones: vec![ZoneConfig {
                origin: "csuvnetwork.com".into(),
                file: zf.clone(),
            }],
            ..DnsdConfig::default()
        };
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addrs()[0];
        let reloader = server.reloader();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));

        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ask_udp = |q: Vec<u8>| {
            let udp = &udp;
            async move {
                udp.send_to(&q, addr).await.unwrap();
                let mut buf = vec![0u8; 2048];
                let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                Message::from_vec(&buf[..n]).unwrap()
            }
        };
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(
            m.answers()[0].data(),
            &RData::A("192.168.3.10".parse().unwrap())
        );

        // TCP: two pipelined queries on one connection, answered in order.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut both = Vec::new();
        for (id, name) in [(1u16, "csuvnetwork.com."), (2, "nosuch.csuvnetwork.com.")] {
            let mut q = query(name, RecordType::MX);
            q[..2].copy_from_slice(&id.to_be_bytes());
            both.extend_from_slice(&(q.len() as u16).to_be_bytes());
            both.extend_from_slice(&q);
        }
        s.write_all(&both).await.unwrap();
        for (id, rc) in [(1u16, ResponseCode::NoError), (2, ResponseCode::NXDomain)] {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf).unwrap();
            assert_eq!((m.id(), m.response_code()), (id, rc));
        }

        // Reload: a broken file keeps the old zone; a good one is swapped in.
        std::fs::write(&zf, LAB_ZONE.replace("192.168.3.10", "192.168.3.300")).unwrap();
        let errs = reloader.reload().unwrap_err();
        assert!(errs[0].contains("lab.zone:12:"), "{errs:?}");
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(
            m.answers()[0].data(),
            &RData::A("192.168.3.10".parse().unwrap())
        );
        std::fs::write(
            &zf,
            LAB_ZONE.replace("mail   IN A    192.168.3.10", "mail   IN A    192.168.3.11"),
        )
        .unwrap();
        reloader.reload().unwrap();
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(
            m.answers()[0].data(),
            &RData::A("192.168.3.11".parse().unwrap())
        );

        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bad_zone_fails_to_bind_with_positions() {
        let config = DnsdConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..DnsdConfig::default()
        };
        let sources = vec![(
            "example.com".to_string(),
            ZoneSource::Text {
                name: "mem".into(),
                text: "$TTL 1h\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 1.2.3.4.5\n".into(),
            },
        )];
        match Server::bind_with(config, sources).await {
            Err(Error::Zones(e)) => {
                assert_eq!(e, vec!["mem:4:6: expected an IPv4 address".to_string()])
            }
            other => panic!("unexpected: {:?}", other.map(|_| ())),
        }
    }
}
