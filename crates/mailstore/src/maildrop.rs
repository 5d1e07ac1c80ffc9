//! A POP3 maildrop: exclusive access to one Maildir for one session.
//!
//! RFC 1939 section 8 asks for exclusive access to the maildrop during a
//! session. The lock is an `flock` on `mailstore-pop3.lock` inside the
//! Maildir: the kernel drops it when the holding process dies, so a crash
//! can never leave a maildrop locked. Deliveries take no lock: they only add
//! files to `new/` with fresh names, which never disturbs a session's
//! snapshot; they show up in the next session.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::crlf::{pop_size_of, CrlfReader};
use crate::util::{fsync_dir, io_err};
use crate::{Error, Result};

/// Name of the lock file inside a Maildir.
pub const LOCK_FILE: &str = "mailstore-pop3.lock";

/// An expunge of fewer messages than this runs on the calling thread.
const UNLINKS_PER_THREAD: usize = 32;
/// Most threads one expunge uses.
const MAX_UNLINK_THREADS: usize = 16;

/// One message of a maildrop snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Unique id for UIDL (RFC 1939 section 7): 1 to 70 characters in
    /// 0x21..=0x7E, derived from the file's Maildir base name only, so it
    /// never changes for the life of the message.
    pub uid: String,
    /// Size in octets with CRLF line ends, exactly the bytes
    /// [`Maildrop::open_message`] yields.
    pub size: u64,
    name: String,
    in_new: bool,
}

/// A locked, snapshotted maildrop. Dropping it without [`Maildrop::finish`]
/// changes nothing (RFC 1939: no QUIT, no UPDATE state) and releases the lock.
#[derive(Debug)]
pub struct Maildrop {
    user: String,
    dir: PathBuf,
    messages: Vec<MessageInfo>,
    seen: Vec<bool>,
    /// `new/` and `cur/`, open: messages are opened relative to them, so
    /// a RETR costs one name lookup, not a walk of the whole path.
    new_dir: File,
    cur_dir: File,
    // Held for the lifetime of the session; the flock goes with it.
    _lock: File,
}

/// What [`Maildrop::finish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishReport {
    /// Messages removed.
    pub deleted: usize,
    /// Messages moved from `new/` to `cur/` (or given the `S` flag).
    pub marked_seen: usize,
}

impl Maildrop {
    pub(crate) fn open(user: &str, dir: PathBuf) -> Result<Self> {
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::InUse(user.to_string())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let messages = scan(&dir)?;
        let open_dir = |sub: &str| {
            let p = dir.join(sub);
            File::open(&p).map_err(io_err(&p))
        };
        Ok(Self {
            user: user.to_string(),
            seen: vec![false; messages.len()],
            new_dir: open_dir("new")?,
            cur_dir: open_dir("cur")?,
            dir,
            messages,
            _lock: lock,
        })
    }

    /// The account this maildrop belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The snapshot taken at open, oldest first; POP3 message number `n`
    /// is `messages()[n - 1]`.
    pub fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    /// Total POP3 size of the snapshot (for STAT).
    pub fn total_size(&self) -> u64 {
        self.messages.iter().map(|m| m.size).sum()
    }

    /// Opens message `index` (0-based) as a reader yielding CRLF line ends;
    /// it yields exactly [`MessageInfo::size`] bytes.
    pub fn open_message(&self, index: usize) -> Result<MessageReader> {
        let m = self
            .messages
            .get(index)
            .ok_or(Error::NoSuchMessage(index))?;
        Ok(MessageReader {
            inner: CrlfReader::new(self.open_file(m)?),
        })
    }

    /// Reads message `index` whole into `out` (replacing its content) with
    /// CRLF line ends, using `raw` as scratch space for the file's bytes.
    /// For small messages, where a reusable pair of buffers beats a reader
    /// with a buffer of its own per message.
    pub fn read_message(&self, index: usize, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        let m = self
            .messages
            .get(index)
            .ok_or(Error::NoSuchMessage(index))?;
        let mut f = self.open_file(m)?;
        raw.clear();
        out.clear();
        let want = usize::try_from(m.size).unwrap_or(0);
        raw.reserve(want + 1);
        f.read_to_end(raw)
            .map_err(|e| io_err(&self.dir.join(&m.name))(e))?;
        crate::crlf::lf_to_crlf(raw, out);
        Ok(())
    }

    /// Opens where the snapshot saw the message: one lookup in an open
    /// directory. Only if another client renamed it since is it looked for
    /// by base name.
    fn open_file(&self, m: &MessageInfo) -> Result<File> {
        let dir = if m.in_new {
            &self.new_dir
        } else {
            &self.cur_dir
        };
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC;
        match rustix::fs::openat(dir, m.name.as_str(), flags, rustix::fs::Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::NOENT) => {
                let path = self.locate(m)?;
                File::open(&path).map_err(io_err(&path))
            }
            Err(e) => {
                let sub = if m.in_new { "new" } else { "cur" };
                Err(io_err(&self.dir.join(sub).join(&m.name))(e.into()))
            }
        }
    }

    /// Marks message `index` as seen (after RETR): at [`Maildrop::finish`]
    /// it moves from `new/` to `cur/` with the `S` flag.
    pub fn mark_seen(&mut self, index: usize) -> Result<()> {
        let s = self
            .seen
            .get_mut(index)
            .ok_or(Error::NoSuchMessage(index))?;
        *s = true;
        Ok(())
    }

    /// The POP3 UPDATE state (RFC 1939 section 6): removes the messages
    /// whose 0-based indices are in `deleted`, files seen messages into
    /// `cur/` with `:2,S`, fsyncs the directories and releases the lock.
    /// Every step is attempted; the first error is returned after.
    pub fn finish(self, deleted: &[usize]) -> Result<FinishReport> {
        let del: HashSet<usize> = deleted.iter().copied().collect();
        if let Some(&bad) = del.iter().find(|&&i| i >= self.messages.len()) {
            return Err(Error::NoSuchMessage(bad));
        }
        let mut report = FinishReport::default();
        let mut first_err = None;
        let mut doomed = Vec::with_capacity(del.len());
        for (i, m) in self.messages.iter().enumerate() {
            if del.contains(&i) {
                doomed.push(m);
            } else if self.seen.get(i).copied().unwrap_or(false) {
                match self.mark_seen_on_disk(m) {
                    Ok(true) => report.marked_seen += 1,
                    Ok(false) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        // Unlinking a file whose blocks are allocated can wait on the disk
        // (ext4 frees the blocks; with online discard that takes
        // milliseconds). Such waits overlap across threads, so a large
        // expunge runs them side by side.
        let threads = (doomed.len() / UNLINKS_PER_THREAD).clamp(1, MAX_UNLINK_THREADS);
        let per = doomed.len().div_ceil(threads).max(1);
        let this = &self;
        let results: Vec<(usize, Option<Error>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = doomed
                .chunks(per)
                .map(|chunk| scope.spawn(move || this.remove_all(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| (0, Some(Error::Hash("unlink thread panicked".into()))))
                })
                .collect()
        });
        for (n, err) in results {
            report.deleted += n;
            if let Some(e) = err {
                first_err.get_or_insert(e);
            }
        }
        for sub in ["new", "cur"] {
            if let Err(e) = fsync_dir(&self.dir.join(sub)) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Removes these messages' files: how many were removed, and the first
    /// error. A file already gone (another client removed it) is no error.
    fn remove_all(&self, messages: &[&MessageInfo]) -> (usize, Option<Error>) {
        let mut removed = 0;
        let mut first_err = None;
        for m in messages {
            let r = self.locate(m).and_then(|p| match fs::remove_file(&p) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err(&p)(e)),
            });
            match r {
                Ok(true) => removed += 1,
                Ok(false) | Err(Error::MessageGone(_)) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        (removed, first_err)
    }

    fn mark_seen_on_disk(&self, m: &MessageInfo) -> Result<bool> {
        let from = match self.locate(m) {
            Ok(p) => p,
            Err(Error::MessageGone(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let fname = from
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (base, info) = split_info(&fname);
        let flags = match info.and_then(|i| i.strip_prefix("2,")) {
            Some(f) if f.contains('S') => {
                if from.parent().and_then(Path::file_name) == Some("cur".as_ref()) {
                    return Ok(false);
                }
                f.to_string()
            }
            Some(f) => {
                // Flags stay in ASCII order, as the Maildir spec requires.
                let mut v: Vec<char> = f.chars().chain(std::iter::once('S')).collect();
                v.sort_unstable();
                v.into_iter().collect()
            }
            None => "S".to_string(),
        };
        let to = self.dir.join("cur").join(format!("{base}:2,{flags}"));
        fs::rename(&from, &to).map_err(io_err(&to))?;
        Ok(true)
    }

    /// Finds a message's current file: where the snapshot saw it, or, if
    /// another client renamed it since, by its base name in `cur/`/`new/`.
    fn locate(&self, m: &MessageInfo) -> Result<PathBuf> {
        let sub = if m.in_new { "new" } else { "cur" };
        let p = self.dir.join(sub).join(&m.name);
        if p.exists() {
            return Ok(p);
        }
        let (base, _) = split_info(&m.name);
        for sub in ["cur", "new"] {
            let d = self.dir.join(sub);
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if split_info(&n).0 == base {
                    return Ok(e.path());
                }
            }
        }
        Err(Error::MessageGone(m.uid.clone()))
    }
}

/// A message's content with CRLF line ends (see [`Maildrop::open_message`]).
#[derive(Debug)]
pub struct MessageReader {
    inner: CrlfReader<File>,
}

impl Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Splits a Maildir file name into base name and info (after `:`).
fn split_info(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    }
}

/// The POP3 size from a `,W=<n>` field of the base name, if present.
fn size_from_name(base: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

/// The UIDL for a base name: the base name up to its first `,` (the size
/// fields are redundant) when it is 1..=70 characters of 0x21..=0x7E,
/// otherwise `H` + the MD5 hex of the whole base name (still derived from the
/// name alone, so equally stable).
pub fn uid_for(base: &str) -> String {
    let short = base.split(',').next().unwrap_or(base);
    let ok =
        |s: &str| !s.is_empty() && s.len() <= 70 && s.bytes().all(|b| (0x21..=0x7E).contains(&b));
    if ok(short) {
        short.to_string()
    } else {
        let digest = Md5::digest(base.as_bytes());
        let mut s = String::from("H");
        for b in digest {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Sort key: delivery time from the leading `<secs>` and `M<usecs>`, then
/// the name, so numbering follows arrival order.
fn sort_key(base: &str) -> (u64, u64, String) {
    let mut parts = base.splitn(2, '.');
    let secs = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let usecs = parts
        .next()
        .and_then(|r| r.strip_prefix('M'))
        .map(|r| {
            r.bytes().take_while(u8::is_ascii_digit).fold(0u64, |a, d| {
                a.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            })
        })
        .unwrap_or(0);
    (secs, usecs, base.to_string())
}

fn scan(dir: &Path) -> Result<Vec<MessageInfo>> {
    let mut found = Vec::new();
    let mut uids = HashSet::new();
    // cur/ first: if a crash ever left one message in both, keep one.
    for (sub, in_new) in [("cur", false), ("new", true)] {
        let d = dir.join(sub);
        let rd = fs::read_dir(&d).map_err(io_err(&d))?;
        for e in rd {
            let e = e.map_err(io_err(&d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_file() {
                continue;
            }
            let (base, _) = split_info(&name);
            let uid = uid_for(base);
            if !uids.insert(uid.clone()) {
                continue;
            }
            let size = match size_from_name(base) {
                Some(s) => s,
                None => {
                    let p = e.path();
                    match File::open(&p) {
                        Ok(f) => pop_size_of(f).map_err(io_err(&p))?,
                        // Deleted between listing and opening.
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io_err(&p)(err)),
                    }
                }
            };
            found.push((
                sort_key(base),
                MessageInfo {
                    uid,
                    size,
                    name,
                    in_new,
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter().map(|(_, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert_eq!(uid_for("1.M2P3Q4R5.host,S=10,W=12"), "1.M2P3Q4R5.host");
        let long = format!("1.{}", "x".repeat(80));
        let u = uid_for(&long);
        assert_eq!(u.len(), 33);
        assert!(u.starts_with('H'));
        assert_eq!(u, uid_for(&long));
        assert!(uid_for("a b").starts_with('H'));
        assert!(uid_for("ü").starts_with('H'));
    }

    #[test]
    fn sizes_from_names() {
        assert_eq!(size_from_name("1.x,S=10,W=12"), Some(12));
        assert_eq!(size_from_name("1.x,S=10"), None);
        assert_eq!(size_from_name("1.x,W=zz"), None);
    }

    #[test]
    fn ordering_by_time() {
        let mut v = ["10.M5P1.h", "9.M999P1.h", "10.M40P1.h", "junk"];
        v.sort_by_key(|b| sort_key(b));
        assert_eq!(v, ["9.M999P1.h", "10.M5P1.h", "10.M40P1.h", "junk"]);
    }
}
