//! The inbound side: one reader per substream, delivering batches of frames to the
//! application's queue and acknowledging them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use netcore::PeerId;
use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::Negotiated;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Encoder;
use tracing::debug;

use super::{ACK_EVERY, DELIVER_BATCH, DELIVER_BATCH_BYTES, MAX_ACK_SIZE};
use crate::channel::QueueError;
use crate::protocol_id::ProtocolId;
use crate::protocols::{Event, PeerHandle, Protocols, Queued};
use crate::rate_limit::MessageLimiter;
use crate::reputation::Misbehaviour;
use crate::routes::Route;

/// Sends the receiver's acknowledgements without ever waiting for the sender to read
/// them: an acknowledgement that finds the substream's window full stays pending, and
/// is replaced by a newer count once it has gone out whole.
pub(super) struct AckWriter {
    /// The encoded acknowledgement being written.
    pending: BytesMut,
    /// The count last encoded.
    encoded: u64,
    codec: MessageCodec,
}

impl AckWriter {
    pub(super) fn new() -> Self {
        Self {
            pending: BytesMut::new(),
            encoded: 0,
            codec: MessageCodec::new(MAX_ACK_SIZE),
        }
    }

    /// Acknowledges `delivered` messages, as far as `io` takes it now.
    pub(super) async fn offer<W: AsyncWrite + Unpin>(&mut self, io: &mut W, delivered: u64) {
        if self.pending.is_empty() && delivered > self.encoded {
            let ack = DirectSendAck { delivered }.encode_to_vec();
            if self
                .codec
                .encode(Bytes::from(ack), &mut self.pending)
                .is_err()
            {
                return;
            }
            self.encoded = delivered;
        }
        if self.pending.is_empty() {
            return;
        }
        // One attempt: a sender that does not read its acknowledgements fills only its
        // own window, and this reader goes on.
        let written = std::future::poll_fn(|cx| {
            let written = match Pin::new(&mut *io).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(_)) | Poll::Pending => 0,
            };
            // A writer that buffers (the negotiation's deferred answer) sends now.
            let _ = Pin::new(&mut *io).poll_flush(cx);
            Poll::Ready(written)
        })
        .await;
        self.pending.advance(written);
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
        let mut end = 0;
        for _ in 0..count {
            let prefix = self
                .frames
                .get(end..)?
                .first_chunk::<LENGTH_FIELD_BYTES>()?;
            end += LENGTH_FIELD_BYTES + u32::from_be_bytes(*prefix) as usize;
        }
        if end > self.frames.len() {
            return None;
        }
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

/// What a scan of the read buffer found.
pub(super) struct Scan {
    /// Whole frames at its front, admitted for delivery.
    pub(super) count: usize,
    /// Their bytes, prefixes included.
    pub(super) end: usize,
    /// Their messages' bytes.
    pub(super) payload: u64,
    /// The next frame is over the maximum size.
    pub(super) failure: Option<FramingError>,
    /// The rate limiter refused the next whole frame.
    pub(super) limited: bool,
    /// The next frame's length (prefix included), when its prefix has arrived.
    pub(super) next_len: Option<usize>,
}

/// Counts the whole frames at the front of `buf` to deliver in one batch: at most
/// `limit` messages and about [`DELIVER_BATCH_BYTES`], each admitted by `limiter`
/// (the first without asking it when `admitted`: the reader waited for its permit).
pub(super) fn scan(
    codec: &MessageCodec,
    buf: &[u8],
    limit: usize,
    limiter: Option<&MessageLimiter>,
    mut admitted: bool,
) -> Scan {
    let mut scan = Scan {
        count: 0,
        end: 0,
        payload: 0,
        failure: None,
        limited: false,
        next_len: None,
    };
    while scan.count < limit && scan.payload < DELIVER_BATCH_BYTES {
        let rest = &buf[scan.end..];
        let whole = match codec.frame_len(rest) {
            Ok(Some(whole)) => whole,
            Ok(None) => break,
            Err(e) => {
                scan.failure = Some(e);
                break;
            }
        };
        scan.next_len = Some(whole);
        if rest.len() < whole {
            break;
        }
        // Over its message rate, the peer waits: its stream is not read meanwhile, so
        // its window fills and it stops sending. Nothing is dropped.
        if let Some(limiter) = limiter
            && !std::mem::take(&mut admitted)
            && !limiter.try_acquire()
        {
            scan.limited = true;
            break;
        }
        scan.count += 1;
        scan.end += whole;
        scan.payload += (whole - LENGTH_FIELD_BYTES) as u64;
        scan.next_len = None;
    }
    scan
}

/// Reads one inbound DirectSend substream into the application's queue until it ends,
/// in batches of what has arrived (at most [`DELIVER_BATCH`] messages, what the queue
/// has room for, and about [`DELIVER_BATCH_BYTES`]), acknowledging what it
/// delivered whenever it waits (for the sender, for room in the application's queue or
/// for the rate limiter), and at least every [`ACK_EVERY`] messages. The messages are
/// not decoded here: each batch is the frames' bytes, split by the application's side.
pub(crate) async fn serve_inbound(
    protocols: &Protocols,
    handle: Arc<PeerHandle>,
    route: &Route,
    mut io: Negotiated<Substream>,
) {
    let peer = handle.metadata.peer_id;
    let codec = MessageCodec::new(protocols.config.max_message_size);
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
        let found = scan(&codec, &buf, limit, limiter.as_deref(), admitted);
        if found.count > 0 {
            admitted = false;
            let mut item = Queued::Messages(MessageBatch {
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
            if delivered - acks.encoded >= ACK_EVERY {
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
        // No whole frame buffered: read more, with room for the frame begun (its length
        // passed the check) and a chunk past it.
        let missing = found.next_len.map_or(0, |n| n.saturating_sub(buf.len()));
        buf.reserve(missing.max(READ_CHUNK));
        let read = match futures::poll!(std::pin::pin!(io.read_buf(&mut buf))) {
            Poll::Ready(read) => read,
            Poll::Pending => {
                acks.offer(&mut io, delivered).await;
                io.read_buf(&mut buf).await
            }
        };
        match read {
            Ok(0) if buf.is_empty() => break End::Closed,
            Ok(0) => {
                // Past a whole prefix, what follows it is the message's received part.
                let received = buf.len().checked_sub(LENGTH_FIELD_BYTES);
                break End::Bad(FramingError::Truncated(received.unwrap_or(buf.len())));
            }
            Ok(_) => {}
            Err(e) => break End::Failed(e),
        }
    };
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
