//! The queue journal: a write-ahead log that makes a message durable with
//! one `fdatasync` before the SMTP server answers `250`; the message is
//! then delivered into its Maildirs (durably, as [`crate::Delivery`] does)
//! and retired from the journal.
//!
//! Why: a Maildir delivery needs two flushes one after the other (the file,
//! then `new/`), each a file-system journal commit. Postfix answers after
//! one flush (its queue file) and delivers afterwards; this journal does the
//! same with less: records are appended to segment files that were filled
//! with zeros and flushed when they were made, so an append changes no
//! metadata and its `fdatasync` is one device flush. Sessions that commit
//! at the same time share one flush (group commit).
//!
//! # On disk
//!
//! `<dir>/seg-NNNNNN` files, all of one size. The first 4 KiB of a file is
//! its header (magic, segment number, a random nonce for this use of the
//! file, CRC-32); records follow, each a 32-byte header (magic, kind, the
//! segment's nonce, sequence number, payload length, CRC-32 over header and
//! payload) and its payload, padded to 8
//! bytes. A *message* record holds the local mailboxes, the queue id, the
//! Maildir base name and the file exactly as it will be written to the
//! Maildirs (trace headers included); a *placed* record says that a
//! delivery of a message is about to complete (see below); a *done* record
//! names the sequence number of a message that every mailbox now holds
//! durably.
//!
//! # Recovery
//!
//! [`Queue::open`] reads every file whose header checks, in segment-number
//! order, and stops reading a file at the first record that does not check:
//! a torn tail, or a stale record from the file's previous use (its nonce
//! differs). Messages without a done mark are returned to be
//! delivered again; such a delivery skips mailboxes that already hold the
//! message (its Maildir name was fixed at enqueue time), so a crash between
//! delivery and done mark does not double it, and replaces a `tmp/` file
//! of the same name that a killed process left behind.
//!
//! # Deletions are final: placed marks and the boot id
//!
//! The done mark follows a delivery by a checkpoint interval (it needs the
//! `syncfs` first). Looking for the copy is no substitute: a POP3 client
//! may have fetched and deleted it meanwhile, and delivering it again would
//! bring deleted mail back. So a delivery appends a *placed* record just
//! before the rename into `new/` (after the links for extra mailboxes),
//! holding the kernel's boot id (`/proc/sys/kernel/random/boot_id`) and the
//! mailbox whose `tmp/` holds the file until that rename. The record is a
//! plain `pwrite`, flushed by the next group commit or checkpoint, never by
//! a flush of its own: it is written to the page cache, which belongs to the
//! kernel and survives the death of any process. Recovery reads it so:
//!
//! - same boot id, and the `tmp/` file gone: the rename happened, and every
//!   copy is in the page cache or was removed by its reader. Nothing is
//!   delivered again; the copies still there are flushed by the next
//!   checkpoint, which then writes the done mark.
//! - same boot id, and the `tmp/` file still there: the process died just
//!   before the rename; delivered again (replacing that file).
//! - another boot id (power loss or kernel crash since): what the disk
//!   holds is all that counts, and the message is delivered again to every
//!   mailbox that does not hold it. At least once, never lost: a message
//!   read and deleted within the checkpoint interval after its delivery
//!   (about 100 ms plus the `syncfs`) may come back after a power failure.
//!
//! # Reuse
//!
//! Files are reused oldest first, once every message in them and in all
//! older ones is delivered; the header of a file taken out of use is wiped
//! and flushed first, so done marks in later files can never be needed for
//! it. A message that cannot be delivered keeps its file, and those after
//! it, in use: the directory then grows by new files until it is delivered.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use mailstore::{Envelope, Protocol, Queue, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::with_hostname(dir.path().join("mail"), "mx")?;
//! let (queue, recovered) = Queue::open(
//!     dir.path().join("queue"),
//!     store.clone(),
//!     1 << 20,
//!     Duration::from_millis(20),
//! )?;
//! assert!(recovered.is_empty());
//! let env = Envelope {
//!     mail_from: "user2@csuvnetwork.com".into(),
//!     recipients: vec!["user1@csuvnetwork.com".into()],
//!     mailboxes: vec!["user1".into()],
//!     helo: "client".into(),
//!     client_ip: "127.0.0.1".parse()?,
//!     protocol: Protocol::Esmtp,
//!     tls: None,
//!     our_hostname: "mail.csuvnetwork.com".into(),
//!     queue_id: "4F2A91C0B7D3".into(),
//!     time: SystemTime::now(),
//! };
//! // Durable once this returns: the SMTP server may answer 250 now.
//! let mut queued = queue.enqueue(&env, b"Subject: hi\r\n\r\nHello\r\n")?;
//! // Then, off the reply path, into the Maildir: visible at once, durable
//! // (and retired from the journal) at the next checkpoint.
//! let report = queue.deliver(&mut queued)?;
//! assert_eq!(report.paths.len(), 1);
//! queue.checkpoint()?;
//! assert_eq!(queue.pending(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::crlf::{PopSizer, ToLf};
use crate::store::{
    check_mailbox_name, trace_headers, unique_mailboxes, DeliveryReport, Envelope, Store,
};
use crate::util::{fsync_dir, io_err, os_random_u64};
use crate::{Error, Result};

/// Bytes at the start of a segment file reserved for its header: one block,
/// so rewriting the header never tears a record.
const SEG_HEADER: u64 = 4096;
const SEG_MAGIC: &[u8; 4] = b"MQS1";
const REC_MAGIC: &[u8; 4] = b"MQR1";
const REC_HEADER: usize = 32;
const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_PLACED: u8 = 3;
/// Why the last delivery attempt of a message failed: for `mailctl queue
/// list`; recovery ignores it.
const KIND_DEFERRED: u8 = 4;
/// Where the kernel publishes the id of the current boot (Linux).
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Smallest segment size accepted by [`Queue::open`].
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;
/// The segment size the daemons use.
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 * 1024 * 1024;
/// How long deliveries gather before one flush makes them all durable.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// A message that is durable in the journal and not yet delivered.
#[derive(Debug)]
pub struct Queued {
    seq: u64,
    seg_no: u64,
    queue_id: String,
    base: String,
    mailboxes: Vec<String>,
    /// The whole record; the Maildir file is `record[content_at..]`.
    record: Vec<u8>,
    content_at: usize,
    /// Set after a failed attempt and for recovered messages: the next
    /// delivery first looks for copies already in place.
    check_existing: bool,
    /// Recovered with a placed mark of this boot: the delivery completed
    /// in a process that died before its done mark. Only flushed and
    /// retired, never delivered again (its copies may have been deleted).
    placed_this_boot: bool,
}

impl Queued {
    /// The queue id given at enqueue time.
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    /// The local mailboxes the message goes to.
    pub fn mailboxes(&self) -> &[String] {
        &self.mailboxes
    }

    /// The Maildir file's content (LF line ends, trace headers first).
    pub fn content(&self) -> &[u8] {
        self.record.get(self.content_at..).unwrap_or_default()
    }

    /// The Maildir base name fixed at enqueue time.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    /// Whether a process of this boot completed the delivery and died
    /// before retiring it (see the module docs): delivering it then only
    /// flushes.
    pub fn placed_this_boot(&self) -> bool {
        self.placed_this_boot
    }
}

#[derive(Debug)]
struct Segment {
    no: u64,
    nonce: u64,
    file: Arc<File>,
    path: PathBuf,
    /// Messages in this segment without a done mark.
    undone: usize,
    /// Of the current size: reused when retired (else removed).
    reusable: bool,
}

#[derive(Debug)]
struct State {
    /// Segments in use, oldest first; the last one is appended to.
    active: VecDeque<Segment>,
    /// Files ready for reuse (header wiped, or never used).
    free: Vec<(PathBuf, Arc<File>)>,
    /// Where the next record goes in the current segment.
    offset: u64,
    next_seq: u64,
    next_seg_no: u64,
    next_file_no: u64,
    /// Highest sequence number written, and highest known durable.
    written: u64,
    synced: u64,
    syncing: bool,
    /// A failed write or flush: the journal takes no more messages (a
    /// failed fsync may have lost pages; see fsyncgate), callers fall back
    /// to direct delivery.
    broken: Option<String>,
    /// A spare file is being made in the background.
    preparing: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    store: Store,
    seg_size: u64,
    state: Mutex<State>,
    synced: Condvar,
    ckpt: Arc<Checkpoints>,
    /// The kernel's boot id, written into placed marks; empty if unknown
    /// (then no mark ever matches, and recovery delivers again what it
    /// cannot find: at least once).
    boot_id: String,
    /// Held for the queue's lifetime: one process per queue directory.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Under the mutex, so the checkpoint thread cannot miss it between
        // its check and its wait.
        let _u = self.ckpt.lock();
        self.ckpt.closed.store(true, Ordering::SeqCst);
        self.ckpt.cv.notify_all();
    }
}

/// Deliveries placed in Maildirs but not yet flushed, and the background
/// thread's wake-up. Separate from [`Inner`] so the thread can wait on it
/// without keeping the queue (and its directory lock) alive.
#[derive(Debug, Default)]
struct Checkpoints {
    unsynced: Mutex<Unsynced>,
    cv: Condvar,
    /// One checkpoint at a time.
    running: Mutex<()>,
    closed: AtomicBool,
}

impl Checkpoints {
    fn lock(&self) -> MutexGuard<'_, Unsynced> {
        self.unsynced.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Unsynced {
    /// Sequence and segment numbers of the messages.
    entries: Vec<(u64, u64)>,
    /// The `new/` directories they went to.
    dirs: HashSet<PathBuf>,
}

/// The queue journal of one SMTP server. Cheap to clone; every method
/// blocks on file I/O (async hosts call them from `spawn_blocking`).
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// Opens (creating if needed) the journal in `dir` with segment files
    /// of `segment_size` bytes (at least [`MIN_SEGMENT_SIZE`]), locks it
    /// for this process, and returns it with the messages that a previous
    /// run made durable but did not finish delivering. A background thread
    /// runs [`Queue::checkpoint`] `checkpoint_interval` after a delivery
    /// finds none pending ([`DEFAULT_CHECKPOINT_INTERVAL`] suits a server).
    pub fn open(
        dir: impl Into<PathBuf>,
        store: Store,
        segment_size: u64,
        checkpoint_interval: Duration,
    ) -> Result<(Queue, Vec<Queued>)> {
        let boot_id = fs::read_to_string(BOOT_ID_PATH)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self::open_in_boot(dir, store, segment_size, checkpoint_interval, boot_id)
    }

    /// [`Queue::open`] as if the kernel's boot id were `boot_id` (tests
    /// simulate a reboot with it).
    #[doc(hidden)]
    pub fn open_in_boot(
        dir: impl Into<PathBuf>,
        store: Store,
        segment_size: u64,
        checkpoint_interval: Duration,
        boot_id: String,
    ) -> Result<(Queue, Vec<Queued>)> {
        let dir = dir.into();
        let seg_size = segment_size.max(MIN_SEGMENT_SIZE) & !7;
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(Error::Io {
                path: dir,
                source: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "queue directory is in use by another process",
                ),
            });
        }
        // Who holds it, for `mailctl queue flush` (see [`holder`]).
        lock.set_len(0)
            .and_then(|()| lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0))
            .map_err(io_err(&lock_path))?;

        let mut files = Vec::new();
        let mut next_file_no = 0;
        let entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(num) = name.strip_prefix("seg-") else {
                continue;
            };
            let (num, partial) = match num.strip_suffix(".tmp") {
                Some(n) => (n, true),
                None => (num, false),
            };
            let Ok(no) = num.parse::<u64>() else { continue };
            next_file_no = next_file_no.max(no.saturating_add(1));
            let path = e.path();
            if partial {
                // A spare whose making was cut short (or, within one
                // process, is being finished by a previous queue's thread:
                // then it may be gone already, and is harmless either way).
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            files.push((path, Arc::new(file)));
        }

        // Read every segment whose header checks, in segment order.
        let mut used: BTreeMap<u64, (Segment, Vec<Record>)> = BTreeMap::new();
        let mut free = Vec::new();
        let mut max_seq = 0;
        for (path, file) in files {
            let mut data = Vec::new();
            (&*file).read_to_end(&mut data).map_err(io_err(&path))?;
            let reusable = data.len() as u64 == seg_size;
            match parse_segment(&data) {
                Some((no, nonce, records)) => {
                    max_seq = records.iter().map(|r| r.seq).fold(max_seq, u64::max);
                    let seg = Segment {
                        no,
                        nonce,
                        file,
                        path,
                        undone: 0,
                        reusable,
                    };
                    used.insert(no, (seg, records));
                }
                None if reusable => free.push((path, file)),
                None => fs::remove_file(&path).map_err(io_err(&path))?,
            }
        }
        let done: HashSet<u64> = used
            .values()
            .flat_map(|(_, recs)| recs.iter())
            .filter(|r| r.kind == KIND_DONE)
            .filter_map(|r| r.payload.get(..8).map(le_u64))
            .collect();
        // The last placed mark of each message, if made in this boot.
        let mut placed: BTreeMap<u64, String> = BTreeMap::new();
        for r in used.values().flat_map(|(_, recs)| recs.iter()) {
            if r.kind != KIND_PLACED {
                continue;
            }
            match decode_placed(&r.payload) {
                Some((seq, boot, first)) if !boot_id.is_empty() && boot == boot_id => {
                    placed.insert(seq, first);
                }
                Some((seq, _, _)) => {
                    placed.remove(&seq);
                }
                None => {}
            }
        }
        let mut recovered = Vec::new();
        let mut active = VecDeque::new();
        let next_seg_no = used.keys().next_back().map_or(1, |n| n.saturating_add(1));
        for (_, (mut seg, records)) in used {
            for r in records {
                if r.kind == KIND_MESSAGE && !done.contains(&r.seq) {
                    match decode_message(r.seq, seg.no, r.payload) {
                        Some(mut q) => {
                            if let Some(first) = placed.get(&q.seq) {
                                q.placed_this_boot = rename_done(&store, first, &q.base);
                            }
                            recovered.push(q);
                            seg.undone += 1;
                        }
                        None => {
                            // Keep its segment (never retired), so the
                            // record stays for inspection, not lost.
                            tracing::error!(
                                file = %seg.path.display(),
                                seq = r.seq,
                                "queue record checks but does not decode; kept, not delivered"
                            );
                            seg.undone += 1;
                        }
                    }
                }
            }
            // Keep everything from the oldest segment with a message to
            // deliver onwards: later segments may hold its done mark.
            if seg.undone > 0 || !active.is_empty() {
                active.push_back(seg);
            } else {
                retire(&seg, &mut free)?;
            }
        }

        let queue = Queue {
            inner: Arc::new(Inner {
                dir,
                store,
                seg_size,
                state: Mutex::new(State {
                    active,
                    free,
                    offset: 0,
                    next_seq: max_seq.saturating_add(1),
                    next_seg_no,
                    next_file_no,
                    written: max_seq,
                    synced: max_seq,
                    syncing: false,
                    broken: None,
                    preparing: false,
                }),
                synced: Condvar::new(),
                ckpt: Arc::new(Checkpoints::default()),
                boot_id,
                _lock: lock,
            }),
        };
        spawn_checkpointer(&queue, checkpoint_interval);
        {
            let mut st = queue.lock();
            // No spare yet: a server that never fills a segment never
            // writes a second one (and a test's directory is quiet once
            // the queue is dropped).
            queue.start_segment(&mut st, false)?;
        }
        Ok((queue, recovered))
    }

    /// The store the journal delivers into.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The largest message content (in SMTP form) the journal takes; larger
    /// messages are delivered directly.
    pub fn max_content(&self) -> usize {
        // Room for the headers and the CRLF -> LF growth-free conversion.
        usize::try_from(self.inner.seg_size - SEG_HEADER)
            .unwrap_or(usize::MAX)
            .saturating_sub(16 * 1024)
    }

    /// Messages enqueued (or recovered) and not yet delivered.
    pub fn pending(&self) -> usize {
        self.lock().active.iter().map(|s| s.undone).sum()
    }

    /// Writes `content` (in SMTP form: CRLF line ends, dot-unstuffed) for
    /// `env`'s mailboxes to the journal and flushes it. Once this returns
    /// `Ok`, the message survives a crash: answer `250`, then call
    /// [`Queue::deliver`].
    pub fn enqueue(&self, env: &Envelope, content: &[u8]) -> Result<Queued> {
        let mailboxes = unique_mailboxes(&env.mailboxes)?;
        if mailboxes.is_empty() {
            return Err(Error::NoRecipients);
        }
        let base = self.inner.store.unique_base(env.time);
        let headers = trace_headers(env);
        let mut rec = Vec::with_capacity(REC_HEADER + 128 + headers.len() + content.len());
        rec.resize(REC_HEADER, 0);
        let count =
            u16::try_from(mailboxes.len()).map_err(|_| self.broken_err("too many mailboxes"))?;
        rec.extend_from_slice(&count.to_le_bytes());
        for m in &mailboxes {
            put_field(&mut rec, m.as_bytes());
        }
        put_field(&mut rec, env.queue_id.as_bytes());
        put_field(&mut rec, base.as_bytes());
        let content_at = rec.len();
        rec.extend_from_slice(headers.as_bytes());
        let mut conv = ToLf::new();
        conv.convert(content, &mut rec);
        conv.finish(&mut rec);
        if rec.len() as u64 + 8 > self.inner.seg_size - SEG_HEADER {
            return Err(Error::Io {
                path: self.inner.dir.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "message too large for the queue journal",
                ),
            });
        }
        let (seq, seg_no) = self.append(KIND_MESSAGE, &mut rec)?;
        self.commit(seq)?;
        Ok(Queued {
            seq,
            seg_no,
            queue_id: env.queue_id.clone(),
            base,
            mailboxes,
            record: rec,
            content_at,
            check_existing: false,
            placed_this_boot: false,
        })
    }

    /// Delivers `q` into every mailbox that does not hold it yet: the file
    /// is visible in `new/` when this returns, and durable at the next
    /// checkpoint, which also retires it from the journal. Until then the
    /// journal keeps it, so a crash loses nothing. On error the message
    /// stays queued: call again later (the next attempt skips mailboxes
    /// that got their copy).
    ///
    /// Leaving the flushes to the checkpoint makes one `syncfs` serve many
    /// deliveries, and keeps them off the reply path of the next messages.
    pub fn deliver(&self, q: &mut Queued) -> Result<DeliveryReport> {
        let store = &self.inner.store;
        let mut sizer = PopSizer::new();
        sizer.update(q.content());
        let name = format!("{},S={},W={}", q.base, sizer.disk, sizer.crlf);
        let mut paths = Vec::new();
        let flush_dirs: Vec<PathBuf> = if q.placed_this_boot {
            // Placed by a process of this boot: the copies left are in the
            // page cache (a missing one was deleted by its reader). Only
            // the checkpoint's flush is owed, on their file systems.
            q.mailboxes
                .iter()
                .map(|m| store.maildir_path(m).join("new"))
                .collect()
        } else {
            let mut targets = q.mailboxes.clone();
            if q.check_existing {
                let mut keep = Vec::with_capacity(targets.len());
                for m in targets {
                    if !store.holds(&m, &q.base, q.content())? {
                        keep.push(m);
                    }
                }
                targets = keep;
            }
            q.check_existing = true;
            match targets.first() {
                // Every mailbox holds it (durably: `holds` flushed them).
                None => {
                    self.mark_placed(q.seq, "");
                }
                Some(first) => {
                    // Replacing: the name is this message's alone, so a
                    // file there is an earlier attempt's (of a killed
                    // process, or one that failed after its placed mark).
                    let (tmp, mut file) = store.create_tmp(first, &q.base, true)?;
                    let written = file.write_all(q.content()).map_err(io_err(&tmp));
                    drop(file);
                    let mut marked = false;
                    let placed = written.and_then(|()| {
                        store.place(&tmp, &name, &targets, false, || {
                            marked = self.mark_placed(q.seq, first);
                        })
                    });
                    match placed {
                        Ok(p) => paths = p,
                        Err(e) => {
                            // After the placed mark, the tmp file is what
                            // tells recovery that the rename did not
                            // happen: it stays until the next attempt
                            // replaces it.
                            if !marked {
                                let _ = fs::remove_file(&tmp);
                            }
                            return Err(e);
                        }
                    }
                }
            }
            paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect()
        };
        {
            let mut u = self.inner.ckpt.lock();
            u.entries.push((q.seq, q.seg_no));
            u.dirs.extend(flush_dirs);
        }
        self.inner.ckpt.cv.notify_one();
        Ok(DeliveryReport {
            queue_id: q.queue_id.clone(),
            file_name: name,
            disk_size: sizer.disk,
            pop3_size: sizer.crlf,
            paths,
        })
    }

    /// Makes every delivery so far durable (one `syncfs` per file system
    /// holding their Maildirs) and retires those messages from the journal.
    /// Runs by itself every checkpoint interval while deliveries wait;
    /// call it before stopping. Returns how many messages it retired.
    pub fn checkpoint(&self) -> Result<usize> {
        let _one = self
            .inner
            .ckpt
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let batch = std::mem::take(&mut *self.inner.ckpt.lock());
        if batch.entries.is_empty() {
            return Ok(0);
        }
        let synced = (|| -> Result<()> {
            let mut devices = HashSet::new();
            for d in &batch.dirs {
                let f = match File::open(d) {
                    Ok(f) => f,
                    // The account went away with its Maildir: nothing of
                    // ours left there to flush.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(d)(e)),
                };
                let dev = f.metadata().map_err(io_err(d))?.dev();
                if devices.insert(dev) {
                    rustix::fs::syncfs(&f).map_err(|e| io_err(d)(e.into()))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = synced {
            // A failed flush may have dropped pages, and a retry could
            // succeed without them (the error is reported once): never
            // retire these in this process. They stay undone, so the next
            // start checks each copy against the journal. New messages go
            // the direct way meanwhile.
            let mut st = self.lock();
            st.broken = Some(format!("checkpoint flush failed: {e}"));
            return Err(e);
        }
        let n = batch.entries.len();
        let mut first_err = None;
        let mut last = 0;
        for (seq, seg_no) in batch.entries {
            match self.mark_done(seq, seg_no) {
                Ok(s) => last = last.max(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Flush the done records, so that a power failure after a quiet
        // spell does not bring back messages already read and deleted.
        if last > 0 {
            if let Err(e) = self.commit(last) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record whose payload follows `REC_HEADER` reserved bytes
    /// in `rec`; fills in the header. Returns its sequence and segment
    /// numbers. Not durable until [`Queue::commit`].
    fn append(&self, kind: u8, rec: &mut Vec<u8>) -> Result<(u64, u64)> {
        let payload_len = u32::try_from(rec.len() - REC_HEADER)
            .map_err(|_| self.broken_err("record too large"))?;
        let total = (rec.len() as u64 + 7) & !7;
        let mut st = self.lock();
        if let Some(why) = &st.broken {
            return Err(self.broken_err(why));
        }
        if st.offset + total > self.inner.seg_size {
            self.roll(&mut st)?;
        }
        let seq = st.next_seq;
        let (seg_no, nonce, file) = match st.active.back() {
            Some(s) => (s.no, s.nonce, Arc::clone(&s.file)),
            None => return Err(self.broken_err("no current segment")),
        };
        let head = record_header(kind, nonce, seq, payload_len, &rec[REC_HEADER..]);
        rec[..REC_HEADER].copy_from_slice(&head);
        let pad = usize::try_from(total).unwrap_or(usize::MAX) - rec.len();
        let padded_len = rec.len();
        rec.extend(std::iter::repeat_n(0, pad));
        let r = file.write_all_at(rec, st.offset);
        rec.truncate(padded_len);
        if let Err(e) = r {
            st.broken = Some(format!("journal write failed: {e}"));
            return Err(self.io(e));
        }
        st.offset += total;
        st.next_seq += 1;
        st.written = seq;
        if kind == KIND_MESSAGE {
            if let Some(s) = st.active.back_mut() {
                s.undone += 1;
            }
        }
        Ok((seq, seg_no))
    }

    /// Waits until record `seq` is durable, flushing (for everyone who
    /// waits) if no flush that covers it is under way: group commit.
    fn commit(&self, seq: u64) -> Result<()> {
        let mut st = self.lock();
        loop {
            if st.synced >= seq {
                return Ok(());
            }
            if let Some(why) = &st.broken {
                return Err(self.broken_err(why));
            }
            if st.syncing {
                st = self
                    .inner
                    .synced
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let Some(file) = st.active.back().map(|s| Arc::clone(&s.file)) else {
                return Err(self.broken_err("no current segment"));
            };
            let target = st.written;
            st.syncing = true;
            drop(st);
            // Only data: the file's size and blocks never change after it
            // was made, so this is one device flush, no metadata commit.
            let r = file.sync_data();
            st = self.lock();
            st.syncing = false;
            match r {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => st.broken = Some(format!("journal flush failed: {e}")),
            }
            self.inner.synced.notify_all();
        }
    }

    /// Seals the current segment (flushing it) and starts the next one.
    fn roll(&self, st: &mut State) -> Result<()> {
        if let Some(cur) = st.active.back() {
            if let Err(e) = cur.file.sync_data() {
                st.broken = Some(format!("journal flush failed: {e}"));
                return Err(self.io(e));
            }
            st.synced = st.written;
            self.inner.synced.notify_all();
        }
        self.start_segment(st, true)
    }

    /// Makes a free (or new) file the current segment by writing its
    /// header; durable with the first commit in it. With `prepare_spare`,
    /// a spare file is made in the background if none is free.
    fn start_segment(&self, st: &mut State, prepare_spare: bool) -> Result<()> {
        let (path, file) = match st.free.pop() {
            Some(f) => f,
            None => {
                let no = st.next_file_no;
                st.next_file_no += 1;
                make_segment(&self.inner.dir, no, self.inner.seg_size)?
            }
        };
        let no = st.next_seg_no;
        st.next_seg_no += 1;
        let nonce = os_random_u64() ^ no.rotate_left(17);
        file.write_all_at(&make_seg_header(no, nonce), 0)
            .map_err(io_err(&path))?;
        st.active.push_back(Segment {
            no,
            nonce,
            file,
            path,
            undone: 0,
            reusable: true,
        });
        st.offset = SEG_HEADER;
        if prepare_spare && st.free.is_empty() && !st.preparing {
            st.preparing = true;
            let no = st.next_file_no;
            st.next_file_no += 1;
            let dir = self.inner.dir.clone();
            let size = self.inner.seg_size;
            // Weak: a spare being made must not keep the queue (and its
            // directory lock) alive after the server let it go.
            let q = Arc::downgrade(&self.inner);
            // A spare, so the next roll does not wait for zeros to be written.
            std::thread::spawn(move || {
                let made = make_segment(&dir, no, size);
                let Some(inner) = q.upgrade() else { return };
                let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.preparing = false;
                match made {
                    Ok(f) => st.free.push(f),
                    Err(e) => tracing::warn!(error = %e, "could not prepare a queue segment"),
                }
            });
        }
        Ok(())
    }

    /// Appends a placed mark for message `seq` (see the module docs):
    /// `first` is the mailbox whose `tmp/` holds the file until the rename
    /// that follows, empty when every mailbox already holds it. Returns
    /// whether it was written; a journal that cannot take it any more only
    /// costs the guarantee for deletions (recovery then delivers again
    /// what it cannot find), so the delivery goes on without it.
    ///
    /// No flush: the record must survive the death of this process, not of
    /// the kernel, and a `pwrite` is in the page cache once it returns.
    /// After a kernel crash or power loss the boot id differs and recovery
    /// ignores the mark anyway. The next group commit or checkpoint flushes
    /// it with everything else.
    fn mark_placed(&self, seq: u64, first: &str) -> bool {
        let mut rec = vec![0; REC_HEADER];
        rec.extend_from_slice(&seq.to_le_bytes());
        put_field(&mut rec, self.inner.boot_id.as_bytes());
        put_field(&mut rec, first.as_bytes());
        match self.append(KIND_PLACED, &mut rec) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, seq, "cannot write a placed mark; delivering without it");
                false
            }
        }
    }

    /// Notes why a delivery attempt of `q` failed, for [`inspect`]
    /// (`mailctl queue list`). Not flushed: only information.
    pub fn note_deferred(&self, q: &Queued, why: &str) {
        let mut rec = vec![0; REC_HEADER];
        rec.extend_from_slice(&q.seq.to_le_bytes());
        put_field(&mut rec, why.as_bytes());
        if let Err(e) = self.append(KIND_DEFERRED, &mut rec) {
            tracing::debug!(error = %e, "cannot note a deferral in the queue journal");
        }
    }

    /// Records that `q` is delivered and retires segments that hold
    /// nothing undelivered any more, oldest first.
    /// Returns the done record's sequence number. If the record cannot be
    /// written the accounting is done all the same (the message is durable
    /// in its Maildirs, so its segment may be retired, which makes its
    /// record unreadable) and the error is returned.
    fn mark_done(&self, seq: u64, seg_no: u64) -> Result<u64> {
        let mut rec = vec![0; REC_HEADER];
        rec.extend_from_slice(&seq.to_le_bytes());
        // Durable with the next commit; if lost, recovery finds the message
        // already in place (and checks it) and does not deliver it twice.
        let written = self.append(KIND_DONE, &mut rec);
        let mut retired = Vec::new();
        {
            let mut st = self.lock();
            if let Some(s) = st.active.iter_mut().find(|s| s.no == seg_no) {
                s.undone = s.undone.saturating_sub(1);
            }
            while st.active.len() > 1 && st.active.front().is_some_and(|s| s.undone == 0) {
                if let Some(s) = st.active.pop_front() {
                    retired.push(s);
                }
            }
        }
        let mut failed = None;
        for s in retired {
            let mut free = Vec::new();
            match retire(&s, &mut free) {
                Ok(()) => self.lock().free.extend(free),
                // Not reused: its header may still be readable.
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        let (done_seq, _) = written?;
        match failed {
            Some(e) => Err(e),
            None => Ok(done_seq),
        }
    }

    fn io(&self, e: io::Error) -> Error {
        io_err(&self.inner.dir)(e)
    }

    fn broken_err(&self, why: &str) -> Error {
        Error::Io {
            path: self.inner.dir.clone(),
            source: io::Error::other(why.to_string()),
        }
    }
}

/// The thread that flushes deliveries: it sleeps until one is placed,
/// lets `interval` pass so that one flush serves all that come meanwhile,
/// and runs a checkpoint. It ends when the queue is dropped.
fn spawn_checkpointer(queue: &Queue, interval: Duration) {
    let ckpt = Arc::clone(&queue.inner.ckpt);
    let weak = Arc::downgrade(&queue.inner);
    std::thread::Builder::new()
        .name("queue-checkpoint".into())
        .spawn(move || loop {
            {
                let mut u = ckpt.lock();
                while u.entries.is_empty() && !ckpt.closed.load(Ordering::SeqCst) {
                    u = ckpt.cv.wait(u).unwrap_or_else(PoisonError::into_inner);
                }
            }
            if ckpt.closed.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(interval);
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = (Queue { inner }).checkpoint() {
                tracing::error!(error = %e, "queue checkpoint failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, "no checkpoint thread; deliveries stay queued until checkpoint() is called"));
}

/// A message in the queue journal, as [`inspect`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The queue id given at enqueue time.
    pub queue_id: String,
    /// The local mailboxes it goes to.
    pub mailboxes: Vec<String>,
    /// Bytes of the Maildir file (LF line ends, trace headers included).
    pub size: usize,
    /// A delivery reached its final rename (placed mark), not yet retired
    /// by a checkpoint.
    pub placed: bool,
    /// Failed attempts noted, and the reason of the last one.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The messages in the queue journal in `dir` that are not retired,
/// oldest first. Reads only, takes no lock: works while `smtpd` runs
/// (records being written then may be missing).
pub fn inspect(dir: &Path) -> Result<Vec<QueueEntry>> {
    let mut segs = BTreeMap::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("seg-") || name.ends_with(".tmp") {
            continue;
        }
        let path = e.path();
        let data = fs::read(&path).map_err(io_err(&path))?;
        if let Some((no, _, records)) = parse_segment(&data) {
            segs.insert(no, records);
        }
    }
    let mut out: BTreeMap<u64, QueueEntry> = BTreeMap::new();
    let mut done = HashSet::new();
    for r in segs.into_values().flatten() {
        let seq = r.payload.get(..8).map(le_u64);
        match r.kind {
            KIND_MESSAGE => {
                if let Some(q) = decode_message(r.seq, 0, r.payload) {
                    out.insert(
                        r.seq,
                        QueueEntry {
                            size: q.content().len(),
                            queue_id: q.queue_id,
                            mailboxes: q.mailboxes,
                            placed: false,
                            failures: 0,
                            last_error: None,
                        },
                    );
                }
            }
            KIND_DONE => {
                done.extend(seq);
            }
            KIND_PLACED => {
                if let Some(m) = seq.and_then(|s| out.get_mut(&s)) {
                    m.placed = true;
                }
            }
            KIND_DEFERRED => {
                if let Some(m) = seq.and_then(|s| out.get_mut(&s)) {
                    m.failures += 1;
                    let why = r.payload.get(10..).unwrap_or_default();
                    m.last_error = Some(String::from_utf8_lossy(why).into_owned());
                }
            }
            _ => {}
        }
    }
    Ok(out
        .into_iter()
        .filter(|(seq, _)| !done.contains(seq))
        .map(|(_, m)| m)
        .collect())
}

/// The process id of the process that holds the queue in `dir` (a running
/// `smtpd`), or `None` when nobody holds it.
pub fn holder(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join("lock");
    let lock = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    if lock.try_lock_shared().is_ok() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    Ok(text.trim().parse().ok())
}

/// A record read back from a segment.
struct Record {
    kind: u8,
    seq: u64,
    payload: Vec<u8>,
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(a)
}

fn u16_len(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A length-prefixed field (names are short: mailbox names are at most 255
/// bytes, queue ids and base names well under 64 KiB).
fn put_field(rec: &mut Vec<u8>, b: &[u8]) {
    let b = b.get(..usize::from(u16::MAX)).unwrap_or(b);
    rec.extend_from_slice(&u16_len(b.len()).to_le_bytes());
    rec.extend_from_slice(b);
}

fn make_seg_header(no: u64, nonce: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(SEG_MAGIC);
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..16].copy_from_slice(&no.to_le_bytes());
    h[16..24].copy_from_slice(&nonce.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn record_header(kind: u8, nonce: u64, seq: u64, len: u32, payload: &[u8]) -> [u8; REC_HEADER] {
    let mut head = [0u8; REC_HEADER];
    head[..4].copy_from_slice(REC_MAGIC);
    head[4] = kind;
    head[8..16].copy_from_slice(&nonce.to_le_bytes());
    head[16..24].copy_from_slice(&seq.to_le_bytes());
    head[24..28].copy_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..28]);
    h.update(payload);
    head[28..32].copy_from_slice(&h.finalize().to_le_bytes());
    head
}

/// A segment file holding `records` (kind, payload) with valid checksums,
/// for the fuzz target: lets it reach the payload decoder.
#[doc(hidden)]
pub fn fuzz_build_segment(records: &[(u8, &[u8])]) -> Vec<u8> {
    let nonce = 0x5EED;
    let mut data = make_seg_header(1, nonce).to_vec();
    data.resize(usize::try_from(SEG_HEADER).unwrap_or(4096), 0);
    for (seq, (kind, payload)) in (1u64..).zip(records) {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        data.extend_from_slice(&record_header(*kind, nonce, seq, len, payload));
        data.extend_from_slice(payload);
        data.resize((data.len() + 7) & !7, 0);
    }
    data
}

/// The segment number and nonce of a file in use, `None` for a free one.
fn seg_header(data: &[u8]) -> Option<(u64, u64)> {
    let h = data.get(..32)?;
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if &h[..4] != SEG_MAGIC || crc != crc32fast::hash(&h[..24]) {
        return None;
    }
    Some((le_u64(&h[8..16]), le_u64(&h[16..24])))
}

/// A segment file's number, nonce and valid records, in order, up to the
/// first record that does not check; `None` for a free file.
fn parse_segment(data: &[u8]) -> Option<(u64, u64, Vec<Record>)> {
    let (no, nonce) = seg_header(data)?;
    let mut out = Vec::new();
    let mut off = usize::try_from(SEG_HEADER).unwrap_or(usize::MAX);
    while let Some(head) = data.get(off..off.saturating_add(REC_HEADER)) {
        let plen = u32::from_le_bytes([head[24], head[25], head[26], head[27]]);
        let plen = usize::try_from(plen).unwrap_or(usize::MAX);
        let start = off + REC_HEADER;
        let Some(payload) = data.get(start..start.saturating_add(plen)) else {
            break;
        };
        if &head[..4] != REC_MAGIC || le_u64(&head[8..16]) != nonce {
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&head[..28]);
        h.update(payload);
        if h.finalize() != u32::from_le_bytes([head[28], head[29], head[30], head[31]]) {
            break;
        }
        out.push(Record {
            kind: head[4],
            seq: le_u64(&head[16..24]),
            payload: payload.to_vec(),
        });
        off = (start + plen + 7) & !7;
    }
    Some((no, nonce, out))
}

/// Runs the recovery parser over one segment file's bytes: the fuzz
/// target's entry (`fuzz/fuzz_targets/mailstore_queue_segment.rs`).
/// Returns the number of message records that decode.
#[doc(hidden)]
pub fn fuzz_parse_segment(data: &[u8]) -> usize {
    let Some((no, _, records)) = parse_segment(data) else {
        return 0;
    };
    records
        .into_iter()
        .filter(|r| r.kind == KIND_MESSAGE)
        .filter_map(|r| decode_message(r.seq, no, r.payload))
        .count()
}

/// A placed mark's message sequence number, boot id and first mailbox.
fn decode_placed(p: &[u8]) -> Option<(u64, String, String)> {
    let seq = le_u64(p.get(..8)?);
    let mut at = 8;
    let mut field = || {
        let len = usize::from(u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]));
        let f = p.get(at + 2..at + 2 + len)?;
        at += 2 + len;
        String::from_utf8(f.to_vec()).ok()
    };
    let boot = field()?;
    let first = field()?;
    Some((seq, boot, first))
}

/// Whether the rename that completes a delivery with a placed mark naming
/// `first` happened: the file `first`'s `tmp/<base>` is gone. In doubt (a
/// bad name, an error other than "not found") no: delivering again is the
/// safe side.
fn rename_done(store: &Store, first: &str, base: &str) -> bool {
    if first.is_empty() {
        return true;
    }
    if check_mailbox_name(first).is_err() {
        return false;
    }
    let tmp = store.maildir_path(first).join("tmp").join(base);
    matches!(fs::symlink_metadata(&tmp), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Reads a message record's payload back into a [`Queued`].
fn decode_message(seq: u64, seg_no: u64, payload: Vec<u8>) -> Option<Queued> {
    fn field<'a>(p: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
        let len = usize::from(u16::from_le_bytes([*p.get(*at)?, *p.get(*at + 1)?]));
        let f = p.get(*at + 2..*at + 2 + len)?;
        *at += 2 + len;
        Some(f)
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let mut at = 0;
    let n = u16::from_le_bytes([*payload.first()?, *payload.get(1)?]);
    at += 2;
    let mut mailboxes = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        mailboxes.push(text(field(&payload, &mut at)?)?);
    }
    let mailboxes = unique_mailboxes(&mailboxes).ok()?;
    let queue_id = text(field(&payload, &mut at)?)?;
    let base = text(field(&payload, &mut at)?)?;
    if check_mailbox_name(&base).is_err() || mailboxes.is_empty() {
        return None;
    }
    let mut record = vec![0; REC_HEADER];
    record.extend_from_slice(&payload);
    Some(Queued {
        seq,
        seg_no,
        queue_id,
        base,
        mailboxes,
        record,
        content_at: REC_HEADER + at,
        check_existing: true,
        placed_this_boot: false,
    })
}

/// Creates `seg-NNNNNN` filled with zeros and flushed with its directory
/// entry, so appends to it later change no metadata.
fn make_segment(dir: &Path, no: u64, size: u64) -> Result<(PathBuf, Arc<File>)> {
    let path = dir.join(format!("seg-{no:06}"));
    let tmp = dir.join(format!("seg-{no:06}.tmp"));
    let made = (|| -> io::Result<File> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // Real zeros, not a sparse file or fallocate's unwritten extents:
        // either would make the first write to each block a metadata change.
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
            f.write_all(zeros.get(..n).unwrap_or(&zeros))?;
            left -= n as u64;
        }
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(f)
    })();
    let file = match made {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
    };
    fsync_dir(dir)?;
    Ok((path, Arc::new(file)))
}

/// Takes a segment out of use: wipes and flushes its header (so its records
/// can never be read again, whatever happens to done marks elsewhere), then
/// offers it for reuse, or removes it if its size is not the current one.
fn retire(seg: &Segment, free: &mut Vec<(PathBuf, Arc<File>)>) -> Result<()> {
    if !seg.reusable {
        fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        // Durably gone, or its done-less records could come back.
        return fsync_dir(seg.path.parent().unwrap_or(Path::new(".")));
    }
    seg.file
        .write_all_at(&[0u8; 32], 0)
        .and_then(|()| seg.file.sync_data())
        .map_err(io_err(&seg.path))?;
    free.push((seg.path.clone(), Arc::clone(&seg.file)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// Checkpoints only when a test asks for one.
    const HOUR: Duration = Duration::from_secs(3600);

    fn env(mailboxes: &[&str], id: &str) -> Envelope {
        Envelope {
            queue_id: id.into(),
            time: SystemTime::now(),
            ..crate::store::tests::env(mailboxes)
        }
    }

    fn files(dir: &Path, user: &str, sub: &str) -> Vec<PathBuf> {
        match fs::read_dir(dir.join(user).join("Maildir").join(sub)) {
            Ok(r) => r.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        mail: PathBuf,
        queue: PathBuf,
        store: Store,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mail = dir.path().join("mail");
        let store = Store::with_hostname(&mail, "mx").unwrap();
        Fixture {
            queue: dir.path().join("queue"),
            mail,
            store,
            _dir: dir,
        }
    }

    #[test]
    fn enqueue_then_deliver_writes_the_maildir_file() {
        let f = fixture();
        let (q, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert!(rec.is_empty());
        let mut m = q
            .enqueue(
                &env(&["user1", "user2", "user1"], "Q1"),
                b"Subject: a\r\n\r\nbody\r\n",
            )
            .unwrap();
        assert_eq!(m.mailboxes(), ["user1", "user2"]);
        assert_eq!(q.pending(), 1);
        let report = q.deliver(&mut m).unwrap();
        assert_eq!(q.pending(), 1, "retired only by a checkpoint");
        assert_eq!(q.checkpoint().unwrap(), 1);
        assert_eq!(q.pending(), 0);
        assert_eq!(report.paths.len(), 2);
        let text = fs::read(&report.paths[0]).unwrap();
        assert!(text.starts_with(b"Return-Path: <user2@csuvnetwork.com>\n"));
        assert!(text.ends_with(b"Subject: a\n\nbody\n"));
        assert_eq!(report.disk_size, text.len() as u64);
        assert!(report
            .file_name
            .ends_with(&format!(",S={},W={}", text.len(), report.pop3_size)));
        assert_eq!(files(&f.mail, "user2", "new").len(), 1);
        assert!(files(&f.mail, "user1", "tmp").is_empty());
    }

    #[test]
    fn undelivered_messages_come_back_after_a_crash() {
        let f = fixture();
        let ids: Vec<String> = (0..5).map(|i| format!("Q{i}")).collect();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            for (i, id) in ids.iter().enumerate() {
                let mut m = q
                    .enqueue(
                        &env(&["user1"], id),
                        format!("n: {i}\r\n\r\nx\r\n").as_bytes(),
                    )
                    .unwrap();
                if i % 2 == 0 {
                    q.deliver(&mut m).unwrap();
                }
            }
            q.checkpoint().unwrap();
            // Dropped without delivering Q1 and Q3: as a crash would.
        }
        let (q, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let got: Vec<&str> = rec.iter().map(Queued::queue_id).collect();
        assert_eq!(got, ["Q1", "Q3"]);
        assert_eq!(q.pending(), 2);
        for mut m in rec {
            assert!(m.content().ends_with(b"\n\nx\n"));
            q.deliver(&mut m).unwrap();
        }
        q.checkpoint().unwrap();
        assert_eq!(files(&f.mail, "user1", "new").len(), 5);
        drop(q);
        let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert!(rec.is_empty());
    }

    #[test]
    fn redelivery_skips_mailboxes_that_hold_the_message() {
        let f = fixture();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            let m = q
                .enqueue(&env(&["user1", "user2"], "Q"), b"s: x\r\n\r\nb\r\n")
                .unwrap();
            // Delivered to user1 and already read (moved to cur/ with a
            // flag), but the process died before the done mark.
            let md = f.store.create_maildir("user1").unwrap();
            fs::write(
                md.join("cur").join(format!("{},S=1,W=1:2,S", m.base)),
                m.content(),
            )
            .unwrap();
        }
        let (q, mut rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert_eq!(rec.len(), 1);
        let report = q.deliver(&mut rec[0]).unwrap();
        assert_eq!(report.paths.len(), 1);
        assert!(files(&f.mail, "user1", "new").is_empty());
        assert_eq!(files(&f.mail, "user2", "new").len(), 1);
    }

    #[test]
    fn placed_but_not_checkpointed_is_checked_not_doubled() {
        let f = fixture();
        let (first, second) = {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            let mut a = q
                .enqueue(&env(&["user1"], "A"), b"s: a\r\n\r\nA\r\n")
                .unwrap();
            let mut b = q
                .enqueue(&env(&["user1"], "B"), b"s: b\r\n\r\nB\r\n")
                .unwrap();
            let a_path = q.deliver(&mut a).unwrap().paths.remove(0);
            let b_path = q.deliver(&mut b).unwrap().paths.remove(0);
            // The power failed before the checkpoint: B's file did not
            // reach the disk whole.
            fs::write(&b_path, b"s: b\n").unwrap();
            (a_path, b_path)
        };
        // A torn file needs a power failure: the next boot has another id.
        let (q, mut rec) = Queue::open_in_boot(
            &f.queue,
            f.store.clone(),
            MIN_SEGMENT_SIZE,
            HOUR,
            "after-power-loss".into(),
        )
        .unwrap();
        assert_eq!(rec.len(), 2);
        for m in &mut rec {
            q.deliver(m).unwrap();
        }
        q.checkpoint().unwrap();
        let mut got: Vec<Vec<u8>> = files(&f.mail, "user1", "new")
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        got.sort();
        assert_eq!(got.len(), 2, "A kept, torn B replaced, nothing doubled");
        assert!(got[0].ends_with(b"\n\nA\n") && got[1].ends_with(b"\n\nB\n"));
        assert!(first.exists() && second.exists());
    }

    fn tmp_of(f: &Fixture, user: &str, base: &str) -> PathBuf {
        f.mail.join(user).join("Maildir").join("tmp").join(base)
    }

    #[test]
    fn a_tmp_file_left_by_a_killed_delivery_is_replaced() {
        let f = fixture();
        let base = {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            let m = q
                .enqueue(&env(&["user1", "user2"], "K"), b"s: k\r\n\r\nkilled\r\n")
                .unwrap();
            // Killed while writing the tmp file: part of it is there.
            f.store.create_maildir("user1").unwrap();
            fs::write(tmp_of(&f, "user1", &m.base), b"s: k\n").unwrap();
            m.base.clone()
        };
        let (q, mut rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert_eq!(rec.len(), 1);
        assert!(!rec[0].placed_this_boot(), "no placed mark yet");
        let report = q.deliver(&mut rec[0]).unwrap();
        assert_eq!(report.paths.len(), 2);
        q.checkpoint().unwrap();
        assert_eq!(q.pending(), 0);
        for user in ["user1", "user2"] {
            let got = files(&f.mail, user, "new");
            assert_eq!(got.len(), 1, "{user}");
            assert!(fs::read(&got[0]).unwrap().ends_with(b"\n\nkilled\n"));
            assert!(files(&f.mail, user, "tmp").is_empty(), "{user}");
        }
        assert!(!tmp_of(&f, "user1", &base).exists());
    }

    #[test]
    fn deleted_after_delivery_stays_deleted_in_the_same_boot() {
        let f = fixture();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            for id in ["D1", "D2"] {
                let mut m = q
                    .enqueue(&env(&["user1"], id), b"s: d\r\n\r\nx\r\n")
                    .unwrap();
                q.deliver(&mut m).unwrap();
            }
            // Read and deleted by POP3 before the checkpoint; then the
            // process dies (no checkpoint, no done mark).
            for p in files(&f.mail, "user1", "new") {
                fs::remove_file(p).unwrap();
            }
        }
        let (q, mut rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert_eq!(rec.len(), 2);
        assert!(rec.iter().all(Queued::placed_this_boot));
        for m in &mut rec {
            assert!(q.deliver(m).unwrap().paths.is_empty());
        }
        assert_eq!(q.checkpoint().unwrap(), 2);
        assert_eq!(q.pending(), 0);
        assert!(files(&f.mail, "user1", "new").is_empty(), "not resurrected");
        drop(q);
        let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert!(rec.is_empty());
    }

    #[test]
    fn another_boot_delivers_again_what_it_cannot_find() {
        let f = fixture();
        let open = |boot: &str| {
            Queue::open_in_boot(
                &f.queue,
                f.store.clone(),
                MIN_SEGMENT_SIZE,
                HOUR,
                boot.into(),
            )
            .unwrap()
        };
        {
            let (q, _) = open("boot-a");
            let mut kept = q
                .enqueue(&env(&["user1"], "KEPT"), b"s: k\r\n\r\nkept\r\n")
                .unwrap();
            let mut lost = q
                .enqueue(&env(&["user1"], "LOST"), b"s: l\r\n\r\nlost\r\n")
                .unwrap();
            q.deliver(&mut kept).unwrap();
            let p = q.deliver(&mut lost).unwrap().paths.remove(0);
            // A power failure: the second file never reached the disk.
            fs::remove_file(p).unwrap();
        }
        let (q, mut rec) = open("boot-b");
        assert_eq!(rec.len(), 2);
        assert!(!rec.iter().any(Queued::placed_this_boot));
        let placed: usize = rec
            .iter_mut()
            .map(|m| q.deliver(m).unwrap().paths.len())
            .sum();
        assert_eq!(placed, 1, "only the missing one again");
        q.checkpoint().unwrap();
        let mut got: Vec<Vec<u8>> = files(&f.mail, "user1", "new")
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        got.sort();
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(b"\n\nkept\n") && got[1].ends_with(b"\n\nlost\n"));
    }

    #[test]
    fn killed_between_placed_mark_and_rename_is_delivered_again() {
        let f = fixture();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            let m = q
                .enqueue(&env(&["user1"], "R"), b"s: r\r\n\r\nrename\r\n")
                .unwrap();
            // What `deliver` does up to the rename, then the kill.
            f.store.create_maildir("user1").unwrap();
            fs::write(tmp_of(&f, "user1", &m.base), m.content()).unwrap();
            assert!(q.mark_placed(m.seq, "user1"));
        }
        let (q, mut rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert_eq!(rec.len(), 1);
        assert!(!rec[0].placed_this_boot(), "its tmp file is still there");
        assert_eq!(q.deliver(&mut rec[0]).unwrap().paths.len(), 1);
        assert_eq!(files(&f.mail, "user1", "new").len(), 1);
        assert!(files(&f.mail, "user1", "tmp").is_empty());
    }

    #[test]
    fn a_failed_rename_after_the_mark_keeps_the_message_deliverable() {
        let f = fixture();
        let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let md = f.store.create_maildir("user1").unwrap();
        fs::remove_dir(md.join("new")).unwrap();
        let mut m = q
            .enqueue(&env(&["user1"], "F"), b"s: f\r\n\r\nfail\r\n")
            .unwrap();
        assert!(q.deliver(&mut m).is_err());
        // The mark is written and the tmp file kept: a crash now leads to
        // a new delivery, not to a loss.
        assert!(tmp_of(&f, "user1", &m.base).exists());
        drop(q);
        let (q, mut rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert_eq!(rec.len(), 1);
        assert!(!rec[0].placed_this_boot());
        fs::create_dir(md.join("new")).unwrap();
        assert_eq!(q.deliver(&mut rec[0]).unwrap().paths.len(), 1);
        assert!(files(&f.mail, "user1", "tmp").is_empty());
        assert_eq!(files(&f.mail, "user1", "new").len(), 1);
    }

    #[test]
    fn a_maildir_removed_before_the_checkpoint_does_not_block_it() {
        let f = fixture();
        let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let mut gone = q
            .enqueue(&env(&["user1"], "A"), b"s: a\r\n\r\nA\r\n")
            .unwrap();
        let mut kept = q
            .enqueue(&env(&["user2"], "B"), b"s: b\r\n\r\nB\r\n")
            .unwrap();
        q.deliver(&mut gone).unwrap();
        q.deliver(&mut kept).unwrap();
        // The account is deleted with its mail before the flush.
        fs::remove_dir_all(f.mail.join("user1")).unwrap();
        assert_eq!(q.checkpoint().unwrap(), 2);
        assert_eq!(q.pending(), 0);
        drop(q);
        let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        assert!(rec.is_empty(), "done records were flushed");
    }

    #[test]
    fn the_checkpoint_thread_retires_deliveries() {
        let f = fixture();
        let (q, _) = Queue::open(
            &f.queue,
            f.store.clone(),
            MIN_SEGMENT_SIZE,
            Duration::from_millis(1),
        )
        .unwrap();
        let mut m = q
            .enqueue(&env(&["user1"], "Q"), b"s: x\r\n\r\nb\r\n")
            .unwrap();
        q.deliver(&mut m).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.pending() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn a_failed_delivery_stays_queued_and_retries() {
        let f = fixture();
        let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let md = f.store.create_maildir("user1").unwrap();
        fs::remove_dir(md.join("tmp")).unwrap();
        fs::write(md.join("tmp"), b"not a directory").unwrap();
        let mut m = q
            .enqueue(&env(&["user1"], "Q"), b"s: x\r\n\r\nb\r\n")
            .unwrap();
        assert!(q.deliver(&mut m).is_err());
        assert_eq!(q.pending(), 1);
        fs::remove_file(md.join("tmp")).unwrap();
        fs::create_dir(md.join("tmp")).unwrap();
        q.deliver(&mut m).unwrap();
        q.checkpoint().unwrap();
        assert_eq!(q.pending(), 0);
        assert_eq!(files(&f.mail, "user1", "new").len(), 1);
    }

    #[test]
    fn segments_roll_over_and_are_reused() {
        let f = fixture();
        let body = vec![b'x'; 9000];
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            // Each record is ~9 KiB; 64 KiB segments hold 6: 40 messages roll
            // several times. Deliver all but the last two.
            let mut held = Vec::new();
            for i in 0..40 {
                let mut m = q
                    .enqueue(&env(&["user1"], &format!("Q{i}")), &body)
                    .unwrap();
                if i < 38 {
                    q.deliver(&mut m).unwrap();
                    q.checkpoint().unwrap();
                } else {
                    held.push(m);
                }
            }
            let segs = fs::read_dir(&f.queue)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("seg-")
                })
                .count();
            // Reuse keeps the directory small: not one file per 6 messages.
            assert!(segs <= 4, "{segs} segment files");
            assert_eq!(q.pending(), 2);
        }
        let (q, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let got: Vec<&str> = rec.iter().map(Queued::queue_id).collect();
        assert_eq!(got, ["Q38", "Q39"]);
        drop(q);
    }

    #[test]
    fn a_torn_tail_ends_the_segment_and_loses_nothing_flushed() {
        let f = fixture();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            q.enqueue(&env(&["user1"], "Q1"), b"a: 1\r\n\r\n1\r\n")
                .unwrap();
            q.enqueue(&env(&["user1"], "Q2"), b"a: 2\r\n\r\n2\r\n")
                .unwrap();
        }
        // Flip a byte in the second record's payload: as a torn write.
        let seg = fs::read_dir(&f.queue)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with("seg-")
                    && parse_segment(&fs::read(p).unwrap()).is_some()
            })
            .unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let (_, _, recs) = parse_segment(&fs::read(&seg).unwrap()).unwrap();
        assert_eq!(recs.len(), 2);
        let first_len = (REC_HEADER as u64 + recs[0].payload.len() as u64 + 7) & !7;
        file.write_all_at(b"#", SEG_HEADER + first_len + REC_HEADER as u64 + 40)
            .unwrap();
        drop(file);
        let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let got: Vec<&str> = rec.iter().map(Queued::queue_id).collect();
        assert_eq!(got, ["Q1"]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// What `enqueue` writes, recovery reads back: mailboxes, queue id
        /// and the Maildir file, whatever the bytes.
        #[test]
        fn records_round_trip(
            boxes in proptest::collection::vec("[a-z][a-z0-9._-]{0,12}", 1..4),
            id in "[0-9A-F]{12}",
            content in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        ) {
            let f = fixture();
            let names: Vec<&str> = boxes.iter().map(String::as_str).collect();
            let written = {
                let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
                q.enqueue(&env(&names, &id), &content).unwrap()
            };
            let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            proptest::prop_assert_eq!(rec.len(), 1);
            proptest::prop_assert_eq!(rec[0].queue_id(), id.as_str());
            proptest::prop_assert_eq!(rec[0].mailboxes(), written.mailboxes());
            proptest::prop_assert_eq!(rec[0].content(), written.content());
            proptest::prop_assert_eq!(&rec[0].base, &written.base);
            proptest::prop_assert_eq!(fuzz_parse_segment(&[]), 0);
            let built = fuzz_build_segment(&[(KIND_MESSAGE, &written.record[REC_HEADER..])]);
            proptest::prop_assert_eq!(fuzz_parse_segment(&built), 1);
        }
    }

    #[test]
    fn one_process_per_queue_directory() {
        let f = fixture();
        let (_q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let e = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        assert_eq!(holder(&f.queue).unwrap(), Some(std::process::id()));
        drop(_q);
        assert_eq!(holder(&f.queue).unwrap(), None);
    }

    #[test]
    fn concurrent_enqueues_share_flushes_and_all_survive() {
        let f = fixture();
        {
            let (q, _) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
            std::thread::scope(|s| {
                for t in 0..4 {
                    let q = q.clone();
                    s.spawn(move || {
                        for i in 0..25 {
                            q.enqueue(
                                &env(&["user1"], &format!("T{t}-{i}")),
                                b"s: x\r\n\r\nhello\r\n",
                            )
                            .unwrap();
                        }
                    });
                }
            });
            assert_eq!(q.pending(), 100);
        }
        let (_, rec) = Queue::open(&f.queue, f.store.clone(), MIN_SEGMENT_SIZE, HOUR).unwrap();
        let ids: HashSet<&str> = rec.iter().map(Queued::queue_id).collect();
        assert_eq!(ids.len(), 100);
    }
}
