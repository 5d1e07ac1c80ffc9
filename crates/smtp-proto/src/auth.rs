//! SASL mechanisms (RFC 4954, RFC 4616 PLAIN, LOGIN, RFC 2195 CRAM-MD5) and
//! the credentials a server session hands to its host.

use std::fmt;

use base64::Engine as _;
use md5::{Digest as _, Md5};

use crate::Secret;

/// A SASL mechanism this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616).
    Plain,
    /// `LOGIN` (draft-murchison-sasl-login), as Outlook and Foxmail use.
    Login,
    /// `CRAM-MD5` (RFC 2195).
    CramMd5,
}

impl Mechanism {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// Recognise a mechanism name, ignoring case.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client presented; the host checks it and answers with
/// [`ServerSession::auth_result`](crate::ServerSession::auth_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// PLAIN: optional authorization identity, user name, password.
    Plain {
        /// Authorization identity (empty when absent).
        authzid: String,
        /// Authentication identity.
        username: String,
        /// Password.
        password: Secret<String>,
    },
    /// LOGIN: user name and password.
    Login {
        /// User name.
        username: String,
        /// Password.
        password: Secret<String>,
    },
    /// CRAM-MD5: the host's challenge and the client's hex HMAC-MD5 digest;
    /// check it with [`Credentials::verify_password`].
    CramMd5 {
        /// User name.
        username: String,
        /// The challenge the host supplied.
        challenge: String,
        /// Lower-case hex digest sent by the client.
        digest: Secret<String>,
    },
}

impl Credentials {
    /// The authentication identity.
    pub fn username(&self) -> &str {
        match self {
            Credentials::Plain { username, .. }
            | Credentials::Login { username, .. }
            | Credentials::CramMd5 { username, .. } => username,
        }
    }

    /// The mechanism used.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Credentials::Plain { .. } => Mechanism::Plain,
            Credentials::Login { .. } => Mechanism::Login,
            Credentials::CramMd5 { .. } => Mechanism::CramMd5,
        }
    }

    /// Check against a known plaintext password. For PLAIN and LOGIN this
    /// compares the passwords; for CRAM-MD5 it recomputes the digest. Hosts
    /// that store hashes compare PLAIN/LOGIN passwords themselves.
    pub fn verify_password(&self, password: &str) -> bool {
        let (given, expected) = match self {
            Credentials::Plain { password: p, .. } | Credentials::Login { password: p, .. } => {
                (p.expose().as_bytes().to_vec(), password.as_bytes().to_vec())
            }
            Credentials::CramMd5 {
                challenge, digest, ..
            } => (
                digest.expose().to_ascii_lowercase().into_bytes(),
                cram_md5_digest(password.as_bytes(), challenge.as_bytes()).into_bytes(),
            ),
        };
        // Length-independent comparison of the bytes (not of timing
        // leaks from lengths, which are not secret here).
        given.len() == expected.len()
            && given
                .iter()
                .zip(&expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// HMAC-MD5 (RFC 2104) of `challenge` keyed with `password`, as lower-case
/// hex: the CRAM-MD5 response digest (RFC 2195).
pub fn cram_md5_digest(password: &[u8], challenge: &[u8]) -> String {
    let mut key = [0u8; 64];
    if password.len() > 64 {
        let h = Md5::digest(password);
        for (k, b) in key.iter_mut().zip(h.iter()) {
            *k = *b;
        }
    } else {
        for (k, b) in key.iter_mut().zip(password) {
            *k = *b;
        }
    }
    let mut inner = Md5::new();
    inner.update(key.map(|k| k ^ 0x36));
    inner.update(challenge);
    let inner = inner.finalize();
    let mut outer = Md5::new();
    outer.update(key.map(|k| k ^ 0x5c));
    outer.update(inner);
    outer
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Standard base64 with padding, as RFC 4954 requires.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decode a base64 SASL response; `None` when malformed.
pub(crate) fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2195_example() {
        // RFC 2195 section 2 example.
        let d = cram_md5_digest(
            b"tanstaaftanstaaf",
            b"<1896.697170952@postoffice.reston.mci.net>",
        );
        assert_eq!(d, "b913a602c7eda7a495b4e6e7334d3890");
        let c = Credentials::CramMd5 {
            username: "tim".into(),
            challenge: "<1896.697170952@postoffice.reston.mci.net>".into(),
            digest: Secret::new("B913A602C7EDA7A495B4E6E7334D3890".into()),
        };
        assert!(c.verify_password("tanstaaftanstaaf"));
        assert!(!c.verify_password("wrong"));
        assert_eq!(c.username(), "tim");
        assert_eq!(c.mechanism(), Mechanism::CramMd5);
    }

    #[test]
    fn long_key_hashed() {
        let long = [b'k'; 100];
        assert_eq!(cram_md5_digest(&long, b"c").len(), 32);
        assert_ne!(
            cram_md5_digest(&long, b"c"),
            cram_md5_digest(&long[..64], b"c")
        );
    }

    #[test]
    fn plain_login_verify_and_names() {
        let c = Credentials::Login {
            username: "user2".into(),
            password: Secret::new("pw".into()),
        };
        assert!(c.verify_password("pw"));
        assert!(!c.verify_password("pw2"));
        assert!(!format!("{c:?}").contains("pw\""));
        assert_eq!(Mechanism::from_name("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("XOAUTH2"), None);
        assert_eq!(b64_encode(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(b64_decode(b"UGFzc3dvcmQ6").unwrap(), b"Password:");
        assert_eq!(b64_decode(b"!!"), None);
    }
}
