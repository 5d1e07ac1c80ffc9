use super::*;
use mail_session::{cram_md5_digest, EntryKind};
use proptest::prelude::*;
use std::time::Duration;

pub(crate) const TS: &str = "<1896.697170952@dbc.mtview.ca.us>";

/// A scripted host: one account store, one maildrop, answers events.
pub(crate) struct Host {
    pub(crate) users: Vec<(&'static str, &'static str)>,
    pub(crate) messages: Vec<Vec<u8>>,
    pub(crate) chunk: usize,
    in_use: bool,
    maildrop_fail: Option<MaildropError>,
    auth_tempfail: bool,
    update_ok: bool,
    fail_message_after: Option<usize>,
    pub(crate) updates: Vec<Vec<MessageRef>>,
    retrieved: Vec<(MessageRef, Option<u32>)>,
    tls_started: u32,
    closed: bool,
    /// Take message output with `drain_output` instead of from `next`.
    drain: bool,
}

impl Host {
    pub(crate) fn new() -> Host {
        Host {
            users: vec![("mrose", "tanstaaf"), ("user1", "pw1")],
            messages: vec![
                b"Subject: one\r\n\r\nbody one\r\n".to_vec(),
                b"Subject: two\r\n\r\nline a\r\n.dot line\r\nline c\r\n".to_vec(),
                b"Subject: three\r\n\r\nno final crlf".to_vec(),
            ],
            chunk: 5,
            in_use: false,
            maildrop_fail: None,
            auth_tempfail: false,
            update_ok: true,
            fail_message_after: None,
            updates: Vec::new(),
            retrieved: Vec::new(),
            tls_started: 0,
            closed: false,
            drain: false,
        }
    }

    fn secret(&self, user: &str) -> Option<&'static str> {
        self.users.iter().find(|(u, _)| *u == user).map(|(_, p)| *p)
    }

    fn listing(&self) -> Vec<MessageInfo> {
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| MessageInfo {
                size: m.len() as u64,
                uid: format!("uid-{}", i + 1),
            })
            .collect()
    }

    /// Drives the session until it needs input or closes; returns output.
    pub(crate) fn drive(&mut self, s: &mut ServerSession) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match s.next() {
                Err(Interrupt::Output(b)) => out.extend(b),
                Err(Interrupt::NeedInput) => return out,
                Err(Interrupt::Close) => {
                    self.closed = true;
                    return out;
                }
                Err(Interrupt::AwaitingHost) => panic!("unanswered event"),
                Ok(ev) => self.answer(s, ev, &mut out),
            }
        }
    }

    fn answer(&mut self, s: &mut ServerSession, ev: Event, out: &mut Vec<u8>) {
        match ev {
            Event::Authenticate(c) => {
                let r = if self.auth_tempfail {
                    AuthResult::TempFail
                } else {
                    let ok = self
                        .secret(c.username())
                        .is_some_and(|p| c.verify_password(p));
                    if ok {
                        AuthResult::Accepted
                    } else {
                        AuthResult::Rejected
                    }
                };
                s.auth_result(r).unwrap();
            }
            Event::OpenMaildrop { .. } => {
                if self.in_use {
                    s.maildrop_failed(MaildropError::InUse).unwrap();
                } else if let Some(e) = self.maildrop_fail {
                    s.maildrop_failed(e).unwrap();
                } else {
                    s.maildrop_opened(self.listing()).unwrap();
                }
            }
            Event::Retrieve { message, top, .. } => {
                let idx = message.number as usize - 1;
                self.retrieved.push((message, top));
                let msg = self.messages[idx].clone();
                for (n, c) in msg.chunks(self.chunk).enumerate() {
                    if self.fail_message_after == Some(n) {
                        s.message_failed().unwrap();
                        return;
                    }
                    let more = s.message_data(c).unwrap();
                    if self.drain {
                        s.drain_output(out);
                    }
                    loop {
                        match s.next() {
                            Err(Interrupt::Output(b)) => out.extend(b),
                            Err(Interrupt::AwaitingHost) => break,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    if !more {
                        break;
                    }
                }
                if self.fail_message_after == Some(usize::MAX) {
                    s.message_failed().unwrap();
                    return;
                }
                s.message_end().unwrap();
            }
            Event::Update { deleted } => {
                self.updates.push(deleted);
                s.update_result(self.update_ok).unwrap();
            }
            Event::StartTls => {
                self.tls_started += 1;
                s.tls_established().unwrap();
            }
        }
    }
}

fn t0() -> Duration {
    Duration::ZERO
}

fn session(config: ServerConfig) -> ServerSession {
    ServerSession::new(config, t0())
}

pub(crate) fn cfg() -> ServerConfig {
    ServerConfig {
        greeting: "ready".into(),
        apop_timestamp: Some(TS.into()),
        sasl: vec![Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5],
        implementation: None,
        ..ServerConfig::default()
    }
}

/// Runs `input` through a fresh session; returns everything after the
/// greeting, as a string.
fn run_with(config: ServerConfig, host: &mut Host, input: &str) -> String {
    let mut s = session(config);
    host.drive(&mut s);
    s.enqueue_input(Duration::ZERO, input.as_bytes());
    String::from_utf8(host.drive(&mut s)).unwrap()
}

fn run(input: &str) -> String {
    run_with(cfg(), &mut Host::new(), input)
}

const LOGIN: &str = "USER user1\r\nPASS pw1\r\n";
const LOGGED_IN: &str = "+OK\r\n+OK Logged in.\r\n";

fn after_login(input: &str) -> String {
    let out = run(&format!("{LOGIN}{input}"));
    out.strip_prefix(LOGGED_IN)
        .unwrap_or_else(|| panic!("login failed: {out}"))
        .to_owned()
}

#[test]
fn rfc1939_section10_example_byte_for_byte() {
    // The example session of RFC 1939 section 10, with messages of 120 and
    // 200 octets.
    let m1: Vec<u8> = {
        let mut m = b"Subject: 1\r\n\r\n".to_vec();
        while m.len() < 118 {
            m.push(b'x');
        }
        m.extend_from_slice(b"\r\n");
        m
    };
    let m2: Vec<u8> = {
        let mut m = b"Subject: 2\r\n\r\n.starts with dot\r\n".to_vec();
        while m.len() < 198 {
            m.push(b'y');
        }
        m.extend_from_slice(b"\r\n");
        m
    };
    assert_eq!((m1.len(), m2.len()), (120, 200));
    let mut host = Host::new();
    host.messages = vec![m1.clone(), m2.clone()];
    let config = ServerConfig {
        greeting: "POP3 server ready".into(),
        apop_timestamp: Some(TS.into()),
        hostname: "dewey".into(),
        style: Style::Rfc1939,
        ..ServerConfig::default()
    };
    let mut s = session(config);
    let mut wire = host.drive(&mut s);
    s.enqueue_input(
        Duration::ZERO,
        b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\n\
          RETR 2\r\nDELE 2\r\nQUIT\r\n",
    );
    wire.extend(host.drive(&mut s));
    let mut expected = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n\
        +OK mrose's maildrop has 2 messages (320 octets)\r\n\
        +OK 2 320\r\n\
        +OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n\
        +OK 120 octets\r\n"
        .to_vec();
    expected.extend_from_slice(&m1);
    expected.extend_from_slice(b".\r\n+OK message 1 deleted\r\n+OK 200 octets\r\n");
    expected.extend_from_slice(&stuff_body(&m2));
    expected.extend_from_slice(
        b"+OK message 2 deleted\r\n+OK dewey POP3 server signing off (maildrop empty)\r\n",
    );
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        String::from_utf8(expected).unwrap()
    );
    assert!(host.closed);
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(
        host.updates,
        vec![vec![
            MessageRef {
                number: 1,
                uid: "uid-1".into()
            },
            MessageRef {
                number: 2,
                uid: "uid-2".into()
            },
        ]]
    );
}

fn stuff_body(m: &[u8]) -> Vec<u8> {
    crate::stuff::stuff(m)
}

#[test]
fn rfc1939_apop_example() {
    assert_eq!(
        run("APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"),
        "+OK Logged in.\r\n"
    );
    // Upper-case hex is the same digest.
    assert_eq!(
        run("APOP mrose C4C9334BAC560ECC979E58001B3E22FB\r\n"),
        "+OK Logged in.\r\n"
    );
    assert_eq!(
        run("APOP mrose c4c9334bac560ecc979e58001b3e22fa\r\n"),
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let no_ts = ServerConfig {
        apop_timestamp: None,
        ..cfg()
    };
    assert_eq!(
        run_with(
            no_ts,
            &mut Host::new(),
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
        ),
        "-ERR APOP is not enabled.\r\n"
    );
}

#[test]
fn apop_timestamp_format() {
    assert_eq!(
        apop_timestamp(1896, 697170952, "dbc.mtview.ca.us"),
        "<1896.697170952@dbc.mtview.ca.us>"
    );
}

#[test]
fn greeting() {
    let mut s = session(cfg());
    assert_eq!(
        s.next(),
        Err(Interrupt::Output(
            format!("+OK ready {TS}\r\n").into_bytes()
        ))
    );
    assert_eq!(s.next(), Err(Interrupt::NeedInput));
    let mut s = session(ServerConfig::default());
    assert_eq!(
        s.next(),
        Err(Interrupt::Output(b"+OK POP3 server ready.\r\n".to_vec()))
    );
}

#[test]
fn user_pass() {
    assert_eq!(run(LOGIN), LOGGED_IN);
    assert_eq!(
        run("USER user1\r\nPASS wrong\r\n"),
        "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    assert_eq!(
        run("USER nobody\r\nPASS pw1\r\n"),
        "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    assert_eq!(run("PASS pw1\r\n"), "-ERR No username given.\r\n");
    // A failed PASS forgets the user name.
    assert_eq!(
        run("USER user1\r\nPASS x\r\nPASS pw1\r\n"),
        "+OK\r\n-ERR [AUTH] Authentication failed.\r\n-ERR No username given.\r\n"
    );
    // Password with spaces is passed whole.
    let mut host = Host::new();
    host.users.push(("sp", "a b  c"));
    assert_eq!(
        run_with(cfg(), &mut host, "USER sp\r\nPASS a b  c\r\n"),
        LOGGED_IN
    );
    let no_user = ServerConfig {
        user_pass: false,
        ..cfg()
    };
    assert_eq!(
        run_with(no_user, &mut Host::new(), "USER a\r\n"),
        "-ERR USER/PASS is not enabled.\r\n"
    );
}

#[test]
fn failed_login_limit_closes() {
    let mut host = Host::new();
    let config = ServerConfig {
        max_failed_logins: 2,
        ..cfg()
    };
    let out = run_with(
        config,
        &mut host,
        "USER user1\r\nPASS x\r\nUSER user1\r\nPASS y\r\nUSER user1\r\nPASS pw1\r\n",
    );
    assert_eq!(
        out,
        "+OK\r\n-ERR [AUTH] Authentication failed.\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    assert!(host.closed);
}

#[test]
fn maildrop_failures() {
    let mut host = Host::new();
    host.in_use = true;
    assert_eq!(
        run_with(cfg(), &mut host, LOGIN),
        "+OK\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n"
    );
    assert!(!host.closed);
    let mut host = Host::new();
    host.maildrop_fail = Some(MaildropError::TempFail);
    assert_eq!(
        run_with(cfg(), &mut host, &format!("{LOGIN}STAT\r\n")),
        "+OK\r\n-ERR [SYS/TEMP] Couldn't open mailbox.\r\n\
         -ERR Command not valid in AUTHORIZATION state.\r\n"
    );
    let mut host = Host::new();
    host.maildrop_fail = Some(MaildropError::PermFail);
    assert_eq!(
        run_with(cfg(), &mut host, LOGIN),
        "+OK\r\n-ERR [SYS/PERM] Couldn't open mailbox.\r\n"
    );
    let mut host = Host::new();
    host.maildrop_fail = Some(MaildropError::LoginDelay);
    assert_eq!(
        run_with(cfg(), &mut host, LOGIN),
        "+OK\r\n-ERR [LOGIN-DELAY] Logging in too often.\r\n"
    );
    let mut host = Host::new();
    host.auth_tempfail = true;
    assert_eq!(
        run_with(cfg(), &mut host, LOGIN),
        "+OK\r\n-ERR [SYS/TEMP] Temporary authentication failure.\r\n"
    );
}

#[test]
fn invalid_uid_in_listing() {
    for uid in ["", "a b", &"x".repeat(71), "caf\u{e9}"] {
        let mut s = session(cfg());
        let _ = s.next();
        s.enqueue_input(Duration::ZERO, LOGIN.as_bytes());
        assert!(matches!(s.next(), Err(Interrupt::Output(_))));
        assert!(matches!(s.next(), Ok(Event::Authenticate(_))));
        s.auth_result(AuthResult::Accepted).unwrap();
        assert!(matches!(s.next(), Ok(Event::OpenMaildrop { .. })));
        let r = s.maildrop_opened(vec![MessageInfo {
            size: 1,
            uid: uid.to_owned(),
        }]);
        assert_eq!(r, Err(UsageError::InvalidUid));
        assert_eq!(
            s.next(),
            Err(Interrupt::Output(
                b"-ERR [SYS/TEMP] Couldn't open mailbox.\r\n".to_vec()
            ))
        );
        assert_eq!(s.state(), SessionState::Authorization);
    }
}

#[test]
fn authorization_state_refuses_transaction_commands() {
    for c in [
        "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1",
    ] {
        assert_eq!(
            run(&format!("{c}\r\n")),
            "-ERR Command not valid in AUTHORIZATION state.\r\n",
            "{c}"
        );
    }
    let mut host = Host::new();
    assert_eq!(
        run_with(cfg(), &mut host, "QUIT\r\nNOOP\r\n"),
        "+OK Logging out\r\n"
    );
    assert!(host.closed);
    assert!(host.updates.is_empty());
}

#[test]
fn transaction_state_refuses_authorization_commands() {
    for c in [
        "USER a",
        "PASS a",
        "APOP a c4c9334bac560ecc979e58001b3e22fb",
        "AUTH PLAIN",
        "AUTH",
        "STLS",
    ] {
        assert_eq!(
            after_login(&format!("{c}\r\n")),
            "-ERR Command not valid in TRANSACTION state.\r\n",
            "{c}"
        );
    }
}

#[test]
fn unknown_and_malformed_commands() {
    assert_eq!(run("FOO\r\n"), "-ERR Unknown command: FOO\r\n");
    assert_eq!(after_login("FOO bar\r\n"), "-ERR Unknown command: FOO\r\n");
    assert_eq!(run("\r\n"), "-ERR Unknown command.\r\n");
    assert_eq!(after_login("RETR\r\n"), "-ERR Missing argument.\r\n");
    assert_eq!(
        after_login("RETR 0\r\n"),
        "-ERR Invalid message number: 0\r\n"
    );
    assert_eq!(
        after_login("RETR x\r\n"),
        "-ERR Invalid message number: x\r\n"
    );
    assert_eq!(
        after_login("RETR 4294967296\r\n"),
        "-ERR Message number too large: 4294967296\r\n"
    );
    assert_eq!(after_login("STAT 1\r\n"), "+OK 3 100\r\n");
    assert_eq!(after_login("TOP 1 x\r\n"), "-ERR Invalid line count: x\r\n");
    assert_eq!(after_login("USER a\x01\r\n"), "-ERR Invalid arguments.\r\n");
    // A CR inside a line is not a line end.
    assert_eq!(
        after_login("NOOP\rSTAT\r\n"),
        "-ERR Unknown command: NOOP?STAT\r\n"
    );
}

#[test]
fn bad_commands_in_a_row_close_the_session() {
    const UNKNOWN: &str = "-ERR Unknown command: FOO\r\n";
    const TOO_MANY: &str = "-ERR Too many bad commands.\r\n";
    // Before login: three in a row (unknown, wrong state, too long), as
    // Dovecot's login process; what follows is not read.
    let mut host = Host::new();
    let long = "x".repeat(300);
    assert_eq!(
        run_with(
            cfg(),
            &mut host,
            &format!("FOO\r\nSTAT\r\n{long}\r\nCAPA\r\n")
        ),
        format!(
            "{UNKNOWN}-ERR Command not valid in AUTHORIZATION state.\r\n\
             -ERR Input line too long.\r\n{TOO_MANY}"
        )
    );
    assert!(host.closed);
    // A valid command (even one answered -ERR) starts the count again.
    let mut host = Host::new();
    let out = run_with(
        cfg(),
        &mut host,
        "FOO\r\nFOO\r\nUSER user1\r\nFOO\r\nFOO\r\nPASS bad\r\nFOO\r\nFOO\r\nQUIT\r\n",
    );
    assert!(out.ends_with("+OK Logging out\r\n"), "{out}");
    assert!(!out.contains(TOO_MANY));
    // Logged in: 20 in a row; the session closes without UPDATE, so a
    // pipelined QUIT deletes nothing.
    let mut host = Host::new();
    let out = run_with(
        cfg(),
        &mut host,
        &format!("{LOGIN}DELE 1\r\n{}QUIT\r\n", "FOO\r\n".repeat(20)),
    );
    assert_eq!(
        out,
        format!(
            "{LOGGED_IN}+OK Marked to be deleted.\r\n{}{TOO_MANY}",
            UNKNOWN.repeat(20)
        )
    );
    assert!(host.closed);
    assert!(host.updates.is_empty());
    let out = after_login(&format!(
        "{}NOOP\r\n{}QUIT\r\n",
        "FOO\r\n".repeat(19),
        "FOO\r\n".repeat(19)
    ));
    assert!(out.ends_with("+OK Logging out.\r\n"), "{out}");
    // The limits are settings.
    let config = ServerConfig {
        max_bad_commands_before_login: 1,
        ..cfg()
    };
    assert_eq!(
        run_with(config, &mut Host::new(), "FOO\r\nQUIT\r\n"),
        format!("{UNKNOWN}{TOO_MANY}")
    );
}

#[test]
fn stat_list_uidl() {
    let sizes = {
        let h = Host::new();
        h.messages.iter().map(Vec::len).collect::<Vec<_>>()
    };
    let total: usize = sizes.iter().sum();
    assert_eq!(after_login("STAT\r\n"), format!("+OK 3 {total}\r\n"));
    assert_eq!(
        after_login("LIST\r\n"),
        format!(
            "+OK 3 messages:\r\n1 {}\r\n2 {}\r\n3 {}\r\n.\r\n",
            sizes[0], sizes[1], sizes[2]
        )
    );
    assert_eq!(after_login("LIST 2\r\n"), format!("+OK 2 {}\r\n", sizes[1]));
    assert_eq!(after_login("LIST 4\r\n"), "-ERR There's no message 4.\r\n");
    assert_eq!(
        after_login("UIDL\r\n"),
        "+OK\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"
    );
    assert_eq!(after_login("UIDL 3\r\n"), "+OK 3 uid-3\r\n");
    assert_eq!(after_login("UIDL 9\r\n"), "-ERR There's no message 9.\r\n");
    assert_eq!(after_login("NOOP\r\n"), "+OK\r\n");
}

#[test]
fn empty_maildrop() {
    let mut host = Host::new();
    host.messages.clear();
    assert_eq!(
        run_with(
            cfg(),
            &mut host,
            &format!("{LOGIN}STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n")
        ),
        format!(
            "{LOGGED_IN}+OK 0 0\r\n+OK 0 messages:\r\n.\r\n+OK\r\n.\r\n\
             -ERR There's no message 1.\r\n"
        )
    );
}

#[test]
fn dele_rset_quit_semantics() {
    let mut host = Host::new();
    let s1 = host.messages[0].len();
    let s2 = host.messages[1].len();
    let s3 = host.messages[2].len();
    let out = run_with(
        cfg(),
        &mut host,
        &format!(
            "{LOGIN}DELE 2\r\nDELE 2\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL 2\r\nRETR 2\r\nTOP 2 0\r\n\
             UIDL\r\nRSET\r\nSTAT\r\nDELE 1\r\nDELE 3\r\nQUIT\r\nNOOP\r\n"
        ),
    );
    assert_eq!(
        out,
        format!(
            "{LOGGED_IN}+OK Marked to be deleted.\r\n-ERR Message is deleted.\r\n+OK 2 {}\r\n\
             +OK 2 messages:\r\n1 {s1}\r\n3 {s3}\r\n.\r\n-ERR Message is deleted.\r\n\
             -ERR Message is deleted.\r\n-ERR Message is deleted.\r\n-ERR Message is deleted.\r\n\
             +OK\r\n1 uid-1\r\n3 uid-3\r\n.\r\n+OK\r\n+OK 3 {}\r\n+OK Marked to be deleted.\r\n\
             +OK Marked to be deleted.\r\n+OK Logging out.\r\n",
            s1 + s3,
            s1 + s2 + s3
        )
    );
    assert_eq!(
        host.updates,
        vec![vec![
            MessageRef {
                number: 1,
                uid: "uid-1".into()
            },
            MessageRef {
                number: 3,
                uid: "uid-3".into()
            },
        ]]
    );
    assert!(host.closed);
}

#[test]
fn quit_without_deletions_still_reports_update() {
    let mut host = Host::new();
    run_with(cfg(), &mut host, &format!("{LOGIN}QUIT\r\n"));
    assert_eq!(host.updates, vec![Vec::<MessageRef>::new()]);
}

#[test]
fn update_failure() {
    let mut host = Host::new();
    host.update_ok = false;
    let out = run_with(cfg(), &mut host, &format!("{LOGIN}DELE 1\r\nQUIT\r\n"));
    assert!(
        out.ends_with("-ERR [SYS/TEMP] Some deleted messages were not removed.\r\n"),
        "{out}"
    );
    assert!(host.closed);
}

#[test]
fn connection_end_without_quit_deletes_nothing() {
    let mut host = Host::new();
    let mut s = session(cfg());
    host.drive(&mut s);
    s.enqueue_input(
        Duration::ZERO,
        format!("{LOGIN}DELE 1\r\nDELE 2\r\n").as_bytes(),
    );
    host.drive(&mut s);
    assert_eq!(s.state(), SessionState::Transaction);
    drop(s);
    assert!(host.updates.is_empty());
}

#[test]
fn rset_in_rfc_style() {
    let config = ServerConfig {
        style: Style::Rfc1939,
        ..cfg()
    };
    let mut host = Host::new();
    let total: usize = host.messages.iter().map(Vec::len).sum();
    let out = run_with(
        config,
        &mut host,
        &format!("{LOGIN}DELE 1\r\nRSET\r\nQUIT\r\n"),
    );
    assert!(
        out.ends_with(&format!(
            "+OK message 1 deleted\r\n+OK maildrop has 3 messages ({total} octets)\r\n\
             +OK localhost POP3 server signing off (3 messages left)\r\n"
        )),
        "{out}"
    );
}

#[test]
fn retr_stuffs_and_terminates() {
    let h = Host::new();
    let out = after_login("RETR 2\r\n");
    assert_eq!(
        out,
        format!(
            "+OK {} octets\r\nSubject: two\r\n\r\nline a\r\n..dot line\r\nline c\r\n.\r\n",
            h.messages[1].len()
        )
    );
    // A message without a final CRLF gets one before the terminator.
    let out = after_login("RETR 3\r\n");
    assert_eq!(
        out,
        format!(
            "+OK {} octets\r\nSubject: three\r\n\r\nno final crlf\r\n.\r\n",
            h.messages[2].len()
        )
    );
}

#[test]
fn retr_any_chunk_size() {
    for chunk in [1, 2, 3, 7, 1000] {
        let mut host = Host::new();
        host.chunk = chunk;
        let out = run_with(cfg(), &mut host, &format!("{LOGIN}RETR 2\r\nRETR 3\r\n"));
        let mut reference = Host::new();
        reference.chunk = 4096;
        let expect = run_with(
            cfg(),
            &mut reference,
            &format!("{LOGIN}RETR 2\r\nRETR 3\r\n"),
        );
        assert_eq!(out, expect, "chunk {chunk}");
    }
}

#[test]
fn drain_output_gives_the_same_bytes() {
    let input = format!("{LOGIN}RETR 1\r\nTOP 2 1\r\nRETR 2\r\nRETR 3\r\nQUIT\r\n");
    for chunk in [1, 3, 4096] {
        let mut host = Host::new();
        host.chunk = chunk;
        host.drain = true;
        let drained = run_with(cfg(), &mut host, &input);
        let mut reference = Host::new();
        reference.chunk = chunk;
        assert_eq!(
            drained,
            run_with(cfg(), &mut reference, &input),
            "chunk {chunk}"
        );
    }
    // Nothing pending: nothing moved.
    let mut s = session(cfg());
    let mut out = Vec::new();
    assert!(s.drain_output(&mut out) > 0, "the greeting");
    assert_eq!(s.drain_output(&mut out), 0);
}

#[test]
fn top() {
    assert_eq!(
        after_login("TOP 2 0\r\n"),
        "+OK\r\nSubject: two\r\n\r\n.\r\n"
    );
    assert_eq!(
        after_login("TOP 2 2\r\n"),
        "+OK\r\nSubject: two\r\n\r\nline a\r\n..dot line\r\n.\r\n"
    );
    assert_eq!(
        after_login("TOP 2 100\r\n"),
        "+OK\r\nSubject: two\r\n\r\nline a\r\n..dot line\r\nline c\r\n.\r\n"
    );
    assert_eq!(
        after_login("TOP 3 5\r\n"),
        "+OK\r\nSubject: three\r\n\r\nno final crlf\r\n.\r\n"
    );
    assert_eq!(after_login("TOP 4 1\r\n"), "-ERR There's no message 4.\r\n");
    // A line count beyond 32 bits sends the whole message (Dovecot does
    // too); it used to be refused as "Message number too large".
    assert_eq!(
        after_login("TOP 2 99999999999999\r\n"),
        "+OK\r\nSubject: two\r\n\r\nline a\r\n..dot line\r\nline c\r\n.\r\n"
    );
    // The host is told to stop once TOP has its lines.
    let mut host = Host::new();
    host.chunk = 1;
    host.messages[1] = format!("A: b\r\n\r\nl1\r\n{}", "rest\r\n".repeat(1000)).into_bytes();
    let mut s = session(cfg());
    host.drive(&mut s);
    s.enqueue_input(Duration::ZERO, format!("{LOGIN}TOP 2 1\r\n").as_bytes());
    let out = host.drive(&mut s);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("+OK\r\nA: b\r\n\r\nl1\r\n.\r\n"));
    assert_eq!(host.retrieved.last().unwrap().1, Some(1));
}

#[test]
fn message_failures() {
    let mut host = Host::new();
    host.fail_message_after = Some(0);
    let out = run_with(cfg(), &mut host, &format!("{LOGIN}RETR 1\r\nNOOP\r\n"));
    assert_eq!(
        out,
        format!("{LOGGED_IN}-ERR [SYS/TEMP] Couldn't read message.\r\n+OK\r\n")
    );
    assert!(!host.closed);
    let mut host = Host::new();
    host.fail_message_after = Some(2);
    let out = run_with(cfg(), &mut host, &format!("{LOGIN}RETR 1\r\nNOOP\r\n"));
    assert!(out.starts_with(&format!("{LOGGED_IN}+OK ")), "{out}");
    assert!(!out.ends_with("+OK\r\n"));
    assert!(host.closed);
    assert!(host.updates.is_empty());
}

#[test]
fn message_removed_by_another_program() {
    let mut s = session(cfg());
    let mut host = Host::new();
    host.drive(&mut s);
    s.enqueue_input(Duration::ZERO, LOGIN.as_bytes());
    host.drive(&mut s);
    s.enqueue_input(Duration::ZERO, b"TOP 2 0\r\nNOOP\r\n");
    let mut out = Vec::new();
    loop {
        match s.next() {
            Ok(Event::Retrieve { message, .. }) => {
                assert_eq!(message.number, 2);
                s.message_gone().unwrap();
            }
            Err(Interrupt::Output(b)) => out.extend(b),
            Err(Interrupt::NeedInput) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // No [SYS/TEMP]: trying again will not bring the message back.
    assert_eq!(out, b"-ERR Message 2 expunged.\r\n+OK\r\n");
    assert_eq!(s.message_gone(), Err(UsageError::NotAwaiting("Retrieve")));
}

#[test]
fn capa() {
    let config = ServerConfig {
        tls_available: true,
        implementation: Some("test 1".into()),
        ..cfg()
    };
    assert_eq!(
        run_with(config.clone(), &mut Host::new(), "CAPA\r\n"),
        "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n\
         SASL PLAIN LOGIN CRAM-MD5\r\nSTLS\r\nIMPLEMENTATION test 1\r\n.\r\n"
    );
    // After login the same list (RFC 2449 section 5: what AUTHORIZATION
    // announces, TRANSACTION announces too), though USER, AUTH and STLS
    // are then refused. It used to drop USER, SASL and STLS, as Dovecot.
    let out = run_with(
        config,
        &mut Host::new(),
        &format!("{LOGIN}CAPA\r\nSTLS\r\n"),
    );
    assert_eq!(
        out,
        format!(
            "{LOGGED_IN}+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n\
             SASL PLAIN LOGIN CRAM-MD5\r\nSTLS\r\nIMPLEMENTATION test 1\r\n.\r\n\
             -ERR Command not valid in TRANSACTION state.\r\n"
        )
    );
    // Plaintext disallowed without TLS: no USER, no PLAIN/LOGIN.
    let strict = ServerConfig {
        plaintext_requires_tls: true,
        ..cfg()
    };
    assert_eq!(
        run_with(strict, &mut Host::new(), "CAPA\r\n"),
        "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n\
         SASL CRAM-MD5\r\n.\r\n"
    );
}

#[test]
fn plaintext_requires_tls() {
    let strict = ServerConfig {
        plaintext_requires_tls: true,
        tls_available: true,
        ..cfg()
    };
    let refused =
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    assert_eq!(
        run_with(strict.clone(), &mut Host::new(), "USER user1\r\n"),
        refused
    );
    assert_eq!(
        run_with(strict.clone(), &mut Host::new(), "AUTH PLAIN\r\n"),
        refused
    );
    // After STLS the same login works.
    let mut host = Host::new();
    let out = run_with(strict, &mut host, "STLS\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
    assert_eq!(host.tls_started, 1);
}

#[test]
fn stls_discards_pipelined_input() {
    let config = ServerConfig {
        tls_available: true,
        ..cfg()
    };
    let mut host = Host::new();
    let mut s = session(config);
    host.drive(&mut s);
    // The USER/PASS after STLS arrived in clear text: it must be dropped.
    s.enqueue_input(Duration::ZERO, format!("STLS\r\n{LOGIN}").as_bytes());
    assert_eq!(
        String::from_utf8(host.drive(&mut s)).unwrap(),
        "+OK Begin TLS negotiation now.\r\n"
    );
    assert!(s.tls_active());
    assert_eq!(s.state(), SessionState::Authorization);
    s.enqueue_input(
        Duration::ZERO,
        format!("STLS\r\nCAPA\r\n{LOGIN}").as_bytes(),
    );
    let out = String::from_utf8(host.drive(&mut s)).unwrap();
    assert!(out.starts_with("-ERR TLS is already active.\r\n"), "{out}");
    assert!(!out.contains("STLS"), "{out}");
    assert!(out.ends_with(LOGGED_IN), "{out}");
    assert_eq!(run("STLS\r\n"), "-ERR TLS support isn't enabled.\r\n");
}

fn b64(s: &[u8]) -> String {
    mail_session::sasl::b64_encode(s)
}

#[test]
fn auth_plain() {
    let ir = b64(b"\0user1\0pw1");
    assert_eq!(run(&format!("AUTH PLAIN {ir}\r\n")), "+OK Logged in.\r\n");
    assert_eq!(
        run(&format!("auth plain\r\n{ir}\r\n")),
        "+ \r\n+OK Logged in.\r\n"
    );
    let authz = b64(b"user1\0user1\0pw1");
    assert_eq!(
        run(&format!("AUTH PLAIN {authz}\r\n")),
        "+OK Logged in.\r\n"
    );
    let fail = "-ERR [AUTH] Authentication failed.\r\n";
    for bad in [
        b64(b"\0user1\0wrong"),
        b64(b"other\0user1\0pw1"),
        b64(b"\0user1"),
        b64(b"\0\0pw1"),
        b64(b"\0user1\0pw1\0x"),
        b64(b"\0user1\0\xff"),
        "=".to_owned(),
    ] {
        assert_eq!(run(&format!("AUTH PLAIN {bad}\r\n")), fail, "{bad}");
    }
    assert_eq!(
        run("AUTH PLAIN\r\n*\r\nNOOP\r\n"),
        "+ \r\n-ERR Authentication aborted by client.\r\n\
         -ERR Command not valid in AUTHORIZATION state.\r\n"
    );
    assert_eq!(
        run("AUTH PLAIN !!!\r\n"),
        "-ERR [AUTH] Invalid base64 data in initial response.\r\n"
    );
    assert_eq!(
        run("AUTH PLAIN\r\n!!!\r\n"),
        "+ \r\n-ERR [AUTH] Invalid base64 data in continued response.\r\n"
    );
    assert_eq!(
        run("AUTH DIGEST-MD5\r\n"),
        "-ERR [AUTH] Unsupported authentication mechanism.\r\n"
    );
}

#[test]
fn auth_login() {
    let u = b64(b"user1");
    let p = b64(b"pw1");
    assert_eq!(
        run(&format!("AUTH LOGIN\r\n{u}\r\n{p}\r\n")),
        "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK Logged in.\r\n"
    );
    assert_eq!(
        run(&format!("AUTH LOGIN {u}\r\n{p}\r\n")),
        "+ UGFzc3dvcmQ6\r\n+OK Logged in.\r\n"
    );
    assert_eq!(
        run(&format!("AUTH LOGIN {u}\r\n{}\r\n", b64(b"bad"))),
        "+ UGFzc3dvcmQ6\r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    assert_eq!(
        run(&format!("AUTH LOGIN\r\n{u}\r\n*\r\n")),
        "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR Authentication aborted by client.\r\n"
    );
    // An empty initial response: the user name is asked for (Dovecot).
    assert_eq!(
        run(&format!("AUTH LOGIN =\r\n{u}\r\n{}\r\n", b64(b"pw1"))),
        "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK Logged in.\r\n"
    );
}

#[test]
fn auth_cram_md5() {
    let challenge = b64(TS.as_bytes());
    let digest = cram_md5_digest(b"pw1", TS.as_bytes());
    let resp = b64(format!("user1 {digest}").as_bytes());
    assert_eq!(
        run(&format!("AUTH CRAM-MD5\r\n{resp}\r\n")),
        format!("+ {challenge}\r\n+OK Logged in.\r\n")
    );
    let wrong = b64(format!("user1 {}", cram_md5_digest(b"no", TS.as_bytes())).as_bytes());
    assert_eq!(
        run(&format!("AUTH CRAM-MD5\r\n{wrong}\r\n")),
        format!("+ {challenge}\r\n-ERR [AUTH] Authentication failed.\r\n")
    );
    let garbage = b64(b"user1");
    assert_eq!(
        run(&format!("AUTH CRAM-MD5\r\n{garbage}\r\n")),
        format!("+ {challenge}\r\n-ERR [AUTH] Authentication failed.\r\n")
    );
    assert_eq!(
        run("AUTH CRAM-MD5 abc\r\n"),
        "-ERR Initial response not allowed for CRAM-MD5.\r\n"
    );
    let no_ts = ServerConfig {
        apop_timestamp: None,
        ..cfg()
    };
    assert_eq!(
        run_with(no_ts.clone(), &mut Host::new(), "AUTH CRAM-MD5\r\n"),
        "-ERR Unsupported authentication mechanism.\r\n"
    );
    assert_eq!(
        run_with(no_ts, &mut Host::new(), "AUTH\r\n"),
        "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    );
    assert_eq!(
        run("AUTH\r\n"),
        "+OK\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n"
    );
}

#[test]
fn sasl_failures_count_towards_limit() {
    let mut host = Host::new();
    let config = ServerConfig {
        max_failed_logins: 1,
        ..cfg()
    };
    let bad = b64(b"\0user1\0bad");
    run_with(config, &mut host, &format!("AUTH PLAIN {bad}\r\nNOOP\r\n"));
    assert!(host.closed);
}

#[test]
fn long_lines() {
    // 253 octets + CRLF = 255: accepted.
    let ok = format!("USER {}\r\n", "u".repeat(248));
    assert_eq!(ok.len(), 255);
    assert_eq!(run(&ok), "+OK\r\n");
    let long = format!("USER {}\r\n", "u".repeat(249));
    assert_eq!(run(&long), "-ERR Input line too long.\r\n");
    // The tail of an oversized line is never read as a command.
    let smuggle = format!("{LOGIN}NOOP {} DELE 1\r\nQUIT\r\n", "x".repeat(400));
    let mut host = Host::new();
    let out = run_with(cfg(), &mut host, &smuggle);
    assert_eq!(
        out,
        format!("{LOGGED_IN}-ERR Input line too long.\r\n+OK Logging out.\r\n")
    );
    assert_eq!(host.updates, vec![vec![]]);
    // Before login a long PASS or AUTH line is taken (up to 8 KiB, as
    // Dovecot takes them); USER is not, nor anything after login.
    let pw = "p".repeat(400);
    let mut host = Host::new();
    host.users
        .push(("big", Box::leak(pw.clone().into_boxed_str())));
    assert_eq!(
        run_with(
            cfg(),
            &mut host,
            &format!("USER big\r\nPASS {pw}\r\nQUIT\r\n")
        ),
        "+OK\r\n+OK Logged in.\r\n+OK Logging out.\r\n"
    );
    let mut host = Host::new();
    host.users
        .push(("big", Box::leak(pw.clone().into_boxed_str())));
    let ir = b64(format!("\0big\0{pw}").as_bytes());
    assert_eq!(
        run_with(cfg(), &mut host, &format!("AUTH PLAIN {ir}\r\n")),
        "+OK Logged in.\r\n"
    );
    assert_eq!(
        run(&format!("PASS {}\r\nNOOP\r\n", "p".repeat(9000))),
        "-ERR Input line too long.\r\n-ERR Command not valid in AUTHORIZATION state.\r\n"
    );
    assert_eq!(
        run(&format!("{LOGIN}PASS {}\r\n", "p".repeat(300))),
        format!("{LOGGED_IN}-ERR Input line too long.\r\n")
    );
    // SASL responses may be longer than 255 octets.
    let mut host = Host::new();
    host.users
        .push(("big", Box::leak(pw.clone().into_boxed_str())));
    let ir = b64(format!("\0big\0{pw}").as_bytes());
    assert_eq!(
        run_with(cfg(), &mut host, &format!("AUTH PLAIN\r\n{ir}\r\n")),
        "+ \r\n+OK Logged in.\r\n"
    );
}

#[test]
fn bare_lf_ends_a_command_line() {
    assert_eq!(run("USER user1\nPASS pw1\nSTAT\n").lines().count(), 3);
}

#[test]
fn pipelined_commands_answered_in_order() {
    let out =
        after_login("STAT\r\nLIST 1\r\nUIDL 1\r\nNOOP\r\nDELE 1\r\nLIST 1\r\nRSET\r\nLIST 1\r\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8);
    assert!(lines[0].starts_with("+OK 3 "));
    assert!(lines[1].starts_with("+OK 1 "));
    assert_eq!(lines[2], "+OK 1 uid-1");
    assert_eq!(lines[3], "+OK");
    assert_eq!(lines[4], "+OK Marked to be deleted.");
    assert_eq!(lines[5], "-ERR Message is deleted.");
    assert_eq!(lines[6], "+OK");
    assert!(lines[7].starts_with("+OK 1 "));
}

#[test]
fn large_pipeline_is_handed_out_in_pieces() {
    // 10 000 NOOPs before login are bad commands; lift their limit here.
    let mut s = session(ServerConfig {
        max_bad_commands_before_login: u32::MAX,
        ..cfg()
    });
    let _ = s.next();
    s.enqueue_input(Duration::ZERO, "NOOP\r\n".repeat(10_000).as_bytes());
    let mut pieces = 0;
    let mut total = 0;
    loop {
        match s.next() {
            Err(Interrupt::Output(b)) => {
                assert!(b.len() < OUTPUT_HIGH_WATER + 100);
                pieces += 1;
                total += b.len();
            }
            Err(Interrupt::NeedInput) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(pieces > 1);
    assert_eq!(
        total,
        10_000 * "-ERR Command not valid in AUTHORIZATION state.\r\n".len()
    );
}

#[test]
fn idle_timeout() {
    let start = Duration::ZERO;
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(1),
        ..cfg()
    };
    let mut s = ServerSession::new(config, start);
    let _ = s.next();
    // Raised to the RFC 1939 minimum of ten minutes.
    assert_eq!(s.poll_timeout(), Some(start + MIN_IDLE_TIMEOUT));
    s.handle_timeout(start + Duration::from_secs(599));
    assert_eq!(s.state(), SessionState::Authorization);
    // Input restarts the timer.
    s.enqueue_input(start + Duration::from_secs(300), b"NOOP\r\n");
    assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(900)));
    let _ = s.next();
    let _ = s.next();
    s.handle_timeout(start + Duration::from_secs(899));
    assert_eq!(s.state(), SessionState::Authorization);
    s.handle_timeout(start + Duration::from_secs(900));
    assert_eq!(s.state(), SessionState::Closed);
    // No response is sent on timeout (RFC 1939 section 3).
    assert_eq!(s.next(), Err(Interrupt::Close));
    assert_eq!(s.poll_timeout(), None);
    s.enqueue_input(Duration::ZERO, b"NOOP\r\n");
    assert_eq!(s.next(), Err(Interrupt::Close));
}

#[test]
fn no_timeout_while_host_is_busy() {
    let start = Duration::ZERO;
    let mut s = ServerSession::new(cfg(), start);
    let _ = s.next();
    s.enqueue_input(Duration::ZERO, LOGIN.as_bytes());
    s.handle_timeout(start);
    let _ = s.next();
    assert!(matches!(s.next(), Ok(Event::Authenticate(_))));
    s.handle_timeout(start + Duration::from_secs(3600));
    assert_eq!(s.state(), SessionState::Authorization);
    s.auth_result(AuthResult::Accepted).unwrap();
    assert!(matches!(s.next(), Ok(Event::OpenMaildrop { .. })));
}

#[test]
fn usage_errors() {
    let mut s = session(cfg());
    assert_eq!(
        s.auth_result(AuthResult::Accepted),
        Err(UsageError::NotAwaiting("Authenticate"))
    );
    assert_eq!(
        s.maildrop_opened(vec![]),
        Err(UsageError::NotAwaiting("OpenMaildrop"))
    );
    assert_eq!(
        s.maildrop_failed(MaildropError::InUse),
        Err(UsageError::NotAwaiting("OpenMaildrop"))
    );
    assert_eq!(
        s.message_data(b"x"),
        Err(UsageError::NotAwaiting("Retrieve"))
    );
    assert_eq!(s.message_end(), Err(UsageError::NotAwaiting("Retrieve")));
    assert_eq!(s.message_failed(), Err(UsageError::NotAwaiting("Retrieve")));
    assert_eq!(
        s.update_result(true),
        Err(UsageError::NotAwaiting("Update"))
    );
    assert_eq!(
        s.tls_established(),
        Err(UsageError::NotAwaiting("StartTls"))
    );
    // A wrong answer does not lose the pending event.
    let _ = s.next();
    s.enqueue_input(Duration::ZERO, LOGIN.as_bytes());
    let _ = s.next();
    assert!(matches!(s.next(), Ok(Event::Authenticate(_))));
    assert_eq!(
        s.update_result(true),
        Err(UsageError::NotAwaiting("Update"))
    );
    assert_eq!(s.next(), Err(Interrupt::AwaitingHost));
    s.auth_result(AuthResult::Accepted).unwrap();
    assert!(matches!(s.next(), Ok(Event::OpenMaildrop { .. })));
    s.maildrop_opened(vec![]).unwrap();
    assert_eq!(s.authenticated_user(), Some("user1"));
}

#[test]
fn transcript_redacts_credentials() {
    let config = ServerConfig {
        transcript: true,
        ..cfg()
    };
    let mut host = Host::new();
    let mut s = session(config);
    host.drive(&mut s);
    let ir = b64(b"\0user1\0pw1");
    s.enqueue_input(
        Duration::ZERO,
        format!("USER user1\r\nPASS bad\r\nAUTH PLAIN {ir}\r\nRETR 1\r\nQUIT\r\n").as_bytes(),
    );
    host.drive(&mut s);
    let mut lines = Vec::new();
    while let Some(l) = s.poll_transcript() {
        lines.push((
            l.to_string(),
            matches!(l.kind, EntryKind::Credentials { .. }),
        ));
    }
    let text: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        text,
        vec![
            format!("S: +OK ready {TS}").as_str(),
            "C: USER user1",
            "S: +OK",
            "C: PASS <redacted>",
            "S: -ERR [AUTH] Authentication failed.",
            "C: AUTH PLAIN <redacted>",
            "S: +OK Logged in.",
            "C: RETR 1",
            &format!("S: +OK {} octets", host.messages[0].len()),
            "S: .",
            "C: QUIT",
            "S: +OK Logging out.",
        ]
    );
    assert!(lines
        .iter()
        .all(|(t, _)| !t.contains("pw1") && !t.contains("bad") && !t.contains(&ir)));
    assert!(lines[3].1 && lines[5].1 && !lines[1].1);
    // SASL continuation lines are redacted too.
    let config = ServerConfig {
        transcript: true,
        ..cfg()
    };
    let mut s = session(config);
    let mut host = Host::new();
    host.drive(&mut s);
    assert_eq!(s.authenticated_user(), None);
    s.enqueue_input(Duration::ZERO, b"USER user1\r\n");
    host.drive(&mut s);
    assert_eq!(s.authenticated_user(), None);
    s.enqueue_input(
        Duration::ZERO,
        format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64(b"user1"), b64(b"pw1")).as_bytes(),
    );
    host.drive(&mut s);
    assert_eq!(s.authenticated_user(), Some("user1"));
    let text: Vec<String> = std::iter::from_fn(|| s.poll_transcript())
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        text[3..],
        [
            "C: AUTH LOGIN",
            "S: + VXNlcm5hbWU6",
            "C: <redacted>",
            "S: + UGFzc3dvcmQ6",
            "C: <redacted>",
            "S: +OK Logged in."
        ]
    );
}

/// A script covering every state, fed whole and in random pieces.
fn script() -> String {
    format!(
        "CAPA\r\nUSER user1\r\nPASS bad\r\nAUTH LOGIN\r\n{}\r\n{}\r\n\
         STAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 2 1\r\nRETR 3\r\nDELE 1\r\nRSET\r\nDELE 2\r\n\
         LIST 2\r\nBAD\r\n{}\r\nQUIT\r\n",
        b64(b"user1"),
        b64(b"pw1"),
        "z".repeat(300)
    )
}

proptest! {
    #[test]
    fn any_input_split_gives_same_output(
        cuts in proptest::collection::vec(1usize..40, 1..200),
        chunk in 1usize..16,
    ) {
        let input = script();
        let mut whole_host = Host::new();
        let whole = run_with(cfg(), &mut whole_host, &input);
        let mut host = Host::new();
        host.chunk = chunk;
        let mut s = session(cfg());
        let mut out = host.drive(&mut s);
        let bytes = input.as_bytes();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - pos);
            s.enqueue_input(Duration::ZERO, &bytes[pos..pos + n]);
            out.extend(host.drive(&mut s));
            pos += n;
            i += 1;
        }
        let greeting = format!("+OK ready {TS}\r\n");
        prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{greeting}{whole}"));
        prop_assert_eq!(&host.updates, &whole_host.updates);
        prop_assert!(host.closed);
    }

    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut host = Host::new();
        let mut s = session(cfg());
        host.drive(&mut s);
        s.enqueue_input(Duration::ZERO, &input);
        host.drive(&mut s);
    }
}

#[test]
fn byte_at_a_time_equals_whole() {
    let input = script();
    let whole = run(&input);
    let mut host = Host::new();
    host.chunk = 1;
    let mut s = session(cfg());
    host.drive(&mut s);
    let mut out = Vec::new();
    for b in input.as_bytes() {
        s.enqueue_input(Duration::ZERO, std::slice::from_ref(b));
        out.extend(host.drive(&mut s));
    }
    assert_eq!(String::from_utf8(out).unwrap(), whole);
    assert!(whole.contains("-ERR Input line too long.\r\n"));
    assert!(whole.ends_with("+OK Logging out.\r\n"));
}

fn budget_cfg() -> ServerConfig {
    ServerConfig {
        login_timeout: Some(Duration::from_secs(60)),
        command_line_timeout: Some(Duration::from_secs(30)),
        ..cfg()
    }
}

/// Feeds `bytes` one octet every `every` from `from`, handling timeouts as
/// a driver would; returns the output and the time it stopped (at the
/// close, or after the last octet).
fn trickle(
    h: &mut Host,
    s: &mut ServerSession,
    from: Duration,
    every: Duration,
    bytes: &[u8],
) -> (String, Duration) {
    let mut out = Vec::new();
    let mut now = from;
    for b in bytes {
        if s.poll_timeout().is_some_and(|d| d <= now) {
            s.handle_timeout(now);
            out.extend(h.drive(s));
            if h.closed {
                return (String::from_utf8(out).unwrap(), now);
            }
        }
        s.enqueue_input(now, std::slice::from_ref(b));
        out.extend(h.drive(s));
        now += every;
    }
    (String::from_utf8(out).unwrap(), now)
}

#[test]
fn login_budget_closes_a_slow_authorization_state() {
    let mut h = Host::new();
    let mut s = ServerSession::new(budget_cfg(), Duration::ZERO);
    h.drive(&mut s);
    assert_eq!(s.poll_timeout(), Some(Duration::from_secs(60)));
    // Commands trickled a byte every 5 s, each line within its 30 s
    // budget, but no login within 60 s of the greeting.
    let (out, end) = trickle(
        &mut h,
        &mut s,
        Duration::from_secs(1),
        Duration::from_secs(5),
        b"NOOP\r\nNOOP\r\nNOOP\r\n",
    );
    assert_eq!(end, Duration::from_secs(61));
    assert!(
        out.ends_with("-ERR Disconnected for inactivity.\r\n"),
        "{out}"
    );
    assert_eq!(s.state(), SessionState::Closed);
}

#[test]
fn command_line_budget_cuts_a_trickled_line() {
    let mut h = Host::new();
    let mut s = ServerSession::new(budget_cfg(), Duration::ZERO);
    h.drive(&mut s);
    let (out, end) = trickle(
        &mut h,
        &mut s,
        Duration::from_secs(2),
        Duration::from_secs(5),
        b"USER a-very-long-user-name\r\n",
    );
    assert_eq!(end, Duration::from_secs(32));
    assert_eq!(out, "-ERR Disconnected for inactivity.\r\n");
    assert!(h.closed);
}

#[test]
fn logged_in_sessions_keep_only_the_idle_timer_and_line_budget() {
    let mut h = Host::new();
    let mut s = ServerSession::new(budget_cfg(), Duration::ZERO);
    h.drive(&mut s);
    s.enqueue_input(Duration::from_secs(10), LOGIN.as_bytes());
    h.drive(&mut s);
    assert_eq!(s.state(), SessionState::Transaction);
    // The login budget no longer applies: the RFC 1939 idle timer does.
    assert_eq!(s.poll_timeout(), Some(Duration::from_secs(610)));
    let (out, _) = trickle(
        &mut h,
        &mut s,
        Duration::from_secs(100),
        Duration::from_secs(5),
        b"NOOP\r\n",
    );
    assert_eq!(out, "+OK\r\n");
    s.enqueue_input(Duration::from_secs(200), b"NO");
    h.drive(&mut s);
    assert_eq!(s.poll_timeout(), Some(Duration::from_secs(230)));
}

// ---- TLS policy and the STLS wall (RFC 2595, RFC 8314) ----

const CAPA_HEAD: &str =
    "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n";

fn apop_line(user: &str, secret: &str) -> String {
    format!("APOP {user} {}\r\n", mail_session::apop_digest(TS, secret))
}

fn cram_line(user: &str, secret: &str) -> String {
    let digest = cram_md5_digest(secret.as_bytes(), TS.as_bytes());
    b64(format!("{user} {digest}").as_bytes())
}

#[test]
fn tls_required_refuses_every_login_before_tls() {
    let required = ServerConfig {
        tls_required: true,
        tls_available: true,
        ..cfg()
    };
    assert_eq!(
        run_with(required.clone(), &mut Host::new(), "CAPA\r\n"),
        format!("{CAPA_HEAD}STLS\r\n.\r\n")
    );
    let plaintext =
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    let no_tls = "-ERR [AUTH] Authentication not allowed until SSL/TLS is enabled.\r\n";
    let ir = b64(b"\0user1\0pw1");
    for (input, want) in [
        ("USER user1\r\n".to_owned(), plaintext),
        ("PASS pw1\r\n".to_owned(), plaintext),
        (apop_line("mrose", "tanstaaf"), no_tls),
        (format!("AUTH PLAIN {ir}\r\n"), no_tls),
        ("AUTH LOGIN\r\n".to_owned(), no_tls),
        ("AUTH CRAM-MD5\r\n".to_owned(), no_tls),
        ("AUTH X-UNKNOWN\r\n".to_owned(), no_tls),
    ] {
        let mut host = Host::new();
        assert_eq!(
            run_with(required.clone(), &mut host, &input),
            want,
            "{input}"
        );
    }
    // The pipelined USER/PASS pair: both refused, nothing reaches the host.
    let out = run_with(required.clone(), &mut Host::new(), LOGIN);
    assert_eq!(out, format!("{plaintext}{plaintext}"));
    // AUTH without a mechanism lists none.
    assert_eq!(
        run_with(required.clone(), &mut Host::new(), "AUTH\r\n"),
        "+OK\r\n.\r\n"
    );
    // After STLS all of it works.
    let out = run_with(required.clone(), &mut Host::new(), "STLS\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
    let mut host = Host::new();
    let mut s = session(required);
    host.drive(&mut s);
    s.enqueue_input(t0(), b"STLS\r\n");
    host.drive(&mut s);
    s.enqueue_input(t0(), b"CAPA\r\n");
    assert_eq!(
        String::from_utf8(host.drive(&mut s)).unwrap(),
        format!("{CAPA_HEAD}USER\r\nSASL PLAIN LOGIN CRAM-MD5\r\n.\r\n")
    );
    s.enqueue_input(t0(), LOGIN.as_bytes());
    assert_eq!(String::from_utf8(host.drive(&mut s)).unwrap(), LOGGED_IN);
}

#[test]
fn implicit_tls_offers_everything_and_no_stls() {
    let pop3s = ServerConfig {
        tls_required: true,
        plaintext_requires_tls: true,
        tls_available: true,
        tls_active: true,
        ..cfg()
    };
    assert!(session(pop3s.clone()).tls_active());
    assert_eq!(
        run_with(pop3s.clone(), &mut Host::new(), "CAPA\r\n"),
        format!("{CAPA_HEAD}USER\r\nSASL PLAIN LOGIN CRAM-MD5\r\n.\r\n")
    );
    assert_eq!(
        run_with(pop3s.clone(), &mut Host::new(), "STLS\r\n"),
        "-ERR TLS is already active.\r\n"
    );
    assert_eq!(run_with(pop3s, &mut Host::new(), LOGIN), LOGGED_IN);
    // pop3s without STLS configured: still "already active", as Dovecot.
    let bare = ServerConfig {
        tls_active: true,
        ..cfg()
    };
    assert_eq!(
        run_with(bare, &mut Host::new(), "STLS\r\n"),
        "-ERR TLS is already active.\r\n"
    );
}

#[test]
fn plaintext_requires_tls_keeps_apop_and_cram_md5() {
    let strict = ServerConfig {
        plaintext_requires_tls: true,
        tls_available: true,
        ..cfg()
    };
    assert_eq!(
        run_with(strict.clone(), &mut Host::new(), "CAPA\r\n"),
        format!("{CAPA_HEAD}SASL CRAM-MD5\r\nSTLS\r\n.\r\n")
    );
    assert_eq!(
        run_with(
            strict.clone(),
            &mut Host::new(),
            &apop_line("mrose", "tanstaaf")
        ),
        "+OK Logged in.\r\n"
    );
    let out = run_with(
        strict.clone(),
        &mut Host::new(),
        &format!("AUTH CRAM-MD5\r\n{}\r\n", cram_line("user1", "pw1")),
    );
    assert_eq!(
        out,
        format!("+ {}\r\n+OK Logged in.\r\n", b64(TS.as_bytes()))
    );
    let refused =
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    assert_eq!(
        run_with(strict.clone(), &mut Host::new(), "AUTH LOGIN\r\n"),
        refused
    );
    assert_eq!(run_with(strict, &mut Host::new(), "PASS pw1\r\n"), refused);
}

#[test]
fn stls_forgets_user_given_in_clear_text() {
    let config = ServerConfig {
        tls_available: true,
        ..cfg()
    };
    let mut host = Host::new();
    let mut s = session(config);
    host.drive(&mut s);
    s.enqueue_input(t0(), b"USER user1\r\n");
    assert_eq!(host.drive(&mut s), b"+OK\r\n");
    s.enqueue_input(t0(), b"STLS\r\n");
    host.drive(&mut s);
    assert!(s.tls_active());
    s.enqueue_input(t0(), b"PASS pw1\r\n");
    assert_eq!(
        String::from_utf8(host.drive(&mut s)).unwrap(),
        "-ERR No username given.\r\n"
    );
}

#[test]
fn stls_refused_in_transaction_and_with_argument() {
    let config = ServerConfig {
        tls_available: true,
        ..cfg()
    };
    let out = run_with(
        config.clone(),
        &mut Host::new(),
        &format!("{LOGIN}STLS\r\n"),
    );
    assert_eq!(
        out,
        format!("{LOGGED_IN}-ERR Command not valid in TRANSACTION state.\r\n")
    );
    let mut host = Host::new();
    let out = run_with(config, &mut host, "STLS now\r\n");
    assert!(out.starts_with("-ERR "), "{out}");
    assert_eq!(host.tls_started, 0);
}

/// Plaintext pipelined behind STLS in one write (the CVE-2011-0411 class
/// Dovecot fixed): never executed, wherever the input is split, even when
/// the host reads more before its handshake.
#[test]
fn stls_injection_discarded_at_every_split() {
    let config = ServerConfig {
        tls_available: true,
        ..cfg()
    };
    let injection = format!("CAPA\r\nSTLS\r\n{LOGIN}DELE 1\r\nQUIT\r\n");
    let injection = injection.as_bytes();
    for split in 0..=injection.len() {
        let (first, rest) = injection.split_at(split);
        let mut s = session(config.clone());
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut pending = false;
        let mut drive = |s: &mut ServerSession, pending: &mut bool, handshake: bool| loop {
            if *pending && handshake {
                s.tls_established().unwrap();
                *pending = false;
            }
            match s.next() {
                Ok(Event::StartTls) => {
                    *pending = true;
                    events.push(Event::StartTls);
                }
                Ok(e) => panic!("split {split}: {e:?}"),
                Err(Interrupt::Output(b)) => out.extend(b),
                Err(Interrupt::AwaitingHost) if !handshake => return,
                Err(Interrupt::NeedInput) => return,
                Err(e) => panic!("split {split}: {e:?}"),
            }
        };
        for b in first.chunks(1) {
            s.enqueue_input(t0(), b);
            drive(&mut s, &mut pending, false);
        }
        s.enqueue_input(t0(), rest);
        drive(&mut s, &mut pending, true);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with("STLS\r\n.\r\n+OK Begin TLS negotiation now.\r\n"),
            "split {split}: {out}"
        );
        assert_eq!(events, vec![Event::StartTls], "split {split}");
        assert!(s.tls_active(), "split {split}");
        assert_eq!(s.state(), SessionState::Authorization, "split {split}");
    }
}
