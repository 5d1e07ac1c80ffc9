//! Mail authentication for smtpd, over the `mail-auth` crate (which does
//! DKIM's and DMARC's parsing and the cryptography): DKIM signing of our
//! users' mail ([`sign`]), SPF/DKIM/DMARC checks of inbound mail with an
//! `Authentication-Results:` field and the policy keys ([`check`]), key
//! generation and the TXT records that publish keys ([`keys`]). SPF (RFC
//! 7208) is our own evaluator ([`spf`]): mail-auth 0.13's misses the
//! void-lookup limit and unknown mechanisms.
//!
//! Signing and the header helpers are pure functions of the message; the
//! checks are `async` because DNS is, and take the daemon's resolver
//! configuration and a shared cache ([`cache`]), which tests fill by hand
//! instead of running a name server.
//!
//! Dependencies: mail-auth 0.13.3 (0.14 and later need rustc 1.98 through
//! mail-parser 1.0) with its ring backend for verifying (several times
//! faster on RSA-2048 than its rust-crypto one; the feature also turns on
//! hickory's TLS and DNSSEC, unused), ring for signing ([`keys::PrivateKey`]: the `rsa` crate's
//! private-key operation leaks timing, RUSTSEC-2023-0071) and
//! hickory-resolver 0.26, which it requires for its DNS side, the version
//! of the workspace's outbound resolver (`netkit::resolve`) too; only
//! hickory-proto is built twice (0.25 for `dns-zone` and `dnsd`).
#![forbid(unsafe_code)]

pub mod cache;
pub mod check;
pub mod headers;
pub mod keys;
pub mod sign;
pub mod spf;

pub use check::{Action, Checker, Envelope, Outcome, Policy};
pub use sign::Signer;

/// Why a key, a signature or the resolver failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file could not be read, parsed or generated.
    #[error("DKIM key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}
