//! TLS handshake load generator for scripts/bench-tls.py: `concurrency`
//! connections at a time to `addr` for `seconds` (at most `max` in all),
//! each one TCP connect, a TLS handshake, the greeting line read, close.
//!
//! ```text
//! tls_load <addr> <seconds> <concurrency> full|resume [max]
//! ```
//!
//! Prints `handshakes=N resumed=N errors=N seconds=S per_s=R`.
//!
//! ```text
//! tls_load --in-memory <chain.pem> <key.pem> <n> full|resume
//! ```
//!
//! runs `n` handshakes between this client and the daemons' own server
//! configuration ([`netkit::tls::ServerTls`]) in memory, no sockets, and
//! prints the time each side spent: what rustls and ring cost per
//! handshake, apart from the network and the daemon.
//!
//! It measures servers, so it spends as little CPU as it can: one thread,
//! rustls with ring, X25519 first as mail clients offer it, and no
//! certificate or signature verification (the
//! server's work is the same either way; bench-tls.py checks once, with
//! full verification, which certificate each server presents). `resume`
//! gives each connection slot its own rustls session store, so that each
//! resumes with the TLS 1.3 tickets of its previous connection (read
//! before the greeting); `full` turns resumption off. Not a client to copy: it trusts anyone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_session::tls::TlsConnector;
use netkit::tls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;

/// Accepts every certificate and signature: a load generator only.
#[derive(Debug)]
struct TrustAnyone(Vec<SignatureScheme>);

impl ServerCertVerifier for TrustAnyone {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

#[derive(Default)]
struct Counts {
    handshakes: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
}

/// One connection: handshake, greeting line, close. `Ok(resumed?)`.
async fn one(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &ServerName<'static>,
) -> std::io::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let mut buf = [0u8; 512];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf.get(..n).is_some_and(|b| b.contains(&b'\n')) {
            break;
        }
    }
    let conn = tls.get_ref().1;
    if std::env::var_os("TLS_LOAD_DEBUG").is_some() {
        eprintln!(
            "kind={:?} version={:?} suite={:?} group={:?}",
            conn.handshake_kind(),
            conn.protocol_version(),
            conn.negotiated_cipher_suite(),
            conn.negotiated_key_exchange_group().map(|g| g.name())
        );
    }
    Ok(matches!(
        conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    ))
}

/// Moves the TLS records `from` has queued into `to`; the time `to`
/// spends processing them is added to `spent`.
fn pump(
    from: &mut rustls::ConnectionCommon<impl Sized>,
    to: &mut rustls::ConnectionCommon<impl Sized>,
    spent: &mut Duration,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf)?;
    }
    if buf.is_empty() {
        return Ok(false);
    }
    let t = Instant::now();
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        to.read_tls(&mut rd)?;
        to.process_new_packets()?;
    }
    *spent += t.elapsed();
    Ok(true)
}

fn in_memory(
    client: rustls::ClientConfig,
    args: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let [chain, key, n, mode] = args else {
        return Err("usage: tls_load --in-memory <chain.pem> <key.pem> <n> full|resume".into());
    };
    let n: u32 = n.parse()?;
    let files = [mail_config::CertificateFiles {
        cert: chain.into(),
        key: key.into(),
    }];
    let tls = netkit::tls::ServerTls::new(
        &files,
        &mail_config::Tls::default(),
        &[b"pop3"],
        netkit::tls::ticketer()?,
    )?
    .ok_or("no certificate")?;
    let server_config = Arc::clone(tls.acceptor().config());
    let mut client = client;
    client.resumption = if mode == "resume" {
        Resumption::in_memory_sessions(4)
    } else {
        Resumption::disabled()
    };
    let client = Arc::new(client);
    let name = ServerName::try_from("mail.csuvnetwork.com")?;
    let (mut in_server, mut in_client) = (Duration::ZERO, Duration::ZERO);
    let mut resumed = 0;
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let mut c = rustls::ClientConnection::new(Arc::clone(&client), name.clone())?;
        in_client += t.elapsed();
        let t = Instant::now();
        let mut s = rustls::ServerConnection::new(Arc::clone(&server_config))?;
        in_server += t.elapsed();
        while c.is_handshaking() || s.is_handshaking() || s.wants_write() {
            let a = pump(&mut c, &mut s, &mut in_server)?;
            let b = pump(&mut s, &mut c, &mut in_client)?;
            if !a && !b {
                break;
            }
        }
        resumed += u32::from(matches!(
            s.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        ));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n.max(1));
    println!(
        "handshakes={n} resumed={resumed} server_us={:.1} client_us={:.1} total_us={:.1}",
        per(in_server),
        per(in_client),
        per(started.elapsed())
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // ring, as the daemons (see netkit::tls for why ring).
    #[allow(deprecated)]
    let mut provider = provider::default_provider();
    // The groups in the order mail clients offer them (OpenSSL, NSS,
    // SChannel and Apple's stack send an X25519 key share first); ring's
    // default list starts with P-384, and a TLS 1.3 server takes the
    // client's first group it supports, so the default would measure
    // P-384 key exchanges (about four times the server CPU of X25519 with
    // ring here) that real clients do not ask for.
    provider.kx_groups = vec![
        provider::kx_group::X25519,
        provider::kx_group::SECP256R1,
        provider::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnyone(schemes)))
        .with_no_client_auth();
    if let Some(("--in-memory", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        return in_memory(config, rest);
    }
    let [addr, seconds, concurrency, mode, rest @ ..] = args.as_slice() else {
        return Err("usage: tls_load <addr> <seconds> <concurrency> full|resume [max]".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let seconds: f64 = seconds.parse()?;
    let concurrency: usize = concurrency.parse()?;
    let max: u64 = rest.first().map_or(Ok(u64::MAX), |m| m.parse())?;
    let resume = match mode.as_str() {
        "full" => false,
        "resume" => true,
        other => return Err(format!("mode {other:?}: full or resume").into()),
    };
    // Each connection slot is one client with its own session store, as
    // a mail client keeps the tickets of its last connection (a shared
    // store of rustls' 8 tickets per server runs dry with many slots).
    let connectors: Vec<TlsConnector> = (0..concurrency)
        .map(|_| {
            let mut c = config.clone();
            c.resumption = if resume {
                Resumption::in_memory_sessions(4)
            } else {
                Resumption::disabled()
            };
            TlsConnector::from(Arc::new(c))
        })
        .collect();
    let name = ServerName::try_from("mail.csuvnetwork.com")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counts = Arc::new(Counts::default());
    let started = rt.block_on(async {
        if resume {
            // One full handshake per client first, untimed: its tickets.
            for c in &connectors {
                let _ = one(c, addr, &name).await;
            }
        }
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let issued = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(concurrency);
        for connector in connectors {
            let name = name.clone();
            let (counts, issued) = (Arc::clone(&counts), Arc::clone(&issued));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end && issued.fetch_add(1, Ordering::Relaxed) < max {
                    match one(&connector, addr, &name).await {
                        Ok(resumed) => {
                            counts.handshakes.fetch_add(1, Ordering::Relaxed);
                            counts
                                .resumed
                                .fetch_add(u64::from(resumed), Ordering::Relaxed);
                        }
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        started
    });
    let elapsed = started.elapsed().as_secs_f64();
    let n = counts.handshakes.load(Ordering::Relaxed);
    println!(
        "handshakes={n} resumed={} errors={} seconds={elapsed:.3} per_s={:.1}",
        counts.resumed.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
    Ok(())
}
