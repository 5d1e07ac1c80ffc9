//! `mailctl`: account and alias administration, the mail system's
//! `useradd user1; passwd user1`.
//!
//! It edits the Dovecot-compatible passwd-file and the `/etc/aliases`-style
//! file that the daemons read (they notice changes by themselves), and
//! creates each user's Maildir. Every change rewrites the file atomically
//! (temporary file, fsync, rename, fsync directory) under an `flock` on
//! `<file>.lock`, so concurrent runs and readers never see a torn file.
//! Lines it does not touch (comments, other entries) are kept byte for byte.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::{Parser, Subcommand};
use mailstore::{atomic_write, hash_password, PasswdFile, Scheme, Store};

/// Command line of `mailctl`.
#[derive(Debug, Parser)]
#[command(name = "mailctl", version, about = "Manage mail accounts and aliases")]
pub struct Cli {
    /// The passwd-file (Dovecot format) holding the accounts.
    #[arg(long, global = true, default_value = "/etc/csuv-mail/passwd")]
    pub passwd: PathBuf,
    /// The aliases file (/etc/aliases format).
    #[arg(long, global = true, default_value = "/etc/csuv-mail/aliases")]
    pub aliases: PathBuf,
    /// Directory holding one NAME/Maildir per user.
    #[arg(long, global = true, default_value = "/var/lib/csuv-mail/mail")]
    pub maildir_root: PathBuf,
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
    /// Deliver a message from standard input to local recipients (like
    /// Dovecot's `dovecot-lda` or Postfix's `sendmail` for local mail).
    Deliver {
        /// Envelope sender (empty for the null sender `<>`).
        #[arg(long, short = 'f', default_value = "")]
        from: String,
        /// Local domains (Postfix's mydestination); default: the lab's.
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Host name for the Received header; default: the machine's.
        #[arg(long)]
        hostname: Option<String>,
        /// Recipients: `user`, `alias` or `user@local.domain`.
        #[arg(required = true)]
        recipients: Vec<String>,
    },
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
    /// Create an alias delivering to one or more local users or aliases.
    Add {
        /// Alias name.
        name: String,
        /// Targets: `user` or `user@local.domain`.
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
    /// Creating something that exists.
    #[error("{kind} {name:?} already exists")]
    Duplicate {
        /// "user" or "alias".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Changing something that does not exist.
    #[error("no {kind} named {name:?}")]
    NotFound {
        /// "user" or "alias".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A name or target that is not allowed.
    #[error("invalid name {name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// Unknown scheme name.
    #[error("unknown password scheme {0:?} (use SHA512-CRYPT, SHA256-CRYPT, ARGON2ID or PLAIN)")]
    BadScheme(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A recipient that cannot be delivered locally.
    #[error("cannot deliver to {rcpt:?}: {why}")]
    Recipient {
        /// The address.
        rcpt: String,
        /// Why.
        why: &'static str,
    },
    /// Password entry problems.
    #[error("{0}")]
    Password(&'static str),
    /// Store errors (writing files, creating Maildirs, hashing).
    #[error(transparent)]
    Store(#[from] mailstore::Error),
    /// Other I/O (terminal, lock files).
    #[error("{0}")]
    Io(#[from] io::Error),
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

/// Checks and normalises a user or alias name: 1 to 64 characters of
/// `a-z 0-9 . _ -`, starting with a letter or digit; upper case is folded
/// (local parts are matched case-insensitively anyway).
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |why| CtlError::BadName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    let lower = name.to_ascii_lowercase();
    if !lower.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or digit"));
    }
    if !lower
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(lower)
}

/// Parses a scheme name given on the command line.
pub fn parse_scheme(s: &str) -> Result<Scheme> {
    Scheme::from_name(s).ok_or_else(|| CtlError::BadScheme(s.to_string()))
}

/// Holds an exclusive `flock` on `<file>.lock` while a file is rewritten.
struct EditLock(#[allow(dead_code)] File);

fn lock_for(path: &Path) -> Result<EditLock> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(PathBuf::from(name))?;
    f.lock()?;
    Ok(EditLock(f))
}

/// Reads a file that may not exist yet (then it is empty).
fn read_optional(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CtlError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(p) = path.parent() {
        if !p.as_os_str().is_empty() {
            fs::create_dir_all(p)?;
        }
    }
    Ok(())
}

/// Text with a final newline (so appended lines start on their own line).
fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The user field of a passwd-file line, if it is an entry line.
fn passwd_user(line: &str) -> Option<&str> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    Some(line.split(':').next().unwrap_or(line))
}

/// Adds an account with `password` hashed by `scheme` and creates its
/// Maildir. The home field is `<maildir_root>/<name>` (absolute).
pub fn user_add(paths: &Paths, name: &str, password: &str, scheme: &Scheme) -> Result<()> {
    let name = normalize_name(name)?;
    if password.is_empty() {
        return Err(CtlError::Password("empty password"));
    }
    ensure_parent(&paths.passwd)?;
    let _lock = lock_for(&paths.passwd)?;
    let text = read_optional(&paths.passwd)?;
    if PasswdFile::parse(&text, &paths.passwd).get(&name).is_some() {
        return Err(CtlError::Duplicate { kind: "user", name });
    }
    let field = hash_password(scheme, password)?;
    let home = std::path::absolute(paths.maildir_root.join(&name))?;
    let mut out = with_newline(text);
    out.push_str(&format!("{name}:{field}::::{}::\n", home.display()));
    let store = Store::open(&paths.maildir_root)?;
    store.create_maildir(&name)?;
    atomic_write(&paths.passwd, out.as_bytes(), 0o600)?;
    Ok(())
}

/// Replaces an account's password, keeping the line's other fields.
pub fn user_passwd(paths: &Paths, name: &str, password: &str, scheme: &Scheme) -> Result<()> {
    if password.is_empty() {
        return Err(CtlError::Password("empty password"));
    }
    let _lock = lock_for(&paths.passwd)?;
    let text = read_existing(&paths.passwd)?;
    let field = hash_password(scheme, password)?;
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 128);
    for line in text.split_inclusive('\n') {
        let matches = !found && passwd_user(line).is_some_and(|u| u.eq_ignore_ascii_case(name));
        if matches {
            found = true;
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            let mut fields: Vec<&str> = body.splitn(3, ':').collect();
            if fields.len() < 2 {
                fields.push("");
            }
            if let Some(f) = fields.get_mut(1) {
                *f = &field;
            }
            out.push_str(&fields.join(":"));
            out.push_str(if ending.is_empty() { "\n" } else { ending });
        } else {
            out.push_str(line);
        }
    }
    if !found {
        return Err(CtlError::NotFound {
            kind: "user",
            name: name.to_string(),
        });
    }
    atomic_write(&paths.passwd, out.as_bytes(), 0o600)?;
    Ok(())
}

fn read_existing(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CtlError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes an account's line. The Maildir stays (mail is not destroyed by
/// accident; remove it by hand).
pub fn user_del(paths: &Paths, name: &str) -> Result<()> {
    let _lock = lock_for(&paths.passwd)?;
    let text = read_existing(&paths.passwd)?;
    let mut found = false;
    let out: String = text
        .split_inclusive('\n')
        .filter(|line| {
            let m = passwd_user(line).is_some_and(|u| u.eq_ignore_ascii_case(name));
            found |= m;
            !m
        })
        .collect();
    if !found {
        return Err(CtlError::NotFound {
            kind: "user",
            name: name.to_string(),
        });
    }
    atomic_write(&paths.passwd, out.as_bytes(), 0o600)?;
    Ok(())
}

/// Lists accounts as `name SCHEME`.
pub fn user_list(paths: &Paths) -> Result<Vec<String>> {
    let text = read_optional(&paths.passwd)?;
    Ok(PasswdFile::parse(&text, &paths.passwd)
        .accounts()
        .map(|a| format!("{} {}", a.name, a.scheme))
        .collect())
}

/// Raw aliases-file entries: (lower-cased name, range of physical lines).
fn alias_entries(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.end = i + 1;
            }
            continue;
        }
        let name = match t.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => t.split(':').next().unwrap_or(""),
        };
        out.push((name.trim().to_lowercase(), i..i + 1));
    }
    out
}

/// Checks an alias target: a local name, or `name@domain`.
fn check_target(t: &str) -> Result<String> {
    if t.starts_with(['|', '/']) || t.starts_with(":include:") {
        return Err(CtlError::BadName {
            name: t.to_string(),
            why: "pipes, files and :include: targets are not supported",
        });
    }
    match t.rsplit_once('@') {
        Some((l, d)) => {
            let l = normalize_name(l)?;
            let ok = !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
            if !ok {
                return Err(CtlError::BadName {
                    name: t.to_string(),
                    why: "invalid domain",
                });
            }
            Ok(format!("{l}@{}", d.to_ascii_lowercase()))
        }
        None => normalize_name(t),
    }
}

/// Adds an alias `name: target, ...`.
pub fn alias_add(paths: &Paths, name: &str, targets: &[String]) -> Result<()> {
    let name = normalize_name(name)?;
    if targets.is_empty() {
        return Err(CtlError::BadName {
            name,
            why: "an alias needs at least one target",
        });
    }
    let targets = targets
        .iter()
        .map(|t| check_target(t))
        .collect::<Result<Vec<_>>>()?;
    ensure_parent(&paths.aliases)?;
    let _lock = lock_for(&paths.aliases)?;
    let text = read_optional(&paths.aliases)?;
    if alias_entries(&text).iter().any(|(n, _)| *n == name) {
        return Err(CtlError::Duplicate {
            kind: "alias",
            name,
        });
    }
    let mut out = with_newline(text);
    out.push_str(&format!("{name}: {}\n", targets.join(", ")));
    atomic_write(&paths.aliases, out.as_bytes(), 0o644)?;
    Ok(())
}

/// Removes an alias (with its continuation lines).
pub fn alias_del(paths: &Paths, name: &str) -> Result<()> {
    let _lock = lock_for(&paths.aliases)?;
    let text = read_existing(&paths.aliases)?;
    let want = name.to_lowercase();
    let Some((_, range)) = alias_entries(&text).into_iter().find(|(n, _)| *n == want) else {
        return Err(CtlError::NotFound {
            kind: "alias",
            name: name.to_string(),
        });
    };
    let out: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !range.contains(i))
        .map(|(_, l)| l)
        .collect();
    atomic_write(&paths.aliases, out.as_bytes(), 0o644)?;
    Ok(())
}

/// Lists aliases as `name: target, ...`.
pub fn alias_list(paths: &Paths) -> Result<Vec<String>> {
    let text = read_optional(&paths.aliases)?;
    Ok(mailstore::AliasMap::parse(&text, &paths.aliases)
        .entries()
        .map(|(n, t)| format!("{n}: {}", t.join(", ")))
        .collect())
}

/// Delivers `message` (read to its end, in chunks) to local `recipients`,
/// routed through the accounts and aliases like the SMTP server does.
/// Returns the delivery report.
pub fn deliver(
    paths: &Paths,
    from: &str,
    recipients: &[String],
    domains: &[String],
    hostname: &str,
    message: &mut dyn io::Read,
) -> Result<mailstore::DeliveryReport> {
    use std::sync::Arc;
    let accounts = Arc::new(mailstore::Accounts::open(&paths.passwd)?);
    let aliases = Arc::new(mailstore::Aliases::open(&paths.aliases)?);
    let router = if domains.is_empty() {
        mailstore::Router::new(mailstore::LAB_DOMAINS, accounts, Some(aliases))
    } else {
        mailstore::Router::new(domains, accounts, Some(aliases))
    };
    let mut mailboxes = Vec::new();
    for r in recipients {
        match router.route(r)? {
            mailstore::Route::Local(m) => mailboxes.extend(m),
            mailstore::Route::UnknownUser => {
                return Err(CtlError::Recipient {
                    rcpt: r.clone(),
                    why: "no such user",
                })
            }
            mailstore::Route::NotLocal => {
                return Err(CtlError::Recipient {
                    rcpt: r.clone(),
                    why: "not a local domain",
                })
            }
        }
    }
    let now = std::time::SystemTime::now();
    let env = mailstore::Envelope {
        mail_from: from.to_string(),
        recipients: recipients.to_vec(),
        mailboxes,
        helo: String::new(),
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        protocol: mailstore::Protocol::Local,
        our_hostname: hostname.to_string(),
        queue_id: mailstore::QueueIdGenerator::new().next_id(now),
        time: now,
    };
    let store = Store::open(&paths.maildir_root)?;
    let mut d = store.begin_delivery(&env)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        d.write(buf.get(..n).unwrap_or_default())?;
    }
    Ok(d.commit()?)
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

/// Runs a parsed command line; returns the lines to print on stdout.
pub fn run(cli: Cli, stdin_source: &mut dyn PasswordSource) -> Result<Vec<String>> {
    let paths = Paths {
        passwd: cli.passwd,
        aliases: cli.aliases,
        maildir_root: cli.maildir_root,
    };
    let mut prompt = Prompt;
    match cli.command {
        Cmd::User(UserCmd::Add {
            name,
            password_stdin,
            scheme,
        }) => {
            let scheme = parse_scheme(&scheme)?;
            let name = normalize_name(&name)?;
            let src: &mut dyn PasswordSource = if password_stdin {
                stdin_source
            } else {
                &mut prompt
            };
            let pw = src.password(&name)?;
            user_add(&paths, &name, &pw, &scheme)?;
            Ok(vec![format!(
                "user {name} added ({scheme}), Maildir {}",
                Store::open(&paths.maildir_root)?
                    .maildir_path(&name)
                    .display()
            )])
        }
        Cmd::User(UserCmd::Passwd {
            name,
            password_stdin,
            scheme,
        }) => {
            let scheme = parse_scheme(&scheme)?;
            let src: &mut dyn PasswordSource = if password_stdin {
                stdin_source
            } else {
                &mut prompt
            };
            // Fail before prompting when the user does not exist.
            let text = read_existing(&paths.passwd)?;
            if PasswdFile::parse(&text, &paths.passwd).get(&name).is_none() {
                return Err(CtlError::NotFound { kind: "user", name });
            }
            let pw = src.password(&name)?;
            user_passwd(&paths, &name, &pw, &scheme)?;
            Ok(vec![format!("password of {name} changed ({scheme})")])
        }
        Cmd::User(UserCmd::Del { name }) => {
            user_del(&paths, &name)?;
            Ok(vec![format!(
                "user {name} removed (Maildir kept under {})",
                paths.maildir_root.display()
            )])
        }
        Cmd::User(UserCmd::List) => user_list(&paths),
        Cmd::Alias(AliasCmd::Add { name, targets }) => {
            alias_add(&paths, &name, &targets)?;
            Ok(vec![format!("alias {} added", name.to_lowercase())])
        }
        Cmd::Alias(AliasCmd::Del { name }) => {
            alias_del(&paths, &name)?;
            Ok(vec![format!("alias {} removed", name.to_lowercase())])
        }
        Cmd::Alias(AliasCmd::List) => alias_list(&paths),
        Cmd::Deliver {
            from,
            domains,
            hostname,
            recipients,
        } => {
            let host = hostname.unwrap_or_else(|| {
                fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into())
            });
            let r = deliver(
                &paths,
                &from,
                &recipients,
                &domains,
                &host,
                &mut io::stdin().lock(),
            )?;
            Ok(vec![format!(
                "delivered as {} ({} bytes) to {}",
                r.queue_id,
                r.pop3_size,
                r.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::Accounts;

    fn paths(dir: &Path) -> Paths {
        Paths {
            passwd: dir.join("etc/passwd"),
            aliases: dir.join("etc/aliases"),
            maildir_root: dir.join("mail"),
        }
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("User1").unwrap(), "user1");
        assert_eq!(normalize_name("a.b_c-d").unwrap(), "a.b_c-d");
        for bad in ["", ".x", "-x", "a:b", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(
                matches!(normalize_name(bad), Err(CtlError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn users_lifecycle_preserves_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            &p.passwd,
            "# managed by hand too\nroot:{PLAIN}r:0:0::/root:/bin/sh",
        )
        .unwrap();
        user_add(&p, "User1", "pw one", &Scheme::Sha512Crypt).unwrap();
        user_add(&p, "user2", "pw2", &Scheme::Plain).unwrap();
        assert!(matches!(
            user_add(&p, "USER1", "x", &Scheme::Plain),
            Err(CtlError::Duplicate { .. })
        ));
        assert!(matches!(
            user_add(&p, "user3", "", &Scheme::Plain),
            Err(CtlError::Password(_))
        ));
        assert!(matches!(
            user_add(&p, "user3", "a:b", &Scheme::Plain),
            Err(CtlError::Store(_))
        ));
        let acc = Accounts::open(&p.passwd).unwrap();
        assert!(acc.verify_password("user1", b"pw one").unwrap().is_some());
        let a = acc.verify_password("user2", b"pw2").unwrap().unwrap();
        let home = a.home.unwrap();
        assert!(home.is_absolute());
        assert!(home.join("Maildir/cur").is_dir());
        user_passwd(&p, "user1", "new", &Scheme::Argon2id).unwrap();
        assert!(acc.verify_password("user1", b"pw one").unwrap().is_none());
        assert!(acc.verify_password("user1", b"new").unwrap().is_some());
        assert!(matches!(
            user_passwd(&p, "nobody", "x", &Scheme::Plain),
            Err(CtlError::NotFound { .. })
        ));
        assert_eq!(
            user_list(&p).unwrap(),
            ["root PLAIN", "user1 ARGON2ID", "user2 PLAIN"]
        );
        user_del(&p, "USER2").unwrap();
        assert!(matches!(
            user_del(&p, "user2"),
            Err(CtlError::NotFound { .. })
        ));
        let text = fs::read_to_string(&p.passwd).unwrap();
        assert!(text.starts_with(
            "# managed by hand too\nroot:{PLAIN}r:0:0::/root:/bin/sh\nuser1:{ARGON2ID}$argon2id$"
        ));
        assert_eq!(text.lines().count(), 3);
        assert!(
            p.maildir_root.join("user2/Maildir").is_dir(),
            "Maildir kept"
        );
        // An existing file keeps its mode (the admin may grant a group).
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p.passwd).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn aliases_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(&p.aliases, "# aliases\nteam: a,\n  b\nroot: admin\n").unwrap();
        alias_add(
            &p,
            "Postmaster",
            &["root".into(), "User1@CSUVnetwork.com".into()],
        )
        .unwrap();
        assert!(matches!(
            alias_add(&p, "team", &["x".into()]),
            Err(CtlError::Duplicate { .. })
        ));
        assert!(matches!(
            alias_add(&p, "x", &["|/bin/sh".into()]),
            Err(CtlError::BadName { .. })
        ));
        assert!(matches!(
            alias_add(&p, "x", &[]),
            Err(CtlError::BadName { .. })
        ));
        assert_eq!(
            alias_list(&p).unwrap(),
            [
                "team: a, b",
                "root: admin",
                "postmaster: root, user1@csuvnetwork.com"
            ]
        );
        alias_del(&p, "TEAM").unwrap();
        assert_eq!(
            fs::read_to_string(&p.aliases).unwrap(),
            "# aliases\nroot: admin\npostmaster: root, user1@csuvnetwork.com\n"
        );
        assert!(matches!(
            alias_del(&p, "team"),
            Err(CtlError::NotFound { .. })
        ));
    }

    #[test]
    fn password_sources() {
        let mut s = FromReader(&b"secret\r\nignored\n"[..]);
        assert_eq!(s.password("u").unwrap(), "secret");
        let mut e = FromReader(&b""[..]);
        assert!(matches!(e.password("u"), Err(CtlError::Password(_))));
    }

    #[test]
    fn unreadable_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths {
            passwd: dir.path().to_path_buf(), // a directory: unreadable as text
            aliases: dir.path().join("aliases"),
            maildir_root: dir.path().join("mail"),
        };
        let e = user_list(&p).unwrap_err();
        assert!(matches!(e, CtlError::Read { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot read"));
    }
}
