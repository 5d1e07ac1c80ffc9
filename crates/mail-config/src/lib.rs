//! The one configuration file shared by every daemon of the system.
//!
//! Like Postfix's `main.cf` and Dovecot's `dovecot.conf`, a single TOML file
//! configures the whole system, one section per daemon:
//!
//! * `[global]`: host name, local domains (`mydestination`), relay networks
//!   (`mynetworks`), the Maildir root, passwd-file and aliases, transcripts;
//! * `[smtpd]`: SMTP listeners (inbound and submission) and limits;
//! * `[pop3d]`: POP3 listeners and limits;
//! * `[dnsd]`: DNS listeners, zones and limits;
//! * `[resolver]`: the name servers outbound delivery asks.
//! * `[dkim]`: DKIM keys smtpd signs our users' mail with;
//! * `[auth_checks]`: SPF, DKIM and DMARC checks of inbound mail.
//!
//! Every key has a default, so an empty file is a valid configuration: the
//! built-in lab setup on loopback ports. Unknown sections and keys are
//! errors, never silently ignored, and every error names the key, the line
//! and the reason. Relative paths are relative to the directory of the
//! configuration file. Daemons and tools (such as an administration command
//! given `--config FILE`) all load the file with [`Config::load`], so they
//! see the same defaults.
//!
//! ```
//! use mail_config::Config;
//!
//! let cfg = Config::from_toml_str(
//!     r#"
//!     [global]
//!     hostname = "mail.csuvnetwork.com"
//!     local_domains = ["csuvnetwork.com", "mail.csuvnetwork.com"]
//!     relay_networks = ["192.168.3.0/24", "127.0.0.0/8"]
//!
//!     [smtpd]
//!     message_size_limit = 10240000
//!     "#,
//!     "/etc/csuv-mail".as_ref(),
//! )
//! .unwrap();
//! assert!(cfg.global.is_relay_client("192.168.3.4".parse().unwrap()));
//! assert!(!cfg.global.is_relay_client("10.0.0.1".parse().unwrap()));
//! assert_eq!(cfg.smtpd.message_size_limit, 10_240_000);
//!
//! // Unknown keys are refused with their line.
//! let err = Config::from_toml_str("[smtpd]\nmesage_size_limit = 1\n", "/".as_ref()).unwrap_err();
//! assert!(err.to_string().contains("line 2"), "{err}");
//! assert!(err.to_string().contains("mesage_size_limit"), "{err}");
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

mod destination;
pub use destination::{normalize_host_name, AddressPreference, DestinationHost, SmtpDestination};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown or a value is invalid. The
    /// message carries the line, the column and the key.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file name, or `<string>`.
        origin: String,
        /// toml's message: line, column, the offending text and the reason.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Settings every daemon shares.
    pub global: Global,
    /// The SMTP server.
    pub smtpd: Smtpd,
    /// The POP3 server.
    pub pop3d: Pop3d,
    /// The DNS server.
    pub dnsd: Dnsd,
    /// Certificates and TLS policy shared by smtpd and pop3d.
    pub tls: Tls,
    /// The DNS resolver of outbound delivery.
    pub resolver: Resolver,
    /// DKIM signing of mail our users send.
    pub dkim: Dkim,
    /// SPF, DKIM and DMARC checks of inbound mail.
    pub auth_checks: AuthChecks,
    /// The outbound queue manager and its SMTP client.
    pub outbound: Outbound,
    /// Directory relative paths are resolved against (not a key).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[global]`: what Postfix keeps in `main.cf` and Dovecot in `10-mail.conf`
/// and `10-auth.conf`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// This host's name in greetings and `Received:` lines (`myhostname`).
    pub hostname: String,
    /// Domains delivered locally (`mydestination`).
    pub local_domains: Vec<String>,
    /// Clients allowed to relay without authentication (`mynetworks`).
    pub relay_networks: Vec<IpNet>,
    /// Root of the Maildirs: user `u` owns `<maildir_root>/u/Maildir/{cur,new,tmp}`
    /// (Dovecot `mail_location = maildir:~/Maildir`).
    pub maildir_root: PathBuf,
    /// Dovecot-style passwd-file (`passdb { driver = passwd-file }`).
    pub passwd_file: PathBuf,
    /// Aliases in `/etc/aliases` form (`alias_maps`).
    pub aliases_file: PathBuf,
    /// Log every protocol line as `C: ...` / `S: ...` (teaching aid).
    pub transcript: bool,
    /// Show AUTH payloads and passwords in transcripts instead of
    /// `<redacted>`. Only for classroom use.
    pub transcript_show_secrets: bool,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            hostname: "mail.csuvnetwork.com".into(),
            local_domains: vec![
                "mail.csuvnetwork.com".into(),
                "localhost.csuvnetwork.com".into(),
                "localhost".into(),
                "csuvnetwork.com".into(),
            ],
            relay_networks: vec![
                IpNet::from_str("127.0.0.0/8").unwrap_or(IpNet::LOOPBACK_V4),
                IpNet::from_str("::1/128").unwrap_or(IpNet::LOOPBACK_V4),
            ],
            maildir_root: "lab-data/mail".into(),
            passwd_file: "lab-data/passwd".into(),
            aliases_file: "lab-data/aliases".into(),
            transcript: false,
            transcript_show_secrets: false,
        }
    }
}

impl Global {
    /// Whether `ip` is in `relay_networks` (Postfix `permit_mynetworks`).
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|n| n.contains(ip))
    }
}

/// `[smtpd]`: listeners and limits of the SMTP server, with Postfix's
/// defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtpd {
    /// Inbound SMTP listeners (port 25 in production): local recipients
    /// without AUTH; relaying only for `relay_networks` or after AUTH.
    pub listen: Vec<SocketAddr>,
    /// Submission listeners (port 587, RFC 6409): AUTH required before MAIL.
    pub submission_listen: Vec<SocketAddr>,
    /// Submission over implicit TLS (port 465, RFC 8314): as
    /// `submission_listen`, TLS from the first byte.
    pub submissions_listen: Vec<SocketAddr>,
    /// STARTTLS on the inbound listeners (`smtpd_tls_security_level`).
    pub tls_security_level: TlsLevel,
    /// STARTTLS on the submission listeners (Postfix's `-o
    /// smtpd_tls_security_level` in `master.cf`).
    pub submission_tls_security_level: TlsLevel,
    /// Certificates for smtpd's listeners; empty: `[tls] certificates`.
    pub tls_certificates: Vec<CertificateFiles>,
    /// Largest message accepted, in bytes (`message_size_limit`).
    pub message_size_limit: u64,
    /// Recipients per message (`smtpd_recipient_limit`).
    pub recipient_limit: usize,
    /// Refuse VRFY (`502 5.5.1`) and leave it out of EHLO, so that
    /// addresses cannot be probed with it (`disable_vrfy_command`).
    pub disable_vrfy_command: bool,
    /// Concurrent connections in total (`default_process_limit`); lowered
    /// at start to what the file descriptor limit allows. When full, a
    /// client with few connections takes the slot of a not yet
    /// authenticated one of the client holding the most.
    pub max_connections: usize,
    /// Concurrent connections per client address, IPv6 per /64
    /// (`smtpd_client_connection_count_limit`).
    pub max_connections_per_client: usize,
    /// Wait for a command (`smtpd_timeout`; RFC 5321 section 4.5.3.2).
    pub command_timeout: Secs,
    /// Total time for one command line, however slowly it trickles in.
    pub command_line_timeout: Secs,
    /// Total time from the greeting to the first command.
    pub first_command_timeout: Secs,
    /// Wait for each block of DATA (RFC 5321 section 4.5.3.2: 3 minutes).
    pub data_timeout: Secs,
    /// Errors before `421` and close (`smtpd_hard_error_limit`); a
    /// message accepted forgives those so far.
    pub error_limit: u32,
    /// NOOP, RSET, VRFY, HELP, HELO and EHLO commands before each further one counts
    /// as an error (`smtpd_junk_command_limit`); 0: no limit.
    pub junk_command_limit: u32,
    /// Pause after each failed AUTH, against password guessing
    /// (`smtpd_error_sleep_time`).
    pub auth_failure_delay: Secs,
    /// Failed AUTH commands on one connection before `421 4.7.0` and
    /// close; 0: no limit.
    pub auth_failure_limit: u32,
    /// Dovecot's auth penalty per client address across connections:
    /// the wait before the next attempt after the first failure, doubled
    /// by each further one; 0 turns it off.
    pub auth_penalty: Secs,
    /// The longest auth penalty wait.
    pub auth_penalty_max: Secs,
    /// SASL mechanisms offered (`smtpd_sasl_security_options`).
    pub auth_mechanisms: Vec<String>,
    /// What to do with a line ending in a bare LF
    /// (`smtpd_forbid_bare_newline`): `normalize` or `reject`.
    pub bare_newline: BareNewline,
    /// How long in-flight transactions may run after SIGTERM.
    pub shutdown_grace: Secs,
    /// The queue journal: messages are durable here when `250` is sent
    /// and delivered into the Maildirs right after (`queue_directory`).
    pub queue_directory: PathBuf,
    /// Longest wait between retries of a delivery that failed, e.g. a
    /// Maildir that could not be written: retries start after 1 s and
    /// double up to this (`maximal_backoff_time`).
    pub queue_retry_delay: Secs,
    /// Send all remote mail through this host (Postfix's `relayhost`);
    /// `""`: none, MX lookups. Used by outbound delivery.
    #[serde(deserialize_with = "destination::optional_destination")]
    pub relayhost: Option<SmtpDestination>,
    /// A `transport(5)` table of per-destination next hops (Postfix's
    /// `transport_maps`); `""`: none. Used by outbound delivery.
    #[serde(deserialize_with = "destination::optional_path")]
    pub transport_file: Option<PathBuf>,
    /// Credentials for AUTH at next hops, one `[host]:port user:password`
    /// per line (Postfix's `smtp_sasl_password_maps`); `""`: none. Used by
    /// outbound delivery.
    #[serde(deserialize_with = "destination::optional_path")]
    pub relay_password_file: Option<PathBuf>,
    /// Address family tried first (Postfix's `smtp_address_preference`).
    /// Used by outbound delivery.
    pub address_preference: AddressPreference,
}

/// `[resolver]`: how outbound delivery looks up MX and address records.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resolver {
    /// Name servers to ask, with their ports (the lab's `dnsd` on
    /// `127.0.0.1:5300`); empty: those of `/etc/resolv.conf`.
    pub name_servers: Vec<SocketAddr>,
    /// How long one query waits for an answer before the next try.
    pub timeout: Secs,
    /// How many times a query is sent before it counts as failed.
    pub attempts: usize,
}

/// `[dkim]`: the keys smtpd signs mail with (OpenDKIM's `KeyTable` and
/// `SigningTable` in one list).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dkim {
    /// One entry per signature: mail from authenticated users or
    /// `relay_networks` whose `From:` domain is `domain` gets a signature
    /// by each of the domain's keys.
    pub keys: Vec<DkimKeyFile>,
    /// Header fields signed when present (OpenDKIM's `SignHeaders`).
    pub sign_headers: Vec<String>,
}

impl Default for Dkim {
    fn default() -> Self {
        Dkim {
            keys: Vec::new(),
            // RFC 6376 section 5.4.1's list, as OpenDKIM signs by default.
            sign_headers: [
                "From",
                "Reply-To",
                "Subject",
                "Date",
                "To",
                "Cc",
                "Resent-Date",
                "Resent-From",
                "Resent-To",
                "Resent-Cc",
                "In-Reply-To",
                "References",
                "List-Id",
                "List-Help",
                "List-Unsubscribe",
                "List-Subscribe",
                "List-Post",
                "List-Owner",
                "List-Archive",
                "Message-ID",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// `[outbound]`: the queue manager and SMTP client of outbound delivery,
/// keys named and defaulted as Postfix's `qmgr(8)` and `smtp(8)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Shortest wait after a deferral (`minimal_backoff_time`).
    pub minimal_backoff_time: Secs,
    /// Longest wait after a deferral (`maximal_backoff_time`).
    pub maximal_backoff_time: Secs,
    /// Age at which a deferred message bounces (`maximal_queue_lifetime`).
    pub maximal_queue_lifetime: Secs,
    /// The same for a message from the null sender (`bounce_queue_lifetime`).
    pub bounce_queue_lifetime: Secs,
    /// Age after which the sender of a still deferred message is told once
    /// (`delay_warning_time`); 0: never.
    pub delay_warning_time: Secs,
    /// Messages delivered at once (`default_process_limit` of `smtp`).
    pub default_process_limit: usize,
    /// Connections to one destination at once
    /// (`default_destination_concurrency_limit`).
    pub default_destination_concurrency_limit: usize,
    /// Pause between deliveries to one destination
    /// (`default_destination_rate_delay`); 0: none.
    pub default_destination_rate_delay: Secs,
    /// Longest wait for a TCP connection (`smtp_connect_timeout`).
    pub smtp_connect_timeout: Secs,
    /// Longest TLS handshake (`smtp_starttls_timeout`).
    pub smtp_starttls_timeout: Secs,
    /// Keep a connection open after a delivery for the next message to the
    /// same destination (`smtp_connection_cache_on_demand`).
    pub smtp_connection_cache_on_demand: bool,
    /// How long an idle connection is kept (`smtp_connection_cache_time_limit`).
    pub smtp_connection_cache_time_limit: Secs,
    /// How long one connection may be reused (`smtp_connection_reuse_time_limit`).
    pub smtp_connection_reuse_time_limit: Secs,
    /// Messages per connection at most (`smtp_connection_reuse_count_limit`);
    /// 0: no limit.
    pub smtp_connection_reuse_count_limit: u32,
    /// The port of MX hosts and of next hops without one (the `smtp`
    /// service, 25); a lab that cannot bind port 25 sets another.
    pub smtp_port: u16,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            minimal_backoff_time: Secs(300),
            maximal_backoff_time: Secs(4000),
            maximal_queue_lifetime: Secs(5 * 86_400),
            bounce_queue_lifetime: Secs(5 * 86_400),
            delay_warning_time: Secs(0),
            default_process_limit: 100,
            default_destination_concurrency_limit: 20,
            default_destination_rate_delay: Secs(0),
            smtp_connect_timeout: Secs(30),
            smtp_starttls_timeout: Secs(300),
            smtp_connection_cache_on_demand: true,
            smtp_connection_cache_time_limit: Secs(2),
            smtp_connection_reuse_time_limit: Secs(300),
            smtp_connection_reuse_count_limit: 0,
            smtp_port: 25,
        }
    }
}

/// One DKIM key: the domain it signs for (`d=`), its selector (`s=`) and
/// its private key file (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyFile {
    /// The signing domain.
    pub domain: String,
    /// The selector: the key is published at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The private key, PEM (RSA PKCS#1 or PKCS#8, Ed25519 PKCS#8).
    pub key_file: PathBuf,
}

/// `[auth_checks]`: SPF, DKIM and DMARC checks on the inbound listeners
/// (what OpenDKIM, OpenDMARC and policyd-spf do for Postfix). All off
/// by default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthChecks {
    /// Check mail arriving on `[smtpd] listen` from clients that neither
    /// authenticated nor are in `relay_networks`, and add
    /// `Authentication-Results:`.
    pub enabled: bool,
    /// The name in `Authentication-Results:`; `""`: `[global] hostname`
    /// (OpenDMARC's `AuthservID`).
    pub authserv_id: String,
    /// Refuse a message that fails DMARC when its domain's policy is
    /// `p=reject` (`550 5.7.1`) instead of tagging it (OpenDMARC's
    /// `RejectFailures`).
    pub dmarc_reject: bool,
    /// Refuse a message whose MAIL FROM or HELO gets SPF `fail` (a `-all`
    /// match) with `550 5.7.23` (policyd-spf's `Mail_From_reject = Fail`).
    pub spf_reject: bool,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            name_servers: Vec::new(),
            timeout: Secs(5),
            attempts: 2,
        }
    }
}

impl Default for Smtpd {
    fn default() -> Self {
        Smtpd {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            submission_listen: vec![SocketAddr::from(([127, 0, 0, 1], 2587))],
            submissions_listen: Vec::new(),
            tls_security_level: TlsLevel::May,
            submission_tls_security_level: TlsLevel::May,
            tls_certificates: Vec::new(),
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            disable_vrfy_command: false,
            max_connections: 20_000,
            max_connections_per_client: 50,
            command_timeout: Secs(300),
            command_line_timeout: Secs(60),
            first_command_timeout: Secs(60),
            data_timeout: Secs(180),
            error_limit: 20,
            junk_command_limit: 100,
            auth_failure_delay: Secs(1),
            auth_failure_limit: 3,
            auth_penalty: Secs(2),
            auth_penalty_max: Secs(15),
            // As the lab's saslauthd: CRAM-MD5 needs {PLAIN} secrets, and
            // clients that pick it as "strongest" would fail against hashed
            // accounts; add it where accounts are {PLAIN}.
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            bare_newline: BareNewline::Normalize,
            shutdown_grace: Secs(30),
            queue_directory: "lab-data/queue".into(),
            queue_retry_delay: Secs(60),
            relayhost: None,
            transport_file: None,
            relay_password_file: None,
            address_preference: AddressPreference::Any,
        }
    }
}

/// `[tls]`: the certificates and the TLS policy that smtpd and pop3d
/// share (Postfix's `smtpd_tls_*`, Dovecot's `ssl_*`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Certificates offered: the first by default, the others to clients
    /// that ask for one of their names by SNI. Empty: no TLS.
    pub certificates: Vec<CertificateFiles>,
    /// Longest TLS handshake (`smtpd_starttls_timeout`).
    pub handshake_timeout: Secs,
    /// Oldest protocol version accepted: `"1.2"` or `"1.3"`.
    pub min_version: TlsVersion,
    /// Clients that may use passwords in the clear (PLAIN, LOGIN,
    /// USER/PASS) without TLS (Dovecot's `disable_plaintext_auth`,
    /// Postfix's `smtpd_tls_auth_only`, which both exempt loopback).
    pub plaintext_auth_networks: Vec<IpNet>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            certificates: Vec::new(),
            handshake_timeout: Secs(30),
            min_version: TlsVersion::V1_2,
            plaintext_auth_networks: vec![IpNet::LOOPBACK_V4, IpNet::LOOPBACK_V6],
        }
    }
}

impl Tls {
    /// Whether `ip` may authenticate with a password in the clear.
    pub fn plaintext_auth_allowed(&self, ip: IpAddr) -> bool {
        self.plaintext_auth_networks.iter().any(|n| n.contains(ip))
    }
}

/// A certificate chain and its private key, PEM files (what certbot
/// writes as `fullchain.pem` and `privkey.pem`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate, then any intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Whether a listener offers or requires TLS (Postfix's
/// `smtpd_tls_security_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsLevel {
    /// No STARTTLS/STLS.
    None,
    /// Offered when certificates are configured.
    May,
    /// Required: nothing but the upgrade before TLS (needs certificates).
    Encrypt,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 (RFC 8446) only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// Bare-newline policy, as Postfix 3.9's `smtpd_forbid_bare_newline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Accept lines ending in a bare LF, store them with CRLF; such a line
    /// never takes part in the end of DATA.
    Normalize,
    /// Refuse a message containing a bare LF with `550 5.5.2`.
    Reject,
}

/// `[pop3d]`: listeners and limits of the POP3 server, with Dovecot's
/// defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3d {
    /// POP3 listeners (port 110 in production).
    pub listen: Vec<SocketAddr>,
    /// POP3 over implicit TLS (port 995, RFC 8314).
    pub pop3s_listen: Vec<SocketAddr>,
    /// STLS on the POP3 listeners (Dovecot's `ssl = yes | required`).
    pub tls_security_level: TlsLevel,
    /// Certificates for pop3d's listeners; empty: `[tls] certificates`.
    pub tls_certificates: Vec<CertificateFiles>,
    /// Idle time before the server closes a session (RFC 1939 section 3:
    /// at least 10 minutes).
    pub idle_timeout: Secs,
    /// Concurrent connections in total (`process_limit`); lowered at start
    /// to what the file descriptor limit allows. When full, a client with
    /// few connections takes the slot of a not yet logged in one of the
    /// client holding the most.
    pub max_connections: usize,
    /// Concurrent connections per client address, IPv6 per /64
    /// (`mail_max_userip_connections`).
    pub max_connections_per_client: usize,
    /// Total time from the greeting to a successful login
    /// (`login_timeout`-like: Dovecot ends a login process after a minute).
    pub login_timeout: Secs,
    /// Total time for one command line, however slowly it trickles in.
    pub command_line_timeout: Secs,
    /// Failed logins before the connection is closed.
    pub failed_login_limit: u32,
    /// Pause after each failed login (`auth_failure_delay`).
    pub auth_failure_delay: Secs,
    /// Dovecot's auth penalty per client address across connections
    /// (see [`Smtpd::auth_penalty`]); 0 turns it off.
    pub auth_penalty: Secs,
    /// The longest auth penalty wait.
    pub auth_penalty_max: Secs,
    /// Offer APOP (only accounts with a `{PLAIN}` secret can use it).
    pub apop: bool,
    /// SASL mechanisms offered by `AUTH` (RFC 5034).
    pub auth_mechanisms: Vec<String>,
    /// How long sessions may run after SIGTERM.
    pub shutdown_grace: Secs,
}

impl Default for Pop3d {
    fn default() -> Self {
        Pop3d {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1110))],
            pop3s_listen: Vec::new(),
            tls_security_level: TlsLevel::May,
            tls_certificates: Vec::new(),
            idle_timeout: Secs(600),
            max_connections: 20_000,
            max_connections_per_client: 50,
            login_timeout: Secs(60),
            command_line_timeout: Secs(60),
            failed_login_limit: 3,
            auth_failure_delay: Secs(2),
            auth_penalty: Secs(2),
            auth_penalty_max: Secs(15),
            apop: true,
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            shutdown_grace: Secs(10),
        }
    }
}

/// `[dnsd]`: listeners, zones and limits of the authoritative DNS server,
/// with NSD's and Knot's defaults where they have one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dnsd {
    /// Addresses answered on, UDP and TCP (port 53 in production; BIND's
    /// `listen-on`).
    pub listen: Vec<SocketAddr>,
    /// Zones served (BIND's `zone "..." { file "..."; }`).
    pub zones: Vec<DnsZone>,
    /// Largest UDP answer in bytes: the EDNS payload offered is capped at
    /// this (DNS Flag Day 2020: 1232). At least 512.
    pub udp_payload_max: u16,
    /// Seconds a TCP connection may stay idle (RFC 7766 section 6.2.3).
    pub tcp_idle_timeout_secs: u64,
    /// Simultaneous TCP connections; further ones are closed at once.
    pub tcp_max_connections: usize,
    /// Clients allowed to transfer zones (AXFR and IXFR); CIDR or single
    /// addresses (BIND's `allow-transfer`).
    pub axfr_allow: Vec<IpNet>,
    /// What a reload does with a zone whose records changed but whose SOA
    /// serial did not: refuse it (`keep`, BIND's behaviour), or serve it
    /// with the serial raised by one (`increment`) or to the current Unix
    /// time (`unixtime`, at least one more), as Knot's `serial-policy`.
    pub serial_policy: SerialPolicy,
    /// TSIG keys (RFC 8945) for transfers and NOTIFY, named by zones'
    /// `key` (BIND's `key` statements).
    pub tsig_keys: Vec<TsigKey>,
    /// Differences between loaded versions kept per zone for IXFR (RFC
    /// 1995); a secondary further behind gets the whole zone. 0 keeps none
    /// (Knot's `journal-max-depth`).
    pub ixfr_history: usize,
    /// Log one line per query.
    pub query_log: bool,
    /// UDP sockets per address (`SO_REUSEPORT`), each with its own thread;
    /// 0 means one per core.
    pub workers: usize,
    /// Response rate limiting of UDP answers (BIND's `rate-limit {
    /// responses-per-second }`, Knot's `rrl rate-limit`): responses a
    /// second to one client network for one answer (NXDOMAIN and NODATA:
    /// for one zone; errors: any). 0 turns RRL off. TCP is never limited.
    pub rrl_responses_per_second: u32,
    /// Seconds of excess remembered: a flooding network waits up to this
    /// long for answers again (BIND's `window`, 1 to 3600).
    pub rrl_window_secs: u32,
    /// Every `rrl_slip`-th limited answer goes out truncated (TC=1, no
    /// records) so a real client retries over TCP; 0 never, 1 always
    /// (BIND's `slip`, 0 to 10).
    pub rrl_slip: u32,
    /// IPv4 clients are counted per network of this prefix length.
    pub rrl_ipv4_prefix: u8,
    /// IPv6 clients are counted per network of this prefix length.
    pub rrl_ipv6_prefix: u8,
    /// Entries of the accounting table; the least recently used is
    /// replaced when it is full (BIND's `max-table-size`).
    pub rrl_table_size: usize,
    /// Clients never limited (BIND's `exempt-clients`).
    pub rrl_exempt_clients: Vec<IpNet>,
    /// Log what would be limited but send every answer (BIND's `log-only`).
    pub rrl_log_only: bool,
    /// The name server identifier sent to clients that ask for it (RFC
    /// 5001 NSID, `dig +nsid`): text, or hex digits after `0x` (Knot's
    /// form); `""` sends none (NSD's `nsid`, BIND's `server-id`).
    pub nsid: String,
    /// The answer to `CH TXT id.server` and `hostname.bind` (RFC 4892);
    /// `""`: `[global] hostname` (NSD's `identity`).
    pub identity: String,
    /// Refuse `id.server` and `hostname.bind` (NSD's `hide-identity`).
    pub hide_identity: bool,
    /// The answer to `CH TXT version.server` and `version.bind`; `""`:
    /// `dnsd` and its version (NSD's `version`).
    pub version: String,
    /// Refuse `version.server` and `version.bind` (NSD's `hide-version`).
    pub hide_version: bool,
    /// Answer DNS Cookies (RFC 7873, with RFC 9018's Server Cookies), as
    /// BIND does; a query that returns a valid one is not rate-limited
    /// (NSD's `answer-cookie`).
    pub answer_cookie: bool,
    /// The Server Cookie secret, 32 hex digits; `""`: a random one at
    /// start. Servers behind one anycast address share it (NSD's
    /// `cookie-secret`).
    pub cookie_secret: String,
    /// Further secrets, 32 hex digits each, whose Server Cookies are
    /// still (or already) accepted but never made: a rollover (RFC 9018
    /// 4.5) first lists the new secret here on every server, then makes
    /// it `cookie_secret` with the old one here, then drops the old one
    /// (BIND's second `cookie-secret`, NSD's staging secret).
    pub cookie_secrets_accepted: Vec<String>,
}

impl Default for Dnsd {
    fn default() -> Self {
        Dnsd {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5300))],
            zones: Vec::new(),
            udp_payload_max: 1232,
            tcp_idle_timeout_secs: 10,
            tcp_max_connections: 256,
            axfr_allow: vec![
                IpNet::from_str("127.0.0.0/8").unwrap_or(IpNet::LOOPBACK_V4),
                IpNet::from_str("::1/128").unwrap_or(IpNet::LOOPBACK_V4),
            ],
            serial_policy: SerialPolicy::Keep,
            tsig_keys: Vec::new(),
            ixfr_history: 20,
            query_log: false,
            workers: 0,
            // Knot's default rate; BIND has none (0) but then the server
            // amplifies until someone configures it. Loopback is exempt:
            // packets from 127/8 cannot come from off the host (the
            // kernel drops them), and a local resolver or the lab's tests
            // must not be slowed.
            rrl_responses_per_second: 20,
            rrl_window_secs: 15,
            rrl_slip: 2,
            rrl_ipv4_prefix: 24,
            rrl_ipv6_prefix: 56,
            rrl_table_size: 20_000,
            rrl_exempt_clients: vec![
                IpNet::from_str("127.0.0.0/8").unwrap_or(IpNet::LOOPBACK_V4),
                IpNet::from_str("::1/128").unwrap_or(IpNet::LOOPBACK_V4),
            ],
            rrl_log_only: false,
            nsid: String::new(),
            identity: String::new(),
            hide_identity: false,
            version: String::new(),
            hide_version: false,
            answer_cookie: true,
            cookie_secret: String::new(),
            cookie_secrets_accepted: Vec::new(),
        }
    }
}

impl Dnsd {
    /// The octets of [`Dnsd::cookie_secret`]: `None` when empty, an error
    /// text unless it is 32 hex digits.
    pub fn cookie_secret_octets(&self) -> Result<Option<[u8; 16]>, String> {
        let v = &self.cookie_secret;
        if v.is_empty() {
            return Ok(None);
        }
        secret_octets(v).map(Some)
    }

    /// The octets of [`Dnsd::cookie_secrets_accepted`]: an error text
    /// unless each is 32 hex digits.
    pub fn cookie_secrets_accepted_octets(&self) -> Result<Vec<[u8; 16]>, String> {
        self.cookie_secrets_accepted
            .iter()
            .map(|v| secret_octets(v).map_err(|e| format!("{v:?}: {e}")))
            .collect()
    }

    /// The NSID octets of [`Dnsd::nsid`]: `None` when empty, an error
    /// text for bad hex or more than 512 octets.
    pub fn nsid_octets(&self) -> Result<Option<Vec<u8>>, String> {
        let v = &self.nsid;
        let octets = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => {
                if hex.is_empty() || hex.len() % 2 != 0 {
                    return Err(format!("{v:?}: hex needs an even number of digits"));
                }
                hex_octets(hex).ok_or_else(|| format!("{v:?} is not hex"))?
            }
            None => v.as_bytes().to_vec(),
        };
        match octets.len() {
            0 => Ok(None),
            // Room for it in a 512-octet UDP answer's worth of OPT.
            1..=512 => Ok(Some(octets)),
            n => Err(format!("{n} octets, more than 512")),
        }
    }
}

/// A cookie secret: 32 hex digits.
fn secret_octets(v: &str) -> Result<[u8; 16], String> {
    if v.len() != 32 {
        return Err(format!("{} characters, not 32 hex digits", v.len()));
    }
    hex_octets(v)
        .and_then(|o| <[u8; 16]>::try_from(o).ok())
        .ok_or_else(|| "not 32 hex digits".to_owned())
}

/// The octets an even number of hex digits spell; `None` otherwise.
fn hex_octets(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect()
}

/// One zone of `[dnsd]`: `{ origin = "csuvnetwork.com", file = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsZone {
    /// The zone apex, e.g. `csuvnetwork.com` (a final dot is optional).
    pub origin: String,
    /// The zone file; a relative path is relative to the configuration
    /// file's directory.
    pub file: PathBuf,
    /// Secondaries sent a NOTIFY (RFC 1996) at start and whenever a reload
    /// changes the zone's serial, `"address:port"` (BIND's `also-notify`).
    #[serde(default)]
    pub notify: Vec<SocketAddr>,
    /// A TSIG key of `tsig_keys`: transfers of the zone need a request
    /// signed with it, and NOTIFYs are signed with it (BIND's
    /// `allow-transfer { key ...; }`, `also-notify { ... key ...; }`).
    #[serde(default)]
    pub key: Option<String>,
    /// Makes the zone a secondary of these primaries, `"address:port"`
    /// (BIND's `type secondary; primaries { ...; };`): transferred at
    /// start, on their NOTIFY and on the SOA timers; `file` is then the
    /// on-disk copy, written after each transfer and served at start.
    #[serde(default)]
    pub primaries: Vec<SocketAddr>,
}

/// `[dnsd] serial_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialPolicy {
    /// Refuse the reload.
    Keep,
    /// The old serial plus one.
    Increment,
    /// The current Unix time, or the old serial plus one if that is newer.
    Unixtime,
}

/// A TSIG key (RFC 8945), as BIND's `key "name" { algorithm
/// hmac-sha256; secret "..."; };` (what `tsig-keygen` prints).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigKey {
    /// The key's name, a domain name (`xfr-key`).
    pub name: String,
    /// `hmac-sha256` or `hmac-sha512`.
    pub algorithm: String,
    /// The shared secret, base64.
    pub secret: String,
}

impl Config {
    /// Parse and validate a configuration from TOML text; relative paths
    /// are resolved against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse(text, base_dir, "<string>")
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, base, &path.display().to_string())
    }

    /// [`Config::load`] the file when there is one; otherwise the built-in
    /// lab configuration, with relative paths under the current directory.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::load(p),
            None => Self::from_toml_str("", Path::new(".")),
        }
    }

    fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        cfg.base_dir = base_dir.to_owned();
        cfg.validate().map_err(|e| invalid(e.describe(text)))?;
        let g = &mut cfg.global;
        let paths = [
            &mut g.maildir_root,
            &mut g.passwd_file,
            &mut g.aliases_file,
            &mut cfg.smtpd.queue_directory,
        ]
        .into_iter()
        .chain(cfg.dnsd.zones.iter_mut().map(|z| &mut z.file))
        .chain(
            cfg.tls
                .certificates
                .iter_mut()
                .chain(&mut cfg.smtpd.tls_certificates)
                .chain(&mut cfg.pop3d.tls_certificates)
                .flat_map(|c| [&mut c.cert, &mut c.key]),
        );
        let paths = paths.chain(cfg.dkim.keys.iter_mut().map(|k| &mut k.key_file));
        for p in paths
            .chain(cfg.smtpd.transport_file.as_mut())
            .chain(cfg.smtpd.relay_password_file.as_mut())
        {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        for d in &mut g.local_domains {
            *d = d.trim_end_matches('.').to_ascii_lowercase();
        }
        Ok(cfg)
    }

    /// Checks that types alone cannot express. Errors name the key; the
    /// caller adds its line.
    fn validate(&self) -> Result<(), Invalid> {
        let bad = |section, key, reason: String| {
            Err(Invalid {
                section,
                key,
                reason,
            })
        };
        let g = &self.global;
        if g.hostname.is_empty() || g.hostname.contains(char::is_whitespace) {
            return bad(
                "global",
                "hostname",
                format!("{:?} is not a host name", g.hostname),
            );
        }
        for d in &g.local_domains {
            if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@') {
                return bad("global", "local_domains", format!("{d:?} is not a domain"));
            }
        }
        let s = &self.smtpd;
        if s.listen.is_empty() && s.submission_listen.is_empty() {
            return bad(
                "smtpd",
                "listen",
                "neither listen nor submission_listen is set".into(),
            );
        }
        let positive: [(&'static str, u64); 6] = [
            ("message_size_limit", s.message_size_limit),
            ("command_line_timeout", s.command_line_timeout.0),
            ("first_command_timeout", s.first_command_timeout.0),
            ("recipient_limit", s.recipient_limit as u64),
            ("max_connections", s.max_connections as u64),
            (
                "max_connections_per_client",
                s.max_connections_per_client as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return bad("smtpd", key, "must be greater than 0".into());
            }
        }
        check_mechanisms("smtpd", &s.auth_mechanisms)?;
        let no_certs =
            |own: &[CertificateFiles]| own.is_empty() && self.tls.certificates.is_empty();
        if no_certs(&s.tls_certificates) {
            let needs = [
                ("submissions_listen", !s.submissions_listen.is_empty()),
                (
                    "tls_security_level",
                    s.tls_security_level == TlsLevel::Encrypt,
                ),
                (
                    "submission_tls_security_level",
                    s.submission_tls_security_level == TlsLevel::Encrypt,
                ),
            ];
            if let Some((key, _)) = needs.iter().find(|n| n.1) {
                return bad(
                    "smtpd",
                    key,
                    "needs a certificate: set [tls] certificates".into(),
                );
            }
        }
        let p = &self.pop3d;
        if p.idle_timeout.0 < 600 {
            // RFC 1939 section 3: the autologout timer MUST be at least 10 minutes.
            return bad(
                "pop3d",
                "idle_timeout",
                format!(
                    "{}s is below the 600s RFC 1939 section 3 requires",
                    p.idle_timeout.0
                ),
            );
        }
        for (key, v) in [
            ("max_connections", p.max_connections as u64),
            (
                "max_connections_per_client",
                p.max_connections_per_client as u64,
            ),
            ("login_timeout", p.login_timeout.0),
            ("command_line_timeout", p.command_line_timeout.0),
        ] {
            if v == 0 {
                return bad("pop3d", key, "must be greater than 0".into());
            }
        }
        check_mechanisms("pop3d", &p.auth_mechanisms)?;
        if no_certs(&p.tls_certificates) {
            if !p.pop3s_listen.is_empty() {
                return bad(
                    "pop3d",
                    "pop3s_listen",
                    "needs a certificate: set [tls] certificates".into(),
                );
            }
            if p.tls_security_level == TlsLevel::Encrypt {
                return bad(
                    "pop3d",
                    "tls_security_level",
                    "needs a certificate: set [tls] certificates".into(),
                );
            }
        }
        for k in &self.dkim.keys {
            let name_ok = |n: &str| {
                !n.is_empty()
                    && n.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
            };
            if !name_ok(&k.domain) || !name_ok(&k.selector) {
                return bad(
                    "dkim",
                    "keys",
                    format!(
                        "{:?} / {:?} is not a domain and selector",
                        k.domain, k.selector
                    ),
                );
            }
        }
        if self.resolver.timeout.0 == 0 {
            return bad("resolver", "timeout", "must be greater than 0".into());
        }
        if !(1..=10).contains(&self.resolver.attempts) {
            return bad("resolver", "attempts", "must be 1 to 10".into());
        }
        let o = &self.outbound;
        for (key, v) in [
            ("minimal_backoff_time", o.minimal_backoff_time.0),
            ("maximal_backoff_time", o.maximal_backoff_time.0),
            ("maximal_queue_lifetime", o.maximal_queue_lifetime.0),
            ("bounce_queue_lifetime", o.bounce_queue_lifetime.0),
            ("default_process_limit", o.default_process_limit as u64),
            (
                "default_destination_concurrency_limit",
                o.default_destination_concurrency_limit as u64,
            ),
            ("smtp_connect_timeout", o.smtp_connect_timeout.0),
            ("smtp_starttls_timeout", o.smtp_starttls_timeout.0),
            ("smtp_port", u64::from(o.smtp_port)),
        ] {
            if v == 0 {
                return bad("outbound", key, "must be greater than 0".into());
            }
        }
        if o.maximal_backoff_time < o.minimal_backoff_time {
            return bad(
                "outbound",
                "maximal_backoff_time",
                "must not be less than minimal_backoff_time".into(),
            );
        }
        if self.tls.handshake_timeout.0 == 0 {
            return bad("tls", "handshake_timeout", "must be greater than 0".into());
        }
        let d = &self.dnsd;
        if d.listen.is_empty() {
            return bad("dnsd", "listen", "no address to answer on".into());
        }
        if d.udp_payload_max < 512 {
            // RFC 6891 section 6.2.5: no payload size below 512 is meaningful.
            return bad(
                "dnsd",
                "udp_payload_max",
                format!("{} is below the DNS minimum of 512", d.udp_payload_max),
            );
        }
        if let Err(e) = d.nsid_octets() {
            return bad("dnsd", "nsid", e);
        }
        if let Err(e) = d.cookie_secret_octets() {
            return bad("dnsd", "cookie_secret", e);
        }
        if let Err(e) = d.cookie_secrets_accepted_octets() {
            return bad("dnsd", "cookie_secrets_accepted", e);
        }
        for (key, v) in [("identity", &d.identity), ("version", &d.version)] {
            // One TXT character-string (RFC 1035 3.3).
            if v.len() > 255 {
                return bad("dnsd", key, format!("{} octets, more than 255", v.len()));
            }
        }
        if d.ixfr_history > 10_000 {
            return bad(
                "dnsd",
                "ixfr_history",
                format!("{} is not in 0..=10000", d.ixfr_history),
            );
        }
        for (key, v) in [
            ("tcp_idle_timeout_secs", d.tcp_idle_timeout_secs),
            ("tcp_max_connections", d.tcp_max_connections as u64),
        ] {
            if v == 0 {
                return bad("dnsd", key, "must be greater than 0".into());
            }
        }
        let rrl_ranges: [(&'static str, u64, u64, u64); 5] = [
            ("rrl_window_secs", d.rrl_window_secs.into(), 1, 3600),
            ("rrl_slip", d.rrl_slip.into(), 0, 10),
            ("rrl_ipv4_prefix", d.rrl_ipv4_prefix.into(), 0, 32),
            ("rrl_ipv6_prefix", d.rrl_ipv6_prefix.into(), 0, 128),
            ("rrl_table_size", d.rrl_table_size as u64, 1, 10_000_000),
        ];
        for (key, v, lo, hi) in rrl_ranges {
            if !(lo..=hi).contains(&v) {
                return bad("dnsd", key, format!("{v} is not in {lo}..={hi}"));
            }
        }
        for k in &d.tsig_keys {
            use base64::Engine as _;
            if !matches!(
                k.algorithm.to_ascii_lowercase().as_str(),
                "hmac-sha256" | "hmac-sha512"
            ) {
                return bad(
                    "dnsd",
                    "tsig_keys",
                    format!(
                        "key {:?}: algorithm {:?} is not hmac-sha256 or hmac-sha512",
                        k.name, k.algorithm
                    ),
                );
            }
            match base64::engine::general_purpose::STANDARD.decode(k.secret.trim()) {
                Ok(s) if !s.is_empty() => {}
                _ => {
                    return bad(
                        "dnsd",
                        "tsig_keys",
                        format!("key {:?}: the secret is not base64", k.name),
                    )
                }
            }
            if k.name.trim_end_matches('.').is_empty() || k.name.contains(char::is_whitespace) {
                return bad(
                    "dnsd",
                    "tsig_keys",
                    format!("{:?} is not a key name", k.name),
                );
            }
        }
        let mut origins = std::collections::HashSet::new();
        for z in &d.zones {
            if let Some(key) = &z.key {
                let same = |a: &str, b: &str| {
                    a.trim_end_matches('.')
                        .eq_ignore_ascii_case(b.trim_end_matches('.'))
                };
                if !d.tsig_keys.iter().any(|k| same(&k.name, key)) {
                    return bad(
                        "dnsd",
                        "zones",
                        format!("zone {:?}: key {key:?} is not in tsig_keys", z.origin),
                    );
                }
            }
            let o = z.origin.trim_end_matches('.').to_ascii_lowercase();
            if (o.is_empty() && z.origin != ".") || z.origin.contains(char::is_whitespace) {
                return bad(
                    "dnsd",
                    "zones",
                    format!("{:?} is not a zone origin", z.origin),
                );
            }
            if !origins.insert(o) {
                return bad(
                    "dnsd",
                    "zones",
                    format!("zone {:?} is listed twice", z.origin),
                );
            }
        }
        Ok(())
    }
}

/// A value that parsed but is not acceptable.
struct Invalid {
    section: &'static str,
    key: &'static str,
    reason: String,
}

impl Invalid {
    /// `line N: section.key: reason`, finding the key's line in the text.
    fn describe(&self, text: &str) -> String {
        match key_line(text, self.section, self.key) {
            Some(n) => format!("line {n}: {}.{}: {}", self.section, self.key, self.reason),
            None => format!("{}.{}: {}", self.section, self.key, self.reason),
        }
    }
}

/// The 1-based line where `key` is set inside `[section]`, if it is.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.split(']').next().unwrap_or("").trim();
        } else if current == section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

fn check_mechanisms(section: &'static str, mechs: &[String]) -> Result<(), Invalid> {
    for m in mechs {
        if !matches!(m.as_str(), "PLAIN" | "LOGIN" | "CRAM-MD5") {
            return Err(Invalid {
                section,
                key: "auth_mechanisms",
                reason: format!("unknown mechanism {m:?} (known: PLAIN, LOGIN, CRAM-MD5)"),
            });
        }
    }
    Ok(())
}

/// A duration in whole seconds, written as a number (`300`) or with a unit
/// as Postfix writes them (`"300s"`, `"5m"`, `"1h"`, `"1d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Secs(pub u64);

impl Secs {
    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl FromStr for Secs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 300, \"300s\", \"5m\")"))?;
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 604_800,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d, w)")),
        };
        n.checked_mul(mult)
            .map(Secs)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a string like \"300s\", \"5m\", \"1h\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(Secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP network in CIDR form (`192.168.3.0/24`, `::1/128`, or a bare
/// address meaning a single host), as Postfix's `mynetworks` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: IpNet = IpNet {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// `::1/128`.
    pub const LOOPBACK_V6: IpNet = IpNet {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) match IPv4 networks, as a dual-stack socket
    /// reports IPv4 clients that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network (e.g. 192.168.3.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(s, Path::new("/base"))
    }

    #[test]
    fn empty_file_is_the_lab_default() {
        let c = parse("").unwrap();
        assert_eq!(c.global.hostname, "mail.csuvnetwork.com");
        assert!(c
            .global
            .local_domains
            .contains(&"csuvnetwork.com".to_string()));
        assert_eq!(c.global.maildir_root, Path::new("/base/lab-data/mail"));
        assert_eq!(c.smtpd.message_size_limit, 10_240_000);
        assert_eq!(c.pop3d.idle_timeout, Secs(600));
        assert_eq!(c.dnsd, Dnsd::default());
        assert!(c.dnsd.zones.is_empty());
    }

    #[test]
    fn unknown_keys_and_sections_are_errors_with_lines() {
        let e = parse("[global]\nhostname = \"a\"\nmydestination = []\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 3") && m.contains("mydestination"), "{m}");
        let e = parse("[imapd]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("imapd"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line_and_reason() {
        let e = parse("[global]\nrelay_networks = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("prefix"), "{e}");
        let e = parse("[smtpd]\nlisten = [\"nowhere\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[pop3d]\nidle_timeout = \"5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("RFC 1939") && e.contains("line 2"), "{e}");
        let e = parse("[smtpd]\nauth_mechanisms = [\"GSSAPI\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("GSSAPI"), "{e}");
        let e = parse("[smtpd]\nbare_newline = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn admission_budgets() {
        let c = parse("").unwrap();
        assert_eq!(c.smtpd.max_connections, 20_000);
        assert_eq!(c.smtpd.command_line_timeout, Secs(60));
        assert_eq!(c.smtpd.first_command_timeout, Secs(60));
        assert_eq!(c.pop3d.login_timeout, Secs(60));
        assert_eq!(c.pop3d.command_line_timeout, Secs(60));
        let c = parse("[pop3d]\nlogin_timeout = \"2m\"\n").unwrap();
        assert_eq!(c.pop3d.login_timeout, Secs(120));
        for bad in [
            "[smtpd]\ncommand_line_timeout = 0\n",
            "[smtpd]\nfirst_command_timeout = 0\n",
            "[pop3d]\nlogin_timeout = 0\n",
            "[pop3d]\ncommand_line_timeout = 0\n",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("must be greater than 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_keys_resolve_paths_and_need_certificates() {
        let c = parse(
            "[tls]\ncertificates = [{ cert = \"c.pem\", key = \"/k.pem\" }]\nmin_version = \"1.3\"\n\
             [smtpd]\nsubmissions_listen = [\"127.0.0.1:465\"]\ntls_security_level = \"encrypt\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.certificates[0].cert, PathBuf::from("/base/c.pem"));
        assert_eq!(c.tls.certificates[0].key, PathBuf::from("/k.pem"));
        assert_eq!(c.tls.min_version, TlsVersion::V1_3);
        assert_eq!(c.smtpd.tls_security_level, TlsLevel::Encrypt);
        assert!(c.tls.plaintext_auth_allowed("127.0.0.5".parse().unwrap()));
        assert!(c.tls.plaintext_auth_allowed("::1".parse().unwrap()));
        assert!(!c.tls.plaintext_auth_allowed("192.0.2.1".parse().unwrap()));
        for (text, key) in [
            (
                "[smtpd]\nsubmissions_listen = [\"127.0.0.1:465\"]\n",
                "smtpd.submissions_listen",
            ),
            (
                "[smtpd]\ntls_security_level = \"encrypt\"\n",
                "smtpd.tls_security_level",
            ),
            (
                "[pop3d]\npop3s_listen = [\"127.0.0.1:995\"]\n",
                "pop3d.pop3s_listen",
            ),
            (
                "[pop3d]\ntls_security_level = \"encrypt\"\n",
                "pop3d.tls_security_level",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("needs a certificate"), "{e}");
        }
        // A daemon's own certificates are enough for it.
        parse("[pop3d]\npop3s_listen = [\"127.0.0.1:995\"]\ntls_certificates = [{ cert = \"a\", key = \"b\" }]\n")
            .unwrap();
        assert!(parse("[tls]\nmin_version = \"1.1\"\n").is_err());
        assert!(parse("[smtpd]\ntls_security_level = \"must\"\n").is_err());
    }

    #[test]
    fn durations_accept_units() {
        let c = parse("[smtpd]\ncommand_timeout = \"5m\"\ndata_timeout = 90\n").unwrap();
        assert_eq!(c.smtpd.command_timeout, Secs(300));
        assert_eq!(c.smtpd.data_timeout, Secs(90));
        assert!("5x".parse::<Secs>().is_err());
        assert!("99999999999999999999d".parse::<Secs>().is_err());
        assert_eq!("2w".parse::<Secs>(), Ok(Secs(1_209_600)));
    }

    #[test]
    fn networks() {
        let n: IpNet = "192.168.3.0/24".parse().unwrap();
        assert!(n.contains("192.168.3.11".parse().unwrap()));
        assert!(!n.contains("192.168.4.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.168.3.4".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("192.168.3.4".parse().unwrap()));
        let host: IpNet = "10.1.2.3".parse().unwrap();
        assert_eq!(host.to_string(), "10.1.2.3/32");
        assert!(!host.contains("10.1.2.4".parse().unwrap()));
        assert!("10.0.0.0/x".parse::<IpNet>().is_err());
    }

    #[test]
    fn dnsd_section_is_typed() {
        let c = parse(
            r#"
[global]
hostname = "mail"
[dnsd]
listen = ["127.0.0.1:5300", "[::1]:5300"]
zones = [{ origin = "csuvnetwork.com", file = "zones/csuvnetwork.com.zone" },
         { origin = "example.org.", file = "/etc/example.org.zone", notify = ["127.0.0.1:5301"] }]
udp_payload_max = 1400
axfr_allow = ["192.0.2.0/24"]
query_log = true
rrl_responses_per_second = 5
rrl_slip = 0
rrl_exempt_clients = ["10.0.0.0/8"]
rrl_log_only = true
serial_policy = "unixtime"
"#,
        )
        .unwrap();
        let d = &c.dnsd;
        assert_eq!(d.serial_policy, SerialPolicy::Unixtime);
        assert!(parse("[dnsd]\nserial_policy = \"date\"\n").is_err());
        assert_eq!(d.listen.len(), 2);
        assert_eq!(d.udp_payload_max, 1400);
        assert_eq!(d.tcp_max_connections, 256);
        assert_eq!(d.tcp_idle_timeout_secs, 10);
        assert!(d.query_log);
        assert_eq!(d.axfr_allow, vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!((d.rrl_responses_per_second, d.rrl_slip), (5, 0));
        assert_eq!(
            (d.rrl_window_secs, d.rrl_ipv4_prefix, d.rrl_ipv6_prefix),
            (15, 24, 56)
        );
        assert_eq!(d.rrl_exempt_clients, vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(d.rrl_log_only);
        // Relative zone files are relative to the configuration file.
        assert_eq!(
            d.zones[0],
            DnsZone {
                origin: "csuvnetwork.com".into(),
                file: "/base/zones/csuvnetwork.com.zone".into(),
                notify: vec![],
                key: None,
                primaries: vec![],
            }
        );
        assert_eq!(d.zones[1].file, Path::new("/etc/example.org.zone"));
        assert_eq!(d.zones[1].notify, vec!["127.0.0.1:5301".parse().unwrap()]);
        assert_eq!(d.ixfr_history, 20);
        // No NSID, identity and version from elsewhere, none hidden.
        assert_eq!(d.nsid_octets(), Ok(None));
        assert_eq!((&*d.identity, d.hide_identity), ("", false));
        assert_eq!((&*d.version, d.hide_version), ("", false));
        assert!(d.answer_cookie);
        assert_eq!(d.cookie_secret_octets(), Ok(None));
    }

    #[test]
    fn dnsd_nsid_is_text_or_hex_and_bounded() {
        let d = |text: &str| parse(text).map(|c| c.dnsd);
        let n = d("[dnsd]\nnsid = \"ns1.example\"\n").unwrap();
        assert_eq!(n.nsid_octets(), Ok(Some(b"ns1.example".to_vec())));
        let n = d("[dnsd]\nnsid = \"0x6E7331ff\"\nhide_version = true\n").unwrap();
        assert_eq!(n.nsid_octets(), Ok(Some(vec![0x6e, 0x73, 0x31, 0xff])));
        assert!(n.hide_version);
        for bad in ["0x6", "0x", "0xzz", &"n".repeat(513)] {
            let e = parse(&format!("[dnsd]\nnsid = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 2") && e.contains("nsid"), "{e}");
        }
        let c = d(
            "[dnsd]\ncookie_secret = \"e5e973e5a6b2a43f48e7dc849e37bfcf\"\nanswer_cookie = false\n",
        )
        .unwrap();
        assert_eq!(
            c.cookie_secret_octets().unwrap().unwrap()[..2],
            [0xe5, 0xe9]
        );
        assert!(!c.answer_cookie);
        for bad in [
            "e5e973",
            "z5e973e5a6b2a43f48e7dc849e37bfcf",
            "e5e973e5a6b2a43f48e7dc849e37bfcf00",
        ] {
            let e = parse(&format!("[dnsd]\ncookie_secret = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 2") && e.contains("cookie_secret"), "{e}");
        }
        // A rollover: the old and the coming secret accepted as well.
        let r = d("[dnsd]\ncookie_secrets_accepted = [\"00112233445566778899aabbccddeeff\", \"ffeeddccbbaa99887766554433221100\"]\n").unwrap();
        let acc = r.cookie_secrets_accepted_octets().unwrap();
        assert_eq!((acc.len(), acc[0][1], acc[1][0]), (2, 0x11, 0xff));
        let e = parse(
            "[dnsd]\ncookie_secrets_accepted = [\"00112233445566778899aabbccddeeff\", \"abc\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2") && e.contains("cookie_secrets_accepted") && e.contains("\"abc\""),
            "{e}"
        );
        let e = parse(&format!("[dnsd]\nidentity = \"{}\"\n", "i".repeat(256)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity") && e.contains("255"), "{e}");
    }

    #[test]
    fn dnsd_errors_name_the_line() {
        let e = parse("[smtpd]\nrecipient_limit = 5\n[dnsd]\nlisten = []\nbogus = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 5") && e.contains("bogus"), "{e}");
        let e = parse("[dnsd]\nzones = [{ origin = \"a\", file = \"b\", x = 1 }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains('x'), "{e}");
        let e = parse("[dnsd]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[dnsd]\n\nlisten = []\n").unwrap_err().to_string();
        assert!(e.contains("line 3: dnsd.listen"), "{e}");
        let e = parse("[dnsd]\nudp_payload_max = 500\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: dnsd.udp_payload_max") && e.contains("512"),
            "{e}"
        );
        let e = parse("[dnsd]\ntcp_max_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dnsd.tcp_max_connections"), "{e}");
        for (text, key) in [
            ("rrl_window_secs = 0", "dnsd.rrl_window_secs"),
            ("rrl_slip = 11", "dnsd.rrl_slip"),
            ("rrl_ipv4_prefix = 33", "dnsd.rrl_ipv4_prefix"),
            ("rrl_ipv6_prefix = 129", "dnsd.rrl_ipv6_prefix"),
            ("rrl_table_size = 0", "dnsd.rrl_table_size"),
            ("ixfr_history = 10001", "dnsd.ixfr_history"),
        ] {
            let e = parse(&format!("[dnsd]\n{text}\n")).unwrap_err().to_string();
            assert!(e.contains(&format!("line 2: {key}")), "{e}");
        }
        let e = parse("[dnsd]\naxfr_allow = [\"10.0.0.0/99\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("prefix"), "{e}");
        let twice = "[dnsd]\nzones = [{ origin = \"a.org\", file = \"1\" }, { origin = \"A.org.\", file = \"2\" }]\n";
        let e = parse(twice).unwrap_err().to_string();
        assert!(
            e.contains("line 2: dnsd.zones") && e.contains("twice"),
            "{e}"
        );
        let e = parse("[dnsd]\nzones = [{ origin = \"\", file = \"1\" }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a zone origin"), "{e}");
    }

    #[test]
    fn unknown_sections_are_refused_by_name() {
        // A daemon's section under a near-miss name must not be ignored.
        for name in ["dns", "pop3", "smtp", "mailstore"] {
            let e = parse(&format!("[global]\n[{name}]\nlisten = []\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 2") && e.contains(&format!("unknown field `{name}`")),
                "{e}"
            );
            assert!(e.contains("dnsd"), "the known sections are listed: {e}");
        }
    }

    #[test]
    fn domains_are_normalised_and_paths_kept_absolute() {
        let c = parse(
            "[global]\nlocal_domains = [\"CSUVnetwork.com.\"]\npasswd_file = \"/etc/mail/passwd\"\n",
        )
        .unwrap();
        assert_eq!(c.global.local_domains, vec!["csuvnetwork.com".to_string()]);
        assert_eq!(c.global.passwd_file, Path::new("/etc/mail/passwd"));
    }

    #[test]
    fn load_reports_file_name() {
        let dir = std::env::temp_dir().join(format!("mail-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("mail.toml");
        std::fs::write(&f, "[smtpd]\nrecipient_limit = 0\n").unwrap();
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("mail.toml") && e.contains("line 2: smtpd.recipient_limit"),
            "{e}"
        );
        assert!(Config::load(&dir.join("missing.toml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outbound_section_has_postfix_names_and_defaults() {
        let o = parse("").unwrap().outbound;
        assert_eq!(o.minimal_backoff_time, Secs(300));
        assert_eq!(o.maximal_backoff_time, Secs(4000));
        assert_eq!(o.maximal_queue_lifetime, Secs(432_000));
        assert_eq!(o.delay_warning_time, Secs(0));
        assert_eq!(o.smtp_port, 25);
        let o = parse(
            "[outbound]\nmaximal_queue_lifetime = \"5d\"\nbounce_queue_lifetime = \"1d\"\n\
             delay_warning_time = \"4h\"\nsmtp_port = 2525\n",
        )
        .unwrap()
        .outbound;
        assert_eq!(o.maximal_queue_lifetime, Secs(5 * 86_400));
        assert_eq!(o.bounce_queue_lifetime, Secs(86_400));
        assert_eq!(o.delay_warning_time, Secs(4 * 3600));
        assert_eq!(o.smtp_port, 2525);
        for bad in [
            "default_destination_concurrency_limit = 0",
            "smtp_port = 0",
            "minimal_backoff_time = 0",
            "minimal_backoff_time = 600\nmaximal_backoff_time = 300",
        ] {
            let e = parse(&format!("[outbound]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("outbound."), "{bad}: {e}");
        }
    }

    #[test]
    fn outbound_keys() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.smtpd.relayhost, None);
        assert_eq!(cfg.smtpd.transport_file, None);
        assert_eq!(cfg.smtpd.relay_password_file, None);
        assert!(cfg.resolver.name_servers.is_empty());
        assert_eq!(cfg.resolver.timeout, Secs(5));
        let cfg = parse(
            "[smtpd]\nrelayhost = \"[smtp.example.net]:587\"\ntransport_file = \"transport\"\n\
             relay_password_file = \"sasl_passwd\"\n\
             address_preference = \"ipv4\"\n[resolver]\nname_servers = [\"127.0.0.1:5300\"]\ntimeout = \"2s\"\n",
        )
        .unwrap();
        let r = cfg.smtpd.relayhost.unwrap();
        assert_eq!(r.to_string(), "[smtp.example.net]:587");
        assert_eq!(
            cfg.smtpd.transport_file,
            Some(PathBuf::from("/base/transport"))
        );
        assert_eq!(
            cfg.smtpd.relay_password_file,
            Some(PathBuf::from("/base/sasl_passwd"))
        );
        assert_eq!(cfg.smtpd.address_preference, AddressPreference::Ipv4);
        assert_eq!(
            cfg.resolver.name_servers,
            vec!["127.0.0.1:5300".parse().unwrap()]
        );
        assert_eq!(cfg.resolver.timeout, Secs(2));
        let e = parse("[smtpd]\n\nrelayhost = \"[smtp.example.net\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("without"), "{e}");
        let e = parse("[resolver]\ntimeout = 0\n").unwrap_err().to_string();
        assert!(e.contains("line 2: resolver.timeout"), "{e}");
    }
}
