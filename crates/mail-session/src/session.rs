//! The session contract every protocol session of the workspace follows.

use std::time::Duration;

use crate::transcript::TranscriptEntry;

/// Why a session stopped for its host. Not an error: it is the normal way
/// a session asks for I/O. Returned as the `Err` side of `next()`.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupt {
    /// Write these bytes to the peer, then call `next` again.
    Output(Vec<u8>),
    /// All buffered input is used: wait for the socket to be readable or
    /// for [`Session::poll_timeout`] to pass, then call
    /// [`Session::enqueue_input`] (or [`Session::input_closed`] at end of
    /// file) or [`Session::handle_timeout`].
    NeedInput,
    /// An event is still unanswered: answer it with the method its docs
    /// name before calling `next` again (a host bug, or while streaming a
    /// message: give the next chunk or end it).
    AwaitingHost,
    /// Close the connection, after writing all output already returned.
    /// Sticky: every later call says `Close`.
    Close,
}

/// The contract of a Sans-I/O session: bytes and time in, events and bytes
/// out. Servers and clients of both protocols implement it, so one driver
/// (`mail_session::driver`, feature `tokio`) moves bytes for all of them.
///
/// Time is a [`Duration`] since an epoch the host picks (e.g. the start of
/// the connection): any monotonic clock, and in tests and fuzzers a plain
/// counter. It enters with every input and every timeout check, as in
/// quinn-proto and str0m.
pub trait Session {
    /// What the session asks its host to decide or do.
    type Event;

    /// Bytes received from the peer at time `now`.
    fn enqueue_input(&mut self, now: Duration, bytes: &[u8]);

    /// The peer closed its sending side. The session finishes what is
    /// buffered (a complete pipelined command still runs) and then closes.
    fn input_closed(&mut self);

    /// The next event, or what I/O the session needs.
    fn next(&mut self) -> Result<Self::Event, Interrupt>;

    /// When [`Session::handle_timeout`] should be called if nothing
    /// arrives; `None` when no timer runs.
    fn poll_timeout(&self) -> Option<Duration>;

    /// Tells the session the time when no input arrived; it closes an
    /// idle connection whose timer has expired.
    fn handle_timeout(&mut self, now: Duration);

    /// Appends output ready to be written to `dst` and returns how many
    /// bytes were added: a host with its own write buffer saves the
    /// allocation an [`Interrupt::Output`] would cost.
    fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize;

    /// The next transcript entry, if the session records one (none by
    /// default).
    fn poll_transcript(&mut self) -> Option<TranscriptEntry> {
        None
    }

    /// Whether TLS is active on the connection (no by default).
    fn tls_active(&self) -> bool {
        false
    }
}

/// Implements [`Session`] for a type whose inherent methods of the same
/// names do the work (`enqueue_input`, `input_closed`, `next`,
/// `poll_timeout`, `handle_timeout`, `drain_output`, with `tls` also
/// `tls_active`, and with `transcript_and_tls` also `poll_transcript`), so a
/// session is usable with and without the trait in scope.
#[macro_export]
macro_rules! impl_session {
    ($ty:ty, $event:ty) => {
        $crate::impl_session!(@impl $ty, $event, {});
    };
    ($ty:ty, $event:ty, transcript_and_tls) => {
        $crate::impl_session!(@impl $ty, $event, {
            fn poll_transcript(&mut self) -> Option<$crate::TranscriptEntry> {
                <$ty>::poll_transcript(self)
            }
            fn tls_active(&self) -> bool {
                <$ty>::tls_active(self)
            }
        });
    };
    ($ty:ty, $event:ty, tls) => {
        $crate::impl_session!(@impl $ty, $event, {
            fn tls_active(&self) -> bool {
                <$ty>::tls_active(self)
            }
        });
    };
    (@impl $ty:ty, $event:ty, { $($extra:tt)* }) => {
        impl $crate::Session for $ty {
            type Event = $event;
            fn enqueue_input(&mut self, now: ::std::time::Duration, bytes: &[u8]) {
                <$ty>::enqueue_input(self, now, bytes)
            }
            fn input_closed(&mut self) {
                <$ty>::input_closed(self)
            }
            fn next(&mut self) -> Result<$event, $crate::Interrupt> {
                <$ty>::next(self)
            }
            fn poll_timeout(&self) -> Option<::std::time::Duration> {
                <$ty>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: ::std::time::Duration) {
                <$ty>::handle_timeout(self, now)
            }
            fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
                <$ty>::drain_output(self, dst)
            }
            $($extra)*
        }
    };
}
