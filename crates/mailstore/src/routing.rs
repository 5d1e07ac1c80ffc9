//! Address routing with Postfix's `mydestination` meaning, and an aliases
//! file in the `/etc/aliases` format (aliases(5)).
//!
//! A recipient whose domain is one of the local domains is local: its local
//! part, compared case-insensitively, is looked up first in the aliases
//! (as Postfix's local(8) does) and then among the accounts. Unknown local
//! users are reported so the SMTP server can answer `550 5.1.1` at RCPT
//! time. `postmaster` (with or without a domain, RFC 5321 section 4.5.1)
//! always reaches someone. Every other domain is [`Route::NotLocal`], for
//! the relay policy to decide.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::accounts::{normalize_name, Accounts, PasswdFile, Watched};
use crate::util::{atomic_write, read_existing, read_optional, with_newline, EditLock};
use crate::{Error, Result};

/// A parsed aliases file: lower-cased name -> targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasMap {
    map: HashMap<String, Vec<String>>,
    order: Vec<String>,
}

impl AliasMap {
    /// Parses `/etc/aliases` text: `name: target, target, ...`, with
    /// continuation lines starting with white space, `#` comments and blank
    /// lines. Names may be quoted. Later duplicates are ignored with a
    /// warning (Postfix warns and keeps the first too).
    pub fn parse(text: &str, path: &Path) -> Self {
        let mut out = AliasMap::default();
        for (lineno, logical) in logical_lines(text) {
            let Some((name, targets)) = split_entry(&logical) else {
                tracing::warn!(path = %path.display(), line = lineno, "aliases line without ':' skipped");
                continue;
            };
            let key = name.to_lowercase();
            if out.map.contains_key(&key) {
                tracing::warn!(path = %path.display(), line = lineno, name = %key, "duplicate alias ignored");
                continue;
            }
            out.order.push(key.clone());
            out.map.insert(key, targets);
        }
        out
    }

    /// The targets of an alias (case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.map.get(&name.to_lowercase()).map(Vec::as_slice)
    }

    /// All aliases in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|v| (k.as_str(), v.as_slice())))
    }
}

/// Joins continuation lines (starting with space or tab) to their entry,
/// dropping comments and blank lines. Yields (first line number, text).
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

/// Splits `name: a, b` into the (unquoted) name and its targets.
fn split_entry(entry: &str) -> Option<(String, Vec<String>)> {
    let entry = entry.trim();
    let (name, rest) = if let Some(q) = entry.strip_prefix('"') {
        let (n, r) = q.split_once('"')?;
        (n.to_string(), r.trim_start().strip_prefix(':')?)
    } else {
        let (n, r) = entry.split_once(':')?;
        (n.trim().to_string(), r)
    };
    if name.is_empty() {
        return None;
    }
    let targets = rest
        .split(',')
        .map(|t| t.trim().trim_matches('"').to_string())
        .filter(|t| !t.is_empty())
        .collect();
    Some((name, targets))
}

/// An aliases file, reread when it changes; a missing file means no aliases.
#[derive(Debug)]
pub struct Aliases {
    file: Watched<AliasMap>,
}

impl Aliases {
    /// Loads the aliases file at `path` (a missing file is empty).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            file: Watched::open(path.into(), true, AliasMap::parse)?,
        })
    }

    /// Rereads the file if it changed.
    pub fn reload_if_changed(&self) -> Result<bool> {
        self.file.reload_if_changed()
    }

    /// The current aliases.
    pub fn map(&self) -> Result<Arc<AliasMap>> {
        self.file.get()
    }
}

/// Where a recipient address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Local delivery to these accounts (canonical names, no duplicates).
    Local(Vec<String>),
    /// A local domain but no such user or alias: answer `550 5.1.1`.
    UnknownUser,
    /// Not one of our domains: the relay policy decides.
    NotLocal,
}

/// The local domains (Postfix's `mydestination`), compared
/// case-insensitively with a trailing dot ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalDomains(Vec<String>);

impl LocalDomains {
    /// The set of `domains`.
    pub fn new(domains: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        Self(
            domains
                .into_iter()
                .map(|d| normalize_domain(d.as_ref()))
                .collect(),
        )
    }

    /// Whether `domain` is one of ours.
    pub fn contains(&self, domain: &str) -> bool {
        self.0.contains(&normalize_domain(domain))
    }

    /// The account name for a login as a client typed it (AUTH or POP3
    /// USER): `user` as is, `user@domain` as `user` when the domain is one
    /// of ours (as Dovecot's `auth_username_format = %n` would), `None` for
    /// another domain.
    pub fn login_name(&self, login: &str) -> Option<String> {
        match login.rsplit_once('@') {
            Some((local, domain)) if self.contains(domain) && !local.is_empty() => {
                Some(local.to_string())
            }
            Some(_) => None,
            None => Some(login.to_string()),
        }
    }
}

/// Routing configuration and the account/alias databases it consults.
/// `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Router {
    domains: LocalDomains,
    accounts: Arc<Accounts>,
    aliases: Option<Arc<Aliases>>,
    postmaster: Option<String>,
}

/// The lab's `mydestination`.
pub const LAB_DOMAINS: &[&str] = &[
    "mail.csuvnetwork.com",
    "localhost.csuvnetwork.com",
    "localhost",
    "csuvnetwork.com",
];

/// How deep alias chains may go before we give up (a loop guard on top of
/// the visited set).
const MAX_ALIAS_DEPTH: usize = 20;

impl Router {
    /// A router for `domains` (Postfix's `mydestination`; compared
    /// case-insensitively, a trailing dot ignored).
    pub fn new(
        domains: impl IntoIterator<Item = impl AsRef<str>>,
        accounts: Arc<Accounts>,
        aliases: Option<Arc<Aliases>>,
    ) -> Self {
        Self {
            domains: LocalDomains::new(domains),
            accounts,
            aliases,
            postmaster: None,
        }
    }

    /// The account (or alias) that receives postmaster mail when neither
    /// the aliases nor the accounts define `postmaster` or `root`.
    /// Without it, the first account of the passwd-file is used.
    pub fn with_postmaster(mut self, target: impl Into<String>) -> Self {
        self.postmaster = Some(target.into());
        self
    }

    /// Whether `domain` is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// The local domains.
    pub fn domains(&self) -> &LocalDomains {
        &self.domains
    }

    /// The accounts the router consults.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// The account name for a login as a client typed it; see
    /// [`LocalDomains::login_name`].
    pub fn login_name(&self, login: &str) -> Option<String> {
        self.domains.login_name(login)
    }

    /// Routes an address (`local@domain`, or a bare local part, which is
    /// taken as local: RFC 5321 section 4.5.1 requires `<Postmaster>`).
    /// Angle brackets around the address are ignored.
    pub fn route(&self, address: &str) -> Result<Route> {
        let addr = address.trim();
        let addr = addr
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(addr);
        let (local, domain) = match addr.rsplit_once('@') {
            Some((l, d)) => (l, Some(d)),
            None => (addr, None),
        };
        if let Some(d) = domain {
            if !self.is_local_domain(d) {
                return Ok(Route::NotLocal);
            }
        }
        let local = unquote(local).to_lowercase();
        if local.is_empty() {
            return Ok(Route::UnknownUser);
        }
        let passwd = self.accounts_snapshot()?;
        let aliases = match &self.aliases {
            Some(a) => Some(a.map()?),
            None => None,
        };
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        self.expand(
            &local,
            &passwd,
            aliases.as_deref(),
            &mut visited,
            &mut out,
            0,
        );
        if out.is_empty() && local == "postmaster" {
            // RFC 5321 section 4.5.1: postmaster must work. Fall back to the
            // configured target, then root, then the first account.
            for fallback in self
                .postmaster
                .iter()
                .map(|p| p.to_lowercase())
                .chain(std::iter::once("root".to_string()))
                .chain(passwd.accounts().next().map(|a| a.name.to_lowercase()))
            {
                self.expand(
                    &fallback,
                    &passwd,
                    aliases.as_deref(),
                    &mut visited,
                    &mut out,
                    0,
                );
                if !out.is_empty() {
                    break;
                }
            }
        }
        Ok(if out.is_empty() {
            Route::UnknownUser
        } else {
            Route::Local(out)
        })
    }

    fn accounts_snapshot(&self) -> Result<Arc<PasswdFile>> {
        Ok(self.accounts.snapshot())
    }

    /// Expands `name` through aliases into accounts (depth-first, each
    /// name once). An alias naming itself means its own mailbox.
    fn expand(
        &self,
        name: &str,
        passwd: &PasswdFile,
        aliases: Option<&AliasMap>,
        visited: &mut HashSet<String>,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_ALIAS_DEPTH {
            return;
        }
        if !visited.insert(name.to_string()) {
            // Already expanded (alias loop or repeated target).
            return;
        }
        match aliases.and_then(|a| a.get(name)) {
            Some(ts) => {
                for t in ts {
                    if t.starts_with(['/', '|']) || t.starts_with(":include:") {
                        tracing::warn!(alias = name, target = %t, "alias target type not supported; ignored");
                        continue;
                    }
                    let (l, d) = match t.rsplit_once('@') {
                        Some((l, d)) => (l, Some(d)),
                        None => (t.as_str(), None),
                    };
                    if d.is_some_and(|d| !self.is_local_domain(d)) {
                        tracing::warn!(alias = name, target = %t, "remote alias target not supported; ignored");
                        continue;
                    }
                    let l = unquote(l).to_lowercase();
                    if l == name {
                        push_account(passwd, &l, out);
                    } else {
                        self.expand(&l, passwd, aliases, visited, out, depth + 1);
                    }
                }
            }
            None => push_account(passwd, name, out),
        }
    }
}

/// The entries of aliases-file text: (lower-cased name, range of its
/// physical lines, continuation lines included).
fn alias_entries(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
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

/// Checks the syntax of an alias target and normalises it: a local name
/// or `name@domain`, lower-cased. Pipes, files and `:include:` are refused
/// (this system does no forwarding into programs or files).
pub fn normalize_alias_target(target: &str) -> Result<String> {
    if target.starts_with(['|', '/']) || target.starts_with(":include:") {
        return Err(Error::InvalidName {
            name: target.to_string(),
            why: "pipes, files and :include: targets are not supported",
        });
    }
    match target.rsplit_once('@') {
        Some((l, d)) => {
            let l = normalize_name(l)?;
            let ok = !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
            if !ok {
                return Err(Error::InvalidName {
                    name: target.to_string(),
                    why: "invalid domain",
                });
            }
            Ok(format!("{l}@{}", d.to_ascii_lowercase()))
        }
        None => normalize_name(target),
    }
}

// The editors below rewrite the aliases file as the passwd-file editors
// do (atomically, under an `flock` on `<file>.lock`, other lines kept byte
// for byte); a new file is mode 0644.

/// Adds the alias `name: target, ...` to the aliases file at `path`. Every
/// target must reach a mailbox as `router` routes it (an account, an alias,
/// postmaster), or be in another domain; a local name that is neither an
/// account nor an alias is refused, so a typo cannot swallow mail. For a
/// target that is another alias of this file, `router` should read this
/// file.
pub fn add_alias(path: &Path, name: &str, targets: &[String], router: &Router) -> Result<()> {
    let name = normalize_name(name)?;
    if targets.is_empty() {
        return Err(Error::InvalidName {
            name,
            why: "an alias needs at least one target",
        });
    }
    let targets = targets
        .iter()
        .map(|t| normalize_alias_target(t))
        .collect::<Result<Vec<_>>>()?;
    let _lock = EditLock::take(path)?;
    let text = read_optional(path)?;
    if alias_entries(&text).iter().any(|(n, _)| *n == name) {
        return Err(Error::Exists {
            kind: "alias",
            name,
        });
    }
    for t in &targets {
        if router.route(t)? == Route::UnknownUser {
            return Err(Error::NotFound {
                kind: "account or alias",
                name: t.clone(),
            });
        }
    }
    let mut out = with_newline(text);
    out.push_str(&format!("{name}: {}\n", targets.join(", ")));
    atomic_write(path, out.as_bytes(), 0o644)
}

/// Removes alias `name` (case-insensitive) with its continuation lines.
pub fn remove_alias(path: &Path, name: &str) -> Result<()> {
    let _lock = EditLock::take(path)?;
    let text = read_existing(path)?;
    let want = name.to_lowercase();
    let Some((_, range)) = alias_entries(&text).into_iter().find(|(n, _)| *n == want) else {
        return Err(Error::NotFound {
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
    atomic_write(path, out.as_bytes(), 0o644)
}

fn push_account(passwd: &PasswdFile, name: &str, out: &mut Vec<String>) {
    if let Some(acc) = passwd.get(name) {
        if !out.contains(&acc.name) {
            out.push(acc.name.clone());
        }
    }
}

fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A local part without its quoting: `"user\1"` is `user1` (RFC 5321
/// section 4.1.2: a quoted-pair stands for its second character), as
/// Postfix canonicalises it.
fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.into();
    };
    if !inner.contains('\\') {
        return inner.into();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some(q) => out.push(q),
                // The closing quote was escaped: not a quoted string.
                None => return s.into(),
            },
            (c, false) => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn router(passwd: &str, aliases: &str) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("passwd"), passwd).unwrap();
        fs::write(dir.path().join("aliases"), aliases).unwrap();
        let acc = Arc::new(Accounts::open(dir.path().join("passwd")).unwrap());
        let al = Arc::new(Aliases::open(dir.path().join("aliases")).unwrap());
        let r = Router::new(LAB_DOMAINS, acc, Some(al));
        (dir, r)
    }

    fn local(v: &[&str]) -> Route {
        Route::Local(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn lab_routing() {
        let (_d, r) = router("user1:{PLAIN}a\nuser2:{PLAIN}b\n", "");
        assert_eq!(r.route("user1@csuvnetwork.com").unwrap(), local(&["user1"]));
        assert_eq!(
            r.route("<USER1@CSUVNetwork.com.>").unwrap(),
            local(&["user1"])
        );
        assert_eq!(
            r.route("user2@mail.csuvnetwork.com").unwrap(),
            local(&["user2"])
        );
        assert_eq!(r.route("user2@localhost").unwrap(), local(&["user2"]));
        assert_eq!(
            r.route("\"user2\"@localhost.csuvnetwork.com").unwrap(),
            local(&["user2"])
        );
        // A quoted-pair is its second character (RFC 5321 section 4.1.2).
        assert_eq!(
            r.route("\"user\\1\"@csuvnetwork.com").unwrap(),
            local(&["user1"])
        );
        assert_eq!(
            r.route("\"us\\er\\2\"@csuvnetwork.com").unwrap(),
            local(&["user2"])
        );
        assert_eq!(
            r.route("\"user1\\\"@csuvnetwork.com").unwrap(),
            Route::UnknownUser
        );
        assert_eq!(
            r.route("nobody@csuvnetwork.com").unwrap(),
            Route::UnknownUser
        );
        assert_eq!(r.route("@csuvnetwork.com").unwrap(), Route::UnknownUser);
        assert_eq!(r.route("user1@example.org").unwrap(), Route::NotLocal);
        assert_eq!(
            r.route("user1@sub.csuvnetwork.com").unwrap(),
            Route::NotLocal
        );
        // Postmaster falls back to the first account.
        assert_eq!(r.route("Postmaster").unwrap(), local(&["user1"]));
        assert_eq!(
            r.route("postmaster@csuvnetwork.com").unwrap(),
            local(&["user1"])
        );
        assert!(r.is_local_domain("LOCALHOST"));
    }

    #[test]
    fn aliases_expand() {
        let (_d, r) = router(
            "user1:{PLAIN}a\nuser2:{PLAIN}b\nadmin:{PLAIN}c\n",
            "# comment\nroot: admin\npostmaster: root\nteam: user1,\n  user2@csuvnetwork.com, \"user1\"\n\
             self: self, user2\nloop1: loop2\nloop2: loop1, user1\nremote: someone@example.org, /var/log/x, |cmd\n\
             fwd: user1@csuvnetwork.com, nobody\n",
        );
        assert_eq!(r.route("postmaster").unwrap(), local(&["admin"]));
        assert_eq!(
            r.route("team@csuvnetwork.com").unwrap(),
            local(&["user1", "user2"])
        );
        assert_eq!(r.route("loop1@localhost").unwrap(), local(&["user1"]));
        assert_eq!(r.route("remote@localhost").unwrap(), Route::UnknownUser);
        assert_eq!(r.route("fwd@localhost").unwrap(), local(&["user1"]));
        // 'self' is not an account, so only user2 gets it.
        assert_eq!(r.route("self@localhost").unwrap(), local(&["user2"]));
    }

    #[test]
    fn aliases_before_accounts() {
        let (_d, r) = router(
            "user1:{PLAIN}a\nuser2:{PLAIN}b\n",
            "User1: user2\nuser2: user2, user1\n",
        );
        // Postfix local(8) order: the alias wins over the account.
        assert_eq!(r.route("user1@localhost").unwrap(), local(&["user2"]));
        // An alias naming itself keeps a copy in its own mailbox.
        assert_eq!(r.route("user2@localhost").unwrap(), local(&["user2"]));
    }

    #[test]
    fn configured_postmaster_and_empty() {
        let (_d, r) = router("user1:{PLAIN}a\nuser2:{PLAIN}b\n", "");
        let r = r.with_postmaster("user2");
        assert_eq!(r.route("postmaster").unwrap(), local(&["user2"]));
        let (_d, r) = router("", "");
        assert_eq!(r.route("postmaster").unwrap(), Route::UnknownUser);
        // A configured postmaster wins over root.
        let (_d, r) = router("root:{PLAIN}a\nuser2:{PLAIN}b\n", "");
        assert_eq!(r.route("postmaster").unwrap(), local(&["root"]));
        let r = r.with_postmaster("User2");
        assert_eq!(r.route("postmaster").unwrap(), local(&["user2"]));
        // A configured target that does not exist falls through.
        let (_d, r) = router("root:{PLAIN}a\n", "");
        let r = r.with_postmaster("ghost");
        assert_eq!(r.route("postmaster").unwrap(), local(&["root"]));
    }

    #[test]
    fn login_names() {
        let (_d, r) = router("user1:{PLAIN}a\n", "");
        assert_eq!(r.login_name("user1").as_deref(), Some("user1"));
        assert_eq!(
            r.login_name("user1@CSUVnetwork.com").as_deref(),
            Some("user1")
        );
        assert_eq!(r.login_name("user1@example.org"), None);
        assert_eq!(r.login_name("@localhost"), None);
    }

    #[test]
    fn alias_parse() {
        let m = AliasMap::parse(
            "a: b, c\n\"Quoted Name\": x\nnocolon\n: empty\n\tcontinues: nothing\nb:\nA: dup\n",
            Path::new("t"),
        );
        let e: Vec<(&str, &[String])> = m.entries().collect();
        assert_eq!(e.len(), 3);
        assert_eq!(m.get("a").unwrap(), ["b", "c"]);
        assert_eq!(m.get("quoted name").unwrap(), ["x"]);
        assert!(m.get("b").unwrap().is_empty());
        assert!(m.get("nocolon").is_none());
    }

    #[test]
    fn alias_editors() {
        let (d, r) = router(
            "user1:{PLAIN}a\nadmin:{PLAIN}b\n",
            "# aliases\nteam: user1,\n  admin\nroot: admin\n",
        );
        let p = d.path().join("aliases");
        add_alias(
            &p,
            "Postmaster",
            &["root".into(), "User1@CSUVnetwork.com".into()],
            &r,
        )
        .unwrap();
        assert!(matches!(
            add_alias(&p, "TEAM", &["user1".into()], &r),
            Err(Error::Exists { kind: "alias", .. })
        ));
        for bad in [
            "|/bin/sh",
            "/var/mail/x",
            ":include:/etc/list",
            "a@b_c",
            "x@",
        ] {
            assert!(
                matches!(
                    add_alias(&p, "x", &[bad.into()], &r),
                    Err(Error::InvalidName { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            add_alias(&p, "x", &[], &r),
            Err(Error::InvalidName { .. })
        ));
        // A local target must be an account or an alias; other domains are
        // the administrator's business.
        let e = add_alias(&p, "x", &["user1".into(), "nosuchuser".into()], &r).unwrap_err();
        assert_eq!(e.to_string(), "no account or alias named \"nosuchuser\"");
        assert!(matches!(
            add_alias(&p, "x", &["ghost@localhost".into()], &r),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            add_alias(&p, "self", &["self".into()], &r),
            Err(Error::NotFound { .. })
        ));
        add_alias(&p, "ext", &["Someone@Example.ORG".into()], &r).unwrap();
        add_alias(&p, "all", &["team".into(), "postmaster".into()], &r).unwrap();
        let names: Vec<String> = AliasMap::parse(&fs::read_to_string(&p).unwrap(), &p)
            .entries()
            .map(|(n, t)| format!("{n}: {}", t.join(", ")))
            .collect();
        assert_eq!(
            names,
            [
                "team: user1, admin",
                "root: admin",
                "postmaster: root, user1@csuvnetwork.com",
                "ext: someone@example.org",
                "all: team, postmaster"
            ]
        );
        remove_alias(&p, "TEAM").unwrap();
        assert!(matches!(
            remove_alias(&p, "team"),
            Err(Error::NotFound { kind: "alias", .. })
        ));
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# aliases\nroot: admin\npostmaster: root, user1@csuvnetwork.com\n\
             ext: someone@example.org\nall: team, postmaster\n"
        );
        assert!(matches!(
            remove_alias(&d.path().join("none"), "x"),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn routes_follow_file_changes() {
        let (d, r) = router("user1:{PLAIN}a\n", "");
        assert_eq!(r.route("user9@localhost").unwrap(), Route::UnknownUser);
        crate::util::atomic_write(
            &d.path().join("passwd"),
            b"user1:{PLAIN}a\nuser9:{PLAIN}z\n",
            0o600,
        )
        .unwrap();
        assert_eq!(r.route("user9@localhost").unwrap(), local(&["user9"]));
        crate::util::atomic_write(&d.path().join("aliases"), b"user9: user1\n", 0o644).unwrap();
        assert_eq!(r.route("user9@localhost").unwrap(), local(&["user1"]));
    }
}
