//! A local certificate authority and server certificates from it (by
//! rcgen), for the lab and for `mailctl tls cert`: what a classroom or a
//! test network uses where no public CA can reach. ECDSA P-256 keys
//! (ring, which the certificates are made with, generates no RSA keys;
//! `openssl req` makes RSA ones for the benchmark).
//!
//! The CA is two files, `ca.pem` and `ca.key` (mode 0600), made once; a
//! server certificate is valid 825 days (the longest Apple's clients
//! accept) and names what clients connect to.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::tls::{civil_from_unix, rustls};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// rcgen refused (a bad name, an unreadable key).
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being done.
        context: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
}

/// A CA on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCa {
    /// The CA certificate (PEM), for clients to trust.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// `SHA256 AB:CD:...` of the certificate, as `openssl x509
    /// -fingerprint -sha256` prints it.
    pub fingerprint: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertGenError + '_ {
    move |source| CertGenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn rc(context: &str) -> impl FnOnce(rcgen::Error) -> CertGenError + '_ {
    move |source| CertGenError::Rcgen {
        context: context.to_owned(),
        source,
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// crash leaves the old file or the new one, never half of one.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), CertGenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Sets the validity to the calendar days `from` and `to` days after
/// `now` (whole days: certificates need no finer time).
fn set_validity(p: &mut CertificateParams, now: SystemTime, from: i64, to: i64) {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let day = |n: i64| {
        let (y, m, d) = civil_from_unix(secs.saturating_add(n.saturating_mul(86_400)));
        // Months are 1..=12 and days 1..=31, so the casts keep them.
        rcgen::date_time_ymd(i32::try_from(y).unwrap_or(9999), m as u8, d as u8)
    };
    p.not_before = day(from);
    p.not_after = day(to);
}

/// The CA's name, made from its key so that the files alone rebuild it:
/// two labs' CAs never share a name.
fn ca_params(key: &KeyPair, now: SystemTime) -> Result<CertificateParams, CertGenError> {
    let mut p = CertificateParams::default();
    let id = p.key_identifier(key);
    let mut tag = String::new();
    for b in id.iter().take(4) {
        let _ = write!(tag, "{b:02X}");
    }
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("csuv-mail local CA {tag}"));
    p.distinguished_name
        .push(DnType::OrganizationName, "csuv-mail");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, now, -1, 3650);
    Ok(p)
}

/// `SHA256 AB:CD:...` of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::from("SHA256 ");
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

fn pem_der(path: &Path, text: &str) -> Result<Vec<u8>, CertGenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    CertificateDer::from_pem_slice(text.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| CertGenError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
}

/// The CA in `dir` (`ca.pem`, `ca.key`), made first if it is not there.
pub fn ensure_ca(dir: &Path) -> Result<LocalCa, CertGenError> {
    let cert = dir.join("ca.pem");
    let key = dir.join("ca.key");
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let pair = KeyPair::generate().map_err(rc("generating the CA key"))?;
        let made = ca_params(&pair, SystemTime::now())?
            .self_signed(&pair)
            .map_err(rc("signing the CA certificate"))?;
        // The key first: a CA certificate without its key is useless.
        write_file(&key, &pair.serialize_pem(), true)?;
        write_file(&cert, &made.pem(), false)?;
    }
    let text = std::fs::read_to_string(&cert).map_err(io(&cert))?;
    let der = pem_der(&cert, &text)?;
    Ok(LocalCa {
        fingerprint: fingerprint(&der),
        cert,
        key,
    })
}

/// Issues a server certificate for `names` (DNS names or IP addresses;
/// the first is the subject's common name) signed by `ca`, writing the
/// certificate followed by the CA's (a full chain, as certbot's
/// `fullchain.pem`) to `cert_out` and its key to `key_out`.
pub fn issue(
    ca: &LocalCa,
    names: &[String],
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), CertGenError> {
    let now = SystemTime::now();
    let ca_key_pem = std::fs::read_to_string(&ca.key).map_err(io(&ca.key))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc("reading the CA key"))?;
    let ca_pem = std::fs::read_to_string(&ca.cert).map_err(io(&ca.cert))?;
    let issuer = Issuer::new(ca_params(&ca_key, now)?, ca_key);
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        p.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.as_str().try_into().map_err(|e| CertGenError::Rcgen {
                context: format!("{n:?} is not a DNS name"),
                source: e,
            })?),
        });
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    // From yesterday (a client clock a little behind) to 824 days ahead:
    // 825 days in all, the most Apple's clients accept; one more day and
    // they refuse the certificate (testssl.sh: "826 > 825 days").
    set_validity(&mut p, now, -1, 824);
    let pair = KeyPair::generate().map_err(rc("generating the key"))?;
    let made = p
        .signed_by(&pair, &issuer)
        .map_err(rc("signing the certificate"))?;
    if let Some(dir) = cert_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_file(key_out, &pair.serialize_pem(), true)?;
    write_file(cert_out, &format!("{}{ca_pem}", made.pem()), false)?;
    Ok(())
}

/// How long a certificate from [`issue`] is valid.
pub const VALIDITY: Duration = Duration::from_secs(825 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificates_are_valid_825_days_at_most() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(dir.path()).unwrap();
        let (cert, key) = (dir.path().join("s.pem"), dir.path().join("s.key"));
        issue(&ca, &["mail.example.org".into()], &cert, &key).unwrap();
        let pem = std::fs::read(&cert).unwrap();
        let leaf = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let (not_before, not_after) = crate::tls::validity(&leaf).unwrap();
        assert_eq!(
            not_after - not_before,
            i64::try_from(VALIDITY.as_secs()).unwrap()
        );
    }
}
