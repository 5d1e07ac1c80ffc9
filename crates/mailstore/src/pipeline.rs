//! The SMTP server's delivery pipeline: a message held whole in memory is
//! made durable in the queue journal (one shared flush) so that `250` can
//! be answered at once, then delivered into its Maildirs by a small pool of
//! delivery threads, and retried on a schedule while that fails. When the
//! journal cannot take a message (larger than a segment, the memory budget
//! for waiting messages used up, or a journal error), it is delivered
//! directly before the reply: slower for the client, never lost.
//!
//! Why threads and not async tasks: every step is blocking file I/O (the
//! journal's `fdatasync`, Maildir writes), this crate stays free of any
//! runtime (the queue's checkpointer is a thread too), and the whole
//! pipeline is testable with plain `#[test]`s. An async host calls
//! [`Pipeline::accept`] and [`Pipeline::settle`] from `spawn_blocking`.
//!
//! A message stays in the journal until a delivery succeeds, so a stop or
//! a crash meanwhile loses nothing: [`crate::Queue::open`] returns it at
//! the next start, and [`Pipeline::submit`] delivers it then.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use mailstore::pipeline::{Accepted, Pipeline, PipelineConfig};
//! use mailstore::{Envelope, Protocol, Queue, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::with_hostname(dir.path().join("mail"), "mx")?;
//! let (queue, recovered) = Queue::open(dir.path().join("queue"), store, 1 << 20, Duration::from_millis(20))?;
//! let pipeline = Pipeline::new(queue, PipelineConfig::default());
//! for q in recovered {
//!     pipeline.submit(q); // left by the last run
//! }
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
//! // Durable when this returns: answer "250 2.0.0 Ok: queued as 4F2A91C0B7D3".
//! let accepted = pipeline.accept(&env, b"Subject: hi\r\n\r\nHello\r\n")?;
//! assert_eq!(accepted.queue_id(), "4F2A91C0B7D3");
//! // At shutdown: let deliveries in progress end, then flush.
//! assert_eq!(pipeline.settle(Instant::now() + Duration::from_secs(10)), 0);
//! pipeline.queue().checkpoint()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::queue::{Queue, Queued};
use crate::store::{Delivery, DeliveryReport, Envelope, Store};
use crate::Result;

/// Body bytes an [`Incoming`] message holds in memory before it starts
/// writing them to the Maildir file: a small message costs one trip to the
/// blocking pool and can go through the journal, a large one is never held
/// whole in memory.
pub const HOLD_LIMIT: usize = 256 * 1024;

/// When to try again after failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    first: Duration,
    max: Duration,
}

impl RetrySchedule {
    /// The same wait after every failure (Postfix's `minimal_backoff_time`
    /// alone).
    pub const fn fixed(delay: Duration) -> Self {
        Self {
            first: delay,
            max: delay,
        }
    }

    /// `first` after the first failure, doubling after each further one up
    /// to `max` (Postfix's `minimal_backoff_time` and
    /// `maximal_backoff_time`).
    pub fn backoff(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
        }
    }

    /// The wait after the `failures`-th failed attempt in a row (1 for the
    /// first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Memory for messages waiting in the queue for their delivery, counted in
/// KiB. Cheap to clone (the clones share the budget).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    free_kib: Arc<AtomicUsize>,
}

impl MemoryBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            free_kib: Arc::new(AtomicUsize::new(bytes / 1024)),
        }
    }

    /// Reserves room for a message of `bytes` (rounded up to whole KiB, at
    /// least one), or `None` when the budget cannot hold it now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let kib = bytes / 1024 + 1;
        self.free_kib
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |free| {
                free.checked_sub(kib)
            })
            .ok()
            .map(|_| Reservation {
                kib,
                free_kib: Arc::clone(&self.free_kib),
            })
    }

    /// Bytes not reserved.
    pub fn available(&self) -> usize {
        self.free_kib.load(Ordering::SeqCst).saturating_mul(1024)
    }
}

/// Room taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    kib: usize,
    free_kib: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.free_kib.fetch_add(self.kib, Ordering::SeqCst);
    }
}

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Memory for queued messages waiting for delivery, in bytes. When it
    /// is used up, messages are delivered before the reply instead, which
    /// slows clients down to the disk's pace.
    pub memory_budget: usize,
    /// Deliveries running at once: threads, each waiting on file I/O;
    /// more would only add threads.
    pub slots: usize,
    /// When to retry a delivery that failed.
    pub retry: RetrySchedule,
}

impl Default for PipelineConfig {
    /// 64 MiB, 16 slots, retries after [`FIRST_RETRY`] doubling up to 60 s
    /// (smtpd's settings).
    fn default() -> Self {
        Self {
            memory_budget: 64 * 1024 * 1024,
            slots: 16,
            retry: RetrySchedule::backoff(FIRST_RETRY, Duration::from_secs(60)),
        }
    }
}

/// The first retry of a failed delivery. Local deliveries mostly fail for
/// reasons that clear by themselves within moments (a full disk being
/// cleaned, a Maildir being repaired, a file left by a killed process), so
/// the first retry comes soon and later ones back off (Postfix waits
/// `minimal_backoff_time`, 300 s, first: it retries remote servers).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What became of an accepted message: either way it is safe, and the
/// client may be told `250`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Durable in the queue journal; its delivery has started.
    Queued {
        /// The message's queue id.
        queue_id: String,
    },
    /// Delivered into every mailbox before returning (the direct path).
    Delivered(DeliveryReport),
}

impl Accepted {
    /// The queue id for `250 2.0.0 Ok: queued as <id>`.
    pub fn queue_id(&self) -> &str {
        match self {
            Accepted::Queued { queue_id } => queue_id,
            Accepted::Delivered(r) => &r.queue_id,
        }
    }
}

/// The delivery pipeline over one queue journal. `Send + Sync`; share it
/// in an `Arc`. Dropping it stops the delivery threads (after the delivery
/// each is busy with) and leaves undelivered messages in the journal.
#[derive(Debug)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    budget: MemoryBudget,
    slots: usize,
    state: Mutex<State>,
    /// Signalled when a job is ready, and at close.
    work: Condvar,
    /// Signalled when no job is ready or running.
    settled: Condvar,
}

#[derive(Debug)]
struct State {
    ready: VecDeque<Job>,
    waiting: BinaryHeap<Reverse<Waiting>>,
    running: usize,
    idle: usize,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    retry: RetrySchedule,
    closed: bool,
}

#[derive(Debug)]
struct Job {
    q: Queued,
    /// Given back when the job ends.
    _memory: Option<Reservation>,
    failures: u32,
}

/// A job waiting for its retry, ordered by due time (then arrival).
#[derive(Debug)]
struct Waiting {
    due: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Pipeline {
    /// A pipeline delivering from `queue`. Threads start with the first
    /// message.
    pub fn new(queue: Queue, config: PipelineConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                budget: MemoryBudget::new(config.memory_budget),
                slots: config.slots.max(1),
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    waiting: BinaryHeap::new(),
                    running: 0,
                    idle: 0,
                    workers: Vec::new(),
                    next_seq: 0,
                    retry: config.retry,
                    closed: false,
                }),
                work: Condvar::new(),
                settled: Condvar::new(),
            }),
        }
    }

    /// Opens (creating if needed) the queue journal in `dir` with the
    /// server's segment size and checkpoint interval, and a pipeline over
    /// it. Returns it with the messages a previous run made durable but
    /// did not deliver: [`Pipeline::submit`] them. Blocks.
    pub fn open(
        dir: impl Into<PathBuf>,
        store: Store,
        config: PipelineConfig,
    ) -> Result<(Self, Vec<Queued>)> {
        let (queue, recovered) = Queue::open(
            dir,
            store,
            crate::queue::DEFAULT_SEGMENT_SIZE,
            crate::queue::DEFAULT_CHECKPOINT_INTERVAL,
        )?;
        Ok((Self::new(queue, config), recovered))
    }

    /// The queue journal.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The memory budget for queued messages.
    pub fn budget(&self) -> &MemoryBudget {
        &self.inner.budget
    }

    /// Replaces the retry schedule (a reloaded configuration); messages
    /// already waiting keep their time.
    pub fn set_retry(&self, retry: RetrySchedule) {
        self.inner.lock().retry = retry;
    }

    /// Makes a message held whole in memory (`content` in SMTP form: CRLF
    /// line ends, dot-unstuffed) safe for `env`'s mailboxes: through the
    /// journal when it takes it, else delivered directly. Blocks on a
    /// flush either way. `Err` means the message is not stored at all.
    pub fn accept(&self, env: &Envelope, content: &[u8]) -> Result<Accepted> {
        let queue = &self.inner.queue;
        if content.len() > queue.max_content() {
            debug!(
                size = content.len(),
                "too large for the queue journal; delivering before the reply"
            );
        } else if let Some(memory) = self.inner.budget.try_reserve(content.len()) {
            match queue.enqueue(env, content) {
                Ok(q) => {
                    info!(
                        queue_id = q.queue_id(),
                        from = env.mail_from,
                        to = ?env.recipients,
                        size = content.len(),
                        "queued"
                    );
                    let queue_id = q.queue_id().to_string();
                    self.push(Job {
                        q,
                        _memory: Some(memory),
                        failures: 0,
                    });
                    return Ok(Accepted::Queued { queue_id });
                }
                Err(e) => {
                    error!(error = %e, "queue journal failed; delivering before the reply")
                }
            }
        } else {
            debug!("queue memory in use; delivering before the reply");
        }
        let report = queue.store().deliver(env, &mut &content[..])?;
        log_delivered(env, &report, content.len());
        Ok(Accepted::Delivered(report))
    }

    /// Starts receiving a message for `env` (its `time` is the arrival
    /// time in the `Received:` header).
    pub fn incoming(&self, env: Envelope) -> Incoming {
        Incoming {
            env,
            store: self.inner.queue.store().clone(),
            held: Vec::new(),
            file: None,
            size: 0,
        }
    }

    /// Delivers a message the journal already holds (one [`Queue::open`]
    /// recovered) in the background. It does not count against the
    /// memory budget.
    pub fn submit(&self, q: Queued) {
        self.push(Job {
            q,
            _memory: None,
            failures: 0,
        });
    }

    /// Messages being delivered or waiting for a delivery thread.
    pub fn in_progress(&self) -> usize {
        let st = self.inner.lock();
        st.ready.len() + st.running
    }

    /// Messages whose delivery failed, waiting for their retry.
    pub fn deferred(&self) -> usize {
        self.inner.lock().waiting.len()
    }

    /// Makes every message waiting for its retry due now (Postfix's
    /// `postqueue -f`); returns how many. Their backoff goes on from where
    /// it was if they fail again.
    pub fn flush(&self) -> usize {
        let mut st = self.inner.lock();
        let waiting = std::mem::take(&mut st.waiting);
        let n = waiting.len();
        st.ready.extend(
            waiting
                .into_sorted_vec()
                .into_iter()
                .rev()
                .map(|Reverse(w)| w.job),
        );
        drop(st);
        self.inner.work.notify_all();
        n
    }

    /// Waits until no message is being delivered or waiting for a thread
    /// (those waiting for a retry excepted), or until `deadline`. Returns
    /// how many were still in progress: the journal keeps them for the
    /// next start. Call before the final [`Queue::checkpoint`].
    pub fn settle(&self, deadline: Instant) -> usize {
        let mut st = self.inner.lock();
        loop {
            let n = st.ready.len() + st.running;
            let now = Instant::now();
            if n == 0 || now >= deadline {
                return n;
            }
            st = self
                .inner
                .settled
                .wait_timeout(st, deadline - now)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }

    fn push(&self, job: Job) {
        let mut st = self.inner.lock();
        if st.closed {
            return;
        }
        st.ready.push_back(job);
        if st.ready.len() > st.idle && st.workers.len() < self.inner.slots {
            let inner = Arc::clone(&self.inner);
            match thread::Builder::new()
                .name("delivery".into())
                .spawn(move || inner.work())
            {
                Ok(h) => st.workers.push(h),
                // Busy threads take it when they are done; with none, the
                // journal keeps it for the next start.
                Err(e) => error!(error = %e, "cannot start a delivery thread"),
            }
        }
        self.inner.work.notify_one();
    }
}

/// A message arriving in chunks (SMTP DATA or BDAT): held in memory up to
/// [`HOLD_LIMIT`], then streamed into its Maildir file. Dropping it
/// abandons the message (blocking: it removes the temporary file).
#[derive(Debug)]
pub struct Incoming {
    env: Envelope,
    store: Store,
    held: Vec<u8>,
    /// The Maildir file, once the message outgrew [`HOLD_LIMIT`].
    file: Option<Delivery>,
    size: usize,
}

impl Incoming {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.env
    }

    /// Whether part of the message is written to a temporary file (which
    /// dropping it removes).
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Adds body bytes (SMTP form, dot-unstuffed, split anywhere). Returns
    /// `true` when [`HOLD_LIMIT`] bytes are held: call
    /// [`Incoming::write_out`] (blocking) before more.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        self.held.extend_from_slice(bytes);
        self.size += bytes.len();
        self.held.len() >= HOLD_LIMIT
    }

    /// Writes what is held to the Maildir file, opening it first. Blocks.
    /// After an error the message cannot be completed: drop it.
    pub fn write_out(&mut self) -> Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(self.store.begin_delivery(&self.env)?),
        };
        file.write(&self.held)?;
        self.held.clear();
        Ok(())
    }

    /// The end of the message: one held whole goes to
    /// [`Pipeline::accept`] (journal, or directly), a streamed one is
    /// completed and committed in its Maildir file. Blocks; `Ok` means the
    /// message is safe (answer `250`).
    pub fn finish(mut self, pipeline: &Pipeline) -> Result<Accepted> {
        match self.file.take() {
            None => pipeline.accept(&self.env, &self.held),
            Some(mut file) => {
                file.write(&self.held)?;
                let report = file.commit()?;
                log_delivered(&self.env, &report, self.size);
                Ok(Accepted::Delivered(report))
            }
        }
    }
}

fn log_delivered(env: &Envelope, report: &DeliveryReport, size: usize) {
    info!(
        queue_id = report.queue_id,
        from = env.mail_from,
        to = ?env.recipients,
        size,
        "delivered"
    );
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let (jobs, waiting, workers) = {
            let mut st = self.inner.lock();
            st.closed = true;
            (
                std::mem::take(&mut st.ready),
                std::mem::take(&mut st.waiting),
                std::mem::take(&mut st.workers),
            )
        };
        self.inner.work.notify_all();
        self.inner.settled.notify_all();
        // Still in the journal: the next start delivers them.
        drop((jobs, waiting));
        // Idle threads leave at once, busy ones after their delivery; then
        // nothing holds the queue (and its directory lock) any more.
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery thread: takes ready jobs, and moves waiting ones to
    /// ready when their time comes, until the pipeline closes.
    fn work(&self) {
        let mut st = self.lock();
        while !st.closed {
            let now = Instant::now();
            while let Some(Reverse(w)) = st.waiting.peek() {
                if w.due > now {
                    break;
                }
                if let Some(Reverse(w)) = st.waiting.pop() {
                    st.ready.push_back(w.job);
                }
            }
            if let Some(job) = st.ready.pop_front() {
                st.running += 1;
                drop(st);
                let retry = self.attempt(job);
                st = self.lock();
                st.running -= 1;
                if let Some((job, delay)) = retry {
                    if !st.closed {
                        let seq = st.next_seq;
                        st.next_seq += 1;
                        st.waiting.push(Reverse(Waiting {
                            due: Instant::now() + delay,
                            seq,
                            job,
                        }));
                    }
                }
                if st.ready.is_empty() && st.running == 0 {
                    self.settled.notify_all();
                }
                continue;
            }
            let next_due = st.waiting.peek().map(|Reverse(w)| w.due);
            st.idle += 1;
            st = match next_due {
                Some(due) => self
                    .work
                    .wait_timeout(st, due.saturating_duration_since(now))
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g),
                None => self.work.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
            st.idle -= 1;
        }
    }

    /// One delivery attempt; on failure, the job back with its wait.
    fn attempt(&self, mut job: Job) -> Option<(Job, Duration)> {
        let r = catch_unwind(AssertUnwindSafe(|| self.queue.deliver(&mut job.q)));
        match r {
            Ok(Ok(report)) => {
                info!(
                    queue_id = report.queue_id,
                    paths = report.paths.len(),
                    "delivered"
                );
                None
            }
            Ok(Err(e)) => {
                job.failures = job.failures.saturating_add(1);
                let delay = self.lock().retry.delay(job.failures);
                warn!(queue_id = job.q.queue_id(), error = %e, retry_in = ?delay, "delivery deferred");
                self.queue.note_deferred(&job.q, &e.to_string());
                Some((job, delay))
            }
            Err(_) => {
                // A bug: the message stays in the journal for the next start.
                error!(queue_id = job.q.queue_id(), "delivery attempt panicked");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Protocol;
    use std::path::Path;
    use std::time::SystemTime;

    fn env(to: &str, id: &str) -> Envelope {
        Envelope {
            mail_from: "user2@csuvnetwork.com".into(),
            recipients: vec![format!("{to}@csuvnetwork.com")],
            mailboxes: vec![to.into()],
            helo: "client".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            protocol: Protocol::Esmtp,
            tls: None,
            our_hostname: "mail.csuvnetwork.com".into(),
            queue_id: id.into(),
            time: SystemTime::now(),
        }
    }

    fn open(dir: &Path) -> (Queue, Vec<Queued>) {
        let store = Store::with_hostname(dir.join("mail"), "mx").unwrap();
        Queue::open(
            dir.join("queue"),
            store,
            crate::queue::MIN_SEGMENT_SIZE,
            Duration::from_millis(10),
        )
        .unwrap()
    }

    fn config(budget: usize, retry_ms: u64) -> PipelineConfig {
        PipelineConfig {
            memory_budget: budget,
            slots: 4,
            retry: RetrySchedule::fixed(Duration::from_millis(retry_ms)),
        }
    }

    fn inbox(dir: &Path, user: &str) -> Vec<PathBuf> {
        let new = dir.join("mail").join(user).join("Maildir/new");
        match std::fs::read_dir(new) {
            Ok(d) => d.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every delivery to `user` fails: its Maildir's tmp/ is a file.
    fn break_maildir(dir: &Path, user: &str) -> PathBuf {
        let store = Store::with_hostname(dir.join("mail"), "mx").unwrap();
        let tmp = store.create_maildir(user).unwrap().join("tmp");
        std::fs::remove_dir(&tmp).unwrap();
        std::fs::write(&tmp, "not a directory").unwrap();
        tmp
    }

    fn repair(tmp: &Path) {
        std::fs::remove_file(tmp).unwrap();
        std::fs::create_dir(tmp).unwrap();
    }

    const SOON: Duration = Duration::from_secs(10);

    #[test]
    fn schedules() {
        let s = Duration::from_secs;
        let fixed = RetrySchedule::fixed(s(60));
        assert_eq!([1, 2, 50].map(|n| fixed.delay(n)), [s(60); 3]);
        let b = RetrySchedule::backoff(s(60), s(300));
        assert_eq!(
            [0, 1, 2, 3, 4, u32::MAX].map(|n| b.delay(n)),
            [s(60), s(60), s(120), s(240), s(300), s(300)]
        );
        assert_eq!(RetrySchedule::backoff(s(60), s(1)).delay(3), s(60));
        let huge = RetrySchedule::backoff(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn budget_reserves_and_gives_back() {
        let b = MemoryBudget::new(4 * 1024);
        let one = b.try_reserve(2000).unwrap(); // 2 KiB
        assert_eq!(b.available(), 2 * 1024);
        assert!(b.try_reserve(2048).is_none(), "3 KiB do not fit");
        let two = b.try_reserve(0).unwrap();
        assert_eq!(b.available(), 1024);
        drop(one);
        drop(two);
        assert_eq!(b.available(), 4 * 1024);
        assert!(MemoryBudget::new(1000).try_reserve(0).is_none());
    }

    #[test]
    fn queued_path_delivers_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, recovered) = open(dir.path());
        assert!(recovered.is_empty());
        let p = Pipeline::new(queue, config(1 << 20, 50));
        let mut ids = Vec::new();
        for i in 0..20 {
            let id = format!("Q{i:02}");
            let a = p
                .accept(
                    &env("user1", &id),
                    format!("Subject: {i}\r\n\r\nhi\r\n").as_bytes(),
                )
                .unwrap();
            assert_eq!(
                a,
                Accepted::Queued {
                    queue_id: id.clone()
                }
            );
            ids.push(id);
        }
        assert_eq!(p.settle(Instant::now() + SOON), 0);
        assert_eq!(p.in_progress(), 0);
        assert_eq!(inbox(dir.path(), "user1").len(), 20);
        assert_eq!(p.budget().available(), 1 << 20, "memory given back");
        p.queue().checkpoint().unwrap();
        assert_eq!(p.queue().pending(), 0);
    }

    #[test]
    fn direct_path_when_too_large_or_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = break_maildir(dir.path(), "user1");
        let (queue, _) = open(dir.path());
        let max = queue.max_content();
        let p = Pipeline::new(queue, config(8 * 1024, 60_000));
        // Larger than a journal segment holds: straight into the Maildir.
        let big = vec![b'x'; max + 1];
        match p.accept(&env("user2", "BIG"), &big).unwrap() {
            Accepted::Delivered(r) => assert_eq!(r.paths.len(), 1),
            other => panic!("{other:?}"),
        }
        // Two messages wait for user1's broken Maildir and hold 6 KiB.
        let msg = vec![b'y'; 2500];
        for id in ["A", "B"] {
            let a = p.accept(&env("user1", id), &msg).unwrap();
            assert!(matches!(a, Accepted::Queued { .. }), "{a:?}");
        }
        wait_for("two deferrals", || p.deferred() == 2);
        assert_eq!(p.budget().available(), 2 * 1024);
        // The third does not fit: delivered directly (user2 is fine).
        let a = p.accept(&env("user2", "C"), &msg).unwrap();
        assert!(matches!(a, Accepted::Delivered(_)), "{a:?}");
        assert_eq!(a.queue_id(), "C");
        // Direct to the broken Maildir: an error, nothing promised.
        assert!(p.accept(&env("user1", "D"), &msg).is_err());
        assert_eq!(inbox(dir.path(), "user2").len(), 2);
        repair(&tmp);
    }

    #[test]
    fn retries_until_the_failure_clears_and_delivers_once() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = break_maildir(dir.path(), "user1");
        let (queue, _) = open(dir.path());
        let p = Pipeline::new(queue, config(1 << 20, 30));
        p.accept(&env("user1", "R1"), b"Subject: retry\r\n\r\nx\r\n")
            .unwrap();
        // Deferred, not in progress: settling does not wait for it.
        wait_for("a deferral", || p.deferred() == 1);
        assert_eq!(p.settle(Instant::now() + SOON), 0);
        thread::sleep(Duration::from_millis(100)); // a few more attempts
        assert!(inbox(dir.path(), "user1").is_empty());
        repair(&tmp);
        wait_for("the delivery", || inbox(dir.path(), "user1").len() == 1);
        wait_for("an empty pipeline", || {
            p.deferred() == 0 && p.in_progress() == 0
        });
        thread::sleep(Duration::from_millis(100)); // more than a retry period
        assert_eq!(inbox(dir.path(), "user1").len(), 1);
        assert_eq!(p.budget().available(), 1 << 20);
        // A longer schedule applies to the next failure.
        p.set_retry(RetrySchedule::fixed(Duration::from_secs(3600)));
        let tmp = break_maildir(dir.path(), "user1");
        p.accept(&env("user1", "R2"), b"x\r\n").unwrap();
        wait_for("a deferral", || p.deferred() == 1);
        repair(&tmp);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(inbox(dir.path(), "user1").len(), 1, "not retried yet");
        // `mailctl queue list` sees it and why; a flush retries it now.
        let listed = crate::queue::inspect(&dir.path().join("queue")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].queue_id, "R2");
        assert_eq!(listed[0].failures, 1);
        assert!(listed[0].last_error.as_deref().unwrap().contains("tmp"));
        assert_eq!(p.flush(), 1);
        wait_for("the flushed delivery", || {
            inbox(dir.path(), "user1").len() == 2
        });
        p.queue().checkpoint().unwrap();
        assert!(crate::queue::inspect(&dir.path().join("queue"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn stop_keeps_undelivered_messages_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = break_maildir(dir.path(), "user1");
        {
            let (queue, _) = open(dir.path());
            let p = Pipeline::new(queue, config(1 << 20, 60_000));
            p.accept(&env("user1", "K1"), b"Subject: kept\r\n\r\nx\r\n")
                .unwrap();
            p.accept(&env("user2", "K2"), b"Subject: fine\r\n\r\nx\r\n")
                .unwrap();
            assert_eq!(p.settle(Instant::now() + SOON), 0);
            assert_eq!(p.deferred(), 1);
            p.queue().checkpoint().unwrap();
            // Dropped: the threads end and the queue directory is free.
        }
        assert_eq!(inbox(dir.path(), "user2").len(), 1);
        repair(&tmp);
        let store = Store::with_hostname(dir.path().join("mail"), "mx").unwrap();
        let (p, recovered) =
            Pipeline::open(dir.path().join("queue"), store, config(1 << 20, 60_000)).unwrap();
        assert_eq!(
            recovered.iter().map(Queued::queue_id).collect::<Vec<_>>(),
            ["K1"]
        );
        for q in recovered {
            p.submit(q);
        }
        assert_eq!(p.settle(Instant::now() + SOON), 0);
        assert_eq!(inbox(dir.path(), "user1").len(), 1);
        assert_eq!(p.budget().available(), 1 << 20, "recovered cost no budget");
    }

    #[test]
    fn incoming_messages_are_held_or_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = open(dir.path());
        let p = Pipeline::new(queue, config(1 << 20, 50));
        // Small: held whole, then through the journal.
        let mut m = p.incoming(env("user1", "I1"));
        assert!(!m.push(b"Subject: small\r\n"));
        assert!(!m.push(b"\r\nhi\r\n"));
        assert_eq!(m.envelope().queue_id, "I1");
        assert!(matches!(m.finish(&p).unwrap(), Accepted::Queued { .. }));
        // Large: streamed into the Maildir file as it comes.
        let mut m = p.incoming(env("user2", "I2"));
        let chunk = vec![b'z'; 100 * 1024];
        let mut writes = 0;
        for _ in 0..6 {
            if m.push(&chunk) {
                m.write_out().unwrap();
                writes += 1;
            }
        }
        assert_eq!(writes, 2);
        let tmp = dir.path().join("mail/user2/Maildir/tmp");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1, "being written");
        match m.finish(&p).unwrap() {
            Accepted::Delivered(r) => {
                assert_eq!(r.queue_id, "I2");
                assert!(r.disk_size > 600 * 1024);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        // Abandoned: nothing left behind.
        let mut m = p.incoming(env("user2", "I3"));
        m.push(&vec![b'z'; HOLD_LIMIT]);
        assert!(!m.on_disk());
        m.write_out().unwrap();
        assert!(m.on_disk());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
        drop(m);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(p.settle(Instant::now() + SOON), 0);
        assert_eq!(inbox(dir.path(), "user1").len(), 1);
        assert_eq!(inbox(dir.path(), "user2").len(), 1);
    }

    #[test]
    fn settle_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = open(dir.path());
        let q = queue.enqueue(&env("user1", "S1"), b"x\r\n").unwrap();
        let p = Pipeline::new(queue, config(1 << 20, 50));
        // Ready, but no thread to take it yet.
        p.inner.lock().ready.push_back(Job {
            q,
            _memory: None,
            failures: 0,
        });
        let started = Instant::now();
        assert_eq!(p.settle(started + Duration::from_millis(50)), 1);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            p.settle(Instant::now()),
            1,
            "a passed deadline returns at once"
        );
        // The next message starts a thread, which takes both.
        p.accept(&env("user1", "S2"), b"y\r\n").unwrap();
        assert_eq!(p.settle(Instant::now() + SOON), 0);
        assert_eq!(inbox(dir.path(), "user1").len(), 2);
    }
}
