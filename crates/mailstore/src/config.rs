//! Configuration of the store as the daemons read it (a `[mailstore]`
//! section of the shared TOML file, for example), and one call that opens
//! everything a daemon needs.
//!
//! ```toml
//! [mailstore]
//! maildir_root = "/var/lib/csuv-mail/mail"
//! passwd = "/etc/csuv-mail/passwd"
//! aliases = "/etc/csuv-mail/aliases"
//! local_domains = ["mail.csuvnetwork.com", "localhost.csuvnetwork.com", "localhost", "csuvnetwork.com"]
//! # postmaster = "user1"      # who gets postmaster mail without an alias
//! # hostname = "mail"         # host part of Maildir file names
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::{Accounts, Aliases, QueueIdGenerator, Result, Router, Store, LAB_DOMAINS};

/// Settings of the store; every field has a default (the lab's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory holding `<user>/Maildir` (default `/var/lib/csuv-mail/mail`).
    pub maildir_root: PathBuf,
    /// Dovecot-format passwd-file (default `/etc/csuv-mail/passwd`).
    pub passwd: PathBuf,
    /// `/etc/aliases`-format file; may be missing (default
    /// `/etc/csuv-mail/aliases`).
    pub aliases: PathBuf,
    /// Postfix's `mydestination` (default: the lab's four names).
    pub local_domains: Vec<String>,
    /// Receives postmaster mail when no alias says otherwise.
    pub postmaster: Option<String>,
    /// Host name used in Maildir file names (default: the system's).
    pub hostname: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            maildir_root: PathBuf::from("/var/lib/csuv-mail/mail"),
            passwd: PathBuf::from("/etc/csuv-mail/passwd"),
            aliases: PathBuf::from("/etc/csuv-mail/aliases"),
            local_domains: LAB_DOMAINS.iter().map(|d| d.to_string()).collect(),
            postmaster: None,
            hostname: None,
        }
    }
}

/// Everything a daemon needs, opened from a [`StoreConfig`]; cheap to
/// clone and share between tasks.
#[derive(Debug, Clone)]
pub struct Mailstore {
    /// Maildirs: delivery and maildrops.
    pub store: Store,
    /// The account database.
    pub accounts: Arc<Accounts>,
    /// Address routing (uses `accounts` and the aliases).
    pub router: Arc<Router>,
    /// Queue ids for `250 2.0.0 Ok: queued as <id>`.
    pub queue_ids: Arc<QueueIdGenerator>,
}

impl StoreConfig {
    /// Opens the store, the passwd-file (which must exist) and the aliases.
    pub fn open(&self) -> Result<Mailstore> {
        let store = match &self.hostname {
            Some(h) => Store::with_hostname(&self.maildir_root, h)?,
            None => Store::open(&self.maildir_root)?,
        };
        let accounts = Arc::new(Accounts::open(&self.passwd)?);
        let aliases = Arc::new(Aliases::open(&self.aliases)?);
        let mut router = Router::new(&self.local_domains, accounts.clone(), Some(aliases));
        if let Some(p) = &self.postmaster {
            router = router.with_postmaster(p.clone());
        }
        Ok(Mailstore {
            store,
            accounts,
            router: Arc::new(router),
            queue_ids: Arc::new(QueueIdGenerator::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Route;

    #[test]
    fn toml_section_and_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "user1:{PLAIN}a\n").unwrap();
        let text = format!(
            "maildir_root = '{0}/mail'\npasswd = '{0}/passwd'\naliases = '{0}/aliases'\n\
             local_domains = ['example.org']\npostmaster = 'user1'\nhostname = 'mx'\n",
            dir.path().display()
        );
        let cfg: StoreConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.local_domains, ["example.org"]);
        let ms = cfg.open().unwrap();
        assert_eq!(
            ms.router.route("USER1@example.org").unwrap(),
            Route::Local(vec!["user1".into()])
        );
        assert_eq!(
            ms.router.route("user1@csuvnetwork.com").unwrap(),
            Route::NotLocal
        );
        assert!(ms
            .accounts
            .verify_password("user1", b"a")
            .unwrap()
            .is_some());
        assert!(ms.store.root().ends_with("mail"));

        let defaults: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(defaults, StoreConfig::default());
        assert_eq!(defaults.local_domains.len(), 4);
        assert!(
            toml::from_str::<StoreConfig>("maildir = 'x'").is_err(),
            "typos are errors"
        );
        let missing = StoreConfig {
            passwd: dir.path().join("nope"),
            ..cfg
        };
        assert!(missing.open().is_err());
    }
}
