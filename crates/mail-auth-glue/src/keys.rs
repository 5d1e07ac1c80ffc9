//! DKIM keys: loading a private key from a PEM file, generating a key
//! pair, and the `selector._domainkey` TXT record that publishes it
//! (RFC 6376 section 3.6.1, RFC 8463 for Ed25519).

use base64::Engine;
use mail_auth::common::crypto::{Algorithm as SigAlgorithm, CryptoError, SigningKey};
use mail_auth::common::headers::Writable;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::Error;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256` (RFC 6376 section 3.3.2), 2048-bit keys (RFC 8301).
    Rsa,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl std::str::FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Ok(Algorithm::Rsa),
            "ed25519" | "ed25519-sha256" => Ok(Algorithm::Ed25519),
            _ => Err(Error::Key(format!(
                "unknown algorithm {s:?}: use rsa or ed25519"
            ))),
        }
    }
}

/// RSA modulus size of generated keys: RFC 8301 section 3.2 asks for at
/// least 1024 bits and 2048 for signers; 2048-bit records still fit in
/// one TXT record of several strings.
pub const RSA_BITS: usize = 2048;

/// A DKIM private key. Signing goes through ring, not through mail-auth's
/// pure-Rust keys: the `rsa` crate's private-key operation is not constant
/// time (RUSTSEC-2023-0071, the Marvin attack) and is about ten times
/// slower than ring's, which blinds and is constant time. mail-auth still
/// verifies with `rsa`, which only uses public keys and so is not exposed.
pub enum PrivateKey {
    /// `rsa-sha256`: PKCS#1 v1.5 with SHA-256 (RFC 6376 section 3.3.1).
    Rsa(RsaKeyPair),
    /// `ed25519-sha256` (RFC 8463 section 3).
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself never goes to a log.
        f.write_str(match self {
            PrivateKey::Rsa(_) => "PrivateKey::Rsa",
            PrivateKey::Ed25519(_) => "PrivateKey::Ed25519",
        })
    }
}

impl SigningKey for PrivateKey {
    // Both algorithms hash with SHA-256 (the body hash, bh=).
    type Hasher = mail_auth::common::crypto::Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            PrivateKey::Rsa(k) => {
                // mail-auth hands the canonicalized header fields as
                // pieces; ring takes one slice and hashes it itself.
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                let mut sig = vec![0; k.public().modulus_len()];
                // The randomness is for blinding only: PKCS#1 v1.5
                // signatures are deterministic.
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &data, &mut sig)
                    .map_err(|e| mail_auth::Error::Crypto(CryptoError::Library(e.to_string())))?;
                Ok(sig)
            }
            // RFC 8463 section 3: PureEdDSA over the SHA-256 hash of the
            // header data.
            PrivateKey::Ed25519(k) => Ok(k.sign(self.hash(input).as_ref()).as_ref().to_vec()),
        }
    }

    fn algorithm(&self) -> SigAlgorithm {
        match self {
            PrivateKey::Rsa(_) => SigAlgorithm::RsaSha256,
            PrivateKey::Ed25519(_) => SigAlgorithm::Ed25519Sha256,
        }
    }
}

/// Loads a private key from PEM: RSA in PKCS#1 (`BEGIN RSA PRIVATE KEY`,
/// as `opendkim-genkey` writes) or PKCS#8 (`BEGIN PRIVATE KEY`), Ed25519
/// in PKCS#8 (v1 as OpenSSL and `generate` write, or v2).
pub fn load_pem(pem: &[u8]) -> Result<PrivateKey, Error> {
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::Key(format!("no private key in PEM: {e}")))?;
    let rsa = match &der {
        PrivateKeyDer::Pkcs8(p8) => {
            // `maybe_unchecked`: PKCS#8 v1 files carry no public key to
            // check the private one against.
            if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(p8.secret_pkcs8_der()) {
                return Ok(PrivateKey::Ed25519(k));
            }
            RsaKeyPair::from_pkcs8(p8.secret_pkcs8_der())
        }
        PrivateKeyDer::Pkcs1(p1) => RsaKeyPair::from_der(p1.secret_pkcs1_der()),
        _ => return Err(Error::Key("neither an RSA nor an Ed25519 key".into())),
    };
    rsa.map(PrivateKey::Rsa).map_err(|e| {
        // ring signs with 2048- to 8192-bit moduli only and rejects a
        // smaller one with this reason; RFC 8301 section 3.2 asks signers
        // for 2048 bits, and `mailctl dkim keygen` and current
        // opendkim-genkey make 2048.
        if e.to_string() == "TooSmall" {
            Error::Key(format!(
                "RSA key under {RSA_BITS} bits: make a new one (mailctl dkim keygen)"
            ))
        } else {
            Error::Key(format!("neither an RSA nor an Ed25519 key: {e}"))
        }
    })
}

/// A freshly generated key pair.
pub struct Generated {
    /// The private key, PKCS#8 PEM, for the key file.
    pub private_pem: String,
    /// The TXT record's text: `v=DKIM1; k=...; p=...`.
    pub record: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never goes to a log.
        f.debug_struct("Generated")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Generates a key pair of `alg`.
pub fn generate(alg: Algorithm) -> Result<Generated, Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match alg {
        // ring cannot generate RSA keys, so generation stays with the `rsa`
        // crate; the Marvin side channel is in private-key *use*, which is
        // ring's (`PrivateKey`), and generation runs once, offline.
        Algorithm::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| Error::Key(format!("RSA key generation failed: {e}")))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| Error::Key(e.to_string()))?;
            // SubjectPublicKeyInfo, as opendkim-genkey publishes and every
            // verifier (OpenSSL's d2i_PUBKEY in OpenDKIM) reads.
            let spki = rsa::RsaPublicKey::from(&key)
                .to_public_key_der()
                .map_err(|e| Error::Key(e.to_string()))?;
            Ok(Generated {
                private_pem: pem.to_string(),
                record: format!("v=DKIM1; k=rsa; p={}", b64.encode(spki.as_bytes())),
            })
        }
        Algorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed)
                .map_err(|e| Error::Key(format!("no randomness: {e}")))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| Error::Key(e.to_string()))?;
            // RFC 8463 section 4: p= is the bare 32-octet public key.
            Ok(Generated {
                private_pem: pem.to_string(),
                record: format!(
                    "v=DKIM1; k=ed25519; p={}",
                    b64.encode(key.verifying_key().as_bytes())
                ),
            })
        }
    }
}

/// A TXT record for a zone file: `owner IN TXT ( "..." "..." )`, the text
/// cut into character-strings of at most 255 octets (RFC 1035 section
/// 3.3.14; RFC 6376 section 3.6.2.2: verifiers join them without
/// spaces). The text is ASCII; `"` and `\` are escaped.
pub fn zone_record(owner: &str, text: &str) -> String {
    let chunks = split_strings(text);
    let mut out = format!("{owner} IN TXT (");
    for c in &chunks {
        out.push_str("\n\t\"");
        for ch in c.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push_str(" )\n");
    out
}

/// `text` in pieces of at most 255 octets, never inside a UTF-8 sequence.
pub fn split_strings(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (a, b) = rest.split_at(cut);
        out.push(a);
        rest = b;
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

/// The owner name of a key record: `selector._domainkey.domain.`.
pub fn record_owner(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{}.", domain.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_load() {
        for alg in [Algorithm::Ed25519, Algorithm::Rsa] {
            let g = generate(alg).unwrap();
            let k = load_pem(g.private_pem.as_bytes()).unwrap();
            match (alg, k) {
                (Algorithm::Rsa, PrivateKey::Rsa(_)) => {
                    assert!(g.record.starts_with("v=DKIM1; k=rsa; p=MII"))
                }
                (Algorithm::Ed25519, PrivateKey::Ed25519(_)) => {
                    assert!(g.record.starts_with("v=DKIM1; k=ed25519; p="))
                }
                _ => panic!("wrong key type for {alg:?}"),
            }
        }
    }

    #[test]
    fn rsa_record_is_split() {
        let g = generate(Algorithm::Rsa).unwrap();
        assert!(g.record.len() > 255);
        let z = zone_record(&record_owner("s1", "example.com"), &g.record);
        assert!(z.starts_with("s1._domainkey.example.com. IN TXT (\n\t\"v=DKIM1; k=rsa; p="));
        let strings: Vec<&str> = z.split('"').skip(1).step_by(2).collect();
        assert!(strings.len() >= 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), g.record);
    }

    #[test]
    fn pkcs1_rsa_keys_load() {
        // What opendkim-genkey writes: `BEGIN RSA PRIVATE KEY`.
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS).unwrap();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(matches!(load_pem(pem.as_bytes()), Ok(PrivateKey::Rsa(_))));
    }

    #[test]
    fn small_rsa_keys_are_refused_by_name() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let err = load_pem(pem.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("under 2048 bits"), "{err}");
    }

    #[test]
    fn signatures_are_deterministic_and_sized() {
        // PKCS#1 v1.5 and Ed25519 are deterministic: ring's blinding must
        // not change the output; sizes are the modulus and 64 octets.
        for (alg, len) in [(Algorithm::Rsa, RSA_BITS / 8), (Algorithm::Ed25519, 64)] {
            let k = load_pem(generate(alg).unwrap().private_pem.as_bytes()).unwrap();
            let a = k.sign(&b"header data"[..]).unwrap();
            assert_eq!(a.len(), len);
            assert_eq!(a, k.sign(&b"header data"[..]).unwrap());
            assert_ne!(a, k.sign(&b"header datb"[..]).unwrap());
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(load_pem(b"not a key").is_err());
        assert!("dsa".parse::<Algorithm>().is_err());
    }

    proptest! {
        #[test]
        fn split_round_trips(s in "\\PC{0,700}") {
            let parts = split_strings(&s);
            prop_assert!(parts.iter().all(|p| p.len() <= 255));
            prop_assert_eq!(parts.concat(), s);
        }
    }
}
