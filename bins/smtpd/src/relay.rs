//! Mail for other domains, on the way in: the recipients a client that may
//! relay gave for other domains go with the message into the outbound
//! queue ([`mailstore::outbound`]), durably before `250`, with a
//! `Received:` header and no `Return-Path:` (RFC 5321 section 4.4: that is
//! for the final delivery). The queue manager ([`outbound::engine`]) then
//! sends it.

use mailstore::outbound::{OutEnvelope, OutRcpt, OutWriter, OutboundQueue};
use mailstore::pipeline::HOLD_LIMIT;

/// A message for other domains being received: its content is held in
/// memory up to [`HOLD_LIMIT`], then streamed into the queue's temporary
/// file.
pub(crate) struct Outgoing {
    env: OutEnvelope,
    queue: OutboundQueue,
    held: Vec<u8>,
    writer: Option<OutWriter>,
}

impl Outgoing {
    /// A message for `env`, starting with our `Received:` header (LF line
    /// ends, as mailstore writes it; sent with CRLF).
    pub(crate) fn new(queue: OutboundQueue, env: OutEnvelope, received: &str) -> Self {
        let mut held = Vec::with_capacity(received.len() + 64);
        for line in received.split_inclusive('\n') {
            held.extend_from_slice(line.trim_end_matches('\n').as_bytes());
            held.extend_from_slice(b"\r\n");
        }
        Outgoing {
            env,
            queue,
            held,
            writer: None,
        }
    }

    /// The queue id.
    pub(crate) fn id(&self) -> &str {
        &self.env.id
    }

    /// Adds content (SMTP form); `true` when [`Outgoing::write_out`]
    /// should run (blocking) before more.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        self.held.extend_from_slice(bytes);
        self.held.len() >= HOLD_LIMIT
    }

    /// Writes what is held to the queue's temporary file. Blocks.
    pub(crate) fn write_out(&mut self) -> mailstore::Result<()> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(self.queue.begin(&self.env)?),
        };
        w.write(&self.held)?;
        self.held.clear();
        Ok(())
    }

    /// Makes the message durable in the queue. Blocks.
    pub(crate) fn commit(mut self) -> mailstore::Result<()> {
        self.write_out()?;
        match self.writer.take() {
            Some(w) => w.commit(),
            None => Err(mailstore::Error::DeliveryClosed),
        }
    }

    /// Takes a committed message out again (its local part failed, so the
    /// client is told to retry, and must not get it twice). Blocks.
    pub(crate) fn undo(queue: &OutboundQueue, id: &str) -> mailstore::Result<()> {
        queue.remove(id)
    }
}

/// A recipient for the queue, with its RFC 3461 parameters as given.
pub(crate) fn out_rcpt(address: String, params: &smtp_proto::RcptParameters<'_>) -> OutRcpt {
    OutRcpt {
        address,
        notify: params.notify.as_deref().map(str::to_owned),
        orcpt: params.orcpt.as_deref().map(str::to_owned),
    }
}

/// A whole message from this host (a `sendmail` pickup, a failure
/// notice), routed as a submission by a local user: local recipients
/// through the pipeline, others into the outbound queue.
pub(crate) struct Injection<'a> {
    /// Envelope sender; empty for `<>`.
    pub(crate) sender: &'a str,
    /// Envelope recipients.
    pub(crate) recipients: &'a [String],
    /// The message, CRLF line ends.
    pub(crate) content: &'a [u8],
}

/// What became of an injection.
pub(crate) struct Injected {
    /// The queue id.
    pub(crate) queue_id: String,
    /// A message that went into the outbound queue (to submit).
    pub(crate) relayed: Option<String>,
    /// Recipients refused, with the reply: the sender is told.
    pub(crate) refused: Vec<(String, mailstore::policy::PolicyReply)>,
}

/// Injects a message. Blocks; durable when it returns `Ok`.
pub(crate) fn inject(shared: &crate::Shared, msg: &Injection<'_>) -> mailstore::Result<Injected> {
    use mailstore::policy::{Client, Recipient};
    let settings = shared.settings();
    let client = Client {
        authenticated: true,
        relay_network: true,
    };
    let mut local = mailstore::Recipients::default();
    let mut remote = Vec::new();
    let mut refused = Vec::new();
    for r in msg.recipients {
        match settings.policy.recipient(r, client) {
            Recipient::Local(m) => local.add(r.clone(), m),
            Recipient::Remote(a) if shared.relay.is_some() => remote.push(OutRcpt::new(a)),
            Recipient::Remote(a) => refused.push((
                a.clone(),
                mailstore::policy::PolicyReply::new(
                    550,
                    (5, 4, 4),
                    format!("<{a}>: no route to other domains"),
                ),
            )),
            Recipient::Refused(x) => refused.push((r.clone(), x.reply)),
        }
    }
    let now = std::time::SystemTime::now();
    let env = mailstore::Envelope {
        mail_from: msg.sender.to_owned(),
        recipients: msg.recipients.to_vec(),
        mailboxes: local.mailboxes,
        helo: String::new(),
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        protocol: mailstore::Protocol::Local,
        tls: None,
        our_hostname: settings.cfg.global.hostname.clone(),
        queue_id: shared.queue_ids.next_id(now),
        time: now,
    };
    let relayed = match (&shared.relay, remote.is_empty()) {
        (Some(r), false) => {
            let out = OutEnvelope {
                id: env.queue_id.clone(),
                sender: env.mail_from.clone(),
                arrival: now,
                envid: None,
                ret: None,
                recipients: remote,
            };
            let mut o = Outgoing::new(
                r.queue.clone(),
                out,
                &mailstore::store::received_header(&env),
            );
            o.push(msg.content);
            o.commit()?;
            Some(env.queue_id.clone())
        }
        _ => None,
    };
    if !env.mailboxes.is_empty() {
        if let Err(e) = shared.pipeline.accept(&env, msg.content) {
            if let (Some(id), Some(r)) = (&relayed, &shared.relay) {
                let _ = Outgoing::undo(&r.queue, id);
            }
            return Err(e);
        }
    }
    Ok(Injected {
        queue_id: env.queue_id,
        relayed,
        refused,
    })
}

/// One failed recipient for a notice.
pub(crate) struct Failed {
    pub(crate) address: String,
    pub(crate) orcpt: Option<String>,
    pub(crate) status: String,
    pub(crate) remote: Option<String>,
    pub(crate) text: String,
    pub(crate) when: Option<std::time::SystemTime>,
    /// For a delay notice: when the queue gives up.
    pub(crate) until: Option<std::time::SystemTime>,
}

impl Failed {
    /// The entry of a queued recipient, from its last attempt (`status`
    /// when there was none); `until` for a delay notice.
    fn of(
        r: &mailstore::outbound::RcptStatus,
        status: &str,
        until: Option<std::time::SystemTime>,
    ) -> Self {
        let last = r.last.as_ref();
        Failed {
            address: r.rcpt.address.clone(),
            orcpt: r.rcpt.orcpt.clone(),
            status: last.map_or(status.into(), |l| l.status.clone()),
            remote: last.and_then(|l| l.remote.clone()),
            text: last.map_or(String::new(), |l| l.text.clone()),
            when: last.map(|l| l.time),
            until,
        }
    }
}

/// The message a notice is about.
#[derive(Clone, Copy)]
pub(crate) struct Bounced<'a> {
    pub(crate) queue_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) envid: Option<&'a str>,
    pub(crate) ret: Option<mailstore::dsn::Ret>,
    pub(crate) arrival: std::time::SystemTime,
    pub(crate) original: &'a [u8],
}

/// The failure notice (RFC 3464) for `failed` recipients of a message,
/// injected like any message; `None` when nobody is to be told (the null
/// sender's notice that failed: never a triple bounce).
pub(crate) fn bounce(
    shared: &crate::Shared,
    of: Bounced<'_>,
    failed: Vec<Failed>,
) -> Result<Option<Injected>, String> {
    notice(shared, of, mailstore::dsn::Action::Failed, failed)
}

/// The notice of `action` for recipients of a message: a failure notice
/// (`Action: failed`), or a success notice (never to the null sender nor
/// to postmaster) for recipients delivered into a local Maildir (`Action:
/// delivered`) or relayed to a next hop without DSN (`Action: relayed`,
/// RFC 3461 section 4.2).
pub(crate) fn notice(
    shared: &crate::Shared,
    of: Bounced<'_>,
    action: mailstore::dsn::Action,
    failed: Vec<Failed>,
) -> Result<Option<Injected>, String> {
    let event = action.event();
    let Bounced {
        queue_id,
        sender,
        envid,
        ret,
        arrival,
        original,
    } = of;
    use mailstore::dsn::{self, DsnBuilder, DsnEvent, RecipientStatus, Status};
    let host = shared.settings().cfg.global.hostname.clone();
    // Success and delay notices go to the sender only: never one about a
    // notice (RFC 3461 section 4.1, RFC 5321 section 4.5.5). A failure of
    // a notice goes to postmaster (below).
    if event != DsnEvent::Failure && dsn::dsn_recipient(sender).is_none() {
        return Ok(None);
    }
    let Some(notice) = dsn::notice_for(
        sender,
        &format!("postmaster@{host}"),
        &format!("double-bounce@{host}"),
    ) else {
        tracing::warn!(queue_id, "undeliverable postmaster notification discarded");
        return Ok(None);
    };
    let envid = envid.and_then(|e| dsn::Envid::parse(e).ok());
    let now = std::time::SystemTime::now();
    let unique = format!(
        "{queue_id}.{}",
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    );
    let mut b = DsnBuilder::new(event, &host, queue_id, &notice, &unique, arrival, now)
        .envid(envid.as_ref())
        .ret(ret);
    for f in failed {
        let class = action.status_class();
        let status = Status::parse(&f.status)
            .filter(|s| s.class == class)
            .unwrap_or(Status::new(class, 0, 0));
        let mut r = RecipientStatus::new(f.address, action, status);
        r.original = f.orcpt.as_deref().and_then(|o| dsn::Orcpt::parse(o).ok());
        r.remote_mta = f
            .remote
            .map(|m| m.split('[').next().unwrap_or_default().to_owned());
        // RFC 3464 section 2.3.6: the remote's reply itself, as Postfix
        // writes it; our own reason for a failure or a delay (a SIZE or
        // SMTPUTF8 refusal, a routing error) as Postfix's `X-Postfix;`.
        match remote_reply(&f.text) {
            Some(reply) => r.diagnostic = Some(reply.to_owned()),
            None if action != dsn::Action::Delivered && !f.text.is_empty() => {
                r.diagnostic = Some(f.text.clone());
                r.diagnostic_type = "X-Postfix";
            }
            None => {}
        }
        r.reason = f.text;
        r.last_attempt = f.when;
        r.will_retry_until = f.until;
        b = b.recipient(r);
    }
    let built = b.build(original).map_err(|e| e.to_string())?;
    let rcpts = [built.rcpt_to.clone()];
    let injected = inject(
        shared,
        &Injection {
            sender: &built.mail_from,
            recipients: &rcpts,
            content: &built.message,
        },
    )
    .map_err(|e| e.to_string())?;
    for (r, why) in &injected.refused {
        tracing::warn!(queue_id, to = r, reason = %why, "failure notice undeliverable; discarded");
    }
    // Postfix's words for the notices.
    let what = match event {
        DsnEvent::Delay => "sender delay notification",
        DsnEvent::Success => "sender delivery status notification",
        DsnEvent::Failure => "sender non-delivery notification",
    };
    tracing::info!(
        queue_id,
        notice = injected.queue_id,
        to = built.rcpt_to,
        "{what}"
    );
    Ok(Some(injected))
}

/// The remote reply in a Postfix sentence `host mx[ip] said: 550 5.1.1
/// text (in reply to RCPT TO command)`; `None` for other reasons.
fn remote_reply(text: &str) -> Option<&str> {
    let (_, said) = text.strip_prefix("host ")?.split_once(" said: ")?;
    Some(
        said.rsplit_once(" (in reply to ")
            .map_or(said, |(reply, _)| reply)
            .trim(),
    )
}

/// Routes for the queue manager, as Postfix's trivial-rewrite: the
/// transport table, else `relayhost`, else the domain's MX records (RFC
/// 5321 section 5.1) through the resolver. Transport entries are matched
/// per domain (an entry for one full address is not used).
pub(crate) struct DaemonRoute {
    pub(crate) resolver: netkit::resolve::DnsResolver,
    pub(crate) table: Option<mailstore::nexthop::TransportTable>,
    pub(crate) relayhost: Option<mail_config::SmtpDestination>,
    pub(crate) select: mailstore::nexthop::SelectOptions,
    /// The port of next hops that give none (`[outbound] smtp_port`).
    pub(crate) port: u16,
}

impl outbound::engine::Route for DaemonRoute {
    async fn route(&self, domain: &str) -> Result<Vec<outbound::deliver::Hop>, RouteFailure> {
        use mailstore::nexthop::{decide, Decision};
        let fail = |permanent: bool, status: String, text: String| RouteFailure {
            permanent,
            status,
            text,
        };
        // A local part no table entry can name: only domain entries match.
        match decide(
            &format!("\"\"@{domain}"),
            self.table.as_ref(),
            self.relayhost.as_ref(),
        ) {
            Decision::Smtp(mut target) => {
                // The target has 25 unless an entry gave a port: a lab
                // that cannot bind 25 moves every default port at once.
                if target.port == 25 {
                    target.port = self.port;
                }
                self.resolver
                    .route(&target, &self.select, netkit::resolve::random_seed())
                    .await
                    .map_err(|e| fail(e.is_permanent(), e.status().to_string(), e.to_string()))
            }
            Decision::Error { status, text } => {
                Err(fail(status.is_permanent(), status.to_string(), text))
            }
            Decision::BadDomain(why) => Err(fail(
                true,
                "5.1.2".into(),
                format!("bad destination domain {domain}: {why}"),
            )),
            Decision::Local | Decision::Discard(_) => Err(fail(
                true,
                "5.3.5".into(),
                format!(
                    "transport table: local and discard entries are not supported for {domain}"
                ),
            )),
        }
    }
}

use outbound::engine::RouteFailure;

/// The notices a finished message owes its sender, in the order to send
/// them: the failure notice for bounced recipients, and the "relayed" one
/// (RFC 3461 section 4.2: delivered to a next hop without DSN, and the
/// sender asked to hear of success), each for the recipients whose
/// `NOTIFY` asks for it (section 4.1). A notice already queued on an
/// earlier try of this finish (the other one failed, so the finish was
/// retried) is not owed again; a crash between queueing a notice and
/// recording it sends that one twice: at least once, never lost.
fn due_notices(
    m: &mailstore::outbound::QueuedMessage,
) -> Vec<(mailstore::dsn::Action, Vec<Failed>)> {
    use mailstore::dsn::{should_notify, Action, DsnEvent, Notify};
    use mailstore::outbound::{RcptState, RcptStatus};
    let wants = |r: &RcptStatus, event| {
        let notify = r.rcpt.notify.as_deref().and_then(|n| Notify::parse(n).ok());
        should_notify(notify.as_ref(), event)
    };
    let failed = m
        .recipients
        .iter()
        .filter(|r| r.state == RcptState::Bounced && wants(r, DsnEvent::Failure))
        .map(|r| Failed::of(r, "5.0.0", None))
        .collect();
    let relayed = m
        .recipients
        .iter()
        .filter(|r| {
            r.state == RcptState::Sent
                && r.last.as_ref().is_some_and(|l| l.relayed)
                && wants(r, DsnEvent::Success)
        })
        .map(|r| Failed::of(r, "2.0.0", None))
        .collect();
    [(Action::Failed, failed), (Action::Relayed, relayed)]
        .into_iter()
        .filter(|(action, rcpts): &(Action, Vec<Failed>)| {
            !rcpts.is_empty() && !m.notices.iter().any(|n| n == action.as_str())
        })
        .collect()
}

/// Sends the failure notice of a finished message whose recipients
/// bounced (those whose `NOTIFY` asks for it, RFC 3461 section 4.1).
pub(crate) struct Bouncer {
    pub(crate) shared: std::sync::Weak<crate::Shared>,
    pub(crate) queue: OutboundQueue,
    /// `maximal_queue_lifetime`, for a delay notice's `Will-Retry-Until:`.
    pub(crate) lifetime: std::time::Duration,
}

impl outbound::engine::Finisher for Bouncer {
    fn finished(&self, m: &mailstore::outbound::QueuedMessage) -> Result<(), String> {
        let due = due_notices(m);
        if due.is_empty() {
            return Ok(());
        }
        let Some(shared) = self.shared.upgrade() else {
            return Err("stopping".into());
        };
        let e = &m.envelope;
        let original = self.queue.content(&e.id).map_err(|x| x.to_string())?;
        for (action, rcpts) in due {
            send_notice(&shared, m, &original, action, rcpts)?;
            self.queue
                .record_notice(&e.id, action.as_str(), std::time::SystemTime::now())
                .map_err(|x| x.to_string())?;
        }
        Ok(())
    }

    fn delay_warning(&self, m: &mailstore::outbound::QueuedMessage) -> Result<(), String> {
        use mailstore::dsn::{should_notify, DsnEvent, Notify};
        use mailstore::outbound::RcptState;
        let e = &m.envelope;
        let until = e.arrival + self.lifetime;
        let late: Vec<Failed> = m
            .recipients
            .iter()
            .filter(|r| matches!(r.state, RcptState::Deferred { .. }))
            .filter(|r| {
                // RFC 3461 section 4.1: no NOTIFY counts as FAILURE,DELAY.
                let notify = r.rcpt.notify.as_deref().and_then(|n| Notify::parse(n).ok());
                should_notify(notify.as_ref(), DsnEvent::Delay)
            })
            .map(|r| Failed::of(r, "4.0.0", Some(until)))
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        let Some(shared) = self.shared.upgrade() else {
            return Err("stopping".into());
        };
        let original = self.queue.content(&e.id).map_err(|x| x.to_string())?;
        send_notice(&shared, m, &original, mailstore::dsn::Action::Delayed, late)?;
        Ok(())
    }
}

/// Sends one notice about queued message `m` (whose content is
/// `original`) and hands its part for other domains to the queue manager.
fn send_notice(
    shared: &crate::Shared,
    m: &mailstore::outbound::QueuedMessage,
    original: &[u8],
    action: mailstore::dsn::Action,
    rcpts: Vec<Failed>,
) -> Result<(), String> {
    let e = &m.envelope;
    let of = Bounced {
        queue_id: &e.id,
        sender: &e.sender,
        envid: e.envid.as_deref(),
        ret: e.ret,
        arrival: e.arrival,
        original,
    };
    let sent = notice(shared, of, action, rcpts)?;
    if let (Some(id), Some(r)) = (sent.and_then(|n| n.relayed), &shared.relay) {
        r.engine.submit(&id);
    }
    Ok(())
}

/// `content` (CRLF line ends) with the `DKIM-Signature:` fields of its
/// From: domain's keys on top (RFC 6376 section 5); as it is when no key
/// is for that domain, or when signing fails (logged: a signature is not
/// a promise made to whoever ran `sendmail`).
pub(crate) fn sign_local<'a>(
    signer: &mail_auth_glue::Signer,
    content: &'a [u8],
) -> std::borrow::Cow<'a, [u8]> {
    use std::borrow::Cow;
    if signer.is_empty() {
        return Cow::Borrowed(content);
    }
    match signer.sign(content) {
        Ok(sig) if sig.is_empty() => Cow::Borrowed(content),
        Ok(sig) => {
            let mut out = Vec::with_capacity(sig.len() + content.len());
            out.extend_from_slice(sig.as_bytes());
            out.extend_from_slice(content);
            Cow::Owned(out)
        }
        Err(e) => {
            tracing::error!(error = %e, "DKIM signing of a pickup message failed");
            Cow::Borrowed(content)
        }
    }
}

/// Takes what `sendmail` left in the pickup directory: each message is
/// injected (durable) and its file removed; recipients refused get a
/// failure notice. A message that cannot be injected now stays for the
/// next scan.
pub(crate) fn pickup_scan(shared: &crate::Shared, dir: &std::path::Path) -> usize {
    let files = match mailstore::pickup::waiting(dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pickup directory");
            return 0;
        }
    };
    let mut taken = 0;
    for path in files {
        let msg = match mailstore::pickup::read(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "unreadable pickup file; removed");
                let _ = mailstore::pickup::remove(&path);
                continue;
            }
        };
        // Local submission, as a submission by one of our users: signed
        // when the From: domain has a key (OpenDKIM signs what Postfix's
        // pickup hands it, which comes from no client at all). A bare CR
        // becomes a space first, as smtpd stores one and our client would
        // send one (RFC 5321 2.3.8), so the signature covers what leaves.
        let content = mail_session::blank_bare_cr(&msg.content);
        let content = sign_local(&shared.settings().signer, &content);
        let injected = match inject(
            shared,
            &Injection {
                sender: &msg.sender,
                recipients: &msg.recipients,
                content: &content,
            },
        ) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, file = %path.display(), "pickup deferred");
                continue;
            }
        };
        tracing::info!(
            "{}: uid={} from=<{}> to={:?}",
            injected.queue_id,
            msg.user,
            msg.sender,
            msg.recipients
        );
        if let (Some(id), Some(r)) = (&injected.relayed, &shared.relay) {
            r.engine.submit(id);
        }
        if !injected.refused.is_empty() {
            let failed = injected
                .refused
                .iter()
                .map(|(addr, why)| Failed {
                    address: addr.clone(),
                    orcpt: None,
                    status: format!("{}.{}.{}", why.status.0, why.status.1, why.status.2),
                    remote: None,
                    text: why.to_string(),
                    when: Some(std::time::SystemTime::now()),
                    until: None,
                })
                .collect();
            let of = Bounced {
                queue_id: &injected.queue_id,
                sender: &msg.sender,
                envid: None,
                ret: None,
                arrival: std::time::SystemTime::now(),
                original: &msg.content,
            };
            match bounce(shared, of, failed) {
                Ok(Some(Injected {
                    relayed: Some(id), ..
                })) => {
                    if let Some(r) = &shared.relay {
                        r.engine.submit(&id);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = e, "failure notice for a pickup message failed"),
            }
        }
        if let Err(e) = mailstore::pickup::remove(&path) {
            tracing::error!(error = %e, "removing a picked-up message failed");
        }
        taken += 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use mail_auth_glue::keys::{generate, load_pem, Algorithm};
    use mail_auth_glue::sign::{Entry, Signer};

    fn signer_for(domain: &str) -> Signer {
        let generated = generate(Algorithm::Ed25519).expect("generate");
        let key = load_pem(generated.private_pem.as_bytes()).expect("load");
        let entry = Entry {
            domain: domain.into(),
            selector: "s1".into(),
            key,
        };
        Signer::new(vec![entry], vec!["from".into(), "subject".into()])
    }

    #[test]
    fn pickup_mail_from_a_domain_with_a_key_is_signed() {
        let signer = signer_for("example.org");
        let msg = b"From: Cron <root@example.org>\r\nSubject: s\r\n\r\nbody\r\n";
        let out = super::sign_local(&signer, msg);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        assert!(
            text.contains("d=example.org") && text.contains("s=s1"),
            "{text}"
        );
        assert!(out.ends_with(msg));
        // Another From: domain, or no From: at all: untouched.
        for other in [
            &b"From: x@other.org\r\nSubject: s\r\n\r\nbody\r\n"[..],
            &b"Subject: s\r\n\r\nbody\r\n"[..],
        ] {
            assert!(matches!(
                super::sign_local(&signer, other),
                std::borrow::Cow::Borrowed(_)
            ));
        }
        assert!(matches!(
            super::sign_local(&Signer::default(), msg),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_notice_entry_is_the_last_attempt_or_the_default() {
        use mailstore::outbound::{Attempt, OutRcpt, Outcome, RcptState, RcptStatus};
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mut r = RcptStatus {
            rcpt: OutRcpt::new("a@example.org"),
            state: RcptState::Pending,
            attempts: 0,
            last: None,
        };
        let fresh = super::Failed::of(&r, "4.0.0", Some(when));
        assert_eq!(fresh.status, "4.0.0");
        assert!(fresh.remote.is_none() && fresh.when.is_none() && fresh.text.is_empty());
        assert_eq!(fresh.until, Some(when));
        r.last = Some(Attempt {
            rcpt: 0,
            relayed: false,
            outcome: Outcome::Bounced,
            time: when,
            status: "5.1.1".into(),
            remote: Some("mx.example.org[192.0.2.1]".into()),
            text: "host mx.example.org[192.0.2.1] said: 550 5.1.1 unknown".into(),
        });
        let tried = super::Failed::of(&r, "5.0.0", None);
        assert_eq!(tried.address, "a@example.org");
        assert_eq!(tried.status, "5.1.1");
        assert_eq!(tried.remote.as_deref(), Some("mx.example.org[192.0.2.1]"));
        assert_eq!(tried.when, Some(when));
        assert!(tried.until.is_none() && tried.text.contains("550 5.1.1"));
    }

    #[test]
    fn a_notice_queued_on_an_earlier_try_is_not_owed_again() {
        use mailstore::dsn::Action;
        use mailstore::outbound::{
            Attempt, OutEnvelope, OutRcpt, Outcome, QueuedMessage, RcptState, RcptStatus,
        };
        let now = std::time::SystemTime::now();
        let rcpt = |address: &str, notify: Option<&str>, state, relayed| RcptStatus {
            rcpt: OutRcpt {
                address: address.into(),
                notify: notify.map(str::to_owned),
                orcpt: None,
            },
            attempts: 1,
            last: Some(Attempt {
                rcpt: 0,
                relayed,
                outcome: if state == RcptState::Sent {
                    Outcome::Sent
                } else {
                    Outcome::Bounced
                },
                time: now,
                status: if state == RcptState::Sent {
                    "2.0.0"
                } else {
                    "5.1.1"
                }
                .into(),
                remote: None,
                text: String::new(),
            }),
            state,
        };
        let mut m = QueuedMessage {
            envelope: OutEnvelope {
                id: "Q1".into(),
                sender: "user2@example.net".into(),
                arrival: now,
                envid: None,
                ret: None,
                recipients: vec![],
            },
            recipients: vec![
                rcpt("gone@example.org", None, RcptState::Bounced, false),
                rcpt(
                    "quiet@example.org",
                    Some("NEVER"),
                    RcptState::Bounced,
                    false,
                ),
                rcpt("far@example.org", Some("SUCCESS"), RcptState::Sent, true),
                rcpt("dsn@example.org", Some("SUCCESS"), RcptState::Sent, false),
            ],
            held: false,
            notices: vec![],
            size: 1,
        };
        let owed = |m: &QueuedMessage| -> Vec<(Action, Vec<String>)> {
            super::due_notices(m)
                .into_iter()
                .map(|(a, rs)| (a, rs.into_iter().map(|r| r.address).collect()))
                .collect()
        };
        assert_eq!(
            owed(&m),
            [
                (Action::Failed, vec!["gone@example.org".to_owned()]),
                (Action::Relayed, vec!["far@example.org".to_owned()]),
            ]
        );
        // The failure notice went out and was recorded; the relayed one
        // failed, so the finish is tried again: only that one is owed.
        m.notices.push(Action::Failed.as_str().into());
        assert_eq!(
            owed(&m),
            [(Action::Relayed, vec!["far@example.org".to_owned()])]
        );
        m.notices.push(Action::Relayed.as_str().into());
        assert!(owed(&m).is_empty());
    }

    #[test]
    fn the_diagnostic_code_is_the_remote_reply() {
        assert_eq!(
            super::remote_reply(
                "host mx.example.org[192.0.2.1] said: 550 5.1.1 <x@example.org>: unknown (in reply to RCPT TO command)"
            ),
            Some("550 5.1.1 <x@example.org>: unknown")
        );
        assert_eq!(
            super::remote_reply("connect to mx[192.0.2.1]:25: Connection refused"),
            None
        );
    }
}
