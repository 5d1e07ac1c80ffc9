//! Server TLS for smtpd and pop3d: certificates loaded from PEM files and
//! checked at start (a missing, unreadable, expired or mismatched file is
//! named in the error), chosen per connection by SNI, and a rustls
//! configuration that speaks TLS 1.2 and 1.3 only, never asks for a client
//! certificate, and resumes sessions by stateless tickets.
//!
//! A reload (SIGHUP) builds a new [`ServerTls`]; connections keep the one
//! they started with, so none is dropped, and the ticket key is kept so
//! that resumption goes on working.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mail_config::{CertificateFiles, TlsVersion};
use mail_session::driver::Driver;
pub use mail_session::tls::rustls;
use mail_session::tls::{Stream, TlsAcceptor, TlsInfo};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why the certificates or the TLS configuration could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("{key}: the private key does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is not valid now.
    #[error("{path}: the certificate {reason}")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// `expired on ...` or `is not valid before ...`.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One certificate chain with its key and the names it is valid for.
#[derive(Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
    /// DNS names from the subjectAltName, lowercase; `*.x` wildcards kept.
    names: Vec<String>,
}

impl Entry {
    fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            // RFC 6125 section 6.4.3: a wildcard stands for one label.
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => n == name,
        })
    }
}

/// Picks the certificate for a connection: the first one that holds the
/// name the client asked for (SNI) and a key type the client can verify,
/// else the first usable one.
#[derive(Debug)]
struct CertResolver {
    entries: Vec<Entry>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let usable = |e: &&Entry| e.key.key.choose_scheme(schemes).is_some();
        let by_name = hello.server_name().and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.entries.iter().filter(usable).find(|e| e.serves(&name))
        });
        by_name
            .or_else(|| self.entries.iter().find(usable))
            .map(|e| Arc::clone(&e.key))
    }
}

/// A certificate's DNS names and its validity (for `mailctl` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The certificate file.
    pub path: PathBuf,
    /// DNS names from the subjectAltName.
    pub names: Vec<String>,
    /// End of validity, as `YYYY-MM-DD HH:MM:SS` UTC.
    pub not_after: String,
}

/// Server TLS as a daemon uses it: the acceptor for its listeners and the
/// handshake deadline.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    summaries: Arc<Vec<CertSummary>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("certificates", &self.summaries)
            .finish()
    }
}

/// The session-ticket key, kept across reloads (rustls rotates it every
/// 6 hours by itself).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    Ok(provider::Ticketer::new()?)
}

impl ServerTls {
    /// Loads `files` (the first is the default certificate) and builds the
    /// configuration; `alpn` lists the protocols agreed by ALPN (RFC 7301:
    /// a client that offers only others is refused, which stops
    /// cross-protocol attacks). `Ok(None)` when there is no certificate.
    pub fn new(
        files: &[CertificateFiles],
        settings: &mail_config::Tls,
        alpn: &[&[u8]],
        ticketer: Arc<dyn ProducesTickets>,
    ) -> Result<Option<ServerTls>, TlsError> {
        if files.is_empty() {
            return Ok(None);
        }
        let now = SystemTime::now();
        let mut entries = Vec::with_capacity(files.len());
        let mut summaries = Vec::with_capacity(files.len());
        for f in files {
            let (entry, summary) = load_pair(f, now)?;
            entries.push(entry);
            summaries.push(summary);
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        // rustls marks ring's provider deprecated because it lacks the
        // post-quantum hybrid X25519MLKEM768; ring is what the workspace
        // already builds (hickory-proto's DNSSEC), aws-lc-rs would add a C
        // library build. X25519, P-256 and P-384 are offered.
        #[allow(deprecated)]
        let provider = provider::default_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CertResolver { entries }));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // The server's order (the provider's: AES-256-GCM, AES-128-GCM,
        // ChaCha20, all AEAD with forward secrecy), not the client's: the
        // strongest suite both sides have, whatever order the client
        // lists (Postfix's tls_preempt_cipherlist, Dovecot's
        // ssl_prefer_server_ciphers); testssl.sh rates the lack HIGH.
        config.ignore_client_order = true;
        config.ticketer = ticketer;
        Ok(Some(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: settings.handshake_timeout.duration(),
            summaries: Arc::new(summaries),
        }))
    }

    /// The acceptor for handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The certificates loaded, in order.
    pub fn certificates(&self) -> &[CertSummary] {
        &self.summaries
    }
}

/// Implicit TLS on a new connection (ports 465 and 995), logged under
/// `sid`; `None` when the handshake failed, timed out, or was cut short by
/// shutdown or eviction (`permit`'s token) — the connection is then
/// closed, and costs nothing more.
pub async fn accept_implicit(
    tcp: tokio::net::TcpStream,
    tls: &ServerTls,
    permit: &crate::ConnPermit,
    sid: &str,
    peer: std::net::SocketAddr,
) -> Option<(Stream, TlsInfo)> {
    let handshake = mail_session::tls::accept(tcp, tls.acceptor(), tls.handshake_timeout);
    match unless_cancelled(permit, handshake).await {
        Ok((stream, info)) => {
            tracing::info!(sid, client = %peer, tls = %info, "TLS established");
            Some((stream, info))
        }
        Err(e) => {
            // Postfix's wording.
            tracing::info!(sid, client = %peer, error = %e, "SSL_accept error");
            None
        }
    }
}

/// The server side of `STARTTLS`/`STLS` after the session queued its
/// go-ahead: flush it, shake hands, log the result under `sid`. After an
/// error (also shutdown or eviction during the handshake, `permit`'s
/// token) the connection is unusable and the caller ends it.
pub async fn start_tls(
    driver: &mut Driver<Stream>,
    tls: &ServerTls,
    permit: &crate::ConnPermit,
    sid: &str,
    peer: std::net::SocketAddr,
) -> std::io::Result<TlsInfo> {
    let handshake = driver.accept_tls(tls.acceptor(), tls.handshake_timeout);
    match unless_cancelled(permit, handshake).await {
        Ok(info) => {
            tracing::info!(sid, client = %peer, tls = %info, "STARTTLS established");
            Ok(info)
        }
        Err(e) => {
            tracing::info!(sid, client = %peer, error = %e, "SSL_accept error");
            Err(e)
        }
    }
}

/// Runs a handshake unless shutdown or eviction comes first: a client
/// that has not finished its handshake has nothing in flight, so a stop
/// ends it at once, as it ends sessions between transactions, instead of
/// waiting up to `handshake_timeout` (or `shutdown_grace`) for it.
async fn unless_cancelled<T>(
    permit: &crate::ConnPermit,
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let cancel = permit.token();
    tokio::select! {
        r = handshake => r,
        () = cancel.cancelled() => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "TLS handshake cut short: shutting down or evicted",
        )),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_pair(files: &CertificateFiles, now: SystemTime) -> Result<(Entry, CertSummary), TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate file: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(
            &files.cert,
            "no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            &files.key,
            format!("no private key (expected PKCS#8, RSA or EC PEM): {e}"),
        )
    })?;
    let signer = provider::sign::any_supported_type(&key)
        .map_err(|e| invalid(&files.key, format!("unsupported private key: {e}")))?;
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| invalid(&files.cert, format!("unreadable certificate: {e:?}")))?
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect::<Vec<_>>();
    let (not_before, not_after) = validity(leaf)
        .ok_or_else(|| invalid(&files.cert, "unreadable certificate validity".into()))?;
    let now = unix_seconds(now);
    if now > not_after {
        return Err(TlsError::Expired {
            path: files.cert.clone(),
            reason: format!("expired on {} UTC", format_time(not_after)),
        });
    }
    if now < not_before {
        return Err(TlsError::Expired {
            path: files.cert.clone(),
            reason: format!("is not valid before {} UTC", format_time(not_before)),
        });
    }
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    let summary = CertSummary {
        path: files.cert.clone(),
        names: names.clone(),
        not_after: format_time(not_after),
    };
    Ok((
        Entry {
            key: Arc::new(certified),
            names,
        },
        summary,
    ))
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// One DER element: tag, contents, what follows.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        (
            bytes.iter().fold(0usize, |a, &b| a << 8 | usize::from(b)),
            rest,
        )
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// notBefore and notAfter of an X.509 certificate (RFC 5280 section
/// 4.1), as Unix seconds.
pub(crate) fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(cert)? else {
        return None;
    };
    let (tag, _, mut rest) = der(tbs)?;
    if tag != 0xa0 {
        // No explicit version (v1): the first element was the serial.
        rest = tbs;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, validity, _) = der(rest)? else {
        return None;
    };
    let (t1, before, rest) = der(validity)?;
    let (t2, after, _) = der(rest)?;
    Some((x509_time(t1, before)?, x509_time(t2, after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn x509_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            // RFC 5280 section 4.1.2.5.1: 50..99 are 19xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let secs = field(4)? * 3600 + field(6)? * 60 + field(8)?;
    Some(days_from_civil(year, month, day) * 86_400 + secs)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // x509_time read two digits each: 0..=99 fit.
    mailstore::days_from_civil(y, m.clamp(0, 99) as u32, d.clamp(0, 99) as u32)
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds.
fn format_time(t: i64) -> String {
    let (y, m, d) = civil_from_unix(t);
    let secs = t.rem_euclid(86_400);
    let mut s = String::new();
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    s
}

/// The calendar date (year, month, day) of Unix seconds.
pub(crate) fn civil_from_unix(t: i64) -> (i64, u32, u32) {
    mailstore::civil_from_days(t.div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_796_515_200), "2026-12-06 00:00:00");
        assert_eq!(days_from_civil(2026, 12, 6) * 86_400, 1_796_515_200);
        assert_eq!(
            x509_time(0x17, b"261206083000Z"),
            Some(1_796_515_200 + 8 * 3600 + 1800)
        );
        assert_eq!(
            x509_time(0x18, b"20261206083000Z"),
            Some(1_796_515_200 + 8 * 3600 + 1800)
        );
        assert_eq!(
            x509_time(0x17, b"500101000000Z"),
            Some(days_from_civil(1950, 1, 1) * 86_400)
        );
        assert_eq!(x509_time(0x17, b"2612060830Z"), None);
        assert_eq!(x509_time(0x17, b"26120608300aZ"), None);
        assert_eq!(x509_time(0x05, b"261206083000Z"), None);
    }

    #[test]
    fn der_walk_never_panics_on_truncation() {
        let cert = [0x30, 0x82, 0x01];
        assert_eq!(validity(&cert), None);
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 0x30) as u8).collect();
            let _ = validity(&junk);
        }
    }

    #[test]
    fn wildcards_stand_for_one_label() {
        let e = Entry {
            key: Arc::new(CertifiedKey::new(
                vec![],
                provider::sign::any_supported_type(&test_key()).unwrap(),
            )),
            names: vec!["mail.example.org".into(), "*.example.net".into()],
        };
        assert!(e.serves("mail.example.org"));
        assert!(!e.serves("example.org"));
        assert!(e.serves("smtp.example.net"));
        assert!(!e.serves("a.b.example.net"));
        assert!(!e.serves("example.net"));
        assert!(!e.serves(".example.net"));
    }

    fn files(dir: &Path, name: &str) -> CertificateFiles {
        CertificateFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn issue(dir: &Path, name: &str, names: &[&str]) -> CertificateFiles {
        let ca = crate::certgen::ensure_ca(dir).unwrap();
        let f = files(dir, name);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        crate::certgen::issue(&ca, &names, &f.cert, &f.key).unwrap();
        f
    }

    #[test]
    fn loads_a_pair_and_names_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = issue(
            dir.path(),
            "mail",
            &["mail.example.org", "*.example.net", "127.0.0.1"],
        );
        let tls = ServerTls::new(
            std::slice::from_ref(&f),
            &mail_config::Tls::default(),
            &[b"smtp"],
            ticketer().unwrap(),
        )
        .unwrap()
        .unwrap();
        let c = &tls.certificates()[0];
        assert_eq!(c.names, ["mail.example.org", "*.example.net"]);
        assert!(c.not_after.as_str() > "2027-01-01", "{}", c.not_after);
        assert_eq!(tls.handshake_timeout(), Duration::from_secs(30));
        // No certificate: no TLS.
        let none = ServerTls::new(&[], &mail_config::Tls::default(), &[], ticketer().unwrap());
        assert!(none.unwrap().is_none());
    }

    #[test]
    fn names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let a = issue(dir.path(), "a", &["a.example"]);
        let b = issue(dir.path(), "b", &["b.example"]);
        let now = SystemTime::now();
        let missing = CertificateFiles {
            cert: dir.path().join("nope.pem"),
            key: a.key.clone(),
        };
        let e = load_pair(&missing, now).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}", missing.cert.display())),
            "{e}"
        );
        let mismatched = CertificateFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load_pair(&mismatched, now).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("b.key"), "{e}");
        let swapped = CertificateFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        let e = load_pair(&swapped, now).unwrap_err().to_string();
        assert!(e.contains("a.key: no certificate"), "{e}");
        let later = now + Duration::from_secs(900 * 86_400);
        let e = load_pair(&a, later).unwrap_err().to_string();
        assert!(e.contains("a.pem: the certificate expired on"), "{e}");
        let earlier = now - Duration::from_secs(3 * 86_400);
        let e = load_pair(&a, earlier).unwrap_err().to_string();
        assert!(e.contains("is not valid before"), "{e}");
        std::fs::write(&b.cert, "junk").unwrap();
        assert!(load_pair(&b, now)
            .unwrap_err()
            .to_string()
            .contains("b.pem"));
    }

    fn test_key() -> PrivateKeyDer<'static> {
        let k = rcgen::KeyPair::generate().unwrap();
        PrivateKeyDer::try_from(k.serialize_der()).unwrap()
    }
}
