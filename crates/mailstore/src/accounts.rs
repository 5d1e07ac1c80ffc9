//! Accounts in a Dovecot-compatible `passwd-file`.
//!
//! Each line is `user:password:uid:gid:gecos:home:shell:extra_fields`
//! (Dovecot's passwd-file format); only `user` is required, missing trailing
//! fields are empty, blank lines and `#` comments are skipped, and the first
//! line for a user wins. The password field is `{SCHEME}data`:
//!
//! | scheme | data | APOP / CRAM-MD5 |
//! |---|---|---|
//! | `PLAIN`, `CLEARTEXT` | the password itself | possible |
//! | `SHA256-CRYPT` | `$5$[rounds=N$]salt$hash` | impossible |
//! | `SHA512-CRYPT` | `$6$[rounds=N$]salt$hash` | impossible |
//! | `ARGON2ID` | `$argon2id$v=19$m=..,t=..,p=..$salt$hash` | impossible |
//! | `CRYPT` or no `{}` | one of the `$5$`, `$6$` forms | impossible |
//!
//! APOP (RFC 1939 section 7) and CRAM-MD5 (RFC 2195) prove knowledge of the
//! password by an MD5 digest over the password itself, so the server must
//! hold the clear password: only `PLAIN` accounts can use them
//! ([`Accounts::plain_secret`]). Hashed accounts use USER/PASS or AUTH
//! LOGIN/PLAIN, ideally under TLS.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use crate::store::Store;
use crate::util::{
    atomic_write, io_err, read_existing, read_optional, with_newline, EditLock, FileStamp,
};
use crate::{Error, Result};

/// A password scheme of the passwd-file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Clear text (`{PLAIN}` / `{CLEARTEXT}`).
    Plain,
    /// `{SHA256-CRYPT}` (`$5$`).
    Sha256Crypt,
    /// `{SHA512-CRYPT}` (`$6$`).
    Sha512Crypt,
    /// `{ARGON2ID}` (PHC string `$argon2id$...`).
    Argon2id,
    /// A scheme this implementation cannot verify (its name); such accounts
    /// cannot log in.
    Unsupported(String),
}

impl Scheme {
    /// The Dovecot name of the scheme, as written between braces.
    pub fn name(&self) -> &str {
        match self {
            Scheme::Plain => "PLAIN",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Unsupported(s) => s,
        }
    }

    /// Parses a scheme name (case-insensitive) for hashing new passwords.
    pub fn from_name(s: &str) -> Option<Scheme> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" | "CLEARTEXT" | "CLEAR" => Some(Scheme::Plain),
            "SHA256-CRYPT" => Some(Scheme::Sha256Crypt),
            "SHA512-CRYPT" => Some(Scheme::Sha512Crypt),
            "ARGON2ID" => Some(Scheme::Argon2id),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret byte string that does not print itself and is overwritten
/// (best effort) when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = 0;
        }
    }
}

/// One account of the passwd-file (without its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name as written in the file.
    pub name: String,
    /// The password scheme.
    pub scheme: Scheme,
    /// Numeric uid field, if set.
    pub uid: Option<u32>,
    /// Numeric gid field, if set.
    pub gid: Option<u32>,
    /// Home directory field, if set.
    pub home: Option<PathBuf>,
    /// The extra fields (space-separated `key=value`), raw.
    pub extra: String,
}

#[derive(Debug, Clone)]
struct Entry {
    account: Account,
    /// The password data after `{SCHEME}` (empty: no password, no login).
    data: String,
}

/// A parsed passwd-file.
#[derive(Debug, Clone, Default)]
pub struct PasswdFile {
    /// Keyed by lower-cased user name.
    entries: HashMap<String, Entry>,
    order: Vec<String>,
}

/// Splits `{SCHEME}data` into the scheme and its data. No braces means
/// Dovecot's passwd-file default scheme, CRYPT, detected from the `$id$`.
fn split_scheme(field: &str) -> (Scheme, String) {
    let (name, data) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((n, d)) => (n.to_ascii_uppercase(), d),
        None => ("CRYPT".to_string(), field),
    };
    let scheme = match name.as_str() {
        "PLAIN" | "CLEARTEXT" | "CLEAR" => Scheme::Plain,
        "SHA256-CRYPT" if data.starts_with("$5$") => Scheme::Sha256Crypt,
        "SHA512-CRYPT" if data.starts_with("$6$") => Scheme::Sha512Crypt,
        "ARGON2ID" if data.starts_with("$argon2id$") => Scheme::Argon2id,
        "CRYPT" if data.starts_with("$5$") => Scheme::Sha256Crypt,
        "CRYPT" if data.starts_with("$6$") => Scheme::Sha512Crypt,
        "CRYPT" if data.starts_with("$argon2id$") => Scheme::Argon2id,
        _ => Scheme::Unsupported(name),
    };
    (scheme, data.to_string())
}

impl PasswdFile {
    /// Parses passwd-file text. Malformed lines (empty user name) are
    /// skipped with a warning, as Dovecot does; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Self {
        let mut f = PasswdFile::default();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(8, ':');
            let user = fields.next().unwrap_or_default();
            if user.is_empty() {
                tracing::warn!(path = %path.display(), line = lineno + 1, "passwd-file line without user name skipped");
                continue;
            }
            let pass = fields.next().unwrap_or_default();
            let uid = fields.next().and_then(|s| s.parse().ok());
            let gid = fields.next().and_then(|s| s.parse().ok());
            let _gecos = fields.next();
            let home = fields.next().filter(|s| !s.is_empty()).map(PathBuf::from);
            let _shell = fields.next();
            let extra = fields.next().unwrap_or_default().to_string();
            let (scheme, data) = if pass.is_empty() {
                (Scheme::Unsupported(String::new()), String::new())
            } else {
                split_scheme(pass)
            };
            let key = user.to_lowercase();
            if f.entries.contains_key(&key) {
                tracing::warn!(path = %path.display(), line = lineno + 1, user, "duplicate user in passwd-file ignored");
                continue;
            }
            f.order.push(key.clone());
            f.entries.insert(
                key,
                Entry {
                    account: Account {
                        name: user.to_string(),
                        scheme,
                        uid,
                        gid,
                        home,
                        extra,
                    },
                    data,
                },
            );
        }
        f
    }

    /// Looks up an account, case-insensitively.
    pub fn get(&self, user: &str) -> Option<&Account> {
        self.entries.get(&user.to_lowercase()).map(|e| &e.account)
    }

    /// All accounts in file order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.order
            .iter()
            .filter_map(|k| self.entries.get(k).map(|e| &e.account))
    }

    /// Checks `password` for `user`. Unknown users cost as much as known
    /// ones (a dummy hash is checked), so timing does not reveal them.
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<&Account> {
        match self.entries.get(&user.to_lowercase()) {
            Some(e) => verify_password(&e.account.scheme, &e.data, password).then_some(&e.account),
            None => {
                let _ = verify_password(&Scheme::Sha512Crypt, DUMMY_HASH, password);
                None
            }
        }
    }

    /// The clear password of a PLAIN account (for APOP / CRAM-MD5).
    pub fn plain_secret(&self, user: &str) -> Option<Secret> {
        let e = self.entries.get(&user.to_lowercase())?;
        (e.account.scheme == Scheme::Plain).then(|| Secret::new(e.data.as_bytes()))
    }
}

/// A SHA512-CRYPT hash of a random string, checked for unknown users.
const DUMMY_HASH: &str = "$6$Jm1ZS1ZJ3G8w2Ek7$IzRbTRlX3PVN4tWgEtAu9nUwVQkk1HL6vCdl1VIm/TdfnUiEqMvuYdukh1Hd8w6dNZL9IWaWAeFS43PeWYwvf.";

/// Verifies `password` against `data` stored with `scheme`, comparing in
/// constant time.
pub fn verify_password(scheme: &Scheme, data: &str, password: &[u8]) -> bool {
    // An empty stored or offered password never logs in (`user:{PLAIN}`
    // is a mistake, not an open account).
    if data.is_empty() || password.is_empty() {
        return false;
    }
    match scheme {
        Scheme::Plain => bool::from(data.as_bytes().ct_eq(password)),
        Scheme::Sha256Crypt => verify_sha_crypt(data, password, false),
        Scheme::Sha512Crypt => verify_sha_crypt(data, password, true),
        Scheme::Argon2id => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            match PasswordHash::new(data) {
                Ok(h) => argon2::Argon2::default()
                    .verify_password(password, &h)
                    .is_ok(),
                Err(_) => false,
            }
        }
        Scheme::Unsupported(_) => false,
    }
}

/// Verifies a `$5$`/`$6$` crypt string the way glibc's `crypt()` reads it:
/// optional `rounds=N$` (clamped to 1000..=999999999), salt of at most 16
/// characters, then the hash.
fn verify_sha_crypt(data: &str, password: &[u8], sha512: bool) -> bool {
    let prefix = if sha512 { "$6$" } else { "$5$" };
    let Some(rest) = data.strip_prefix(prefix) else {
        return false;
    };
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let Some((n, rest)) = r.split_once('$') else {
                return false;
            };
            let Ok(n) = n.parse::<u64>() else {
                return false;
            };
            (n.clamp(1000, 999_999_999) as usize, rest)
        }
        None => (5000, rest),
    };
    let Some((salt, hash)) = rest.split_once('$') else {
        return false;
    };
    if salt.len() > 16 || hash.contains('$') {
        return false;
    }
    let computed = if sha512 {
        sha_crypt::Sha512Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p).ok())
    } else {
        sha_crypt::Sha256Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p).ok())
    };
    match computed {
        Some(c) => bool::from(c.as_bytes().ct_eq(hash.as_bytes())),
        None => false,
    }
}

/// Hashes `password` with `scheme` and a fresh random salt, returning the
/// passwd-file field `{SCHEME}data`. `PLAIN` rejects `:` and line breaks,
/// which the file format cannot hold.
pub fn hash_password(scheme: &Scheme, password: &str) -> Result<String> {
    let data = match scheme {
        Scheme::Plain => {
            if password.contains([':', '\n', '\r']) {
                return Err(Error::Hash(
                    "a PLAIN password cannot contain ':' or line breaks".into(),
                ));
            }
            password.to_string()
        }
        Scheme::Sha512Crypt => {
            sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
                .map_err(|e| Error::Hash(format!("{e:?}")))?
        }
        Scheme::Sha256Crypt => {
            sha_crypt::sha256_simple(password, &sha_crypt::Sha256Params::default())
                .map_err(|e| Error::Hash(format!("{e:?}")))?
        }
        Scheme::Argon2id => {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let mut salt = [0u8; 16];
            getrandom::getrandom(&mut salt).map_err(|e| Error::Hash(e.to_string()))?;
            let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hash(e.to_string()))?;
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(|e| Error::Hash(e.to_string()))?
                .to_string()
        }
        Scheme::Unsupported(s) => return Err(Error::Hash(format!("unsupported scheme {s}"))),
    };
    Ok(format!("{{{}}}{data}", scheme.name()))
}

/// Checks and normalises the name of a new account or alias: 1 to 64
/// characters of `a-z 0-9 . _ -`, starting with a letter or digit. Upper
/// case is folded: local parts are matched case-insensitively anyway, and
/// an account name becomes a directory name.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |why| Error::InvalidName {
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

impl PasswdFile {
    /// Reads and parses the passwd-file at `path`; [`Error::Read`] when it
    /// is missing or unreadable.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::parse(&read_existing(path)?, path))
    }
}

/// The user field of a passwd-file line, if it is an entry line.
fn entry_user(line: &str) -> Option<&str> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    Some(line.split(':').next().unwrap_or(line))
}

// The editors below rewrite the passwd-file atomically (temporary file,
// fsync, rename, fsync directory) under an `flock` on `<file>.lock`, so
// concurrent editors take turns and readers (the daemons reload by
// themselves) never see a torn file. Lines they do not touch (comments,
// other entries) are kept byte for byte; a new file is mode 0600.

/// Adds account `name` (normalised by [`normalize_name`]) with `password`
/// hashed by `scheme`, and creates its Maildir in `store`. The home field
/// is the absolute `<store root>/<name>`, as Dovecot's `mail_location =
/// maildir:~/Maildir` expects. Returns the normalised name.
pub fn add_account(
    passwd: &Path,
    store: &Store,
    name: &str,
    password: &str,
    scheme: &Scheme,
) -> Result<String> {
    let name = normalize_name(name)?;
    if password.is_empty() {
        return Err(Error::EmptyPassword);
    }
    let _lock = EditLock::take(passwd)?;
    let text = read_optional(passwd)?;
    if PasswdFile::parse(&text, passwd).get(&name).is_some() {
        return Err(Error::Exists { kind: "user", name });
    }
    let field = hash_password(scheme, password)?;
    let home = store.root().join(&name);
    let home = std::path::absolute(&home).map_err(io_err(&home))?;
    let mut out = with_newline(text);
    out.push_str(&format!("{name}:{field}::::{}::\n", home.display()));
    store.create_maildir(&name)?;
    atomic_write(passwd, out.as_bytes(), 0o600)?;
    Ok(name)
}

/// Replaces the password of account `name` (case-insensitive), keeping
/// the line's other fields.
pub fn set_password(passwd: &Path, name: &str, password: &str, scheme: &Scheme) -> Result<()> {
    if password.is_empty() {
        return Err(Error::EmptyPassword);
    }
    let _lock = EditLock::take(passwd)?;
    let text = read_existing(passwd)?;
    let field = hash_password(scheme, password)?;
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 128);
    for line in text.split_inclusive('\n') {
        let matches = !found && entry_user(line).is_some_and(|u| u.eq_ignore_ascii_case(name));
        if !matches {
            out.push_str(line);
            continue;
        }
        found = true;
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = line.get(body.len()..).unwrap_or_default();
        let mut fields: Vec<&str> = body.splitn(3, ':').collect();
        if fields.len() < 2 {
            fields.push("");
        }
        if let Some(f) = fields.get_mut(1) {
            *f = &field;
        }
        out.push_str(&fields.join(":"));
        out.push_str(if ending.is_empty() { "\n" } else { ending });
    }
    if !found {
        return Err(Error::NotFound {
            kind: "user",
            name: name.to_string(),
        });
    }
    atomic_write(passwd, out.as_bytes(), 0o600)
}

/// Removes the line of account `name` (case-insensitive). Its Maildir
/// stays: mail is not destroyed by accident.
pub fn remove_account(passwd: &Path, name: &str) -> Result<()> {
    let _lock = EditLock::take(passwd)?;
    let text = read_existing(passwd)?;
    let mut found = false;
    let out: String = text
        .split_inclusive('\n')
        .filter(|line| {
            let m = entry_user(line).is_some_and(|u| u.eq_ignore_ascii_case(name));
            found |= m;
            !m
        })
        .collect();
    if !found {
        return Err(Error::NotFound {
            kind: "user",
            name: name.to_string(),
        });
    }
    atomic_write(passwd, out.as_bytes(), 0o600)
}

/// A file that is parsed once and reparsed when it changes on disk
/// (device, inode, size or mtime differ: an atomic rewrite always changes
/// the inode). Checking costs one `stat` per access.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    path: PathBuf,
    missing_ok: bool,
    parse: fn(&str, &Path) -> T,
    /// (stamp of the loaded version, content, loaded at least once)
    state: RwLock<(Option<FileStamp>, Arc<T>, bool)>,
}

impl<T: Default> Watched<T> {
    pub(crate) fn open(
        path: PathBuf,
        missing_ok: bool,
        parse: fn(&str, &Path) -> T,
    ) -> Result<Self> {
        let w = Self {
            path,
            missing_ok,
            parse,
            state: RwLock::new((None, Arc::new(T::default()), false)),
        };
        w.reload_if_changed()?;
        Ok(w)
    }

    /// Rereads the file if it changed; returns whether it did.
    pub(crate) fn reload_if_changed(&self) -> Result<bool> {
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some(FileStamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.missing_ok => None,
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if st.2 && st.0 == stamp {
                return Ok(false);
            }
        }
        let value = match stamp {
            Some(_) => {
                let text = fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
                (self.parse)(&text, &self.path)
            }
            None => T::default(),
        };
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        *st = (stamp, Arc::new(value), true);
        Ok(true)
    }

    /// The current content, reloaded first if the file changed.
    pub(crate) fn get(&self) -> Result<Arc<T>> {
        self.reload_if_changed()?;
        Ok(self.current())
    }

    /// The content as last loaded, without checking the file.
    pub(crate) fn current(&self) -> Arc<T> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The account database: a passwd-file, reread when it changes.
/// `Send + Sync`; share it in an `Arc`. Calls block on a `stat` (and a
/// read after a change) and on password hashing, which is deliberately slow:
/// call from `spawn_blocking` in async code.
#[derive(Debug)]
pub struct Accounts {
    file: Watched<PasswdFile>,
}

impl Accounts {
    /// Loads the passwd-file at `path` (it must exist and be readable).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            file: Watched::open(path.into(), false, PasswdFile::parse)?,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Rereads the file if it changed since the last load. Every other
    /// method already does this; call it to learn about errors early.
    pub fn reload_if_changed(&self) -> Result<bool> {
        self.file.reload_if_changed()
    }

    pub(crate) fn snapshot(&self) -> Arc<PasswdFile> {
        // A file that became unreadable keeps the last good content (with a
        // warning) rather than locking everyone out mid-edit.
        match self.file.get() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "passwd-file reload failed; using last good copy");
                self.file.current()
            }
        }
    }

    /// Checks a password: `Ok(Some(account))` when it is right, `Ok(None)`
    /// for a wrong password or unknown user (indistinguishable on purpose).
    pub fn verify_password(&self, user: &str, password: &[u8]) -> Result<Option<Account>> {
        Ok(self.snapshot().verify(user, password).cloned())
    }

    /// Looks up an account case-insensitively.
    pub fn lookup(&self, user: &str) -> Result<Option<Account>> {
        Ok(self.snapshot().get(user).cloned())
    }

    /// The clear password of a `PLAIN` account, for APOP and CRAM-MD5;
    /// `None` for unknown users and hashed schemes.
    pub fn plain_secret(&self, user: &str) -> Result<Option<Secret>> {
        Ok(self.snapshot().plain_secret(user))
    }

    /// All accounts in file order.
    pub fn list(&self) -> Result<Vec<Account>> {
        Ok(self.snapshot().accounts().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real hashes: the `$6$`/`$5$` ones from `mkpasswd` (Debian whois
    /// 5.5.17, glibc crypt), the braced ones from `doveadm pw` (Dovecot
    /// 2.3.19): (passwd-file password field, correct password).
    const VECTORS: &[(&str, &str)] = &[
        ("$6$saltsaltsaltsalt$cqC2/Qrv5A5dHkK0SqTAbKOFnmR5XMzWISwFgNyMNJxJ7NjWyHXJPTEYGFWsZZlKcEz9Qlx.XzSoUmfemkm7h.", "password1"),
        ("{CRYPT}$5$Ab3dEf6hIj9kLm$md/xZgAG/j5KSZqMf4wIZAE.5IbtC6xodcyyzPNXU/A", "user1pass"),
        ("{SHA512-CRYPT}$6$rounds=10000$rNdsalt12345$JyxDmLlud6GyDr84ahvS0bIwFoJIuXyw16bXu164uugpe1.wF4lKXltpv9fWSwcJujEXm2OeqpK/9wd0psVY2.", "Pa$$w0rd:x"),
        ("{SHA256-CRYPT}$5$rounds=1000$shortsalt$5OK7E22cqJWSriFtVhIL86hUey1rwC4j87covewyTjC", "héllo"),
        ("{SHA512-CRYPT}$6$xjd4.YS82xhMgx0k$7koR.r4HlXH3XK6cPwQnsM5jsurjS7LBn1org.e2QC1UbBWb9tmEyeIFhqmr48h0fzt1FPL9bQvi.3lSpaUhP1", "lab-pass-2"),
        ("{SHA256-CRYPT}$5$bhFoda7wpQpZq6pH$3Ss0BzkGtFGYLWGE/EQ.T2QdQ3ASDXnRph2fg37Aq77", "lab-pass-2"),
        ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$nB9rEefOyUfefTZdjhYMoQ$M3SLruJc/YgzsWXsFp8z55XojrRILZ1i4OpTuypcGyQ", "lab-pass-2"),
    ];

    #[test]
    fn known_vectors_verify_and_wrong_passwords_fail() {
        for (field, pass) in VECTORS {
            let (scheme, data) = split_scheme(field);
            assert!(!matches!(scheme, Scheme::Unsupported(_)), "{field}");
            assert!(verify_password(&scheme, &data, pass.as_bytes()), "{field}");
            let mut wrong = pass.as_bytes().to_vec();
            wrong[0] ^= 1;
            assert!(!verify_password(&scheme, &data, &wrong), "{field}");
            // Argon2 with Dovecot's 64 MiB costs seconds in debug builds.
            if scheme != Scheme::Argon2id {
                assert!(
                    !verify_password(&scheme, &data, &pass.as_bytes()[1..]),
                    "{field}"
                );
            }
        }
        // Through the file, with a case-insensitive user name.
        let text: String = VECTORS
            .iter()
            .enumerate()
            .map(|(i, (f, _))| format!("u{i}:{f}:::::\n"))
            .collect();
        let file = PasswdFile::parse(&text, Path::new("t"));
        assert!(file.verify("U0", b"password1").is_some());
        assert!(file.verify("u1", b"user1pass").is_some());
        assert!(file.verify("u1", b"password1").is_none());
    }

    #[test]
    fn plain_and_cleartext() {
        let f = PasswdFile::parse(
            "user1:{PLAIN}secret1\nuser2:{cleartext}p:w\n",
            Path::new("t"),
        );
        assert!(f.verify("user1", b"secret1").is_some());
        assert!(f.verify("USER1", b"secret1").is_some());
        assert!(f.verify("user1", b"secret2").is_none());
        assert!(f.verify("user1", b"secret").is_none());
        assert!(f.verify("user2", b"p").is_some(), "':' ends the field");
        assert!(f.verify("user2", b"p:w").is_none());
        assert_eq!(
            f.plain_secret("User1").unwrap().expose(),
            b"secret1".as_slice()
        );
        assert!(f.verify("nobody", b"secret1").is_none());
        let open = PasswdFile::parse("user3:{PLAIN}\n", Path::new("t"));
        assert!(
            open.verify("user3", b"").is_none(),
            "empty password refused"
        );
        assert!(f.verify("user1", b"").is_none());
    }

    #[test]
    fn parse_edge_cases() {
        let text = "# comment\n\n   \nuser1:{PLAIN}a:1000:1000:User One:/home/u1:/bin/sh:userdb_x=1 y=2\r\n\
                    bare\n:{PLAIN}noname\nshort:{PLAIN}s\nuser1:{PLAIN}dup\nempty:\nweird:{MD5-CRYPT}$1$x$y\n  # indented comment\n";
        let f = PasswdFile::parse(text, Path::new("t"));
        let names: Vec<&str> = f.accounts().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["user1", "bare", "short", "empty", "weird"]);
        let u1 = f.get("user1").unwrap();
        assert_eq!(u1.uid, Some(1000));
        assert_eq!(u1.home.as_deref(), Some(Path::new("/home/u1")));
        assert_eq!(u1.extra, "userdb_x=1 y=2");
        assert!(f.verify("user1", b"a").is_some());
        assert!(f.verify("user1", b"dup").is_none(), "first line wins");
        assert!(f.verify("short", b"s").is_some());
        assert!(f.verify("bare", b"").is_none());
        assert!(f.verify("empty", b"").is_none());
        assert_eq!(
            f.get("weird").unwrap().scheme,
            Scheme::Unsupported("MD5-CRYPT".into())
        );
        assert!(f.verify("weird", b"x").is_none());
        assert!(f.plain_secret("weird").is_none());
    }

    #[test]
    fn hash_round_trips() {
        for s in [
            Scheme::Plain,
            Scheme::Sha256Crypt,
            Scheme::Sha512Crypt,
            Scheme::Argon2id,
        ] {
            let field = hash_password(&s, "pässword 1").unwrap();
            assert!(field.starts_with(&format!("{{{}}}", s.name())), "{field}");
            let (scheme, data) = split_scheme(&field);
            assert_eq!(scheme, s);
            assert!(verify_password(&scheme, &data, "pässword 1".as_bytes()));
            assert!(!verify_password(&scheme, &data, b"password 1"));
            assert!(!verify_password(&scheme, &data, b""));
        }
        assert!(hash_password(&Scheme::Plain, "a:b").is_err());
        assert!(hash_password(&Scheme::Unsupported("X".into()), "a").is_err());
    }

    #[test]
    fn secret_debug_redacts() {
        assert_eq!(format!("{:?}", Secret::new("pw")), "Secret(<redacted>)");
    }

    #[test]
    fn malformed_crypt_strings_fail() {
        for d in [
            "$6$",
            "$6$salt",
            "$6$rounds=x$salt$hash",
            "$6$rounds=5000",
            "$6$saltsaltsaltsaltX$hash",
            "$6$salt$hash$extra",
            "$5$salt$",
        ] {
            assert!(!verify_password(&Scheme::Sha512Crypt, d, b"x"), "{d}");
            assert!(!verify_password(&Scheme::Sha256Crypt, d, b"x"), "{d}");
        }
        assert!(!verify_password(&Scheme::Argon2id, "$argon2id$junk", b"x"));
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("User1").unwrap(), "user1");
        assert_eq!(normalize_name("a.b_c-d").unwrap(), "a.b_c-d");
        for bad in ["", ".x", "-x", "a:b", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(
                matches!(normalize_name(bad), Err(Error::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn editors_keep_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/passwd");
        let store = Store::open(dir.path().join("mail")).unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            &p,
            "# managed by hand too\nroot:{PLAIN}r:0:0::/root:/bin/sh",
        )
        .unwrap();
        assert_eq!(
            add_account(&p, &store, "User1", "pw one", &Scheme::Sha512Crypt).unwrap(),
            "user1"
        );
        add_account(&p, &store, "user2", "pw2", &Scheme::Plain).unwrap();
        assert!(matches!(
            add_account(&p, &store, "USER1", "x", &Scheme::Plain),
            Err(Error::Exists { kind: "user", .. })
        ));
        assert!(matches!(
            add_account(&p, &store, "user3", "", &Scheme::Plain),
            Err(Error::EmptyPassword)
        ));
        assert!(matches!(
            add_account(&p, &store, "user3", "a:b", &Scheme::Plain),
            Err(Error::Hash(_))
        ));
        assert!(matches!(
            add_account(&p, &store, "a/b", "x", &Scheme::Plain),
            Err(Error::InvalidName { .. })
        ));
        let acc = Accounts::open(&p).unwrap();
        assert!(acc.verify_password("user1", b"pw one").unwrap().is_some());
        let home = acc
            .verify_password("user2", b"pw2")
            .unwrap()
            .unwrap()
            .home
            .unwrap();
        assert!(home.is_absolute());
        assert!(home.join("Maildir/cur").is_dir());

        set_password(&p, "USER1", "new", &Scheme::Argon2id).unwrap();
        assert!(acc.verify_password("user1", b"pw one").unwrap().is_none());
        assert!(acc.verify_password("user1", b"new").unwrap().is_some());
        assert!(matches!(
            set_password(&p, "nobody", "x", &Scheme::Plain),
            Err(Error::NotFound { kind: "user", .. })
        ));
        assert!(matches!(
            set_password(&p, "user1", "", &Scheme::Plain),
            Err(Error::EmptyPassword)
        ));
        let names: Vec<String> = PasswdFile::load(&p)
            .unwrap()
            .accounts()
            .map(|a| format!("{} {}", a.name, a.scheme))
            .collect();
        assert_eq!(names, ["root PLAIN", "user1 ARGON2ID", "user2 PLAIN"]);

        remove_account(&p, "USER2").unwrap();
        assert!(matches!(
            remove_account(&p, "user2"),
            Err(Error::NotFound { .. })
        ));
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(
            "# managed by hand too\nroot:{PLAIN}r:0:0::/root:/bin/sh\nuser1:{ARGON2ID}$argon2id$"
        ));
        assert_eq!(text.lines().count(), 3);
        assert!(store.maildir_path("user2").is_dir(), "Maildir kept");
        // An existing file keeps its mode (the admin may grant a group).
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn new_passwd_file_is_private_and_missing_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/passwd");
        let store = Store::open(dir.path().join("mail")).unwrap();
        let e = PasswdFile::load(&p).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(matches!(remove_account(&p, "x"), Err(Error::Read { .. })));
        add_account(&p, &store, "user1", "pw", &Scheme::Plain).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(PasswdFile::load(&p).unwrap().accounts().count(), 1);
        // A directory where the file should be cannot be read.
        let e = PasswdFile::load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e}");
    }

    #[test]
    fn reload_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        fs::write(&p, "user1:{PLAIN}one\n").unwrap();
        let a = Accounts::open(&p).unwrap();
        assert!(a.verify_password("user1", b"one").unwrap().is_some());
        assert!(!a.reload_if_changed().unwrap());
        crate::util::atomic_write(&p, b"user1:{PLAIN}two\nuser2:{PLAIN}x\n", 0o600).unwrap();
        assert!(a.verify_password("user1", b"two").unwrap().is_some());
        assert!(a.verify_password("user1", b"one").unwrap().is_none());
        assert_eq!(a.list().unwrap().len(), 2);
        // Deleted file: last good copy stays in use.
        fs::remove_file(&p).unwrap();
        assert!(a.reload_if_changed().is_err());
        assert!(a.lookup("user2").unwrap().is_some());
        assert!(Accounts::open(dir.path().join("missing")).is_err());
    }
}
