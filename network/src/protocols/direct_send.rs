//! DirectSend: one long-lived substream per (peer, protocol) carrying one-way,
//! length-delimited messages, and acknowledgements the other way.
//!
//! Outbound, each (peer, protocol) has a bounded queue drained by one writer task, which
//! opens the substream on the first message, writes every queued message and flushes
//! once per batch. When the queue is full the new message is dropped and counted (the
//! sender learns it from `SendError::QueueFull`): the messages already queued are older
//! and were accepted first. Inbound, one reader task per substream pushes messages into
//! the application's fair queue, waiting while that peer's queue is full, so a flooding
//! peer is slowed by reading less rather than by losing messages.
//!
//! Every message the network accepts is delivered or counted in
//! `network_queue_drops_total{queue=<protocol>}`: `queue_full` when its queue was full,
//! `stream_failed` when it was never written (no substream could be opened, or the
//! connection closed while it waited), `unconfirmed` when it was written to a
//! substream that ended before the receiver acknowledged it. The receiver acknowledges
//! with a cumulative count (`proto::direct_send::DirectSendAck`) whenever it waits, for
//! the sender or for room in the application's queue, and at least every [`ACK_EVERY`]
//! messages, so `unconfirmed` is
//! an upper bound of the messages lost in flight when a connection is cut, close to the
//! truth: a handful of messages, not a window.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::Negotiated;
use prometheus::IntGauge;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use tracing::debug;

use super::open_substream;
use crate::channel::{BatchReceiver, BatchSender, QueueClosed, QueueError, batch_queue};
use crate::error::SendError;
use crate::interface::Event;
use crate::protocol_id::ProtocolId;
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Route, Shared};

/// Messages one writer batch takes from its queue before flushing: enough to fill
/// several Noise frames with small messages, few enough that a flush is never far away.
const MAX_BATCH: usize = 256;

/// Small messages are packed into writes of about this many bytes; a larger message is
/// written from its own buffer.
const WRITE_CHUNK: usize = 16 * 1024;

/// Messages one reader hands to the application's queue at a time, at most.
const DELIVER_BATCH: usize = 64;

/// A reader stops gathering a batch past this many payload bytes: what it holds outside
/// the application's queue stays small (it has already given the sender the window
/// back for it).
const DELIVER_BATCH_BYTES: u64 = 16 * 1024;

/// The receiver acknowledges at least once per this many messages, even when the sender
/// keeps it busy.
const ACK_EVERY: u64 = 256;

/// The largest acknowledgement frame accepted: a `DirectSendAck` is at most 11 bytes.
const MAX_ACK_SIZE: usize = 16;

/// Queues `msg` for `peer`; see `NetworkSender::send_to`.
pub(crate) fn send(
    shared: &Arc<Shared>,
    peer: PeerId,
    protocol: ProtocolId,
    msg: Bytes,
) -> Result<(), SendError> {
    let max = shared.config.max_message_size;
    if msg.len() > max {
        return Err(SendError::TooLarge {
            len: msg.len(),
            max,
        });
    }
    // Everything below is done under the peers' read lock, which nothing holds for
    // long: no lookup result is cloned out of it.
    let peers = shared.peers.read();
    let handle = peers.get(&peer).ok_or(SendError::NotConnected(peer))?;
    let (index, route) = shared
        .route_index(protocol)
        .ok_or(SendError::UnregisteredProtocol(protocol))?;
    let queue = handle.direct_send[index].get_or_init(|| spawn_writer(shared, handle, route));
    match queue.try_send(msg) {
        Ok(()) => {
            handle.direct_send_depth.inc();
            Ok(())
        }
        Err(QueueError::Full(_)) => {
            route.metrics.queue_drops.inc();
            Err(SendError::QueueFull)
        }
        // The writer found the connection closed and stopped; the peer is about to be
        // removed.
        Err(QueueError::Closed(_)) => Err(SendError::NotConnected(peer)),
    }
}

/// Starts the writer task of (peer, protocol) and returns its queue.
fn spawn_writer(shared: &Arc<Shared>, handle: &PeerHandle, route: &Route) -> BatchSender<Bytes> {
    let protocol = route.protocol;
    let (tx, rx) = batch_queue(shared.config.direct_send_queue_size);
    let writer = Writer {
        shared: Arc::downgrade(shared),
        peer: handle.metadata.peer_id,
        control: handle.control.clone(),
        remote_supports: handle.metadata.supports(protocol),
        protocol,
        codec: MessageCodec::new(shared.config.max_message_size),
        route: route.clone(),
        depth: handle.direct_send_depth.clone(),
    };
    tokio::spawn(writer.run(rx));
    tx
}

/// An open outbound substream and what it has carried.
struct OutboundStream {
    /// Messages go out through `io.get_mut()`; acknowledgements come in through `io`
    /// (frames of at most [`MAX_ACK_SIZE`]).
    io: FramedRead<Negotiated<Substream>, MessageCodec>,
    /// Encoded messages not yet written.
    out: BytesMut,
    /// Messages written to it.
    written: u64,
    /// Of those, the messages the receiver acknowledged.
    acked: u64,
}

impl OutboundStream {
    /// Applies one acknowledgement frame; an error means the receiver broke the
    /// protocol.
    fn on_ack(&mut self, frame: Bytes) -> Result<(), AckError> {
        let ack = DirectSendAck::decode(frame).map_err(|_| AckError::Malformed)?;
        if ack.delivered < self.acked || ack.delivered > self.written {
            return Err(AckError::OutOfRange {
                delivered: ack.delivered,
                acked: self.acked,
                written: self.written,
            });
        }
        self.acked = ack.delivered;
        Ok(())
    }

    /// Writes `batch` in order and flushes: small messages packed into writes of about
    /// [`WRITE_CHUNK`] bytes, a large one written from its own buffer after its prefix.
    async fn write_batch(
        &mut self,
        codec: &MessageCodec,
        batch: &mut Vec<Bytes>,
    ) -> Result<(), FramingError> {
        for msg in batch.drain(..) {
            codec.write_prefix(msg.len(), &mut self.out)?;
            if msg.len() < WRITE_CHUNK {
                self.out.extend_from_slice(&msg);
                if self.out.len() < WRITE_CHUNK {
                    continue;
                }
            }
            let io = self.io.get_mut();
            io.write_all(&self.out).await?;
            self.out.clear();
            if msg.len() >= WRITE_CHUNK {
                io.write_all(&msg).await?;
            }
        }
        let io = self.io.get_mut();
        if !self.out.is_empty() {
            io.write_all(&self.out).await?;
            self.out.clear();
        }
        io.flush().await?;
        Ok(())
    }

    /// Takes every acknowledgement that has already arrived, without waiting.
    fn take_arrived_acks(&mut self) {
        while let Some(Some(Ok(frame))) = self.io.next().now_or_never() {
            if self.on_ack(frame).is_err() {
                return;
            }
        }
    }

    /// The messages written and never acknowledged; the stream is about to be dropped.
    fn unconfirmed(mut self) -> u64 {
        self.take_arrived_acks();
        self.written - self.acked
    }
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
enum AckError {
    #[error("acknowledgement does not decode")]
    Malformed,
    #[error(
        "acknowledgement of {delivered} messages after {acked} acknowledged and {written} written"
    )]
    OutOfRange {
        delivered: u64,
        acked: u64,
        written: u64,
    },
}

/// Drains one (peer, protocol) queue onto its substream.
struct Writer {
    /// For reporting a receiver that breaks the protocol; weak, as the writer lives as
    /// long as the connection.
    shared: Weak<Shared>,
    peer: PeerId,
    control: Control,
    remote_supports: bool,
    protocol: ProtocolId,
    /// Encodes the messages' length prefixes.
    codec: MessageCodec,
    route: Route,
    depth: IntGauge,
}

impl Writer {
    /// Holds `misbehaviour` against the receiver, while the node runs.
    fn report(&self, misbehaviour: Misbehaviour) {
        if let Some(shared) = self.shared.upgrade() {
            shared.report(self.peer, misbehaviour);
        }
    }

    /// Runs until the queue closes, i.e. until the peer's handle is dropped when the
    /// connection ends.
    async fn run(self, mut queue: BatchReceiver<Bytes>) {
        let mut stream: Option<OutboundStream> = None;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let taken = match stream.as_mut() {
                None => queue.recv_many(&mut batch, MAX_BATCH).await,
                // Acknowledgements are read while the queue is empty; under load they
                // wait in the substream's buffer, where the latest supersedes the rest.
                Some(s) => tokio::select! {
                    biased;
                    taken = queue.recv_many(&mut batch, MAX_BATCH) => taken,
                    ack = s.io.next() => {
                        let failure = match ack {
                            Some(Ok(frame)) => match s.on_ack(frame) {
                                Ok(()) => continue,
                                Err(e) => {
                                    self.route.metrics.decode_failures.inc();
                                    self.report(Misbehaviour::ProtocolViolation);
                                    e.to_string()
                                }
                            },
                            Some(Err(e)) => {
                                if let FramingError::TooLarge { .. } = e {
                                    // An acknowledgement over its size is no acknowledgement.
                                    self.route.metrics.decode_failures.inc();
                                    self.report(Misbehaviour::OversizedMessage);
                                }
                                e.to_string()
                            }
                            None => "receiver closed the substream".to_owned(),
                        };
                        debug!(protocol = %self.protocol, error = %failure, "DirectSend substream ended; reopening on the next message");
                        if let Some(s) = stream.take() {
                            self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
                        }
                        continue;
                    }
                },
            };
            if taken == 0 {
                break;
            }
            self.depth.sub(batch.len() as i64);
            if stream.is_none() {
                match open_substream(&self.control, self.remote_supports, self.protocol).await {
                    Ok(io) => {
                        stream = Some(OutboundStream {
                            io: FramedRead::new(io, MessageCodec::new(MAX_ACK_SIZE)),
                            out: BytesMut::new(),
                            written: 0,
                            acked: 0,
                        });
                    }
                    Err(e) => {
                        debug!(protocol = %self.protocol, error = ?e, "DirectSend substream failed to open");
                        self.route.metrics.stream_drops.inc_by(batch.len() as u64);
                        batch.clear();
                        if self.control.is_closed() {
                            self.drop_queued(&mut queue);
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            let count = batch.len() as u64;
            let bytes: u64 = batch.iter().map(|m| m.len() as u64).sum();
            // Counted as written before the write: if the substream fails part way, the
            // receiver may still acknowledge some of the batch, and what it does not is
            // counted as unconfirmed.
            s.written += count;
            self.route.metrics.messages_out.inc_by(count);
            self.route.metrics.bytes_out.inc_by(bytes);
            let sent = s.write_batch(&self.codec, &mut batch).await;
            if let Err(e) = sent {
                debug!(protocol = %self.protocol, error = %e, "DirectSend substream failed; reopening on the next message");
                if let Some(s) = stream.take() {
                    self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
                }
                if self.control.is_closed() {
                    self.drop_queued(&mut queue);
                    return;
                }
            }
            batch.clear();
        }
        if let Some(mut s) = stream {
            let _ = s.io.get_mut().shutdown().await;
            self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
        }
    }

    /// The connection is gone: closes the queue and counts what it still holds as
    /// dropped, so every accepted message is delivered or counted.
    fn drop_queued(&self, queue: &mut BatchReceiver<Bytes>) {
        let dropped = queue.close_and_clear();
        self.depth.sub(dropped as i64);
        self.route.metrics.stream_drops.inc_by(dropped as u64);
    }
}

/// Sends the receiver's acknowledgements without ever waiting for the sender to read
/// them: an acknowledgement that finds the substream's window full stays pending, and
/// is replaced by a newer count once it has gone out whole.
struct AckWriter {
    /// The encoded acknowledgement being written.
    pending: BytesMut,
    /// The count last encoded.
    encoded: u64,
    codec: MessageCodec,
}

impl AckWriter {
    fn new() -> Self {
        Self {
            pending: BytesMut::new(),
            encoded: 0,
            codec: MessageCodec::new(MAX_ACK_SIZE),
        }
    }

    /// Acknowledges `delivered` messages, as far as `io` takes it now.
    async fn offer<W: AsyncWrite + Unpin>(&mut self, io: &mut W, delivered: u64) {
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

/// How a substream's reading ended.
enum End {
    /// The sender closed its side.
    Closed,
    /// The sender broke the framing.
    Bad(FramingError),
}

/// Reads one inbound DirectSend substream into the application's queue until it ends,
/// in batches of what has arrived (at most [`DELIVER_BATCH`] messages, what the queue
/// has room for, and about [`DELIVER_BATCH_BYTES`]), acknowledging what it
/// delivered whenever it waits (for the sender, for room in the application's queue or
/// for the rate limiter), and at least every [`ACK_EVERY`] messages.
pub(crate) async fn serve_inbound(
    shared: &Shared,
    handle: Arc<PeerHandle>,
    route: &Route,
    io: Negotiated<Substream>,
) {
    let peer = handle.metadata.peer_id;
    let mut decoder = MessageCodec::new(shared.config.max_message_size);
    let mut reader = FramedRead::new(io, decoder.clone());
    let limiter = handle.message_limiter.clone();
    // Release the handle: a long-lived reader must not keep a closed peer's state alive.
    drop(handle);
    let queue = shared.apps[route.app].slot((peer, Some(route.protocol)));
    let mut acks = AckWriter::new();
    let mut delivered = 0u64;
    let mut batch = VecDeque::with_capacity(DELIVER_BATCH);
    // A message read while a batch was pending, held back by the rate limiter.
    let mut held: Option<Bytes> = None;
    loop {
        // Gather what has arrived, no more than the application's queue takes now (but
        // at least one message, as a reader that waits for room holds one); wait only
        // when there is nothing to deliver.
        let mut end = None;
        let mut bytes = 0u64;
        let limit = queue.free().clamp(1, DELIVER_BATCH);
        while batch.len() < limit && bytes < DELIVER_BATCH_BYTES {
            let data = match held.take() {
                Some(data) => data,
                // Frames already buffered are decoded here, without the stream's
                // machinery; the stream reads more when none is left.
                None => match decoder.decode(reader.read_buffer_mut()) {
                    Ok(Some(data)) => data,
                    Err(e) => {
                        end = Some(End::Bad(e));
                        break;
                    }
                    Ok(None) => {
                        let frame = match futures::poll!(reader.next()) {
                            Poll::Ready(frame) => frame,
                            Poll::Pending if batch.is_empty() => {
                                acks.offer(reader.get_mut(), delivered).await;
                                reader.next().await
                            }
                            Poll::Pending => break,
                        };
                        match frame {
                            Some(Ok(data)) => data,
                            Some(Err(e)) => {
                                end = Some(End::Bad(e));
                                break;
                            }
                            None => {
                                end = Some(End::Closed);
                                break;
                            }
                        }
                    }
                },
            };
            // Over its message rate, the peer waits here: its stream is not read
            // meanwhile, so its window fills and it stops sending. Nothing is dropped.
            if let Some(limiter) = &limiter
                && !limiter.try_acquire()
            {
                if !batch.is_empty() {
                    held = Some(data);
                    break;
                }
                acks.offer(reader.get_mut(), delivered).await;
                limiter.acquire().await;
            }
            bytes += data.len() as u64;
            batch.push_back(Event::Message {
                peer_id: peer,
                protocol: route.protocol,
                data,
            });
        }
        route.metrics.messages_in.inc_by(batch.len() as u64);
        route.metrics.bytes_in.inc_by(bytes);
        while !batch.is_empty() {
            match queue.try_push_many(&mut batch) {
                Ok(0) => {
                    // The application is behind: acknowledge what it has, then wait for
                    // room.
                    acks.offer(reader.get_mut(), delivered).await;
                    if queue.room().await.is_err() {
                        return;
                    }
                }
                Ok(moved) => delivered += moved as u64,
                Err(QueueClosed) => return,
            }
        }
        if delivered - acks.encoded >= ACK_EVERY {
            acks.offer(reader.get_mut(), delivered).await;
        }
        match end {
            None => {}
            Some(End::Closed) => {
                // The last count goes out ahead of our FIN (a plain drop would reset
                // the substream and discard it), without waiting for a sender that does
                // not read.
                acks.offer(reader.get_mut(), delivered).await;
                let _ = reader.get_mut().shutdown().now_or_never();
                return;
            }
            Some(End::Bad(e)) => {
                route.metrics.decode_failures.inc();
                debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "bad DirectSend stream; closing it");
                if let FramingError::TooLarge { .. } = e {
                    shared.report(peer, Misbehaviour::OversizedMessage);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::task::Context;

    use super::*;

    /// A writer that takes at most `room` bytes per call, and nothing (pending) when
    /// `room` is zero; it keeps what it took.
    struct Tight {
        room: usize,
        taken: Vec<u8>,
    }

    impl AsyncWrite for Tight {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.room == 0 {
                return Poll::Pending;
            }
            let n = data.len().min(self.room);
            self.taken.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn decode_all(wire: &[u8]) -> Vec<u64> {
        let mut codec = MessageCodec::new(MAX_ACK_SIZE);
        let mut buf = BytesMut::from(wire);
        let mut counts = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap_or(None) {
            counts.push(DirectSendAck::decode(frame).map_or(u64::MAX, |a| a.delivered));
        }
        assert!(buf.is_empty(), "a torn acknowledgement");
        counts
    }

    #[tokio::test]
    async fn an_unread_acknowledgement_never_blocks_and_the_latest_count_follows_it() {
        let mut io = Tight {
            room: 0,
            taken: Vec::new(),
        };
        let mut acks = AckWriter::new();
        // Nothing is taken: the reader is not held up.
        acks.offer(&mut io, 5).await;
        acks.offer(&mut io, 9).await;
        assert!(io.taken.is_empty());
        // Three bytes at a time: the pending count (5) goes out whole first, then the
        // newest (12); the count 9 was superseded while it waited.
        io.room = 3;
        for _ in 0..10 {
            acks.offer(&mut io, 12).await;
        }
        assert_eq!(decode_all(&io.taken), vec![5, 12]);
        // Nothing new to acknowledge: nothing is written.
        let before = io.taken.len();
        acks.offer(&mut io, 12).await;
        assert_eq!(io.taken.len(), before);
    }

    #[tokio::test]
    async fn acknowledgements_fit_the_frame_limit() {
        let mut io = Tight {
            room: usize::MAX,
            taken: Vec::new(),
        };
        let mut acks = AckWriter::new();
        acks.offer(&mut io, u64::MAX).await;
        assert_eq!(decode_all(&io.taken), vec![u64::MAX]);
    }
}
