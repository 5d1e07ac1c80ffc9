//! The one async driver (feature `tokio`): moves bytes between a tokio
//! socket and any [`Session`], with the session's timeouts, a shutdown
//! signal, write batching and a `C:`/`S:` transcript log.
//!
//! The host's loop is the imap-next shape, with the socket work done
//! here:
//!
//! ```no_run
//! use mail_session::driver::{Driver, Stop};
//! use mail_session::Session;
//!
//! async fn serve<S: Session + Send>(
//!     stream: tokio::net::TcpStream,
//!     mut session: S,
//!     mut answer: impl FnMut(&mut S, S::Event),
//! ) -> std::io::Result<()> {
//!     let mut driver = Driver::new(stream);
//!     loop {
//!         match driver.next(&mut session, true).await {
//!             Ok(event) => answer(&mut session, event),
//!             Err(Stop::Closed) => return Ok(()),
//!             Err(Stop::Shutdown | Stop::Evicted) => {
//!                 return driver.write_now(b"421 shutting down\r\n").await
//!             }
//!             Err(Stop::Unanswered) => return Ok(()), // a host bug
//!             Err(Stop::Io(e)) => return Err(e),
//!         }
//!     }
//! }
//! ```
//!
//! Memory: reads go through one buffer per worker thread (an idle
//! connection holds none); output is gathered in a buffer that is given
//! back when it grew large, so an idle connection costs the session's own
//! state and this struct, a few hundred bytes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
// tokio's clock, so that tests with paused time drive the timers too.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::{Interrupt, Session};
use crate::transcript::TranscriptEntry;

/// Largest single socket read.
const READ_BUF: usize = 64 * 1024;

/// Output is written once this much has gathered (and always before the
/// driver waits for input), so a long pipeline is answered in few writes.
pub const FLUSH_AT: usize = 64 * 1024;

/// A write buffer larger than this is dropped before the driver waits for
/// input, so an idle connection holds at most this much of it.
const KEEP_CAPACITY: usize = 4096;

thread_local! {
    // One read buffer per worker thread, not per connection: an idle
    // connection then holds no read buffer at all.
    static READ_SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// Lends the worker thread's read buffer to `f` (not across an await).
pub(crate) fn read_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_SCRATCH.with_borrow_mut(|b| f(b))
}

/// A byte stream the driver can read from without a buffer of its own.
pub trait Transport: AsyncWrite + Unpin + Send {
    /// Waits until data is there, reads what is there and passes it to
    /// `consume`; `Ok(false)` at end of stream. Must be cancel-safe:
    /// dropping the future before it completes loses no data.
    fn read_with(
        &mut self,
        consume: impl FnMut(&[u8]) + Send,
    ) -> impl Future<Output = io::Result<bool>> + Send;
}

impl Transport for TcpStream {
    async fn read_with(&mut self, mut consume: impl FnMut(&[u8]) + Send) -> io::Result<bool> {
        loop {
            self.readable().await?;
            let r = READ_SCRATCH.with_borrow_mut(|b| match self.try_read(b) {
                Ok(n) => {
                    consume(b.get(..n).unwrap_or_default());
                    Ok(Some(n > 0))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            })?;
            if let Some(more) = r {
                return Ok(more);
            }
        }
    }
}

/// Why [`Driver::next`] returned without an event.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The session closed (all its output is written), or the peer closed
    /// and the session had nothing more to do.
    #[error("session closed")]
    Closed,
    /// Shutdown was signalled while the session waited for input and the
    /// host allowed the interruption. Nothing was written: the host sends
    /// its protocol's goodbye (`421`, `-ERR`) with [`Driver::write_now`].
    #[error("shutting down")]
    Shutdown,
    /// The eviction token was cancelled (the connection's slot went to
    /// another client) while the session waited for input, whatever the
    /// host said about interrupting. Nothing was written: the host says
    /// why (`421`, `-ERR`) and ends the session, dropping any transaction.
    #[error("evicted")]
    Evicted,
    /// The session still waits for the answer to an event (a host bug).
    #[error("an event was left unanswered")]
    Unanswered,
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Logs a session's transcript as `C:`/`S:` lines (tracing target
/// `transcript`), with credentials redacted unless `show_secrets`.
#[derive(Debug, Clone)]
pub struct TranscriptLog {
    /// Session id shown with every line.
    pub sid: String,
    /// Log passwords and SASL payloads as sent (a classroom switch).
    pub show_secrets: bool,
}

impl TranscriptLog {
    /// Logs one entry.
    pub fn log(&self, entry: &TranscriptEntry) {
        let text = entry.display_text(self.show_secrets);
        tracing::info!(
            target: "transcript",
            sid = self.sid,
            "{}: {}",
            entry.direction.letter(),
            escape_controls(&text)
        );
    }
}

/// Moves bytes between a socket and a session. See the [module docs](self).
#[derive(Debug)]
pub struct Driver<T> {
    io: T,
    out: Vec<u8>,
    epoch: Instant,
    eof: bool,
    shutdown: Option<CancellationToken>,
    evict: Option<CancellationToken>,
    transcript: Option<TranscriptLog>,
    write_timeout: Option<Duration>,
}

impl<T: Transport> Driver<T> {
    /// A driver for `io`; its clock starts now (sessions get time as the
    /// [`Duration`] since then, see [`Driver::now`]).
    pub fn new(io: T) -> Self {
        Driver {
            io,
            out: Vec::new(),
            epoch: Instant::now(),
            eof: false,
            shutdown: None,
            evict: None,
            transcript: None,
            write_timeout: None,
        }
    }

    /// Gives up a write the peer does not take within `limit` (an
    /// [`io::ErrorKind::TimedOut`] error): a sender's guard against a
    /// receiver that stops reading, RFC 5321 section 4.5.3.2.5's 3-minute
    /// "data block" timeout. Each flush (at most [`FLUSH_AT`] octets
    /// plus one output) has its own `limit`.
    pub fn with_write_timeout(mut self, limit: Duration) -> Self {
        self.write_timeout = Some(limit);
        self
    }

    /// Lets `token` interrupt waits for input (see [`Driver::next`]).
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// Lets `token` end the session at its next wait for input, even in the
    /// middle of a transaction ([`Stop::Evicted`]).
    pub fn with_eviction(mut self, token: CancellationToken) -> Self {
        self.evict = Some(token);
        self
    }

    /// Logs the session's transcript.
    pub fn with_transcript(mut self, log: TranscriptLog) -> Self {
        self.transcript = Some(log);
        self
    }

    /// The time to give the session: how long the driver has existed.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The socket.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The socket, to replace it (a TLS upgrade).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn stream_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Logs a line in the transcript that is no protocol line (the TLS
    /// boundary), when a transcript is logged.
    pub fn note(&self, text: &str) {
        if let Some(log) = &self.transcript {
            tracing::info!(target: "transcript", sid = log.sid, "-- {}", escape_controls(text));
        }
    }

    /// Gives the socket back; unwritten output is
    /// dropped, so call [`Driver::flush`] first.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Runs `session` until it has an event for the host, writing its
    /// output and feeding it input and time meanwhile. Output is gathered
    /// and written before the driver waits for input, when
    /// [`FLUSH_AT`] bytes have gathered, and at close; call
    /// [`Driver::flush`] before a slow answer so the peer sees what is
    /// ready. With `interruptible`, a shutdown signalled while the session
    /// waits for input returns [`Stop::Shutdown`].
    pub async fn next<S: Session + Send>(
        &mut self,
        session: &mut S,
        interruptible: bool,
    ) -> Result<S::Event, Stop> {
        loop {
            let step = session.next();
            self.log_transcript(session);
            match step {
                Ok(event) => return Ok(event),
                Err(Interrupt::Output(bytes)) => self.write(&bytes).await?,
                Err(Interrupt::Close) => {
                    self.flush().await?;
                    return Err(Stop::Closed);
                }
                Err(Interrupt::AwaitingHost) => {
                    self.flush().await?;
                    return Err(Stop::Unanswered);
                }
                Err(Interrupt::NeedInput) => {
                    self.flush().await?;
                    if self.eof {
                        // The peer is gone and the session wants more.
                        return Err(Stop::Closed);
                    }
                    self.wait_for_input(session, interruptible).await?;
                }
            }
        }
    }

    async fn wait_for_input<S: Session + Send>(
        &mut self,
        session: &mut S,
        interruptible: bool,
    ) -> Result<(), Stop> {
        if self.out.capacity() > KEEP_CAPACITY {
            // Going idle: give a large write buffer back.
            self.out = Vec::new();
        }
        let epoch = self.epoch;
        let deadline = session.poll_timeout().map(|d| epoch + d);
        let token = self.shutdown.clone().filter(|_| interruptible);
        let cancelled = async {
            match &token {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let evict = self.evict.clone();
        let evicted = async {
            match &evict {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.io.read_with(|b| session.enqueue_input(epoch.elapsed(), b)) => {
                if !r? {
                    // Let the session finish what is buffered (a complete
                    // pipelined command still runs), then close.
                    session.input_closed();
                    self.eof = true;
                }
            }
            () = sleep => session.handle_timeout(epoch.elapsed()),
            () = evicted => return Err(Stop::Evicted),
            () = cancelled => return Err(Stop::Shutdown),
        }
        Ok(())
    }

    fn log_transcript<S: Session>(&self, session: &mut S) {
        while let Some(entry) = session.poll_transcript() {
            if let Some(log) = &self.transcript {
                log.log(&entry);
            }
        }
    }

    /// Queues bytes for the peer, writing once [`FLUSH_AT`] have gathered.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// The write buffer, for [`Session::drain_output`]: output appended
    /// here goes out with the next flush.
    pub fn output_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            // A TLS stream may accept the last bytes while its records
            // still wait for the socket (tokio-rustls returns once the
            // plaintext is taken); without this the peer would wait for a
            // reply that sits in the TLS buffer while we wait for input.
            self.io.flush().await
        };
        match self.write_timeout {
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??,
            None => write.await?,
        }
        self.out.clear();
        Ok(())
    }

    /// Writes what is queued and then `bytes`, at once (a goodbye line).
    pub async fn write_now(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        self.flush().await
    }
}

/// A protocol line made safe for a log: control characters (a bare CR
/// that would overwrite the line on a terminal, NUL, ...) are shown
/// escaped, as `\r` or `\u{0}`.
pub fn escape_controls(line: &str) -> Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return Cow::Borrowed(line);
    }
    Cow::Owned(line.chars().flat_map(char::escape_default).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, EntryKind};
    use tokio::io::AsyncReadExt;

    /// A line echo: answers every line with `+<line>`, `quit` closes;
    /// times out after 10 s without input.
    #[derive(Default)]
    struct Echo {
        buf: Vec<u8>,
        out: Vec<u8>,
        last: Duration,
        closed: bool,
        eof: bool,
        lines: Vec<String>,
        transcript: Vec<TranscriptEntry>,
    }

    impl Session for Echo {
        type Event = String;
        fn enqueue_input(&mut self, now: Duration, bytes: &[u8]) {
            self.last = now;
            self.buf.extend_from_slice(bytes);
        }
        fn input_closed(&mut self) {
            self.eof = true;
        }
        fn next(&mut self) -> Result<String, Interrupt> {
            if self.closed && !self.out.is_empty() {
                return Err(Interrupt::Output(std::mem::take(&mut self.out)));
            }
            if self.closed {
                return Err(Interrupt::Close);
            }
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                self.transcript.push(TranscriptEntry {
                    direction: Direction::Client,
                    kind: EntryKind::Line,
                    text: line.clone(),
                });
                if line == "quit" {
                    self.closed = true;
                    self.out.extend_from_slice(b"+bye\r\n");
                } else {
                    self.out
                        .extend_from_slice(format!("+{line}\r\n").as_bytes());
                }
                self.lines.push(line.clone());
                return Ok(line);
            }
            if !self.out.is_empty() {
                return Err(Interrupt::Output(std::mem::take(&mut self.out)));
            }
            if self.closed || self.eof {
                return Err(Interrupt::Close);
            }
            Err(Interrupt::NeedInput)
        }
        fn poll_timeout(&self) -> Option<Duration> {
            Some(self.last + Duration::from_secs(10))
        }
        fn handle_timeout(&mut self, now: Duration) {
            if now >= self.last + Duration::from_secs(10) {
                self.out.extend_from_slice(b"-timeout\r\n");
                self.closed = true;
            }
        }
        fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
            let n = self.out.len();
            dst.append(&mut self.out);
            n
        }
        fn poll_transcript(&mut self) -> Option<TranscriptEntry> {
            self.transcript.pop()
        }
        fn tls_active(&self) -> bool {
            false
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    async fn run(mut d: Driver<TcpStream>, s: &mut Echo, interruptible: bool) -> Stop {
        loop {
            match d.next(s, interruptible).await {
                Ok(_) => {}
                Err(Stop::Shutdown) => {
                    d.write_now(b"-shutdown\r\n").await.unwrap();
                    return Stop::Shutdown;
                }
                Err(e) => return e,
            }
        }
    }

    #[tokio::test]
    async fn pipelined_lines_then_quit() {
        let (mut client, server) = pair().await;
        client.write_all(b"a\r\nb\r\nquit\r\nc\r\n").await.unwrap();
        let mut s = Echo::default();
        let stop = run(Driver::new(server), &mut s, true).await;
        assert!(matches!(stop, Stop::Closed));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "+a\r\n+b\r\n+bye\r\n");
    }

    #[tokio::test]
    async fn end_of_input_lets_the_session_finish() {
        let (mut client, server) = pair().await;
        client.write_all(b"x\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut s = Echo::default();
        let stop = run(Driver::new(server), &mut s, true).await;
        assert!(matches!(stop, Stop::Closed));
        assert_eq!(s.lines, ["x"]);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "+x\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_comes_from_the_session() {
        let (mut client, server) = pair().await;
        let mut s = Echo::default();
        let stop = run(Driver::new(server), &mut s, true).await;
        assert!(matches!(stop, Stop::Closed));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "-timeout\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_the_write_out() {
        let (_client, server) = pair().await;
        let mut d = Driver::new(server).with_write_timeout(Duration::from_secs(180));
        // Far more than the socket buffers hold; the client never reads.
        let e = d.write_now(&vec![b'x'; 64 << 20]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn shutdown_only_when_interruptible() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        token.cancel();
        client.write_all(b"a\r\n").await.unwrap();
        let mut s = Echo::default();
        // Not interruptible: the session goes on until it closes.
        let d = Driver::new(server).with_shutdown(token.clone());
        let task = tokio::spawn(async move {
            let stop = run(d, &mut s, false).await;
            (stop, s)
        });
        client.write_all(b"quit\r\n").await.unwrap();
        let (stop, _) = task.await.unwrap();
        assert!(matches!(stop, Stop::Closed));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "+a\r\n+bye\r\n");

        let (mut client, server) = pair().await;
        let mut s = Echo::default();
        let stop = run(Driver::new(server).with_shutdown(token), &mut s, true).await;
        assert!(matches!(stop, Stop::Shutdown));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "-shutdown\r\n");
    }

    #[tokio::test]
    async fn eviction_interrupts_even_when_not_interruptible() {
        let (mut client, server) = pair().await;
        let evict = CancellationToken::new();
        let mut s = Echo::default();
        let d = Driver::new(server)
            .with_shutdown(CancellationToken::new())
            .with_eviction(evict.clone());
        client.write_all(b"a\r\n").await.unwrap();
        let task = tokio::spawn(async move { run(d, &mut s, false).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        evict.cancel();
        assert!(matches!(task.await.unwrap(), Stop::Evicted));
        drop(client.shutdown().await);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "+a\r\n");
    }

    #[tokio::test]
    async fn byte_at_a_time_input_gives_the_same_output() {
        let (mut client, server) = pair().await;
        let task = tokio::spawn(async move {
            let mut s = Echo::default();
            run(Driver::new(server), &mut s, true).await;
        });
        for b in b"one\r\ntwo\r\nquit\r\n" {
            client.write_all(&[*b]).await.unwrap();
            client.flush().await.unwrap();
        }
        task.await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "+one\r\n+two\r\n+bye\r\n");
    }

    /// A transport that, like a TLS stream, may hold written bytes until
    /// it is flushed: here it holds all of them.
    struct HoldsUntilFlushed {
        tcp: TcpStream,
        held: Vec<u8>,
    }

    impl AsyncWrite for HoldsUntilFlushed {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.get_mut().held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let this = self.get_mut();
            while !this.held.is_empty() {
                let n = std::task::ready!(
                    std::pin::Pin::new(&mut this.tcp).poll_write(cx, &this.held)
                )?;
                this.held.drain(..n);
            }
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    impl Transport for HoldsUntilFlushed {
        async fn read_with(&mut self, consume: impl FnMut(&[u8]) + Send) -> io::Result<bool> {
            self.tcp.read_with(consume).await
        }
    }

    #[tokio::test]
    async fn output_is_flushed_through_the_transport_before_waiting() {
        let (mut client, server) = pair().await;
        let task = tokio::spawn(async move {
            let mut s = Echo::default();
            let mut d = Driver::new(HoldsUntilFlushed {
                tcp: server,
                held: Vec::new(),
            });
            while d.next(&mut s, true).await.is_ok() {}
        });
        client.write_all(b"one\r\n").await.unwrap();
        let mut got = [0; 6];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the reply is not held back")
            .unwrap();
        assert_eq!(&got, b"+one\r\n");
        client.write_all(b"quit\r\n").await.unwrap();
        task.await.unwrap();
    }

    #[test]
    fn escapes_controls_in_log_lines() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\rb\0"), "a\\rb\\u{0}");
        assert_eq!(escape_controls("中文"), "中文");
    }
}
