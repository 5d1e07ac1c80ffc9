use super::*;
use crate::response::ResponseCode;
use crate::server::tests::{cfg, Host, TS};
use crate::server::{ServerSession, SessionState};
use proptest::prelude::*;
use std::time::Duration;

/// Collects client events until it needs input.
fn events(c: &mut ClientSession) -> (Vec<ClientEvent>, Vec<u8>) {
    let mut evs = Vec::new();
    let mut out = Vec::new();
    loop {
        match c.next() {
            Ok(ClientEvent::Failed(e)) => panic!("client error {e}"),
            Ok(e) => evs.push(e),
            Err(Interrupt::Output(b)) => out.extend(b),
            Err(Interrupt::NeedInput) => return (evs, out),
            Err(Interrupt::Close | Interrupt::AwaitingHost) => panic!("client closed"),
        }
    }
}

fn resp(command: Command, r: &str) -> ClientEvent {
    ClientEvent::Response {
        command,
        response: Response::parse(r.as_bytes()).unwrap(),
    }
}

#[test]
fn greeting_and_timestamp() {
    let mut c = ClientSession::new();
    c.enqueue_input(
        Duration::ZERO,
        format!("+OK POP3 server ready {TS}\r\n").as_bytes(),
    );
    let (evs, _) = events(&mut c);
    assert_eq!(
        evs,
        vec![ClientEvent::Greeting {
            response: Response::ok(format!("POP3 server ready {TS}")),
            timestamp: Some(TS.into())
        }]
    );
    assert_eq!(c.timestamp(), Some(TS));
    c.send_apop("mrose", "tanstaaf").unwrap();
    assert_eq!(
        c.next(),
        Err(Interrupt::Output(
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n".to_vec()
        ))
    );
    // No timestamp: APOP cannot be computed.
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK ready <no-at-sign>\r\n");
    let _ = events(&mut c);
    assert_eq!(c.timestamp(), None);
    assert_eq!(c.send_apop("a", "b"), Err(ClientError::NoTimestamp));
}

#[test]
fn pipelined_responses_and_bodies() {
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK hi\r\n");
    let _ = events(&mut c);
    c.send(Command::Stat);
    c.send(Command::List(None));
    c.send(Command::Retr(1));
    c.send(Command::Retr(9));
    c.send(Command::Uidl(None));
    assert_eq!(c.pending(), 5);
    let server = b"+OK 2 30\r\n+OK 2 messages:\r\n1 10\r\n2 20\r\n.\r\n\
        +OK 10 octets\r\n..dot\r\nx\r\n.\r\n-ERR There's no message 9.\r\n\
        +OK\r\n1 a\r\n2 b\r\n.\r\n";
    // Byte at a time gives the same events as all at once.
    let mut all = Vec::new();
    for b in server.iter() {
        c.enqueue_input(Duration::ZERO, std::slice::from_ref(b));
        all.extend(events(&mut c).0);
    }
    let mut c2 = ClientSession::new();
    c2.enqueue_input(Duration::ZERO, b"+OK hi\r\n");
    let _ = events(&mut c2);
    for cmd in [
        Command::Stat,
        Command::List(None),
        Command::Retr(1),
        Command::Retr(9),
        Command::Uidl(None),
    ] {
        c2.send(cmd);
    }
    c2.enqueue_input(Duration::ZERO, server);
    assert_eq!(events(&mut c2).0, all);
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], resp(Command::Stat, "+OK 2 30"));
    let ClientEvent::MultiLine { body, .. } = &all[1] else {
        panic!()
    };
    assert_eq!(parse_list(body), Some(vec![(1, 10), (2, 20)]));
    let ClientEvent::MultiLine { body, .. } = &all[2] else {
        panic!()
    };
    assert_eq!(body, b".dot\r\nx\r\n");
    assert_eq!(all[3], resp(Command::Retr(9), "-ERR There's no message 9."));
    let ClientEvent::MultiLine { body, .. } = &all[4] else {
        panic!()
    };
    assert_eq!(
        parse_uidl(body),
        Some(vec![(1, "a".into()), (2, "b".into())])
    );
    assert_eq!(c.pending(), 0);
    let ClientEvent::Response { response, .. } = &all[0] else {
        panic!()
    };
    assert_eq!(parse_stat(response), Some((2, 30)));
}

#[test]
fn helpers_reject_garbage() {
    assert_eq!(parse_stat(&Response::ok("x y")), None);
    assert_eq!(parse_stat(&Response::ok("1")), None);
    assert_eq!(parse_list(b"1\r\n"), None);
    assert_eq!(parse_list(b"1 x\r\n"), None);
    assert_eq!(parse_uidl(b"x a\r\n"), None);
    assert_eq!(parse_uidl(b"\xff"), None);
}

#[test]
fn errors_are_sticky() {
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"-ERR go away\r\n");
    assert_eq!(
        c.next(),
        Ok(ClientEvent::Failed(ClientError::Refused("go away".into())))
    );
    assert_eq!(c.next(), Err(Interrupt::Close));
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"HELLO\r\n");
    assert_eq!(
        c.next(),
        Ok(ClientEvent::Failed(ClientError::BadResponse(
            ResponseError::BadStatus
        )))
    );
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK\r\n+OK unsolicited\r\n");
    assert!(matches!(c.next(), Ok(ClientEvent::Greeting { .. })));
    assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::Unexpected)));
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, &[b'+'; 2000]);
    assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::LineTooLong)));
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK\r\n+ abc\r\n");
    let _ = c.next();
    assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::Unexpected)));
    let mut c = ClientSession::new();
    c.max_body = 10;
    c.enqueue_input(Duration::ZERO, b"+OK\r\n");
    let _ = c.next();
    c.send(Command::Retr(1));
    let _ = c.next();
    c.enqueue_input(Duration::ZERO, b"+OK\r\n0123456789abcdef\r\n.\r\n");
    assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::BodyTooLarge)));
}

#[test]
fn early_close_and_timeout_fail_only_when_answers_are_due() {
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK hi\r\n");
    assert!(matches!(c.next(), Ok(ClientEvent::Greeting { .. })));
    // Nothing due: the end of input just closes.
    c.input_closed();
    assert_eq!(c.next(), Err(Interrupt::Close));

    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK hi\r\n+OK 1 2\r\n");
    assert!(matches!(c.next(), Ok(ClientEvent::Greeting { .. })));
    c.send(Command::Stat);
    c.send(Command::Noop);
    assert!(matches!(c.next(), Err(Interrupt::Output(_))));
    c.input_closed();
    // The buffered answer still comes; the missing one is a failure.
    assert!(matches!(c.next(), Ok(ClientEvent::Response { .. })));
    assert_eq!(
        c.next(),
        Ok(ClientEvent::Failed(ClientError::ConnectionClosed))
    );
    assert_eq!(c.next(), Err(Interrupt::Close));

    let mut c = ClientSession::new();
    assert_eq!(c.poll_timeout(), Some(Duration::from_secs(600)));
    c.handle_timeout(Duration::from_secs(599));
    assert_eq!(c.next(), Err(Interrupt::NeedInput));
    c.handle_timeout(Duration::from_secs(600));
    assert_eq!(c.next(), Ok(ClientEvent::Failed(ClientError::Timeout)));
    assert_eq!(c.poll_timeout(), None);
}

/// Runs client and server against each other in memory until both wait.
fn pump(s: &mut ServerSession, host: &mut Host, c: &mut ClientSession) -> Vec<ClientEvent> {
    let mut evs = Vec::new();
    loop {
        let (e, to_server) = events(c);
        evs.extend(e);
        let to_client = host.drive(s);
        if to_server.is_empty() && to_client.is_empty() {
            return evs;
        }
        s.enqueue_input(Duration::ZERO, &to_server);
        c.enqueue_input(Duration::ZERO, &to_client);
    }
}

fn body_of(e: &ClientEvent) -> &[u8] {
    match e {
        ClientEvent::MultiLine { body, .. } => body,
        other => panic!("not a body: {other:?}"),
    }
}

#[test]
fn client_against_server_retrieves_byte_exact() {
    let mut host = Host::new();
    host.messages = vec![
        b"Subject: a\r\n\r\n.\r\n..\r\n.x\r\nend\r\n".to_vec(),
        b"".to_vec(),
        b"From: b\r\n\r\n\r\n.\r\n\r\n".to_vec(),
    ];
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    let mut c = ClientSession::new();
    let evs = pump(&mut s, &mut host, &mut c);
    assert!(matches!(&evs[0], ClientEvent::Greeting { timestamp: Some(t), .. } if t == TS));
    c.send_apop("user1", "pw1").unwrap();
    c.send(Command::Stat);
    c.send(Command::Uidl(None));
    for i in 1..=3 {
        c.send(Command::Retr(i));
    }
    c.send(Command::Top { msg: 1, lines: 1 });
    c.send(Command::Dele(2));
    c.send(Command::Rset);
    c.send(Command::Dele(1));
    c.send(Command::Quit);
    let evs = pump(&mut s, &mut host, &mut c);
    assert_eq!(evs.len(), 11, "{evs:?}");
    assert_eq!(
        evs[0],
        resp(
            Command::Apop {
                name: "user1".into(),
                digest: crate::apop_digest(TS, "pw1")
            },
            "+OK Logged in."
        )
    );
    let ClientEvent::Response { response, .. } = &evs[1] else {
        panic!()
    };
    let total: usize = host.messages.iter().map(Vec::len).sum();
    assert_eq!(parse_stat(response), Some((3, total as u64)));
    assert_eq!(
        parse_uidl(body_of(&evs[2])).unwrap(),
        vec![
            (1, "uid-1".into()),
            (2, "uid-2".into()),
            (3, "uid-3".into())
        ]
    );
    for i in 0..3 {
        assert_eq!(
            body_of(&evs[3 + i]),
            host.messages[i].as_slice(),
            "message {}",
            i + 1
        );
    }
    assert_eq!(body_of(&evs[6]), b"Subject: a\r\n\r\n.\r\n");
    assert_eq!(evs[7], resp(Command::Dele(2), "+OK Marked to be deleted."));
    assert_eq!(evs[8], resp(Command::Rset, "+OK"));
    assert_eq!(evs[10], resp(Command::Quit, "+OK Logging out."));
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(host.updates.len(), 1);
    assert_eq!(host.updates[0].len(), 1);
    assert_eq!(host.updates[0][0].uid, "uid-1");
}

#[test]
fn client_user_pass_and_sasl_against_server() {
    let mut host = Host::new();
    let mut s = ServerSession::new(cfg(), Duration::ZERO);
    let mut c = ClientSession::new();
    pump(&mut s, &mut host, &mut c);
    c.send(Command::User("user1".into()));
    c.send(Command::Pass(crate::Secret::new("wrong".into())));
    let evs = pump(&mut s, &mut host, &mut c);
    assert_eq!(evs.len(), 2);
    let ClientEvent::Response { response, .. } = &evs[1] else {
        panic!()
    };
    assert_eq!(response.code, Some(ResponseCode::Auth));
    c.send(Command::Auth {
        mechanism: Some("LOGIN".into()),
        initial_response: None,
    });
    let evs = pump(&mut s, &mut host, &mut c);
    assert_eq!(evs, vec![ClientEvent::Challenge("VXNlcm5hbWU6".into())]);
    c.send_sasl_response("dXNlcjE=");
    let evs = pump(&mut s, &mut host, &mut c);
    assert_eq!(evs, vec![ClientEvent::Challenge("UGFzc3dvcmQ6".into())]);
    c.send_sasl_response("cHcx");
    let evs = pump(&mut s, &mut host, &mut c);
    assert!(
        matches!(&evs[..], [ClientEvent::Response { response, .. }] if response.text == "Logged in.")
    );
    c.send(Command::Capa);
    let evs = pump(&mut s, &mut host, &mut c);
    assert!(std::str::from_utf8(body_of(&evs[0]))
        .unwrap()
        .contains("PIPELINING\r\n"));
}

proptest! {
    #[test]
    fn any_message_round_trips(
        lines in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'x'), any::<u8>()], 0..12),
            0..12),
        chunk in 1usize..9,
        top in 0u32..4,
    ) {
        let msg: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
        let mut host = Host::new();
        host.messages = vec![msg.clone()];
        host.chunk = chunk;
        let mut s = ServerSession::new(cfg(), Duration::ZERO);
        let mut c = ClientSession::new();
        pump(&mut s, &mut host, &mut c);
        c.send(Command::User("user1".into()));
        c.send(Command::Pass(crate::Secret::new("pw1".into())));
        c.send(Command::Retr(1));
        c.send(Command::Top { msg: 1, lines: top });
        let evs = pump(&mut s, &mut host, &mut c);
        prop_assert_eq!(evs.len(), 4);
        prop_assert_eq!(body_of(&evs[2]), msg.as_slice());
        let mut f = crate::TopFilter::new(top);
        prop_assert_eq!(body_of(&evs[3]), f.filter(&msg));
    }
}

proptest! {
    #[test]
    fn client_any_input_split_gives_same_events(cuts in proptest::collection::vec(1usize..20, 1..50)) {
        let server: &[u8] = b"+OK hi <1.2@h>\r\n+OK 2 30\r\n+OK 2 messages:\r\n1 10\r\n2 20\r\n.\r\n\
            +OK 10 octets\r\n..dot\r\n.\rx\r\n.\r\n-ERR [SYS/TEMP] no\r\n+ Y2hhbA==\r\n+OK\r\n";
        let cmds = || {
            vec![
                Command::Stat,
                Command::List(None),
                Command::Retr(1),
                Command::Retr(9),
                Command::Auth { mechanism: Some("PLAIN".into()), initial_response: None },
            ]
        };
        let mut whole = ClientSession::new();
        cmds().into_iter().for_each(|c| whole.send(c));
        whole.enqueue_input(Duration::ZERO, server);
        let expected = events(&mut whole).0;
        prop_assert_eq!(expected.len(), 7);
        let mut c = ClientSession::new();
        cmds().into_iter().for_each(|cmd| c.send(cmd));
        let mut got = Vec::new();
        let (mut pos, mut i) = (0, 0);
        while pos < server.len() {
            let n = cuts[i % cuts.len()].min(server.len() - pos);
            c.enqueue_input(Duration::ZERO, &server[pos..pos + n]);
            got.extend(events(&mut c).0);
            pos += n;
            i += 1;
        }
        prop_assert_eq!(got, expected);
    }
}

// ---- STLS (RFC 2595 section 4) ----

/// Events until the client needs input or waits for the handshake.
fn events_tls(c: &mut ClientSession) -> (Vec<ClientEvent>, Vec<u8>, bool) {
    let mut evs = Vec::new();
    let mut out = Vec::new();
    loop {
        match c.next() {
            Ok(e) => evs.push(e),
            Err(Interrupt::Output(b)) => out.extend(b),
            Err(Interrupt::NeedInput) => return (evs, out, false),
            Err(Interrupt::AwaitingHost) => return (evs, out, true),
            Err(Interrupt::Close) => panic!("client closed"),
        }
    }
}

#[test]
fn stls_holds_later_commands_and_discards_clear_text_after_ok() {
    let server: &[u8] = b"+OK Begin TLS negotiation now.\r\n+OK injected\r\n";
    for bytewise in [false, true] {
        let mut c = ClientSession::new();
        c.enqueue_input(Duration::ZERO, b"+OK ready\r\n");
        let _ = events(&mut c);
        c.send(Command::Stls);
        c.send(Command::User("user1".into()));
        c.send(Command::Capa);
        // Only STLS goes out in clear text.
        assert_eq!(c.next(), Err(Interrupt::Output(b"STLS\r\n".to_vec())));
        assert_eq!(c.pending(), 1);
        let mut evs = Vec::new();
        let mut waiting = false;
        let pieces: Vec<&[u8]> = if bytewise {
            server.chunks(1).collect()
        } else {
            vec![server]
        };
        for p in pieces {
            c.enqueue_input(Duration::ZERO, p);
            let (e, out, w) = events_tls(&mut c);
            assert!(out.is_empty());
            evs.extend(e);
            waiting = w;
        }
        assert!(waiting, "bytewise {bytewise}");
        assert_eq!(
            evs,
            vec![resp(Command::Stls, "+OK Begin TLS negotiation now.")]
        );
        assert_eq!(c.poll_timeout(), None);
        assert!(!c.tls_active());
        c.tls_established().unwrap();
        assert!(c.tls_active());
        assert_eq!(
            c.next(),
            Err(Interrupt::Output(b"USER user1\r\nCAPA\r\n".to_vec()))
        );
        // "+OK injected" was dropped: the next answer is the real one.
        assert_eq!(c.next(), Err(Interrupt::NeedInput));
        c.enqueue_input(Duration::ZERO, b"+OK\r\n");
        assert_eq!(c.next(), Ok(resp(Command::User("user1".into()), "+OK")));
    }
}

#[test]
fn stls_refused_releases_held_commands() {
    let mut c = ClientSession::new();
    c.enqueue_input(Duration::ZERO, b"+OK ready\r\n");
    let _ = events(&mut c);
    assert_eq!(
        c.tls_established(),
        Err(UsageError::NotAwaiting("StartTls"))
    );
    c.send(Command::Stls);
    c.send(Command::Noop);
    assert_eq!(c.next(), Err(Interrupt::Output(b"STLS\r\n".to_vec())));
    c.enqueue_input(Duration::ZERO, b"-ERR TLS support isn't enabled.\r\n");
    let (evs, out) = events(&mut c);
    assert_eq!(
        evs,
        vec![resp(Command::Stls, "-ERR TLS support isn't enabled.")]
    );
    assert_eq!(out, b"NOOP\r\n");
    assert!(!c.tls_active());
    assert_eq!(
        c.tls_established(),
        Err(UsageError::NotAwaiting("StartTls"))
    );
    assert!(ClientSession::new_tls().tls_active());
    assert!(mail_session::Session::tls_active(&ClientSession::new_tls()));
}

#[test]
fn client_stls_against_server_then_login() {
    let config = crate::ServerConfig {
        tls_available: true,
        tls_required: true,
        ..cfg()
    };
    let mut host = Host::new();
    let mut s = ServerSession::new(config, Duration::ZERO);
    let mut c = ClientSession::new();
    pump(&mut s, &mut host, &mut c);
    c.send(Command::Stls);
    c.send(Command::User("user1".into()));
    c.send(Command::Pass(crate::Secret::new("pw1".into())));
    let mut evs = Vec::new();
    loop {
        let (e, to_server, waiting) = events_tls(&mut c);
        evs.extend(e);
        if waiting {
            // The host's handshake: the server side completes in drive().
            assert!(s.tls_active());
            c.tls_established().unwrap();
            continue;
        }
        let to_client = host.drive(&mut s);
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        s.enqueue_input(Duration::ZERO, &to_server);
        c.enqueue_input(Duration::ZERO, &to_client);
    }
    assert!(c.tls_active());
    assert_eq!(s.state(), SessionState::Transaction);
    assert!(
        matches!(evs.last(), Some(ClientEvent::Response { response, .. }) if response.text == "Logged in."),
        "{evs:?}"
    );
}
