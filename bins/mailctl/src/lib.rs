//! `mailctl`: account and alias administration, the mail system's
//! `useradd user1; passwd user1`.
//!
//! It reads the configuration the daemons read (`--config FILE`, or like
//! them the built-in lab configuration without it), edits the
//! Dovecot-compatible passwd-file and the `/etc/aliases`-style file named
//! there (the daemons notice changes by themselves), and creates each
//! user's Maildir. The editing, the checks and local delivery are
//! [`mailstore`]'s; this crate is the command line around them.
//!
//! ```
//! use mailctl::{Paths, user_add, user_list, alias_add, alias_list};
//! use mailstore::Scheme;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let paths = Paths {
//!     passwd: dir.path().join("passwd"),
//!     aliases: dir.path().join("aliases"),
//!     maildir_root: dir.path().join("mail"),
//! };
//! user_add(&paths, "user1", "secret", &Scheme::Sha512Crypt).unwrap();
//! alias_add(&paths, "postmaster", &["user1".to_string()]).unwrap();
//! assert_eq!(user_list(&paths).unwrap(), ["user1 SHA512-CRYPT"]);
//! assert_eq!(alias_list(&paths).unwrap(), ["postmaster: user1"]);
//! assert!(dir.path().join("mail/user1/Maildir/new").is_dir());
//! ```
#![forbid(unsafe_code)]

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mail_config::Config;
use mailstore::{Accounts, Aliases, PasswdFile, Router, Scheme, Store};

/// Command line of `mailctl`.
#[derive(Debug, Parser)]
#[command(name = "mailctl", version, about = "Manage mail accounts and aliases")]
pub struct Cli {
    /// The configuration file the daemons read: its `[global]` section
    /// names the files, the local domains and the host name. Without it,
    /// the daemons' built-in lab configuration (files under ./lab-data).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// The passwd-file (Dovecot format) holding the accounts, instead of
    /// the configuration's `passwd_file`.
    #[arg(long, global = true)]
    pub passwd: Option<PathBuf>,
    /// The aliases file (/etc/aliases format), instead of the
    /// configuration's `aliases_file`.
    #[arg(long, global = true)]
    pub aliases: Option<PathBuf>,
    /// Directory holding one NAME/Maildir per user, instead of the
    /// configuration's `maildir_root`.
    #[arg(long, global = true)]
    pub maildir_root: Option<PathBuf>,
    /// smtpd's queue journal directory, instead of the configuration's
    /// `queue_directory`.
    #[arg(long, global = true)]
    pub queue_directory: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Aliases.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// smtpd's queue: messages acknowledged and not yet delivered.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Certificates from a local CA (for a lab or test network; a public
    /// server uses a public CA's, e.g. certbot's files).
    #[command(subcommand)]
    Tls(TlsCmd),
    /// DKIM keys (OpenDKIM's `opendkim-genkey`).
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// Deliver a message from standard input to local recipients (like
    /// Dovecot's `dovecot-lda` or Postfix's `sendmail` for local mail).
    Deliver {
        /// Envelope sender (empty for the null sender `<>`).
        #[arg(long, short = 'f', default_value = "")]
        from: String,
        /// Local domains (Postfix's mydestination), instead of the
        /// configuration's `local_domains`.
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Host name for the Received header, instead of the
        /// configuration's `hostname`.
        #[arg(long)]
        hostname: Option<String>,
        /// Recipients: `user`, `alias` or `user@local.domain`.
        #[arg(required = true)]
        recipients: Vec<String>,
    },
}

/// `mailctl dkim ...`.
#[derive(Debug, Subcommand)]
pub enum DkimCmd {
    /// Make a signing key for `--domain` and `--selector`: writes the
    /// private key (mode 0600) and prints the TXT record for the zone file
    /// and the `[dkim]` line that uses the key.
    Keygen {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// The selector (`s=`): the record goes to
        /// `<selector>._domainkey.<domain>`.
        #[arg(long)]
        selector: String,
        /// `ed25519` (RFC 8463) or `rsa` (2048 bits; what every verifier
        /// knows, so publish one beside an Ed25519 key).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// Where to write `<selector>._domainkey.<domain>.key`.
        #[arg(long, default_value = "lab-data/dkim")]
        out_dir: PathBuf,
    },
}

/// `mailctl tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Make a server certificate and key signed by the local CA in
    /// `--ca-dir` (made there first if missing), for the names given;
    /// prints the `[tls]` lines that use them.
    Cert {
        /// DNS names or IP addresses the certificate is for (the first is
        /// its common name), e.g. `--name mail.example.org --name 127.0.0.1`.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Directory of the CA (`ca.pem`, `ca.key`).
        #[arg(long, default_value = "lab-data/tls")]
        ca_dir: PathBuf,
        /// Where to write `<first name>.pem` (the chain) and `.key`;
        /// default: the CA's directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// `mailctl queue ...` (Postfix's `postqueue -p` and `postqueue -f`).
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List queued messages: local deliveries waiting (queue id, size,
    /// mailboxes, failed attempts, last reason), then mail for other
    /// domains as `mailq` shows it (queue id, size, arrival, sender, each
    /// recipient with the reason it is deferred). Works while smtpd runs.
    List {
        /// One JSON array instead (Postfix's `postqueue -j` gives one
        /// object per line): every message with its recipients, state,
        /// attempts, last error and next attempt.
        #[arg(long)]
        json: bool,
    },
    /// Hold a message for other domains: nothing is tried until it is
    /// released (Postfix's `postsuper -h`).
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message and ask smtpd to try it now (`postsuper -H`).
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message for other domains from the queue, without a
    /// failure notice (`postsuper -d`).
    Delete {
        /// Queue id.
        id: String,
    },
    /// Ask the running smtpd to retry every deferred delivery now
    /// (SIGUSR1 to the process holding the queue).
    Flush,
}

/// `mailctl user ...`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an account and its Maildir.
    Add {
        /// User name: letters, digits, '.', '_', '-' (stored in lower case).
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Password scheme: SHA512-CRYPT (default), SHA256-CRYPT, ARGON2ID,
        /// or PLAIN (needed for APOP/CRAM-MD5; stores the clear password).
        #[arg(long, default_value = "SHA512-CRYPT")]
        scheme: String,
    },
    /// Change an account's password.
    Passwd {
        /// User name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Password scheme (as for `user add`).
        #[arg(long, default_value = "SHA512-CRYPT")]
        scheme: String,
    },
    /// Remove an account (its Maildir is kept).
    Del {
        /// User name.
        name: String,
    },
    /// List accounts and their password schemes.
    List,
}

/// `mailctl alias ...`
#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Create an alias delivering to accounts, other aliases or addresses
    /// in other domains.
    Add {
        /// Alias name.
        name: String,
        /// Targets: an account or alias (`user`, `user@local.domain`), or
        /// an address in another domain.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias.
    Del {
        /// Alias name.
        name: String,
    },
    /// List aliases.
    List,
}

/// Errors of `mailctl`, each worded for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Unknown scheme name.
    #[error("unknown password scheme {0:?} (use SHA512-CRYPT, SHA256-CRYPT, ARGON2ID or PLAIN)")]
    BadScheme(String),
    /// The passwd-file does not exist (yet).
    #[error(
        "{}: no such passwd-file; create the first account with `mailctl user add NAME`, \
         or name the daemons' configuration with --config FILE",
        .0.display()
    )]
    NoPasswdFile(PathBuf),
    /// Password entry problems.
    #[error("{0}")]
    Password(&'static str),
    /// The configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] mail_config::ConfigError),
    /// Store errors: existing or missing names, invalid names, files that
    /// cannot be read or written, recipients that cannot be delivered to.
    #[error(transparent)]
    Store(#[from] mailstore::Error),
    /// Other I/O (the terminal, standard input).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Making a DKIM key.
    #[error(transparent)]
    Dkim(#[from] mail_auth_glue::Error),
    /// Making a certificate.
    #[error(transparent)]
    CertGen(#[from] netkit::certgen::CertGenError),
}

/// Result with [`CtlError`].
pub type Result<T> = std::result::Result<T, CtlError>;

/// The files `mailctl` works on.
#[derive(Debug, Clone)]
pub struct Paths {
    /// passwd-file.
    pub passwd: PathBuf,
    /// aliases file.
    pub aliases: PathBuf,
    /// Maildir root (`<root>/<user>/Maildir`).
    pub maildir_root: PathBuf,
}

/// What the commands need from the configuration: the files, and for
/// routing and delivery the local domains and the host name.
#[derive(Debug, Clone)]
pub struct Site {
    /// The files.
    pub paths: Paths,
    /// Local domains (`mydestination`).
    pub local_domains: Vec<String>,
    /// This host's name (`Received:` headers, Maildir file names).
    pub hostname: String,
    /// smtpd's queue journal directory.
    pub queue_dir: PathBuf,
}

impl Site {
    /// The site a configuration describes.
    pub fn from_config(cfg: &Config) -> Self {
        let g = &cfg.global;
        Site {
            paths: Paths {
                passwd: g.passwd_file.clone(),
                aliases: g.aliases_file.clone(),
                maildir_root: g.maildir_root.clone(),
            },
            local_domains: g.local_domains.clone(),
            hostname: g.hostname.clone(),
            queue_dir: cfg.smtpd.queue_directory.clone(),
        }
    }

    /// The site of the command line: the configuration file (or the
    /// built-in one, as the daemons use), then the file options over it.
    pub fn from_cli(cli: &Cli) -> Result<Self> {
        let mut site = Site::from_config(&Config::load_or_builtin(cli.config.as_deref())?);
        let p = &mut site.paths;
        for (over, path) in [
            (&cli.passwd, &mut p.passwd),
            (&cli.aliases, &mut p.aliases),
            (&cli.maildir_root, &mut p.maildir_root),
        ] {
            if let Some(o) = over {
                path.clone_from(o);
            }
        }
        if let Some(q) = &cli.queue_directory {
            site.queue_dir.clone_from(q);
        }
        Ok(site)
    }

    /// `paths` with the built-in configuration's domains and host name.
    pub fn with_paths(paths: Paths) -> Result<Self> {
        let cfg = Config::load_or_builtin(None)?;
        Ok(Site {
            paths,
            ..Site::from_config(&cfg)
        })
    }

    /// The router the daemons would use (accounts, aliases, domains).
    pub fn router(&self) -> Result<Router> {
        let accounts = Arc::new(Accounts::open(&self.paths.passwd)?);
        let aliases = Arc::new(Aliases::open(&self.paths.aliases)?);
        Ok(Router::new(&self.local_domains, accounts, Some(aliases)))
    }

    /// The Maildir store.
    pub fn store(&self) -> Result<Store> {
        Ok(Store::with_hostname(
            &self.paths.maildir_root,
            &self.hostname,
        )?)
    }
}

/// Parses a scheme name given on the command line.
pub fn parse_scheme(s: &str) -> Result<Scheme> {
    Scheme::from_name(s).ok_or_else(|| CtlError::BadScheme(s.to_string()))
}

/// The passwd-file's accounts; a missing file is empty when `missing_ok`,
/// else the error says how to create it.
fn accounts_in(path: &Path, missing_ok: bool) -> Result<PasswdFile> {
    match PasswdFile::load(path) {
        Err(mailstore::Error::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            if missing_ok {
                Ok(PasswdFile::default())
            } else {
                Err(CtlError::NoPasswdFile(path.to_path_buf()))
            }
        }
        r => Ok(r?),
    }
}

/// Adds an account with `password` hashed by `scheme` and creates its
/// Maildir (see [`mailstore::add_account`]).
pub fn user_add(paths: &Paths, name: &str, password: &str, scheme: &Scheme) -> Result<()> {
    let store = Store::open(&paths.maildir_root)?;
    mailstore::add_account(&paths.passwd, &store, name, password, scheme)?;
    Ok(())
}

/// Replaces an account's password, keeping the line's other fields.
pub fn user_passwd(paths: &Paths, name: &str, password: &str, scheme: &Scheme) -> Result<()> {
    Ok(mailstore::set_password(
        &paths.passwd,
        name,
        password,
        scheme,
    )?)
}

/// Removes an account's line; its Maildir stays.
pub fn user_del(paths: &Paths, name: &str) -> Result<()> {
    Ok(mailstore::remove_account(&paths.passwd, name)?)
}

/// Lists accounts as `name SCHEME`; a missing passwd-file is an error.
pub fn user_list(paths: &Paths) -> Result<Vec<String>> {
    Ok(accounts_in(&paths.passwd, false)?
        .accounts()
        .map(|a| format!("{} {}", a.name, a.scheme))
        .collect())
}

/// Adds an alias `name: target, ...`; a local target must be an account or
/// an alias, with the built-in configuration's local domains.
pub fn alias_add(paths: &Paths, name: &str, targets: &[String]) -> Result<()> {
    let site = Site::with_paths(paths.clone())?;
    Ok(mailstore::add_alias(
        &paths.aliases,
        name,
        targets,
        &site.router()?,
    )?)
}

/// Removes an alias (with its continuation lines).
pub fn alias_del(paths: &Paths, name: &str) -> Result<()> {
    Ok(mailstore::remove_alias(&paths.aliases, name)?)
}

/// Lists aliases as `name: target, ...` (none when the file is missing:
/// the daemons read that as no aliases too).
pub fn alias_list(paths: &Paths) -> Result<Vec<String>> {
    let map = Aliases::open(&paths.aliases)?.map()?;
    Ok(map
        .entries()
        .map(|(n, t)| format!("{n}: {}", t.join(", ")))
        .collect())
}

/// Where passwords come from.
pub trait PasswordSource {
    /// Returns the new password.
    fn password(&mut self, for_user: &str) -> Result<String>;
}

/// First line of a reader (`--password-stdin`), without its line end.
pub struct FromReader<R>(pub R);

impl<R: BufRead> PasswordSource for FromReader<R> {
    fn password(&mut self, _for_user: &str) -> Result<String> {
        let mut line = String::new();
        self.0.read_line(&mut line)?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            return Err(CtlError::Password("no password on standard input"));
        }
        Ok(p)
    }
}

/// Interactive prompt on the terminal: asks twice with echo off.
pub struct Prompt;

impl PasswordSource for Prompt {
    fn password(&mut self, for_user: &str) -> Result<String> {
        if !io::stdin().is_terminal() {
            return Err(CtlError::Password(
                "standard input is not a terminal: use --password-stdin",
            ));
        }
        let first = read_hidden(&format!("New password for {for_user}: "))?;
        let second = read_hidden("Retype new password: ")?;
        if first != second {
            return Err(CtlError::Password("passwords do not match"));
        }
        if first.is_empty() {
            return Err(CtlError::Password("empty password"));
        }
        Ok(first)
    }
}

/// Reads a line with terminal echo off (via `stty`, which keeps this
/// program free of unsafe terminal calls).
fn read_hidden(prompt: &str) -> Result<String> {
    let stty = |arg: &str| {
        Command::new("stty")
            .arg(arg)
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // Echo off before the prompt shows, so a fast typist is never echoed.
    let echo_off = stty("-echo");
    let mut err = io::stderr();
    let mut line = String::new();
    let r = write!(err, "{prompt}")
        .and_then(|()| err.flush())
        .and_then(|()| io::stdin().lock().read_line(&mut line));
    // Restore echo whatever happened.
    if echo_off {
        stty("echo");
    }
    let _ = writeln!(err);
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `mailctl queue list`: one line per queued message, then a summary.
pub fn queue_list(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(vec!["queue is empty".into()]);
    }
    let entries = mailstore::queue::inspect(dir)?;
    let mut out: Vec<String> = entries
        .iter()
        .map(|e| {
            let state = match (&e.last_error, e.placed) {
                (_, true) => "placed, awaiting checkpoint".to_string(),
                (Some(why), false) => format!("deferred ({} failed attempts): {why}", e.failures),
                (None, false) => "waiting for delivery".to_string(),
            };
            format!(
                "{} {} bytes to {}: {state}",
                e.queue_id,
                e.size,
                e.mailboxes.join(",")
            )
        })
        .collect();
    let outgoing =
        mailstore::outbound::OutboundQueue::list(dir.join(mailstore::outbound::DIR_NAME))?;
    if !outgoing.is_empty() {
        out.push("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------".into());
        for m in &outgoing {
            out.extend(mailq_entry(m));
        }
    }
    out.push(match entries.len() + outgoing.len() {
        0 => "queue is empty".into(),
        n => format!("{n} queued"),
    });
    Ok(out)
}

/// A JSON string literal (RFC 8259 section 7).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `mailctl queue list --json`: one array of every queued message, local
/// deliveries (`"queue": "local"`) and mail for other domains
/// (`"queue": "outbound"`), with times as Unix seconds.
pub fn queue_json(dir: &Path) -> Result<Vec<String>> {
    use mailstore::outbound::RcptState;
    let mut items = Vec::new();
    if dir.exists() {
        for e in mailstore::queue::inspect(dir)? {
            let state = if e.placed {
                "placed"
            } else if e.last_error.is_some() {
                "deferred"
            } else {
                "pending"
            };
            let rcpts: Vec<String> = e
                .mailboxes
                .iter()
                .map(|m| {
                    format!(
                        "{{\"address\":{},\"state\":\"{state}\",\"attempts\":{},\"last_error\":{}}}",
                        json_str(m),
                        e.failures,
                        e.last_error.as_deref().map_or("null".into(), json_str)
                    )
                })
                .collect();
            items.push(format!(
                "{{\"queue\":\"local\",\"queue_id\":{},\"size\":{},\"recipients\":[{}]}}",
                json_str(&e.queue_id),
                e.size,
                rcpts.join(",")
            ));
        }
    }
    for m in mailstore::outbound::OutboundQueue::list(dir.join(mailstore::outbound::DIR_NAME))? {
        let rcpts: Vec<String> = m
            .recipients
            .iter()
            .map(|r| {
                let (state, next) = match r.state {
                    RcptState::Pending => ("pending", "null".to_string()),
                    RcptState::Deferred { next } => ("deferred", unix(next).to_string()),
                    RcptState::Sent => ("sent", "null".into()),
                    RcptState::Bounced => ("bounced", "null".into()),
                };
                let last = r.last.as_ref();
                format!(
                    "{{\"address\":{},\"state\":\"{state}\",\"attempts\":{},\"last_error\":{},\"status\":{},\"relay\":{},\"next_attempt\":{next}}}",
                    json_str(&r.rcpt.address),
                    r.attempts,
                    last.map_or("null".into(), |l| json_str(&l.text)),
                    last.map_or("null".into(), |l| json_str(&l.status)),
                    last.and_then(|l| l.remote.as_deref()).map_or("null".into(), json_str),
                )
            })
            .collect();
        let e = &m.envelope;
        items.push(format!(
            "{{\"queue\":\"outbound\",\"queue_id\":{},\"arrival\":{},\"size\":{},\"sender\":{},\"held\":{},\"recipients\":[{}]}}",
            json_str(&e.id),
            unix(e.arrival),
            m.size,
            json_str(&e.sender),
            m.held,
            rcpts.join(",")
        ));
    }
    Ok(vec![format!("[{}]", items.join(","))])
}

/// One message as Postfix's `mailq` shows it: `!` after the id when held;
/// each recipient not yet delivered, after the reason of its last failure.
fn mailq_entry(m: &mailstore::outbound::QueuedMessage) -> Vec<String> {
    use mailstore::outbound::RcptState;
    let e = &m.envelope;
    let date = mailstore::rfc5322_date(e.arrival);
    // "Sun, 6 Dec 2026 08:21:51 +0000" -> "Sun Dec  6 08:21:51"
    let parts: Vec<&str> = date.split_whitespace().collect();
    let arrival = match parts.as_slice() {
        [wd, d, mon, _y, t, ..] => format!("{} {mon} {d:>2} {t}", wd.trim_end_matches(',')),
        _ => date.clone(),
    };
    let sender = if e.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &e.sender
    };
    let mut lines = vec![format!(
        "{:<11} {:>8} {arrival}  {sender}",
        format!("{}{}", e.id, if m.held { "!" } else { "" }),
        m.size
    )];
    for r in &m.recipients {
        if r.state.is_final() {
            continue;
        }
        if let (RcptState::Deferred { .. }, Some(last)) = (&r.state, &r.last) {
            lines.push(format!("{:42}({})", "", last.text));
        }
        lines.push(format!("{:42}{}", "", r.rcpt.address));
    }
    lines.push(String::new());
    lines
}

fn outgoing(dir: &Path) -> Result<mailstore::outbound::OutboundQueue> {
    let d = dir.join(mailstore::outbound::DIR_NAME);
    if !d.exists() {
        return Err(mailstore::Error::NotFound {
            kind: "queued message",
            name: String::new(),
        }
        .into());
    }
    Ok(mailstore::outbound::OutboundQueue::from_dir(d))
}

/// `mailctl queue hold|release|delete ID`.
pub fn queue_admin(dir: &Path, id: &str, action: &str) -> Result<Vec<String>> {
    let q = outgoing(dir)?;
    let now = std::time::SystemTime::now();
    match action {
        "hold" => {
            q.set_held(id, true, now)?;
            Ok(vec![format!("{id}: placed on hold")])
        }
        "release" => {
            q.set_held(id, false, now)?;
            let mut out = vec![format!("{id}: released from hold")];
            out.extend(queue_flush(dir)?);
            Ok(out)
        }
        _ => {
            q.load(id)?;
            q.remove(id)?;
            Ok(vec![format!("{id}: removed")])
        }
    }
}

/// `mailctl queue flush`: SIGUSR1 to the smtpd holding the queue, through
/// `kill(1)` (this program stays free of unsafe system calls).
pub fn queue_flush(dir: &Path) -> Result<Vec<String>> {
    let Some(pid) = mailstore::queue::holder(dir)? else {
        return Ok(vec![
            "no smtpd holds the queue; its next start delivers every queued message".into(),
        ]);
    };
    let status = Command::new("kill")
        .arg("-USR1")
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("kill -USR1 {pid} failed")).into());
    }
    Ok(vec![format!(
        "asked smtpd (pid {pid}) to retry deferred deliveries now"
    )])
}

/// `mailctl tls cert`: a certificate for `names` from the CA in `ca_dir`.
pub fn tls_cert(names: &[String], ca_dir: &Path, out_dir: Option<&Path>) -> Result<Vec<String>> {
    let ca = netkit::certgen::ensure_ca(ca_dir)?;
    let out = out_dir.unwrap_or(ca_dir);
    let base = names.first().map_or("server", String::as_str);
    let (cert, key) = (
        out.join(format!("{base}.pem")),
        out.join(format!("{base}.key")),
    );
    netkit::certgen::issue(&ca, names, &cert, &key)?;
    Ok(vec![
        format!(
            "certificate {} (with the CA's appended), key {}",
            cert.display(),
            key.display()
        ),
        format!(
            "CA {} ({}): give it to clients to trust",
            ca.cert.display(),
            ca.fingerprint
        ),
        String::new(),
        "[tls]".into(),
        format!(
            "certificates = [{{ cert = {:?}, key = {:?} }}]",
            cert.display().to_string(),
            key.display().to_string()
        ),
    ])
}

/// `mailctl dkim keygen`: a new key in `out_dir`, never overwriting one.
pub fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    out_dir: &Path,
) -> Result<Vec<String>> {
    use mail_auth_glue::keys;
    use std::os::unix::fs::OpenOptionsExt;
    let alg: keys::Algorithm = algorithm.parse()?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let ok = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
    };
    if !ok(&domain) || !ok(selector) {
        return Err(mail_auth_glue::Error::Key(format!(
            "{domain:?} / {selector:?} is not a domain and selector"
        ))
        .into());
    }
    let generated = keys::generate(alg)?;
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!("{selector}._domainkey.{domain}.key"));
    // 0600 from creation: the key is never readable by others, even for
    // a moment; an existing key is kept (its record may be published).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(generated.private_pem.as_bytes())?;
    f.sync_all()?;
    let owner = keys::record_owner(selector, &domain);
    let mut out = vec![format!("; private key {}", path.display())];
    out.extend(
        keys::zone_record(&owner, &generated.record)
            .lines()
            .map(str::to_string),
    );
    out.push(String::new());
    out.push("[dkim]".into());
    out.push(format!(
        "keys = [{{ domain = {domain:?}, selector = {selector:?}, key_file = {:?} }}]",
        path.display().to_string()
    ));
    Ok(out)
}

/// Runs a parsed command line; returns the lines to print on stdout.
pub fn run(cli: Cli, stdin_source: &mut dyn PasswordSource) -> Result<Vec<String>> {
    let mut site = Site::from_cli(&cli)?;
    let paths = &site.paths;
    let mut password = |from_stdin: bool, user: &str| {
        if from_stdin {
            stdin_source.password(user)
        } else {
            Prompt.password(user)
        }
    };
    match cli.command {
        Cmd::User(UserCmd::Add {
            name,
            password_stdin,
            scheme,
        }) => {
            let scheme = parse_scheme(&scheme)?;
            let name = mailstore::normalize_name(&name)?;
            // Refuse before asking for a password twice.
            if accounts_in(&paths.passwd, true)?.get(&name).is_some() {
                return Err(mailstore::Error::Exists { kind: "user", name }.into());
            }
            let pw = password(password_stdin, &name)?;
            let store = site.store()?;
            mailstore::add_account(&paths.passwd, &store, &name, &pw, &scheme)?;
            Ok(vec![format!(
                "user {name} added ({scheme}), Maildir {}",
                store.maildir_path(&name).display()
            )])
        }
        Cmd::User(UserCmd::Passwd {
            name,
            password_stdin,
            scheme,
        }) => {
            let scheme = parse_scheme(&scheme)?;
            // Fail before prompting when the user does not exist.
            if accounts_in(&paths.passwd, false)?.get(&name).is_none() {
                let e = mailstore::Error::NotFound { kind: "user", name };
                return Err(e.into());
            }
            let pw = password(password_stdin, &name)?;
            user_passwd(paths, &name, &pw, &scheme)?;
            Ok(vec![format!("password of {name} changed ({scheme})")])
        }
        Cmd::User(UserCmd::Del { name }) => {
            user_del(paths, &name)?;
            Ok(vec![format!(
                "user {name} removed (Maildir kept under {})",
                paths.maildir_root.display()
            )])
        }
        Cmd::User(UserCmd::List) => user_list(paths),
        Cmd::Alias(AliasCmd::Add { name, targets }) => {
            mailstore::add_alias(&paths.aliases, &name, &targets, &site.router()?)?;
            Ok(vec![format!("alias {} added", name.to_lowercase())])
        }
        Cmd::Alias(AliasCmd::Del { name }) => {
            alias_del(paths, &name)?;
            Ok(vec![format!("alias {} removed", name.to_lowercase())])
        }
        Cmd::Alias(AliasCmd::List) => alias_list(paths),
        Cmd::Queue(QueueCmd::List { json: false }) => queue_list(&site.queue_dir),
        Cmd::Queue(QueueCmd::List { json: true }) => queue_json(&site.queue_dir),
        Cmd::Queue(QueueCmd::Flush) => queue_flush(&site.queue_dir),
        Cmd::Queue(QueueCmd::Hold { id }) => queue_admin(&site.queue_dir, &id, "hold"),
        Cmd::Queue(QueueCmd::Release { id }) => queue_admin(&site.queue_dir, &id, "release"),
        Cmd::Queue(QueueCmd::Delete { id }) => queue_admin(&site.queue_dir, &id, "delete"),
        Cmd::Tls(TlsCmd::Cert {
            names,
            ca_dir,
            out_dir,
        }) => tls_cert(&names, &ca_dir, out_dir.as_deref()),
        Cmd::Dkim(DkimCmd::Keygen {
            domain,
            selector,
            algorithm,
            out_dir,
        }) => dkim_keygen(&domain, &selector, &algorithm, &out_dir),
        Cmd::Deliver {
            from,
            domains,
            hostname,
            recipients,
        } => {
            if !domains.is_empty() {
                site.local_domains = domains;
            }
            if let Some(h) = hostname {
                site.hostname = h;
            }
            let r = mailstore::deliver_local(
                &site.store()?,
                &site.router()?,
                &from,
                &recipients,
                &site.hostname,
                &mut io::stdin().lock(),
            )?;
            let paths: Vec<String> = r.paths.iter().map(|p| p.display().to_string()).collect();
            Ok(vec![format!(
                "delivered as {} ({} bytes) to {}",
                r.queue_id,
                r.pop3_size,
                paths.join(", ")
            )])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            passwd: dir.join("etc/passwd"),
            aliases: dir.join("etc/aliases"),
            maildir_root: dir.join("mail"),
        }
    }

    #[test]
    fn library_calls_edit_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        assert!(matches!(user_list(&p), Err(CtlError::NoPasswdFile(_))));
        assert!(alias_list(&p).unwrap().is_empty(), "no aliases file: none");
        user_add(&p, "User1", "pw", &Scheme::Plain).unwrap();
        user_add(&p, "user2", "pw", &Scheme::Plain).unwrap();
        user_passwd(&p, "user2", "new", &Scheme::Sha256Crypt).unwrap();
        alias_add(
            &p,
            "team",
            &["user1".into(), "User2@csuvnetwork.com".into()],
        )
        .unwrap();
        let e = alias_add(&p, "x", &["nosuchuser".into()]).unwrap_err();
        assert_eq!(e.to_string(), "no account or alias named \"nosuchuser\"");
        assert_eq!(
            user_list(&p).unwrap(),
            ["user1 PLAIN", "user2 SHA256-CRYPT"]
        );
        assert_eq!(
            alias_list(&p).unwrap(),
            ["team: user1, user2@csuvnetwork.com"]
        );
        user_del(&p, "user2").unwrap();
        alias_del(&p, "team").unwrap();
        assert_eq!(user_list(&p).unwrap(), ["user1 PLAIN"]);
        assert!(alias_list(&p).unwrap().is_empty());
    }

    #[test]
    fn the_configuration_names_the_files_and_options_win() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mail.toml");
        std::fs::write(
            &conf,
            "[global]\nhostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
             passwd_file = \"etc/passwd\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["mailctl", "-c", conf.to_str().unwrap(), "user", "list"]);
        let site = Site::from_cli(&cli).unwrap();
        assert_eq!(site.paths.passwd, dir.path().join("etc/passwd"));
        // Unset keys take the daemons' defaults, relative to the file.
        assert_eq!(site.paths.aliases, dir.path().join("lab-data/aliases"));
        assert_eq!(site.local_domains, ["example.org"]);
        assert_eq!(site.hostname, "mx.example.org");
        let cli = Cli::parse_from([
            "mailctl",
            "user",
            "--config",
            conf.to_str().unwrap(),
            "--passwd",
            "/other/passwd",
            "list",
        ]);
        let site = Site::from_cli(&cli).unwrap();
        assert_eq!(site.paths.passwd, Path::new("/other/passwd"));
        assert_eq!(site.paths.maildir_root, dir.path().join("lab-data/mail"));
        // Without a file: the daemons' built-in configuration.
        let site = Site::from_cli(&Cli::parse_from(["mailctl", "user", "list"])).unwrap();
        assert_eq!(site.paths.passwd, Path::new("./lab-data/passwd"));
        assert_eq!(site.hostname, "mail.csuvnetwork.com");
        let e = Site::from_cli(&Cli::parse_from([
            "mailctl",
            "-c",
            dir.path().join("none.toml").to_str().unwrap(),
            "user",
            "list",
        ]))
        .unwrap_err();
        assert!(matches!(e, CtlError::Config(_)), "{e}");
    }

    #[test]
    fn password_sources() {
        let mut s = FromReader(&b"secret\r\nignored\n"[..]);
        assert_eq!(s.password("u").unwrap(), "secret");
        let mut e = FromReader(&b""[..]);
        assert!(matches!(e.password("u"), Err(CtlError::Password(_))));
    }

    #[test]
    fn outgoing_messages_as_mailq_shows_them() {
        use mailstore::outbound::{Attempt, OutEnvelope, OutRcpt, OutboundQueue, Outcome};
        use std::time::{Duration, UNIX_EPOCH};
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path().join(mailstore::outbound::DIR_NAME)).unwrap();
        let env = OutEnvelope {
            id: "4F2A91C0B7D3".into(),
            sender: "user2@csuvnetwork.com".into(),
            arrival: UNIX_EPOCH + Duration::from_secs(1_796_545_311),
            envid: None,
            ret: None,
            recipients: vec![OutRcpt::new("a@example.org"), OutRcpt::new("b@example.org")],
        };
        q.enqueue(&env, b"Subject: x\r\n\r\nhi\r\n").unwrap();
        q.record(
            "4F2A91C0B7D3",
            &[
                Attempt {
                    rcpt: 0,
                    relayed: false,
                    outcome: Outcome::Deferred {
                        next: UNIX_EPOCH + Duration::from_secs(1_796_545_611),
                    },
                    time: UNIX_EPOCH + Duration::from_secs(1_796_545_311),
                    status: "4.4.1".into(),
                    remote: None,
                    text: "connect to mx.example.org[192.0.2.1]:25: Connection refused".into(),
                },
                Attempt {
                    rcpt: 1,
                    relayed: false,
                    outcome: Outcome::Sent,
                    time: UNIX_EPOCH + Duration::from_secs(1_796_545_311),
                    status: "2.0.0".into(),
                    remote: None,
                    text: "250 ok".into(),
                },
            ],
        )
        .unwrap();
        let out = queue_list(dir.path()).unwrap();
        assert_eq!(
            out,
            [
                "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
                "4F2A91C0B7D3       18 Sun Dec  6 08:21:51  user2@csuvnetwork.com",
                "                                          (connect to mx.example.org[192.0.2.1]:25: Connection refused)",
                "                                          a@example.org",
                "",
                "1 queued",
            ]
        );
        let json = queue_json(dir.path()).unwrap().join("");
        assert_eq!(
            json,
            "[{\"queue\":\"outbound\",\"queue_id\":\"4F2A91C0B7D3\",\"arrival\":1796545311,\"size\":18,\
             \"sender\":\"user2@csuvnetwork.com\",\"held\":false,\"recipients\":[\
             {\"address\":\"a@example.org\",\"state\":\"deferred\",\"attempts\":1,\
             \"last_error\":\"connect to mx.example.org[192.0.2.1]:25: Connection refused\",\"status\":\"4.4.1\",\
             \"relay\":null,\"next_attempt\":1796545611},\
             {\"address\":\"b@example.org\",\"state\":\"sent\",\"attempts\":1,\"last_error\":\"250 ok\",\
             \"status\":\"2.0.0\",\"relay\":null,\"next_attempt\":null}]}]"
        );
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        queue_admin(dir.path(), "4F2A91C0B7D3", "hold").unwrap();
        assert!(queue_list(dir.path()).unwrap()[1].starts_with("4F2A91C0B7D3!"));
        queue_admin(dir.path(), "4F2A91C0B7D3", "delete").unwrap();
        assert_eq!(queue_list(dir.path()).unwrap(), ["queue is empty"]);
        assert!(queue_admin(dir.path(), "4F2A91C0B7D3", "delete").is_err());
    }
}
