//! `maillab`: the whole lab in one command.
//!
//! Starts `dnsd`, `smtpd` and `pop3d` in one process on loopback with a
//! built-in configuration that reproduces the lab: the zone
//! `csuvnetwork.com` exactly as the lab writes it, the lab's
//! `mydestination`, users `user1` and `user2` (created on first start with
//! generated passwords printed once), data under one directory, and
//! protocol transcripts on. TLS too: on first start a local CA
//! (`<data>/tls/ca.pem`) and a certificate for `mail.csuvnetwork.com`,
//! `localhost` and `127.0.0.1` signed by it; STARTTLS on 2525/2587, STLS on
//! 1110, implicit TLS on 2465 (submissions) and 1995 (pop3s). Passwords in
//! the clear stay allowed from loopback, where the lab listens (as Postfix
//! and Dovecot allow them there). Every port is bound before any account is
//! created, so a port already taken stops the run before a password is
//! generated. SIGHUP reloads each of the three once; Ctrl-C stops all
//! three cleanly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), maillab::Error> {
//! let opts = maillab::Options::default(); // ./lab-data, the usual ports
//! maillab::run(opts).await
//! # }
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mail_config::Config;
use netkit::certgen::LocalCa;
use netkit::Service;
use tracing::{error, info};

/// The lab's users.
pub const LAB_USERS: [&str; 2] = ["user1", "user2"];

/// What `maillab` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory holding the Maildirs, the passwd-file and the aliases.
    pub data_dir: PathBuf,
    /// A configuration file to use instead of the built-in one (its
    /// `[dnsd]` zones are used if it has any; else the lab's zone). Its
    /// paths replace `data_dir`.
    pub config: Option<PathBuf>,
    /// Passwords to set: `(user, password)`. Users of the lab without one
    /// get a generated password on first start.
    pub passwords: Vec<(String, String)>,
    /// SMTP inbound listener (overrides the configuration).
    pub smtp: Option<SocketAddr>,
    /// SMTP submission listener (overrides the configuration).
    pub submission: Option<SocketAddr>,
    /// SMTP submissions (implicit TLS) listener (overrides the
    /// configuration).
    pub submissions: Option<SocketAddr>,
    /// POP3 listener (overrides the configuration).
    pub pop3: Option<SocketAddr>,
    /// POP3S (implicit TLS) listener (overrides the configuration).
    pub pop3s: Option<SocketAddr>,
    /// DNS listener (overrides the configuration).
    pub dns: Option<SocketAddr>,
    /// Log protocol transcripts.
    pub transcript: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data_dir: PathBuf::from("lab-data"),
            config: None,
            passwords: Vec::new(),
            smtp: None,
            submission: None,
            submissions: None,
            pop3: None,
            pop3s: None,
            dns: None,
            transcript: true,
        }
    }
}

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] mail_config::ConfigError),
    /// Creating the accounts.
    #[error(transparent)]
    Accounts(#[from] mailctl::CtlError),
    /// The SMTP server.
    #[error("smtpd: {0}")]
    Smtpd(#[from] smtpd::Error),
    /// The POP3 server.
    #[error("pop3d: {0}")]
    Pop3d(#[from] pop3d::Error),
    /// The DNS server.
    #[error("dnsd: {0}")]
    Dnsd(#[from] dnsd::Error),
    /// Files and signals.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Making the lab's CA or certificate.
    #[error("TLS certificate: {0}")]
    CertGen(#[from] netkit::certgen::CertGenError),
}

/// The lab's CA and server certificate: `<data>/tls/`.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The configuration the lab runs with: the file if given, else the
/// built-in one with every path under `data_dir`; listener overrides and
/// transcripts applied.
pub fn lab_config(opts: &Options) -> Result<Config, Error> {
    let mut cfg = match &opts.config {
        Some(p) => Config::load(p)?,
        None => {
            let mut c = Config::from_toml_str("", Path::new("."))?;
            c.global.maildir_root = opts.data_dir.join("mail");
            c.global.passwd_file = opts.data_dir.join("passwd");
            c.global.aliases_file = opts.data_dir.join("aliases");
            c.smtpd.queue_directory = opts.data_dir.join("queue");
            let tls = tls_dir(&opts.data_dir);
            c.tls.certificates = vec![mail_config::CertificateFiles {
                cert: tls.join(format!("{}.pem", c.global.hostname)),
                key: tls.join(format!("{}.key", c.global.hostname)),
            }];
            c.smtpd.submissions_listen = vec![SocketAddr::from(([127, 0, 0, 1], 2465))];
            c.pop3d.pop3s_listen = vec![SocketAddr::from(([127, 0, 0, 1], 1995))];
            c
        }
    };
    if let Some(a) = opts.smtp {
        cfg.smtpd.listen = vec![a];
    }
    if let Some(a) = opts.submission {
        cfg.smtpd.submission_listen = vec![a];
    }
    if let Some(a) = opts.submissions {
        cfg.smtpd.submissions_listen = vec![a];
    }
    if let Some(a) = opts.pop3 {
        cfg.pop3d.listen = vec![a];
    }
    if let Some(a) = opts.pop3s {
        cfg.pop3d.pop3s_listen = vec![a];
    }
    if let Some(a) = opts.dns {
        cfg.dnsd.listen = vec![a];
    }
    if cfg.resolver.name_servers.is_empty() {
        // The lab is a network of its own: outbound delivery asks the
        // lab's DNS server, never the host's resolver.
        cfg.resolver.name_servers = cfg.dnsd.listen.clone();
    }
    cfg.global.transcript |= opts.transcript;
    Ok(cfg)
}

/// Create the lab's users when missing (printing generated passwords
/// once), apply requested passwords, and make `postmaster` reach user1.
/// Returns what to tell the user.
pub fn ensure_accounts(cfg: &Config, opts: &Options) -> Result<Vec<String>, Error> {
    let paths = mailctl::Paths {
        passwd: cfg.global.passwd_file.clone(),
        aliases: cfg.global.aliases_file.clone(),
        maildir_root: cfg.global.maildir_root.clone(),
    };
    if let Some(dir) = paths.passwd.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let scheme = mailctl::parse_scheme("SHA512-CRYPT")?;
    let text = match std::fs::read_to_string(&paths.passwd) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let existing = mailstore::PasswdFile::parse(&text, &paths.passwd);
    let exists = |u: &str| existing.get(u).is_some();
    let mut notes = Vec::new();
    let mut users: Vec<String> = LAB_USERS.iter().map(|u| u.to_string()).collect();
    for (u, _) in &opts.passwords {
        if !users.contains(u) {
            users.push(u.clone());
        }
    }
    for user in users {
        let given = opts
            .passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.clone());
        match (exists(&user), given) {
            (true, Some(pw)) => {
                mailctl::user_passwd(&paths, &user, &pw, &scheme)?;
                notes.push(format!("{user}: password set from the command line"));
            }
            (true, None) => notes.push(format!(
                "{user}: existing account (password unchanged; --password {user}=... sets one)"
            )),
            (false, Some(pw)) => {
                mailctl::user_add(&paths, &user, &pw, &scheme)?;
                notes.push(format!("{user}: created with the given password"));
            }
            (false, None) => {
                let pw = generate_password();
                mailctl::user_add(&paths, &user, &pw, &scheme)?;
                notes.push(format!(
                    "{user}: created, password {pw}   (shown only now; --password {user}=... changes it)"
                ));
            }
        }
    }
    if !paths.aliases.exists() {
        // RFC 5321 section 4.5.1: postmaster must reach someone.
        mailctl::alias_add(&paths, "postmaster", &["user1".to_string()])?;
    }
    Ok(notes)
}

/// 14 characters from an alphabet without look-alikes (no 0/O, 1/l/I).
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(14);
    let mut buf = [0u8; 64];
    // Rejection sampling keeps the choice uniform.
    while out.len() < 14 {
        if getrandom::getrandom(&mut buf).is_err() {
            // No OS randomness: fall back to the clock and address, which
            // is weak; say so rather than fail the lab.
            tracing::warn!("no OS random source; the generated password is weak");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            buf = [0; 64];
            for (i, b) in t.to_le_bytes().iter().cycle().take(64).enumerate() {
                if let Some(slot) = buf.get_mut(i) {
                    *slot = b.wrapping_add(i as u8);
                }
            }
        }
        let limit = 256 - (256 % ALPHABET.len());
        for &b in &buf {
            if (b as usize) < limit && out.len() < 14 {
                if let Some(&c) = ALPHABET.get(b as usize % ALPHABET.len()) {
                    out.push(c as char);
                }
            }
        }
    }
    out
}

/// The lab's CA, made on first start, and a certificate from it for each
/// configured certificate file pair that does not exist yet (for the
/// host name, `localhost` and the loopback addresses). Returns the CA.
pub fn ensure_certificates(cfg: &Config, opts: &Options) -> Result<Option<LocalCa>, Error> {
    if opts.config.is_some() {
        // A configuration file brings its own certificates.
        return Ok(None);
    }
    let ca = netkit::certgen::ensure_ca(&tls_dir(&opts.data_dir))?;
    let names: Vec<String> = [
        cfg.global.hostname.as_str(),
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    for c in &cfg.tls.certificates {
        if !c.cert.exists() || !c.key.exists() {
            netkit::certgen::issue(&ca, &names, &c.cert, &c.key)?;
            info!(cert = %c.cert.display(), "made the lab's server certificate");
        }
    }
    Ok(Some(ca))
}

/// The zones served when the configuration lists none: the lab's.
fn lab_zones() -> Vec<(String, dnsd::ZoneSource)> {
    vec![(
        dnsd::LAB_ORIGIN.to_string(),
        dnsd::ZoneSource::Text {
            name: "csuvnetwork.com.zone (built in)".into(),
            text: dnsd::LAB_ZONE.into(),
        },
    )]
}

/// An empty passwd-file where there is none, so the servers can start
/// before the accounts exist (they reread it when it changes).
fn ensure_passwd_file(cfg: &Config) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = &cfg.global.passwd_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The three servers, started; one [`Service`] for the signal loop.
pub struct Lab {
    dns: dnsd::Running,
    smtp: smtpd::Running,
    pop3: pop3d::Running,
}

impl Lab {
    /// Bind and start all three, or stop those already started and say
    /// which failed.
    pub async fn start(cfg: &Config) -> Result<Lab, Error> {
        ensure_passwd_file(cfg)?;
        let dns = dnsd::start_with(cfg.clone(), lab_zones()).await?;
        let smtp = match smtpd::start(cfg.clone()).await {
            Ok(s) => s,
            Err(e) => {
                dns.stop().await;
                return Err(e.into());
            }
        };
        let pop3 = match pop3d::start(cfg.clone()).await {
            Ok(p) => p,
            Err(e) => {
                tokio::join!(dns.stop(), smtp.stop());
                return Err(e.into());
            }
        };
        Ok(Lab { dns, smtp, pop3 })
    }

    /// Where DNS answers.
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        self.dns.local_addrs()
    }
}

impl Service for Lab {
    type Error = String;

    /// Hand the reread configuration to each server once; the zones,
    /// accounts and aliases are reread by the server they belong to.
    fn reload(&self, cfg: Config) -> Result<(), String> {
        info!("SIGHUP: rereading configuration, accounts, aliases and zones");
        let results = [
            (
                "smtpd",
                self.smtp.reload(cfg.clone()).map_err(|e| e.to_string()),
            ),
            (
                "pop3d",
                self.pop3.reload(cfg.clone()).map_err(|e| e.to_string()),
            ),
            ("dnsd", self.dns.reload(cfg).map_err(|e| e.to_string())),
        ];
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    async fn stop(self) {
        println!("stopping...");
        tokio::join!(self.smtp.stop(), self.pop3.stop(), self.dns.stop());
    }
}

/// Start everything, create the accounts, print how to use it, run until
/// Ctrl-C or SIGTERM.
pub async fn run(opts: Options) -> Result<(), Error> {
    let cfg = lab_config(&opts)?;
    // Before anything starts: a SIGHUP or Ctrl-C while the accounts are
    // made is served afterwards, not fatal.
    let signals = netkit::Signals::new()?;
    let ca = ensure_certificates(&cfg, &opts)?;
    // Bind first: a port already taken must end the run before a password
    // is generated, or it would be lost (the next start finds the account).
    let lab = Lab::start(&cfg).await?;
    let notes = match ensure_accounts(&cfg, &opts) {
        Ok(n) => n,
        Err(e) => {
            lab.stop().await;
            return Err(e);
        }
    };
    // The aliases file may be new: smtpd and pop3d read it on reload.
    let reread = [
        lab.smtp.reload(cfg.clone()).map_err(|e| e.to_string()),
        lab.pop3.reload(cfg.clone()).map_err(|e| e.to_string()),
    ];
    for e in reread.into_iter().filter_map(Result::err) {
        error!(error = %e, "rereading the new accounts failed");
    }
    println!("csuv-mail lab: domain csuvnetwork.com\n");
    for n in &notes {
        println!("  {n}");
    }
    println!("{}", banner(&cfg, &lab, ca.as_ref()));
    netkit::serve_until_signalled(signals, lab, || {
        lab_config(&opts).map_err(|e| e.to_string())
    })
    .await;
    println!("stopped.");
    Ok(())
}

fn banner(cfg: &Config, lab: &Lab, ca: Option<&LocalCa>) -> String {
    let (dns, smtp, pop3) = (lab.dns_addrs(), &lab.smtp, &lab.pop3);
    let first = |v: &[SocketAddr]| v.first().map(|a| a.to_string()).unwrap_or_default();
    let (smtp_a, sub_a, pop_a, dns_a) = (
        first(smtp.inbound_addrs()),
        first(smtp.submission_addrs()),
        first(pop3.addrs()),
        dns.first().copied(),
    );
    let port = |s: &str| s.rsplit(':').next().unwrap_or_default().to_string();
    let mut b = String::from("\n");
    for (name, addrs) in [
        ("DNS (UDP+TCP)", dns.to_vec()),
        ("SMTP inbound", smtp.inbound_addrs().to_vec()),
        (
            "SMTP submission (AUTH required)",
            smtp.submission_addrs().to_vec(),
        ),
        (
            "SMTP submissions (implicit TLS)",
            smtp.submissions_addrs().to_vec(),
        ),
        ("POP3", pop3.addrs().to_vec()),
        ("POP3S (implicit TLS)", pop3.pop3s_addrs().to_vec()),
    ] {
        if addrs.is_empty() {
            continue;
        }
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        b.push_str(&format!("  {name:<34} {}\n", list.join(", ")));
    }
    b.push_str(&format!(
        "\n  data: {} (Maildirs), {} (accounts)\n",
        cfg.global.maildir_root.display(),
        cfg.global.passwd_file.display()
    ));
    if let Some(d) = dns_a {
        b.push_str(&format!(
            "\nTry it:\n  dig @{} -p {} MX csuvnetwork.com\n",
            d.ip(),
            d.port()
        ));
    }
    b.push_str(&format!(
        "  swaks --server {smtp_a} --auth LOGIN --auth-user user2 --auth-password PASSWORD \\\n        --from user2@mail.csuvnetwork.com --to user1@csuvnetwork.com\n"
    ));
    b.push_str(&format!(
        "  curl pop3://{pop_a}/1 --user user1:PASSWORD\n  python3 -c 'import smtplib; s = smtplib.SMTP(\"127.0.0.1\", {}); s.login(\"user2\", \"PASSWORD\"); \\\n      s.sendmail(\"user2@mail.csuvnetwork.com\", [\"user1@csuvnetwork.com\"], \"Subject: hi\\n\\nhello\"); s.quit()'\n",
        port(&sub_a)
    ));
    if let Some(ca) = ca {
        let cafile = ca.cert.display();
        b.push_str(&format!(
            "\nTLS: certificates from the lab's own CA {cafile}\n     ({})\n",
            ca.fingerprint
        ));
        b.push_str(&format!(
            "  swaks --server {sub_a} --tls --tls-verify --tls-ca-path {cafile} --auth PLAIN \\\n        --auth-user user2 --auth-password PASSWORD --from user2@mail.csuvnetwork.com --to user1@csuvnetwork.com\n"
        ));
        b.push_str(&format!(
            "  curl --ssl-reqd --cacert {cafile} pop3://{pop_a}/1 --user user1:PASSWORD\n"
        ));
        b.push_str(&format!(
            "  openssl s_client -starttls smtp -connect {sub_a} -CAfile {cafile} -verify_return_error\n"
        ));
        if let Some(a) = pop3.pop3s_addrs().first() {
            b.push_str(&format!(
                "  openssl s_client -connect {a} -CAfile {cafile} -verify_return_error\n"
            ));
        }
    }
    b.push_str("\nProtocol transcripts (C:/S: lines) follow on stderr. Ctrl-C stops all three.\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_and_unambiguous() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 14);
        assert_ne!(a, b);
        assert!(!a.contains(['0', 'O', '1', 'l', 'I']));
    }

    #[test]
    fn accounts_created_once_then_kept_or_reset() {
        let dir = std::env::temp_dir().join(format!("maillab-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = Options {
            data_dir: dir.clone(),
            ..Options::default()
        };
        let cfg = lab_config(&opts).unwrap();
        let notes = ensure_accounts(&cfg, &opts).unwrap();
        assert!(
            notes[0].starts_with("user1: created, password "),
            "{notes:?}"
        );
        let passwd = std::fs::read_to_string(dir.join("passwd")).unwrap();
        assert!(passwd.starts_with("user1:{SHA512-CRYPT}$6$"), "{passwd}");
        assert!(dir.join("mail/user2/Maildir/new").is_dir());
        assert!(std::fs::read_to_string(dir.join("aliases"))
            .unwrap()
            .contains("postmaster"));
        // Second start: nothing printed about passwords, nothing changed.
        let notes = ensure_accounts(&cfg, &opts).unwrap();
        assert!(notes[0].contains("existing account"), "{notes:?}");
        assert_eq!(std::fs::read_to_string(dir.join("passwd")).unwrap(), passwd);
        // --password resets it.
        opts.passwords = vec![("user1".into(), "new-secret".into())];
        ensure_accounts(&cfg, &opts).unwrap();
        let accounts = mailstore::Accounts::open(dir.join("passwd")).unwrap();
        assert!(accounts
            .verify_password("user1", b"new-secret")
            .unwrap()
            .is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_port_ends_the_run_before_any_account_exists() {
        let dir = std::env::temp_dir().join(format!("maillab-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let opts = Options {
            data_dir: dir.clone(),
            smtp: Some(any),
            submission: Some(any),
            submissions: Some(any),
            pop3: Some(busy.local_addr().unwrap()),
            pop3s: Some(any),
            dns: Some(any),
            transcript: false,
            ..Options::default()
        };
        let e = run(opts.clone()).await.unwrap_err().to_string();
        assert!(e.contains(&busy.local_addr().unwrap().to_string()), "{e}");
        // No account was made, so the next start creates them and shows
        // their passwords.
        let passwd = std::fs::read_to_string(dir.join("passwd")).unwrap();
        assert_eq!(passwd, "");
        let cfg = lab_config(&opts).unwrap();
        let notes = ensure_accounts(&cfg, &opts).unwrap();
        assert!(
            notes[0].starts_with("user1: created, password "),
            "{notes:?}"
        );
        // The servers started before pop3d failed were stopped: their
        // ports can be bound again at once.
        drop(busy);
        let lab = Lab::start(&cfg).await.unwrap();
        let dns = lab.dns_addrs()[0];
        lab.stop().await;
        std::net::UdpSocket::bind(dns).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
