//! smtp-proto's client session over the one driver, with STARTTLS by
//! rustls, against smtpd: the client side that outbound delivery uses,
//! tested against our own server with certificates from a local CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mail_session::driver::{Driver, Stop};
use mail_session::tls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use mail_session::tls::{Stream, TlsConnector};
use mail_session::Secret;
use netkit::Service;
use smtp_proto::{ClientError, ClientEvent, ClientSession, ClientTls, OutgoingMessage};

fn config(dir: &Path, level: &str) -> mail_config::Config {
    let ca = netkit::certgen::ensure_ca(&dir.join("tls")).unwrap();
    let names = vec!["mail.csuvnetwork.com".to_string()];
    let (cert, key) = (dir.join("tls/mail.pem"), dir.join("tls/mail.key"));
    netkit::certgen::issue(&ca, &names, &cert, &key).unwrap();
    std::fs::write(dir.join("passwd"), "user1:{PLAIN}one\nuser2:{PLAIN}two\n").unwrap();
    mail_config::Config::from_toml_str(
        &format!(
            r#"
            [global]
            maildir_root = "mail"
            passwd_file = "passwd"
            [smtpd]
            listen = []
            submission_listen = ["127.0.0.1:0"]
            submission_tls_security_level = "{level}"
            queue_directory = "queue"
            auth_failure_delay = 0
            [tls]
            certificates = [{{ cert = "tls/mail.pem", key = "tls/mail.key" }}]
            # Not even loopback may send a password in the clear here.
            plaintext_auth_networks = []
            "#
        ),
        dir,
    )
    .unwrap()
}

fn connector(dir: &Path) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("tls/ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// Runs a client session to its end; returns its events.
async fn send(
    addr: std::net::SocketAddr,
    connector: &TlsConnector,
    tls: ClientTls,
) -> Vec<ClientEvent> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut driver = Driver::new(Stream::Plain(tcp));
    let mut cfg = smtp_proto::ClientConfig::new("client.example");
    cfg.tls = tls;
    cfg.credentials = Some(("user2".into(), Secret::new("two".into())));
    let msg = OutgoingMessage {
        from: "user2@csuvnetwork.com".into(),
        to: vec!["user1@csuvnetwork.com".into()],
        body: b"Subject: over TLS\r\n\r\nhello\r\n".to_vec(),
        ..Default::default()
    };
    let mut session = ClientSession::new(cfg, vec![msg], driver.now());
    let mut events = Vec::new();
    loop {
        match driver.next(&mut session, false).await {
            Ok(ClientEvent::StartTls) => {
                let name = ServerName::try_from("mail.csuvnetwork.com").unwrap();
                let info = driver
                    .connect_tls(connector, name, Duration::from_secs(10))
                    .await
                    .unwrap();
                assert!(info.version.starts_with("TLSv1."), "{info}");
                session.tls_established().unwrap();
                events.push(ClientEvent::StartTls);
            }
            Ok(e) => events.push(e),
            Err(Stop::Closed) => return events,
            Err(e) => panic!("client stopped: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_starttls_auth_and_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let running = smtpd::start(config(dir.path(), "may")).await.unwrap();
    let addr = running.submission_addrs()[0];
    let connector = connector(dir.path());

    let events = send(addr, &connector, ClientTls::Required).await;
    assert!(matches!(events[0], ClientEvent::StartTls), "{events:?}");
    let ClientEvent::Ready { capabilities, .. } = &events[1] else {
        panic!("{events:?}")
    };
    // Inside TLS: AUTH offered, STARTTLS no more (RFC 3207 section 4.2).
    assert!(
        capabilities.iter().any(|c| c.starts_with("AUTH ")),
        "{capabilities:?}"
    );
    assert!(
        !capabilities.iter().any(|c| c == "STARTTLS"),
        "{capabilities:?}"
    );
    assert!(
        matches!(events[2], ClientEvent::Authenticated),
        "{events:?}"
    );
    let ClientEvent::Message(report) = &events[3] else {
        panic!("{events:?}")
    };
    assert!(report.accepted(), "{report:?}");

    // Without TLS the client may not send its password: no AUTH offered,
    // so it gives up before MAIL.
    let events = send(addr, &connector, ClientTls::None).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Failed(ClientError::NoAuthMechanism))),
        "{events:?}"
    );
    running.stop().await;

    // The message is delivered with the TLS clauses in Received.
    let new = dir.path().join("mail/user1/Maildir/new");
    let mut text = String::new();
    for _ in 0..100 {
        if let Some(e) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()) {
            text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("with ESMTPSA"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_that_is_not_offered_fails_before_auth() {
    let dir = tempfile::tempdir().unwrap();
    let running = smtpd::start(config(dir.path(), "none")).await.unwrap();
    let addr = running.submission_addrs()[0];
    let events = send(addr, &connector(dir.path()), ClientTls::Required).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Failed(ClientError::TlsUnavailable { .. }))),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, ClientEvent::Authenticated)));
    running.stop().await;
}
