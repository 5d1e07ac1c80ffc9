//! POP3 maildrop behaviour: exclusivity, snapshots, exact sizes, stable
//! UIDs, UPDATE state, and deliveries running during a session.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailstore::{Envelope, Error, Protocol, Store};
use proptest::prelude::*;

fn env(user: &str, t: u64) -> Envelope {
    Envelope {
        mail_from: "user2@csuvnetwork.com".into(),
        recipients: vec![format!("{user}@csuvnetwork.com")],
        mailboxes: vec![user.into()],
        helo: "client.example".into(),
        client_ip: "192.168.3.20".parse().unwrap(),
        protocol: Protocol::Esmtpa,
        tls: None,
        our_hostname: "mail.csuvnetwork.com".into(),
        queue_id: "ABCDEF012345".into(),
        time: UNIX_EPOCH + Duration::from_secs(1_795_975_309 + t),
    }
}

fn deliver(store: &Store, user: &str, t: u64, body: &[u8]) -> mailstore::DeliveryReport {
    let mut d = store.begin_delivery(&env(user, t)).unwrap();
    d.write(body).unwrap();
    d.commit().unwrap()
}

/// The message through both read paths, which must agree.
fn read_all(md: &mailstore::Maildrop, i: usize) -> Vec<u8> {
    let mut v = Vec::new();
    md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
    let (mut raw, mut whole) = (vec![1, 2, 3], b"stale".to_vec());
    md.read_message(i, &mut raw, &mut whole).unwrap();
    assert_eq!(whole, v, "read_message and open_message differ");
    v
}

#[test]
fn exclusive_access_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_hostname(dir.path(), "h").unwrap();
    let a = store.open_maildrop("user1").unwrap();
    match store.open_maildrop("user1") {
        Err(Error::InUse(u)) => assert_eq!(u, "user1"),
        other => panic!("expected InUse, got {other:?}"),
    }
    // Another user is independent.
    let _b = store.open_maildrop("user2").unwrap();
    drop(a);
    store.open_maildrop("user1").unwrap();
}

#[test]
fn snapshot_sizes_uids_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_hostname(dir.path(), "h").unwrap();
    let r1 = deliver(&store, "user1", 0, b"Subject: one\r\n\r\nfirst\r\n");
    let r2 = deliver(
        &store,
        "user1",
        1,
        b"Subject: two\r\n\r\nsecond\r\n.hidden dot\r\n",
    );
    let r3 = deliver(&store, "user1", 2, b"Subject: three\r\n\r\nthird\r\n");

    let mut md = store.open_maildrop("user1").unwrap();
    assert_eq!(md.messages().len(), 3);
    let uids: Vec<String> = md.messages().iter().map(|m| m.uid.clone()).collect();
    for (m, r) in md.messages().iter().zip([&r1, &r2, &r3]) {
        assert_eq!(m.size, r.pop3_size);
        assert!(r.file_name.starts_with(&m.uid));
        assert!(m.uid.len() <= 70 && m.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    assert_eq!(md.total_size(), r1.pop3_size + r2.pop3_size + r3.pop3_size);
    let body = read_all(&md, 1);
    assert_eq!(body.len() as u64, md.messages()[1].size);
    assert!(body.ends_with(b"\r\n\r\nsecond\r\n.hidden dot\r\n"));
    assert!(!body.windows(2).any(|w| w == b"\n\n"));
    assert!(matches!(md.open_message(3), Err(Error::NoSuchMessage(3))));
    assert!(matches!(md.mark_seen(9), Err(Error::NoSuchMessage(9))));
    md.mark_seen(1).unwrap();
    md.mark_seen(2).unwrap();
    // Dropping without finish changes nothing (no QUIT, no UPDATE).
    drop(md);
    let md = store.open_maildrop("user1").unwrap();
    let again: Vec<String> = md.messages().iter().map(|m| m.uid.clone()).collect();
    assert_eq!(uids, again);
    let maildir = store.maildir_path("user1");
    assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 3);
    drop(md);

    let mut md = store.open_maildrop("user1").unwrap();
    md.mark_seen(1).unwrap();
    md.mark_seen(0).unwrap();
    let rep = md.finish(&[0]).unwrap();
    assert_eq!(rep.deleted, 1);
    assert_eq!(rep.marked_seen, 1);
    let cur: Vec<String> = fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cur, [format!("{}:2,S", r2.file_name)]);

    // Moved and renamed messages keep their UIDs and sizes.
    let md = store.open_maildrop("user1").unwrap();
    let after: Vec<String> = md.messages().iter().map(|m| m.uid.clone()).collect();
    assert_eq!(after, uids[1..]);
    assert_eq!(md.messages()[0].size, r2.pop3_size);
    assert_eq!(read_all(&md, 0).len() as u64, r2.pop3_size);
    assert!(matches!(md.finish(&[5]), Err(Error::NoSuchMessage(5))));
}

#[test]
fn foreign_files_get_computed_sizes_and_flags_merge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_hostname(dir.path(), "h").unwrap();
    let maildir = store.create_maildir("user1").unwrap();
    // As another MDA or mutt might leave them: no ,W=, existing flags.
    fs::write(maildir.join("new/100.foreign"), b"A: b\n\nx\n").unwrap();
    fs::write(maildir.join("cur/99.other:2,RF"), b"A: b\r\n\r\ny\r\n").unwrap();
    fs::write(maildir.join("cur/.hidden"), b"ignored").unwrap();
    let mut md = store.open_maildrop("user1").unwrap();
    let m = md.messages();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].uid.as_str(), m[0].size), ("99.other", 11));
    assert_eq!((m[1].uid.as_str(), m[1].size), ("100.foreign", 11));
    assert_eq!(read_all(&md, 1), b"A: b\r\n\r\nx\r\n");
    md.mark_seen(0).unwrap();
    md.mark_seen(1).unwrap();
    md.finish(&[]).unwrap();
    let mut cur: Vec<String> = fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cur.sort();
    assert_eq!(cur, [".hidden", "100.foreign:2,S", "99.other:2,FRS"]);
}

#[test]
fn message_renamed_by_another_client_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_hostname(dir.path(), "h").unwrap();
    let r = deliver(&store, "user1", 0, b"x\r\n");
    let md = store.open_maildrop("user1").unwrap();
    let maildir = store.maildir_path("user1");
    fs::rename(
        maildir.join("new").join(&r.file_name),
        maildir.join("cur").join(format!("{}:2,", r.file_name)),
    )
    .unwrap();
    assert_eq!(read_all(&md, 0).len() as u64, r.pop3_size);
    assert_eq!(md.finish(&[0]).unwrap().deleted, 1);
    assert_eq!(fs::read_dir(maildir.join("cur")).unwrap().count(), 0);
}

#[test]
fn parallel_deliveries_during_open_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_hostname(dir.path(), "h").unwrap();
    for i in 0..5 {
        deliver(&store, "user1", i, format!("before {i}\r\n").as_bytes());
    }
    let md = store.open_maildrop("user1").unwrap();
    let snap: Vec<_> = md.messages().to_vec();
    assert_eq!(snap.len(), 5);

    const THREADS: usize = 8;
    const PER: usize = 25;
    let store = Arc::new(store);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..PER)
                    .map(|i| {
                        let body = format!("Subject: t{t} m{i}\r\n\r\npayload {t}/{i}\r\n");
                        let mut e = env("user1", 100);
                        e.time = SystemTime::now();
                        let mut d = store.begin_delivery(&e).unwrap();
                        for c in body.as_bytes().chunks(5) {
                            d.write(c).unwrap();
                        }
                        d.commit().unwrap().file_name
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let names: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // The open session still sees exactly its snapshot.
    assert_eq!(md.messages(), &snap[..]);
    for (i, m) in snap.iter().enumerate() {
        assert_eq!(read_all(&md, i).len() as u64, m.size);
    }
    // A delete in this session does not touch the new arrivals.
    md.finish(&[0]).unwrap();

    let md = store.open_maildrop("user1").unwrap();
    assert_eq!(md.messages().len(), 4 + THREADS * PER);
    let uids: HashSet<&str> = md.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids.len(), md.messages().len(), "no duplicates");
    for n in &names {
        assert!(uids.iter().any(|u| n.starts_with(u)), "{n} lost");
    }
    let mut bodies = HashSet::new();
    for i in 0..md.messages().len() {
        let b = read_all(&md, i);
        assert_eq!(b.len() as u64, md.messages()[i].size);
        bodies.insert(b);
    }
    assert_eq!(bodies.len(), md.messages().len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any message, any chunking: the listed size is exactly what is read,
    /// and the body comes back byte for byte after the trace headers.
    #[test]
    fn listed_size_equals_bytes_read(
        lines in proptest::collection::vec("[ -~\t]{0,100}", 0..40),
        cuts in proptest::collection::vec(0usize..5000, 0..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let mut msg = Vec::new();
        for l in &lines {
            msg.extend_from_slice(l.as_bytes());
            msg.extend_from_slice(b"\r\n");
        }
        let mut cuts = cuts;
        cuts.push(msg.len());
        cuts.sort_unstable();
        let mut d = store.begin_delivery(&env("user1", 0)).unwrap();
        let mut pos = 0;
        for c in cuts {
            let c = c.min(msg.len()).max(pos);
            d.write(&msg[pos..c]).unwrap();
            pos = c;
        }
        let r = d.commit().unwrap();
        let md = store.open_maildrop("user1").unwrap();
        let m = &md.messages()[0];
        prop_assert_eq!(m.size, r.pop3_size);
        let back = read_all(&md, 0);
        prop_assert_eq!(back.len() as u64, m.size);
        prop_assert!(back.ends_with(&msg));
        let headers = &back[..back.len() - msg.len()];
        prop_assert!(headers.starts_with(b"Return-Path: <user2@csuvnetwork.com>\r\nReceived: from "));
    }
}
