//! Crash durability: a child process delivers in a loop and reports each
//! delivery that `commit` returned; the parent kills it with SIGKILL at
//! random moments. Afterwards `new/` must hold only whole messages and every
//! reported delivery must be there.
//!
//! The child is this same test binary, re-executed to run the ignored test
//! `child_delivery_loop` with `MAILSTORE_CHILD_ROOT` set.
//!
//! SIGKILL models a process crash (the kernel keeps what was written);
//! the fsyncs that cover power loss are exercised but cannot be proven here.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use mailstore::{Envelope, Protocol, Store, STALE_TMP_AGE};

const ROOT_VAR: &str = "MAILSTORE_CHILD_ROOT";
const END: &[u8] = b"END-OF-MESSAGE\r\n";

fn envelope(mailboxes: &[&str], qid: String) -> Envelope {
    Envelope {
        mail_from: "user2@csuvnetwork.com".into(),
        recipients: mailboxes.iter().map(|m| format!("{m}@localhost")).collect(),
        mailboxes: mailboxes.iter().map(|m| m.to_string()).collect(),
        helo: "client.example".into(),
        client_ip: "127.0.0.1".parse().unwrap(),
        protocol: Protocol::Esmtp,
        tls: None,
        our_hostname: "mail.csuvnetwork.com".into(),
        queue_id: qid,
        time: SystemTime::now(),
    }
}

/// Run by the parent in a child process; never on its own.
#[test]
#[ignore = "child process of crash_at_random_points"]
fn child_delivery_loop() {
    let root = std::env::var(ROOT_VAR).expect("run by crash_at_random_points");
    let store = Store::with_hostname(&root, "crash.test").unwrap();
    let out = std::io::stdout();
    let mut n: u64 = 0;
    loop {
        n += 1;
        // Sizes from 100 B to ~600 KB, so kills land in every phase.
        let lines = (n * 7919) % 10_000;
        let mailboxes: &[&str] = if n.is_multiple_of(3) {
            &["user1", "user2"]
        } else {
            &["user1"]
        };
        let mut d = store
            .begin_delivery(&envelope(mailboxes, format!("Q{n}")))
            .unwrap();
        d.write(format!("X-Seq: {n}\r\nX-Lines: {lines}\r\n\r\n").as_bytes())
            .unwrap();
        for i in 0..lines {
            d.write(format!("line {i} of message {n} ..........................\r\n").as_bytes())
                .unwrap();
        }
        d.write(END).unwrap();
        let r = d.commit().unwrap();
        let mut o = out.lock();
        writeln!(o, "DONE {}", r.file_name).unwrap();
        o.flush().unwrap();
    }
}

/// Checks one message file: sizes in the name match, content is whole.
fn check_whole(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    let data = fs::read(path).unwrap();
    let s: u64 = name
        .split(",S=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(data.len() as u64, s, "{name}: size field");
    assert!(data.ends_with(b"END-OF-MESSAGE\n"), "{name}: truncated");
    let text = String::from_utf8(data).unwrap();
    let seq: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Seq: "))
        .unwrap()
        .parse()
        .unwrap();
    let lines: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Lines: "))
        .unwrap()
        .parse()
        .unwrap();
    let body_lines = text.lines().filter(|l| l.starts_with("line ")).count() as u64;
    assert_eq!(body_lines, lines, "{name}: lines");
    seq
}

/// Kills the child (SIGKILL) if a failing assertion unwinds past it.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn crash_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    let exe = std::env::current_exe().unwrap();
    let mut reported: HashSet<String> = HashSet::new();
    let mut kills_mid_delivery = 0;
    for round in 0..12 {
        let mut child = Reaper(
            Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_delivery_loop",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROOT_VAR, &root)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test child_delivery_loop ... " first
                // on the same line.
                if let Some((_, name)) = line.split_once("DONE ") {
                    let _ = tx.send(name.to_string());
                }
            }
        });
        // Let the first delivery start, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child delivers");
        reported.insert(first);
        std::thread::sleep(Duration::from_millis(random_below(150) + round));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        reported.extend(rx.try_iter());
        let tmp = root.join("user1/Maildir/tmp");
        if fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0) > 0 {
            kills_mid_delivery += 1;
        }
    }
    assert!(reported.len() >= 12);
    assert!(kills_mid_delivery > 0, "no kill landed inside a delivery");

    // Every file in new/ is whole; every reported delivery is there.
    let mut seen = HashSet::new();
    for user in ["user1", "user2"] {
        let new = root.join(user).join("Maildir/new");
        for e in fs::read_dir(&new).unwrap() {
            let p = e.unwrap().path();
            check_whole(&p);
            if user == "user1" {
                seen.insert(p.file_name().unwrap().to_str().unwrap().to_string());
            }
        }
    }
    for name in &reported {
        assert!(seen.contains(name), "reported delivery {name} missing");
    }
    // A maildrop lists exactly the whole messages, with exact sizes.
    let store = Store::with_hostname(&root, "check").unwrap();
    let md = store.open_maildrop("user1").unwrap();
    assert_eq!(md.messages().len(), seen.len());
    for (i, m) in md.messages().iter().enumerate() {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut md.open_message(i).unwrap(), &mut v).unwrap();
        assert_eq!(v.len() as u64, m.size);
        assert!(v.ends_with(END));
    }
    drop(md);
    // Leftovers of the killed deliveries are cleaned once stale.
    let later = SystemTime::now() + STALE_TMP_AGE + Duration::from_secs(1);
    store.clean_stale_tmp(later, STALE_TMP_AGE).unwrap();
    for user in ["user1", "user2"] {
        let tmp = root.join(user).join("Maildir/tmp");
        if tmp.exists() {
            assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
        }
    }
}

/// Run by `killed_session_releases_maildrop` in a child process.
#[test]
#[ignore = "child process of killed_session_releases_maildrop"]
fn child_hold_maildrop() {
    let root = std::env::var(ROOT_VAR).expect("run by killed_session_releases_maildrop");
    let store = Store::with_hostname(&root, "lock.test").unwrap();
    let _md = store.open_maildrop("user1").unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// RFC 1939 exclusive access, across processes, and a crashed session
/// cannot leave the maildrop locked.
#[test]
fn killed_session_releases_maildrop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    let exe = std::env::current_exe().unwrap();
    let mut child = Reaper(
        Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_hold_maildrop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROOT_VAR, &root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let locked = lines.any(|l| l.map(|l| l.ends_with("LOCKED")).unwrap_or(false));
    assert!(locked, "child did not lock");
    let store = Store::with_hostname(&root, "check").unwrap();
    let busy = store.open_maildrop("user1");
    assert!(matches!(busy, Err(mailstore::Error::InUse(_))), "{busy:?}");
    child.0.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.0.wait().unwrap();
    store
        .open_maildrop("user1")
        .expect("lock released by the kernel");
}
