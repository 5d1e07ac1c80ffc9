//! Server session tests: a scripted host answers the events.

use super::*;
use crate::command::Mailbox;
use mail_session::transcript::MAX_TRANSCRIPT;

/// A test host: accepts everything except recipients at `nowhere.invalid`,
/// passwords other than the user name, and answers messages with
/// queue ids `Q1`, `Q2`, ...
pub(crate) struct Host {
    pub s: ServerSession,
    pub out: Vec<u8>,
    pub events: Vec<Event>,
    pub bodies: Vec<Vec<u8>>,
    pub body: Vec<u8>,
    pub closed: bool,
    pub fail_delivery: bool,
    queued: u32,
}

impl Host {
    pub fn new(cfg: ServerConfig) -> Self {
        Host {
            s: ServerSession::new(cfg, Duration::ZERO),
            out: Vec::new(),
            events: Vec::new(),
            bodies: Vec::new(),
            body: Vec::new(),
            closed: false,
            fail_delivery: false,
            queued: 0,
        }
    }

    /// Run until the session needs input or closes.
    pub fn run(&mut self) {
        loop {
            match self.s.next() {
                Ok(ev) => {
                    self.answer(&ev);
                    self.events.push(ev);
                }
                Err(Interrupt::Output(b)) => self.out.extend_from_slice(&b),
                Err(Interrupt::NeedInput) => return,
                Err(Interrupt::Close) => {
                    self.closed = true;
                    return;
                }
                Err(Interrupt::AwaitingHost) => panic!("unanswered event"),
            }
        }
    }

    fn answer(&mut self, ev: &Event) {
        match ev {
            Event::Auth(c) => {
                let ok = c.verify_password(c.username());
                self.s
                    .auth_result(if ok {
                        AuthResult::Success
                    } else {
                        AuthResult::Failure
                    })
                    .unwrap();
            }
            Event::AuthChallenge => self
                .s
                .provide_challenge("<1896.697170952@mail.test>")
                .unwrap(),
            Event::Mail { .. } | Event::Vrfy { .. } => self.s.decide(Verdict::Accept).unwrap(),
            Event::Rcpt { to, .. } => {
                let bad = matches!(to, ForwardPath::Mailbox(m) if m.domain == "nowhere.invalid");
                self.s
                    .decide(if bad {
                        Verdict::Reject(Reply::new(
                            550,
                            (5, 1, 1),
                            "Recipient address rejected: User unknown",
                        ))
                    } else {
                        Verdict::Accept
                    })
                    .unwrap();
            }
            Event::MessageStart => self.body.clear(),
            Event::BodyChunk(b) => self.body.extend_from_slice(b),
            Event::MessageEnd(env) => {
                assert_eq!(env.size, self.body.len() as u64);
                self.bodies.push(std::mem::take(&mut self.body));
                self.queued += 1;
                let d = if self.fail_delivery {
                    Delivery::Failed(Reply::new(451, (4, 3, 0), "Error: queue file write error"))
                } else {
                    Delivery::Accepted {
                        queue_id: format!("Q{}", self.queued),
                    }
                };
                self.s.message_result(d).unwrap();
            }
            Event::MessageAborted(_) => self.body.clear(),
            Event::StartTls => self.s.tls_established().unwrap(),
            Event::Helo { .. } => {}
        }
    }

    pub fn feed(&mut self, input: &[u8]) {
        self.s.enqueue_input(Duration::ZERO, input);
        self.run();
    }

    /// Output produced since the last call.
    pub fn take(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.out)).unwrap()
    }
}

pub(crate) fn cfg() -> ServerConfig {
    let mut c = ServerConfig::new("mail.csuvnetwork.com");
    c.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];
    c
}

/// Greeted and EHLOed host.
fn ready(c: ServerConfig) -> Host {
    let mut h = Host::new(c);
    h.run();
    h.feed(b"EHLO client.test\r\n");
    h.take();
    h
}

fn exchange(h: &mut Host, input: &str) -> String {
    h.feed(input.as_bytes());
    h.take()
}

const EHLO_REPLY: &str = "250-mail.csuvnetwork.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

#[test]
fn lab_transcript_byte_for_byte() {
    let mut c = cfg();
    c.greeting = "ESMTP Postfix".into();
    c.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login];
    c.record_transcript = true;
    let mut h = Host::new(c);
    h.run();
    assert_eq!(h.take(), "220 mail.csuvnetwork.com ESMTP Postfix\r\n");
    let ehlo = exchange(&mut h, "EHLO user2-PC\r\n");
    assert_eq!(
        ehlo,
        "250-mail.csuvnetwork.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(exchange(&mut h, "dXNlcjI=\r\n"), "334 UGFzc3dvcmQ6\r\n");
    // Wrong password ("wrong").
    assert_eq!(
        exchange(&mut h, "d3Jvbmc=\r\n"),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(exchange(&mut h, "dXNlcjI=\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        exchange(&mut h, "dXNlcjI=\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(h.s.authenticated_user(), Some("user2"));
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM: <user2@mail.csuvnetwork.com> SIZE=387\r\n"
        ),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO: <user1@csuvnetwork.com>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "DATA\r\n"),
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    let body = "From: \"user2@mail.csuvnetwork.com\" <user2@mail.csuvnetwork.com>\r\nTo: user1@csuvnetwork.com\r\nSubject: test\r\n\r\nhello\r\n..leading dot\r\n";
    assert_eq!(exchange(&mut h, body), "");
    assert_eq!(exchange(&mut h, ".\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(
        h.bodies,
        vec![body.replace("\r\n..leading", "\r\n.leading").into_bytes()]
    );
    assert_eq!(exchange(&mut h, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
    assert!(h.closed);
    let mut log = Vec::new();
    while let Some(e) = h.s.poll_transcript() {
        log.push(e.to_string());
    }
    assert_eq!(log[0], "S: 220 mail.csuvnetwork.com ESMTP Postfix");
    assert_eq!(log[1], "C: EHLO user2-PC");
    assert!(log.contains(&"C: <redacted>".to_string()));
    assert!(!log.iter().any(|l| l.contains("dXNlcjI=")));
    let stored = h.bodies[0].len();
    assert!(log.contains(&format!("C: <message body, {stored} octets>")));
    assert_eq!(log.last().unwrap(), "S: 221 2.0.0 Bye");
}

#[test]
fn greeting_helo_and_basic_replies() {
    let mut h = Host::new(cfg());
    h.run();
    assert_eq!(h.take(), "220 mail.csuvnetwork.com ESMTP\r\n");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    assert_eq!(
        exchange(&mut h, "HELO x\r\n"),
        "250 mail.csuvnetwork.com\r\n"
    );
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(exchange(&mut h, "RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(exchange(&mut h, "VRFY user1\r\n"), "252 2.0.0 user1\r\n");
    assert_eq!(
        exchange(&mut h, "EXPN staff\r\n"),
        "502 5.5.1 Error: command not implemented\r\n"
    );
    assert!(exchange(&mut h, "HELP\r\n").starts_with("214 2.0.0 "));
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "502 5.5.1 Error: command not implemented\r\n"
    );
    assert_eq!(
        exchange(&mut h, "FOO\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b\r\n"),
        "501 5.1.7 Bad sender address syntax\r\n"
    );
    assert_eq!(exchange(&mut h, "DATA x\r\n"), "501 5.5.4 Syntax: DATA\r\n");
    let mut e = h.events.iter().filter(|e| matches!(e, Event::Helo { .. }));
    assert_eq!(
        e.next(),
        Some(&Event::Helo {
            domain: "x".into(),
            extended: false
        })
    );
    assert_eq!(exchange(&mut h, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
    assert!(h.closed && h.s.is_closed());
    // Sticky.
    assert_eq!(h.s.next(), Err(Interrupt::Close));
    h.s.enqueue_input(Duration::ZERO, b"NOOP\r\n");
    assert_eq!(h.s.next(), Err(Interrupt::Close));
}

#[test]
fn vrfy_can_be_disabled_as_postfix_does() {
    // disable_vrfy_command = yes: not advertised, refused, not in HELP.
    let mut c = cfg();
    c.vrfy = false;
    let mut h = Host::new(c);
    h.run();
    h.take();
    let ehlo = exchange(&mut h, "EHLO client.test\r\n");
    assert_eq!(ehlo, EHLO_REPLY.replace("250-VRFY\r\n", ""));
    assert_eq!(
        exchange(&mut h, "VRFY user1\r\n"),
        "502 5.5.1 VRFY command is disabled\r\n"
    );
    assert!(!exchange(&mut h, "HELP\r\n").contains("VRFY"));
    // The session goes on.
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn ehlo_capabilities() {
    let mut h = Host::new(cfg());
    h.run();
    h.take();
    assert_eq!(exchange(&mut h, "EHLO client.test\r\n"), EHLO_REPLY);
    let mut c = ServerConfig::new("mx");
    c.tls_available = true;
    c.auth_mechanisms = vec![Mechanism::Plain];
    c.plaintext_auth_requires_tls = true;
    c.max_message_size = 0;
    c.smtputf8 = false;
    c.chunking = false;
    let mut h = Host::new(c);
    h.run();
    h.take();
    assert_eq!(
        exchange(&mut h, "EHLO c\r\n"),
        "250-mx\r\n250-PIPELINING\r\n250-SIZE\r\n250-VRFY\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN\r\n"),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    // STARTTLS: pipelined plaintext after it is dropped (CVE-2011-0411).
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\nMAIL FROM:<evil@x.y>\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert!(h.s.tls_active());
    assert!(h.events.contains(&Event::StartTls));
    // Fresh state: HELO forgotten.
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    assert_eq!(
        exchange(&mut h, "EHLO c\r\n"),
        "250-mx\r\n250-PIPELINING\r\n250-SIZE\r\n250-VRFY\r\n250-AUTH PLAIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n"
    );
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> SMTPUTF8\r\n"),
        "555 5.5.4 Unsupported option: SMTPUTF8\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 3 LAST\r\nabcRSET\r\n"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n502 5.5.1 Error: command not implemented\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn mail_rcpt_sequencing() {
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "RCPT TO:<a@b.c>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        exchange(&mut h, "DATA\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    assert_eq!(exchange(&mut h, "MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<>\r\n"),
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(
        exchange(&mut h, "DATA\r\n"),
        "554 5.5.1 Error: no valid recipients\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<x@nowhere.invalid>\r\n"),
        "550 5.1.1 Recipient address rejected: User unknown\r\n"
    );
    assert_eq!(
        exchange(&mut h, "DATA\r\n"),
        "554 5.5.1 Error: no valid recipients\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<postmaster>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<a@b.c> FOO=1\r\n"),
        "555 5.5.4 Unsupported option: FOO=1\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>\r\n"),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
    );
    assert_eq!(exchange(&mut h, "RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>\r\n"),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(
            &mut h,
            "RCPT TO:<用户@例子.广告> NOTIFY=NEVER ORCPT=rfc822;x@y.z\r\n"
        ),
        "250 2.1.5 Ok\r\n"
    );
    let rcpt = h.events.iter().rev().find_map(|e| match e {
        Event::Rcpt { to, params } => Some((to.clone(), params.clone())),
        _ => None,
    });
    let (to, params) = rcpt.unwrap();
    assert_eq!(
        to,
        ForwardPath::Mailbox(Mailbox {
            local_part: "用户".into(),
            domain: "例子.广告".into()
        })
    );
    assert_eq!(params.notify.as_deref(), Some("NEVER"));
    assert_eq!(exchange(&mut h, "RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> SIZE=10240001\r\n"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n"),
        "555 5.5.4 Unsupported option: BODY=BINARYMIME\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> XYZ\r\n"),
        "555 5.5.4 Unsupported option: XYZ\r\n"
    );
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c> BODY=8BITMIME AUTH=<> RET=HDRS ENVID=x1\r\n"
        ),
        "250 2.1.0 Ok\r\n"
    );
}

#[test]
fn dsn_parameters_only_when_offered() {
    // RFC 3461 section 4: the parameters belong to a server that offers
    // DSN; with it off they are unknown options.
    let mut c = cfg();
    c.dsn = false;
    c.chunking = false;
    let mut h = ready(c);
    let ehlo = exchange(&mut h, "EHLO c\r\n");
    assert!(!ehlo.contains("DSN"), "{ehlo}");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> RET=FULL\r\n"),
        "555 5.5.4 Unsupported option: RET=FULL\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c> ENVID=x1\r\n"),
        "555 5.5.4 Unsupported option: ENVID=x1\r\n"
    );
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<1@b.c> NOTIFY=NEVER\r\nRCPT TO:<2@b.c> ORCPT=rfc822;2@b.c\r\nRCPT TO:<3@b.c>\r\n"
        ),
        "250 2.1.0 Ok\r\n555 5.5.4 Unsupported option: NOTIFY=NEVER\r\n555 5.5.4 Unsupported option: ORCPT=rfc822;2@b.c\r\n250 2.1.5 Ok\r\n"
    );
    // Offered (the default): given to the host as written.
    let mut h = ready(cfg());
    assert!(exchange(&mut h, "EHLO c\r\n").contains("250-DSN\r\n"));
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c> RET=HDRS ENVID=x1\r\nRCPT TO:<1@b.c> NOTIFY=SUCCESS ORCPT=rfc822;1@b.c\r\n"
        ),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
    );
    assert!(h.events.iter().any(|e| matches!(e,
        Event::Rcpt { params, .. } if params.notify.as_deref() == Some("SUCCESS")
            && params.orcpt.as_deref() == Some("rfc822;1@b.c"))));
}

#[test]
fn recipient_limit() {
    let mut c = cfg();
    c.max_recipients = 2;
    let mut h = ready(c);
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<1@b.c>\r\nRCPT TO:<2@b.c>\r\nRCPT TO:<3@b.c>\r\n"
        ),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"
    );
}

#[test]
fn auth_required_for_submission() {
    let mut c = cfg();
    c.auth_required = true;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    // PLAIN with initial response: "\0user1\0user1".
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    let env_user = h.s.authenticated_user().map(str::to_owned);
    assert_eq!(env_user.as_deref(), Some("user1"));
}

#[test]
fn auth_mechanisms_and_errors() {
    let mut h = ready(cfg());
    // PLAIN without initial response: empty challenge "334 ".
    assert_eq!(exchange(&mut h, "AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        exchange(&mut h, "AHVzZXIxAHdyb25n\r\n"),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    // Cancel.
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        exchange(&mut h, "*\r\n"),
        "501 5.7.0 Authentication aborted\r\n"
    );
    // Bad base64.
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        exchange(&mut h, "!!!\r\n"),
        "501 5.5.2 Cannot decode response\r\n"
    );
    // Malformed PLAIN message (no NULs).
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN dXNlcjE=\r\n"),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH XOAUTH2\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH CRAM-MD5 abc=\r\n"),
        "501 5.7.0 Error: initial response not allowed\r\n"
    );
    // LOGIN with initial response (Outlook, MailKit): user name given.
    assert_eq!(
        exchange(&mut h, "AUTH LOGIN dXNlcjI=\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        exchange(&mut h, "dXNlcjI=\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Auth(Credentials::Login { username, .. }) if username == "user2"
    )));
}

/// RFC 4954 section 4: a response that is not base64, the initial one
/// included, is refused with 501 5.5.2; the session goes on.
#[test]
fn auth_initial_response_not_base64() {
    let mut h = ready(cfg());
    for ir in ["!!!", "AAA", "%%%="] {
        assert_eq!(
            exchange(&mut h, &format!("AUTH PLAIN {ir}\r\n")),
            "501 5.5.2 Cannot decode response\r\n",
            "{ir}"
        );
    }
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn auth_cram_md5_and_order() {
    let mut h = Host::new(cfg());
    h.run();
    h.take();
    assert_eq!(
        exchange(&mut h, "AUTH LOGIN\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    h.feed(b"EHLO c\r\n");
    h.take();
    let challenge = "<1896.697170952@mail.test>";
    assert_eq!(
        exchange(&mut h, "AUTH CRAM-MD5\r\n"),
        format!("334 {}\r\n", b64_encode(challenge.as_bytes()))
    );
    let resp = format!(
        "user1 {}",
        crate::cram_md5_digest(b"user1", challenge.as_bytes())
    );
    assert_eq!(
        exchange(&mut h, &format!("{}\r\n", b64_encode(resp.as_bytes()))),
        "235 2.7.0 Authentication successful\r\n"
    );
    let mut h = ready(cfg());
    h.feed(b"MAIL FROM:<a@b.c>\r\n");
    h.take();
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
    let mut c = cfg();
    c.auth_mechanisms.clear();
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN\r\n"),
        "503 5.5.1 Error: authentication not enabled\r\n"
    );
}

#[test]
fn sasl_line_limits() {
    let mut h = ready(cfg());
    // An AUTH line may exceed 512 octets (RFC 4954 section 4).
    let long = format!("AUTH PLAIN {}\r\n", "A".repeat(600));
    assert_eq!(
        exchange(&mut h, &long),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    let huge = format!("{}\r\n", "A".repeat(SASL_LINE_LIMIT + 10));
    assert_eq!(
        exchange(&mut h, &huge),
        "500 5.5.6 Authentication Exchange line is too long\r\n"
    );
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn long_lines_skipped_never_executed() {
    let mut c = cfg();
    c.line_limit = 512;
    let mut h = ready(c);
    // 513 octets with CRLF: over the limit, answered 500, not executed.
    let line = format!("NOOP {}\r\n", "x".repeat(506));
    assert_eq!(line.len(), 513);
    assert_eq!(
        exchange(&mut h, &line),
        "500 5.5.2 Error: line too long\r\n"
    );
    let ok = format!("NOOP {}\r\n", "x".repeat(505));
    assert_eq!(exchange(&mut h, &ok), "250 2.0.0 Ok\r\n");
    // A huge line whose tail looks like a command: the tail is skipped.
    let evil = format!("{}QUIT\r\nNOOP\r\n", "y".repeat(20000));
    for chunk in evil.as_bytes().chunks(1000) {
        h.feed(chunk);
    }
    assert_eq!(
        h.take(),
        "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    );
    assert!(!h.closed);
}

/// MAIL and RCPT lines as long as the offered extensions allow (a
/// 256-octet path, AUTH= and ORCPT= of 500 octets, ENVID= of 100) are
/// accepted by default; 2049 octets are not.
#[test]
fn extension_parameters_lengthen_command_lines() {
    let mut h = ready(cfg());
    let path = format!("{}@{}.example", "l".repeat(64), "d".repeat(63));
    let mail = format!(
        "MAIL FROM:<{path}> SIZE=100 BODY=8BITMIME RET=HDRS ENVID={} AUTH=<{}@b.c>\r\n",
        "e".repeat(100),
        "a".repeat(490)
    );
    assert!(mail.len() > 780, "{}", mail.len());
    assert_eq!(exchange(&mut h, &mail), "250 2.1.0 Ok\r\n");
    let rcpt = format!(
        "RCPT TO:<{path}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{}@b.c\r\n",
        "o".repeat(490)
    );
    assert!(rcpt.len() > 600, "{}", rcpt.len());
    assert_eq!(exchange(&mut h, &rcpt), "250 2.1.5 Ok\r\n");
    let long = format!("NOOP {}\r\n", "x".repeat(2042));
    assert_eq!(long.len(), 2049);
    assert_eq!(
        exchange(&mut h, &long),
        "500 5.5.2 Error: line too long\r\n"
    );
}

#[test]
fn bare_lf_in_commands() {
    let mut h = ready(cfg());
    assert_eq!(exchange(&mut h, "NOOP\n"), "250 2.0.0 Ok\r\n");
    // A bare CR is not a line end.
    assert_eq!(
        exchange(&mut h, "NOOP\rQUIT\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        exchange(&mut h, "NOOP x\ry\r\n"),
        "501 5.5.4 Syntax: NOOP\r\n"
    );
    assert!(!h.closed);
    let mut c = cfg();
    c.bare_lf = BareLf::Reject;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "NOOP\n"),
        "500 5.5.2 Error: bare <LF> received\r\n"
    );
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn too_many_errors() {
    let mut c = cfg();
    c.max_errors = 3;
    let mut h = ready(c);
    let out = exchange(&mut h, "A\r\nB\r\nC\r\nNOOP\r\n");
    assert_eq!(
        out,
        "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"
    );
    assert!(h.closed);
}

#[test]
fn a_delivered_message_forgives_errors_and_junk_as_postfix_does() {
    let mut c = cfg();
    c.max_errors = 3;
    c.max_junk_commands = 4;
    let mut h = ready(c);
    // Two errors, then a message: the count starts again.
    let out = exchange(
        &mut h,
        "A\r\nB\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@nowhere.invalid>\r\n",
    );
    assert!(out.ends_with("550 5.1.1 Recipient address rejected: User unknown\r\n421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"), "{out}");
    let mut h = ready({
        let mut c = cfg();
        c.max_errors = 3;
        c.max_junk_commands = 4;
        c
    });
    let out = exchange(
        &mut h,
        "A\r\nB\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@c.test>\r\nDATA\r\nhi\r\n.\r\nC\r\nD\r\nNOOP\r\n",
    );
    assert!(out.contains("250 2.0.0 Ok: queued as Q1\r\n500"), "{out}");
    assert!(
        out.ends_with("500 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n"),
        "{out}"
    );
    assert!(!h.closed);
    // Junk: four NOOP, RSET, VRFY, HELP, HELO or EHLO are free; each one more is an
    // error (Postfix's smtpd_junk_command_limit), answered first.
    let mut c = cfg();
    c.max_errors = 2;
    c.max_junk_commands = 4;
    let mut h = ready(c);
    // (The EHLO of `ready` was the first; as in Postfix, the first error
    // comes with the sixth.)
    let out = exchange(&mut h, "RSET\r\nVRFY u\r\nHELP\r\nNOOP\r\nNOOP\r\n");
    assert!(!h.closed, "{out}");
    let out = exchange(&mut h, "NOOP\r\n");
    assert_eq!(
        out,
        "250 2.0.0 Ok\r\n421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"
    );
    assert!(h.closed);
    // A loop of EHLO (each resetting the transaction) is junk too.
    let mut c = cfg();
    c.max_errors = 2;
    c.max_junk_commands = 4;
    let mut h = ready(c);
    exchange(&mut h, &"EHLO x\r\n".repeat(4));
    assert!(!h.closed);
    let out = exchange(&mut h, "HELO x\r\nHELO x\r\n");
    assert!(
        out.ends_with("421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"),
        "{out}"
    );
    // 0: no junk limit.
    let mut c = cfg();
    c.max_junk_commands = 0;
    let mut h = ready(c);
    let out = exchange(&mut h, &"NOOP\r\n".repeat(200));
    assert_eq!(out, "250 2.0.0 Ok\r\n".repeat(200));
}

#[test]
fn quit_with_arguments_and_lines_not_starting_with_a_letter() {
    let mut h = ready(cfg());
    assert_eq!(exchange(&mut h, "QUIT now\r\n"), "221 2.0.0 Bye\r\n");
    assert!(h.closed);
    // After a refused DATA, the message's own lines are no commands: the
    // first one that cannot be SMTP ends the session (Postfix's default
    // smtpd_forbidden_commands, /^[^A-Z]/ among them).
    for line in [".", " NOOP", "*", "1", "<a>", "-x"] {
        let mut h = ready(cfg());
        let out = exchange(&mut h, &format!("{line}\r\nNOOP\r\n"));
        assert_eq!(
            out, "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n",
            "{line}"
        );
        assert!(h.closed);
    }
    let mut h = ready(cfg());
    let out = exchange(
        &mut h,
        "MAIL FROM:<a@b.test>\r\nDATA\r\nhello world\r\n.\r\nNOOP\r\n",
    );
    assert!(out.ends_with("500 5.5.2 Error: command not recognized\r\n221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"), "{out}");
    assert!(h.closed);
}

fn start_data(c: ServerConfig) -> Host {
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    h
}

#[test]
fn data_dot_unstuffing_and_end() {
    let mut h = start_data(cfg());
    let out = exchange(&mut h, "line1\r\n..two\r\n.\r\n");
    assert_eq!(out, "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(h.bodies, vec![b"line1\r\n.two\r\n".to_vec()]);
    // Empty body.
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\n"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q2\r\n"
    );
    assert_eq!(h.bodies[1], b"");
    let ev = h.events.iter().rev().find_map(|e| match e {
        Event::MessageEnd(env) => Some(env.clone()),
        _ => None,
    });
    let env = ev.unwrap();
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.helo.as_deref(), Some("client.test"));
    assert!(env.esmtp && !env.chunked);
}

#[test]
fn delivery_failure_reply() {
    let mut h = start_data(cfg());
    h.fail_delivery = true;
    assert_eq!(
        exchange(&mut h, "x\r\n.\r\n"),
        "451 4.3.0 Error: queue file write error\r\n"
    );
    // The transaction is over.
    assert_eq!(
        exchange(&mut h, "RCPT TO:<a@b.c>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
}

#[test]
fn message_reply_waits_for_host() {
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    let mut out = Vec::new();
    let pump = |s: &mut ServerSession, out: &mut Vec<u8>| loop {
        match s.next() {
            Ok(Event::Mail { .. } | Event::Rcpt { .. }) => s.decide(Verdict::Accept).unwrap(),
            Ok(Event::MessageEnd(_)) => return true,
            Ok(_) => {}
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(_) => return false,
        }
    };
    s.enqueue_input(
        Duration::ZERO,
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(pump(&mut s, &mut out));
    // The host has not answered: no 250 yet, and next() says so.
    assert!(!String::from_utf8_lossy(&out).contains("queued"));
    assert_eq!(s.next(), Err(Interrupt::AwaitingHost));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.decide(Verdict::Accept), Err(UsageError::NotAwaiting));
    assert_eq!(
        s.auth_result(AuthResult::Success),
        Err(UsageError::NotAwaiting)
    );
    assert_eq!(s.tls_established(), Err(UsageError::NotAwaiting));
    assert_eq!(s.provide_challenge("x"), Err(UsageError::NotAwaiting));
    s.message_result(Delivery::Accepted {
        queue_id: "6CC0910773DF".into(),
    })
    .unwrap();
    assert_eq!(
        s.message_result(Delivery::Accepted {
            queue_id: "x".into()
        }),
        Err(UsageError::NotAwaiting)
    );
    assert!(!pump(&mut s, &mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("250 2.0.0 Ok: queued as 6CC0910773DF\r\n221 2.0.0 Bye\r\n"));
}

#[test]
fn size_limit_while_streaming() {
    let mut c = cfg();
    c.max_message_size = 10;
    let mut h = start_data(c);
    let out = exchange(&mut h, "0123456789\r\nmore\r\n.\r\n");
    assert_eq!(out, "552 5.3.4 Message size exceeds fixed limit\r\n");
    assert!(h.bodies.is_empty());
    assert!(h
        .events
        .contains(&Event::MessageAborted(AbortReason::TooBig)));
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn bare_lf_in_data_normalize() {
    let mut h = start_data(cfg());
    // "\n.\n" and "\n.\r\n" do not end the message; lines are stored
    // with CRLF, and the lone dots stay (RFC 5321 section 4.5.2 removes a
    // dot only from a line with more on it).
    let out = exchange(&mut h, "a\n.\nb\n.\r\nMAIL FROM:<x@y.z>\r\n.\r\n");
    assert_eq!(out, "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(
        h.bodies,
        vec![b"a\r\n.\r\nb\r\n.\r\nMAIL FROM:<x@y.z>\r\n".to_vec()]
    );
}

#[test]
fn bare_lf_in_data_reject() {
    let mut c = cfg();
    c.bare_lf = BareLf::Reject;
    let mut h = start_data(c);
    let out = exchange(&mut h, "a\n.\nb\r\n.\r\nNOOP\r\n");
    assert_eq!(
        out,
        "550 5.5.2 Error: bare <LF> received\r\n250 2.0.0 Ok\r\n"
    );
    assert!(h.bodies.is_empty());
    assert!(h
        .events
        .contains(&Event::MessageAborted(AbortReason::BareLf)));
}

#[test]
fn bdat_chunks() {
    let mut h = ready(cfg());
    let out = exchange(
        &mut h,
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 4\r\nab\r\nBDAT 9 LAST\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 4 bytes\r\n250 2.0.0 Ok: queued as Q1\r\n"
    );
    // The chunk octets are raw: no unstuffing, and "QUIT" in a chunk is data.
    assert_eq!(h.bodies, vec![b"ab\r\n.\r\nQUIT\r\n".to_vec()]);
    assert!(!h.closed);
    assert_eq!(
        exchange(&mut h, "BDAT 0 LAST\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    // Errors still consume the chunk.
    assert_eq!(
        exchange(&mut h, "BDAT 6\r\nQUIT\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    assert!(!h.closed);
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nBDAT 1 LAST\r\nx"),
        "250 2.1.0 Ok\r\n554 5.5.1 Error: no valid recipients\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<d@e.f>\r\nBDAT 1\r\nxDATA\r\n"),
        "250 2.1.5 Ok\r\n250 2.0.0 Ok: 1 bytes\r\n503 5.5.1 Error: BDAT in progress\r\n"
    );
    assert_eq!(
        exchange(&mut h, "BDAT 0 LAST\r\n"),
        "250 2.0.0 Ok: queued as Q2\r\n"
    );
    assert_eq!(h.bodies[1], b"x");
    let env = h.events.iter().rev().find_map(|e| match e {
        Event::MessageEnd(env) => Some(env.clone()),
        _ => None,
    });
    assert!(env.unwrap().chunked);
}

/// A BDAT line without a readable chunk size ends the session: the
/// octets that follow it cannot be told from commands.
#[test]
fn bdat_syntax_error_ends_the_session() {
    for line in [
        "BDAT\r\n",
        "BDAT 1x\r\n",
        "BDAT -1\r\n",
        "BDAT 99999999999999999999999\r\n",
        "BDAT 5 FOO\r\n",
    ] {
        let mut h = ready(cfg());
        let out = exchange(
            &mut h,
            &format!("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n{line}RSET\r\n"),
        );
        assert_eq!(
            out, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n521 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
            "{line:?}"
        );
        assert!(h.closed, "{line:?}");
        assert!(h.bodies.is_empty());
    }
}

#[test]
fn bdat_size_limit_and_rset() {
    let mut c = cfg();
    c.max_message_size = 4;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 6\r\n123456BDAT 1 LAST\r\nx"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n552 5.3.4 Message size exceeds fixed limit\r\n503 5.5.1 Error: need RCPT command\r\n"
    );
    assert!(h.bodies.is_empty());
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 2\r\n12RSET\r\n"
        ),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 2 bytes\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(
        h.events.last(),
        Some(&Event::MessageAborted(AbortReason::Reset))
    );
}

#[test]
fn timeouts() {
    let mut h = Host::new(cfg());
    h.run();
    h.take();
    assert_eq!(h.s.poll_timeout(), Some(Duration::from_secs(300)));
    h.s.enqueue_input(
        Duration::from_secs(10),
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
    );
    h.run();
    h.take();
    // In DATA: the data block timeout (RFC 5321 section 4.5.3.2.5).
    assert_eq!(h.s.poll_timeout(), Some(Duration::from_secs(190)));
    h.s.handle_timeout(Duration::from_secs(189));
    h.run();
    assert_eq!(h.take(), "");
    h.s.handle_timeout(Duration::from_secs(190));
    h.run();
    assert_eq!(
        h.take(),
        "421 4.4.2 mail.csuvnetwork.com Error: timeout exceeded\r\n"
    );
    assert!(h.closed);
    assert!(h
        .events
        .contains(&Event::MessageAborted(AbortReason::Closed)));
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn pipelining_batches_replies() {
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    let mut sends = Vec::new();
    s.enqueue_input(
        Duration::ZERO,
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@e.f>\r\nDATA\r\n",
    );
    loop {
        match s.next() {
            Ok(Event::Mail { .. } | Event::Rcpt { .. }) => s.decide(Verdict::Accept).unwrap(),
            Ok(_) => {}
            Err(Interrupt::Output(b)) => sends.push(String::from_utf8(b).unwrap()),
            Err(_) => break,
        }
    }
    assert_eq!(
        sends,
        vec![
            "220 mail.csuvnetwork.com ESMTP\r\n".to_string(),
            EHLO_REPLY.to_string(),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                .to_string(),
        ]
    );
}

/// A client that pipelines its message after a refused DATA (all
/// recipients rejected): the first header field ends the session, so no
/// command written inside the message is ever executed.
#[test]
fn message_after_refused_data_is_not_executed() {
    let mut h = ready(cfg());
    let out = exchange(
        &mut h,
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<x@nowhere.invalid>\r\nDATA\r\n\
         From: a@b.c\r\nSubject: hi\r\n\r\n\
         MAIL FROM:<evil@b.c>\r\nRCPT TO:<victim@e.f>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Ok\r\n\
         550 5.1.1 Recipient address rejected: User unknown\r\n\
         554 5.5.1 Error: no valid recipients\r\n\
         221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
    );
    assert!(h.closed);
    assert!(h.bodies.is_empty());
    assert!(!h.events.iter().any(
        |e| matches!(e, Event::Rcpt { to: ForwardPath::Mailbox(m), .. } if m.local_part == "victim")
    ));
}

/// HTTP requests and header fields as commands end the session at once;
/// other unknown commands get 500 and the session goes on.
#[test]
fn non_smtp_commands_end_the_session() {
    for line in [
        "GET / HTTP/1.1\r\n",
        "CONNECT a:25 HTTP/1.0\r\n",
        "Subject: x\r\n",
    ] {
        let mut h = ready(cfg());
        assert_eq!(
            exchange(&mut h, line),
            "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n",
            "{line:?}"
        );
        assert!(h.closed);
    }
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "FOO bar: baz\r\nNOOP\r\n"),
        "500 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n"
    );
    assert!(!h.closed);
}

/// RFC 5321 appendix D.1: a typical transaction with three recipients,
/// one unknown.
#[test]
fn rfc5321_appendix_d1() {
    let mut c = ServerConfig::new("foo.com");
    c.greeting = "Simple Mail Transfer Service Ready".into();
    let mut h = Host::new(c);
    h.run();
    assert_eq!(
        h.take(),
        "220 foo.com Simple Mail Transfer Service Ready\r\n"
    );
    let ehlo = exchange(&mut h, "EHLO bar.com\r\n");
    assert!(ehlo.starts_with("250-foo.com\r\n") && ehlo.ends_with("250 CHUNKING\r\n"));
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<Smith@bar.com>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<Jones@foo.com>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<Green@nowhere.invalid>\r\n"),
        "550 5.1.1 Recipient address rejected: User unknown\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<Brown@foo.com>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "DATA\r\n"),
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(
        exchange(&mut h, "Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\n"),
        "250 2.0.0 Ok: queued as Q1\r\n"
    );
    assert_eq!(h.bodies[0], b"Blah blah blah...\r\n..etc. etc. etc.\r\n");
    let env = h.events.iter().find_map(|e| match e {
        Event::MessageEnd(env) => Some(env.clone()),
        _ => None,
    });
    assert_eq!(env.unwrap().recipients.len(), 2);
    assert_eq!(exchange(&mut h, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
}

/// RFC 5321 appendix D.2 (aborted transaction) and D.3 (relayed mail with
/// a source route kept by old relays).
#[test]
fn rfc5321_appendix_d2_d3() {
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<Smith@bar.com>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<Jones@foo.com>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(exchange(&mut h, "RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(exchange(&mut h, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<@foo.com:JQP@bar.com>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    let from = h.events.iter().find_map(|e| match e {
        Event::Mail { from, .. } => Some(from.to_string()),
        _ => None,
    });
    assert_eq!(from.as_deref(), Some("JQP@bar.com"));
    assert_eq!(
        exchange(&mut h, "RCPT TO:<@foo.com,@bar.com:Jones@XYZ.COM>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
}

#[test]
fn host_verdicts_and_error_counting() {
    let mut c = cfg();
    c.max_errors = 2;
    let mut s = ServerSession::new(c, Duration::ZERO);
    let mut out = Vec::new();
    s.enqueue_input(
        Duration::ZERO,
        b"EHLO c\r\nVRFY root\r\nMAIL FROM:<spam@x.y>\r\nMAIL FROM:<spam@x.y>\r\nNOOP\r\n",
    );
    loop {
        match s.next() {
            Ok(Event::Vrfy { argument }) => {
                assert_eq!(argument, "root");
                s.decide(Verdict::Reject(Reply::new(
                    550,
                    (5, 1, 1),
                    "root: User unknown",
                )))
                .unwrap();
            }
            Ok(Event::Mail { .. }) => s
                .decide(Verdict::Reject(Reply::new(
                    554,
                    (5, 7, 1),
                    "Sender rejected",
                )))
                .unwrap(),
            Ok(_) => {}
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(Interrupt::Close) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let out = String::from_utf8(out).unwrap();
    // A VRFY answer is not an error; two rejected MAILs reach the limit.
    assert!(out.ends_with(
        "550 5.1.1 root: User unknown\r\n554 5.7.1 Sender rejected\r\n554 5.7.1 Sender rejected\r\n421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"
    ), "{out}");
}

#[test]
fn auth_temporary_failure() {
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    s.enqueue_input(Duration::ZERO, b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n");
    let mut out = Vec::new();
    loop {
        match s.next() {
            Ok(Event::Auth(c)) => {
                assert_eq!(c.username(), "u");
                assert!(c.verify_password("p"));
                s.auth_result(AuthResult::TemporaryFailure).unwrap();
            }
            Ok(_) => {}
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(_) => break,
        }
    }
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("454 4.7.0 Temporary authentication failure\r\n"));
    assert_eq!(s.authenticated_user(), None);
}

#[test]
fn starttls_reply_precedes_event() {
    let mut c = cfg();
    c.tls_available = true;
    let mut s = ServerSession::new(c, Duration::ZERO);
    s.enqueue_input(Duration::ZERO, b"EHLO c\r\nSTARTTLS\r\nQUIT\r\n");
    let mut seen = Vec::new();
    loop {
        match s.next() {
            Ok(Event::StartTls) => {
                seen.push("event".to_string());
                // Input received before the handshake is dropped.
                assert_eq!(s.buffered_input(), 0);
                s.tls_established().unwrap();
            }
            Ok(_) => {}
            Err(Interrupt::Output(b)) => seen.push(String::from_utf8(b).unwrap()),
            Err(Interrupt::NeedInput) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen[seen.len() - 2], "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(seen[seen.len() - 1], "event");
    assert!(!s.is_closed());
}

#[test]
fn config_accessor_and_defaults() {
    let s = ServerSession::new(ServerConfig::new("h"), Duration::ZERO);
    let c = s.config();
    assert_eq!(c.line_limit, 2048);
    assert_eq!(c.bare_lf, BareLf::Normalize);
    assert_eq!(c.command_timeout, Duration::from_secs(300));
    assert_eq!(c.data_timeout, Duration::from_secs(180));
    assert!(!s.tls_active());
}

#[test]
fn end_of_message_reply_not_held_back() {
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    s.enqueue_input(
        Duration::ZERO,
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 1 LAST\r\nxMAIL FROM:<a@b.c>\r\n",
    );
    let mut sends = Vec::new();
    loop {
        match s.next() {
            Ok(Event::Mail { .. } | Event::Rcpt { .. }) => s.decide(Verdict::Accept).unwrap(),
            Ok(Event::MessageEnd(_)) => s
                .message_result(Delivery::Accepted {
                    queue_id: "Q".into(),
                })
                .unwrap(),
            Ok(_) => {}
            Err(Interrupt::Output(b)) => sends.push(String::from_utf8(b).unwrap()),
            Err(_) => break,
        }
    }
    let n = sends.len();
    assert_eq!(sends[n - 2], "250 2.0.0 Ok: queued as Q\r\n");
    assert_eq!(sends[n - 1], "250 2.1.0 Ok\r\n");
}

#[test]
fn transcript_is_bounded() {
    let mut c = cfg();
    c.record_transcript = true;
    c.max_junk_commands = 0;
    let mut h = ready(c);
    for _ in 0..1000 {
        h.feed(b"NOOP\r\n");
    }
    h.take();
    let mut n = 0;
    while h.s.poll_transcript().is_some() {
        n += 1;
    }
    assert_eq!(n, MAX_TRANSCRIPT);
}

/// RFC 5321 appendix D.4: verifying, then sending.
#[test]
fn rfc5321_appendix_d4() {
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "VRFY Crispin\r\n"),
        "252 2.0.0 Crispin\r\n"
    );
    assert_eq!(
        exchange(&mut h, "SEND FROM:<EAK@bar.com>\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<EAK@bar.com>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "RCPT TO:<Admin.MRC@foo.com>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        exchange(
            &mut h,
            "DATA\r\nBlah blah blah...\r\n...etc. etc. etc.\r\n.\r\nQUIT\r\n"
        ),
        "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n"
    );
}

#[test]
fn client_eof() {
    // A complete pipelined message before EOF is still delivered.
    let mut h = ready(cfg());
    h.s.enqueue_input(
        Duration::ZERO,
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nunfinished",
    );
    h.s.input_closed();
    h.run();
    assert!(h.closed);
    assert_eq!(h.bodies, vec![b"x\r\n".to_vec()]);
    assert_eq!(
        h.events.last(),
        Some(&Event::MessageAborted(AbortReason::Closed))
    );
    assert!(h
        .take()
        .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
}

/// Feeds `bytes` one octet every `every`, starting at `from`, and handles
/// timeouts as a driver would: stops when the session closes. Returns the
/// time of the last octet fed.
fn trickle(h: &mut Host, from: Duration, every: Duration, bytes: &[u8]) -> Duration {
    let mut now = from;
    for b in bytes {
        if h.s.poll_timeout().is_some_and(|d| d <= now) {
            h.s.handle_timeout(now);
            h.run();
            if h.closed {
                return now;
            }
        }
        h.s.enqueue_input(now, std::slice::from_ref(b));
        h.run();
        now += every;
    }
    now
}

fn slow_cfg() -> ServerConfig {
    ServerConfig {
        command_line_timeout: Duration::from_secs(60),
        first_command_timeout: Duration::from_secs(30),
        ..cfg()
    }
}

#[test]
fn silent_client_gets_first_command_budget() {
    let mut h = Host::new(slow_cfg());
    h.run();
    h.take();
    assert_eq!(h.s.poll_timeout(), Some(Duration::from_secs(30)));
    h.s.handle_timeout(Duration::from_secs(30));
    h.run();
    assert!(h.take().starts_with("421 4.4.2 "));
    assert!(h.closed);
}

#[test]
fn trickled_first_command_is_cut_at_the_first_command_budget() {
    let mut h = Host::new(slow_cfg());
    h.run();
    h.take();
    // One octet every 5 s: each restarts the 300 s command timeout, but
    // the first command must be complete 30 s after the greeting.
    let end = trickle(
        &mut h,
        Duration::ZERO,
        Duration::from_secs(5),
        b"EHLO slow.example\r\n",
    );
    assert!(h.closed);
    assert_eq!(end, Duration::from_secs(30));
    assert_eq!(
        h.take(),
        "421 4.4.2 mail.csuvnetwork.com Error: timeout exceeded\r\n"
    );
}

#[test]
fn trickled_command_line_is_cut_at_the_line_budget() {
    let mut h = Host::new(slow_cfg());
    h.run();
    h.s.enqueue_input(Duration::from_secs(1), b"EHLO quick.example\r\n");
    h.run();
    h.take();
    assert_eq!(h.s.poll_timeout(), Some(Duration::from_secs(301)));
    // A line started at 100 s, one octet every 5 s: cut 60 s later.
    let end = trickle(
        &mut h,
        Duration::from_secs(100),
        Duration::from_secs(5),
        b"NOOP and some more text to trickle slowly\r\n",
    );
    assert!(h.closed);
    assert_eq!(end, Duration::from_secs(160));
    assert!(h.take().starts_with("421 4.4.2 "));
}

#[test]
fn lines_within_budget_keep_the_session() {
    let mut h = Host::new(slow_cfg());
    h.run();
    h.s.enqueue_input(Duration::from_secs(1), b"EHLO quick.example\r\n");
    h.run();
    // Each "NOOP\r\n" trickled over 30 s (a byte every 5 s) is within the
    // 60 s line budget; a line half sent with the previous one counts from
    // the input that brought it.
    let mut now = Duration::from_secs(10);
    for _ in 0..10 {
        now = trickle(&mut h, now, Duration::from_secs(5), b"NOOP\r\n");
        assert!(!h.closed);
    }
    h.s.enqueue_input(now, b"NOOP\r\nNO");
    h.run();
    assert_eq!(h.s.poll_timeout(), Some(now + Duration::from_secs(60)));
    h.s.enqueue_input(now + Duration::from_secs(59), b"OP\r\n");
    h.run();
    assert!(!h.closed);
    assert!(h.take().ends_with("250 2.0.0 Ok\r\n"));
    assert_eq!(
        h.s.poll_timeout(),
        Some(now + Duration::from_secs(59 + 300))
    );
}

#[test]
fn too_many_failed_auths_close_the_connection() {
    let mut h = ready(cfg());
    // AUTH PLAIN "\0user1\0wrong": a wrong password.
    let wrong = "AUTH PLAIN AHVzZXIxAHdyb25n\r\n";
    let failed = "535 5.7.8 Error: authentication failed\r\n";
    assert_eq!(exchange(&mut h, wrong), failed);
    // A malformed PLAIN message counts too.
    assert_eq!(exchange(&mut h, "AUTH PLAIN dXNlcjE=\r\n"), failed);
    assert!(!h.closed);
    assert_eq!(
        exchange(&mut h, wrong),
        format!(
            "{failed}421 4.7.0 mail.csuvnetwork.com Error: too many failed authentication attempts\r\n"
        )
    );
    assert!(h.closed);

    // 0: no limit (the general error limit still applies).
    let mut c = cfg();
    c.max_auth_failures = 0;
    let mut h = ready(c);
    for _ in 0..10 {
        assert_eq!(exchange(&mut h, wrong), failed);
    }
    assert!(!h.closed);
    // Below the limit, the right password still gets in.
    let mut h = ready(cfg());
    assert_eq!(exchange(&mut h, wrong), failed);
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
}

// ---- TLS: policy and the STARTTLS wall (RFC 3207, RFC 4954, RFC 8314) ----

fn cram_response(challenge: &str, user: &str) -> String {
    let resp = format!(
        "{user} {}",
        crate::cram_md5_digest(user.as_bytes(), challenge.as_bytes())
    );
    format!("{}\r\n", b64_encode(resp.as_bytes()))
}

fn tls_cfg() -> ServerConfig {
    let mut c = cfg();
    c.tls_available = true;
    c
}

const CHALLENGE: &str = "<1896.697170952@mail.test>";

#[test]
fn plaintext_auth_requires_tls_keeps_cram_md5() {
    let mut c = tls_cfg();
    c.plaintext_auth_requires_tls = true;
    let mut h = Host::new(c);
    h.run();
    h.take();
    let before = exchange(&mut h, "EHLO c\r\n");
    assert!(before.contains("250-STARTTLS\r\n"), "{before}");
    assert!(before.contains("250-AUTH CRAM-MD5\r\n"), "{before}");
    // RFC 4954 section 6: 538 for a plaintext mechanism before TLS, with
    // or without initial response; nothing reaches the host.
    let refused = "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
    assert_eq!(exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"), refused);
    assert_eq!(exchange(&mut h, "AUTH LOGIN\r\n"), refused);
    assert_eq!(exchange(&mut h, "AUTH login dXNlcjI=\r\n"), refused);
    assert!(!h.events.iter().any(|e| matches!(e, Event::Auth(_))));
    // An unknown mechanism is still 504.
    assert_eq!(
        exchange(&mut h, "AUTH XOAUTH2\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    // CRAM-MD5 sends no password: usable without TLS.
    assert_eq!(
        exchange(&mut h, "AUTH CRAM-MD5\r\n"),
        format!("334 {}\r\n", b64_encode(CHALLENGE.as_bytes()))
    );
    assert_eq!(
        exchange(&mut h, &cram_response(CHALLENGE, "user1")),
        "235 2.7.0 Authentication successful\r\n"
    );
    // Inside TLS every configured mechanism is offered and usable.
    let mut c = tls_cfg();
    c.plaintext_auth_requires_tls = true;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    let after = exchange(&mut h, "EHLO c\r\n");
    assert!(!after.contains("STARTTLS"), "{after}");
    assert!(
        after.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"),
        "{after}"
    );
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn plaintext_auth_requires_tls_without_other_mechanisms_omits_auth() {
    let mut c = tls_cfg();
    c.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login];
    c.plaintext_auth_requires_tls = true;
    let mut h = Host::new(c);
    h.run();
    h.take();
    let ehlo = exchange(&mut h, "EHLO c\r\n");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN\r\n"),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    // Without the policy plaintext AUTH is offered before TLS as before.
    let mut c = tls_cfg();
    c.auth_mechanisms = vec![Mechanism::Plain];
    let mut h = Host::new(c);
    h.run();
    h.take();
    assert!(exchange(&mut h, "EHLO c\r\n").contains("250-AUTH PLAIN\r\n"));
}

#[test]
fn tls_required_allows_only_the_pre_tls_commands() {
    let mut c = tls_cfg();
    c.tls_required = true;
    let mut h = Host::new(c);
    h.run();
    h.take();
    let ehlo = exchange(&mut h, "EHLO c\r\n");
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        exchange(&mut h, "HELO c\r\n"),
        "250 mail.csuvnetwork.com\r\n"
    );
    assert_eq!(exchange(&mut h, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(exchange(&mut h, "RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert!(exchange(&mut h, "HELP\r\n").starts_with("214 "));
    let must = "530 5.7.0 Must issue a STARTTLS command first\r\n";
    for cmd in [
        "MAIL FROM:<a@b.c>\r\n",
        "RCPT TO:<a@b.c>\r\n",
        "DATA\r\n",
        "VRFY user1\r\n",
        "EXPN staff\r\n",
        "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n",
        "AUTH CRAM-MD5\r\n",
    ] {
        assert_eq!(exchange(&mut h, cmd), must, "{cmd}");
    }
    // BDAT's chunk is consumed, never read as commands.
    assert_eq!(
        exchange(&mut h, "BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"),
        format!("{must}250 2.0.0 Ok\r\n")
    );
    assert!(!h.closed);
    assert!(!h.events.iter().any(|e| matches!(
        e,
        Event::Mail { .. } | Event::Rcpt { .. } | Event::Vrfy { .. } | Event::Auth(_)
    )));
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    let ehlo = exchange(&mut h, "EHLO c\r\n");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"), "{ehlo}");
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
    );
    assert_eq!(exchange(&mut h, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
}

#[test]
fn tls_required_refusals_count_as_errors() {
    let mut c = tls_cfg();
    c.tls_required = true;
    c.max_errors = 3;
    let mut h = ready(c);
    let out = exchange(
        &mut h,
        "MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\nVRFY x\r\n",
    );
    assert!(
        out.ends_with("421 4.7.0 mail.csuvnetwork.com Error: too many errors\r\n"),
        "{out}"
    );
    assert!(h.closed);
}

#[test]
fn implicit_tls_session() {
    let mut c = cfg();
    c.tls_available = true;
    c.tls_active = true;
    c.plaintext_auth_requires_tls = true;
    c.tls_required = true;
    let mut h = Host::new(c);
    assert!(h.s.tls_active());
    h.run();
    assert_eq!(h.take(), "220 mail.csuvnetwork.com ESMTP\r\n");
    let ehlo = exchange(&mut h, "EHLO c\r\n");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"), "{ehlo}");
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        exchange(
            &mut h,
            "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\n"
        ),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n"
    );
    let env = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::MessageEnd(env) => Some(env.clone()),
            _ => None,
        })
        .unwrap();
    assert!(env.tls);
    assert_eq!(env.authenticated.as_deref(), Some("user1"));
    assert_eq!(env.protocol(), "ESMTPSA");
    assert!(!h.events.contains(&Event::StartTls));
    // Implicit TLS without STARTTLS configured: still "already active".
    let mut c = cfg();
    c.tls_active = true;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
}

#[test]
fn starttls_syntax_and_refusals() {
    let mut h = ready(tls_cfg());
    assert_eq!(
        exchange(&mut h, "STARTTLS now\r\n"),
        "501 5.5.4 Syntax: STARTTLS\r\n"
    );
    assert!(!h.s.tls_active());
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
    assert_eq!(
        exchange(&mut h, "STARTTLS x\r\n"),
        "501 5.5.4 Syntax: STARTTLS\r\n"
    );
    assert_eq!(
        h.events.iter().filter(|e| **e == Event::StartTls).count(),
        1
    );
    // Not offered without TLS at the host.
    let mut h = ready(cfg());
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "502 5.5.1 Error: command not implemented\r\n"
    );
}

#[test]
fn starttls_forgets_helo_auth_and_transaction() {
    let mut c = tls_cfg();
    c.auth_required = true;
    let mut h = ready(c);
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        exchange(&mut h, "STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    // RFC 3207 section 4.2: EHLO, AUTH and the transaction are gone.
    assert_eq!(h.s.authenticated_user(), None);
    assert_eq!(
        exchange(&mut h, "RCPT TO:<d@e.f>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    h.feed(b"EHLO c\r\n");
    h.take();
    assert_eq!(
        exchange(&mut h, "MAIL FROM:<a@b.c>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert_eq!(
        exchange(&mut h, "AUTH PLAIN AHVzZXIxAHVzZXIx\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    h.feed(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\n");
    let env = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::MessageEnd(env) => Some(env.clone()),
            _ => None,
        })
        .unwrap();
    assert!(env.tls && env.esmtp);
    assert_eq!(env.protocol(), "ESMTPSA");
}

/// The injection of CVE-2011-0411: plaintext pipelined behind STARTTLS.
const INJECTION: &[u8] = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n";

/// Feeds `first`, drives, then `rest` (without answering StartTls until
/// all input is in: the worst case, a host that read more plaintext
/// before its handshake), then completes the handshake and drives on.
fn starttls_injection(first: &[u8], rest: &[u8]) -> (String, Vec<Event>, ServerSession) {
    let mut s = ServerSession::new(tls_cfg(), Duration::ZERO);
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut tls_pending = false;
    let mut drive = |s: &mut ServerSession, tls_pending: &mut bool, handshake: bool| loop {
        if *tls_pending && handshake {
            s.tls_established().unwrap();
            *tls_pending = false;
        }
        match s.next() {
            Ok(Event::StartTls) => {
                *tls_pending = true;
                events.push(Event::StartTls);
                if !handshake {
                    return;
                }
            }
            Ok(e) => {
                if matches!(e, Event::Mail { .. } | Event::Rcpt { .. }) {
                    s.decide(Verdict::Accept).unwrap();
                }
                events.push(e);
            }
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(Interrupt::NeedInput | Interrupt::Close) => return,
            Err(Interrupt::AwaitingHost) => return,
        }
    };
    for b in first.chunks(1) {
        s.enqueue_input(Duration::ZERO, b);
        drive(&mut s, &mut tls_pending, false);
    }
    s.enqueue_input(Duration::ZERO, rest);
    drive(&mut s, &mut tls_pending, true);
    (String::from_utf8(out).unwrap(), events, s)
}

#[test]
fn starttls_injection_in_one_write_is_discarded() {
    let mut s = ServerSession::new(tls_cfg(), Duration::ZERO);
    s.enqueue_input(Duration::ZERO, INJECTION);
    let mut out = Vec::new();
    let mut events = Vec::new();
    loop {
        match s.next() {
            Ok(Event::StartTls) => {
                assert_eq!(s.buffered_input(), 0);
                s.tls_established().unwrap();
                events.push(Event::StartTls);
            }
            Ok(e) => events.push(e),
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(Interrupt::NeedInput) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.ends_with("250 CHUNKING\r\n220 2.0.0 Ready to start TLS\r\n"),
        "{out}"
    );
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::Helo { .. } | Event::StartTls)));
    assert!(s.tls_active() && !s.is_closed());
    // Inside TLS the session starts afresh.
    s.enqueue_input(Duration::ZERO, b"MAIL FROM:<a@b.c>\r\n");
    assert_eq!(
        s.next(),
        Err(Interrupt::Output(
            b"503 5.5.1 Error: send HELO/EHLO first\r\n".to_vec()
        ))
    );
}

#[test]
fn starttls_injection_discarded_at_every_split() {
    for split in 0..=INJECTION.len() {
        let (first, rest) = INJECTION.split_at(split);
        let (out, events, s) = starttls_injection(first, rest);
        assert!(
            out.ends_with("220 2.0.0 Ready to start TLS\r\n"),
            "split {split}: {out}"
        );
        assert!(
            events
                .iter()
                .all(|e| matches!(e, Event::Helo { .. } | Event::StartTls)),
            "split {split}: {events:?}"
        );
        assert!(s.tls_active() && !s.is_closed(), "split {split}");
        assert_eq!(s.buffered_input(), 0, "split {split}");
    }
}

#[test]
fn envelope_protocol_names() {
    let mut env = Envelope {
        from: ReversePath::Null,
        params: MailParameters::default(),
        recipients: Vec::new(),
        helo: None,
        esmtp: false,
        authenticated: None,
        tls: true,
        size: 0,
        chunked: false,
    };
    assert_eq!(env.protocol(), "SMTP");
    env.esmtp = true;
    assert_eq!(env.protocol(), "ESMTPS");
    env.authenticated = Some("u".into());
    assert_eq!(env.protocol(), "ESMTPSA");
    env.tls = false;
    assert_eq!(env.protocol(), "ESMTPA");
    env.authenticated = None;
    assert_eq!(env.protocol(), "ESMTP");
    // RFC 6531 section 3.7.3.
    env.params.smtputf8 = true;
    assert_eq!(env.protocol(), "UTF8SMTP");
    env.tls = true;
    assert_eq!(env.protocol(), "UTF8SMTPS");
    env.authenticated = Some("u".into());
    assert_eq!(env.protocol(), "UTF8SMTPSA");
    env.tls = false;
    assert_eq!(env.protocol(), "UTF8SMTPA");
}
