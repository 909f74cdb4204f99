//! The inbound side: one reader per substream, delivering batches of frames to the
//! application's queue and acknowledging them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use netcore::PeerId;
use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::Negotiated;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::core::{DELIVER_BATCH, ReceiverAcks, frames_end, scan};
use crate::channel::QueueError;
use crate::protocol_id::ProtocolId;
use crate::protocols::{Delivery, Event, PeerHandle, Protocols};
use crate::rate_limit::MessageLimiter;
use crate::reputation::Misbehaviour;
use crate::routes::Route;

/// Sends the receiver's acknowledgements without ever waiting for the sender to read
/// them: one write attempt per offer; what [`ReceiverAcks`] has to send and did not go
/// out waits there for the next offer.
pub(super) struct AckWriter {
    /// The count to acknowledge, and what is left to write of its frame.
    acks: ReceiverAcks,
}

impl AckWriter {
    /// Nothing acknowledged yet.
    pub(super) fn new() -> Self {
        Self {
            acks: ReceiverAcks::new(),
        }
    }

    /// Whether `delivered` messages call for an acknowledgement though the reader is
    /// not about to wait; see [`ReceiverAcks::due`].
    pub(super) fn due(&self, delivered: u64) -> bool {
        self.acks.due(delivered)
    }

    /// Acknowledges `delivered` messages, as far as `io` takes it now.
    pub(super) async fn offer<W: AsyncWrite + Unpin>(&mut self, io: &mut W, delivered: u64) {
        let frame = self.acks.outgoing(delivered);
        if frame.is_empty() {
            return;
        }
        // One attempt: a sender that does not read its acknowledgements fills only its
        // own window, and this reader goes on.
        let written = std::future::poll_fn(|cx| {
            let written = match Pin::new(&mut *io).poll_write(cx, frame) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(_)) | Poll::Pending => 0,
            };
            // A writer that buffers (the negotiation's deferred answer) sends now.
            let _ = Pin::new(&mut *io).poll_flush(cx);
            Poll::Ready(written)
        })
        .await;
        self.acks.sent(written);
    }
}

/// Messages read from one DirectSend substream, in the application's queue: whole
/// frames back to back, as they came off the wire, checked by the reader (each within
/// the maximum size), and split into events without copying when the application takes
/// them. One buffer moves between the tasks rather than an event per message.
pub(crate) struct MessageBatch {
    pub(super) peer_id: PeerId,
    pub(super) protocol: ProtocolId,
    pub(super) frames: Bytes,
    /// Messages left in `frames`.
    pub(super) len: usize,
}

impl MessageBatch {
    /// Messages left to hand out.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Splits off the first `count` messages as a batch of their own (for the fair
    /// queue, which serves a peer a few messages per turn); `None` unless fewer than
    /// the batch holds.
    pub(crate) fn split_off(&mut self, count: usize) -> Option<Self> {
        if count == 0 || count >= self.len {
            return None;
        }
        let end = frames_end(&self.frames, count)?;
        self.len -= count;
        Some(Self {
            peer_id: self.peer_id,
            protocol: self.protocol,
            frames: self.frames.split_to(end),
            len: count,
        })
    }

    /// The next message, as the application's event (built in place in the caller's
    /// return value: this runs once per message).
    #[inline]
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        // Every frame was whole when the reader counted it; a batch that is not ends.
        let Some(data) = MessageCodec::split_frame(&mut self.frames) else {
            self.len = 0;
            return None;
        };
        self.len -= 1;
        Some(Event::Message {
            peer_id: self.peer_id,
            protocol: self.protocol,
            data,
        })
    }
}

/// A read buffer takes at least this much room before each read.
const READ_CHUNK: usize = 16 * 1024;

/// How a substream's reading ended.
enum End {
    /// The sender closed its side.
    Closed,
    /// The sender broke the framing.
    Bad(FramingError),
    /// The substream failed (reset, or the connection closed).
    Failed(std::io::Error),
}

/// The reader's admission of its next whole frame: the peer's message limiter decides,
/// except for the first frame after the reader waited for its permit (`admitted`, which
/// this spends). Without a limiter every frame is admitted.
pub(super) fn admission<'a>(
    limiter: Option<&'a MessageLimiter>,
    admitted: &'a mut bool,
) -> impl FnMut() -> bool + 'a {
    // Over its message rate, the peer waits: its stream is not read meanwhile, so its
    // window fills and it stops sending. Nothing is dropped.
    move || limiter.is_none_or(|limiter| std::mem::take(admitted) || limiter.try_acquire())
}

/// Reads one inbound DirectSend substream into the application's queue until it ends,
/// in batches of what has arrived (at most [`DELIVER_BATCH`] messages, what the queue
/// has room for, and about `DELIVER_BATCH_BYTES`: see [`scan`]), acknowledging what it
/// delivered whenever it waits (for the sender, for room in the application's queue or
/// for the rate limiter), and when [`ReceiverAcks::due`]. The messages are
/// not decoded here: each batch is the frames' bytes, split by the application's side.
pub(crate) async fn serve_inbound(
    protocols: &Protocols,
    handle: Arc<PeerHandle>,
    route: &Route,
    mut io: Negotiated<Substream>,
) {
    let peer = handle.metadata.peer_id;
    let codec = MessageCodec::new(route.max_message_size);
    let limiter = handle.message_limiter.clone();
    // Release the handle: a long-lived reader must not keep a closed peer's state alive.
    drop(handle);
    let queue = protocols.apps[route.app].slot((peer, Some(route.protocol)));
    let mut acks = AckWriter::new();
    let mut delivered = 0u64;
    let mut buf = BytesMut::new();
    // The first whole frame has its rate limiter permit already.
    let mut admitted = false;
    let end = loop {
        let limit = queue.free().clamp(1, DELIVER_BATCH);
        let found = scan(
            &codec,
            &buf,
            limit,
            admission(limiter.as_deref(), &mut admitted),
        );
        if found.count > 0 {
            let mut item = Delivery::Messages(MessageBatch {
                peer_id: peer,
                protocol: route.protocol,
                frames: buf.split_to(found.end).freeze(),
                len: found.count,
            });
            route.metrics.messages_in.inc_by(found.count as u64);
            route.metrics.bytes_in.inc_by(found.payload);
            loop {
                match queue.try_push(item) {
                    Ok(()) => break,
                    Err(QueueError::Full(back)) => {
                        // The application is behind (or another reader of this peer's
                        // key took the room): acknowledge what it has, then wait for
                        // room for this batch.
                        item = back;
                        acks.offer(&mut io, delivered).await;
                        if queue.room_for(found.count).await.is_err() {
                            return;
                        }
                    }
                    Err(QueueError::Closed(_)) => return,
                }
            }
            delivered += found.count as u64;
            if acks.due(delivered) {
                acks.offer(&mut io, delivered).await;
            }
            continue;
        }
        if let Some(e) = found.failure {
            break End::Bad(e);
        }
        if found.limited {
            if let Some(limiter) = &limiter {
                acks.offer(&mut io, delivered).await;
                limiter.acquire().await;
            }
            admitted = true;
            continue;
        }
        if let Some(end) = read_more(&mut io, &mut buf, found.next_len, &mut acks, delivered).await
        {
            break end;
        }
    };
    finish(protocols, route, peer, end, io, &mut acks, delivered).await;
}

/// Reads more into `buf` (no whole frame is buffered), with room for the frame begun
/// (`next_len`, whose length passed the check) and a chunk past it. Acknowledges
/// `delivered` first if the read would wait. `None` while the stream goes on.
async fn read_more(
    io: &mut Negotiated<Substream>,
    buf: &mut BytesMut,
    next_len: Option<usize>,
    acks: &mut AckWriter,
    delivered: u64,
) -> Option<End> {
    let missing = next_len.map_or(0, |n| n.saturating_sub(buf.len()));
    buf.reserve(missing.max(READ_CHUNK));
    let read = match futures::poll!(std::pin::pin!(io.read_buf(buf))) {
        Poll::Ready(read) => read,
        Poll::Pending => {
            acks.offer(io, delivered).await;
            io.read_buf(buf).await
        }
    };
    match read {
        Ok(0) if buf.is_empty() => Some(End::Closed),
        Ok(0) => {
            // Past a whole prefix, what follows it is the message's received part.
            let received = buf.len().checked_sub(LENGTH_FIELD_BYTES);
            Some(End::Bad(FramingError::Truncated(
                received.unwrap_or(buf.len()),
            )))
        }
        Ok(_) => None,
        Err(e) => Some(End::Failed(e)),
    }
}

/// Ends a substream's reading: on the sender's close, the last count goes out ahead of
/// our FIN; a framing error is counted (and an oversized frame reported).
async fn finish(
    protocols: &Protocols,
    route: &Route,
    peer: PeerId,
    end: End,
    mut io: Negotiated<Substream>,
    acks: &mut AckWriter,
    delivered: u64,
) {
    match end {
        End::Closed => {
            // The last count goes out ahead of our FIN (a plain drop would reset the
            // substream and discard it), without waiting for a sender that does not
            // read.
            acks.offer(&mut io, delivered).await;
            let _ = io.shutdown().now_or_never();
        }
        End::Bad(e) => {
            route.metrics.decode_failures.inc();
            debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "bad DirectSend stream; closing it");
            if let FramingError::TooLarge { .. } = e {
                protocols
                    .reporter
                    .report(peer, Misbehaviour::OversizedMessage);
            }
        }
        End::Failed(e) => {
            debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "DirectSend substream failed");
        }
    }
}
