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

/// Runs `mailctl` in `cwd` with only `args` (no file options).
fn mailctl_bare(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        match input.write_all(s.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn listing_a_missing_passwd_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Without options: the daemons' built-in configuration (./lab-data).
    let o = mailctl_bare(d, &["user", "list"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(
        e.starts_with("mailctl: ./lab-data/passwd: no such passwd-file; create the first account with `mailctl user add NAME`"),
        "{e}"
    );
    let e = err(&mailctl(d, &["user", "list"], None));
    assert!(e.contains("no such passwd-file"), "{e}");
    let e = err(&mailctl(
        d,
        &["user", "passwd", "x", "--password-stdin"],
        Some("p\n"),
    ));
    assert!(e.contains("no such passwd-file"), "{e}");
    // An empty but existing file lists nothing, successfully.
    std::fs::write(d.join("passwd"), "").unwrap();
    assert_eq!(ok(&mailctl(d, &["user", "list"], None)), "");
}

#[test]
fn alias_targets_must_exist_locally() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&mailctl(
        d,
        &["user", "add", "user1", "--password-stdin"],
        Some("p\n"),
    ));
    let e = err(&mailctl(d, &["alias", "add", "x", "nosuchuser"], None));
    assert_eq!(e, "mailctl: no account or alias named \"nosuchuser\"\n");
    let e = err(&mailctl(
        d,
        &["alias", "add", "x", "user1", "ghost@csuvnetwork.com"],
        None,
    ));
    assert_eq!(
        e,
        "mailctl: no account or alias named \"ghost@csuvnetwork.com\"\n"
    );
    assert!(!d.join("aliases").exists(), "nothing written");
    // Accounts, aliases and addresses in other domains are fine.
    ok(&mailctl(d, &["alias", "add", "team", "user1"], None));
    ok(&mailctl(
        d,
        &["alias", "add", "x", "team", "someone@example.org"],
        None,
    ));
    assert_eq!(
        ok(&mailctl(d, &["alias", "list"], None)),
        "team: user1\nx: team, someone@example.org\n"
    );
}

#[test]
fn adding_an_existing_user_fails_before_asking_for_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&mailctl(
        d,
        &["user", "add", "user1", "--password-stdin"],
        Some("p\n"),
    ));
    // No terminal and no --password-stdin: the existing user is reported,
    // not the missing terminal (the prompt would come first otherwise).
    let e = err(&mailctl(d, &["user", "add", "USER1"], None));
    assert_eq!(e, "mailctl: user \"user1\" already exists\n");
}

#[test]
fn config_file_names_the_files_the_daemons_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = d.join("mail.toml");
    std::fs::write(
        &conf,
        "[global]\nhostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
         maildir_root = \"maildirs\"\npasswd_file = \"etc/passwd\"\naliases_file = \"etc/aliases\"\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin| mailctl_bare(elsewhere.path(), args, stdin);
    ok(&run(
        &["--config", conf, "user", "add", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    assert!(d.join("maildirs/bob/Maildir/new").is_dir());
    ok(&run(
        &["-c", conf, "alias", "add", "postmaster", "bob@example.org"],
        None,
    ));
    // csuvnetwork.com is not local in this configuration: another domain.
    ok(&run(
        &["-c", conf, "alias", "add", "fwd", "user1@csuvnetwork.com"],
        None,
    ));
    assert_eq!(
        ok(&run(&["user", "list", "-c", conf], None)),
        "bob SHA512-CRYPT\n"
    );
    let out = ok(&run(
        &["-c", conf, "deliver", "postmaster@example.org"],
        Some("hi\n"),
    ));
    assert!(out.starts_with("delivered as "), "{out}");
    let new = d.join("maildirs/bob/Maildir/new");
    let file = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    let name = file.file_name().into_string().unwrap();
    assert!(name.contains(".mx.example.org,S="), "{name}");
    let text = std::fs::read_to_string(file.path()).unwrap();
    assert!(text.contains("Received: by mx.example.org id "), "{text}");
    // The daemons' view of the same files.
    let cfg = mail_config::Config::load(Path::new(conf)).unwrap();
    let acc = std::sync::Arc::new(Accounts::open(&cfg.global.passwd_file).unwrap());
    assert!(acc.verify_password("bob", b"pw").unwrap().is_some());
    let e = err(&run(
        &["-c", "/nonexistent/mail.toml", "user", "list"],
        None,
    ));
    assert!(
        e.starts_with("mailctl: cannot read /nonexistent/mail.toml"),
        "{e}"
    );
}
