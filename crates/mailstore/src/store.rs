//! The Maildir store: per-user Maildirs under one root, durable delivery,
//! queue ids and stale `tmp/` cleanup.
//!
//! Delivery follows the Maildir rules (<https://cr.yp.to/proto/maildir.html>)
//! as Dovecot implements them: write in `tmp/`, fsync the file, move into
//! `new/`, fsync `new/`. Only then is the delivery reported done, so an SMTP
//! server can answer `250` (RFC 5321 section 6.1: a server that accepts a
//! message takes responsibility for it).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::crlf::{PopSizer, ToLf};
use crate::maildrop::Maildrop;
use crate::util::{fsync_dir, io_err, os_random_u64, rfc5322_date, splitmix64, unix_parts};
use crate::{Error, Result};

/// Files in `tmp/` older than this are leftovers of crashed deliveries
/// (the Maildir specification's 36 hours).
pub const STALE_TMP_AGE: Duration = Duration::from_secs(36 * 3600);

/// Write buffer size: deliveries hit the disk in chunks of this many bytes,
/// so memory use is bounded whatever the message size.
const WRITE_BUF: usize = 64 * 1024;

/// The SMTP protocol a message arrived by, as written in the `with` clause
/// of the `Received:` header (RFC 3848).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `HELO` session.
    Smtp,
    /// `EHLO` session.
    Esmtp,
    /// `EHLO` with successful AUTH.
    Esmtpa,
    /// `EHLO` over TLS.
    Esmtps,
    /// `EHLO` over TLS with successful AUTH.
    Esmtpsa,
    /// `EHLO` and `MAIL ... SMTPUTF8` (RFC 6531 section 3.7.3), and
    /// with TLS, AUTH or both: `UTF8SMTP`, `UTF8SMTPS`, `UTF8SMTPA`,
    /// `UTF8SMTPSA`.
    Utf8smtp,
    /// `UTF8SMTP` with successful AUTH.
    Utf8smtpa,
    /// `UTF8SMTP` over TLS.
    Utf8smtps,
    /// `UTF8SMTP` over TLS with successful AUTH.
    Utf8smtpsa,
    /// Local injection (no SMTP client): the `Received:` header then has
    /// neither `from` nor `with` clause, like Postfix's pickup.
    Local,
}

impl Protocol {
    /// The keyword for the `with` clause.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtpa => "ESMTPA",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Esmtpsa => "ESMTPSA",
            Protocol::Utf8smtp => "UTF8SMTP",
            Protocol::Utf8smtpa => "UTF8SMTPA",
            Protocol::Utf8smtps => "UTF8SMTPS",
            Protocol::Utf8smtpsa => "UTF8SMTPSA",
            Protocol::Local => "local",
        }
    }
}

/// What the SMTP server knows about a message when it starts storing it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Reverse-path without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// Forward-paths as the client gave them (used for the `for` clause
    /// of `Received:` when there is exactly one).
    pub recipients: Vec<String>,
    /// Local accounts to deliver to (from [`crate::Router::route`]);
    /// duplicates are delivered once.
    pub mailboxes: Vec<String>,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// How the message arrived.
    pub protocol: Protocol,
    /// For a message received over TLS, what Postfix writes about the
    /// session in `Received:` (`using TLSv1.3 with cipher ... (256/256
    /// bits) ...`), without parentheses.
    pub tls: Option<String>,
    /// Our host name for the `by` clause (Postfix's `myhostname`).
    pub our_hostname: String,
    /// The queue id reported in `250 2.0.0 Ok: queued as <id>`.
    pub queue_id: String,
    /// Arrival time (a value, so tests are deterministic).
    pub time: SystemTime,
}

/// The outcome of a committed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The queue id of the envelope.
    pub queue_id: String,
    /// The Maildir file name used in every recipient's `new/`.
    pub file_name: String,
    /// Bytes on disk (LF line ends, trace headers included).
    pub disk_size: u64,
    /// Bytes as POP3 counts them (CRLF line ends).
    pub pop3_size: u64,
    /// The delivered files, one per mailbox.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Host name with the characters the Maildir spec reserves escaped.
    host_part: String,
    seed: u64,
    counter: AtomicU64,
}

/// A Maildir store rooted at one directory: user `NAME`'s Maildir is
/// `<root>/NAME/Maildir` (so `<root>/NAME` is the home directory that
/// Dovecot's `mail_location = maildir:~/Maildir` and Postfix's
/// `home_mailbox = Maildir/` expect).
///
/// Cheap to clone (an `Arc`), `Send + Sync`; all methods block on file I/O,
/// so async hosts call them from `spawn_blocking` or a dedicated thread.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`, using the
    /// machine's host name in file names.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::with_hostname(root, &crate::util::system_hostname())
    }

    /// Like [`Store::open`] with an explicit host name for file names.
    pub fn with_hostname(root: impl Into<PathBuf>, hostname: &str) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                host_part: escape_host(hostname),
                seed: os_random_u64(),
                counter: AtomicU64::new(0),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Path of `user`'s Maildir (whether or not it exists).
    pub fn maildir_path(&self, user: &str) -> PathBuf {
        self.inner.root.join(user).join("Maildir")
    }

    /// Creates `user`'s Maildir (`cur/`, `new/`, `tmp/`) if missing and
    /// makes the new directories durable. Returns its path.
    pub fn create_maildir(&self, user: &str) -> Result<PathBuf> {
        check_mailbox_name(user)?;
        let md = self.maildir_path(user);
        create_maildir_at(&md)?;
        Ok(md)
    }

    /// Starts a delivery for `env`. The message body is then streamed with
    /// [`Delivery::write`] and made durable by [`Delivery::commit`];
    /// dropping the delivery (or [`Delivery::abort`]) removes the partial file.
    pub fn begin_delivery(&self, env: &Envelope) -> Result<Delivery> {
        let mailboxes = unique_mailboxes(&env.mailboxes)?;
        let first = mailboxes.first().ok_or(Error::NoRecipients)?;
        let base = self.unique_base(env.time);
        let (tmp_path, file) = self.create_tmp(first, &base, false)?;
        let mut d = Delivery {
            store: self.clone(),
            tmp_path: Some(tmp_path),
            file: Some(file),
            base,
            mailboxes,
            queue_id: env.queue_id.clone(),
            conv: ToLf::new(),
            sizer: PopSizer::new(),
            buf: Vec::with_capacity(WRITE_BUF + 1024),
            input_bytes: 0,
        };
        let headers = trace_headers(env);
        d.buf.extend_from_slice(headers.as_bytes());
        Ok(d)
    }

    /// Delivers the message read from `message` (SMTP form: CRLF line
    /// ends, dot-unstuffed) to `env`'s mailboxes: [`Store::begin_delivery`],
    /// the content in chunks (never whole in memory), [`Delivery::commit`].
    /// Durable when it returns `Ok`.
    pub fn deliver(&self, env: &Envelope, message: &mut dyn io::Read) -> Result<DeliveryReport> {
        let mut d = self.begin_delivery(env)?;
        let mut buf = vec![0u8; WRITE_BUF];
        loop {
            let n = match message.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Input(e)),
            };
            d.write(buf.get(..n).unwrap_or_default())?;
        }
        d.commit()
    }

    /// Opens `user`'s maildrop for a POP3 session with exclusive access
    /// (RFC 1939 section 8). See [`Maildrop`].
    pub fn open_maildrop(&self, user: &str) -> Result<Maildrop> {
        check_mailbox_name(user)?;
        let md = self.maildir_path(user);
        create_maildir_at(&md)?;
        Maildrop::open(user, md)
    }

    /// Creates `tmp/<base>` in `user`'s Maildir (creating the Maildir on
    /// first delivery, as Postfix's local(8) does).
    ///
    /// With `replace`, a file already there is removed first: the caller
    /// owns the name (a queued message's base name, delivered by one job of
    /// the one process that holds the queue lock), so such a file can only
    /// be the leftover of an earlier attempt, typically of a process killed
    /// mid-delivery. Without `replace` an existing file is an error
    /// (`O_EXCL`), as the Maildir spec asks for fresh names.
    pub(crate) fn create_tmp(
        &self,
        user: &str,
        base: &str,
        replace: bool,
    ) -> Result<(PathBuf, File)> {
        let md = self.maildir_path(user);
        let tmp_path = md.join("tmp").join(base);
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        };
        match open(&tmp_path) {
            Ok(f) => Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_maildir_at(&md)?;
                let f = open(&tmp_path).map_err(io_err(&tmp_path))?;
                Ok((tmp_path, f))
            }
            Err(e) if replace && e.kind() == io::ErrorKind::AlreadyExists => {
                tracing::info!(file = %tmp_path.display(), "replacing the tmp file of an interrupted delivery");
                match fs::remove_file(&tmp_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&tmp_path)(e)),
                }
                let f = open(&tmp_path).map_err(io_err(&tmp_path))?;
                Ok((tmp_path, f))
            }
            Err(e) => Err(io_err(&tmp_path)(e)),
        }
    }

    /// Moves the fsynced file `tmp` into `new/<name>` of every mailbox
    /// (hard links for the extra ones, a copy across file systems; the first
    /// by rename, which also retires the tmp name) and fsyncs those
    /// directories. On error, links already placed are taken back, so that
    /// no 250 is owed for a partial delivery and a retry does not duplicate.
    /// With `durable` false the caller flushes later (the queue's
    /// checkpoint) and the file need not have been fsynced.
    ///
    /// `before_rename` runs once the extra links are in place, just before
    /// the rename that makes the delivery complete (the queue writes its
    /// "placed" mark there; see [`crate::Queue`]).
    pub(crate) fn place(
        &self,
        tmp: &Path,
        name: &str,
        mailboxes: &[String],
        durable: bool,
        before_rename: impl FnOnce(),
    ) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::with_capacity(mailboxes.len());
        let mut dirs = Vec::with_capacity(mailboxes.len());
        let placed = (|| {
            for user in mailboxes.iter().skip(1) {
                let md = self.maildir_path(user);
                let dest = md.join("new").join(name);
                link_or_copy(tmp, &dest, &md)?;
                paths.push(dest);
                dirs.push(md.join("new"));
            }
            let first = mailboxes.first().ok_or(Error::NoRecipients)?;
            let md = self.maildir_path(first);
            let dest = md.join("new").join(name);
            before_rename();
            fs::rename(tmp, &dest).map_err(io_err(&dest))?;
            Ok((md, dest))
        })();
        let (md, dest) = match placed {
            Ok(v) => v,
            Err(e) => {
                for p in &paths {
                    let _ = fs::remove_file(p);
                }
                return Err(e);
            }
        };
        paths.insert(0, dest);
        dirs.insert(0, md.join("new"));
        if durable {
            for d in &dirs {
                fsync_dir(d)?;
            }
        }
        Ok(paths)
    }

    /// Whether `user`'s Maildir already holds the message with base name
    /// `base` and exactly `content`, in `new/` or (seen, with flags) in
    /// `cur/`. Used when a delivery is repeated after a crash or an error,
    /// so it is not doubled. A copy found is made durable (file and
    /// directory: whoever put it there may have died before doing so); a
    /// copy whose content differs (torn by a crash before it was flushed)
    /// is removed, so the delivery is done again.
    pub(crate) fn holds(&self, user: &str, base: &str, content: &[u8]) -> Result<bool> {
        let md = self.maildir_path(user);
        let matches = |n: &str| {
            n.strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([',', ':']))
        };
        for sub in ["new", "cur"] {
            let dir = md.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(io_err(&dir))?;
                if !matches(&e.file_name().to_string_lossy()) {
                    continue;
                }
                let path = e.path();
                let same = fs::read(&path).map_err(io_err(&path))? == content;
                if same {
                    File::open(&path)
                        .and_then(|f| f.sync_all())
                        .map_err(io_err(&path))?;
                } else {
                    tracing::warn!(file = %path.display(), "removing a torn copy before delivering again");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
                fsync_dir(&dir)?;
                return Ok(same);
            }
        }
        Ok(false)
    }

    /// Removes files in every Maildir's `tmp/` whose modification time is
    /// older than `max_age` before `now` (use [`STALE_TMP_AGE`]): leftovers
    /// of deliveries interrupted by a crash. Returns how many were removed.
    /// Call at start and then periodically (e.g. hourly).
    pub fn clean_stale_tmp(&self, now: SystemTime, max_age: Duration) -> Result<usize> {
        let root = &self.inner.root;
        let mut removed = 0;
        let users = match fs::read_dir(root) {
            Ok(r) => r,
            Err(e) => return Err(io_err(root)(e)),
        };
        for user in users.flatten() {
            let tmp = user.path().join("Maildir").join("tmp");
            let Ok(entries) = fs::read_dir(&tmp) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > max_age);
                if old && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes the files in every Maildir's `tmp/` that this store's
    /// deliveries made (this host name in their names) in a process that
    /// has died, or in an earlier process with this one's process id:
    /// deliveries cut short by a crash, whose names nobody will finish.
    /// Returns how many were removed.
    ///
    /// Call once at start, after [`crate::Queue::open`] (which looks at
    /// such files to tell how far a delivery got) and before this process
    /// delivers anything (its own process id then names only leftovers).
    /// Files of live processes (another server sharing the store) are left
    /// alone; a process id reused since by an unrelated process keeps its
    /// files until [`Store::clean_stale_tmp`]. Without `/proc` it removes
    /// nothing.
    pub fn clean_dead_tmp(&self) -> Result<usize> {
        let proc_fs = Path::new("/proc");
        if !proc_fs.join("self").exists() {
            return Ok(0);
        }
        let me = std::process::id();
        let root = &self.inner.root;
        let users = fs::read_dir(root).map_err(io_err(root))?;
        let mut removed = 0;
        for user in users.flatten() {
            let tmp = user.path().join("Maildir").join("tmp");
            let Ok(entries) = fs::read_dir(&tmp) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = tmp_owner(&name.to_string_lossy(), &self.inner.host_part) else {
                    continue;
                };
                if pid != me && proc_fs.join(pid.to_string()).exists() {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// A new Maildir base name: `<secs>.M<usecs>P<pid>Q<n>R<random>.<host>`
    /// (Dovecot's form; unique by time, process, per-process counter and
    /// randomness, so no two deliveries anywhere share a name).
    pub(crate) fn unique_base(&self, time: SystemTime) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let r = splitmix64(self.inner.seed ^ n.rotate_left(32)) & 0xFFFF_FFFF_FFFF;
        // Use the wall clock's sub-second part for ordering within a second.
        let (secs, usecs) = unix_parts(time);
        format!(
            "{secs}.M{usecs}P{}Q{n}R{r:012x}.{}",
            std::process::id(),
            self.inner.host_part
        )
    }
}

/// The process id in a tmp/ file name that [`Store::unique_base`] made
/// for `host_part` (possibly followed by `,S=…` size fields), or `None`
/// for any other name.
fn tmp_owner(name: &str, host_part: &str) -> Option<u32> {
    let (secs, rest) = name.split_once('.')?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.strip_prefix('M')?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix('P')?;
    let (pid, rest) = rest.split_once('Q')?;
    let (_, rest) = rest.split_once('R')?;
    let (_, host) = rest.split_once('.')?;
    let host = host.split(',').next()?;
    if host != host_part {
        return None;
    }
    pid.parse().ok()
}

/// Generates Postfix-like queue ids: 12 upper-case hex digits, the first 5
/// from the microseconds of `now`, the rest from a per-process counter with a
/// random start. Unique within a process; practically unique across them.
#[derive(Debug)]
pub struct QueueIdGenerator {
    seed: u64,
    counter: AtomicU64,
}

impl Default for QueueIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueIdGenerator {
    /// A generator with a random starting point.
    pub fn new() -> Self {
        Self {
            seed: os_random_u64(),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id, e.g. `4F2A91C0B7D3`.
    pub fn next_id(&self, now: SystemTime) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (_, usecs) = unix_parts(now);
        let tail = (self.seed.wrapping_add(n)) & 0x0FFF_FFFF;
        format!("{:05X}{:07X}", usecs & 0xF_FFFF, tail)
    }
}

/// A message being delivered. Not yet visible to any reader; becomes
/// visible, durably, only when [`Delivery::commit`] returns `Ok`.
#[derive(Debug)]
pub struct Delivery {
    store: Store,
    tmp_path: Option<PathBuf>,
    file: Option<File>,
    base: String,
    mailboxes: Vec<String>,
    queue_id: String,
    conv: ToLf,
    sizer: PopSizer,
    buf: Vec<u8>,
    input_bytes: u64,
}

impl Delivery {
    /// Appends a chunk of the message in SMTP form (CRLF line ends, already
    /// dot-unstuffed, split anywhere). The content should end with the CRLF
    /// that preceded the terminating `.` line.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.input_bytes += chunk.len() as u64;
        self.conv.convert(chunk, &mut self.buf);
        if self.buf.len() >= WRITE_BUF {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// Bytes of message content received so far (without trace headers),
    /// for size limits: the host calls [`Delivery::abort`] when exceeded.
    pub fn bytes_received(&self) -> u64 {
        self.input_bytes
    }

    /// Path of the temporary file (for diagnostics).
    pub fn tmp_path(&self) -> Option<&Path> {
        self.tmp_path.as_deref()
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let (Some(file), Some(path)) = (self.file.as_mut(), self.tmp_path.as_ref()) else {
            return Err(Error::DeliveryClosed);
        };
        file.write_all(&self.buf).map_err(io_err(path))?;
        self.sizer.update(&self.buf);
        self.buf.clear();
        Ok(())
    }

    /// Makes the message durable in every mailbox: fsync the file, move it
    /// into each `new/` (hard links for extra recipients, a copy across file
    /// systems), fsync those directories. Only an `Ok` means "delivered".
    pub fn commit(mut self) -> Result<DeliveryReport> {
        let mut tail = Vec::new();
        self.conv.finish(&mut tail);
        self.buf.extend_from_slice(&tail);
        self.flush_buf()?;
        let tmp = self.tmp_path.clone().ok_or(Error::DeliveryClosed)?;
        let file = self.file.take().ok_or(Error::DeliveryClosed)?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        let name = format!("{},S={},W={}", self.base, self.sizer.disk, self.sizer.crlf);
        let paths = self
            .store
            .place(&tmp, &name, &self.mailboxes, true, || {})?;
        self.tmp_path = None;
        Ok(DeliveryReport {
            queue_id: std::mem::take(&mut self.queue_id),
            file_name: name,
            disk_size: self.sizer.disk,
            pop3_size: self.sizer.crlf,
            paths,
        })
    }

    /// Abandons the delivery and removes the temporary file.
    pub fn abort(mut self) -> Result<()> {
        self.file = None;
        match self.tmp_path.take() {
            Some(p) => fs::remove_file(&p).map_err(io_err(&p)),
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.file = None;
        if let Some(p) = self.tmp_path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `mailboxes` without duplicates, in order, each a valid directory name.
pub(crate) fn unique_mailboxes(mailboxes: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(mailboxes.len());
    let mut seen = HashSet::new();
    for m in mailboxes {
        check_mailbox_name(m)?;
        if seen.insert(m.as_str()) {
            out.push(m.clone());
        }
    }
    Ok(out)
}

/// Hard-links `src` to `dest` (creating the Maildir `md` if needed); copies
/// and fsyncs across file systems, where links are impossible.
fn link_or_copy(src: &Path, dest: &Path, md: &Path) -> Result<()> {
    let attempt = || fs::hard_link(src, dest);
    let res = match attempt() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_maildir_at(md)?;
            attempt()
        }
        r => r,
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let tmp = md.join("tmp").join(dest.file_name().unwrap_or_default());
            fs::copy(src, &tmp).map_err(io_err(&tmp))?;
            let r = File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|()| fs::rename(&tmp, dest));
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r.map_err(io_err(dest))
        }
        Err(e) => Err(io_err(dest)(e)),
    }
}

/// `mkdir -p` for a Maildir's three subdirectories, fsyncing every
/// directory it created and its parent, so that a delivery into it that is
/// reported durable really is.
pub(crate) fn create_maildir_at(md: &Path) -> Result<()> {
    if md.join("cur").is_dir() && md.join("new").is_dir() && md.join("tmp").is_dir() {
        return Ok(());
    }
    let mut created = Vec::new();
    // Record which ancestors are new so they can be fsynced.
    let mut p = md.to_path_buf();
    while !p.exists() {
        created.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    for sub in ["cur", "new", "tmp"] {
        let d = md.join(sub);
        // 0700: mail is private to the account (Dovecot and Postfix do the same).
        match fs::DirBuilder::new().recursive(true).mode(0o700).create(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&d)(e)),
        }
    }
    let mut parents: Vec<PathBuf> = created
        .iter()
        .filter_map(|c| c.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    for d in parents {
        if d.is_dir() {
            fsync_dir(&d)?;
        }
    }
    Ok(())
}

/// Rejects names that would escape the store root or be unusable as a
/// directory name.
pub(crate) fn check_mailbox_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

/// Escapes a host name for a Maildir name: `/` and `:` as the Maildir
/// specification says (`\057`, `\072`), `,` (Dovecot's field separator) as
/// `\054`, and anything outside printable ASCII likewise in octal.
fn escape_host(h: &str) -> String {
    let mut out = String::new();
    for b in h.bytes() {
        match b {
            b'/' | b':' | b',' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            0x21..=0x7E => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

/// Keeps header text on one line and free of control characters, so a
/// client-chosen value (EHLO name, address) cannot inject header lines.
fn clean(s: &str, allow_space: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || (!allow_space && c.is_whitespace()) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `Return-Path:` and the RFC 5321 section 4.4 `Received:` header, LF ends.
pub fn trace_headers(env: &Envelope) -> String {
    let return_path = clean(&env.mail_from, false).replace(['<', '>'], "?");
    format!("Return-Path: <{return_path}>\n{}", received_header(env))
}

/// The RFC 5321 section 4.4 `Received:` header alone, LF ends: what a
/// relay adds (`Return-Path:` is for the final delivery only, section
/// 4.4).
pub fn received_header(env: &Envelope) -> String {
    let helo = if env.helo.is_empty() {
        "unknown".to_string()
    } else {
        clean(&env.helo, false).replace(['(', ')'], "?")
    };
    let addr = match env.client_ip {
        IpAddr::V4(a) => format!("[{a}]"),
        IpAddr::V6(a) => format!("[IPv6:{a}]"),
    };
    let by = clean(&env.our_hostname, false);
    let id = clean(&env.queue_id, false);
    let mut h = if env.protocol == Protocol::Local {
        format!("Received: by {by} id {id}")
    } else {
        // Postfix puts the TLS clauses between `from` and `by`.
        let tls = match &env.tls {
            Some(t) => format!(
                "\n\t({})\n\t(No client certificate requested)",
                clean(t, true)
            ),
            None => String::new(),
        };
        format!(
            "Received: from {helo} ({addr}){tls}\n\tby {by} with {} id {id}",
            env.protocol.as_str(),
        )
    };
    if let [one] = env.recipients.as_slice() {
        h.push_str(&format!(
            "\n\tfor <{}>",
            clean(one, false).replace(['<', '>'], "?")
        ));
    }
    h.push_str(&format!("; {}\n", rfc5322_date(env.time)));
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::time::UNIX_EPOCH;

    /// The lab's envelope to `mailboxes`, at a fixed time.
    pub(crate) fn env(mailboxes: &[&str]) -> Envelope {
        Envelope {
            mail_from: "user2@csuvnetwork.com".into(),
            recipients: mailboxes
                .iter()
                .map(|m| format!("{m}@csuvnetwork.com"))
                .collect(),
            mailboxes: mailboxes.iter().map(|s| s.to_string()).collect(),
            helo: "client.example".into(),
            client_ip: "192.168.3.20".parse().unwrap(),
            protocol: Protocol::Esmtpa,
            tls: None,
            our_hostname: "mail.csuvnetwork.com".into(),
            queue_id: "4F2A91C0B7D3".into(),
            time: UNIX_EPOCH + Duration::from_secs(1_795_975_309),
        }
    }

    #[test]
    fn received_header_form() {
        let h = trace_headers(&env(&["user1"]));
        assert_eq!(
            h,
            "Return-Path: <user2@csuvnetwork.com>\n\
             Received: from client.example ([192.168.3.20])\n\
             \tby mail.csuvnetwork.com with ESMTPA id 4F2A91C0B7D3\n\
             \tfor <user1@csuvnetwork.com>; Sun, 29 Nov 2026 18:01:49 +0000\n"
        );
        let mut e = env(&["a", "b"]);
        e.helo = "evil\r\nX-Injected: 1".into();
        e.client_ip = "::1".parse().unwrap();
        e.mail_from = String::new();
        let h = trace_headers(&e);
        assert!(h.starts_with("Return-Path: <>\nReceived: from evil??X-Injected:?1 ([IPv6:::1])"));
        assert!(!h.contains("for <"));
        assert_eq!(h.matches('\n').count(), 3);
        let mut e = env(&["user1"]);
        e.protocol = Protocol::Esmtpsa;
        e.tls = Some("using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)".into());
        assert_eq!(
            trace_headers(&e),
            "Return-Path: <user2@csuvnetwork.com>\n\
             Received: from client.example ([192.168.3.20])\n\
             \t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))\n\
             \t(No client certificate requested)\n\
             \tby mail.csuvnetwork.com with ESMTPSA id 4F2A91C0B7D3\n\
             \tfor <user1@csuvnetwork.com>; Sun, 29 Nov 2026 18:01:49 +0000\n"
        );
        let mut e = env(&["user1"]);
        e.protocol = Protocol::Local;
        assert_eq!(
            trace_headers(&e),
            "Return-Path: <user2@csuvnetwork.com>\n\
             Received: by mail.csuvnetwork.com id 4F2A91C0B7D3\n\
             \tfor <user1@csuvnetwork.com>; Sun, 29 Nov 2026 18:01:49 +0000\n"
        );
    }

    #[test]
    fn deliver_one_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "host/x:y").unwrap();
        let mut d = store.begin_delivery(&env(&["user1"])).unwrap();
        d.write(b"Subject: hi\r").unwrap();
        d.write(b"\n\r\nbody\r\n").unwrap();
        assert_eq!(d.bytes_received(), 21);
        let r = d.commit().unwrap();
        assert!(
            r.file_name.contains(".host\\057x\\072y,S="),
            "{}",
            r.file_name
        );
        let disk = fs::read(&r.paths[0]).unwrap();
        assert!(disk.ends_with(b"\nSubject: hi\n\nbody\n"));
        assert_eq!(disk.len() as u64, r.disk_size);
        let lines = disk.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(r.pop3_size, r.disk_size + lines);
        assert!(r
            .file_name
            .ends_with(&format!(",S={},W={}", r.disk_size, r.pop3_size)));
        let md = store.maildir_path("user1");
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let mut back = Vec::new();
        crate::crlf::CrlfReader::new(File::open(&r.paths[0]).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len() as u64, r.pop3_size);
    }

    #[test]
    fn multiple_recipients_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let mut d = store
            .begin_delivery(&env(&["user1", "user2", "user1"]))
            .unwrap();
        d.write(b"x\r\n").unwrap();
        let r = d.commit().unwrap();
        assert_eq!(r.paths.len(), 2);
        use std::os::unix::fs::MetadataExt;
        let a = fs::metadata(&r.paths[0]).unwrap();
        let b = fs::metadata(&r.paths[1]).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 2);
        assert!(!fs::read_to_string(&r.paths[0]).unwrap().contains("\tfor <"));
    }

    #[test]
    fn failed_commit_takes_back_placed_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        store.create_maildir("user2").unwrap();
        let mut d = store.begin_delivery(&env(&["user1", "user2"])).unwrap();
        d.write(b"x\r\n").unwrap();
        // Make the final rename fail: user1's new/ is gone.
        fs::remove_dir(store.maildir_path("user1").join("new")).unwrap();
        assert!(matches!(d.commit(), Err(Error::Io { .. })));
        let new2 = store.maildir_path("user2").join("new");
        assert_eq!(fs::read_dir(new2).unwrap().count(), 0);
        let tmp1 = store.maildir_path("user1").join("tmp");
        assert_eq!(fs::read_dir(tmp1).unwrap().count(), 0);
    }

    #[test]
    fn maildirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let md = store.create_maildir("user1").unwrap();
        for sub in ["cur", "new", "tmp"] {
            let mode = fs::metadata(md.join(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
    }

    #[test]
    fn drop_and_abort_remove_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let tmp = store.maildir_path("user1").join("tmp");
        let mut d = store.begin_delivery(&env(&["user1"])).unwrap();
        d.write(&vec![b'a'; 200_000]).unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
        drop(d);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        let d = store.begin_delivery(&env(&["user1"])).unwrap();
        d.abort().unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(store.maildir_path("user1").join("new"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        assert!(matches!(
            store.begin_delivery(&env(&[])),
            Err(Error::NoRecipients)
        ));
        assert!(matches!(
            store.begin_delivery(&env(&["../etc"])),
            Err(Error::BadName(_))
        ));
        assert!(matches!(store.open_maildrop(".."), Err(Error::BadName(_))));
    }

    #[test]
    fn stale_tmp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let md = store.create_maildir("user1").unwrap();
        fs::write(md.join("tmp/old"), b"x").unwrap();
        let now = SystemTime::now();
        assert_eq!(store.clean_stale_tmp(now, STALE_TMP_AGE).unwrap(), 0);
        let later = now + STALE_TMP_AGE + Duration::from_secs(60);
        assert_eq!(store.clean_stale_tmp(later, STALE_TMP_AGE).unwrap(), 1);
        assert!(!md.join("tmp/old").exists());
    }

    #[test]
    fn dead_processes_tmp_files_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "mx.example").unwrap();
        let md = store.create_maildir("user1").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::os::unix::process::parent_id();
        let me = std::process::id();
        let name = |pid: u32, host: &str| format!("1700000000.M12P{pid}Q3R00000000abcd.{host}");
        let put = |n: &str| fs::write(md.join("tmp").join(n), b"x").unwrap();
        put(&name(dead, "mx.example"));
        put(&format!("{},S=1,W=1", name(dead, "mx.example")));
        put(&name(me, "mx.example"));
        put(&name(live, "mx.example"));
        put(&name(dead, "other.host"));
        put("1700000000.unrelated");
        assert_eq!(store.clean_dead_tmp().unwrap(), 3);
        let mut left: Vec<String> = fs::read_dir(md.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            name(live, "mx.example"),
            name(dead, "other.host"),
            "1700000000.unrelated".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(
            tmp_owner(&store.unique_base(SystemTime::now()), "mx.example"),
            Some(me)
        );
    }

    #[test]
    fn queue_ids_unique_hex() {
        let g = QueueIdGenerator::new();
        let now = SystemTime::now();
        let ids: HashSet<String> = (0..1000).map(|_| g.next_id(now)).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            assert_eq!(id.len(), 12);
            assert!(id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        }
    }

    #[test]
    fn unique_names_differ() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_hostname(dir.path(), "h").unwrap();
        let t = SystemTime::now();
        let names: HashSet<String> = (0..1000).map(|_| store.unique_base(t)).collect();
        assert_eq!(names.len(), 1000);
    }
}
