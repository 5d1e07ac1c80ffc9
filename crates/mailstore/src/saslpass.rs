//! Credentials for AUTH at next hops: the text file Postfix's
//! `smtp_sasl_password_maps` reads (`sasl_passwd`), one entry per line:
//!
//! ```text
//! # next hop               user:password
//! [smtp.example.net]:587   relayuser:s3cret
//! mx.example.org           other@example.org:pa:ss   # the password may hold ':'
//! ```
//!
//! Pure: the caller reads the file. A hop is looked up as `[host]:port`,
//! `[host]`, `host:port`, then `host` (Postfix looks up the next hop as
//! written, then the host name), case-insensitively.

use std::collections::HashMap;
use std::str::FromStr;

use mail_session::Secret;

/// Why a password file was refused; names its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// A line without a `user:password` value.
    #[error("relay password file line {0}: expected \"next-hop user:password\"")]
    Syntax(usize),
    /// The value has no `:` or an empty user name.
    #[error("relay password file line {0}: the value must be user:password")]
    NoUser(usize),
    /// The same next hop twice.
    #[error("relay password file line {0}: {1} is given twice")]
    Duplicate(usize, String),
}

/// The parsed file: next hop to user name and password.
#[derive(Clone, Default)]
pub struct PasswordMap {
    entries: HashMap<String, (String, Secret<String>)>,
}

impl std::fmt::Debug for PasswordMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: the passwords never reach a log.
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        f.debug_struct("PasswordMap").field("hops", &keys).finish()
    }
}

impl FromStr for PasswordMap {
    type Err = PasswordError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut entries = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(char::is_whitespace)
                .ok_or(PasswordError::Syntax(n))?;
            let value = value.trim();
            // A `#` after the value starts a comment only when it follows
            // blanks, so a password may contain `#`.
            let value = value
                .find(" #")
                .or_else(|| value.find("\t#"))
                .map_or(value, |i| value.get(..i).unwrap_or(value))
                .trim();
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(PasswordError::Syntax(n));
            }
            let (user, pass) = value.split_once(':').ok_or(PasswordError::NoUser(n))?;
            if user.is_empty() {
                return Err(PasswordError::NoUser(n));
            }
            let key = key.to_ascii_lowercase();
            if entries.contains_key(&key) {
                return Err(PasswordError::Duplicate(n, key));
            }
            entries.insert(key, (user.to_owned(), Secret::new(pass.to_owned())));
        }
        Ok(PasswordMap { entries })
    }
}

impl PasswordMap {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for a hop: `host` (a name or an address, without
    /// brackets) and its port.
    pub fn lookup(&self, host: &str, port: u16) -> Option<(String, Secret<String>)> {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        [
            format!("[{h}]:{port}"),
            format!("[{h}]"),
            format!("{h}:{port}"),
            h.clone(),
        ]
        .iter()
        .find_map(|k| self.entries.get(k))
        .cloned()
    }
}

/// Whether a file with this mode can be read by users other than its
/// owner and group (Postfix's `postmap` is usually run on a file of mode
/// 0600; a wider one is worth a warning).
pub fn world_readable(mode: u32) -> bool {
    mode & 0o004 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up_in_postfix_order() {
        let m: PasswordMap = "# comment\n\n[smtp.example.net]:587   relay:s3cret\n\
                              mx.example.org\tu@example.org:pa:ss#1  # note\n\
                              [127.0.0.1]:2587 user2:pw\n[Host.Example] a:b\n"
            .parse()
            .unwrap();
        assert_eq!(m.len(), 4);
        let (u, p) = m.lookup("smtp.example.net", 587).unwrap();
        assert_eq!((u.as_str(), p.expose().as_str()), ("relay", "s3cret"));
        assert!(m.lookup("smtp.example.net", 25).is_none());
        let (u, p) = m.lookup("MX.example.org.", 25).unwrap();
        assert_eq!(
            (u.as_str(), p.expose().as_str()),
            ("u@example.org", "pa:ss#1")
        );
        assert_eq!(m.lookup("127.0.0.1", 2587).unwrap().0, "user2");
        assert_eq!(m.lookup("host.example", 465).unwrap().0, "a");
        assert!(!format!("{m:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            "a b:c\nlonely\n".parse::<PasswordMap>().unwrap_err(),
            PasswordError::Syntax(2)
        );
        assert_eq!(
            "a nocolon\n".parse::<PasswordMap>().unwrap_err(),
            PasswordError::NoUser(1)
        );
        assert_eq!(
            "a :pw\n".parse::<PasswordMap>().unwrap_err(),
            PasswordError::NoUser(1)
        );
        let e = "[A]:1 u:p\n[a]:1 v:q\n".parse::<PasswordMap>().unwrap_err();
        assert_eq!(e, PasswordError::Duplicate(2, "[a]:1".into()));
        assert_eq!(
            e.to_string(),
            "relay password file line 2: [a]:1 is given twice"
        );
        assert!("".parse::<PasswordMap>().unwrap().is_empty());
    }

    #[test]
    fn world_readable_modes() {
        assert!(!world_readable(0o600));
        assert!(!world_readable(0o640));
        assert!(world_readable(0o644));
    }
}
