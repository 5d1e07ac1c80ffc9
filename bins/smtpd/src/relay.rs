//! Mail for other domains, on the way in: the recipients a client that may
//! relay gave for other domains go with the message into the outbound
//! queue ([`mailstore::outbound`]), durably before `250`, with a
//! `Received:` header and no `Return-Path:` (RFC 5321 section 4.4: that is
//! for the final delivery). The queue manager ([`outbound::engine`]) then
//! sends it.

use mailstore::outbound::{OutEnvelope, OutRcpt, OutWriter, OutboundQueue};
use mailstore::pipeline::HOLD_LIMIT;

/// A message for other domains being received: its content is held in
/// memory up to [`HOLD_LIMIT`], then streamed into the queue's temporary
/// file.
pub(crate) struct Outgoing {
    env: OutEnvelope,
    queue: OutboundQueue,
    held: Vec<u8>,
    writer: Option<OutWriter>,
}

impl Outgoing {
    /// A message for `env`, starting with our `Received:` header (LF line
    /// ends, as mailstore writes it; sent with CRLF).
    pub(crate) fn new(queue: OutboundQueue, env: OutEnvelope, received: &str) -> Self {
        let mut held = Vec::with_capacity(received.len() + 64);
        for line in received.split_inclusive('\n') {
            held.extend_from_slice(line.trim_end_matches('\n').as_bytes());
            held.extend_from_slice(b"\r\n");
        }
        Outgoing {
            env,
            queue,
            held,
            writer: None,
        }
    }

    /// The queue id.
    pub(crate) fn id(&self) -> &str {
        &self.env.id
    }

    /// Adds content (SMTP form); `true` when [`Outgoing::write_out`]
    /// should run (blocking) before more.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        self.held.extend_from_slice(bytes);
        self.held.len() >= HOLD_LIMIT
    }

    /// Writes what is held to the queue's temporary file. Blocks.
    pub(crate) fn write_out(&mut self) -> mailstore::Result<()> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(self.queue.begin(&self.env)?),
        };
        w.write(&self.held)?;
        self.held.clear();
        Ok(())
    }

    /// Makes the message durable in the queue. Blocks.
    pub(crate) fn commit(mut self) -> mailstore::Result<()> {
        self.write_out()?;
        match self.writer.take() {
            Some(w) => w.commit(),
            None => Err(mailstore::Error::DeliveryClosed),
        }
    }

    /// Takes a committed message out again (its local part failed, so the
    /// client is told to retry, and must not get it twice). Blocks.
    pub(crate) fn undo(queue: &OutboundQueue, id: &str) -> mailstore::Result<()> {
        queue.remove(id)
    }
}

/// A recipient for the queue, with its RFC 3461 parameters as given.
pub(crate) fn out_rcpt(address: String, params: &smtp_proto::RcptParameters<'_>) -> OutRcpt {
    OutRcpt {
        address,
        notify: params.notify.as_deref().map(str::to_owned),
        orcpt: params.orcpt.as_deref().map(str::to_owned),
    }
}
