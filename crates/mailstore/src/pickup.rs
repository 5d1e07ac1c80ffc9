//! The pickup directory: how the local `sendmail` command hands a message
//! to smtpd, as Postfix's `postdrop` writes into `maildrop/` for its
//! `pickup` daemon. The message is durable in the directory when
//! `sendmail` exits 0, whether smtpd runs or not; smtpd takes it from
//! there (at start, and by polling while it runs), queues or delivers it
//! like a submission from the local host, and only then removes the file.
//!
//! A file is written as `<name>.tmp`, flushed, then renamed to
//! `<name>.msg` and the directory flushed; readers ignore `.tmp` files
//! (smtpd removes those older than an hour: a `sendmail` that died while
//! writing). Format: a text header (`csuv-pickup 1`, `user`, `from`, one
//! `rcpt` per recipient, tab-separated), an empty line, the message with
//! CRLF line ends.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::util::{fsync_dir, io_err, os_random_u64};
use crate::{Error, Result};

const MAGIC: &str = "csuv-pickup 1";

/// The pickup directory's name inside smtpd's `queue_directory`.
pub const DIR_NAME: &str = "pickup";

/// A temporary file older than this belongs to a `sendmail` that died.
pub const STALE_TMP: Duration = Duration::from_secs(3600);

/// A message handed over by `sendmail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The local user who ran `sendmail` (for the logs and `Received:`).
    pub user: String,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The message, CRLF line ends.
    pub content: Vec<u8>,
}

fn field_ok(s: &str) -> bool {
    !s.contains(['\t', '\r', '\n'])
}

/// Writes `msg` into `dir` durably; returns the file's path.
pub fn drop_message(dir: &Path, msg: &Dropped) -> Result<PathBuf> {
    if msg.recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let mut fields = vec![msg.user.as_str(), msg.sender.as_str()];
    fields.extend(msg.recipients.iter().map(String::as_str));
    if let Some(bad) = fields.iter().find(|f| !field_ok(f)) {
        return Err(Error::BadName((*bad).to_owned()));
    }
    let sender = if msg.sender.is_empty() {
        "<>"
    } else {
        &msg.sender
    };
    let mut head = format!("{MAGIC}\nuser\t{}\nfrom\t{sender}\n", msg.user);
    for r in &msg.recipients {
        head.push_str(&format!("rcpt\t{r}\n"));
    }
    head.push('\n');
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.{:09}.{}.{:016x}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id(),
        os_random_u64()
    );
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(format!("{name}.msg"));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(head.as_bytes()).map_err(io_err(&tmp))?;
        f.write_all(&msg.content).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// Parses a pickup file's bytes.
pub fn parse(bytes: &[u8]) -> std::result::Result<Dropped, String> {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no end of header")?;
    let head = std::str::from_utf8(bytes.get(..end).unwrap_or_default())
        .map_err(|_| "header is not UTF-8")?;
    let mut lines = head.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("not a pickup file (expected {MAGIC:?})"));
    }
    let mut msg = Dropped {
        user: String::new(),
        sender: String::new(),
        recipients: Vec::new(),
        content: bytes.get(end + 2..).unwrap_or_default().to_vec(),
    };
    for line in lines {
        let (key, value) = line
            .split_once('\t')
            .ok_or("a header line without a value")?;
        match key {
            "user" => msg.user = value.to_owned(),
            "from" if value == "<>" => msg.sender = String::new(),
            "from" => msg.sender = value.to_owned(),
            "rcpt" => msg.recipients.push(value.to_owned()),
            _ => {}
        }
    }
    if msg.recipients.is_empty() {
        return Err("no recipients".into());
    }
    Ok(msg)
}

/// The messages waiting in `dir`, oldest first (by name); removes
/// temporary files older than [`STALE_TMP`].
pub fn waiting(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("msg") => out.push(path),
            Some("tmp") => {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(&path);
                }
            }
            _ => {}
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one waiting message.
pub fn read(path: &Path) -> Result<Dropped> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    parse(&bytes).map_err(|why| Error::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, why),
    })
}

/// Removes a message once smtpd has taken responsibility for it.
pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    fsync_dir(&crate::util::parent_dir(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Dropped {
        Dropped {
            user: "cron".into(),
            sender: "cron@mail.csuvnetwork.com".into(),
            recipients: vec!["user1@csuvnetwork.com".into(), "x@example.org".into()],
            content: b"Subject: job\r\n\r\n\r\ndone\r\n".to_vec(),
        }
    }

    #[test]
    fn drop_list_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let p = drop_message(dir.path(), &msg()).unwrap();
        let q = drop_message(
            dir.path(),
            &Dropped {
                sender: String::new(),
                ..msg()
            },
        )
        .unwrap();
        fs::write(dir.path().join("half.tmp"), "x").unwrap();
        let w = waiting(dir.path()).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(read(&p).unwrap(), msg());
        assert_eq!(read(&q).unwrap().sender, "");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(waiting(dir.path()).unwrap(), [q]);
        // A fresh temporary file is another sendmail still writing.
        assert!(dir.path().join("half.tmp").exists());
    }

    #[test]
    fn refuses_what_would_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = msg();
        m.recipients.push("a\tb".into());
        assert!(drop_message(dir.path(), &m).is_err());
        m.recipients.clear();
        assert!(drop_message(dir.path(), &m).is_err());
        assert!(parse(b"csuv-pickup 1\nuser\tu\nfrom\t<>\n\nbody").is_err());
        assert!(parse(b"garbage").is_err());
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
