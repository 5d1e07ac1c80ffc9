//! One delivery attempt: a message to some recipients of one destination,
//! over SMTP (smtp-proto's client session on the one driver), trying the
//! destination's hosts and addresses in order until one answers, with
//! STARTTLS as the settings say. The result is a verdict per recipient
//! worded as Postfix logs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_session::driver::{Driver, Stop};
use mail_session::tls::rustls::pki_types::ServerName;
use mail_session::tls::{Stream, TlsConnector};
use mail_session::Secret;
use mailstore::dsn::{Envid, Notify, Orcpt};
use mailstore::outbound::OutEnvelope;
use mailstore::saslpass::PasswordMap;
use smtp_proto::{
    ClientConfig, ClientError, ClientEvent, ClientSession, ClientTls, MessageReport, NotSent,
    OutgoingMessage, RcptDsn, Reply, DATA_BLOCK_TIMEOUT,
};
use tracing::{debug, info};

/// A host to try: its name (for SNI, logs and the DSN's `Remote-MTA`),
/// its addresses in the order to try them and the port, as
/// [`mailstore::nexthop::select`] orders them.
pub use mailstore::nexthop::Hop;

/// How the client behaves (Postfix's `smtp_*` settings).
#[derive(Clone)]
pub struct ClientSettings {
    /// Our name in EHLO (`smtp_helo_name`, default `myhostname`).
    pub helo: String,
    /// STARTTLS policy (`smtp_tls_security_level`: `none`, `may`,
    /// `encrypt`).
    pub tls: ClientTls,
    /// The TLS client configuration, needed unless `tls` is `None`.
    pub connector: Option<TlsConnector>,
    /// Longest wait for a TCP connection (`smtp_connect_timeout`, 30 s).
    pub connect_timeout: Duration,
    /// Longest TLS handshake (`smtp_starttls_timeout`, 300 s in Postfix).
    pub handshake_timeout: Duration,
    /// User name and password for AUTH at every host (tests and
    /// embedders; the daemon uses `passwords`).
    pub credentials: Option<(String, Secret<String>)>,
    /// Credentials per next hop (`smtp_sasl_password_maps`), looked up by
    /// each host's name and port; they take precedence over
    /// `credentials`. AUTH is sent only inside TLS or to a loopback
    /// address (Postfix's `smtp_sasl_tls_security_options`), and a
    /// refused AUTH defers (`smtp_sasl_auth_soft_bounce = yes`).
    pub passwords: Option<Arc<PasswordMap>>,
    /// Convert 8-bit messages to quoted-printable for servers without
    /// 8BITMIME (`disable_mime_output_conversion = no`).
    pub mime_downgrade: bool,
    /// Keep the connection open after the transaction, for the next
    /// message to the same destination (`smtp_connection_cache_on_demand`):
    /// see [`Closing::reuse`].
    pub keep_open: bool,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("credentials", &self.credentials.as_ref().map(|c| &c.0))
            .field("passwords", &self.passwords)
            .field("mime_downgrade", &self.mime_downgrade)
            .finish()
    }
}

impl ClientSettings {
    /// Postfix's defaults: opportunistic TLS (`may`) with `connector`,
    /// 30 s to connect, 300 s per handshake, no AUTH.
    pub fn new(helo: impl Into<String>, connector: Option<TlsConnector>) -> Self {
        ClientSettings {
            helo: helo.into(),
            tls: if connector.is_some() {
                ClientTls::Opportunistic
            } else {
                ClientTls::None
            },
            connector,
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(300),
            credentials: None,
            passwords: None,
            mime_downgrade: true,
            keep_open: false,
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next hop took responsibility.
    Sent,
    /// Try again later.
    Temporary,
    /// Refused for good.
    Permanent,
}

/// The result for one recipient of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The recipient's index, as given.
    pub rcpt: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// Enhanced status code (`2.0.0`, `4.4.1`, `5.1.1`).
    pub status: String,
    /// `name[ip]:port` of the host that answered, if one did.
    pub remote: Option<String>,
    /// Postfix's wording: `host mx.example.org[192.0.2.1] said: 550 5.1.1
    /// ... (in reply to RCPT TO command)`, `connect to ...: Connection
    /// refused`.
    pub text: String,
    /// [`Verdict::Sent`] to a next hop that does not offer DSN: "relayed"
    /// in RFC 3461 section 4.2's sense (no success notice will come from
    /// further on, so one with `NOTIFY=SUCCESS` gets ours).
    pub relayed: bool,
    /// [`Verdict::Temporary`] because the server's recipient limit was
    /// reached (`452` to RCPT, or `552 5.5.3`: RFC 5321 section
    /// 4.5.3.1.10) in a transaction that delivered to the others: send
    /// again at once in a new transaction ("100-recipient chunks")
    /// rather than after the backoff.
    pub retry_now: bool,
}

/// The message of one attempt: sender, the recipients with their index,
/// and the content (not dot-stuffed, CRLF line ends).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Reverse-path; empty for the null sender.
    pub sender: &'a str,
    /// `(index, address)` of the recipients to deliver to.
    pub recipients: &'a [(usize, String)],
    /// The content.
    pub content: &'a [u8],
    /// The queued envelope, whose RFC 3461 parameters (`RET`, `ENVID`,
    /// and per recipient index `NOTIFY`, `ORCPT`) are passed on to a next
    /// hop that offers DSN; `None`: no parameters.
    pub envelope: Option<&'a OutEnvelope>,
    /// With opportunistic TLS, a host whose TLS handshake fails, or whose
    /// connection is lost inside TLS, is tried again at once without TLS
    /// (unless we hold AUTH credentials for it). Postfix allows this once
    /// the message has waited `minimal_backoff_time`: a first attempt
    /// defers instead, and a server whose TLS is broken for good still
    /// gets the mail on the retry rather than bouncing it days later.
    pub plaintext_fallback: bool,
}

/// The RFC 3461 parameters to pass on (section 4: an MTA relaying to a
/// DSN-capable server keeps them), re-encoded from their parsed form so
/// that only valid values leave; a stored value that does not parse is
/// left out. Without a stored `ORCPT`, the recipient as queued is given
/// (section 4.2 allows adding it; Postfix does), so the final DSN can
/// name the address the sender wrote.
/// The message as the client session sends it, with its RFC 3461
/// parameters (sent only to a server that offers DSN).
fn outgoing(msg: &Message<'_>) -> OutgoingMessage {
    let (ret, envid, rcpt_dsn) = dsn_params(msg);
    OutgoingMessage {
        from: msg.sender.to_owned(),
        to: msg.recipients.iter().map(|(_, a)| a.clone()).collect(),
        body: msg.content.to_vec(),
        ret,
        envid,
        rcpt_dsn,
    }
}

fn dsn_params(msg: &Message<'_>) -> (Option<String>, Option<String>, Vec<RcptDsn>) {
    let Some(env) = msg.envelope else {
        return (None, None, Vec::new());
    };
    let ret = env.ret.map(|r| r.as_str().to_owned());
    let envid = env
        .envid
        .as_deref()
        .and_then(|e| Envid::parse(e).ok())
        .map(|e| e.to_xtext());
    let rcpts = msg
        .recipients
        .iter()
        .map(|(i, address)| {
            let stored = env.recipients.get(*i);
            let notify = stored
                .and_then(|r| r.notify.as_deref())
                .and_then(|n| Notify::parse(n).ok())
                .map(|n| n.to_string());
            let orcpt = stored
                .and_then(|r| r.orcpt.as_deref())
                .and_then(|o| Orcpt::parse(o).ok())
                .unwrap_or_else(|| {
                    if address.is_ascii() {
                        Orcpt::Rfc822(address.clone())
                    } else {
                        Orcpt::Utf8(address.clone())
                    }
                })
                .to_param();
            RcptDsn {
                notify,
                orcpt: Some(orcpt),
            }
        })
        .collect();
    (ret, envid, rcpts)
}

/// Why a host could not take the message at all; the next one is tried.
struct HostFailure {
    status: &'static str,
    text: String,
}

/// The rest of a session whose transaction has ended: `QUIT`, its reply
/// and the close. [`deliver_then_close`] hands it back so that the caller
/// records the remote's replies first (RFC 5321 section 6.1: the `250`
/// made the remote responsible; a crash before the record would send the
/// message again, so nothing, not even `QUIT` to a slow or silent server,
/// may come between the two).
pub struct Closing {
    driver: Driver<Stream>,
    session: ClientSession,
    /// The host, for the results of a reuse.
    name: String,
    addr: SocketAddr,
    /// When the connection was made, and the messages it carried.
    opened: std::time::Instant,
    uses: u32,
}

impl std::fmt::Debug for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closing").finish_non_exhaustive()
    }
}

impl Closing {
    /// Sends `QUIT` and waits for its reply (the session's own timeout,
    /// RFC 5321 section 4.5.3.2) and the close; errors do not matter any
    /// more.
    pub async fn finish(mut self) {
        self.session.end();
        while self.driver.next(&mut self.session, false).await.is_ok() {}
    }

    /// The connection is open and idle (kept with
    /// [`ClientSettings::keep_open`]), so it can carry another message.
    pub fn is_idle(&self) -> bool {
        self.session.is_idle()
    }

    /// When the connection was made.
    pub fn opened(&self) -> std::time::Instant {
        self.opened
    }

    /// Messages it has carried.
    pub fn uses(&self) -> u32 {
        self.uses
    }

    /// Sends `msg` over this idle connection (`RSET`, then the
    /// transaction). `Err` gives the connection back when it failed
    /// before the transaction began (the server had gone, or refused
    /// `RSET`): nothing was sent, so the caller connects anew. A failure
    /// once `MAIL` was sent defers every recipient instead: after the
    /// final dot the server may have taken the message, and sending it
    /// again at once would deliver it twice (Postfix defers too).
    pub async fn reuse(mut self, msg: Message<'_>) -> Result<(Vec<RcptResult>, Closing), Closing> {
        if self
            .session
            .reuse(outgoing(&msg), self.driver.now())
            .is_err()
        {
            return Err(self);
        }
        let remote = format!("{}[{}]:{}", self.name, self.addr.ip(), self.addr.port());
        loop {
            match self.driver.next(&mut self.session, false).await {
                Ok(ClientEvent::Message(report)) => {
                    self.uses += 1;
                    let results = verdicts(&report, msg.recipients, &self.name, self.addr, &remote);
                    return Ok((results, self));
                }
                Ok(ClientEvent::Failed(_)) | Err(_) if self.session.in_transaction() => {
                    let text = format!(
                        "lost connection with {}[{}] while sending the message \
                         over a reused connection",
                        self.name,
                        self.addr.ip()
                    );
                    return Ok((deferred_all(&msg, "4.4.2", Some(remote), &text), self));
                }
                Ok(ClientEvent::Failed(_)) | Err(_) => return Err(self),
                Ok(_) => {}
            }
        }
    }
}

/// Delivers `msg` to the first of `hops` that takes part in a
/// transaction; every recipient gets a result. When no host could be
/// reached, or every one failed before the transaction, all recipients
/// get [`Verdict::Temporary`] with the last host's error (Postfix defers
/// too, also after `5xx` greetings, as with `smtp_skip_5xx_greeting`).
/// The session is ended (`QUIT`) before this returns; see
/// [`deliver_then_close`] to record the results first.
pub async fn deliver(hops: &[Hop], msg: Message<'_>, settings: &ClientSettings) -> Vec<RcptResult> {
    let (results, closing) = deliver_then_close(hops, msg, settings).await;
    if let Some(c) = closing {
        c.finish().await;
    }
    results
}

/// As [`deliver`], but returns as soon as the transaction has ended, with
/// the rest of the session (`QUIT`) for the caller to finish once the
/// results are recorded.
pub async fn deliver_then_close(
    hops: &[Hop],
    msg: Message<'_>,
    settings: &ClientSettings,
) -> (Vec<RcptResult>, Option<Closing>) {
    let mut last = HostFailure {
        status: "4.4.4",
        text: "no mail host to try".to_owned(),
    };
    for hop in hops {
        for &ip in &hop.addresses {
            let addr = SocketAddr::new(ip, hop.port);
            let remote = format!("{}[{}]:{}", hop.host, addr.ip(), addr.port());
            let mut outcome = attempt(hop, addr, msg, settings, settings.tls).await;
            if let Err((failure, true)) = &outcome {
                if plaintext_fallback(settings, hop, msg) {
                    info!(
                        relay = remote,
                        error = failure.text,
                        "TLS failed; trying again without TLS"
                    );
                    outcome = attempt(hop, addr, msg, settings, ClientTls::None).await;
                }
            }
            match outcome {
                Ok((report, closing)) => {
                    let results = verdicts(&report, msg.recipients, &hop.host, addr, &remote);
                    for r in &results {
                        info!(
                            to = msg.recipients.iter().find(|x| x.0 == r.rcpt).map_or("", |x| x.1.as_str()),
                            relay = remote,
                            dsn = r.status,
                            status = ?r.verdict,
                            "{}",
                            r.text
                        );
                    }
                    return (results, Some(closing));
                }
                Err((failure, _)) => {
                    debug!(relay = remote, error = failure.text, "host failed");
                    last = failure;
                }
            }
        }
    }
    (deferred_all(&msg, last.status, None, &last.text), None)
}

/// The same temporary result for every recipient of `msg`.
fn deferred_all(
    msg: &Message<'_>,
    status: &str,
    remote: Option<String>,
    text: &str,
) -> Vec<RcptResult> {
    msg.recipients
        .iter()
        .map(|(i, _)| RcptResult {
            rcpt: *i,
            verdict: Verdict::Temporary,
            status: status.to_owned(),
            remote: remote.clone(),
            text: text.to_owned(),
            relayed: false,
            retry_now: false,
        })
        .collect()
}

/// Whether a TLS failure with `hop` may be followed at once by a try
/// without TLS (Postfix's PLAINTEXT_FALLBACK_OK_AFTER_* rules): the policy
/// is opportunistic, the message has waited (see
/// [`Message::plaintext_fallback`]), and we hold no AUTH credentials for
/// the host, which would then have to cross the network unencrypted.
fn plaintext_fallback(settings: &ClientSettings, hop: &Hop, msg: Message<'_>) -> bool {
    let credentials = settings.credentials.is_some()
        || settings
            .passwords
            .as_ref()
            .is_some_and(|p| p.lookup(&hop.host, hop.port).is_some());
    settings.tls == ClientTls::Opportunistic && msg.plaintext_fallback && !credentials
}

/// The client session's configuration for one connection to `hop` at
/// `addr`: the hop's credentials, if any, only inside TLS unless `addr`
/// is a loopback address.
fn client_config(
    settings: &ClientSettings,
    hop: &Hop,
    addr: SocketAddr,
    tls: ClientTls,
) -> ClientConfig {
    let mut cfg = ClientConfig::new(settings.helo.clone());
    cfg.tls = if settings.connector.is_some() {
        tls
    } else {
        ClientTls::None
    };
    let hop_credentials = settings
        .passwords
        .as_ref()
        .and_then(|p| p.lookup(&hop.host, hop.port));
    if hop_credentials.is_some() {
        // Postfix's smtp_sasl_tls_security_options: a password crosses
        // the network only inside TLS; loopback never leaves the host
        // (an IPv4-mapped ::ffff:127.0.0.1 is loopback too).
        cfg.auth_requires_tls = !addr.ip().to_canonical().is_loopback();
    }
    cfg.credentials = hop_credentials.or_else(|| settings.credentials.clone());
    cfg.mime_downgrade = settings.mime_downgrade;
    cfg.keep_open = settings.keep_open;
    cfg
}

/// One connection: the session up to the end of the transaction (the
/// report), and what is left of it (`QUIT`).
/// A failure is `(why, whether TLS failed)`: the handshake, or the
/// connection inside TLS (lost or timed out), not a server's refusal.
async fn attempt(
    hop: &Hop,
    addr: SocketAddr,
    msg: Message<'_>,
    settings: &ClientSettings,
    tls: ClientTls,
) -> Result<(MessageReport, Closing), (HostFailure, bool)> {
    let host = format!("{}[{}]", hop.host, addr.ip());
    let tcp = match tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err((
                HostFailure {
                    status: "4.4.1",
                    text: format!("connect to {host}:{}: {}", addr.port(), os_error_text(&e)),
                },
                false,
            ))
        }
        Err(_) => {
            return Err((
                HostFailure {
                    status: "4.4.1",
                    text: format!("connect to {host}:{}: Connection timed out", addr.port()),
                },
                false,
            ))
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut driver = Driver::new(Stream::Plain(tcp)).with_write_timeout(DATA_BLOCK_TIMEOUT);
    let cfg = client_config(settings, hop, addr, tls);
    let mut session = ClientSession::new(cfg, vec![outgoing(&msg)], driver.now());
    let lost = |stage: &str| HostFailure {
        status: "4.4.2",
        text: format!("lost connection with {host} while {stage}"),
    };
    // Set once STARTTLS was answered 220: a transport failure from then
    // on is a TLS failure.
    let mut in_tls = false;
    loop {
        match driver.next(&mut session, false).await {
            Ok(ClientEvent::StartTls) => {
                in_tls = true;
                let Some(connector) = &settings.connector else {
                    return Err((lost("starting TLS without a TLS configuration"), false));
                };
                let name = ServerName::try_from(hop.host.clone())
                    .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
                match driver
                    .connect_tls(connector, name, settings.handshake_timeout)
                    .await
                {
                    Ok(info) => {
                        info!(relay = host, tls = %info, "Untrusted TLS connection established");
                        if session.tls_established().is_err() {
                            return Err((lost("starting TLS"), true));
                        }
                    }
                    Err(e) => {
                        return Err((
                            HostFailure {
                                status: "4.7.5",
                                text: format!("TLS handshake with {host} failed: {e}"),
                            },
                            true,
                        ))
                    }
                }
            }
            Ok(ClientEvent::Ready { .. } | ClientEvent::Authenticated) => {}
            // One message per session: its report ends the transaction.
            Ok(ClientEvent::Message(r)) => {
                return Ok((
                    r,
                    Closing {
                        driver,
                        session,
                        name: hop.host.clone(),
                        addr,
                        opened: std::time::Instant::now(),
                        uses: 1,
                    },
                ));
            }
            Ok(ClientEvent::Failed(e)) => {
                let transport = matches!(e, ClientError::Timeout | ClientError::ConnectionClosed);
                return Err((session_failure(&host, e), in_tls && transport));
            }
            Err(Stop::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err((
                    HostFailure {
                        status: "4.4.2",
                        text: format!("conversation with {host} timed out while sending"),
                    },
                    in_tls,
                ))
            }
            Err(Stop::Io(e)) => {
                return Err((
                    HostFailure {
                        status: "4.4.2",
                        text: format!("lost connection with {host}: {e}"),
                    },
                    in_tls,
                ))
            }
            Err(_) => return Err((lost("sending the message"), in_tls)),
        }
    }
}

fn os_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        std::io::ErrorKind::TimedOut => "Connection timed out".into(),
        _ => e.to_string(),
    }
}

fn session_failure(host: &str, e: ClientError) -> HostFailure {
    match e {
        // smtp_sasl_auth_soft_bounce = yes: a refused AUTH (a wrong
        // password, a server-side problem) is retried, never bounced.
        ClientError::Refused {
            stage: "AUTH",
            reply,
        } => HostFailure {
            status: "4.7.0",
            text: format!(
                "SASL authentication failed; server {host} said: {}",
                one_line(&reply)
            ),
        },
        ClientError::AuthNeedsTls => HostFailure {
            status: "4.7.0",
            text: format!(
                "SASL authentication failed; cannot authenticate to server {host}: \
                 TLS is required for AUTH, but was not offered"
            ),
        },
        ClientError::Refused { stage, reply } => HostFailure {
            status: "4.4.2",
            text: format!(
                "host {host} refused to talk to me: {} (in reply to {stage})",
                one_line(&reply)
            ),
        },
        ClientError::TlsUnavailable { .. } => HostFailure {
            status: "4.7.4",
            text: format!("TLS is required, but was not offered by host {host}"),
        },
        ClientError::NoAuthMechanism => HostFailure {
            status: "4.7.0",
            text: format!("SASL authentication failed: host {host} offers no usable mechanism"),
        },
        ClientError::Timeout => HostFailure {
            status: "4.4.2",
            text: format!("conversation with {host} timed out"),
        },
        ClientError::ConnectionClosed => HostFailure {
            status: "4.4.2",
            text: format!("lost connection with {host}"),
        },
        ClientError::Protocol(p) => HostFailure {
            status: "4.5.0",
            text: format!("host {host} sent a malformed reply: {p}"),
        },
    }
}

fn one_line(r: &Reply) -> String {
    match r.status() {
        Some(s) => format!("{} {s} {}", r.code(), r.text()),
        None => format!("{} {}", r.code(), r.text()),
    }
}

fn status_of(r: &Reply) -> String {
    match r.status() {
        Some(s) => s.to_string(),
        None => format!("{}.0.0", r.code() / 100),
    }
}

fn verdict_of(r: &Reply) -> Verdict {
    if r.is_positive() {
        Verdict::Sent
    } else if r.is_permanent() {
        Verdict::Permanent
    } else {
        Verdict::Temporary
    }
}

/// The server's limit of recipients per transaction, as RFC 5321 section
/// 4.5.3.1.10 says a server shows it: `452`, or (older servers) `552`,
/// with the enhanced status 5.5.3, "too many recipients" (RFC 3463), when
/// there is one (`452 4.2.2`, a full mailbox, is not a limit).
fn too_many_recipients(r: &Reply) -> bool {
    match r.status() {
        Some(s) => matches!(r.code(), 452 | 552) && (s.subject, s.detail) == (5, 3),
        None => r.code() == 452,
    }
}

/// Per recipient: the reply that decided it, in Postfix's words.
fn verdicts(
    report: &MessageReport,
    rcpts: &[(usize, String)],
    name: &str,
    addr: SocketAddr,
    remote: &str,
) -> Vec<RcptResult> {
    let said = |r: &Reply, command: &str| {
        format!(
            "host {name}[{}] said: {} (in reply to {command} command)",
            addr.ip(),
            one_line(r)
        )
    };
    let result = |i: usize, r: &Reply, command: &str| RcptResult {
        rcpt: i,
        verdict: verdict_of(r),
        status: status_of(r),
        remote: Some(remote.to_owned()),
        text: said(r, command),
        relayed: verdict_of(r) == Verdict::Sent && !report.dsn_offered,
        retry_now: false,
    };
    // Decided before MAIL from the EHLO reply, in Postfix's words.
    let not_sent = report.not_sent.map(|n| match n {
        NotSent::TooBig { size, limit } => (
            "5.3.4",
            format!(
                "message size {size} exceeds size limit {limit} of server {name}[{}]",
                addr.ip()
            ),
        ),
        NotSent::NeedsSmtputf8 => (
            "5.6.7",
            format!(
                "SMTPUTF8 is required, but was not offered by host {name}[{}]",
                addr.ip()
            ),
        ),
    });
    rcpts
        .iter()
        .enumerate()
        .map(|(k, (i, _))| {
            if let Some((status, text)) = &not_sent {
                return RcptResult {
                    rcpt: *i,
                    verdict: Verdict::Permanent,
                    status: (*status).to_owned(),
                    remote: Some(remote.to_owned()),
                    text: text.clone(),
                    relayed: false,
                    retry_now: false,
                };
            }
            if !report.mail.is_positive() {
                return result(*i, &report.mail, "MAIL FROM");
            }
            match report.recipients.get(k) {
                Some((_, r)) if too_many_recipients(r) => RcptResult {
                    verdict: Verdict::Temporary,
                    status: if r.code() == 552 {
                        "4.5.3".into()
                    } else {
                        status_of(r)
                    },
                    retry_now: report.accepted(),
                    ..result(*i, r, "RCPT TO")
                },
                Some((_, r)) if !r.is_positive() => result(*i, r, "RCPT TO"),
                Some(_) => match &report.data {
                    Some(d) if d.is_positive() => result(*i, d, "end of DATA"),
                    Some(d) => result(*i, d, "DATA"),
                    None => RcptResult {
                        rcpt: *i,
                        verdict: Verdict::Temporary,
                        status: "4.4.2".into(),
                        remote: Some(remote.to_owned()),
                        text: format!(
                            "lost connection with {name}[{}] while sending message body",
                            addr.ip()
                        ),
                        relayed: false,
                        retry_now: false,
                    },
                },
                None => RcptResult {
                    rcpt: *i,
                    verdict: Verdict::Temporary,
                    status: "4.4.2".into(),
                    remote: Some(remote.to_owned()),
                    text: format!(
                        "lost connection with {name}[{}] while sending RCPT TO",
                        addr.ip()
                    ),
                    relayed: false,
                    retry_now: false,
                },
            }
        })
        .collect()
}

/// A TLS client configuration for opportunistic and mandatory TLS
/// (Postfix `may` and `encrypt`): the channel is encrypted and the
/// server's handshake signature is checked against its certificate, but
/// the certificate itself is not verified, as RFC 3207 and Postfix's
/// `may`/`encrypt` levels do (MX names are not authenticated by DNS
/// without DANE or MTA-STS). TLS 1.2 and 1.3.
pub fn unauthenticated_connector() -> Result<TlsConnector, mail_session::tls::rustls::Error> {
    use mail_session::tls::rustls;
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Accepts any certificate, but still checks the handshake signatures
/// (so the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AnyCertificate(Arc<mail_session::tls::rustls::crypto::CryptoProvider>);

mod verifier {
    use super::AnyCertificate;
    use mail_session::tls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use mail_session::tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use mail_session::tls::rustls::{crypto, DigitallySignedStruct, Error, SignatureScheme};

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_proto::Interrupt;

    fn relayhost_settings() -> ClientSettings {
        let mut s = ClientSettings::new("mail.example.net", None);
        let map: PasswordMap = "[relay.example.net]:587 user:secret-pw\n".parse().unwrap();
        s.passwords = Some(Arc::new(map));
        s
    }

    fn relayhost() -> Hop {
        Hop {
            host: "relay.example.net".into(),
            preference: None,
            addresses: vec![],
            port: 587,
        }
    }

    /// What the client sends to a relayhost that offers AUTH and no
    /// STARTTLS, and how the session ends.
    fn talk(cfg: ClientConfig) -> (String, Vec<ClientEvent>) {
        let msg = OutgoingMessage {
            from: "a@example.net".into(),
            to: vec!["b@example.org".into()],
            body: b"hi\r\n".to_vec(),
            ..Default::default()
        };
        let mut c = ClientSession::new(cfg, vec![msg], Duration::ZERO);
        let mut input = std::collections::VecDeque::from([
            &b"220 relay\r\n"[..],
            b"250-relay\r\n250 AUTH PLAIN LOGIN\r\n",
            b"235 ok\r\n",
            b"250 ok\r\n",
            b"221 bye\r\n",
        ]);
        let (mut sent, mut events) = (String::new(), Vec::new());
        loop {
            match c.next() {
                Ok(e) => events.push(e),
                Err(Interrupt::Output(b)) => sent.push_str(&String::from_utf8_lossy(&b)),
                Err(Interrupt::NeedInput) => match input.pop_front() {
                    Some(b) => c.enqueue_input(Duration::ZERO, b),
                    None => break,
                },
                Err(_) => break,
            }
        }
        (sent, events)
    }

    #[test]
    fn a_recipient_limit_defers_the_rest_for_a_new_transaction_at_once() {
        // RFC 5321 4.5.3.1.10: 452 (or 552 5.5.3 from older servers) to
        // RCPT is the server's limit per transaction, not a verdict on
        // the address.
        let report = |rcpt: Vec<Reply>, data: Option<Reply>| MessageReport {
            index: 0,
            mail: Reply::new(250, (2, 1, 0), "Ok"),
            recipients: rcpt.into_iter().map(|r| (String::new(), r)).collect(),
            data,
            not_sent: None,
            dsn_offered: true,
            downgraded: false,
        };
        let rcpts: Vec<(usize, String)> =
            (0..4).map(|i| (i, format!("r{i}@example.org"))).collect();
        let ok = Reply::new(250, (2, 1, 5), "Ok");
        let limit = Reply::new(452, (4, 5, 3), "Error: too many recipients");
        let old_limit = Reply::new(552, (5, 5, 3), "Too many recipients");
        let full = Reply::new(552, (5, 2, 2), "Mailbox full");
        let r = report(
            vec![ok.clone(), limit.clone(), old_limit, full],
            Some(Reply::new(250, (2, 0, 0), "Ok: queued")),
        );
        let addr: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let v = verdicts(&r, &rcpts, "mx.example.org", addr, "mx");
        let got: Vec<(Verdict, &str, bool)> = v
            .iter()
            .map(|x| (x.verdict, x.status.as_str(), x.retry_now))
            .collect();
        assert_eq!(
            got,
            [
                (Verdict::Sent, "2.0.0", false),
                (Verdict::Temporary, "4.5.3", true),
                (Verdict::Temporary, "4.5.3", true),
                (Verdict::Permanent, "5.2.2", false),
            ]
        );
        assert!(v[1]
            .text
            .contains("said: 452 4.5.3 Error: too many recipients (in reply to RCPT TO command)"));
        // Nobody delivered (the first RCPT already over the limit, or the
        // message refused): an ordinary deferral, so no loop.
        let r = report(vec![limit.clone(), limit.clone()], None);
        let v = verdicts(&r, &rcpts[..2], "mx.example.org", addr, "mx");
        assert!(v
            .iter()
            .all(|x| x.verdict == Verdict::Temporary && !x.retry_now));
        let r = report(vec![ok, limit], Some(Reply::new(554, (5, 6, 0), "No")));
        let v = verdicts(&r, &rcpts[..2], "mx.example.org", addr, "mx");
        assert_eq!((v[0].verdict, v[1].retry_now), (Verdict::Permanent, false));
    }

    #[test]
    fn relayhost_auth_needs_tls_off_loopback() {
        let settings = relayhost_settings();
        let hop = relayhost();
        for far in ["192.0.2.25:587", "[2001:db8::25]:587"] {
            let cfg = client_config(&settings, &hop, far.parse().unwrap(), settings.tls);
            assert!(cfg.auth_requires_tls, "{far}");
            assert!(cfg.credentials.is_some());
            let (sent, events) = talk(cfg);
            // Refused before a password is sent: no AUTH, no MAIL.
            assert!(!sent.contains("AUTH") && !sent.contains("MAIL"), "{sent}");
            assert!(
                events.contains(&ClientEvent::Failed(ClientError::AuthNeedsTls)),
                "{events:?}"
            );
        }
        for near in [
            "127.0.0.1:587",
            "127.3.4.5:587",
            "[::1]:587",
            "[::ffff:127.0.0.1]:587",
        ] {
            let cfg = client_config(&settings, &hop, near.parse().unwrap(), settings.tls);
            assert!(!cfg.auth_requires_tls, "{near}");
            let (sent, _) = talk(cfg);
            assert!(sent.contains("AUTH PLAIN "), "{near}: {sent}");
        }
        // A hop without an entry: no credentials, nothing required.
        let other = Hop {
            host: "mx.example.org".into(),
            ..relayhost()
        };
        let cfg = client_config(
            &settings,
            &other,
            "192.0.2.25:587".parse().unwrap(),
            settings.tls,
        );
        assert!(cfg.credentials.is_none() && !cfg.auth_requires_tls);
    }
}
