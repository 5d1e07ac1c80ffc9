//! Delivery attempts against a real smtpd on loopback as the remote MTA.

use std::time::Duration;

use netkit::Service;
use outbound::deliver::{
    deliver, deliver_then_close, unauthenticated_connector, ClientSettings, Message, RcptResult,
    Verdict,
};
use smtp_proto::ClientTls;

mod common;
use common::hop;
use common::{closed_port, maildir_file, remote};

fn rcpts(list: &[&str]) -> Vec<(usize, String)> {
    list.iter()
        .enumerate()
        .map(|(i, a)| (i, a.to_string()))
        .collect()
}

const BODY: &[u8] = b"Subject: from afar\r\nFrom: me@example.net\r\n\r\nhello\r\n.dot\r\n";

fn settings() -> ClientSettings {
    let mut s = ClientSettings::new(
        "mail.example.net",
        Some(unauthenticated_connector().unwrap()),
    );
    s.connect_timeout = Duration::from_secs(5);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_verdicts_over_opportunistic_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(dir.path(), "").await;
    // The first host is down: the next one is tried.
    let hops = [
        hop("down.example.org", closed_port()),
        hop("mx.example.org", addr),
    ];
    let to = rcpts(&["a@example.org", "nobody@example.org", "b@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let r: Vec<RcptResult> = deliver(&hops, msg, &settings()).await;
    let verdicts: Vec<Verdict> = r.iter().map(|x| x.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Sent, Verdict::Permanent, Verdict::Sent],
        "{r:#?}"
    );
    assert_eq!(r[1].status, "5.1.1");
    assert!(
        r[1].text
            .starts_with("host mx.example.org[127.0.0.1] said: 550 5.1.1 ")
            && r[1].text.ends_with("(in reply to RCPT TO command)"),
        "{}",
        r[1].text
    );
    assert!(
        r[0].text.contains("250 2.0.0 Ok: queued as ")
            && r[0].text.ends_with("(in reply to end of DATA command)")
    );
    assert_eq!(
        r[0].remote.as_deref(),
        Some(format!("mx.example.org[127.0.0.1]:{}", addr.port()).as_str())
    );
    running.stop().await;
    // Dot-stuffing survived, and the hop was TLS without AUTH.
    let text = maildir_file(dir.path(), "a").await;
    assert!(text.ends_with("\nhello\n.dot\n"), "{text}");
    assert!(text.contains("with ESMTPS id"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_reachable_defers_everyone() {
    let down = closed_port();
    let hops = [hop("mx.example.org", down)];
    let to = rcpts(&["a@example.org", "b@example.org"]);
    let msg = Message {
        sender: "",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let r = deliver(&hops, msg, &settings()).await;
    assert_eq!(r.len(), 2);
    for x in &r {
        assert_eq!(x.verdict, Verdict::Temporary);
        assert_eq!(x.status, "4.4.1");
        assert_eq!(
            x.text,
            format!(
                "connect to mx.example.org[127.0.0.1]:{}: Connection refused",
                down.port()
            )
        );
    }
    let r = deliver(&[], msg, &settings()).await;
    assert!(r.iter().all(|x| x.verdict == Verdict::Temporary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_refusal_touches_only_its_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(dir.path(), "recipient_limit = 2").await;
    let hops = [hop("mx.example.org", addr)];
    let to = rcpts(&["a@example.org", "b@example.org", "a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let r = deliver(&hops, msg, &settings()).await;
    let verdicts: Vec<Verdict> = r.iter().map(|x| x.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Sent, Verdict::Sent, Verdict::Temporary],
        "{r:#?}"
    );
    assert!(r[2].status.starts_with("4."), "{:?}", r[2]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_without_starttls_defers() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(dir.path(), "tls_security_level = \"none\"").await;
    let hops = [hop("mx.example.org", addr)];
    let to = rcpts(&["a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let mut s = settings();
    s.tls = ClientTls::Required;
    let r = deliver(&hops, msg, &s).await;
    assert_eq!(r[0].verdict, Verdict::Temporary);
    assert_eq!(r[0].status, "4.7.4");
    assert!(
        r[0].text.contains("TLS is required, but was not offered"),
        "{}",
        r[0].text
    );
    // Opportunistic: plaintext is fine.
    let r = deliver(&hops, msg, &settings()).await;
    assert_eq!(r[0].verdict, Verdict::Sent, "{r:?}");
    running.stop().await;
}

/// A remote that takes the message and then never answers QUIT: the
/// results come back at its `250`, not after QUIT's 5-minute timeout, so
/// the queue records the delivery at once (a crash meanwhile would send
/// the message again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_before_quit() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = sock.into_split();
        let mut lines = BufReader::new(rd).lines();
        wr.write_all(b"220 silent.example.org\r\n").await.unwrap();
        let mut in_data = false;
        let mut quit_tx = Some(quit_tx);
        while let Some(line) = lines.next_line().await.unwrap() {
            let reply: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                b"250 2.0.0 Ok: queued\r\n"
            } else if line.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line.starts_with("QUIT") {
                // Never answered; the connection stays open.
                if let Some(tx) = quit_tx.take() {
                    let _ = tx.send(());
                }
                continue;
            } else {
                b"250 silent.example.org\r\n"
            };
            wr.write_all(reply).await.unwrap();
        }
    });
    let hops = [hop("silent.example.org", addr)];
    let to = rcpts(&["a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let (r, closing) = tokio::time::timeout(
        Duration::from_secs(10),
        deliver_then_close(&hops, msg, &settings()),
    )
    .await
    .expect("results before QUIT is answered");
    assert_eq!(r[0].verdict, Verdict::Sent, "{r:?}");
    // QUIT goes out only when the caller finishes the session.
    let closing = closing.expect("the session is still open");
    let finishing = tokio::spawn(closing.finish());
    tokio::time::timeout(Duration::from_secs(10), quit_rx)
        .await
        .unwrap()
        .unwrap();
    finishing.abort();
    server.abort();
}

/// A scripted next hop on loopback: greets, answers EHLO with `caps`,
/// `250` to everything else (`354` to DATA) and records what it got.
async fn sink(
    caps: &'static [&'static str],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut got = String::new();
        w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await.unwrap() == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            got.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    w.write_all(b"250 2.0.0 Ok: queued\r\n").await.unwrap();
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply = match verb.as_str() {
                "EHLO" => {
                    let mut r = String::from("250-sink\r\n");
                    for (k, c) in caps.iter().enumerate() {
                        let sep = if k + 1 == caps.len() { ' ' } else { '-' };
                        r.push_str(&format!("250{sep}{c}\r\n"));
                    }
                    if caps.is_empty() {
                        r = "250 sink\r\n".into();
                    }
                    r
                }
                "DATA" => {
                    in_data = true;
                    "354 go\r\n".into()
                }
                "QUIT" => {
                    w.write_all(b"221 Bye\r\n").await.unwrap();
                    break;
                }
                // A pseudo-capability makes the sink refuse AUTH.
                "AUTH" if caps.contains(&"X-REFUSE-AUTH") => {
                    "535 5.7.8 Error: authentication failed\r\n".into()
                }
                "AUTH" => "235 2.7.0 Authentication successful\r\n".into(),
                _ => "250 Ok\r\n".into(),
            };
            w.write_all(reply.as_bytes()).await.unwrap();
        }
        got
    });
    (addr, task)
}

fn envelope() -> mailstore::outbound::OutEnvelope {
    use mailstore::outbound::{OutEnvelope, OutRcpt, Ret};
    OutEnvelope {
        id: "Q1".into(),
        sender: "me@example.net".into(),
        arrival: std::time::SystemTime::now(),
        envid: Some("QQ314159".into()),
        ret: Some(Ret::Hdrs),
        recipients: vec![
            OutRcpt {
                address: "a@example.org".into(),
                notify: Some("failure,success".into()),
                orcpt: Some("rfc822;A+2Bx@example.org".into()),
            },
            OutRcpt::new("b@example.org"),
            OutRcpt {
                address: "c@example.org".into(),
                notify: Some("bogus".into()),
                orcpt: None,
            },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_go_to_a_dsn_next_hop_only() {
    let env = envelope();
    let to = rcpts(&["a@example.org", "b@example.org", "c@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: Some(&env),
        plaintext_fallback: false,
    };
    let (addr, got) = sink(&["PIPELINING", "DSN"]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    assert!(r.iter().all(|x| x.verdict == Verdict::Sent), "{r:#?}");
    assert!(r.iter().all(|x| !x.relayed), "{r:#?}");
    let got = got.await.unwrap();
    assert!(
        got.contains(
            "MAIL FROM:<me@example.net> RET=HDRS ENVID=QQ314159\r\n\
             RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bx@example.org\r\n\
             RCPT TO:<b@example.org> ORCPT=rfc822;b@example.org\r\n\
             RCPT TO:<c@example.org> ORCPT=rfc822;c@example.org\r\n"
        ),
        "{got}"
    );
    let (addr, got) = sink(&["PIPELINING"]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    // Without DSN at the next hop the deliveries are "relayed".
    assert!(
        r.iter().all(|x| x.verdict == Verdict::Sent && x.relayed),
        "{r:#?}"
    );
    let got = got.await.unwrap();
    assert!(
        got.contains("MAIL FROM:<me@example.net>\r\nRCPT TO:<a@example.org>\r\n"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_big_or_needing_smtputf8_bounces_without_mail() {
    let to = rcpts(&["a@example.org", "b@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let (addr, got) = sink(&["SIZE 10"]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    assert_eq!(r.len(), 2);
    for x in &r {
        assert_eq!(
            (x.verdict, x.status.as_str()),
            (Verdict::Permanent, "5.3.4")
        );
        assert_eq!(
            x.text,
            format!(
                "message size {} exceeds size limit 10 of server mx.example.org[127.0.0.1]",
                BODY.len()
            )
        );
    }
    let got = got.await.unwrap();
    assert!(!got.contains("MAIL"), "{got}");

    let to = rcpts(&["a@example.org", "用户@example.org"]);
    let msg = Message {
        recipients: &to,
        ..msg
    };
    let (addr, got) = sink(&["8BITMIME"]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    for x in &r {
        assert_eq!(
            (x.verdict, x.status.as_str()),
            (Verdict::Permanent, "5.6.7")
        );
        assert_eq!(
            x.text,
            "SMTPUTF8 is required, but was not offered by host mx.example.org[127.0.0.1]"
        );
    }
    assert!(!got.await.unwrap().contains("MAIL"));
    // Offered: sent with SMTPUTF8.
    let (addr, got) = sink(&["8BITMIME", "SMTPUTF8"]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    assert!(r.iter().all(|x| x.verdict == Verdict::Sent), "{r:#?}");
    assert!(got
        .await
        .unwrap()
        .contains("MAIL FROM:<me@example.net> SMTPUTF8\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_goes_as_8bitmime_or_quoted_printable() {
    let body = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n";
    let to = rcpts(&["a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: body.as_bytes(),
        envelope: None,
        plaintext_fallback: false,
    };
    let (addr, got) = sink(&["8BITMIME"]).await;
    deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    let got = got.await.unwrap();
    assert!(
        got.contains("MAIL FROM:<me@example.net> BODY=8BITMIME\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\n\r\nGrüße\r\n.\r\n"), "{got}");
    let (addr, got) = sink(&[]).await;
    let r = deliver(&[hop("mx.example.org", addr)], msg, &settings()).await;
    assert_eq!(r[0].verdict, Verdict::Sent);
    let got = got.await.unwrap();
    assert!(got.contains("MAIL FROM:<me@example.net>\r\n"), "{got}");
    assert!(
        got.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n.\r\n"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_passwords_per_hop_and_a_refusal_defers() {
    let to = rcpts(&["a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let (addr, got) = sink(&["AUTH PLAIN LOGIN"]).await;
    let mut s = settings();
    let map: mailstore::saslpass::PasswordMap =
        format!("[mx.example.org]:{} relay:s3cret\n", addr.port())
            .parse()
            .unwrap();
    s.passwords = Some(std::sync::Arc::new(map));
    let r = deliver(&[hop("mx.example.org", addr)], msg, &s).await;
    assert_eq!(r[0].verdict, Verdict::Sent, "{r:?}");
    let got = got.await.unwrap();
    let plain = smtp_proto::sasl::client::plain("", "relay", "s3cret");
    assert!(
        got.contains(&format!("AUTH PLAIN {plain}\r\nMAIL FROM:")),
        "{got}"
    );
    // Another hop has no entry: no AUTH.
    let (addr2, got) = sink(&["AUTH PLAIN"]).await;
    deliver(&[hop("other.example.org", addr2)], msg, &s).await;
    assert!(!got.await.unwrap().contains("AUTH"));
    // 535: deferred with 4.7.0, as Postfix's smtp_sasl_auth_soft_bounce.
    let (addr3, got) = sink(&["AUTH PLAIN", "X-REFUSE-AUTH"]).await;
    let map: mailstore::saslpass::PasswordMap =
        format!("mx.example.org:{} relay:bad\n", addr3.port())
            .parse()
            .unwrap();
    s.passwords = Some(std::sync::Arc::new(map));
    let r = deliver(&[hop("mx.example.org", addr3)], msg, &s).await;
    assert_eq!(
        (r[0].verdict, r[0].status.as_str()),
        (Verdict::Temporary, "4.7.0")
    );
    assert_eq!(
        r[0].text,
        "SASL authentication failed; server mx.example.org[127.0.0.1] said: 535 5.7.8 Error: authentication failed"
    );
    assert!(!got.await.unwrap().contains("MAIL"));
}

/// A server that offers STARTTLS, answers it `220`, then sends bytes
/// that are no TLS record and closes; a session without STARTTLS is
/// served normally. Each connection's lines come back on the channel.
async fn broken_tls_sink() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut got = String::new();
                let _ = w.write_all(b"220 broken ESMTP\r\n").await;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    got.push_str(&line);
                    let reply: &[u8] = if in_data {
                        if line != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        b"250 2.0.0 Ok: queued\r\n"
                    } else {
                        match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                            "EHLO" => b"250-broken\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                            "STAR" => {
                                let _ = w.write_all(b"220 2.0.0 Ready to start TLS\r\n").await;
                                let _ = w.write_all(b"this is not a TLS record\r\n").await;
                                break;
                            }
                            "DATA" => {
                                in_data = true;
                                b"354 go\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 Bye\r\n").await;
                                break;
                            }
                            _ => b"250 Ok\r\n",
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send(got);
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_is_retried_without_tls_once_the_message_has_waited() {
    let to = rcpts(&["a@example.org"]);
    let first = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    // A first attempt defers (the handshake might work next time).
    let (addr, mut conns) = broken_tls_sink().await;
    let hops = [hop("mx.example.org", addr)];
    let r = deliver(&hops, first, &settings()).await;
    assert_eq!(
        (r[0].verdict, r[0].status.as_str()),
        (Verdict::Temporary, "4.7.5")
    );
    assert!(
        r[0].text
            .starts_with("TLS handshake with mx.example.org[127.0.0.1] failed"),
        "{}",
        r[0].text
    );
    assert!(conns.recv().await.unwrap().contains("STARTTLS\r\n"));
    // A retry falls back at once to plaintext on the same host, as
    // Postfix's opportunistic TLS does.
    let retry = Message {
        plaintext_fallback: true,
        ..first
    };
    let r = deliver(&hops, retry, &settings()).await;
    assert_eq!(r[0].verdict, Verdict::Sent, "{r:#?}");
    assert!(conns.recv().await.unwrap().contains("STARTTLS\r\n"));
    let plain = conns.recv().await.unwrap();
    assert!(!plain.contains("STARTTLS"), "{plain}");
    assert!(plain.contains("RCPT TO:<a@example.org>\r\n"), "{plain}");
    // Not with TLS required, nor with AUTH credentials for the host
    // (the password would cross in the clear).
    let mut required = settings();
    required.tls = ClientTls::Required;
    let r = deliver(&hops, retry, &required).await;
    assert_eq!(r[0].verdict, Verdict::Temporary);
    let mut with_password = settings();
    with_password.credentials = Some(("relay".into(), "s3cret".to_owned().into()));
    let r = deliver(&hops, retry, &with_password).await;
    assert_eq!(
        (r[0].verdict, r[0].status.as_str()),
        (Verdict::Temporary, "4.7.5")
    );
    for _ in 0..2 {
        assert!(conns.recv().await.unwrap().contains("STARTTLS\r\n"));
    }
    assert!(conns.try_recv().is_err(), "no plaintext try");
}

/// A server that serves the first transaction, keeps the connection, and
/// in the next one closes without a word when it reads a line starting
/// with `drop_at` (`RSET`, or `.` for the end of the data).
async fn drops_second(drop_at: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 once ESMTP\r\n").await.unwrap();
        let (mut in_data, mut done) = (false, 0);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if done == 1 && line.starts_with(drop_at) && (drop_at != "." || in_data) {
                return;
            }
            let reply: &[u8] = if in_data {
                if line != ".\r\n" {
                    continue;
                }
                in_data = false;
                done += 1;
                b"250 2.0.0 Ok: queued\r\n"
            } else {
                match line.get(..4).unwrap_or("") {
                    "EHLO" => b"250-once\r\n250 PIPELINING\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go\r\n"
                    }
                    _ => b"250 Ok\r\n",
                }
            };
            w.write_all(reply).await.unwrap();
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_lost_in_the_transaction_defers_instead_of_resending() {
    let to = rcpts(&["a@example.org"]);
    let msg = Message {
        sender: "me@example.net",
        recipients: &to,
        content: BODY,
        envelope: None,
        plaintext_fallback: false,
    };
    let mut s = ClientSettings::new("mail.example.net", None);
    s.keep_open = true;
    // Gone at the RSET: nothing was sent, the caller may connect anew.
    let addr = drops_second("RSET").await;
    let (r, closing) = deliver_then_close(&[hop("mx.example.org", addr)], msg, &s).await;
    assert_eq!(r[0].verdict, Verdict::Sent);
    assert!(closing.unwrap().reuse(msg).await.is_err());
    // Gone after the final dot: the server may have the message, so it
    // is deferred, not handed back for an immediate second try.
    let addr = drops_second(".").await;
    let (r, closing) = deliver_then_close(&[hop("mx.example.org", addr)], msg, &s).await;
    assert_eq!(r[0].verdict, Verdict::Sent);
    let Ok((r, _)) = closing.unwrap().reuse(msg).await else {
        panic!("a failure inside the transaction must report its recipients")
    };
    assert_eq!(
        (r[0].verdict, r[0].status.as_str()),
        (Verdict::Temporary, "4.4.2")
    );
    assert_eq!(
        r[0].text,
        "lost connection with mx.example.org[127.0.0.1] while sending the message over a reused connection"
    );
}
