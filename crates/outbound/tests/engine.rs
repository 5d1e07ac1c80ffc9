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
