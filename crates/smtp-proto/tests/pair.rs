//! Client and server sessions against each other in memory.

use std::time::Duration;

use smtp_proto::{
    AuthResult, ClientConfig, ClientEvent, ClientSession, ClientTls, Delivery, Envelope, Event,
    Interrupt, Mechanism, OutgoingMessage, Secret, ServerConfig, ServerSession, Verdict,
};

/// Runs both sessions to completion, moving bytes between them in pieces
/// of at most `mtu` octets. Returns client events and delivered bodies.
fn pair(
    server_cfg: ServerConfig,
    client_cfg: ClientConfig,
    msgs: Vec<OutgoingMessage>,
    mtu: usize,
) -> (Vec<ClientEvent>, Vec<Vec<u8>>) {
    let (events, bodies, _) = pair_envelopes(server_cfg, client_cfg, msgs, mtu);
    (events, bodies)
}

/// [`pair`], also returning the server's envelopes. A STARTTLS
/// "handshake" happens once both sides asked for it: each then calls
/// `tls_established` (the bytes in flight were all delivered before).
fn pair_envelopes(
    server_cfg: ServerConfig,
    client_cfg: ClientConfig,
    msgs: Vec<OutgoingMessage>,
    mtu: usize,
) -> (Vec<ClientEvent>, Vec<Vec<u8>>, Vec<Envelope>) {
    let now = Duration::ZERO;
    let (mut server_tls, mut client_tls) = (false, false);
    let mut envelopes = Vec::new();
    let mut server = ServerSession::new(server_cfg, now);
    let mut client = ClientSession::new(client_cfg, msgs, now);
    let (mut to_server, mut to_client) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut events, mut bodies, mut body) = (Vec::new(), Vec::new(), Vec::new());
    let (mut server_done, mut client_done) = (false, false);
    for _ in 0..100_000 {
        if server_done && client_done {
            return (events, bodies, envelopes);
        }
        if server_tls && client_tls && to_server.is_empty() && to_client.is_empty() {
            server.tls_established().unwrap();
            client.tls_established().unwrap();
            (server_tls, client_tls) = (false, false);
        }
        // Server turn.
        if !server_done {
            match server.next() {
                Ok(Event::Mail { .. } | Event::Rcpt { .. } | Event::Vrfy { .. }) => {
                    server.decide(Verdict::Accept).unwrap()
                }
                Ok(Event::Auth(c)) => server
                    .auth_result(if c.verify_password("secret") {
                        AuthResult::Success
                    } else {
                        AuthResult::Failure
                    })
                    .unwrap(),
                Ok(Event::MessageStart) => body.clear(),
                Ok(Event::BodyChunk(b)) => body.extend_from_slice(&b),
                Ok(Event::StartTls) => server_tls = true,
                Ok(Event::MessageEnd(env)) => {
                    envelopes.push(env);
                    bodies.push(std::mem::take(&mut body));
                    server
                        .message_result(Delivery::Accepted {
                            queue_id: "Q".into(),
                        })
                        .unwrap();
                }
                Ok(_) => {}
                Err(Interrupt::Output(b)) => to_client.extend_from_slice(&b),
                Err(Interrupt::NeedInput) => {
                    if !to_server.is_empty() {
                        let n = mtu.min(to_server.len());
                        server.enqueue_input(now, &to_server[..n]);
                        to_server.drain(..n);
                    }
                }
                Err(Interrupt::Close) => server_done = true,
                Err(Interrupt::AwaitingHost) if server_tls => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        // Client turn.
        if !client_done {
            match client.next() {
                Ok(e) => {
                    client_tls |= e == ClientEvent::StartTls;
                    events.push(e)
                }
                Err(Interrupt::Output(b)) => to_server.extend_from_slice(&b),
                Err(Interrupt::NeedInput) => {
                    if !to_client.is_empty() {
                        let n = mtu.min(to_client.len());
                        client.enqueue_input(now, &to_client[..n]);
                        to_client.drain(..n);
                    }
                }
                Err(Interrupt::Close) => client_done = true,
                Err(Interrupt::AwaitingHost) if client_tls => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    panic!("no progress: {events:?}");
}

fn tricky_body() -> Vec<u8> {
    let mut b =
        b"From: user2@mail.csuvnetwork.com\r\nTo: user1@csuvnetwork.com\r\nSubject: dots\r\n\r\n"
            .to_vec();
    b.extend_from_slice(b".\r\n..\r\n.leading dot\r\n...three\r\nmiddle . dot\r\n \r\n.\r\n");
    for i in 0..200 {
        b.extend_from_slice(format!("line {i} {}\r\n", "x".repeat(i % 90)).as_bytes());
    }
    b.extend_from_slice(b".\r\nlast\r\n");
    b
}

#[test]
fn pair_delivers_dot_stuffed_message_byte_exact() {
    for mtu in [1, 7, 64, 1500, 1 << 20] {
        let msgs = vec![
            OutgoingMessage {
                from: "user2@mail.csuvnetwork.com".into(),
                to: vec!["user1@csuvnetwork.com".into()],
                body: tricky_body(),
                ..Default::default()
            },
            OutgoingMessage {
                from: String::new(),
                to: vec!["postmaster".into()],
                body: b"second\r\n".to_vec(),
                ..Default::default()
            },
        ];
        let mut scfg = ServerConfig::new("mail.csuvnetwork.com");
        scfg.auth_mechanisms = vec![Mechanism::Login];
        scfg.auth_required = true;
        let mut ccfg = ClientConfig::new("client.test");
        ccfg.credentials = Some(("user2".into(), Secret::new("secret".into())));
        let (events, bodies) = pair(scfg, ccfg, msgs, mtu);
        assert_eq!(
            bodies,
            vec![tricky_body(), b"second\r\n".to_vec()],
            "mtu {mtu}"
        );
        assert!(events.contains(&ClientEvent::Authenticated));
        let accepted = events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Message(r) if r.accepted()))
            .count();
        assert_eq!(accepted, 2);
    }
}

#[test]
fn pair_without_pipelining_and_auth_failure() {
    let mut ccfg = ClientConfig::new("c");
    ccfg.pipelining = false;
    let msgs = vec![OutgoingMessage {
        from: "a@b.c".into(),
        to: vec!["d@e.f".into(), "g@e.f".into()],
        body: b".x\r\n".to_vec(),
        ..Default::default()
    }];
    let (events, bodies) = pair(ServerConfig::new("mx"), ccfg, msgs.clone(), 3);
    assert_eq!(bodies, vec![b".x\r\n".to_vec()]);
    let Some(ClientEvent::Message(r)) =
        events.iter().find(|e| matches!(e, ClientEvent::Message(_)))
    else {
        panic!()
    };
    assert_eq!(r.recipients.len(), 2);
    assert!(r.recipients.iter().all(|(_, rep)| rep.code() == 250));
    // Wrong password: the client gives up, nothing delivered.
    let mut scfg = ServerConfig::new("mx");
    scfg.auth_mechanisms = vec![Mechanism::Plain];
    let mut ccfg = ClientConfig::new("c");
    ccfg.credentials = Some(("user2".into(), Secret::new("nope".into())));
    let (events, bodies) = pair(scfg, ccfg, msgs, 1500);
    assert!(bodies.is_empty());
    assert!(matches!(events.last(), Some(ClientEvent::Failed(_))));
}

#[test]
fn pair_utf8_and_8bit() {
    let body = "Subject: 你好\r\n\r\n测试 ü\r\n".as_bytes().to_vec();
    let msgs = vec![OutgoingMessage {
        from: "用户@例子.广告".into(),
        to: vec!["δοκιμή@παράδειγμα.δοκιμή".into()],
        body: body.clone(),
        ..Default::default()
    }];
    let (events, bodies) = pair(ServerConfig::new("mx"), ClientConfig::new("c"), msgs, 5);
    assert_eq!(bodies, vec![body]);
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::Message(r) if r.accepted())));
}

#[test]
fn pair_starttls_then_auth_under_the_strict_policy() {
    // Submission as Postfix with smtpd_tls_security_level = encrypt and
    // smtpd_tls_auth_only; the client as smtp_tls_security_level = encrypt.
    let mut scfg = ServerConfig::new("mx");
    scfg.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login];
    scfg.auth_required = true;
    scfg.tls_available = true;
    scfg.tls_required = true;
    scfg.plaintext_auth_requires_tls = true;
    for (tls, mtu) in [
        (ClientTls::Required, 1),
        (ClientTls::Required, 1500),
        (ClientTls::Opportunistic, 7),
    ] {
        let mut ccfg = ClientConfig::new("c");
        ccfg.tls = tls;
        ccfg.credentials = Some(("user2".into(), Secret::new("secret".into())));
        let msgs = vec![OutgoingMessage {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            body: tricky_body(),
            ..Default::default()
        }];
        let (events, bodies, envs) = pair_envelopes(scfg.clone(), ccfg, msgs, mtu);
        assert_eq!(bodies, vec![tricky_body()], "{tls:?} {mtu}");
        assert_eq!(events.first(), Some(&ClientEvent::StartTls));
        assert!(events.contains(&ClientEvent::Authenticated));
        assert_eq!(envs.len(), 1);
        assert!(envs[0].tls);
        assert_eq!(envs[0].protocol(), "ESMTPSA");
    }
    // Without STARTTLS at the client, the strict server delivers nothing.
    let mut ccfg = ClientConfig::new("c");
    ccfg.credentials = Some(("user2".into(), Secret::new("secret".into())));
    let msgs = vec![OutgoingMessage {
        from: "a@b.c".into(),
        to: vec!["d@e.f".into()],
        body: b"x\r\n".to_vec(),
        ..Default::default()
    }];
    let (events, bodies) = pair(scfg, ccfg, msgs, 1500);
    assert!(bodies.is_empty());
    assert!(matches!(events.last(), Some(ClientEvent::Failed(_))));
}
