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
