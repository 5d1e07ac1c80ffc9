//! `dnsd`: the mail system's authoritative DNS server.
//!
//! A thin tokio host around [`dns_zone`]: it reads zone files, answers
//! over UDP and TCP (one UDP socket per worker with `SO_REUSEPORT`, TCP
//! with an idle timeout, a connection limit and pipelining) and transfers
//! zones over TCP to allowed addresses. Its settings are the `[dnsd]`
//! section of the shared configuration ([`mail_config::Dnsd`]); like the
//! other daemons it is a [`netkit::Service`]: [`start`] binds and serves,
//! [`Service::reload`] swaps in a new zone set atomically (on any error
//! the old one stays), [`Service::stop`] ends it.
//!
//! ```no_run
//! use netkit::Service;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = mail_config::Config::from_toml_str(
//!     r#"
//!     [dnsd]
//!     listen = ["127.0.0.1:5300"]
//!     zones = [{ origin = "csuvnetwork.com", file = "zones/csuvnetwork.com.zone" }]
//!     "#,
//!     "bins/dnsd".as_ref(),
//! )?;
//! let running = dnsd::start(cfg.clone()).await?;
//! running.reload(cfg)?; // what SIGHUP does: parse the zone files again
//! running.stop().await;
//! # Ok(()) }
//! ```
//!
//! Zones can also come from memory ([`ZoneSource::Text`]), which is how
//! a combined lab runner serves [`LAB_ZONE`] without a file
//! ([`start_with`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

mod mmsg;

use bytes::{Bytes, BytesMut};
use dns_zone::rrl::{self, Action, RateLimiter, RrlConfig};
use dns_zone::tsig;
use dns_zone::{
    rcode, Catalog, CookieCheck, Diff, IncludeLoader, Name, Outcome, Prefix, Responder,
    ResponderConfig, Transport, Zone,
};
use mail_config::{Config, Dnsd, SerialPolicy};
use netkit::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use tracing::{debug, info, warn};

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
    /// Zones did not load; every message is `file:line:column: ...`.
    #[error("zone errors:\n{}", .0.join("\n"))]
    Zones(Vec<String>),
    /// A configuration value the server cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// UDP sockets per address: `workers`, or one per core.
fn worker_count(d: &Dnsd) -> usize {
    if d.workers > 0 {
        d.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The configuration's networks as the responder's prefixes.
fn prefixes(key: &str, nets: &[mail_config::IpNet]) -> Result<Vec<Prefix>, Error> {
    nets.iter()
        .map(|n| {
            Prefix::parse(&n.to_string())
                .ok_or_else(|| Error::Invalid(format!("bad {key} prefix {n}")))
        })
        .collect()
}

fn responder_config(cfg: &Config) -> Result<ResponderConfig, Error> {
    let d = &cfg.dnsd;
    let axfr_allow = prefixes("axfr_allow", &d.axfr_allow)?;
    let tsig_keys = tsig_keys(d)?;
    let mut transfer_keys = Vec::new();
    for z in &d.zones {
        if let Some(k) = &z.key {
            let apex = parse_origin(&z.origin)?.as_wire().to_ascii_lowercase();
            let key = parse_origin(k)?.as_wire().to_ascii_lowercase();
            transfer_keys.push((apex.into(), key.into()));
        }
    }
    let mut notify_allow = Vec::new();
    for z in d.zones.iter().filter(|z| !z.primaries.is_empty()) {
        let apex = parse_origin(&z.origin)?.as_wire().to_ascii_lowercase();
        let from = z
            .primaries
            .iter()
            .filter_map(|p| Prefix::parse(&p.ip().to_string()))
            .collect();
        notify_allow.push((apex.into(), from));
    }
    let text = |hide: bool, v: &str, default: &str| {
        let v = if v.is_empty() { default } else { v };
        (!hide).then(|| v.as_bytes().into())
    };
    Ok(ResponderConfig {
        udp_payload_max: d.udp_payload_max.max(512),
        axfr_allow,
        tsig_keys,
        transfer_keys,
        notify_allow,
        nsid: d
            .nsid_octets()
            .map_err(|e| Error::Invalid(format!("nsid {e}")))?
            .map(Into::into),
        identity: text(d.hide_identity, &d.identity, &cfg.global.hostname),
        version: text(
            d.hide_version,
            &d.version,
            concat!("dnsd ", env!("CARGO_PKG_VERSION")),
        ),
        cookie_secret: if d.answer_cookie {
            Some(
                d.cookie_secret_octets()
                    .map_err(|e| Error::Invalid(format!("cookie_secret {e}")))?
                    .map_or_else(random_cookie_secret, Ok)?,
            )
        } else {
            None
        },
        cookie_secrets_accepted: d
            .cookie_secrets_accepted_octets()
            .map_err(|e| Error::Invalid(format!("cookie_secrets_accepted {e}")))?,
    })
}

/// The Server Cookie secret when none is configured: random, and the same
/// for the life of the process, so a reload does not make the cookies
/// handed out invalid.
fn random_cookie_secret() -> Result<[u8; 16], Error> {
    static SECRET: std::sync::OnceLock<Option<[u8; 16]>> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| {
            let mut s = [0u8; 16];
            getrandom::getrandom(&mut s).ok().map(|()| s)
        })
        .ok_or_else(|| Error::Invalid("no randomness for the cookie secret".into()))
}

/// The `tsig_keys` of `[dnsd]`, decoded.
fn tsig_keys(d: &Dnsd) -> Result<Vec<tsig::Key>, Error> {
    use base64::Engine as _;
    d.tsig_keys
        .iter()
        .map(|k| {
            let bad = |what: &str| Error::Invalid(format!("tsig key {:?}: {what}", k.name));
            let alg =
                tsig::Algorithm::from_name(&k.algorithm).ok_or_else(|| bad("unknown algorithm"))?;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .map_err(|_| bad("secret is not base64"))?;
            Ok(tsig::Key::new(&parse_origin(&k.name)?, alg, &secret))
        })
        .collect()
}

/// The zone's TSIG key, if `[dnsd]` gives it one.
fn zone_key(d: &Dnsd, zone: &Zone) -> Option<tsig::Key> {
    zone_key_at(d, zone.apex_key())
}

fn zone_key_at(d: &Dnsd, apex: &[u8]) -> Option<tsig::Key> {
    let z = d
        .zones
        .iter()
        .find(|z| parse_origin(&z.origin).is_ok_and(|o| o.as_wire().eq_ignore_ascii_case(apex)))?;
    let want = parse_origin(z.key.as_deref()?)
        .ok()?
        .as_wire()
        .to_ascii_lowercase();
    tsig_keys(d)
        .ok()?
        .into_iter()
        .find(|k| k.name_wire() == want.as_slice())
}

/// Seconds since 1970, for TSIG.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response rate limiter `[dnsd]` asks for (`None`: RRL off).
fn rate_limiter(d: &Dnsd) -> Result<Option<RateLimiter>, Error> {
    Ok(RateLimiter::new(RrlConfig {
        responses_per_second: d.rrl_responses_per_second,
        window_secs: d.rrl_window_secs,
        slip: d.rrl_slip,
        ipv4_prefix: d.rrl_ipv4_prefix,
        ipv6_prefix: d.rrl_ipv6_prefix,
        table_size: d.rrl_table_size,
        exempt: prefixes("rrl_exempt_clients", &d.rrl_exempt_clients)?,
        log_only: d.rrl_log_only,
    }))
}

/// The zone files `[dnsd]` lists (a secondary's only once its on-disk
/// copy exists: before its first transfer it has nothing to serve).
pub fn configured_zones(d: &Dnsd) -> Vec<(String, ZoneSource)> {
    d.zones
        .iter()
        .filter(|z| z.primaries.is_empty() || z.file.exists())
        .map(|z| (z.origin.clone(), ZoneSource::File(z.file.clone())))
        .collect()
}

/// Whether queries are logged: `query_log`, or transcripts asked for
/// (`--transcript`, `transcript = true`), DNS's form of the dialogue.
fn logs_queries(cfg: &Config) -> bool {
    cfg.dnsd.query_log || cfg.global.transcript
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
    load_catalog_over(zones, None, 0, SerialPolicy::Keep).map(|(c, _)| c)
}

/// Loads a zone set as a new version of `old` (a reload): a zone whose
/// records did not change keeps its loaded version; one that changed gets
/// the difference appended to its history (at most `history` kept, for
/// IXFR). A zone whose content changed while its serial did not is an
/// error under `SerialPolicy::Keep`, as in BIND (secondaries would never
/// see the change); the other policies raise the served serial. Returns
/// the catalog and the zones whose serial changed (or all, without `old`).
pub fn load_catalog_over(
    zones: &[(String, ZoneSource)],
    old: Option<&Catalog>,
    history: usize,
    policy: SerialPolicy,
) -> Result<(Catalog, Vec<Arc<Zone>>), Vec<String>> {
    let mut cat = Catalog::new();
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    for (origin, src) in zones {
        let (mut zone, warnings) = match load_zone(origin, src) {
            Ok(z) => z,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        for w in warnings {
            warn!("{w}");
        }
        let serial = zone.serial().unwrap_or(0);
        let previous = old.and_then(|c| c.get(zone.apex_key()));
        if let Some(prev) = previous {
            let old_serial = prev.serial().unwrap_or(0);
            let mut diff = Diff::between(prev, &zone);
            let managed = policy != SerialPolicy::Keep;
            // Under a serial policy the served serial may be ahead of the
            // file's: the same records are no change.
            if diff.is_empty() || (managed && diff.only_serial_differs()) {
                cat.insert_shared(prev.clone());
                continue;
            }
            let mut serial = serial;
            if managed && !dns_zone::ixfr::serial_gt(serial, old_serial) {
                serial = match policy {
                    SerialPolicy::Unixtime => {
                        let now = u32::try_from(unix_now()).unwrap_or(u32::MAX);
                        if dns_zone::ixfr::serial_gt(now, old_serial) {
                            now
                        } else {
                            old_serial.wrapping_add(1)
                        }
                    }
                    _ => old_serial.wrapping_add(1),
                };
                info!(zone = %zone.origin(), old_serial, serial, "records changed: serial raised by serial_policy");
                zone.set_serial(serial);
                diff = Diff::between(prev, &zone);
            }
            if serial == old_serial {
                errors.push(format!(
                    "zone {}: the records changed but the serial is still {serial}; \
                     not reloaded (raise the SOA serial so secondaries see the change)",
                    zone.origin()
                ));
                continue;
            }
            if !dns_zone::ixfr::serial_gt(serial, old_serial) {
                warn!(zone = %zone.origin(), old_serial, serial, "serial went backwards: secondaries keep the old version");
            }
            let (deleted, added) = diff.len();
            let mut hist: Vec<Arc<Diff>> = prev.history().to_vec();
            hist.push(Arc::new(diff));
            let skip = hist.len().saturating_sub(history);
            zone.set_history(hist.split_off(skip));
            info!(zone = %zone.origin(), old_serial, serial, deleted, added, records = zone.record_count(), "zone reloaded");
        } else {
            info!(zone = %zone.origin(), serial, records = zone.record_count(), "zone loaded");
        }
        let zone = Arc::new(zone);
        changed.push(zone.clone());
        cat.insert_shared(zone);
    }
    if errors.is_empty() {
        Ok((cat, changed))
    } else {
        Err(errors)
    }
}

/// How long one SOA check or transfer from a primary may take.
const SOA_TIMEOUT: Duration = Duration::from_secs(10);
const XFR_TIMEOUT: Duration = Duration::from_secs(120);

/// A random query ID (RFC 5452 9.2): RandomState is seeded from the
/// system's random source.
fn random_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_now());
    h.finish() as u16
}

async fn send_frame(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed).await
}

async fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Sends a query, signed with `key` if there is one (RFC 8945), and
/// returns what checks the answer's signatures.
async fn send_query(
    s: &mut TcpStream,
    mut q: Vec<u8>,
    key: Option<&tsig::Key>,
) -> Result<Option<tsig::Verifier>, String> {
    let v = key.map(|k| {
        let mac = tsig::sign_request(&mut q, k, unix_now());
        tsig::Verifier::new(k.clone(), mac)
    });
    send_frame(s, &q).await.map_err(|e| e.to_string())?;
    Ok(v)
}

/// Checks a message of the answer when the query was signed.
fn check_tsig(v: &mut Option<tsig::Verifier>, m: &[u8]) -> Result<(), String> {
    match v {
        Some(v) => v.verify(m, unix_now()).map_err(|e| format!("TSIG: {e}")),
        None => Ok(()),
    }
}

/// A transfer must end with a signed message.
fn tsig_complete(v: &Option<tsig::Verifier>) -> Result<(), String> {
    match v {
        Some(v) if !v.complete() => Err("TSIG: the last message is unsigned".into()),
        _ => Ok(()),
    }
}

fn join_errors(errs: &[dns_zone::ZoneError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The primary's serial (SOA query over TCP).
async fn primary_serial(
    origin: &Name,
    primary: SocketAddr,
    key: Option<&tsig::Key>,
) -> Result<u32, String> {
    let id = random_id();
    let q = dns_zone::secondary::query(origin, dns_zone::types::rtype::SOA, id);
    let mut s = TcpStream::connect(primary)
        .await
        .map_err(|e| e.to_string())?;
    let mut v = send_query(&mut s, q, key).await?;
    let a = read_frame(&mut s).await.map_err(|e| e.to_string())?;
    check_tsig(&mut v, &a)?;
    dns_zone::secondary::soa_serial(&a, id).map_err(|e| e.to_string())
}

/// Sends a transfer query `q` to `primary` and feeds every message of the
/// answer, its TSIG checked, to `feed` until it says the transfer is
/// complete.
async fn transfer(
    primary: SocketAddr,
    q: Vec<u8>,
    key: Option<&tsig::Key>,
    mut feed: impl FnMut(&[u8]) -> Result<bool, dns_zone::secondary::XfrError>,
) -> Result<(), String> {
    let mut s = TcpStream::connect(primary)
        .await
        .map_err(|e| e.to_string())?;
    let mut v = send_query(&mut s, q, key).await?;
    loop {
        let m = read_frame(&mut s)
            .await
            .map_err(|e| format!("transfer cut: {e}"))?;
        check_tsig(&mut v, &m)?;
        if feed(&m).map_err(|e| e.to_string())? {
            break;
        }
    }
    tsig_complete(&v)
}

/// A whole zone by AXFR; only a complete, valid transfer gives a zone.
async fn axfr(origin: &Name, primary: SocketAddr, key: Option<&tsig::Key>) -> Result<Zone, String> {
    let id = random_id();
    let q = dns_zone::secondary::query(origin, dns_zone::types::rtype::AXFR, id);
    let mut reader = dns_zone::secondary::AxfrReader::new(origin, id);
    transfer(primary, q, key, |m| reader.feed(m)).await?;
    reader.finish().map(|(z, _)| z).map_err(|e| join_errors(&e))
}

/// The differences since `ours` by IXFR (RFC 1995), or the whole zone if
/// the primary sends it AXFR-style; only a complete answer gives a zone.
/// Returns the zone and how it came.
async fn ixfr(
    ours: &Zone,
    primary: SocketAddr,
    key: Option<&tsig::Key>,
) -> Result<(Zone, &'static str), String> {
    let id = random_id();
    let q = dns_zone::secondary::ixfr_query(ours, id);
    let mut reader = dns_zone::secondary::IxfrReader::new(ours, id);
    transfer(primary, q, key, |m| reader.feed(m)).await?;
    let how = if reader.incremental() {
        "IXFR"
    } else {
        "AXFR-style IXFR"
    };
    reader
        .finish()
        .map(|(z, _)| (z, how))
        .map_err(|e| join_errors(&e))
}

/// Checks the primaries in order: `Ok(None)` when the first that answers
/// is not newer than `ours`, `Ok(Some(zone))` after a transfer (IXFR when
/// there is a version to start from, else AXFR; an IXFR that fails is
/// followed by an AXFR). With a zone key every query is signed and every
/// answer's signature checked.
async fn refresh_once(
    origin: &Name,
    primaries: &[SocketAddr],
    ours: Option<&Zone>,
    key: Option<&tsig::Key>,
) -> Result<Option<(Zone, &'static str)>, String> {
    let serial = ours.and_then(Zone::serial);
    let mut errors = Vec::new();
    for &p in primaries {
        let remote = match tokio::time::timeout(SOA_TIMEOUT, primary_serial(origin, p, key)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                errors.push(format!("{p}: {e}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("{p}: SOA query timed out"));
                continue;
            }
        };
        if serial.is_some_and(|s| !dns_zone::ixfr::serial_gt(remote, s)) {
            return Ok(None);
        }
        if let Some(ours) = ours {
            match tokio::time::timeout(XFR_TIMEOUT, ixfr(ours, p, key)).await {
                Ok(Ok(z)) => return Ok(Some(z)),
                Ok(Err(e)) => warn!(zone = %origin, primary = %p, "IXFR failed, trying AXFR: {e}"),
                Err(_) => warn!(zone = %origin, primary = %p, "IXFR timed out, trying AXFR"),
            }
        }
        match tokio::time::timeout(XFR_TIMEOUT, axfr(origin, p, key)).await {
            Ok(Ok(z)) => return Ok(Some((z, "AXFR"))),
            Ok(Err(e)) => errors.push(format!("{p}: {e}")),
            Err(_) => errors.push(format!("{p}: transfer timed out")),
        }
    }
    Err(errors.join("; "))
}

/// Writes the on-disk copy whole or not at all (a temporary file renamed
/// over the old copy).
fn write_copy(file: &Path, zone: &Zone) -> io::Result<()> {
    let tmp = file.with_extension("tmp-xfr");
    std::fs::write(&tmp, dns_zone::secondary::to_zone_file(zone))?;
    std::fs::rename(&tmp, file)
}

/// A secondary zone (RFC 1034 4.3.5): refreshed at start, on NOTIFY and
/// every SOA refresh (retry after a failure); past expire without a
/// successful refresh it answers SERVFAIL until one succeeds.
async fn secondary_loop(
    origin: Name,
    file: PathBuf,
    primaries: Vec<SocketAddr>,
    key: Option<tsig::Key>,
    shared: Arc<Shared>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let apex: Vec<u8> = origin.as_wire().to_ascii_lowercase();
    // The copy loaded at start is as fresh as the file.
    let mut last_ok: Option<Instant> = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .and_then(|age| Instant::now().checked_sub(age));
    loop {
        let current = shared.get().catalog().get(&apex).cloned();
        let serial = current.as_ref().and_then(|z| z.serial());
        let ok = match refresh_once(&origin, &primaries, current.as_deref(), key.as_ref()).await {
            Ok(Some((zone, how))) => {
                let new_serial = zone.serial().unwrap_or(0);
                if let Err(e) = write_copy(&file, &zone) {
                    warn!(zone = %origin, file = %file.display(), "cannot write the zone copy: {e}");
                }
                info!(zone = %origin, old_serial = ?serial, serial = new_serial, records = zone.record_count(), "transferred by {how}");
                shared.install(zone);
                true
            }
            Ok(None) => {
                if let Some(z) = &current {
                    if z.is_expired() {
                        info!(zone = %origin, "primary answers again; serving");
                    }
                    z.set_expired(false);
                }
                true
            }
            Err(e) => {
                warn!(zone = %origin, "refresh failed: {e}");
                false
            }
        };
        if ok {
            last_ok = Some(Instant::now());
        }
        let now_zone = shared.get().catalog().get(&apex).cloned();
        let timers = now_zone
            .as_deref()
            .and_then(dns_zone::secondary::soa_timers);
        let (refresh, retry, expire) = timers.unwrap_or((5, 5, u32::MAX));
        let mut wait = Duration::from_secs(u64::from(if ok { refresh } else { retry }).max(1));
        if let (Some(z), Some(t)) = (now_zone, last_ok) {
            let expire = Duration::from_secs(u64::from(expire));
            match expire.checked_sub(t.elapsed()) {
                Some(left) => wait = wait.min(left.max(Duration::from_millis(100))),
                None => {
                    if !z.is_expired() {
                        warn!(zone = %origin, "expired: no successful refresh within the SOA expire; answering SERVFAIL");
                        z.set_expired(true);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => debug!(zone = %origin, "refresh on NOTIFY"),
            _ = stop.changed() => return,
        }
    }
}

/// NOTIFY attempts per secondary (RFC 1996 3.6: retransmit, with an
/// increasing interval, until answered or this many have gone out).
const NOTIFY_ATTEMPTS: u32 = 6;

/// Sends each changed zone's NOTIFY to the secondaries `[dnsd]` lists for
/// it, one thread per secondary retrying until acknowledged (every
/// secondary notified at once; the waits are short and bounded).
fn notify_secondaries(d: &Dnsd, changed: &[Arc<Zone>], stop: &Arc<AtomicBool>) {
    for zone in changed {
        let targets = d.zones.iter().filter(|z| {
            parse_origin(&z.origin).is_ok_and(|o| o.as_wire().eq_ignore_ascii_case(zone.apex_key()))
        });
        let key = zone_key(d, zone);
        for target in targets.flat_map(|z| z.notify.iter().copied()) {
            let zone = zone.clone();
            let stop = stop.clone();
            let key = key.clone();
            let spawned = std::thread::Builder::new()
                .name("dnsd-notify".into())
                .spawn(move || notify_one(&zone, key.as_ref(), target, &stop));
            if let Err(e) = spawned {
                warn!(%target, "cannot start NOTIFY: {e}");
            }
        }
    }
}

fn notify_one(zone: &Zone, key: Option<&tsig::Key>, target: SocketAddr, stop: &AtomicBool) {
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match std::net::UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            warn!(%target, "NOTIFY socket: {e}");
            return;
        }
    };
    // An unpredictable ID (RFC 5452 9.2): RandomState is seeded from the
    // system's random source.
    let id = {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        target.hash(&mut h);
        Instant::now().hash(&mut h);
        h.finish() as u16
    };
    let mut msg = dns_zone::ixfr::notify_message(zone, id);
    if let Some(key) = key {
        // RFC 8945: a secondary that wants the key checks it; its signed
        // answer is taken as the acknowledgement without checking it.
        tsig::sign_request(&mut msg, key, unix_now());
    }
    let serial = zone.serial().unwrap_or(0);
    let mut wait = Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    for attempt in 1..=NOTIFY_ATTEMPTS {
        if stop.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = sock.send_to(&msg, target) {
            debug!(%target, "NOTIFY send: {e}");
        }
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero()
                || sock
                    .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                    .is_err()
            {
                break;
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if from != target {
                continue;
            }
            if let Some(rc) = buf
                .get(..n)
                .and_then(|m| dns_zone::ixfr::is_notify_response(m, id))
            {
                if rc == rcode::NOERROR {
                    info!(zone = %zone.origin(), serial, %target, attempt, "NOTIFY acknowledged");
                } else {
                    warn!(zone = %zone.origin(), serial, %target, rcode = rc, "NOTIFY refused by the secondary");
                }
                return;
            }
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    warn!(zone = %zone.origin(), serial, %target, attempts = NOTIFY_ATTEMPTS, "NOTIFY not acknowledged; giving up");
}

/// What the answering threads and tasks share: the responder and the rate
/// limiter, swapped atomically on reload (workers keep their own `Arc`s
/// and only take the locks when the generation changes), and the
/// query-log switch.
struct Shared {
    /// Secondary zones (lowercased apex) and what wakes their refresh.
    secondaries: Vec<(Box<[u8]>, Arc<tokio::sync::Notify>)>,
    generation: AtomicU64,
    current: RwLock<Arc<Responder>>,
    query_log: AtomicBool,
    /// Response rate limiting of UDP answers, shared by every worker so
    /// that a client's queries count wherever `SO_REUSEPORT` sends them.
    rrl: RwLock<Option<Arc<RateLimiter>>>,
    /// The limiter's clock starts here.
    epoch: Instant,
}

impl Shared {
    fn get(&self) -> Arc<Responder> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn limiter(&self) -> Option<Arc<RateLimiter>> {
        match self.rrl.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs a new responder and, when `rrl` is `Some`, a new limiter
    /// (`None` keeps the old one and the accounts in it).
    fn swap(&self, r: Responder, rrl: Option<Option<RateLimiter>>) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(r),
            Err(p) => *p.into_inner() = Arc::new(r),
        }
        if let Some(l) = rrl {
            match self.rrl.write() {
                Ok(mut g) => *g = l.map(Arc::new),
                Err(p) => *p.into_inner() = l.map(Arc::new),
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn query_log(&self) -> bool {
        self.query_log.load(Ordering::Relaxed)
    }

    /// A primary's NOTIFY came for `apex`: refresh now.
    fn wake(&self, apex: &[u8]) {
        if let Some((_, n)) = self.secondaries.iter().find(|(a, _)| **a == *apex) {
            n.notify_one();
        }
    }

    /// Serves a newly transferred version of a secondary zone.
    fn install(&self, zone: Zone) {
        let r = self.get();
        let cat = r.catalog().with_zone(Arc::new(zone));
        self.swap(Responder::new(Arc::new(cat), r.config().clone()), None);
    }
}

struct Cached {
    generation: u64,
    responder: Arc<Responder>,
    rrl: Option<Arc<RateLimiter>>,
}

impl Cached {
    fn new(shared: &Shared) -> Self {
        Cached {
            generation: shared.generation.load(Ordering::Acquire),
            responder: shared.get(),
            rrl: shared.limiter(),
        }
    }

    #[inline]
    fn refresh(&mut self, shared: &Shared) -> (&Responder, Option<&RateLimiter>) {
        let g = shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.responder = shared.get();
            self.rrl = shared.limiter();
        }
        (&self.responder, self.rrl.as_deref())
    }
}

/// Load the zones `[dnsd]` lists, bind every address and start answering.
/// A configuration without zones is refused.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    start_with(cfg, Vec::new()).await
}

/// Like [`start`], serving `default_zones` whenever the configuration
/// lists none (at start and on every reload): how the lab runner serves
/// [`LAB_ZONE`] from memory.
pub async fn start_with(
    cfg: Config,
    default_zones: Vec<(String, ZoneSource)>,
) -> Result<Running, Error> {
    let d = &cfg.dnsd;
    let sources = sources_for(d, &default_zones)?;
    let rcfg = responder_config(&cfg)?;
    let (catalog, loaded) =
        load_catalog_over(&sources, None, d.ixfr_history, d.serial_policy).map_err(Error::Zones)?;
    let secondaries: Vec<(Box<[u8]>, Arc<tokio::sync::Notify>)> = d
        .zones
        .iter()
        .filter(|z| !z.primaries.is_empty())
        .filter_map(|z| parse_origin(&z.origin).ok())
        .map(|o| {
            (
                o.as_wire().to_ascii_lowercase().into(),
                Arc::new(tokio::sync::Notify::new()),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        secondaries,
        generation: AtomicU64::new(0),
        current: RwLock::new(Arc::new(Responder::new(Arc::new(catalog), rcfg))),
        query_log: AtomicBool::new(logs_queries(&cfg)),
        rrl: RwLock::new(rate_limiter(d)?.map(Arc::new)),
        epoch: Instant::now(),
    });
    let workers = worker_count(d);
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut addrs = Vec::new();
    for &addr in &d.listen {
        // The first socket fixes the port (useful with port 0); the
        // others share it through SO_REUSEPORT, one per worker. With port
        // 0 the port UDP got may be taken for TCP (a client connection's
        // port, or one in TIME-WAIT): then another port is tried.
        let mut tries = 0;
        let (first, bound, listener) = loop {
            let first = bind_udp(addr)?;
            let bound = first.local_addr()?;
            match bind_tcp(bound) {
                Ok(l) => break (first, bound, l),
                Err(e)
                    if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && tries < 32 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        udp.push(first);
        for _ in 1..workers {
            udp.push(bind_udp(bound)?);
        }
        tcp.push(listener);
        addrs.push(bound);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // UDP: one OS thread per socket doing blocking receive/answer/send,
    // as NSD's server processes do: two system calls per query and no
    // task wake-ups in between.
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    for sock in udp {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let shared = shared.clone();
        let stop = udp_stop.clone();
        udp_threads.push(
            std::thread::Builder::new()
                .name("dnsd-udp".into())
                .spawn(move || udp_worker(sock, shared, stop))?,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(Semaphore::new(d.tcp_max_connections.max(1)));
    let idle = Duration::from_secs(d.tcp_idle_timeout_secs.max(1));
    for l in tcp {
        let l = TcpListener::from_std(l)?;
        tasks.spawn(tcp_acceptor(
            l,
            shared.clone(),
            stop_rx.clone(),
            limit.clone(),
            idle,
        ));
    }
    for z in d.zones.iter().filter(|z| !z.primaries.is_empty()) {
        let origin = parse_origin(&z.origin)?;
        let wake = shared
            .secondaries
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(origin.as_wire()))
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let key = zone_key_at(d, &origin.as_wire().to_ascii_lowercase());
        tasks.spawn(secondary_loop(
            origin,
            z.file.clone(),
            z.primaries.clone(),
            key,
            shared.clone(),
            wake,
            stop_rx.clone(),
        ));
    }
    info!(addrs = ?addrs, "dnsd serving");
    // RFC 1996 3.7: a primary that starts tells its secondaries.
    notify_secondaries(d, &loaded, &udp_stop);
    Ok(Running {
        applied: std::sync::Mutex::new(cfg.dnsd.clone()),
        started: cfg.dnsd,
        default_zones,
        shared,
        addrs,
        stop_tx,
        udp_stop,
        udp_threads,
        tasks,
    })
}

/// The configured zones, or the defaults when there are none.
fn sources_for(
    d: &Dnsd,
    default_zones: &[(String, ZoneSource)],
) -> Result<Vec<(String, ZoneSource)>, Error> {
    let sources = if d.zones.is_empty() {
        default_zones.to_vec()
    } else {
        configured_zones(d)
    };
    // Secondaries without a copy yet still make a server worth starting.
    if sources.is_empty() && d.zones.iter().all(|z| z.primaries.is_empty()) {
        return Err(Error::Invalid(
            "no zones to serve (add a [dnsd] zones entry, or --zone ORIGIN=FILE)".into(),
        ));
    }
    Ok(sources)
}

/// A started server: its addresses are bound and answering.
pub struct Running {
    /// The section it started with: listeners and limits change only on
    /// restart.
    started: Dnsd,
    /// The section last applied (start or reload), to tell whether the
    /// `rrl_*` settings changed.
    applied: std::sync::Mutex<Dnsd>,
    default_zones: Vec<(String, ZoneSource)>,
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    udp_stop: Arc<AtomicBool>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// The bound addresses (ports resolved), UDP and TCP alike.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Service for Running {
    type Error = Error;

    /// Parse every zone of `cfg` again (the zone list may have changed)
    /// and swap the new set in only if all of them load; otherwise the
    /// old zones keep answering and every error is returned as
    /// `file:line:column: message`. `udp_payload_max`, `axfr_allow`, the
    /// query log and the `rrl_*` settings take effect at once (changed RRL
    /// settings start a new, empty table); listeners, `workers` and the
    /// TCP limits only on restart. Blocks while parsing.
    fn reload(&self, cfg: Config) -> Result<(), Error> {
        let d = &cfg.dnsd;
        let old = &self.started;
        if d.listen != old.listen
            || d.workers != old.workers
            || d.tcp_idle_timeout_secs != old.tcp_idle_timeout_secs
            || d.tcp_max_connections != old.tcp_max_connections
        {
            warn!("dnsd listen, workers and tcp_* settings change only on restart");
        }
        let sources = sources_for(d, &self.default_zones)?;
        let rcfg = responder_config(&cfg)?;
        let mut applied = match self.applied.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let rrl = if rrl_settings(d) == rrl_settings(&applied) {
            None
        } else {
            Some(rate_limiter(d)?)
        };
        let old = self.shared.get().catalog().clone();
        let (catalog, changed) =
            load_catalog_over(&sources, Some(&old), d.ixfr_history, d.serial_policy)
                .map_err(Error::Zones)?;
        if let Some(l) = &rrl {
            info!(
                responses_per_second = l.as_ref().map_or(0, |l| l.config().responses_per_second),
                "rate limit settings changed; accounts start afresh"
            );
        }
        self.shared
            .swap(Responder::new(Arc::new(catalog), rcfg), rrl);
        *applied = d.clone();
        self.shared
            .query_log
            .store(logs_queries(&cfg), Ordering::Relaxed);
        info!(
            zones = sources.len(),
            changed = changed.len(),
            "zones reloaded"
        );
        notify_secondaries(d, &changed, &self.udp_stop);
        Ok(())
    }

    /// Stop answering: close the listeners and TCP connections, wait for
    /// the UDP threads (each notices within 200 ms).
    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        self.udp_stop.store(true, Ordering::Release);
        let mut tasks = self.tasks;
        while tasks.join_next().await.is_some() {}
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        info!("dnsd stopped");
    }
}

/// The `rrl_*` keys, to notice a change on reload.
fn rrl_settings(d: &Dnsd) -> impl PartialEq + '_ {
    (
        d.rrl_responses_per_second,
        d.rrl_window_secs,
        d.rrl_slip,
        d.rrl_ipv4_prefix,
        d.rrl_ipv6_prefix,
        d.rrl_table_size,
        &d.rrl_exempt_clients,
        d.rrl_log_only,
    )
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

fn udp_worker(sock: std::net::UdpSocket, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
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
        let (responder, limiter) = cache.refresh(&shared);
        let query_log = shared.query_log();
        let mut now_ms = None;
        // For TSIG; one clock read per batch.
        let unix = unix_now();
        replies.clear();
        for (i, out) in outs.iter_mut().enumerate().take(n) {
            let Some((query, peer)) = batch.packet(i) else {
                continue;
            };
            let answered = responder.respond(query, Transport::Udp, peer.ip(), unix, out);
            match answered.outcome {
                Outcome::Reply => {
                    // A valid Server Cookie proves the address: such a
                    // query is neither limited nor counted, as in BIND.
                    if let (Some(limiter), false) = (limiter, answered.cookie == CookieCheck::Valid)
                    {
                        // One clock reading per batch: the batch arrived at once.
                        let now = *now_ms.get_or_insert_with(|| {
                            u64::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
                        });
                        let cookie = answered.cookie == CookieCheck::Unverified;
                        if !rate_limit(limiter, now, peer, cookie, out) {
                            if query_log {
                                info!(target: "dnsd::query", client = %peer, proto = "udp", q = %describe(query), "dropped by rate limit");
                            }
                            continue;
                        }
                    }
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
                Outcome::Notify(apex) => {
                    info!(client = %peer, "NOTIFY received");
                    shared.wake(&apex);
                    replies.push(i);
                }
            }
        }
        batch.send(fd, &replies, &outs);
    }
    drop(sock);
}

/// Applies response rate limiting to the UDP answer in `out`: false when
/// it is dropped; a slipped answer is rewritten to its slipped form, which
/// for a client that sent a Client Cookie (`cookie`) is BADCOOKIE with a
/// Server Cookie, else TC. (A query with a valid Server Cookie comes from
/// the address it claims: the caller answers it in full without counting
/// it, as BIND does.)
fn rate_limit(
    limiter: &RateLimiter,
    now_ms: u64,
    peer: SocketAddr,
    cookie: bool,
    out: &mut Vec<u8>,
) -> bool {
    let d = limiter.check(now_ms, peer.ip(), out);
    if d.started {
        // Once per episode, as BIND's "limit ... responses to ..." line.
        info!(target: "dnsd::rrl", client = %peer.ip(), kind = ?d.kind, log_only = limiter.config().log_only, "rate limit started");
    }
    match d.action {
        Action::Send => true,
        Action::Drop => false,
        Action::Slip => rrl::slip(out, cookie),
    }
}

async fn tcp_acceptor(
    l: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
    idle: Duration,
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
            if let Err(e) = tcp_conn(stream, peer, shared, stop, idle).await {
                debug!(%peer, "tcp: {e}");
            }
            drop(permit);
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// The TCP message framing of RFC 1035 section 4.2.2: a two-octet length,
/// then the message (at most 65535 octets, so no frame is ever too long).
fn dns_tcp_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(usize::from(u16::MAX))
        .new_codec()
}

/// RFC 7766: length-prefixed messages, several per connection, answered in
/// order; the answers to pipelined queries go out in one write. A client
/// gets `idle` to send each whole query, so one trickling bytes is cut off.
async fn tcp_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut codec = dns_tcp_codec();
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut cache = Cached::new(&shared);
    let mut out = Vec::with_capacity(4096);
    let client: IpAddr = peer.ip();
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        // Answer every complete query already buffered, then write once.
        while let Some(msg) = codec.decode(&mut input)? {
            deadline = tokio::time::Instant::now() + idle;
            let (responder, _) = cache.refresh(&shared);
            match responder.handle_at(&msg, Transport::Tcp, client, unix_now(), &mut out) {
                Outcome::Reply => {
                    if shared.query_log() {
                        log_query(peer, "tcp", &msg, &out);
                    }
                    codec.encode(Bytes::copy_from_slice(&out), &mut output)?;
                }
                Outcome::Drop => {
                    stream.write_all(&output).await?;
                    return Ok(());
                }
                Outcome::Notify(apex) => {
                    info!(%peer, "NOTIFY received");
                    shared.wake(&apex);
                    codec.encode(Bytes::copy_from_slice(&out), &mut output)?;
                }
                Outcome::Transfer(t) => {
                    let what = if t.ixfr_from().is_some() {
                        "IXFR"
                    } else {
                        "AXFR"
                    };
                    info!(%peer, zone = %t.zone().origin(), serial = t.zone().serial().unwrap_or(0), from = ?t.ixfr_from(), kind = ?t.kind(), "{what}");
                    // Encoding a large zone is CPU work: off the async
                    // threads, and streamed, so that sending (and the
                    // client's reading) overlaps the encoding; the small
                    // channel bounds what waits in memory. A write error
                    // drops the receiver, which stops the encoder.
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
                    let encoder = tokio::task::spawn_blocking(move || {
                        t.each_message(|m| tx.blocking_send(m).is_ok());
                    });
                    while let Some(m) = rx.recv().await {
                        codec.encode(Bytes::from(m), &mut output)?;
                        if output.len() >= 64 * 1024 {
                            stream.write_all(&output).await?;
                            output.clear();
                        }
                    }
                    encoder.await.map_err(io::Error::other)?;
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        tokio::select! {
            res = tokio::time::timeout_at(deadline, stream.read_buf(&mut input)) => match res {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    debug!(%peer, "tcp idle timeout");
                    return Ok(());
                }
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

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

    /// A configuration from `[dnsd]` text, paths relative to `dir`.
    fn config(dir: &Path, dnsd: &str) -> Config {
        Config::from_toml_str(&format!("[dnsd]\n{dnsd}"), dir).unwrap()
    }

    #[test]
    fn tcp_codec_frames_pipelined_and_split_queries() {
        let mut c = dns_tcp_codec();
        let mut input = BytesMut::from(&b"\x00\x03abc\x00\x02de\x00"[..]);
        assert_eq!(c.decode(&mut input).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(c.decode(&mut input).unwrap().as_deref(), Some(&b"de"[..]));
        // Half a length field, then the rest: nothing until complete.
        assert_eq!(c.decode(&mut input).unwrap(), None);
        input.extend_from_slice(b"\x01");
        assert_eq!(c.decode(&mut input).unwrap(), None);
        input.extend_from_slice(b"z");
        assert_eq!(c.decode(&mut input).unwrap().as_deref(), Some(&b"z"[..]));
        let mut out = BytesMut::new();
        c.encode(Bytes::from_static(b"xy"), &mut out).unwrap();
        assert_eq!(&out[..], b"\x00\x02xy");
        // The largest DNS message fits; one more octet cannot be framed.
        assert!(c.encode(Bytes::from(vec![0; 65535]), &mut out).is_ok());
        assert!(c.encode(Bytes::from(vec![0; 65536]), &mut out).is_err());
    }

    #[test]
    fn lab_zone_constant_is_the_file() {
        assert!(LAB_ZONE.contains("@      IN MX   10    mail"));
        assert!(load_catalog(&lab_sources()).is_ok());
    }

    #[test]
    fn responder_settings_come_from_the_section() {
        let d = Dnsd {
            udp_payload_max: 1400,
            axfr_allow: vec!["192.0.2.0/24".parse().unwrap()],
            ..Dnsd::default()
        };
        let mut cfg = Config {
            dnsd: d.clone(),
            ..Config::default()
        };
        let r = responder_config(&cfg).unwrap();
        assert_eq!(r.udp_payload_max, 1400);
        assert_eq!(r.axfr_allow, vec![Prefix::parse("192.0.2.0/24").unwrap()]);
        // The identity defaults to the host name, the version to ours,
        // and no NSID is sent unless one is set.
        assert_eq!(r.identity.as_deref(), Some(&b"mail.csuvnetwork.com"[..]));
        let version = format!("dnsd {}", env!("CARGO_PKG_VERSION"));
        assert_eq!(r.version.as_deref(), Some(version.as_bytes()));
        assert_eq!(r.nsid, None);
        cfg.dnsd.nsid = "0x6e73".into();
        cfg.dnsd.identity = "ns1".into();
        cfg.dnsd.hide_version = true;
        let r = responder_config(&cfg).unwrap();
        assert_eq!(r.nsid.as_deref(), Some(&b"ns"[..]));
        assert_eq!(r.identity.as_deref(), Some(&b"ns1"[..]));
        assert_eq!(r.version, None);
        cfg.dnsd.hide_identity = true;
        assert_eq!(responder_config(&cfg).unwrap().identity, None);
        // Cookies: on, with one random secret for the life of the process
        // (a reload keeps it), or the configured one, or off.
        let random = responder_config(&cfg).unwrap().cookie_secret;
        assert!(random.is_some());
        assert_eq!(responder_config(&cfg).unwrap().cookie_secret, random);
        cfg.dnsd.cookie_secret = "e5e973e5a6b2a43f48e7dc849e37bfcf".into();
        let set = responder_config(&cfg).unwrap().cookie_secret.unwrap();
        assert_eq!(set[..3], [0xe5, 0xe9, 0x73]);
        cfg.dnsd.answer_cookie = false;
        assert_eq!(responder_config(&cfg).unwrap().cookie_secret, None);
        assert_eq!(worker_count(&Dnsd { workers: 3, ..d }), 3);
        let mut cfg = Config::default();
        assert!(!logs_queries(&cfg));
        cfg.global.transcript = true;
        assert!(logs_queries(&cfg), "--transcript logs queries");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_udp_and_tcp_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let zf = dir.path().join("lab.zone");
        std::fs::write(&zf, LAB_ZONE).unwrap();
        let cfg = config(
            dir.path(),
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\n\
             zones = [{ origin = \"csuvnetwork.com\", file = \"lab.zone\" }]\n",
        );
        let server = start(cfg.clone()).await.unwrap();
        let addr = server.local_addrs()[0];

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
        let a_of_mail = |m: Message| m.answers()[0].data().clone();
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(a_of_mail(m), RData::A("192.168.3.10".parse().unwrap()));

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
        match server.reload(cfg.clone()) {
            Err(Error::Zones(errs)) => assert!(errs[0].contains("lab.zone:12:"), "{errs:?}"),
            other => panic!("unexpected: {other:?}"),
        }
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(a_of_mail(m), RData::A("192.168.3.10".parse().unwrap()));
        // New records without a new serial: refused (BIND's rule), the
        // old zone answers on.
        let changed =
            LAB_ZONE.replace("mail   IN A    192.168.3.10", "mail   IN A    192.168.3.11");
        std::fs::write(&zf, &changed).unwrap();
        match server.reload(cfg.clone()) {
            Err(Error::Zones(errs)) => assert!(errs[0].contains("serial is still 0"), "{errs:?}"),
            other => panic!("unexpected: {other:?}"),
        }
        std::fs::write(&zf, changed.replace("0      ; serial", "1      ; serial")).unwrap();
        server.reload(cfg.clone()).unwrap();
        let m = ask_udp(query("mail.csuvnetwork.com.", RecordType::A)).await;
        assert_eq!(a_of_mail(m), RData::A("192.168.3.11".parse().unwrap()));

        // The zone list itself is reloaded: a second zone appears.
        std::fs::write(
            dir.path().join("example.org.zone"),
            "$TTL 1h\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n",
        )
        .unwrap();
        let two = config(
            dir.path(),
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\n\
             zones = [{ origin = \"csuvnetwork.com\", file = \"lab.zone\" },\
                      { origin = \"example.org\", file = \"example.org.zone\" }]\n",
        );
        server.reload(two).unwrap();
        let m = ask_udp(query("ns.example.org.", RecordType::A)).await;
        assert_eq!(a_of_mail(m), RData::A("192.0.2.1".parse().unwrap()));
        // A configuration without zones is refused; the old set stays.
        let none = config(dir.path(), "");
        assert!(matches!(server.reload(none), Err(Error::Invalid(_))));
        let m = ask_udp(query("ns.example.org.", RecordType::A)).await;
        assert_eq!(m.response_code(), ResponseCode::NoError);

        tokio::time::timeout(Duration::from_secs(5), server.stop())
            .await
            .unwrap();
        // Stopped: the port is free again.
        std::net::UdpSocket::bind(addr).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_answers_are_rate_limited_and_tcp_never() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\nrrl_responses_per_second = 3\n\
             rrl_slip = 1\nrrl_exempt_clients = []\n",
        );
        let server = start_with(cfg.clone(), lab_sources()).await.unwrap();
        let addr = server.local_addrs()[0];
        let q = query("mail.csuvnetwork.com.", RecordType::A);
        let count = |n: usize| {
            let q = q.clone();
            async move {
                let (mut full, mut truncated) = (0, 0);
                for _ in 0..n {
                    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    udp.send_to(&q, addr).await.unwrap();
                    let mut buf = vec![0u8; 2048];
                    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    let m = Message::from_vec(&buf[..n]).unwrap();
                    assert_eq!(m.id(), 42);
                    if m.truncated() {
                        assert!(m.answers().is_empty() && m.additionals().is_empty());
                        assert_eq!(m.queries().len(), 1);
                        truncated += 1;
                    } else {
                        assert_eq!(m.answers().len(), 1);
                        full += 1;
                    }
                }
                (full, truncated)
            }
        };
        // Each query from its own port: SO_REUSEPORT spreads them over
        // both workers, which share one account.
        let (full, truncated) = count(10).await;
        // Three a second (a fourth if the loop took over 333 ms); with
        // slip 1 every limited answer comes back truncated.
        assert!((3..=4).contains(&full), "{full} full answers");
        assert_eq!(full + truncated, 10);
        // TCP is never limited.
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..10 {
            s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf).unwrap();
            assert!(!m.truncated());
            assert_eq!(m.answers().len(), 1);
        }
        // A reload with the same settings keeps the accounts...
        server.reload(cfg.clone()).unwrap();
        assert_eq!(count(1).await, (0, 1));
        // ...one that turns RRL off takes effect at once.
        let mut off = cfg;
        off.dnsd.rrl_responses_per_second = 0;
        server.reload(off).unwrap();
        assert_eq!(count(10).await, (10, 0));
        server.stop().await;
    }

    #[test]
    fn rrl_off_and_exempt_by_default() {
        let d = Dnsd::default();
        let l = rate_limiter(&d).unwrap().unwrap();
        assert!(l.is_exempt("127.0.0.2".parse().unwrap()));
        assert!(!l.is_exempt("192.0.2.1".parse().unwrap()));
        let off = Dnsd {
            rrl_responses_per_second: 0,
            ..d
        };
        assert!(rate_limiter(&off).unwrap().is_none());
    }

    #[tokio::test]
    async fn lab_zone_by_default_and_bad_zones_fail_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "listen = [\"127.0.0.1:0\"]\nworkers = 1\n");
        match start(cfg.clone()).await {
            Err(Error::Invalid(e)) => assert!(e.contains("no zones"), "{e}"),
            other => panic!("unexpected: {:?}", other.map(|_| ())),
        }
        let lab = start_with(cfg.clone(), lab_sources()).await.unwrap();
        // A reload of the same configuration serves the default zones again.
        lab.reload(cfg.clone()).unwrap();
        lab.stop().await;
        let sources = vec![(
            "example.com".to_string(),
            ZoneSource::Text {
                name: "mem".into(),
                text: "$TTL 1h\n@ SOA ns root 1 2 3 4 5\n NS ns\nns A 1.2.3.4.5\n".into(),
            },
        )];
        match start_with(cfg, sources).await {
            Err(Error::Zones(e)) => {
                assert_eq!(e, vec!["mem:4:6: expected an IPv4 address".to_string()])
            }
            other => panic!("unexpected: {:?}", other.map(|_| ())),
        }
    }
}
