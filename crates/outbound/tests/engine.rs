//! The queue manager against a real smtpd on loopback as the remote MTA:
//! delivery and failure notices, deferral and flush, recovery at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mailstore::outbound::{OutEnvelope, OutRcpt, OutboundQueue, QueuedMessage, RcptState};
use netkit::Service;
use outbound::deliver::{unauthenticated_connector, ClientSettings};
use outbound::engine::{Engine, EngineConfig, StaticRoutes};

mod common;
use common::hop;
use common::{closed_port, maildir_file, remote, remote_on};

type Finished = Arc<Mutex<Vec<QueuedMessage>>>;

fn routes(addr: SocketAddr) -> StaticRoutes {
    StaticRoutes {
        routes: HashMap::from([("example.org".to_string(), vec![hop("mx.example.org", addr)])]),
    }
}

fn config() -> EngineConfig {
    let mut client = ClientSettings::new(
        "mail.example.net",
        Some(unauthenticated_connector().unwrap()),
    );
    client.connect_timeout = Duration::from_secs(5);
    EngineConfig::new(client)
}

fn enqueue(q: &OutboundQueue, id: &str, to: &[&str]) {
    let env = OutEnvelope {
        id: id.into(),
        sender: "me@example.net".into(),
        arrival: SystemTime::now(),
        envid: None,
        ret: None,
        recipients: to.iter().map(|a| OutRcpt::new(*a)).collect(),
    };
    q.enqueue(&env, b"Subject: queued\r\n\r\nbody\r\n").unwrap();
}

fn start(
    dir: &std::path::Path,
    route: StaticRoutes,
) -> (
    OutboundQueue,
    Engine<StaticRoutes, impl outbound::engine::Finisher>,
    Finished,
) {
    let (q, recovered) = OutboundQueue::open(dir.join("outgoing")).unwrap();
    let finished: Finished = Arc::default();
    let f = Arc::clone(&finished);
    let engine = Engine::start(
        q.clone(),
        recovered,
        config(),
        route,
        move |m: &QueuedMessage| {
            f.lock().unwrap().push(m.clone());
            Ok(())
        },
    );
    (q, engine, finished)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_records_and_finishes() {
    let remote_dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(remote_dir.path(), "").await;
    let dir = tempfile::tempdir().unwrap();
    let (q, engine, finished) = start(dir.path(), routes(addr));
    enqueue(
        &q,
        "M1",
        &["a@example.org", "nobody@example.org", "b@nowhere.example"],
    );
    engine.submit("M1");
    wait_for("the message to finish", || {
        !finished.lock().unwrap().is_empty()
    })
    .await;
    let m = finished.lock().unwrap()[0].clone();
    let states: Vec<RcptState> = m.recipients.iter().map(|r| r.state.clone()).collect();
    assert_eq!(
        states,
        [RcptState::Sent, RcptState::Bounced, RcptState::Bounced]
    );
    let unknown = m.recipients[1].last.as_ref().unwrap();
    assert_eq!(unknown.status, "5.1.1");
    assert!(unknown.text.contains("(in reply to RCPT TO command)"));
    assert_eq!(m.recipients[2].last.as_ref().unwrap().status, "5.4.4");
    // Removed from the queue once finished.
    wait_for("removal", || {
        OutboundQueue::open(dir.path().join("outgoing"))
            .unwrap()
            .1
            .is_empty()
    })
    .await;
    assert!(maildir_file(remote_dir.path(), "a")
        .await
        .contains("Subject: queued"));
    engine.stop(Duration::from_secs(1)).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_while_the_remote_is_down_then_flushed() {
    let addr = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let (q, engine, finished) = start(dir.path(), routes(addr));
    enqueue(&q, "D1", &["a@example.org"]);
    engine.submit("D1");
    wait_for("the deferral", || {
        matches!(
            q.load("D1").map(|m| m.recipients[0].state.clone()),
            Ok(RcptState::Deferred { .. })
        )
    })
    .await;
    let m = q.load("D1").unwrap();
    let last = m.recipients[0].last.as_ref().unwrap();
    assert_eq!(last.status, "4.4.1");
    assert!(last.text.contains("Connection refused"), "{}", last.text);
    let RcptState::Deferred { next } = m.recipients[0].state else {
        unreachable!()
    };
    // Postfix's first wait.
    assert!(next >= SystemTime::now() + Duration::from_secs(290));
    wait_for("the engine to go idle", || engine.waiting() == 1).await;

    // The remote comes up on that address; a flush sends at once.
    let remote_dir = tempfile::tempdir().unwrap();
    let (running, _) = remote_on(remote_dir.path(), "", &addr.to_string()).await;
    assert_eq!(engine.flush(), 1);
    wait_for("the message to finish", || {
        !finished.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        finished.lock().unwrap()[0].recipients[0].state,
        RcptState::Sent
    );
    assert_eq!(finished.lock().unwrap()[0].recipients[0].attempts, 2);
    engine.stop(Duration::from_secs(1)).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_queued_before_a_start_is_delivered() {
    let remote_dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(remote_dir.path(), "").await;
    let dir = tempfile::tempdir().unwrap();
    {
        let (q, _) = OutboundQueue::open(dir.path().join("outgoing")).unwrap();
        enqueue(&q, "R1", &["b@example.org"]);
        // A message held by the administrator waits for a release.
        enqueue(&q, "R2", &["a@example.org"]);
        q.set_held("R2", true, SystemTime::now()).unwrap();
    }
    let (q, engine, finished) = start(dir.path(), routes(addr));
    wait_for("the recovered message", || {
        finished.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(finished.lock().unwrap()[0].envelope.id, "R1");
    maildir_file(remote_dir.path(), "b").await;
    assert!(q.load("R2").unwrap().held);
    q.set_held("R2", false, SystemTime::now()).unwrap();
    engine.submit("R2");
    wait_for("the released message", || {
        finished.lock().unwrap().len() == 2
    })
    .await;
    engine.stop(Duration::from_secs(1)).await;
    running.stop().await;
}

/// A minimal SMTP sink that counts connections and messages (and RSETs),
/// with PIPELINING, for the connection reuse tests.
#[derive(Default)]
struct SinkCounts {
    connections: std::sync::atomic::AtomicUsize,
    messages: std::sync::atomic::AtomicUsize,
    rsets: std::sync::atomic::AtomicUsize,
}

async fn counting_sink() -> (SocketAddr, Arc<SinkCounts>) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counts = Arc::new(SinkCounts::default());
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.connections.fetch_add(1, SeqCst);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                let mut data = false;
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if data {
                        if line == ".\r\n" {
                            data = false;
                            c.messages.fetch_add(1, SeqCst);
                            b"250 2.0.0 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let cmd = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match cmd.as_str() {
                            "EHLO" => b"250-sink\r\n250 PIPELINING\r\n",
                            "DATA" => {
                                data = true;
                                b"354 go\r\n"
                            }
                            "RSET" => {
                                c.rsets.fetch_add(1, SeqCst);
                                b"250 2.0.0 ok\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                                return;
                            }
                            _ => b"250 2.0.0 ok\r\n",
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

/// Five messages one after the other to one destination: how many
/// connections the sink saw, and how long it took.
async fn five_in_a_row(cfg: EngineConfig, gap: Duration) -> (usize, usize, usize, Duration) {
    use std::sync::atomic::Ordering::SeqCst;
    let (addr, counts) = counting_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let (q, recovered) = OutboundQueue::open(dir.path().join("outgoing")).unwrap();
    let finished: Finished = Arc::default();
    let f = Arc::clone(&finished);
    let engine = Engine::start(
        q.clone(),
        recovered,
        cfg,
        routes(addr),
        move |m: &QueuedMessage| {
            f.lock().unwrap().push(m.clone());
            Ok(())
        },
    );
    let t0 = std::time::Instant::now();
    for i in 0..5 {
        let id = format!("R{i}");
        enqueue(&q, &id, &["a@example.org"]);
        engine.submit(&id);
        wait_for("the message to finish", || {
            finished.lock().unwrap().len() > i
        })
        .await;
        tokio::time::sleep(gap).await;
    }
    let took = t0.elapsed();
    assert!(finished
        .lock()
        .unwrap()
        .iter()
        .all(|m| m.recipients[0].state == RcptState::Sent
            && m.recipients[0].attempts == 1
            && m.recipients[0]
                .last
                .as_ref()
                .is_some_and(|l| l.status == "2.0.0")));
    // Delivered at the first attempt: removed (its file kept as a spare to
    // write a later message over), and no log was ever needed.
    let left: Vec<String> = std::fs::read_dir(dir.path().join("outgoing"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".spare"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    engine.stop(Duration::from_secs(2)).await;
    (
        counts.connections.load(SeqCst),
        counts.messages.load(SeqCst),
        counts.rsets.load(SeqCst),
        took,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_one_destination_share_a_connection() {
    let (connections, messages, rsets, _) = five_in_a_row(config(), Duration::ZERO).await;
    assert_eq!((connections, messages), (1, 5));
    assert_eq!(rsets, 4, "RSET before each reuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_is_capped_by_count_and_can_be_off() {
    let mut cfg = config();
    cfg.reuse = Some(outbound::engine::Reuse {
        count: 2,
        ..Default::default()
    });
    assert_eq!(
        five_in_a_row(cfg, Duration::ZERO).await.0,
        3,
        "2 + 2 + 1 messages"
    );
    let mut cfg = config();
    cfg.reuse = None;
    let (connections, messages, rsets, _) = five_in_a_row(cfg, Duration::ZERO).await;
    assert_eq!((connections, messages, rsets), (5, 5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_time() {
    let mut cfg = config();
    cfg.reuse = Some(outbound::engine::Reuse {
        idle: Duration::from_millis(1),
        ..Default::default()
    });
    // Each message finds the last connection already closed.
    let (connections, _, rsets, _) = five_in_a_row(cfg, Duration::from_millis(100)).await;
    assert_eq!((connections, rsets), (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_delay_spaces_deliveries_to_a_destination() {
    let mut cfg = config();
    cfg.rate_delay = Duration::from_millis(300);
    let (_, messages, _, took) = five_in_a_row(cfg, Duration::ZERO).await;
    assert_eq!(messages, 5);
    assert!(took >= Duration::from_millis(1200), "{took:?}");
}

/// The host's finishing (its notices) fails after recording one notice,
/// and again when tried once the outcomes are recorded: the message stays
/// queued with its final states, comes back after a flush with that
/// notice in `notices` (so the host does not send it twice), and goes
/// once finishing succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_finish_keeps_the_message_and_is_retried_with_its_notices() {
    let remote_dir = tempfile::tempdir().unwrap();
    let (running, addr) = remote(remote_dir.path(), "").await;
    let dir = tempfile::tempdir().unwrap();
    let (q, recovered) = OutboundQueue::open(dir.path().join("outgoing")).unwrap();
    let calls: Finished = Arc::default();
    let (c, fq) = (Arc::clone(&calls), q.clone());
    let engine = Engine::start(
        q.clone(),
        recovered,
        config(),
        routes(addr),
        move |m: &QueuedMessage| {
            let mut calls = c.lock().unwrap();
            calls.push(m.clone());
            match calls.len() {
                // One notice queued and recorded, the next one failed.
                1 => fq
                    .record_notice(&m.envelope.id, "failed", SystemTime::now())
                    .unwrap(),
                // The same pass tries again once the outcomes are on
                // record, and fails again.
                2 => {}
                _ => return Ok(()),
            }
            Err("injecting the relayed notice failed".into())
        },
    );
    enqueue(&q, "F1", &["a@example.org", "nobody@example.org"]);
    engine.submit("F1");
    wait_for("two finishes", || calls.lock().unwrap().len() == 2).await;
    wait_for("the engine to go idle", || engine.waiting() == 1).await;
    assert_eq!(calls.lock().unwrap()[1].notices, ["failed"]);
    // Still queued, every recipient final, the notice on record.
    let m = q.load("F1").unwrap();
    assert!(m.is_finished());
    assert_eq!(m.notices, ["failed"]);
    assert_eq!(m.recipients[0].state, RcptState::Sent);
    assert_eq!(m.recipients[1].state, RcptState::Bounced);
    // Retried (here at once): the finisher sees what the failed try
    // recorded, no new delivery is made, and the message goes.
    assert_eq!(engine.flush(), 1);
    wait_for("the third finish", || calls.lock().unwrap().len() == 3).await;
    let again = calls.lock().unwrap()[2].clone();
    assert_eq!(again.notices, ["failed"]);
    assert_eq!(again.recipients[0].attempts, 1, "not delivered twice");
    wait_for("removal", || q.load("F1").is_err()).await;
    engine.stop(Duration::from_secs(1)).await;
    running.stop().await;
}
