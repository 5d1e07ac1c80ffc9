//! The queue manager: takes messages from the outbound queue
//! ([`mailstore::outbound`]) when they are due, delivers each to its
//! recipients' destinations (routes from a [`Route`]), records every
//! outcome before going on, reschedules what was deferred, and hands a
//! message whose recipients are all final to the host (which sends the
//! failure notice, if one is due) before removing it.
//!
//! One task per message in flight, its destinations delivered to at the
//! same time, within a limit of messages in flight and of connections per
//! destination (Postfix's `default_process_limit` and
//! `default_destination_concurrency_limit`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mailstore::outbound::{Attempt, OutboundQueue, Outcome, QueuedMessage, RcptState};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{error, info, warn};

use crate::deliver::{
    deliver_then_close, ClientSettings, Closing, Hop, Message, RcptResult, Verdict,
};
use crate::schedule::{AfterFailure, Schedule};

/// Why a destination has no host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// A permanent failure (no such domain, null MX) bounces; a temporary
    /// one (DNS timeout) defers.
    pub permanent: bool,
    /// Enhanced status code (`5.1.2`, `4.4.3`).
    pub status: String,
    /// Postfix's wording (`Host or domain name not found. Name service
    /// error for name=... type=MX: Host not found`).
    pub text: String,
}

/// Where mail for a domain goes: its hosts, in the order to try them.
pub trait Route: Send + Sync + 'static {
    /// The hops for `domain` (lowercase, without a trailing dot).
    fn route(&self, domain: &str) -> impl Future<Output = Result<Vec<Hop>, RouteFailure>> + Send;
}

/// Fixed routes, for tests and for a relay host that is an address.
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    /// Per domain its hops; `*` for any other domain.
    pub routes: HashMap<String, Vec<Hop>>,
}

impl Route for StaticRoutes {
    async fn route(&self, domain: &str) -> Result<Vec<Hop>, RouteFailure> {
        match self.routes.get(domain).or_else(|| self.routes.get("*")) {
            Some(h) => Ok(h.clone()),
            None => Err(RouteFailure {
                permanent: true,
                status: "5.4.4".into(),
                text: format!("Host or domain name not found: no route to {domain}"),
            }),
        }
    }
}

/// What the host does with a message every recipient of which is final:
/// send the failure notice for the bounced ones (when their `NOTIFY`
/// wants one and the sender is not null). It must be durable when this
/// returns `Ok`; on `Err` the message stays queued and is offered again
/// at the next start.
pub trait Finisher: Send + Sync + 'static {
    /// Called once per finished message, from a blocking thread.
    fn finished(&self, message: &QueuedMessage) -> Result<(), String>;

    /// Called once per message (the queue remembers it across restarts)
    /// when, after an attempt, a recipient is still deferred and the
    /// message is older than `delay_warning_time`: send the delay notice
    /// to those whose `NOTIFY` asks for it. From a blocking thread; on
    /// `Err` it is tried again after the next attempt.
    fn delay_warning(&self, message: &QueuedMessage) -> Result<(), String> {
        let _ = message;
        Ok(())
    }
}

impl<F: Fn(&QueuedMessage) -> Result<(), String> + Send + Sync + 'static> Finisher for F {
    fn finished(&self, message: &QueuedMessage) -> Result<(), String> {
        self(message)
    }
}

/// Limits and client settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Retries and lifetimes.
    pub schedule: Schedule,
    /// The SMTP client.
    pub client: ClientSettings,
    /// Messages in flight at once (`default_process_limit`, 100).
    pub max_in_flight: usize,
    /// Connections to one destination at once
    /// (`default_destination_concurrency_limit`, 20).
    pub per_destination: usize,
    /// Pause between the starts of two deliveries to one destination
    /// (`default_destination_rate_delay`, 0: none); while set, one
    /// delivery to a destination at a time, as Postfix does.
    pub rate_delay: Duration,
    /// Keeping connections for the next message to the same destination
    /// (`smtp_connection_cache_on_demand`); `None`: one per delivery.
    pub reuse: Option<Reuse>,
}

/// Limits of connection reuse, with Postfix's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// How long an idle connection is kept
    /// (`smtp_connection_cache_time_limit`, 2 s).
    pub idle: Duration,
    /// How long after it was made a connection may still be reused
    /// (`smtp_connection_reuse_time_limit`, 300 s).
    pub lifetime: Duration,
    /// Messages per connection at most (`smtp_connection_reuse_count_limit`,
    /// 0: no limit).
    pub count: u32,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            idle: Duration::from_secs(2),
            lifetime: Duration::from_secs(300),
            count: 0,
        }
    }
}

impl Reuse {
    /// Whether `c` may carry another message.
    fn allows(&self, c: &Closing) -> bool {
        c.is_idle()
            && c.opened().elapsed() < self.lifetime
            && (self.count == 0 || c.uses() < self.count)
    }
}

/// One destination: its connection slots, when its last delivery started
/// (for the rate delay) and its idle connections, newest last.
struct Destination {
    slots: Arc<Semaphore>,
    last_start: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    idle: Mutex<Vec<(u64, Closing)>>,
}

impl EngineConfig {
    /// Postfix's defaults with `client`.
    pub fn new(client: ClientSettings) -> Self {
        EngineConfig {
            schedule: Schedule::default(),
            client,
            max_in_flight: 100,
            per_destination: 20,
            rate_delay: Duration::ZERO,
            reuse: Some(Reuse::default()),
        }
    }
}

/// How a message stands after an attempt.
enum After {
    /// Still queued, as read back.
    Queued(QueuedMessage),
    /// Finished and removed, or kept for the next start.
    Gone,
    /// The queue could not be read or written: try again in a while.
    Failed,
}

/// The wait after a failure to read or write the queue.
const QUEUE_ERROR_WAIT: Duration = Duration::from_secs(60);

struct State {
    /// `(due, id)` of messages waiting.
    due: BTreeSet<(SystemTime, String)>,
    /// Ids waiting, with their due time, to find them in `due`.
    waiting: HashMap<String, SystemTime>,
    /// Ids being delivered now.
    in_flight: HashSet<String>,
    /// Ids to take again as soon as their attempt ends (a flush or a new
    /// submission while in flight).
    again: HashSet<String>,
    /// Ids whose deferred recipients are tried at the next attempt
    /// whatever their time (a flush, a release).
    forced: HashSet<String>,
    stopping: bool,
}

struct Inner<R, F> {
    queue: OutboundQueue,
    cfg: EngineConfig,
    route: R,
    finisher: F,
    state: Mutex<State>,
    wake: Notify,
    slots: Arc<Semaphore>,
    destinations: Mutex<HashMap<String, Arc<Destination>>>,
    /// Names idle connections, so that the one that expires is the one
    /// put away.
    next_conn: std::sync::atomic::AtomicU64,
}

/// The running queue manager. Cloning shares it.
pub struct Engine<R, F> {
    inner: Arc<Inner<R, F>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl<R, F> Clone for Engine<R, F> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
            task: Arc::clone(&self.task),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies recorded attempts to a message in memory, as reading its log
/// back would (a final state stays final).
fn apply(m: &mut QueuedMessage, attempts: &[Attempt]) {
    for a in attempts {
        let Some(r) = m.recipients.get_mut(a.rcpt) else {
            continue;
        };
        if r.state.is_final() {
            continue;
        }
        r.state = match a.outcome {
            Outcome::Sent => RcptState::Sent,
            Outcome::Bounced => RcptState::Bounced,
            Outcome::Deferred { next } => RcptState::Deferred { next },
        };
        r.attempts += 1;
        r.last = Some(a.clone());
    }
}

/// The domain of an address (after the last `@`), lowercase.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl<R: Route, F: Finisher> Engine<R, F> {
    /// Starts the manager on `queue` with the messages it held at open
    /// (`recovered`): each is due at its own time; held ones wait for a
    /// release.
    pub fn start(
        queue: OutboundQueue,
        recovered: Vec<QueuedMessage>,
        cfg: EngineConfig,
        route: R,
        finisher: F,
    ) -> Self {
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            queue,
            cfg,
            route,
            finisher,
            state: Mutex::new(State {
                due: BTreeSet::new(),
                waiting: HashMap::new(),
                in_flight: HashSet::new(),
                again: HashSet::new(),
                forced: HashSet::new(),
                stopping: false,
            }),
            wake: Notify::new(),
            destinations: Mutex::new(HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(0),
        });
        for m in &recovered {
            inner.schedule(m);
        }
        let task = tokio::spawn(Arc::clone(&inner).run());
        Engine {
            inner,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// A message read from the queue after the start (the queue's
    /// recovered messages): scheduled at its own time; held ones wait.
    pub fn add(&self, m: &QueuedMessage) {
        self.inner.schedule(m);
    }

    /// A message just enqueued, or released from hold: try every
    /// recipient of it that is not final now.
    pub fn submit(&self, id: &str) {
        lock(&self.inner.state).forced.insert(id.to_owned());
        self.inner.make_due(id, SystemTime::now());
    }

    /// Try every waiting message now, deferred recipients included
    /// (Postfix's `postqueue -f`); returns how many.
    pub fn flush(&self) -> usize {
        let ids: Vec<String> = {
            let mut s = lock(&self.inner.state);
            let ids: Vec<String> = s.waiting.keys().cloned().collect();
            s.forced.extend(ids.iter().cloned());
            ids
        };
        let now = SystemTime::now();
        for id in &ids {
            self.inner.make_due(id, now);
        }
        ids.len()
    }

    /// Messages waiting (not in flight).
    pub fn waiting(&self) -> usize {
        lock(&self.inner.state).waiting.len()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).in_flight.len()
    }

    /// Stops taking messages and waits up to `grace` for those in flight;
    /// what is left stays queued for the next start.
    pub async fn stop(&self, grace: Duration) {
        lock(&self.inner.state).stopping = true;
        self.inner.wake.notify_one();
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let task = lock(&self.task).take();
        if let Some(t) = task {
            t.abort();
        }
        // Idle connections say QUIT, within what is left of the grace.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(
            left.max(Duration::from_millis(100)),
            self.inner.close_idle(),
        )
        .await;
    }
}

impl<R: Route, F: Finisher> Inner<R, F> {
    /// Puts a message read from the queue in the schedule.
    fn schedule(&self, m: &QueuedMessage) {
        if m.held {
            return;
        }
        if let Some(due) = m.next_due() {
            self.make_due(&m.envelope.id, due);
        } else {
            // Every recipient is final: finish it.
            self.make_due(&m.envelope.id, SystemTime::UNIX_EPOCH);
        }
    }

    fn make_due(&self, id: &str, at: SystemTime) {
        let mut s = lock(&self.state);
        if s.in_flight.contains(id) {
            s.again.insert(id.to_owned());
            return;
        }
        if let Some(old) = s.waiting.insert(id.to_owned(), at) {
            if old <= at {
                // Already due sooner.
                s.waiting.insert(id.to_owned(), old);
                return;
            }
            s.due.remove(&(old, id.to_owned()));
        }
        s.due.insert((at, id.to_owned()));
        drop(s);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        loop {
            let (ready, next) = {
                let mut s = lock(&self.state);
                if s.stopping {
                    return;
                }
                let now = SystemTime::now();
                let mut ready = Vec::new();
                while let Some(first) = s.due.first().cloned() {
                    if first.0 > now || self.slots.available_permits() <= ready.len() {
                        break;
                    }
                    s.due.remove(&first);
                    s.waiting.remove(&first.1);
                    s.in_flight.insert(first.1.clone());
                    ready.push(first.1);
                }
                let next = s.due.first().map(|(t, _)| *t);
                (ready, next)
            };
            for id in ready {
                let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                    return;
                };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let after = me.attempt(&id).await;
                    drop(permit);
                    me.done(&id, after);
                });
            }
            let wait = next.map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or_default()
                    // Clock changes: look again at least every minute.
                    .min(Duration::from_secs(60))
            });
            match wait {
                Some(d) => {
                    let _ = tokio::time::timeout(d, self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// After an attempt: reschedule from what the queue said after it.
    fn done(&self, id: &str, after: After) {
        let again = {
            let mut s = lock(&self.state);
            s.in_flight.remove(id);
            s.again.remove(id)
        };
        match after {
            After::Queued(m) if again => self.make_due(&m.envelope.id, SystemTime::now()),
            After::Queued(m) => self.schedule(&m),
            After::Failed => self.make_due(id, SystemTime::now() + QUEUE_ERROR_WAIT),
            After::Gone => {}
        }
        self.wake.notify_one();
    }

    fn destination(&self, domain: &str) -> Arc<Destination> {
        let mut d = lock(&self.destinations);
        let limit = if self.cfg.rate_delay.is_zero() {
            self.cfg.per_destination.max(1)
        } else {
            1
        };
        Arc::clone(d.entry(domain.to_owned()).or_insert_with(|| {
            Arc::new(Destination {
                slots: Arc::new(Semaphore::new(limit)),
                last_start: tokio::sync::Mutex::new(None),
                idle: Mutex::new(Vec::new()),
            })
        }))
    }

    /// After a transaction: keeps the connection for the next message to
    /// `domain` when reuse is on and allows it (closed after the idle
    /// time unless taken), else ends it (`QUIT`). The slot is given back
    /// either way: an idle connection delivers nothing.
    /// Whether [`Inner::put_away`] keeps `c` open.
    fn keeps(&self, c: &Closing) -> bool {
        self.cfg.reuse.is_some_and(|r| r.allows(c)) && !lock(&self.state).stopping
    }

    fn put_away(self: &Arc<Self>, domain: &str, closing: Closing, permit: OwnedSemaphorePermit) {
        drop(permit);
        let keep = self.cfg.reuse.filter(|_| self.keeps(&closing));
        let Some(reuse) = keep else {
            tokio::spawn(closing.finish());
            return;
        };
        let dest = self.destination(domain);
        let n = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&dest.idle).push((n, closing));
        tokio::spawn(async move {
            tokio::time::sleep(reuse.idle).await;
            let expired = {
                let mut idle = lock(&dest.idle);
                let at = idle.iter().position(|(k, _)| *k == n);
                at.map(|i| idle.remove(i).1)
            };
            if let Some(c) = expired {
                c.finish().await;
            }
        });
    }

    /// An idle connection to `domain` that may carry another message.
    fn take_idle(&self, dest: &Destination) -> Option<Closing> {
        let reuse = self.cfg.reuse?;
        let mut idle = lock(&dest.idle);
        while let Some((_, c)) = idle.pop() {
            if reuse.allows(&c) {
                return Some(c);
            }
            tokio::spawn(c.finish());
        }
        None
    }

    /// Ends every idle connection (at stop).
    async fn close_idle(&self) {
        let all: Vec<Arc<Destination>> = lock(&self.destinations).values().cloned().collect();
        let mut closing = tokio::task::JoinSet::new();
        for d in all {
            for (_, c) in lock(&d.idle).drain(..) {
                closing.spawn(c.finish());
            }
        }
        while closing.join_next().await.is_some() {}
    }

    /// One pass over a message: every recipient that is due, grouped by
    /// destination, delivered at the same time; outcomes recorded; the
    /// message finished when every recipient is final.
    async fn attempt(self: &Arc<Self>, id: &str) -> After {
        let q = self.queue.clone();
        let key = id.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            let m = q.load(&key)?;
            let content = q.content(&key)?;
            Ok::<_, mailstore::Error>((m, content))
        })
        .await;
        let (m, content) = match loaded {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                // Deleted meanwhile (mailctl queue delete) or unreadable.
                if self.queue.dir().join(format!("{id}.msg")).exists() {
                    error!(queue_id = id, error = %e, "cannot read queued message");
                    return After::Failed;
                }
                return After::Gone;
            }
            Err(e) => {
                error!(queue_id = id, error = %e, "reading queued message failed");
                return After::Failed;
            }
        };
        if m.held {
            return After::Queued(m);
        }
        let forced = lock(&self.state).forced.remove(id);
        let now = SystemTime::now();
        let mut groups: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        for (i, r) in m.recipients.iter().enumerate() {
            let due = match r.state {
                RcptState::Pending => true,
                RcptState::Deferred { next } => forced || next <= now,
                _ => false,
            };
            if due {
                groups
                    .entry(domain_of(&r.rcpt.address))
                    .or_default()
                    .push((i, r.rcpt.address.clone()));
            }
        }
        let content = Arc::new(content);
        let mut tasks = tokio::task::JoinSet::new();
        for (domain, rcpts) in groups {
            let me = Arc::clone(self);
            let content = Arc::clone(&content);
            let env = m.envelope.clone();
            tasks.spawn(async move {
                let r = me.to_destination(&domain, &env, &rcpts, &content).await;
                (domain, r)
            });
        }
        // Each destination's outcomes are recorded as soon as its
        // transaction ends, before its QUIT and without waiting for the
        // other destinations: a crash sends again only what the remote
        // took and the record did not yet say (the window Postfix has).
        let mut record_failed = false;
        // The message as the records say, kept up to date in memory.
        let mut now_is = m.clone();
        while let Some(r) = tasks.join_next().await {
            let (domain, (results, closing)) = match r {
                Ok(r) => r,
                Err(e) => {
                    error!(queue_id = id, error = %e, "delivery task failed");
                    continue;
                }
            };
            let attempts = self.attempts(id, &m, results);
            apply(&mut now_is, &attempts);
            if tasks.is_empty() && !record_failed && now_is.is_finished() {
                // The last destination made every recipient final: the
                // removal itself is the record (nothing is left to send,
                // so a crash before it is the window the log would have
                // had), and the message never needs a log of its own.
                // A connection that is kept goes back at once, silent
                // (so the next message finds it); one that is to be
                // closed says QUIT only after the record, as below.
                let closing = match closing {
                    Some((c, p)) if self.keeps(&c) => {
                        self.put_away(&domain, c, p);
                        None
                    }
                    other => other,
                };
                if let Some(after) = self.finish_at_once(id, &now_is).await {
                    if let Some((c, p)) = closing {
                        self.put_away(&domain, c, p);
                    }
                    return after;
                }
                // Not finished by the host: recorded as usual, below.
                let q = self.queue.clone();
                let key = id.to_owned();
                if !matches!(
                    tokio::task::spawn_blocking(move || q.record(&key, &attempts)).await,
                    Ok(Ok(()))
                ) {
                    error!(queue_id = id, "recording delivery outcomes failed");
                    record_failed = true;
                }
                if let Some((c, p)) = closing {
                    self.put_away(&domain, c, p);
                }
                continue;
            }
            if !attempts.is_empty() {
                let q = self.queue.clone();
                let key = id.to_owned();
                match tokio::task::spawn_blocking(move || q.record(&key, &attempts)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        error!(queue_id = id, error = %e, "recording delivery outcomes failed");
                        record_failed = true;
                    }
                    Err(e) => {
                        error!(queue_id = id, error = %e, "recording task failed");
                        record_failed = true;
                    }
                }
            }
            if let Some((closing, permit)) = closing {
                // Only now, with the replies recorded: QUIT, or kept for
                // the next message.
                self.put_away(&domain, closing, permit);
            }
        }
        if record_failed {
            return After::Failed;
        }
        let q = self.queue.clone();
        let key = id.to_owned();
        let me = Arc::clone(self);
        let r = tokio::task::spawn_blocking(move || {
            let m = q.load(&key)?;
            if !m.is_finished() {
                return Ok(After::Queued(me.warn_if_late(&q, m)));
            }
            if let Err(e) = me.finisher.finished(&m) {
                warn!(
                    queue_id = key,
                    error = e,
                    "finishing message failed; kept queued"
                );
                return Ok(After::Failed);
            }
            q.remove_finished(&key)?;
            info!("{key}: removed");
            Ok::<_, mailstore::Error>(After::Gone)
        })
        .await;
        match r {
            Ok(Ok(after)) => after,
            Ok(Err(e)) => {
                error!(queue_id = id, error = %e, "reading back or removing the message failed");
                After::Failed
            }
            Err(e) => {
                error!(queue_id = id, error = %e, "finishing task failed");
                After::Failed
            }
        }
    }

    /// A message every recipient of which is now final, before anything
    /// of this attempt is recorded: the host finishes it (its notices),
    /// then it is removed, durably. `None` when the host could not finish
    /// it: the caller records the outcomes as usual and keeps it.
    async fn finish_at_once(self: &Arc<Self>, id: &str, m: &QueuedMessage) -> Option<After> {
        let me = Arc::clone(self);
        let m = m.clone();
        let key = id.to_owned();
        let r = tokio::task::spawn_blocking(move || {
            me.finisher.finished(&m)?;
            // Durable (the directory flushed): this is the only record.
            me.queue.remove(&key).map_err(|e| e.to_string())
        })
        .await;
        match r {
            Ok(Ok(())) => {
                info!("{id}: removed");
                Some(After::Gone)
            }
            Ok(Err(e)) => {
                warn!(
                    queue_id = id,
                    error = e,
                    "finishing message failed; recorded and kept"
                );
                None
            }
            Err(e) => {
                error!(queue_id = id, error = %e, "finishing task failed");
                None
            }
        }
    }

    /// Sends the one delay warning of a message still queued once it is
    /// due (Postfix's `delay_warning_time`), and records it. Blocks.
    fn warn_if_late(&self, q: &OutboundQueue, mut m: QueuedMessage) -> QueuedMessage {
        let now = SystemTime::now();
        let deferred = m
            .recipients
            .iter()
            .any(|r| matches!(r.state, RcptState::Deferred { .. }));
        if m.delay_warned()
            || !deferred
            || !self.cfg.schedule.delay_warning_due(m.envelope.arrival, now)
        {
            return m;
        }
        let id = m.envelope.id.clone();
        if let Err(e) = self.finisher.delay_warning(&m) {
            warn!(
                queue_id = id,
                error = e,
                "delay warning failed; tried again later"
            );
            return m;
        }
        // Sent, then recorded: a crash in between warns twice, which is
        // better than never.
        match q.set_delay_warned(&id, now) {
            Ok(()) => m.notices.push(mailstore::outbound::DELAY_NOTICE.to_owned()),
            Err(e) => error!(queue_id = id, error = %e, "recording the delay warning failed"),
        }
        m
    }

    /// The records of one destination's results, each logged as Postfix
    /// logs a delivery attempt.
    fn attempts(&self, id: &str, m: &QueuedMessage, results: Vec<RcptResult>) -> Vec<Attempt> {
        let arrival = m.envelope.arrival;
        let bounce = m.envelope.sender.is_empty();
        let now = SystemTime::now();
        results
            .into_iter()
            .map(|r| {
                let outcome = match r.verdict {
                    Verdict::Sent => Outcome::Sent,
                    Verdict::Permanent => Outcome::Bounced,
                    Verdict::Temporary => {
                        match self.cfg.schedule.after_failure(arrival, now, bounce) {
                            // The server's recipient limit, with progress
                            // made: the rest go in the next transaction.
                            AfterFailure::RetryAt(_) if r.retry_now => {
                                Outcome::Deferred { next: now }
                            }
                            AfterFailure::RetryAt(next) => Outcome::Deferred { next },
                            AfterFailure::Expire => Outcome::Bounced,
                        }
                    }
                };
                let rcpt = m
                    .recipients
                    .get(r.rcpt)
                    .map_or("", |x| x.rcpt.address.as_str());
                let delay = now
                    .duration_since(arrival)
                    .unwrap_or_default()
                    .as_secs_f32();
                let status = match outcome {
                    Outcome::Sent => "sent",
                    Outcome::Deferred { .. } => "deferred",
                    Outcome::Bounced => "bounced",
                };
                // Postfix's log line, for pflogsumm-style tools.
                info!(
                    "{id}: to=<{rcpt}>, relay={}, delay={delay:.1}, dsn={}, status={status} ({})",
                    r.remote.as_deref().unwrap_or("none"),
                    r.status,
                    r.text
                );
                Attempt {
                    rcpt: r.rcpt,
                    relayed: r.relayed,
                    outcome,
                    time: now,
                    status: r.status,
                    remote: r.remote,
                    text: r.text,
                }
            })
            .collect()
    }

    async fn to_destination(
        &self,
        domain: &str,
        env: &mailstore::outbound::OutEnvelope,
        rcpts: &[(usize, String)],
        content: &[u8],
    ) -> (Vec<RcptResult>, Option<(Closing, OwnedSemaphorePermit)>) {
        let hops = match self.route.route(domain).await {
            Ok(h) => h,
            Err(f) => {
                let results = rcpts
                    .iter()
                    .map(|(i, _)| RcptResult {
                        rcpt: *i,
                        verdict: if f.permanent {
                            Verdict::Permanent
                        } else {
                            Verdict::Temporary
                        },
                        status: f.status.clone(),
                        remote: None,
                        text: f.text.clone(),
                        relayed: false,
                        retry_now: false,
                    })
                    .collect();
                return (results, None);
            }
        };
        let dest = self.destination(domain);
        let Ok(permit) = Arc::clone(&dest.slots).acquire_owned().await else {
            return (Vec::new(), None);
        };
        if !self.cfg.rate_delay.is_zero() {
            // One delivery at a time here (the slot), started at least
            // rate_delay after the one before.
            let mut last = dest.last_start.lock().await;
            if let Some(t) = *last {
                tokio::time::sleep_until(t + self.cfg.rate_delay).await;
            }
            *last = Some(tokio::time::Instant::now());
        }
        // Postfix's PREACTIVE_DELAY >= minimal_backoff_time: not on the
        // first attempt (a TLS failure may pass), but on every retry.
        let waited = SystemTime::now()
            .duration_since(env.arrival)
            .is_ok_and(|age| age >= self.cfg.schedule.minimal_backoff);
        let msg = Message {
            sender: &env.sender,
            recipients: rcpts,
            content,
            envelope: Some(env),
            plaintext_fallback: waited,
        };
        while let Some(conn) = self.take_idle(&dest) {
            match conn.reuse(msg).await {
                Ok((results, closing)) => return (results, Some((closing, permit))),
                // Gone or refused before MAIL: try the next, or connect.
                Err(c) => {
                    tokio::spawn(c.finish());
                }
            }
        }
        let mut client = self.cfg.client.clone();
        client.keep_open = self.cfg.reuse.is_some();
        let (results, closing) = deliver_then_close(&hops, msg, &client).await;
        (results, closing.map(|c| (c, permit)))
    }
}
