//! DKIM signing (RFC 6376, RFC 8463) of mail our users send: one
//! signature per key of the `From:` domain, relaxed/relaxed, the header
//! fields of the configured list that the message has.

use mail_auth::common::crypto::{Algorithm as SigAlgorithm, HashOutput, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use crate::{headers, keys, Error};

/// A key of the signing table.
pub struct Entry {
    /// `d=`, lowercased.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The private key.
    pub key: keys::PrivateKey,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Entry")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRef")
    }
}

/// A borrowed key, so that one loaded key signs many messages (mail-auth's
/// signer takes its key by value).
struct KeyRef<'a>(&'a keys::PrivateKey);

impl SigningKey for KeyRef<'_> {
    type Hasher = mail_auth::common::crypto::Sha256;
    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn hash(&self, data: impl Writable) -> HashOutput {
        self.0.hash(data)
    }
    fn algorithm(&self) -> SigAlgorithm {
        self.0.algorithm()
    }
}

/// The signing table: keys by domain, and the header fields to sign.
#[derive(Debug, Default)]
pub struct Signer {
    entries: Vec<Entry>,
    headers: Vec<String>,
}

impl Signer {
    /// A signer with these keys, signing these header fields when present.
    pub fn new(entries: Vec<Entry>, headers: Vec<String>) -> Self {
        Signer { entries, headers }
    }

    /// Loads `[dkim]`'s key files. A key that does not load is an error
    /// naming the file, at start and on reload, as certificates are.
    pub fn from_config(cfg: &mail_config::Dkim) -> Result<Self, Error> {
        let mut entries = Vec::new();
        for k in &cfg.keys {
            let pem = std::fs::read(&k.key_file)
                .map_err(|e| Error::Key(format!("{}: {e}", k.key_file.display())))?;
            let key = keys::load_pem(&pem)
                .map_err(|e| Error::Key(format!("{}: {e}", k.key_file.display())))?;
            entries.push(Entry {
                domain: k.domain.trim_end_matches('.').to_ascii_lowercase(),
                selector: k.selector.clone(),
                key,
            });
        }
        Ok(Signer::new(entries, cfg.sign_headers.clone()))
    }

    /// Whether there is any key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether mail from `domain` would be signed.
    pub fn signs_for(&self, domain: &str) -> bool {
        self.entries.iter().any(|e| e.domain == domain)
    }

    /// The `DKIM-Signature:` fields (each ending in CRLF) to put on top of
    /// `message`, one per key of its `From:` domain; empty when no key is
    /// for that domain. `message` is the whole message with CRLF line ends.
    pub fn sign(&self, message: &[u8]) -> Result<String, Error> {
        match headers::from_domain(message) {
            Some(domain) => self.sign_for(&domain, message),
            None => Ok(String::new()),
        }
    }

    /// The signatures of `domain`'s keys, whatever the `From:` domain is
    /// (a third-party signature, RFC 6376 section 1.1).
    pub fn sign_for(&self, domain: &str, message: &[u8]) -> Result<String, Error> {
        let mut out = String::new();
        let names = headers::present(message, &self.headers);
        if names.is_empty() {
            return Ok(out);
        }
        for e in self.entries.iter().filter(|e| e.domain == domain) {
            let sig = DkimSigner::from_key(KeyRef(&e.key))
                .domain(e.domain.clone())
                .selector(e.selector.clone())
                .headers(names.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign(message)
                .map_err(|err| Error::Sign(err.to_string()))?;
            out.push_str(&sig.to_header());
        }
        Ok(out)
    }
}
