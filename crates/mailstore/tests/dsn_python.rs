//! Notifications built by `mailstore::dsn` as Python's `email` package
//! reads them (`policy=email.policy.default`): a second, independent MIME
//! parser. Skipped when `python3` is not installed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use mailstore::dsn::{
    Action, DsnBuilder, DsnEvent, Envid, Notice, Orcpt, RecipientStatus, Ret, Status,
};

const CHECK: &str = r#"
import sys, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
def out(k, v):
    print(f"{k}={v}")
out("type", m.get_content_type())
out("report-type", m.get_param("report-type"))
out("subject", m["subject"])
out("auto-submitted", m["auto-submitted"])
out("from", m["from"])
out("defects", len(m.defects) + sum(len(p.defects) for p in m.walk()))
parts = m.get_payload()
out("parts", len(parts))
out("part1", parts[0].get_content_type())
out("text-has-host", "This is the mail system at host mail.csuvnetwork.com." in parts[0].get_content())
ds = parts[1]
out("part2", ds.get_content_type())
groups = ds.get_payload()
out("groups", len(groups))
out("reporting-mta", groups[0]["Reporting-MTA"])
out("envid", groups[0]["Original-Envelope-Id"])
for i, g in enumerate(groups[1:]):
    for f in ("Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code", "Will-Retry-Until"):
        if g[f] is not None:
            out(f"r{i}.{f}", " ".join(str(g[f]).split()))
orig = parts[2]
out("part3", orig.get_content_type())
if orig.get_content_type() == "message/rfc822":
    inner = orig.get_payload()[0]
    out("inner-subject", inner["subject"])
    out("inner-body", inner.get_payload(decode=True).decode("utf-8").strip())
else:
    out("headers-has-subject", "Subject: caf" in orig.get_content())
"#;

fn python(message: &[u8]) -> Option<Vec<String>> {
    let child = Command::new("python3")
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: cannot run python3: {e}");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

fn has(lines: &[String], want: &str) {
    assert!(
        lines.iter().any(|l| l == want),
        "{want:?} not in {lines:#?}"
    );
}

const ORIGINAL: &[u8] =
    "From: user2@csuvnetwork.com\r\nTo: bob@example.org\r\nSubject: caf\u{e9}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nna\u{ef}ve\r\n"
        .as_bytes();

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

#[test]
fn failed_notification_parses_as_rfc3464() {
    let notice = Notice::Sender("user2@csuvnetwork.com".into());
    let envid = Envid::parse("QQ+2B314159").unwrap();
    let mut bob = RecipientStatus::new("bob@example.org", Action::Failed, Status::new(5, 1, 1));
    bob.original = Some(Orcpt::parse("rfc822;Bob@example.org").unwrap());
    bob.remote_mta = Some("mx.example.org".into());
    bob.diagnostic = Some(format!(
        "550 5.1.1 <bob@example.org>: Recipient address rejected: {}",
        "very long explanation ".repeat(10)
    ));
    let mut carol = RecipientStatus::new("carol@example.org", Action::Failed, Status::new(5, 0, 0));
    carol.reason = "queue lifetime exceeded".into();
    let dsn = DsnBuilder::new(
        DsnEvent::Failure,
        "mail.csuvnetwork.com",
        "4XyZ12",
        &notice,
        "4XyZ12.1796000100",
        t(1_796_000_000),
        t(1_796_000_100),
    )
    .envid(Some(&envid))
    .ret(Some(Ret::Full))
    .recipient(bob)
    .recipient(carol)
    .build(ORIGINAL)
    .unwrap();
    assert!(dsn.eight_bit);
    let Some(l) = python(&dsn.message) else {
        return;
    };
    has(&l, "type=multipart/report");
    has(&l, "report-type=delivery-status");
    has(&l, "subject=Undelivered Mail Returned to Sender");
    has(&l, "auto-submitted=auto-replied");
    // The policy drops the comment "(Mail Delivery System)".
    has(&l, "from=MAILER-DAEMON@mail.csuvnetwork.com");
    has(&l, "defects=0");
    has(&l, "parts=3");
    has(&l, "part1=text/plain");
    has(&l, "text-has-host=True");
    has(&l, "part2=message/delivery-status");
    has(&l, "groups=3");
    has(&l, "reporting-mta=dns; mail.csuvnetwork.com");
    has(&l, "envid=QQ+314159");
    has(&l, "r0.Original-Recipient=rfc822; Bob@example.org");
    has(&l, "r0.Final-Recipient=rfc822; bob@example.org");
    has(&l, "r0.Action=failed");
    has(&l, "r0.Status=5.1.1");
    has(&l, "r0.Remote-MTA=dns; mx.example.org");
    has(
        &l,
        &format!(
            "r0.Diagnostic-Code=smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: {}",
            "very long explanation ".repeat(10).trim_end()
        ),
    );
    has(&l, "r1.Final-Recipient=rfc822; carol@example.org");
    has(&l, "r1.Status=5.0.0");
    has(&l, "part3=message/rfc822");
    has(&l, "inner-subject=caf\u{e9}");
    has(&l, "inner-body=na\u{ef}ve");
}

#[test]
fn delayed_notification_parses_as_rfc3464() {
    let notice = Notice::Sender("user2@csuvnetwork.com".into());
    let mut carol =
        RecipientStatus::new("carol@example.org", Action::Delayed, Status::new(4, 4, 1));
    carol.reason = "connect to mx.example.org[192.0.2.25]:25: Connection refused".into();
    carol.will_retry_until = Some(t(1_796_432_000));
    let dsn = DsnBuilder::new(
        DsnEvent::Delay,
        "mail.csuvnetwork.com",
        "4XyZ12",
        &notice,
        "4XyZ12.1796014400",
        t(1_796_000_000),
        t(1_796_014_400),
    )
    .delay_times(
        Duration::from_secs(4 * 3600),
        Duration::from_secs(5 * 86_400),
    )
    .recipient(carol)
    .build(ORIGINAL)
    .unwrap();
    let Some(l) = python(&dsn.message) else {
        return;
    };
    has(&l, "type=multipart/report");
    has(&l, "report-type=delivery-status");
    has(&l, "subject=Delayed Mail (still being retried)");
    has(&l, "defects=0");
    has(&l, "part2=message/delivery-status");
    has(&l, "groups=2");
    has(&l, "envid=None");
    has(&l, "r0.Action=delayed");
    has(&l, "r0.Status=4.4.1");
    has(&l, "r0.Will-Retry-Until=Sat, 5 Dec 2026 00:53:20 +0000");
    has(&l, "part3=text/rfc822-headers");
    has(&l, "headers-has-subject=True");
}
