//! SASL for both mail protocols: the mechanisms (RFC 4616 PLAIN, LOGIN,
//! RFC 2195 CRAM-MD5), the server-side exchange as a small state machine,
//! the client-side responses, the credentials a server hands to its host,
//! and the digests behind CRAM-MD5 and APOP (RFC 1939 section 7).
//!
//! The exchange is the same in SMTP (RFC 4954) and POP3 (RFC 5034): the
//! server sends base64 challenges, the client answers with base64 lines,
//! `*` cancels, `=` is an empty response. Only the framing of challenges
//! (`334 ` or `+ `) and the error replies differ, so the protocol sessions
//! keep those and drive a [`ServerExchange`] for the rest.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
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
    /// Every mechanism, strongest last.
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];

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
        Mechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// The password crosses the connection (base64 is not encryption):
    /// policies that refuse plaintext logins outside TLS refuse these.
    pub fn is_plaintext(self) -> bool {
        !matches!(self, Mechanism::CramMd5)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client presented to log in. The host checks it against its
/// account store; [`Credentials::verify_password`] does the comparison for
/// a host that knows the clear secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// SASL PLAIN: optional authorization identity, user name, password.
    Plain {
        /// Authorization identity (empty when absent).
        authzid: String,
        /// Authentication identity.
        username: String,
        /// Password.
        password: Secret<String>,
    },
    /// SASL LOGIN, or POP3 `USER`/`PASS`: user name and password.
    Login {
        /// User name.
        username: String,
        /// Password.
        password: Secret<String>,
    },
    /// CRAM-MD5: the challenge and the client's HMAC-MD5 digest.
    CramMd5 {
        /// User name.
        username: String,
        /// The challenge the server sent.
        challenge: String,
        /// Lower-case hex digest sent by the client.
        digest: Secret<String>,
    },
    /// POP3 APOP (RFC 1939 section 7): the greeting's timestamp and the
    /// client's MD5 digest of timestamp and secret.
    Apop {
        /// User name.
        username: String,
        /// The timestamp from the greeting.
        timestamp: String,
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
            | Credentials::CramMd5 { username, .. }
            | Credentials::Apop { username, .. } => username,
        }
    }

    /// The mechanism's name, for logs (`PLAIN`, `LOGIN`, `CRAM-MD5`,
    /// `APOP`).
    pub fn mechanism_name(&self) -> &'static str {
        match self {
            Credentials::Plain { .. } => "PLAIN",
            Credentials::Login { .. } => "LOGIN",
            Credentials::CramMd5 { .. } => "CRAM-MD5",
            Credentials::Apop { .. } => "APOP",
        }
    }

    /// The clear password, for PLAIN and LOGIN; `None` for the digest
    /// mechanisms, which need the stored secret instead.
    pub fn password(&self) -> Option<&Secret<String>> {
        match self {
            Credentials::Plain { password, .. } | Credentials::Login { password, .. } => {
                Some(password)
            }
            Credentials::CramMd5 { .. } | Credentials::Apop { .. } => None,
        }
    }

    /// True for the mechanisms that need the account's clear secret
    /// (CRAM-MD5, APOP): a store of password hashes cannot check them.
    pub fn needs_clear_secret(&self) -> bool {
        self.password().is_none()
    }

    /// Checks the credentials against the account's clear secret: compares
    /// passwords for PLAIN and LOGIN, recomputes the digest for CRAM-MD5
    /// and APOP. Comparison takes the same time wherever the inputs differ.
    pub fn verify_password(&self, secret: &str) -> bool {
        match self {
            Credentials::Plain { password, .. } | Credentials::Login { password, .. } => {
                ct_eq(password.expose().as_bytes(), secret.as_bytes())
            }
            Credentials::CramMd5 {
                challenge, digest, ..
            } => digest_eq(
                &cram_md5_digest(secret.as_bytes(), challenge.as_bytes()),
                digest.expose(),
            ),
            Credentials::Apop {
                timestamp, digest, ..
            } => digest_eq(&apop_digest(timestamp, secret), digest.expose()),
        }
    }
}

/// Compares byte strings in time independent of where they differ (their
/// lengths are not secret here).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            if let Some(&d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(d));
            }
        }
    }
    s
}

/// HMAC-MD5 (RFC 2104) of `challenge` keyed with `secret`, as lower-case
/// hex: the CRAM-MD5 response digest (RFC 2195 section 2).
pub fn cram_md5_digest(secret: &[u8], challenge: &[u8]) -> String {
    // HMAC accepts keys of any length (longer ones are hashed, RFC 2104
    // section 2), so this cannot fail.
    match Hmac::<Md5>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(challenge);
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The APOP digest: lower-case hex of MD5(timestamp + secret) (RFC 1939
/// section 7).
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Compares two hex digests, ignoring case, in time independent of where
/// they differ.
pub fn digest_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
            acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
}

/// Standard base64 with padding, as RFC 4954 and RFC 5034 require.
pub fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decodes a base64 SASL line; `None` when malformed.
pub fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// `VXNlcm5hbWU6`: base64 of `Username:`, the first LOGIN challenge.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// `UGFzc3dvcmQ6`: base64 of `Password:`, the second LOGIN challenge.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Where a server-side SASL exchange stands between two client lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerExchange {
    /// PLAIN after an empty challenge: the response is due.
    Plain,
    /// LOGIN after `Username:`.
    LoginUser,
    /// LOGIN after `Password:`, with the user name received.
    LoginPass(String),
    /// CRAM-MD5 after the challenge (kept for the digest check).
    CramMd5(String),
}

/// What the server does after a client line of a SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this (already base64) challenge and wait for the next line in
    /// the given state. An empty challenge is sent as an empty line.
    Challenge(ServerExchange, String),
    /// The exchange is complete: check these credentials.
    Done(Credentials),
    /// The client cancelled with `*` (RFC 4954 section 4, RFC 5034
    /// section 4).
    Cancelled,
    /// The line is not valid base64.
    BadBase64,
    /// The decoded response does not have the mechanism's form: a failed
    /// login.
    Malformed,
}

impl ServerExchange {
    /// Starts an exchange for `mechanism`. `initial` is the initial
    /// response from the command line, if any (`=` for an empty one);
    /// `challenge` is the CRAM-MD5 challenge (`<unique@host>`, RFC 2195),
    /// ignored by the other mechanisms. The caller refuses an initial
    /// response to CRAM-MD5 (server-first, RFC 4422 section 3.3) before
    /// calling this; here it would be taken as the response.
    pub fn start(mechanism: Mechanism, initial: Option<&[u8]>, challenge: &str) -> ServerStep {
        let first = match mechanism {
            Mechanism::Plain => ServerExchange::Plain,
            Mechanism::Login => ServerExchange::LoginUser,
            Mechanism::CramMd5 => ServerExchange::CramMd5(challenge.to_owned()),
        };
        // An empty initial response to LOGIN gives no user name: the
        // exchange starts by asking for one, as Postfix and Dovecot do.
        let initial = initial.filter(|l| !(mechanism == Mechanism::Login && *l == b"="));
        match initial {
            Some(line) => first.step(line),
            None => {
                let text = match mechanism {
                    Mechanism::Plain => String::new(),
                    Mechanism::Login => LOGIN_USERNAME_CHALLENGE.to_owned(),
                    Mechanism::CramMd5 => b64_encode(challenge.as_bytes()),
                };
                ServerStep::Challenge(first, text)
            }
        }
    }

    /// Takes the client's next line (without its line end).
    pub fn step(self, line: &[u8]) -> ServerStep {
        if line == b"*" {
            return ServerStep::Cancelled;
        }
        // "=" is an empty response (RFC 4954 section 4).
        let data = if line == b"=" {
            Vec::new()
        } else {
            match b64_decode(line) {
                Some(d) => d,
                None => return ServerStep::BadBase64,
            }
        };
        match self {
            ServerExchange::Plain => {
                // [authzid] NUL authcid NUL passwd (RFC 4616 section 2).
                let mut parts = data.split(|&b| b == 0);
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(z), Some(u), Some(p), None) if !u.is_empty() => {
                        match (
                            std::str::from_utf8(z),
                            std::str::from_utf8(u),
                            std::str::from_utf8(p),
                        ) {
                            (Ok(z), Ok(u), Ok(p)) => ServerStep::Done(Credentials::Plain {
                                authzid: z.to_owned(),
                                username: u.to_owned(),
                                password: Secret::new(p.to_owned()),
                            }),
                            _ => ServerStep::Malformed,
                        }
                    }
                    _ => ServerStep::Malformed,
                }
            }
            ServerExchange::LoginUser => match String::from_utf8(data) {
                Ok(user) if !user.is_empty() => ServerStep::Challenge(
                    ServerExchange::LoginPass(user),
                    LOGIN_PASSWORD_CHALLENGE.to_owned(),
                ),
                _ => ServerStep::Malformed,
            },
            ServerExchange::LoginPass(username) => match String::from_utf8(data) {
                Ok(password) => ServerStep::Done(Credentials::Login {
                    username,
                    password: Secret::new(password),
                }),
                Err(_) => ServerStep::Malformed,
            },
            ServerExchange::CramMd5(challenge) => {
                // "user SP 32 hex digits" (RFC 2195 section 2).
                let parsed = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|t| t.rsplit_once(' '))
                    .filter(|(u, d)| {
                        !u.is_empty() && d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .map(|(u, d)| (u.to_owned(), d.to_ascii_lowercase()));
                match parsed {
                    Some((username, digest)) => ServerStep::Done(Credentials::CramMd5 {
                        username,
                        challenge,
                        digest: Secret::new(digest),
                    }),
                    None => ServerStep::Malformed,
                }
            }
        }
    }
}

/// The client's side: the base64 responses for each mechanism.
pub mod client {
    use super::{b64_decode, b64_encode, cram_md5_digest};

    /// The PLAIN response (RFC 4616): `authzid NUL user NUL password`.
    pub fn plain(authzid: &str, username: &str, password: &str) -> String {
        let mut msg = Vec::with_capacity(authzid.len() + username.len() + password.len() + 2);
        msg.extend_from_slice(authzid.as_bytes());
        msg.push(0);
        msg.extend_from_slice(username.as_bytes());
        msg.push(0);
        msg.extend_from_slice(password.as_bytes());
        b64_encode(&msg)
    }

    /// One LOGIN response (the user name, then the password).
    pub fn login(value: &str) -> String {
        b64_encode(value.as_bytes())
    }

    /// The CRAM-MD5 response to a base64 `challenge`: `user SP digest`,
    /// base64; `None` when the challenge is not base64.
    pub fn cram_md5(username: &str, secret: &str, challenge_b64: &str) -> Option<String> {
        let challenge = b64_decode(challenge_b64.trim().as_bytes())?;
        let digest = cram_md5_digest(secret.as_bytes(), &challenge);
        Some(b64_encode(format!("{username} {digest}").as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What the client side encodes, the server side decodes to the
        /// same credentials, for PLAIN and LOGIN, with or without an
        /// initial response.
        #[test]
        fn client_responses_round_trip(
            authzid in "[^\\x00]{0,8}",
            user in "[^\\x00]{1,12}",
            pass in "[^\\x00]{0,12}",
            initial in any::<bool>(),
        ) {
            let line = client::plain(&authzid, &user, &pass);
            let step = if initial {
                ServerExchange::start(Mechanism::Plain, Some(line.as_bytes()), "")
            } else {
                match ServerExchange::start(Mechanism::Plain, None, "") {
                    ServerStep::Challenge(s, _) => s.step(line.as_bytes()),
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
            };
            prop_assert_eq!(step, ServerStep::Done(Credentials::Plain {
                authzid: authzid.clone(),
                username: user.clone(),
                password: Secret::new(pass.clone()),
            }));
            let ServerStep::Challenge(s, _) = ServerExchange::LoginUser.step(client::login(&user).as_bytes())
            else {
                return Err(TestCaseError::fail("no password challenge"));
            };
            let step = s.step(client::login(&pass).as_bytes());
            prop_assert_eq!(step, ServerStep::Done(Credentials::Login {
                username: user,
                password: Secret::new(pass),
            }));
        }

        /// Any line at any step: never a panic, and a completed exchange
        /// always names a user.
        #[test]
        fn arbitrary_lines_never_panic(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
            mech in 0usize..3,
        ) {
            let mut step = ServerExchange::start(Mechanism::ALL[mech], None, "<1@x>");
            for l in &lines {
                match step {
                    ServerStep::Challenge(s, _) => step = s.step(l),
                    _ => break,
                }
            }
            if let ServerStep::Done(c) = step {
                prop_assert!(!c.username().is_empty());
            }
        }
    }

    #[test]
    fn rfc2195_example() {
        // RFC 2195 section 2.
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let d = cram_md5_digest(b"tanstaaftanstaaf", challenge.as_bytes());
        assert_eq!(d, "b913a602c7eda7a495b4e6e7334d3890");
        let c = Credentials::CramMd5 {
            username: "tim".into(),
            challenge: challenge.into(),
            digest: Secret::new("b913a602c7eda7a495b4e6e7334d3890".into()),
        };
        assert!(c.verify_password("tanstaaftanstaaf"));
        assert!(!c.verify_password("wrong"));
        assert!(c.needs_clear_secret());
        assert_eq!(c.mechanism_name(), "CRAM-MD5");
        // The client side produces what the RFC shows.
        let r = client::cram_md5("tim", "tanstaaftanstaaf", &b64_encode(challenge.as_bytes()));
        assert_eq!(
            r.as_deref(),
            Some("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
        );
    }

    #[test]
    fn long_keys_are_hashed_first() {
        // RFC 2104 section 2: keys longer than the block are hashed.
        let long = [b'k'; 100];
        assert_eq!(cram_md5_digest(&long, b"c").len(), 32);
        assert_ne!(
            cram_md5_digest(&long, b"c"),
            cram_md5_digest(&long[..64], b"c")
        );
        assert_eq!(
            cram_md5_digest(&long, b"c"),
            cram_md5_digest(&Md5::digest(long), b"c")
        );
    }

    #[test]
    fn rfc1939_apop_example() {
        // RFC 1939 section 7.
        let d = apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf");
        assert_eq!(d, "c4c9334bac560ecc979e58001b3e22fb");
        assert!(digest_eq(&d, "C4C9334BAC560ECC979E58001B3E22FB"));
        assert!(!digest_eq(&d, "c4c9334bac560ecc979e58001b3e22fa"));
        assert!(!digest_eq(&d, "c4"));
        let c = Credentials::Apop {
            username: "mrose".into(),
            timestamp: "<1896.697170952@dbc.mtview.ca.us>".into(),
            digest: Secret::new(d),
        };
        assert!(c.verify_password("tanstaaf"));
        assert!(!c.verify_password("tanstaa"));
    }

    #[test]
    fn names_and_redaction() {
        let c = Credentials::Login {
            username: "user2".into(),
            password: Secret::new("pw".into()),
        };
        assert!(c.verify_password("pw"));
        assert!(!c.verify_password("pw2"));
        assert!(!format!("{c:?}").contains("\"pw\""));
        assert_eq!(c.password().map(|p| p.expose().as_str()), Some("pw"));
        assert_eq!(Mechanism::from_name("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("XOAUTH2"), None);
        assert!(Mechanism::Login.is_plaintext() && !Mechanism::CramMd5.is_plaintext());
        assert_eq!(b64_encode(b"Username:"), LOGIN_USERNAME_CHALLENGE);
        assert_eq!(b64_decode(b"UGFzc3dvcmQ6").unwrap(), b"Password:");
        assert_eq!(b64_decode(b"!!"), None);
    }

    #[test]
    fn plain_exchange() {
        // Initial response (RFC 4616 section 4 example).
        let ir = client::plain("", "tim", "tanstaaftanstaaf");
        match ServerExchange::start(Mechanism::Plain, Some(ir.as_bytes()), "") {
            ServerStep::Done(Credentials::Plain {
                authzid,
                username,
                password,
            }) => {
                assert_eq!((authzid.as_str(), username.as_str()), ("", "tim"));
                assert_eq!(password.expose(), "tanstaaftanstaaf");
            }
            other => panic!("{other:?}"),
        }
        // Without: an empty challenge, then the response.
        let ServerStep::Challenge(state, text) = ServerExchange::start(Mechanism::Plain, None, "")
        else {
            panic!()
        };
        assert_eq!(text, "");
        assert!(matches!(state.clone().step(b"*"), ServerStep::Cancelled));
        assert!(matches!(state.clone().step(b"!!"), ServerStep::BadBase64));
        assert!(matches!(state.clone().step(b"="), ServerStep::Malformed));
        // No user name, or a fourth field: malformed.
        let bad = b64_encode(b"\0\0pw");
        assert!(matches!(
            state.clone().step(bad.as_bytes()),
            ServerStep::Malformed
        ));
        let bad = b64_encode(b"a\0b\0c\0d");
        assert!(matches!(state.step(bad.as_bytes()), ServerStep::Malformed));
    }

    #[test]
    fn login_and_cram_exchanges() {
        let ServerStep::Challenge(s, t) = ServerExchange::start(Mechanism::Login, None, "") else {
            panic!()
        };
        assert_eq!(t, LOGIN_USERNAME_CHALLENGE);
        let ServerStep::Challenge(s, t) = s.step(client::login("user2").as_bytes()) else {
            panic!()
        };
        assert_eq!(t, LOGIN_PASSWORD_CHALLENGE);
        match s.step(client::login("pw").as_bytes()) {
            ServerStep::Done(c) => assert!(c.verify_password("pw") && c.username() == "user2"),
            other => panic!("{other:?}"),
        }
        // An empty LOGIN user name is refused.
        assert!(matches!(
            ServerExchange::LoginUser.step(b"="),
            ServerStep::Malformed
        ));
        // `AUTH LOGIN =` (an empty initial response) asks for the user
        // name, as Postfix and Dovecot do.
        assert!(matches!(
            ServerExchange::start(Mechanism::Login, Some(b"="), ""),
            ServerStep::Challenge(ServerExchange::LoginUser, ref t) if t == LOGIN_USERNAME_CHALLENGE
        ));

        let ch = "<1.2@host>";
        let ServerStep::Challenge(s, t) = ServerExchange::start(Mechanism::CramMd5, None, ch)
        else {
            panic!()
        };
        assert_eq!(b64_decode(t.as_bytes()).unwrap(), ch.as_bytes());
        let resp = client::cram_md5("u", "secret", &t).unwrap();
        match s.clone().step(resp.as_bytes()) {
            ServerStep::Done(c) => {
                assert!(c.verify_password("secret"));
                assert!(!c.verify_password("other"));
            }
            other => panic!("{other:?}"),
        }
        let short = b64_encode(b"u abc");
        assert!(matches!(s.step(short.as_bytes()), ServerStep::Malformed));
    }
}
