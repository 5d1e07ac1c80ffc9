//! The outbound queue: messages for other domains, kept until every
//! recipient has a final answer (delivered, or bounced because it was
//! refused or expired), with each recipient's state, as Postfix's
//! `deferred` queue keeps them.
//!
//! # On disk
//!
//! Per message, in the queue's directory:
//!
//! - `<id>.msg`, written once: a text header (the envelope: sender,
//!   arrival time, RFC 3461 `ENVID`/`RET`, and per recipient its address,
//!   `NOTIFY` and `ORCPT`), an empty line, then the message exactly as it
//!   is to be sent (trace headers included). It is written under a
//!   temporary name, flushed, renamed and its directory flushed before
//!   [`OutboundQueue::enqueue`] returns: the message is then durable and
//!   `250` may be sent.
//! - `<id>.log`, appended to: one line per event of one recipient
//!   (delivered, deferred with the time of the next attempt, bounced) or of
//!   the message (held, released, a notice to the sender sent), ending in a CRC-32 of the line so that
//!   a torn write is never read as a record, each flushed before
//!   [`OutboundQueue::record`] returns. It is created by the first record:
//!   a message delivered to every recipient at its first attempt is
//!   removed instead (the removal, flushed, is its record) and never has
//!   one. The delivery client records a
//!   remote `250` before it goes on, so a crash repeats a delivery only
//!   when the remote had answered and the record was not yet written (the
//!   window Postfix has too).
//!
//! - `<id>.spare`: the file of a removed message, kept to be written over
//!   by a message queued later instead of unlinking one file and creating
//!   another (see below). Never read as a message.
//!
//! A message whose recipients all have a final state is removed: its
//! content first, then its log (a crash in between leaves a log without
//! its message, which the next open removes; the other order would leave a
//! message whose recipients all look pending, and deliver it again).
//! [`OutboundQueue::open`] reads every message back, drops temporary files
//! of enqueues that never finished (never acknowledged), and ignores a
//! torn last line of a log (a crash during its append).
//!
//! # Recycled files
//!
//! Creating and unlinking a file per message is most of what queueing
//! costs the kernel: ext4 allocates an inode (scanning past recently
//! freed ones), frees it, its blocks and discards them, each under the
//! directory's lock. So the queue opened by the daemon keeps up to
//! [`SPARES`] files of removed messages (their content renamed to
//! `<id>.spare`, no larger than [`SPARE_MAX_SIZE`]) and writes a new
//! message over one of them: write from the start, cut to length, flush,
//! rename to `<id>.msg`, flush the directory. A spare is never a message,
//! so a crash while one is being written over leaves only a spare. Spares
//! hold old content as the queue directory held it (mode 0600); they are
//! taken up again at the next start ([`OutboundQueue::open`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{io_err, DirFlusher};
use crate::{Error, Result};

/// The outbound queue's directory inside smtpd's `queue_directory`.
pub const DIR_NAME: &str = "outgoing";

/// First line of every `.msg` file: the format and its version.
const MAGIC: &str = "csuv-outbound 1";

/// The longest header of a `.msg` file read back (recipients included).
const MAX_HEADER: usize = 16 << 20;

/// RFC 3461 `RET`, as [`crate::dsn`] parses it.
pub use crate::dsn::Ret;

/// A recipient as the client gave it, with its RFC 3461 parameters as
/// written (`NOTIFY=`, `ORCPT=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRcpt {
    /// The address, without angle brackets.
    pub address: String,
    /// `NOTIFY=` as given.
    pub notify: Option<String>,
    /// `ORCPT=` as given.
    pub orcpt: Option<String>,
}

impl OutRcpt {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        OutRcpt {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// The envelope of a message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutEnvelope {
    /// Queue id: letters and digits only (it names the files).
    pub id: String,
    /// Reverse-path without brackets; empty for the null sender.
    pub sender: String,
    /// When the message arrived.
    pub arrival: SystemTime,
    /// `ENVID=` as given.
    pub envid: Option<String>,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// The remote recipients, in the order given.
    pub recipients: Vec<OutRcpt>,
}

/// What became of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took it (`250`).
    Sent,
    /// A temporary failure; try again at this time.
    Deferred {
        /// The time of the next attempt.
        next: SystemTime,
    },
    /// A permanent failure, or the queue lifetime is over: a failure
    /// notice goes to the sender.
    Bounced,
}

/// One event for one recipient, as [`OutboundQueue::record`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Index of the recipient in the envelope.
    pub rcpt: usize,
    /// With [`Outcome::Sent`]: the next hop did not offer DSN, so the
    /// delivery was "relayed" (RFC 3461 section 4.2) and a recipient that
    /// asked for `NOTIFY=SUCCESS` gets a notice from us. Logged as
    /// `relayed` instead of `sent`.
    pub relayed: bool,
    /// What happened.
    pub outcome: Outcome,
    /// When.
    pub time: SystemTime,
    /// The enhanced status code (`2.0.0`, `4.4.1`, `5.1.1`).
    pub status: String,
    /// The host that answered, if one did.
    pub remote: Option<String>,
    /// The reply or the reason, one line.
    pub text: String,
}

/// A recipient's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptState {
    /// Not tried yet.
    Pending,
    /// Tried and deferred; the next attempt is due at `next`.
    Deferred {
        /// When to try again.
        next: SystemTime,
    },
    /// Delivered to the next hop (final).
    Sent,
    /// Failed for good (final).
    Bounced,
}

impl RcptState {
    /// Whether nothing more will be tried for the recipient.
    pub fn is_final(&self) -> bool {
        matches!(self, RcptState::Sent | RcptState::Bounced)
    }
}

/// A recipient with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptStatus {
    /// The recipient.
    pub rcpt: OutRcpt,
    /// Where it stands.
    pub state: RcptState,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt, if any: what it said.
    pub last: Option<Attempt>,
}

/// The notice name of a delay warning (the RFC 3464 action), recorded by
/// [`OutboundQueue::set_delay_warned`].
pub const DELAY_NOTICE: &str = "delayed";

/// A queued message as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its envelope (recipients as given).
    pub envelope: OutEnvelope,
    /// Each recipient's state, in envelope order.
    pub recipients: Vec<RcptStatus>,
    /// Held by the administrator: not tried until released.
    pub held: bool,
    /// Notices to the sender already queued for this message, by the name
    /// given to [`OutboundQueue::record_notice`] (so that a message whose
    /// finishing is retried does not send one twice).
    pub notices: Vec<String>,
    /// Size of the content in bytes.
    pub size: u64,
}

impl QueuedMessage {
    /// Whether the sender was told that the message is late
    /// (`delay_warning_time`): one warning per message, across restarts,
    /// recorded as the notice [`DELAY_NOTICE`].
    pub fn delay_warned(&self) -> bool {
        self.notices.iter().any(|n| n == DELAY_NOTICE)
    }

    /// Whether every recipient has a final state.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.state.is_final())
    }

    /// The earliest time a recipient is due (`None`: none is), ignoring
    /// the hold.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.recipients
            .iter()
            .filter_map(|r| match r.state {
                RcptState::Pending => Some(self.envelope.arrival),
                RcptState::Deferred { next } => Some(next),
                _ => None,
            })
            .min()
    }
}

/// How many files of removed messages the daemon's queue keeps to write
/// new messages over (see "Recycled files" above): enough for the
/// messages in flight at a high rate.
pub const SPARES: usize = 128;

/// The largest file kept as a spare: a bigger one is unlinked, so spares
/// never hold much disk.
pub const SPARE_MAX_SIZE: u64 = 256 * 1024;

/// The outbound queue's directory. Cheap to clone; all methods block on
/// file I/O.
#[derive(Debug, Clone)]
pub struct OutboundQueue {
    dir: PathBuf,
    /// Files of removed messages to write new ones over, when this is the
    /// daemon's queue ([`OutboundQueue::open`]); `None` for a queue used
    /// from outside ([`OutboundQueue::from_dir`]), which unlinks.
    spares: Option<SparePool>,
    /// Directory flushes shared by the sessions and deliveries that
    /// commit or remove at the same time (group commit).
    flusher: Arc<DirFlusher>,
}

/// Spare files, oldest first, each with the directory-flush round after
/// which its name is durable ([`DirFlusher::next_round`] when it was
/// renamed). Only a spare whose rename is durable is written over: after a
/// system crash, a removal whose rename was lost must not find its file
/// holding another message's bytes under the old `ID.msg` name.
type SparePool = Arc<Mutex<VecDeque<(u64, PathBuf)>>>;

fn invalid(path: &Path, why: impl Into<String>) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, why.into()),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A time read back from a queue file. A damaged file can hold any number:
/// past about 34,000 years it is clamped (`SystemTime + Duration` panics on
/// overflow; found by the `mailstore_outbound` fuzz target).
fn from_unix(s: u64) -> SystemTime {
    const MAX: u64 = 1 << 40;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(s.min(MAX)))
        .unwrap_or(UNIX_EPOCH)
}

/// A value that goes in one tab-separated field of one line.
fn field_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(['\t', '\r', '\n'])
}

/// Free text made safe for one field: control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn from_opt(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_owned())
}

impl OutboundQueue {
    /// Opens (creating if needed) the queue in `dir` and reads back every
    /// message in it, oldest first; temporary files of enqueues that did
    /// not finish are removed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(OutboundQueue, Vec<QueuedMessage>)> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut q = OutboundQueue::from_dir(dir);
        let mut spares = VecDeque::new();
        let round = q.flusher.next_round();
        let mut messages = Vec::new();
        for entry in fs::read_dir(&q.dir).map_err(io_err(&q.dir))? {
            let entry = entry.map_err(io_err(&q.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".spare") {
                if spares.len() < SPARES {
                    spares.push_back((round, entry.path()));
                } else {
                    let _ = fs::remove_file(entry.path());
                }
            } else if name.ends_with(".msg.tmp") {
                // Never acknowledged: the rename did not happen.
                let _ = fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(".msg") {
                if valid_id(id) {
                    messages.push(q.load(id)?);
                }
            } else if let Some(id) = name.strip_suffix(".log") {
                if valid_id(id) && !q.msg_path(id).exists() {
                    // Removal stopped between the log and the content.
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        oldest_first(&mut messages);
        q.spares = Some(Arc::new(Mutex::new(spares)));
        Ok((q, messages))
    }

    /// Reads every message in `dir` without changing anything (for
    /// `mailctl` while the daemon runs: a message being queued is not
    /// listed, and its temporary file is left alone).
    pub fn list(dir: impl Into<PathBuf>) -> Result<Vec<QueuedMessage>> {
        let q = OutboundQueue::from_dir(dir);
        let entries = match fs::read_dir(&q.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&q.dir)(e)),
        };
        let mut messages = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&q.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".msg").filter(|id| valid_id(id)) {
                match q.load(id) {
                    Ok(m) => messages.push(m),
                    // Removed meanwhile.
                    Err(_) if !q.msg_path(id).exists() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        oldest_first(&mut messages);
        Ok(messages)
    }

    /// The queue in `dir` as it is, without reading or cleaning it (for
    /// `mailctl`'s hold, release and delete while the daemon runs).
    pub fn from_dir(dir: impl Into<PathBuf>) -> OutboundQueue {
        let dir = dir.into();
        OutboundQueue {
            flusher: Arc::new(DirFlusher::new(dir.clone())),
            spares: None,
            dir,
        }
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn msg_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.msg"))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Queues a message durably: when this returns, a crash loses nothing.
    pub fn enqueue(&self, env: &OutEnvelope, content: &[u8]) -> Result<()> {
        let mut w = self.begin(env)?;
        w.write(content)?;
        w.commit()
    }

    /// Starts queueing a message whose content arrives in pieces
    /// ([`OutWriter::write`]); nothing is queued until
    /// [`OutWriter::commit`], and dropping the writer leaves nothing
    /// behind.
    pub fn begin(&self, env: &OutEnvelope) -> Result<OutWriter> {
        let path = self.msg_path(&env.id);
        if !valid_id(&env.id) {
            return Err(invalid(&path, format!("bad queue id {:?}", env.id)));
        }
        if env.recipients.is_empty() {
            return Err(Error::NoRecipients);
        }
        let mut head = format!("{MAGIC}\nid\t{}\n", env.id);
        // The null sender is `<>`: an empty field would not parse back.
        let sender = if env.sender.is_empty() {
            "<>"
        } else {
            &env.sender
        };
        let fields = [Some(sender), env.envid.as_deref()];
        if fields.iter().flatten().any(|f| !field_ok(f)) {
            return Err(invalid(&path, "sender or ENVID with a tab or line break"));
        }
        head.push_str(&format!("from\t{sender}\narrival\t{}\n", unix(env.arrival)));
        if let Some(e) = &env.envid {
            head.push_str(&format!("envid\t{e}\n"));
        }
        match env.ret {
            Some(Ret::Full) => head.push_str("ret\tFULL\n"),
            Some(Ret::Hdrs) => head.push_str("ret\tHDRS\n"),
            None => {}
        }
        for r in &env.recipients {
            let parts = [
                Some(r.address.as_str()),
                r.notify.as_deref(),
                r.orcpt.as_deref(),
            ];
            if parts.iter().flatten().any(|f| !field_ok(f) || *f == "-") {
                return Err(invalid(&path, format!("bad recipient {:?}", r.address)));
            }
            head.push_str(&format!(
                "rcpt\t{}\t{}\t{}\n",
                r.address,
                opt(&r.notify),
                opt(&r.orcpt)
            ));
        }
        head.push('\n');
        let (tmp, file, spare) = match self.take_spare() {
            Some((spare, file)) => (spare, file, true),
            None => {
                let tmp = self.dir.join(format!("{}.msg.tmp", env.id));
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io_err(&tmp))?;
                (tmp, file, false)
            }
        };
        let mut w = OutWriter {
            flusher: Arc::clone(&self.flusher),
            spares: spare.then(|| self.spares.clone()).flatten(),
            path,
            tmp,
            file: None,
            written: 0,
        };
        w.file = Some(file);
        w.write(head.as_bytes())?;
        Ok(w)
    }

    fn spare_pool(&self) -> Option<MutexGuard<'_, VecDeque<(u64, PathBuf)>>> {
        // A poisoned pool is still a list of file names.
        let pool = self.spares.as_ref()?;
        Some(pool.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A spare file opened for writing over, if there is one.
    fn take_spare(&self) -> Option<(PathBuf, File)> {
        loop {
            let durable = self.flusher.flushed_through()?;
            let path = {
                let mut pool = self.spare_pool()?;
                match pool.front() {
                    Some((round, _)) if *round <= durable => pool.pop_front()?.1,
                    _ => return None,
                }
            };
            match OpenOptions::new().write(true).open(&path) {
                Ok(f) => return Some((path, f)),
                // Gone (an administrator cleaning up): try the next.
                Err(_) => continue,
            }
        }
    }

    /// Records attempts durably (one flush for all of them).
    pub fn record(&self, id: &str, attempts: &[Attempt]) -> Result<()> {
        let mut lines = String::new();
        for a in attempts {
            let (state, next) = match a.outcome {
                Outcome::Sent if a.relayed => ("relayed", 0),
                Outcome::Sent => ("sent", 0),
                Outcome::Deferred { next } => ("deferred", unix(next)),
                Outcome::Bounced => ("bounced", 0),
            };
            let status = if field_ok(&a.status) {
                a.status.as_str()
            } else {
                "-"
            };
            let remote = a.remote.as_deref().filter(|r| field_ok(r)).unwrap_or("-");
            lines.push_str(&checked(&format!(
                "{}\t{state}\t{}\t{next}\t{status}\t{remote}\t{}",
                a.rcpt,
                unix(a.time),
                one_line(&a.text)
            )));
        }
        self.append(id, &lines)
    }

    /// Holds a message (nothing is tried until it is released) or
    /// releases it (Postfix's `postsuper -h` / `-H`).
    pub fn set_held(&self, id: &str, held: bool, time: SystemTime) -> Result<()> {
        let what = if held { "hold" } else { "release" };
        self.append(id, &checked(&format!("-\t{what}\t{}", unix(time))))
    }

    /// Records durably that the notice named `what` (one word, e.g. the
    /// RFC 3464 action `failed`) was queued for the sender.
    pub fn record_notice(&self, id: &str, what: &str, time: SystemTime) -> Result<()> {
        if !field_ok(what) || what.is_empty() {
            return Err(Error::InvalidName {
                name: what.to_owned(),
                why: "a notice name is one field",
            });
        }
        self.append(id, &checked(&format!("-\tnotice\t{}\t{what}", unix(time))))
    }

    /// Records that the sender was warned of the delay, so that a restart
    /// does not warn again: the notice `delayed` (the RFC 3464 action).
    pub fn set_delay_warned(&self, id: &str, time: SystemTime) -> Result<()> {
        self.record_notice(id, DELAY_NOTICE, time)
    }

    fn append(&self, id: &str, lines: &str) -> Result<()> {
        let path = self.log_path(id);
        if !valid_id(id) || !self.msg_path(id).exists() {
            return Err(Error::NotFound {
                kind: "queued message",
                name: id.to_owned(),
            });
        }
        // The first record creates the log: its directory entry is
        // flushed too. (A message delivered at the first attempt never
        // gets one: its removal is its record.)
        let mut created = false;
        let mut f = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                created = true;
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        // A crash during an earlier append may have left a torn line: end
        // it first, so this record starts on a line of its own (the torn
        // one is then ignored as malformed).
        let len = f.metadata().map_err(io_err(&path))?.len();
        let mut last = [0u8; 1];
        let torn = len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n';
        if torn {
            f.write_all(b"\n").map_err(io_err(&path))?;
        }
        f.write_all(lines.as_bytes()).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        if created {
            self.flusher.flush()?;
        }
        Ok(())
    }

    /// Removes a message (every recipient is final, or the administrator
    /// deletes it).
    pub fn remove(&self, id: &str) -> Result<()> {
        self.unlink(id)?;
        self.flusher.flush()
    }

    /// Removes a message every recipient of which is final (its log says
    /// so durably), without flushing the directory: should a system crash
    /// undo the removal, the next open finds the message finished and
    /// removes it again, sending nothing (Postfix does not flush its queue
    /// directory after a delivery either). A failure notice sent for it
    /// may then be sent a second time.
    pub fn remove_finished(&self, id: &str) -> Result<()> {
        self.unlink(id)
    }

    /// Unlinks the message's files, the content first (see the module
    /// docs); files already gone are fine.
    fn unlink(&self, id: &str) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::NotFound {
                kind: "queued message",
                name: id.to_owned(),
            });
        }
        let msg = self.msg_path(id);
        if self.recycle(id, &msg) {
            let log = self.log_path(id);
            return match fs::remove_file(&log) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&log)(e)),
                _ => Ok(()),
            };
        }
        for p in [msg, self.log_path(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(())
    }

    /// Keeps the content file `msg` of message `id` as a spare, if there is
    /// room and it is not too big: true when it was renamed.
    fn recycle(&self, id: &str, msg: &Path) -> bool {
        // The pool is not locked across the system calls: removals on other
        // threads go on meanwhile (the pool may pass SPARES by a few).
        match self.spare_pool() {
            Some(pool) if pool.len() < SPARES => {}
            _ => return false,
        }
        match fs::symlink_metadata(msg) {
            Ok(m) if m.is_file() && m.len() <= SPARE_MAX_SIZE => {}
            _ => return false,
        }
        let spare = self.dir.join(format!("{id}.spare"));
        if fs::rename(msg, &spare).is_err() {
            return false;
        }
        // Read after the rename: this round has not begun yet, so its
        // flush covers the new name.
        let round = self.flusher.next_round();
        if let Some(mut pool) = self.spare_pool() {
            pool.push_back((round, spare));
        }
        true
    }

    /// The message's content, as it is to be sent.
    pub fn content(&self, id: &str) -> Result<Vec<u8>> {
        let path = self.msg_path(id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        let end = find_body(&bytes).ok_or_else(|| invalid(&path, "no end of header"))?;
        bytes.drain(..end);
        Ok(bytes)
    }

    /// Reads one message and its log back.
    pub fn load(&self, id: &str) -> Result<QueuedMessage> {
        let path = self.msg_path(id);
        let mut head = Vec::new();
        File::open(&path)
            .map_err(io_err(&path))?
            .take(MAX_HEADER as u64)
            .read_to_end(&mut head)
            .map_err(io_err(&path))?;
        let total = fs::metadata(&path).map_err(io_err(&path))?.len();
        let log_path = self.log_path(id);
        let log = match fs::read(&log_path) {
            Ok(log) => log,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&log_path)(e)),
        };
        decode(id, &head, total, &log).map_err(|why| invalid(&path, why))
    }
}

/// A message from the start of its `.msg` file (`head`, which holds at
/// least the header), the file's length and its log (empty when there is
/// none). Public for `mailctl` and the fuzzer; the daemon uses
/// [`OutboundQueue::load`].
pub fn decode(
    id: &str,
    head: &[u8],
    file_len: u64,
    log: &[u8],
) -> std::result::Result<QueuedMessage, String> {
    let end = find_body(head).ok_or("no end of header")?;
    let text = std::str::from_utf8(head.get(..end).unwrap_or_default())
        .map_err(|_| "header is not UTF-8")?;
    let env = parse_header(text, id)?;
    let mut recipients: Vec<RcptStatus> = env
        .recipients
        .iter()
        .map(|r| RcptStatus {
            rcpt: r.clone(),
            state: RcptState::Pending,
            attempts: 0,
            last: None,
        })
        .collect();
    let mut flags = Flags::default();
    let log = String::from_utf8_lossy(log);
    // Only whole lines: the last one may be torn.
    let whole = log.rfind('\n').map_or("", |i| &log[..i]);
    for line in whole.lines() {
        apply(line, &mut recipients, &mut flags);
    }
    Ok(QueuedMessage {
        size: file_len.saturating_sub(end as u64),
        envelope: env,
        recipients,
        held: flags.held,
        notices: flags.notices,
    })
}

/// A message being queued; see [`OutboundQueue::begin`].
#[derive(Debug)]
pub struct OutWriter {
    flusher: Arc<DirFlusher>,
    /// The pool to give the spare back to if this is written over one
    /// (`tmp`) and dropped without a commit.
    spares: Option<SparePool>,
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    file: Option<File>,
    /// Bytes written: a spare is cut to this length at commit.
    written: u64,
}

impl OutWriter {
    /// Appends content.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.file {
            Some(f) => {
                f.write_all(bytes).map_err(io_err(&self.tmp))?;
                self.written += bytes.len() as u64;
                Ok(())
            }
            None => Err(Error::DeliveryClosed),
        }
    }

    /// Makes the message durable and visible to [`OutboundQueue::open`]:
    /// flush, rename, flush the directory.
    pub fn commit(mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Err(Error::DeliveryClosed);
        };
        let done = (|| {
            if self.spares.is_some() {
                // The rest of the old message goes.
                f.set_len(self.written).map_err(io_err(&self.tmp))?;
            }
            f.sync_all().map_err(io_err(&self.tmp))?;
            if self.path.exists() {
                return Err(invalid(&self.path, "queue id already in use"));
            }
            fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
            self.flusher.flush()
        })();
        if done.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        done
    }
}

impl Drop for OutWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Never committed: nothing was acknowledged. A spare written
            // over is still a spare.
            if let Some(pool) = &self.spares {
                // Its name did not change: still durable (round 0).
                let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                pool.push_front((0, std::mem::take(&mut self.tmp)));
            } else {
                let _ = fs::remove_file(&self.tmp);
            }
        }
    }
}

fn oldest_first(messages: &mut [QueuedMessage]) {
    messages.sort_by(|a, b| {
        (a.envelope.arrival, &a.envelope.id).cmp(&(b.envelope.arrival, &b.envelope.id))
    });
}

/// Queue ids name files: letters and digits only.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Offset of the content: after the first empty line.
fn find_body(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn parse_header(text: &str, id: &str) -> std::result::Result<OutEnvelope, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("not an outbound queue file (expected {MAGIC:?})"));
    }
    let mut env = OutEnvelope {
        id: String::new(),
        sender: String::new(),
        arrival: UNIX_EPOCH,
        envid: None,
        ret: None,
        recipients: Vec::new(),
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let mut f = line.split('\t');
        let key = f.next().unwrap_or_default();
        let value = f.next().ok_or_else(|| format!("{key}: no value"))?;
        match key {
            "id" => env.id = value.to_owned(),
            "from" => {
                env.sender = if value == "<>" {
                    String::new()
                } else {
                    value.to_owned()
                }
            }
            "arrival" => {
                env.arrival = from_unix(value.parse().map_err(|_| "bad arrival")?);
            }
            "envid" => env.envid = Some(value.to_owned()),
            "ret" => {
                env.ret = Some(match value {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(format!("bad ret {value:?}")),
                })
            }
            "rcpt" => env.recipients.push(OutRcpt {
                address: value.to_owned(),
                notify: f.next().and_then(from_opt),
                orcpt: f.next().and_then(from_opt),
            }),
            // Read for the size check by the caller; unknown keys are
            // tolerated so that a later version can add some.
            _ => {}
        }
    }
    if env.id != id {
        return Err(format!("id {:?} in a file named {id}", env.id));
    }
    if env.recipients.is_empty() {
        return Err("no recipients".into());
    }
    Ok(env)
}

/// A log line: its fields, a tab, the CRC-32 of the fields in hex, LF.
fn checked(fields: &str) -> String {
    format!("{fields}\t{:08x}\n", crc32fast::hash(fields.as_bytes()))
}

/// What the message-wide log lines say.
#[derive(Default)]
struct Flags {
    held: bool,
    notices: Vec<String>,
}

/// Applies one log line; a line whose CRC does not check (a torn write)
/// is skipped.
fn apply(line: &str, rcpts: &mut [RcptStatus], flags: &mut Flags) {
    let Some((fields, crc)) = line.rsplit_once('\t') else {
        return;
    };
    if u32::from_str_radix(crc, 16).ok() != Some(crc32fast::hash(fields.as_bytes())) {
        return;
    }
    let f: Vec<&str> = fields.split('\t').collect();
    let (Some(&who), Some(&what), Some(&time)) = (f.first(), f.get(1), f.get(2)) else {
        return;
    };
    let Ok(time) = time.parse::<u64>() else {
        return;
    };
    match (who, what) {
        ("-", "hold") => flags.held = true,
        ("-", "release") => flags.held = false,
        ("-", "notice") => {
            if let Some(what) = f.get(3).filter(|w| !flags.notices.iter().any(|n| n == *w)) {
                flags.notices.push((*what).to_owned());
            }
        }
        _ => {
            let (Ok(i), Some(&next), Some(&status), Some(&remote)) =
                (who.parse::<usize>(), f.get(3), f.get(4), f.get(5))
            else {
                return;
            };
            let Some(r) = rcpts.get_mut(i) else { return };
            let outcome = match (what, next.parse::<u64>()) {
                ("sent" | "relayed", _) => Outcome::Sent,
                ("bounced", _) => Outcome::Bounced,
                ("deferred", Ok(n)) => Outcome::Deferred { next: from_unix(n) },
                _ => return,
            };
            if r.state.is_final() {
                // A final state stays final.
                return;
            }
            r.state = match outcome {
                Outcome::Sent => RcptState::Sent,
                Outcome::Bounced => RcptState::Bounced,
                Outcome::Deferred { next } => RcptState::Deferred { next },
            };
            r.attempts += 1;
            r.last = Some(Attempt {
                rcpt: i,
                relayed: what == "relayed",
                outcome,
                time: from_unix(time),
                status: status.to_owned(),
                remote: from_opt(remote),
                text: f.get(6).copied().unwrap_or_default().to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_times_in_damaged_files_do_not_panic() {
        // The input the mailstore_outbound fuzz target found, fed as it
        // feeds it: the first byte says where the .msg part ends.
        let data = include_bytes!("../tests/fuzz-found/outbound-arrival-overflow");
        let (&cut, rest) = data.split_first().unwrap();
        let cut = (usize::from(cut) * rest.len() / 255).min(rest.len());
        let (head, log) = rest.split_at(cut);
        let _ = decode("F1", head, head.len() as u64, log);
        assert!(from_unix(u64::MAX) > from_unix(1_796_000_000));
    }

    fn env(id: &str, rcpts: &[&str]) -> OutEnvelope {
        OutEnvelope {
            id: id.into(),
            sender: "user2@csuvnetwork.com".into(),
            arrival: from_unix(1_796_515_200),
            envid: Some("QQ314159".into()),
            ret: Some(Ret::Hdrs),
            recipients: rcpts
                .iter()
                .map(|r| OutRcpt {
                    address: r.to_string(),
                    notify: Some("FAILURE,DELAY".into()),
                    orcpt: Some(format!("rfc822;{r}")),
                })
                .collect(),
        }
    }

    fn attempt(rcpt: usize, outcome: Outcome, text: &str) -> Attempt {
        Attempt {
            relayed: false,
            rcpt,
            outcome,
            time: from_unix(1_796_515_260),
            status: "4.4.1".into(),
            remote: Some("mx.example.org[192.0.2.1]".into()),
            text: text.into(),
        }
    }

    #[test]
    fn enqueue_record_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (q, none) = OutboundQueue::open(dir.path()).unwrap();
        assert!(none.is_empty());
        let e = env("AB12", &["a@example.org", "b@example.org", "c@example.net"]);
        let body = b"Subject: hi\r\n\r\nbody\r\n\r\n";
        q.enqueue(&e, body).unwrap();
        assert!(q.enqueue(&e, body).is_err(), "an id is used once");
        let next = from_unix(1_796_515_560);
        q.record(
            "AB12",
            &[
                attempt(0, Outcome::Sent, "250 2.0.0 Ok"),
                attempt(1, Outcome::Deferred { next }, "452 4.2.2 over quota\r\nX"),
            ],
        )
        .unwrap();
        q.record("AB12", &[attempt(2, Outcome::Bounced, "550 5.1.1 no")])
            .unwrap();
        // A final state stays final whatever follows.
        q.record("AB12", &[attempt(0, Outcome::Bounced, "late")])
            .unwrap();
        let (_, all) = OutboundQueue::open(dir.path()).unwrap();
        let [m] = all.as_slice() else {
            panic!("{all:?}")
        };
        assert_eq!(m.envelope, e);
        assert_eq!(m.size, body.len() as u64);
        assert_eq!(q.content("AB12").unwrap(), body);
        assert_eq!(m.recipients[0].state, RcptState::Sent);
        assert_eq!(m.recipients[1].state, RcptState::Deferred { next });
        assert_eq!(m.recipients[2].state, RcptState::Bounced);
        let last = m.recipients[1].last.as_ref().unwrap();
        assert_eq!(last.text, "452 4.2.2 over quota  X");
        assert_eq!(last.remote.as_deref(), Some("mx.example.org[192.0.2.1]"));
        assert_eq!(m.next_due(), Some(next));
        assert!(!m.is_finished());
        q.record("AB12", &[attempt(1, Outcome::Sent, "250 ok")])
            .unwrap();
        assert!(q.load("AB12").unwrap().is_finished());
        q.remove("AB12").unwrap();
        assert!(OutboundQueue::open(dir.path()).unwrap().1.is_empty());
    }

    #[test]
    fn null_sender_and_no_parameters_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        let e = OutEnvelope {
            id: "X1".into(),
            sender: String::new(),
            arrival: from_unix(5),
            envid: None,
            ret: None,
            recipients: vec![OutRcpt::new("postmaster@example.org")],
        };
        q.enqueue(&e, b"").unwrap();
        let m = q.load("X1").unwrap();
        assert_eq!(m.envelope, e);
        assert_eq!(m.recipients[0].state, RcptState::Pending);
        assert_eq!(m.next_due(), Some(from_unix(5)));
    }

    #[test]
    fn refuses_what_would_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        let mut e = env("ok1", &["a@example.org"]);
        e.id = "../x".into();
        assert!(q.enqueue(&e, b"").is_err());
        let mut e = env("ok2", &["a@ex\tample.org"]);
        assert!(q.enqueue(&e, b"").is_err());
        e.recipients.clear();
        assert!(matches!(q.enqueue(&e, b""), Err(Error::NoRecipients)));
        assert!(q.record("nope", &[]).is_err());
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn torn_log_lines_and_unfinished_enqueues_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        q.enqueue(&env("T1", &["a@example.org", "b@example.org"]), b"x")
            .unwrap();
        q.record("T1", &[attempt(0, Outcome::Sent, "250")]).unwrap();
        // A crash in the middle of an append, and in the middle of an
        // enqueue.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("T1.log"))
            .unwrap();
        // A prefix that would parse as a record but for its CRC.
        log.write_all(b"1\tsent\t1796515260\t0\t2.0.0\t-\t250 ok")
            .unwrap();
        fs::write(dir.path().join("T2.msg.tmp"), b"half").unwrap();
        let (q, all) = OutboundQueue::open(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].recipients[1].state, RcptState::Pending);
        assert!(!dir.path().join("T2.msg.tmp").exists());
        // The next record starts on a line of its own.
        q.record("T1", &[attempt(1, Outcome::Bounced, "550")])
            .unwrap();
        let m = q.load("T1").unwrap();
        assert_eq!(m.recipients[1].state, RcptState::Bounced);
        assert_eq!(m.recipients[1].attempts, 1);
    }

    proptest::proptest! {
        // Each case flushes files: fewer cases than the default 256.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

        /// What is enqueued and recorded reads back the same.
        #[test]
        fn round_trip(
            sender in "[a-z0-9.@-]{0,30}",
            rcpts in proptest::collection::vec(("[a-zA-Z0-9.+=\"-]{1,20}@[a-z0-9.-]{1,20}", proptest::option::of("[A-Z,]{1,20}")), 1..5),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            outcomes in proptest::collection::vec((0usize..5, 0u8..3, "[ -~]{0,40}"), 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (q, _) = OutboundQueue::open(dir.path()).unwrap();
            let e = OutEnvelope {
                id: "P1".into(),
                sender,
                arrival: from_unix(1000),
                envid: None,
                ret: Some(Ret::Full),
                recipients: rcpts
                    .iter()
                    .map(|(a, n)| OutRcpt { address: a.clone(), notify: n.clone(), orcpt: None })
                    .collect(),
            };
            q.enqueue(&e, &body).unwrap();
            let mut expect: Vec<RcptState> = vec![RcptState::Pending; e.recipients.len()];
            for (i, kind, text) in &outcomes {
                let outcome = match kind {
                    0 => Outcome::Sent,
                    1 => Outcome::Deferred { next: from_unix(2000 + *i as u64) },
                    _ => Outcome::Bounced,
                };
                q.record("P1", &[attempt(*i, outcome.clone(), text)]).unwrap();
                if let Some(s) = expect.get_mut(*i) {
                    if !s.is_final() {
                        *s = match outcome {
                            Outcome::Sent => RcptState::Sent,
                            Outcome::Bounced => RcptState::Bounced,
                            Outcome::Deferred { next } => RcptState::Deferred { next },
                        };
                    }
                }
            }
            let m = q.load("P1").unwrap();
            proptest::prop_assert_eq!(&m.envelope, &e);
            proptest::prop_assert_eq!(q.content("P1").unwrap(), body);
            let got: Vec<RcptState> = m.recipients.iter().map(|r| r.state.clone()).collect();
            proptest::prop_assert_eq!(got, expect);
        }
    }

    #[test]
    fn content_in_pieces_and_abandoned_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        let mut w = q.begin(&env("W1", &["a@example.org"])).unwrap();
        w.write(b"Subject: x\r\n").unwrap();
        w.write(b"\r\nbody\r\n").unwrap();
        assert!(
            OutboundQueue::list(dir.path()).unwrap().is_empty(),
            "not before commit"
        );
        w.commit().unwrap();
        assert_eq!(q.content("W1").unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        let mut w = q.begin(&env("W2", &["a@example.org"])).unwrap();
        w.write(b"half").unwrap();
        drop(w);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["W1.msg"]);
        q.remove_finished("W1").unwrap();
        assert_eq!(names_in(dir.path()), ["W1.spare"]);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn removed_files_are_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        let long = vec![b'x'; 5000];
        q.enqueue(&env("R1", &["a@example.org"]), &long).unwrap();
        q.remove("R1").unwrap();
        assert_eq!(names_in(dir.path()), ["R1.spare"]);
        // A shorter message over the longer one: nothing of it is left.
        q.enqueue(&env("R2", &["b@example.org"]), b"short\r\n")
            .unwrap();
        assert_eq!(names_in(dir.path()), ["R2.msg"]);
        assert_eq!(q.content("R2").unwrap(), b"short\r\n");
        let m = q.load("R2").unwrap();
        assert_eq!(m.recipients[0].rcpt.address, "b@example.org");
        // A writer dropped over a spare leaves the spare, never a message.
        q.remove("R2").unwrap();
        let mut w = q.begin(&env("R3", &["c@example.org"])).unwrap();
        w.write(b"half").unwrap();
        drop(w);
        assert_eq!(names_in(dir.path()), ["R2.spare"]);
        // A removal not flushed yet leaves a spare that is not written
        // over until a flush has made its new name durable.
        q.enqueue(&env("R8", &["f@example.org"]), b"x\r\n").unwrap();
        q.remove_finished("R8").unwrap();
        q.enqueue(&env("R9", &["f@example.org"]), b"y\r\n").unwrap();
        assert_eq!(names_in(dir.path()), ["R8.spare", "R9.msg"]);
        q.remove("R9").unwrap();
        assert_eq!(names_in(dir.path()), ["R8.spare", "R9.spare"]);
        // The next start takes spares up again and lists no message; they
        // are written over after its first flush (R4's commit).
        drop(q);
        let (q, messages) = OutboundQueue::open(dir.path()).unwrap();
        assert!(messages.is_empty());
        q.enqueue(&env("R4", &["d@example.org"]), b"again\r\n")
            .unwrap();
        assert_eq!(names_in(dir.path()), ["R4.msg", "R8.spare", "R9.spare"]);
        assert_eq!(q.load("R4").unwrap().size, 7);
        q.remove("R4").unwrap();
        // Too big to keep, or removed from outside the daemon: unlinked.
        let big = vec![b'y'; SPARE_MAX_SIZE as usize + 1];
        q.enqueue(&env("R5", &["e@example.org"]), &big).unwrap();
        q.remove("R5").unwrap();
        // R5 was written over R8's or R9's spare (in directory order),
        // then was too big to keep.
        let names = names_in(dir.path());
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], "R4.spare");
        q.enqueue(&env("R6", &["e@example.org"]), &big).unwrap();
        q.enqueue(&env("R7", &["e@example.org"]), b"x\r\n").unwrap();
        q.remove("R6").unwrap();
        assert_eq!(names_in(dir.path()), ["R7.msg"]);
        OutboundQueue::from_dir(dir.path()).remove("R7").unwrap();
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn spares_beyond_the_limit_are_unlinked_at_open() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..SPARES + 3 {
            fs::write(dir.path().join(format!("S{i}.spare")), b"old").unwrap();
        }
        let (q, messages) = OutboundQueue::open(dir.path()).unwrap();
        assert!(messages.is_empty());
        assert_eq!(names_in(dir.path()).len(), SPARES);
        assert_eq!(q.spare_pool().unwrap().len(), SPARES);
    }

    #[test]
    fn relayed_is_sent_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        q.enqueue(&env("R1", &["a@example.org", "b@example.org"]), b"x")
            .unwrap();
        let mut a = attempt(0, Outcome::Sent, "250 ok");
        a.relayed = true;
        q.record("R1", &[a.clone(), attempt(1, Outcome::Sent, "250 ok")])
            .unwrap();
        let log = fs::read_to_string(dir.path().join("R1.log")).unwrap();
        assert!(log.starts_with("0\trelayed\t"), "{log}");
        let m = q.load("R1").unwrap();
        assert_eq!(m.recipients[0].state, RcptState::Sent);
        assert_eq!(m.recipients[0].last.as_ref(), Some(&a));
        assert!(!m.recipients[1].last.as_ref().unwrap().relayed);
        assert!(m.is_finished());
    }

    #[test]
    fn hold_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        q.enqueue(&env("H1", &["a@example.org"]), b"x").unwrap();
        q.set_held("H1", true, from_unix(9)).unwrap();
        assert!(q.load("H1").unwrap().held);
        q.set_held("H1", false, from_unix(10)).unwrap();
        assert!(!q.load("H1").unwrap().held);
    }

    #[test]
    fn notices_sent_are_recorded_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        q.enqueue(&env("N1", &["a@example.org"]), b"x").unwrap();
        assert!(q.load("N1").unwrap().notices.is_empty());
        q.record_notice("N1", "failed", from_unix(9)).unwrap();
        q.record_notice("N1", "failed", from_unix(10)).unwrap();
        q.record_notice("N1", "relayed", from_unix(11)).unwrap();
        let m = q.load("N1").unwrap();
        assert_eq!(m.notices, ["failed", "relayed"]);
        // Recipient states are untouched by message-level lines.
        assert_eq!(m.recipients[0].state, RcptState::Pending);
        assert!(q.record_notice("N1", "two\tfields", from_unix(12)).is_err());
        assert!(q.record_notice("N1", "", from_unix(12)).is_err());
        // A torn notice line is not a record.
        let mut log = fs::read_to_string(dir.path().join("N1.log")).unwrap();
        log.push_str("-\tnotice\t13\tdelayed\t00000000\n");
        fs::write(dir.path().join("N1.log"), log).unwrap();
        assert_eq!(q.load("N1").unwrap().notices, ["failed", "relayed"]);
    }

    #[test]
    fn delay_warning_is_remembered_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = OutboundQueue::open(dir.path()).unwrap();
        q.enqueue(&env("D1", &["a@example.org"]), b"x").unwrap();
        assert!(!q.load("D1").unwrap().delay_warned());
        q.record(
            "D1",
            &[attempt(
                0,
                Outcome::Deferred {
                    next: from_unix(1_796_515_560),
                },
                "busy",
            )],
        )
        .unwrap();
        q.set_delay_warned("D1", from_unix(1_796_515_261)).unwrap();
        let (_, all) = OutboundQueue::open(dir.path()).unwrap();
        let m = all.iter().find(|m| m.envelope.id == "D1").unwrap();
        assert!(m.delay_warned());
        assert!(!m.held);
        assert_eq!(m.recipients[0].attempts, 1, "the flag is no attempt");
    }

    #[test]
    fn a_log_without_its_message_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("Z9.log"),
            checked("0\tsent\t1\t0\t2.0.0\t-\tok"),
        )
        .unwrap();
        let (_, all) = OutboundQueue::open(dir.path()).unwrap();
        assert!(all.is_empty());
        assert!(!dir.path().join("Z9.log").exists());
    }
}
