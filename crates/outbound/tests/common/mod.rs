//! A remote MTA for the tests: smtpd on loopback for `example.org`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A remote MTA for `example.org` with users a and b; `extra` goes into
/// its `[smtpd]` section.
pub async fn remote(dir: &Path, extra: &str) -> (smtpd::Running, SocketAddr) {
    remote_on(dir, extra, "127.0.0.1:0").await
}

/// [`remote`] listening on `listen`.
pub async fn remote_on(dir: &Path, extra: &str, listen: &str) -> (smtpd::Running, SocketAddr) {
    let ca = netkit::certgen::ensure_ca(&dir.join("tls")).unwrap();
    let (cert, key) = (dir.join("tls/mx.pem"), dir.join("tls/mx.key"));
    if !cert.exists() {
        netkit::certgen::issue(&ca, &["mx.example.org".to_string()], &cert, &key).unwrap();
    }
    std::fs::write(dir.join("passwd"), "a:{PLAIN}x\nb:{PLAIN}y\n").unwrap();
    let cfg = mail_config::Config::from_toml_str(
        &format!(
            r#"
            [global]
            hostname = "mx.example.org"
            local_domains = ["example.org"]
            relay_networks = []
            maildir_root = "mail"
            passwd_file = "passwd"
            [smtpd]
            listen = ["{listen}"]
            submission_listen = []
            queue_directory = "queue"
            {extra}
            [tls]
            certificates = [{{ cert = "tls/mx.pem", key = "tls/mx.key" }}]
            "#
        ),
        dir,
    )
    .unwrap();
    let running = smtpd::start(cfg).await.unwrap();
    let addr = running.inbound_addrs()[0];
    (running, addr)
}

pub async fn maildir_file(dir: &Path, user: &str) -> String {
    let new = dir.join(format!("mail/{user}/Maildir/new"));
    for _ in 0..100 {
        if let Some(e) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()) {
            return std::fs::read_to_string(e.unwrap().path()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing delivered to {user}");
}

pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A hop at one address (with its port), without MX preference.
pub fn hop(host: &str, addr: SocketAddr) -> outbound::deliver::Hop {
    outbound::deliver::Hop {
        host: host.into(),
        preference: None,
        addresses: vec![addr.ip()],
        port: addr.port(),
    }
}
