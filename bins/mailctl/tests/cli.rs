//! Runs the `mailctl` binary in a temporary directory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mailstore::{Accounts, Route, Router, LAB_DOMAINS};

fn mailctl(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .arg("--passwd")
        .arg(dir.join("passwd"))
        .arg("--aliases")
        .arg(dir.join("aliases"))
        .arg("--maildir-root")
        .arg(dir.join("mail"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        // The command may exit (with an error) before reading its input.
        match input.write_all(s.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "unexpected success");
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn lab_accounts_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&mailctl(
        d,
        &["user", "add", "user1", "--password-stdin"],
        Some("pass1\n"),
    ));
    assert!(
        out.starts_with("user user1 added (SHA512-CRYPT), Maildir "),
        "{out}"
    );
    ok(&mailctl(
        d,
        &[
            "user",
            "add",
            "user2",
            "--password-stdin",
            "--scheme",
            "plain",
        ],
        Some("pass2\n"),
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("passwd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a new passwd-file is private");
    for sub in ["cur", "new", "tmp"] {
        assert!(d.join("mail/user1/Maildir").join(sub).is_dir());
    }
    let e = err(&mailctl(
        d,
        &["user", "add", "User1", "--password-stdin"],
        Some("x\n"),
    ));
    assert_eq!(e, "mailctl: user \"user1\" already exists\n");
    let e = err(&mailctl(
        d,
        &["user", "add", "bad/name", "--password-stdin"],
        Some("x\n"),
    ));
    assert!(e.contains("invalid name \"bad/name\""), "{e}");
    let e = err(&mailctl(
        d,
        &["user", "add", "u3", "--password-stdin", "--scheme", "md5"],
        Some("x\n"),
    ));
    assert!(e.contains("unknown password scheme"), "{e}");
    let e = err(&mailctl(
        d,
        &["user", "add", "u3", "--password-stdin"],
        Some(""),
    ));
    assert!(e.contains("no password on standard input"), "{e}");
    // Without a terminal and without --password-stdin: a clear refusal.
    let e = err(&mailctl(d, &["user", "add", "u3"], Some("x\n")));
    assert!(e.contains("not a terminal"), "{e}");

    assert_eq!(
        ok(&mailctl(d, &["user", "list"], None)),
        "user1 SHA512-CRYPT\nuser2 PLAIN\n"
    );
    ok(&mailctl(d, &["alias", "add", "postmaster", "user1"], None));
    ok(&mailctl(
        d,
        &["alias", "add", "team", "user1", "user2@csuvnetwork.com"],
        None,
    ));
    assert_eq!(
        ok(&mailctl(d, &["alias", "list"], None)),
        "postmaster: user1\nteam: user1, user2@csuvnetwork.com\n"
    );

    // The daemons' view of what mailctl wrote.
    let acc = std::sync::Arc::new(Accounts::open(d.join("passwd")).unwrap());
    assert!(acc.verify_password("user1", b"pass1").unwrap().is_some());
    assert_eq!(
        acc.plain_secret("user2").unwrap().unwrap().expose(),
        b"pass2"
    );
    let aliases = std::sync::Arc::new(mailstore::Aliases::open(d.join("aliases")).unwrap());
    let r = Router::new(LAB_DOMAINS, acc.clone(), Some(aliases));
    assert_eq!(
        r.route("team@csuvnetwork.com").unwrap(),
        Route::Local(vec!["user1".into(), "user2".into()])
    );

    ok(&mailctl(
        d,
        &["user", "passwd", "user1", "--password-stdin"],
        Some("newpass\n"),
    ));
    assert!(acc.verify_password("user1", b"newpass").unwrap().is_some());
    let e = err(&mailctl(
        d,
        &["user", "passwd", "ghost", "--password-stdin"],
        Some("x\n"),
    ));
    assert_eq!(e, "mailctl: no user named \"ghost\"\n");
    ok(&mailctl(d, &["alias", "del", "team"], None));
    let e = err(&mailctl(d, &["alias", "del", "team"], None));
    assert_eq!(e, "mailctl: no alias named \"team\"\n");
    ok(&mailctl(d, &["user", "del", "user2"], None));
    assert_eq!(
        ok(&mailctl(d, &["user", "list"], None)),
        "user1 SHA512-CRYPT\n"
    );
    assert!(acc.lookup("user2").unwrap().is_none());
}

#[test]
fn deliver_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&mailctl(
        d,
        &[
            "user",
            "add",
            "user1",
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ],
        Some("p\n"),
    ));
    ok(&mailctl(d, &["alias", "add", "postmaster", "user1"], None));
    let out = ok(&mailctl(
        d,
        &[
            "deliver",
            "-f",
            "root@localhost",
            "--hostname",
            "mail.csuvnetwork.com",
            "postmaster",
        ],
        Some("Subject: local\n\nhello\n"),
    ));
    assert!(out.starts_with("delivered as "), "{out}");
    let new = d.join("mail/user1/Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        text.starts_with("Return-Path: <root@localhost>\nReceived: by mail.csuvnetwork.com id "),
        "{text}"
    );
    assert!(text.contains("\tfor <postmaster>; "), "{text}");
    assert!(text.ends_with("\nSubject: local\n\nhello\n"), "{text}");
    let e = err(&mailctl(
        d,
        &["deliver", "ghost@csuvnetwork.com"],
        Some("x\n"),
    ));
    assert_eq!(
        e,
        "mailctl: cannot deliver to \"ghost@csuvnetwork.com\": no such user\n"
    );
    let e = err(&mailctl(d, &["deliver", "user1@example.org"], Some("x\n")));
    assert!(e.contains("not a local domain"), "{e}");
    let e = err(&mailctl(
        d,
        &[
            "deliver",
            "--domain",
            "example.org",
            "user1@csuvnetwork.com",
        ],
        Some("x\n"),
    ));
    assert!(e.contains("not a local domain"), "{e}");
    ok(&mailctl(
        d,
        &["deliver", "--domain", "example.org", "user1@EXAMPLE.org"],
        Some("x\n"),
    ));
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 2);
}

#[test]
fn unreadable_passwd_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("passwd")).unwrap();
    let e = err(&mailctl(d, &["user", "list"], None));
    assert!(e.starts_with("mailctl: cannot read "), "{e}");
    let e = err(&mailctl(d, &["user", "del", "x"], None));
    assert!(e.starts_with("mailctl: cannot read "), "{e}");
}
