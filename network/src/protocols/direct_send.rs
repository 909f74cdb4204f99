//! DirectSend: one long-lived substream per (peer, protocol) carrying one-way,
//! length-delimited messages, and acknowledgements the other way.
//!
//! Outbound, each (peer, protocol) has a bounded queue, its [`Outbox`], drained by one
//! writer task, which opens the substream on the first message, writes everything
//! queued and flushes once per batch. `send_to` encodes a small message straight into
//! the outbox's packed buffer, so the writer takes runs of frames ready for the wire,
//! not one buffer per message. When the queue is full the new message is dropped and
//! counted (the sender learns it from `SendError::QueueFull`): the messages already
//! queued are older and were accepted first. Inbound, one reader task per substream
//! pushes the frames it read into the application's fair queue, as they came off the
//! wire, waiting while that peer's queue is full, so a flooding peer is slowed by reading
//! less rather than by losing messages; the application's side splits them into events.
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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use netcore::PeerId;
use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::Negotiated;
use parking_lot::Mutex;
use prometheus::IntGauge;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Encoder, FramedRead};
use tracing::debug;

use super::open_substream;
use crate::channel::QueueError;
use crate::error::SendError;
use crate::interface::{Event, Queued};
use crate::protocol_id::ProtocolId;
use crate::rate_limit::MessageLimiter;
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Route, Shared};

/// Small messages are packed into runs of about this many bytes (each run one write to
/// the substream); this is also the size of each packing buffer an outbox allocates.
const WRITE_CHUNK: usize = 16 * 1024;

/// A message of up to this many bytes is copied into its outbox's packed run by
/// `send_to`; a larger one is queued as its own buffer (only its prefix is packed), so
/// no large copy happens under the outbox's lock.
const PACK_MAX: usize = 4 * 1024;

/// The outbound depth gauge (`direct_send_outbound`) is moved in steps of this many
/// messages per queue, not one atomic update per message on a gauge every sender
/// shares: it is exact when the writers have taken everything and lower than the truth
/// by less than this per (peer, protocol) while messages wait.
const DEPTH_STEP: usize = 16;

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
    // Capped at the length prefix's range, as `MessageCodec` caps it: the outbox
    // writes the prefix of an accepted message without another check.
    let max = shared.config.max_message_size.min(u32::MAX as usize);
    if msg.len() > max {
        return Err(SendError::TooLarge {
            len: msg.len(),
            max,
        });
    }
    let msg = match LastOutbox::push(shared, peer, protocol, msg) {
        Ok(waker) => {
            if let Some(w) = waker {
                w.wake();
            }
            return Ok(());
        }
        Err(NotKept::Full(route)) => {
            if let Some(route) = shared.routes.get(route) {
                route.metrics.queue_drops.inc();
            }
            return Err(SendError::QueueFull);
        }
        Err(NotKept::Miss(msg)) => msg,
    };
    // Everything below is done under the peers' read lock, which nothing holds for
    // long: no lookup result is cloned out of it.
    let peers = shared.peers.read();
    let handle = peers.get(&peer).ok_or(SendError::NotConnected(peer))?;
    let (index, route) = shared
        .route_index(protocol)
        .ok_or(SendError::UnregisteredProtocol(protocol))?;
    let queue = handle.direct_send[index].get_or_init(|| spawn_writer(shared, handle, route));
    LastOutbox::looked_up(shared, peer, protocol, index, queue);
    finish(push_to(&queue.shared, msg), route, peer)
}

/// What `send_to` returns for a push's outcome, counting a full queue's drop.
fn finish(
    pushed: Result<Option<Waker>, QueueError<Bytes>>,
    route: &Route,
    peer: PeerId,
) -> Result<(), SendError> {
    match pushed {
        Ok(waker) => {
            if let Some(w) = waker {
                w.wake();
            }
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

thread_local! {
    /// The queue this thread's `send_to` calls went to last; see [`LastOutbox`].
    static LAST_OUTBOX: RefCell<LastOutbox> = const { RefCell::new(LastOutbox::Empty) };
}

/// A thread's memory of its last `send_to`, so that a run of messages to one (peer,
/// protocol) (a stream of proposals or votes to one validator, a benchmark) goes
/// straight to its queue, without the peer table's lock and lookup. It is kept from the
/// second lookup of the same (node, peer, protocol) in a row on: a loop over many peers
/// (a broadcast) costs it one comparison per message and no reference counting. A
/// queue closed with its connection is never used: the call goes through the table.
enum LastOutbox {
    Empty,
    /// Looked up once: the node (by address, only compared), peer and protocol.
    Seen(usize, PeerId, ProtocolId),
    /// Looked up twice in a row: the queue, and its route's index.
    Kept {
        /// The node; a weak reference, so its address is not reused by another node.
        node: Weak<Shared>,
        peer: PeerId,
        protocol: ProtocolId,
        route: usize,
        queue: OutboxShared,
    },
}

/// Why [`LastOutbox::push`] did not queue a message.
enum NotKept {
    /// The kept queue is full; the index of its route.
    Full(usize),
    /// No live queue of (peer, protocol) is kept: look it up.
    Miss(Bytes),
}

impl LastOutbox {
    /// Pushes `msg` to the kept queue if it is (peer, protocol)'s of this node and
    /// open; returns the writer's waker, to wake.
    fn push(
        shared: &Arc<Shared>,
        peer: PeerId,
        protocol: ProtocolId,
        msg: Bytes,
    ) -> Result<Option<Waker>, NotKept> {
        let mut msg = Some(msg);
        let pushed = LAST_OUTBOX.try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            let LastOutbox::Kept {
                node,
                peer: kept_peer,
                protocol: kept_protocol,
                route,
                queue,
            } = &*last
            else {
                return None;
            };
            if node.as_ptr() != Arc::as_ptr(shared)
                || *kept_peer != peer
                || *kept_protocol != protocol
            {
                return None;
            }
            let route = *route;
            Some(match push_to(queue, msg.take()?) {
                Ok(waker) => Ok(waker),
                Err(QueueError::Full(_)) => Err(NotKept::Full(route)),
                Err(QueueError::Closed(msg)) => {
                    *last = LastOutbox::Empty;
                    Err(NotKept::Miss(msg))
                }
            })
        });
        match (pushed, msg) {
            (Ok(Some(pushed)), _) => pushed,
            // Not kept (or the thread is exiting): `msg` was not taken.
            (_, Some(msg)) => Err(NotKept::Miss(msg)),
            // Not reached: the message is taken only to be pushed, which gives an
            // outcome.
            (_, None) => Ok(None),
        }
    }

    /// Records a lookup of (peer, protocol)'s queue, keeping the queue if the last
    /// lookup on this thread was the same.
    fn looked_up(
        shared: &Arc<Shared>,
        peer: PeerId,
        protocol: ProtocolId,
        route: usize,
        queue: &Outbox,
    ) {
        let node = Arc::as_ptr(shared) as usize;
        let _ = LAST_OUTBOX.try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return;
            };
            *last = match &*last {
                LastOutbox::Seen(n, p, pr) if (*n, *p, *pr) == (node, peer, protocol) => {
                    LastOutbox::Kept {
                        node: Arc::downgrade(shared),
                        peer,
                        protocol,
                        route,
                        queue: Arc::clone(&queue.shared),
                    }
                }
                _ => LastOutbox::Seen(node, peer, protocol),
            };
        });
    }
}

/// The state an [`Outbox`] shares with its writer.
struct OutboxState {
    /// Encoded messages ready to write, in order: packed runs of small messages, and
    /// large messages in their own buffers (each after a run ending with its prefix).
    runs: VecDeque<Bytes>,
    /// The run being packed, after `runs`.
    packing: BytesMut,
    /// Messages queued, and their payload bytes.
    messages: usize,
    bytes: u64,
    /// Of `messages`, those counted in the depth gauge.
    reported: usize,
    capacity: usize,
    depth: IntGauge,
    /// The writer, waiting for messages.
    waker: Option<Waker>,
    /// The writer or the peer's handle is gone: no more messages are accepted.
    closed: bool,
}

type OutboxShared = Arc<Mutex<OutboxState>>;

/// The queue of one (peer, protocol): at most `capacity` messages, encoded as they are
/// queued. Dropping it closes the queue: the writer takes what is left, then ends.
pub(crate) struct Outbox {
    shared: OutboxShared,
}

/// What a writer took from its outbox at once.
struct Taken {
    /// Wire bytes, in order.
    runs: Vec<Bytes>,
    messages: usize,
    bytes: u64,
}

/// The writer's side of an [`Outbox`]; dropping it closes the queue.
struct OutboxReader {
    shared: OutboxShared,
}

/// Creates an outbox of `capacity` messages and its writer's side.
fn outbox(capacity: usize, depth: IntGauge) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Mutex::new(OutboxState {
        runs: VecDeque::new(),
        packing: BytesMut::new(),
        messages: 0,
        bytes: 0,
        reported: 0,
        capacity: capacity.max(1),
        depth,
        waker: None,
        closed: false,
    }));
    (
        Outbox {
            shared: Arc::clone(&shared),
        },
        OutboxReader { shared },
    )
}

/// Queues `msg` (within the maximum message size, checked by the caller) in an outbox
/// if there is room; never waits. Returns the writer's waker, to wake once the lock is
/// released.
fn push_to(shared: &OutboxShared, msg: Bytes) -> Result<Option<Waker>, QueueError<Bytes>> {
    let len = msg.len();
    let mut guard = shared.lock();
    let state = &mut *guard;
    if state.closed {
        return Err(QueueError::Closed(msg));
    }
    if state.messages >= state.capacity {
        return Err(QueueError::Full(msg));
    }
    let packed = len <= PACK_MAX;
    let need = LENGTH_FIELD_BYTES + if packed { len } else { 0 };
    if state.packing.capacity() - state.packing.len() < need {
        if !state.packing.is_empty() {
            state.runs.push_back(state.packing.split().freeze());
        }
        state.packing.reserve(WRITE_CHUNK);
    }
    // The length passed the maximum message size, which fits the prefix.
    state.packing.extend_from_slice(&(len as u32).to_be_bytes());
    if packed {
        state.packing.extend_from_slice(&msg);
        if state.packing.len() >= WRITE_CHUNK {
            state.runs.push_back(state.packing.split().freeze());
        }
    } else {
        state.runs.push_back(state.packing.split().freeze());
        state.runs.push_back(msg);
    }
    state.messages += 1;
    state.bytes += len as u64;
    if state.messages - state.reported >= DEPTH_STEP {
        state.depth.add((state.messages - state.reported) as i64);
        state.reported = state.messages;
    }
    Ok(state.waker.take())
}

impl Outbox {
    /// Closes the queue: later messages are refused (`send_to` then looks the peer up
    /// again), and the writer takes what is queued, then ends. Done when the connection
    /// leaves the peer table, so that no thread's kept queue outlives it there.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl OutboxState {
    /// Takes the messages counted in the depth gauge out of it.
    fn unreport(&mut self) {
        self.depth.sub(self.reported as i64);
        self.reported = 0;
    }
}

impl OutboxReader {
    /// Waits for messages and takes everything queued into `into` (emptied first);
    /// `false` once the queue is closed and empty. Cancel-safe: nothing is taken
    /// unless it returns.
    async fn take(&mut self, into: &mut Taken) -> bool {
        into.runs.clear();
        std::future::poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if state.messages == 0 {
                if state.closed {
                    return Poll::Ready(false);
                }
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            into.runs.extend(state.runs.drain(..));
            if !state.packing.is_empty() {
                into.runs.push(state.packing.split().freeze());
            }
            into.messages = std::mem::take(&mut state.messages);
            into.bytes = std::mem::take(&mut state.bytes);
            state.unreport();
            Poll::Ready(true)
        })
        .await
    }

    /// Closes the queue and drops what it holds; returns how many messages that was.
    fn close_and_clear(&mut self) -> usize {
        let mut state = self.shared.lock();
        state.closed = true;
        state.runs.clear();
        state.packing = BytesMut::new();
        state.unreport();
        std::mem::take(&mut state.messages)
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        self.close_and_clear();
    }
}

/// Starts the writer task of (peer, protocol) and returns its queue.
fn spawn_writer(shared: &Arc<Shared>, handle: &PeerHandle, route: &Route) -> Outbox {
    let protocol = route.protocol;
    let (tx, rx) = outbox(
        shared.config.direct_send_queue_size,
        handle.direct_send_depth.clone(),
    );
    let writer = Writer {
        shared: Arc::downgrade(shared),
        peer: handle.metadata.peer_id,
        control: handle.control.clone(),
        remote_supports: handle.metadata.supports(protocol),
        protocol,
        route: route.clone(),
    };
    tokio::spawn(writer.run(rx));
    tx
}

/// An open outbound substream and what it has carried.
struct OutboundStream {
    /// Messages go out through `io.get_mut()`; acknowledgements come in through `io`
    /// (frames of at most [`MAX_ACK_SIZE`]).
    io: FramedRead<Negotiated<Substream>, MessageCodec>,
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

    /// Writes `runs` in order and flushes.
    async fn write_runs(&mut self, runs: &mut Vec<Bytes>) -> std::io::Result<()> {
        let io = self.io.get_mut();
        for run in runs.drain(..) {
            io.write_all(&run).await?;
        }
        io.flush().await
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
    route: Route,
}

impl Writer {
    /// Holds `misbehaviour` against the receiver, while the node runs.
    fn report(&self, misbehaviour: Misbehaviour) {
        if let Some(shared) = self.shared.upgrade() {
            shared.report(self.peer, misbehaviour);
        }
    }

    /// Runs until the queue closes (when the connection leaves the peer table, or its
    /// handle is dropped) and what it held is written.
    async fn run(self, mut queue: OutboxReader) {
        let mut stream: Option<OutboundStream> = None;
        let mut batch = Taken {
            runs: Vec::new(),
            messages: 0,
            bytes: 0,
        };
        loop {
            let taken = match stream.as_mut() {
                None => queue.take(&mut batch).await,
                // Acknowledgements are read while the queue is empty; under load they
                // wait in the substream's buffer, where the latest supersedes the rest.
                Some(s) => tokio::select! {
                    biased;
                    taken = queue.take(&mut batch) => taken,
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
            if !taken {
                break;
            }
            if stream.is_none() {
                match open_substream(&self.control, self.remote_supports, self.protocol).await {
                    Ok(io) => {
                        stream = Some(OutboundStream {
                            io: FramedRead::new(io, MessageCodec::new(MAX_ACK_SIZE)),
                            written: 0,
                            acked: 0,
                        });
                    }
                    Err(e) => {
                        debug!(protocol = %self.protocol, error = ?e, "DirectSend substream failed to open");
                        self.route
                            .metrics
                            .stream_drops
                            .inc_by(batch.messages as u64);
                        batch.runs.clear();
                        if self.control.is_closed() {
                            self.drop_queued(&mut queue);
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            let count = batch.messages as u64;
            // Counted as written before the write: if the substream fails part way, the
            // receiver may still acknowledge some of the batch, and what it does not is
            // counted as unconfirmed.
            s.written += count;
            self.route.metrics.messages_out.inc_by(count);
            self.route.metrics.bytes_out.inc_by(batch.bytes);
            let sent = s.write_runs(&mut batch.runs).await;
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
        }
        if let Some(mut s) = stream {
            let _ = s.io.get_mut().shutdown().await;
            self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
        }
    }

    /// The connection is gone: closes the queue and counts what it still holds as
    /// dropped, so every accepted message is delivered or counted.
    fn drop_queued(&self, queue: &mut OutboxReader) {
        let dropped = queue.close_and_clear();
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

/// Messages read from one DirectSend substream, in the application's queue: whole
/// frames back to back, as they came off the wire, checked by the reader (each within
/// the maximum size), and split into events without copying when the application takes
/// them. One buffer moves between the tasks rather than an event per message.
pub(crate) struct MessageBatch {
    peer_id: PeerId,
    protocol: ProtocolId,
    frames: Bytes,
    /// Messages left in `frames`.
    len: usize,
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
struct Scan {
    /// Whole frames at its front, admitted for delivery.
    count: usize,
    /// Their bytes, prefixes included.
    end: usize,
    /// Their messages' bytes.
    payload: u64,
    /// The next frame is over the maximum size.
    failure: Option<FramingError>,
    /// The rate limiter refused the next whole frame.
    limited: bool,
    /// The next frame's length (prefix included), when its prefix has arrived.
    next_len: Option<usize>,
}

/// Counts the whole frames at the front of `buf` to deliver in one batch: at most
/// `limit` messages and about [`DELIVER_BATCH_BYTES`], each admitted by `limiter`
/// (the first without asking it when `admitted`: the reader waited for its permit).
fn scan(
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
    shared: &Shared,
    handle: Arc<PeerHandle>,
    route: &Route,
    mut io: Negotiated<Substream>,
) {
    let peer = handle.metadata.peer_id;
    let codec = MessageCodec::new(shared.config.max_message_size);
    let limiter = handle.message_limiter.clone();
    // Release the handle: a long-lived reader must not keep a closed peer's state alive.
    drop(handle);
    let queue = shared.apps[route.app].slot((peer, Some(route.protocol)));
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
                shared.report(peer, Misbehaviour::OversizedMessage);
            }
        }
        End::Failed(e) => {
            debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "DirectSend substream failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::task::Context;

    use tokio_util::codec::Decoder;

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

    fn frames_of(messages: &[&[u8]]) -> BytesMut {
        let codec = MessageCodec::new(1 << 20);
        let mut wire = BytesMut::new();
        for m in messages {
            codec.write_prefix(m.len(), &mut wire).unwrap();
            wire.extend_from_slice(m);
        }
        wire
    }

    fn depth() -> IntGauge {
        IntGauge::new("depth", "test").unwrap()
    }

    /// Everything a writer would take now, as the bytes it writes.
    async fn take_all(reader: &mut OutboxReader) -> (Vec<Bytes>, usize, u64) {
        let mut taken = Taken {
            runs: Vec::new(),
            messages: 0,
            bytes: 0,
        };
        assert!(reader.take(&mut taken).await);
        (taken.runs, taken.messages, taken.bytes)
    }

    #[tokio::test]
    async fn an_outbox_packs_small_messages_and_keeps_large_ones_whole() {
        let (outbox, mut reader) = outbox(100, depth());
        let large = Bytes::from(vec![9u8; PACK_MAX + 1]);
        let small: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 32])).collect();
        for m in [&small[0], &small[1], &large, &small[2]] {
            push_to(&outbox.shared, m.clone()).unwrap();
        }
        let (runs, messages, bytes) = take_all(&mut reader).await;
        assert_eq!(messages, 4);
        assert_eq!(bytes, 3 * 32 + large.len() as u64);
        // Two small frames and the large one's prefix in one run, the large message
        // itself not copied, then the last small frame.
        assert_eq!(runs.len(), 3);
        assert_eq!(
            runs[1].as_ptr(),
            large.as_ptr(),
            "a large message is not copied"
        );
        let wire: Vec<u8> = runs.iter().flat_map(|r| r.iter().copied()).collect();
        let expected = frames_of(&[&small[0], &small[1], &large, &small[2]]);
        assert_eq!(wire, &expected[..]);
    }

    #[tokio::test]
    async fn an_outbox_cuts_runs_at_the_write_chunk() {
        let (outbox, mut reader) = outbox(10_000, depth());
        let msg = Bytes::from(vec![1u8; 1000]);
        for _ in 0..40 {
            push_to(&outbox.shared, msg.clone()).unwrap();
        }
        let (runs, messages, _) = take_all(&mut reader).await;
        assert_eq!(messages, 40);
        assert!(runs.iter().all(|r| r.len() <= WRITE_CHUNK + PACK_MAX + 4));
        assert_eq!(runs.iter().map(Bytes::len).sum::<usize>(), 40 * 1004);
        assert!(runs.len() >= 2, "40 KB is more than one run");
    }

    #[tokio::test]
    async fn an_outbox_refuses_past_capacity_and_moves_its_gauge_in_steps() {
        let gauge = depth();
        let (outbox, mut reader) = outbox(DEPTH_STEP * 2 + 3, gauge.clone());
        for _ in 0..DEPTH_STEP - 1 {
            push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
        }
        assert_eq!(gauge.get(), 0, "below one step, nothing is reported");
        for _ in 0..DEPTH_STEP + 4 {
            push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
        }
        assert_eq!(gauge.get(), DEPTH_STEP as i64 * 2);
        assert!(matches!(
            push_to(&outbox.shared, Bytes::from_static(b"x")),
            Err(QueueError::Full(_))
        ));
        let (_, messages, _) = take_all(&mut reader).await;
        assert_eq!(messages, DEPTH_STEP * 2 + 3);
        assert_eq!(gauge.get(), 0, "exact once the writer took everything");
        // Closing drops and counts what is left; the gauge ends at zero.
        for _ in 0..DEPTH_STEP {
            push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
        }
        assert_eq!(reader.close_and_clear(), DEPTH_STEP);
        assert_eq!(gauge.get(), 0);
        assert!(matches!(
            push_to(&outbox.shared, Bytes::from_static(b"m")),
            Err(QueueError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_dropped_outbox_hands_over_what_it_holds_then_ends() {
        let (outbox, mut reader) = outbox(10, depth());
        push_to(&outbox.shared, Bytes::from_static(b"last")).unwrap();
        drop(outbox);
        let (runs, messages, _) = take_all(&mut reader).await;
        assert_eq!(
            (runs.concat(), messages),
            (frames_of(&[b"last"]).to_vec(), 1)
        );
        let mut taken = Taken {
            runs: Vec::new(),
            messages: 0,
            bytes: 0,
        };
        assert!(!reader.take(&mut taken).await, "closed and empty");
    }

    #[test]
    fn a_scan_stops_at_its_limits_and_at_a_frame_not_yet_whole() {
        let codec = MessageCodec::new(64);
        let wire = frames_of(&[b"aa", b"bbb", b"c", b"dddd"]);
        let found = scan(&codec, &wire, 2, None, false);
        assert_eq!((found.count, found.end, found.payload), (2, 13, 5));
        // The last frame lacks a byte: its length is known, it is not counted.
        let found = scan(&codec, &wire[..wire.len() - 1], 10, None, false);
        assert_eq!((found.count, found.next_len), (3, Some(8)));
        assert!(found.failure.is_none() && !found.limited);
        // A frame over the maximum ends the scan with the frames before it counted.
        let mut bad = frames_of(&[b"ok"]);
        bad.extend_from_slice(&[0, 0, 1, 0]);
        let found = scan(&codec, &bad, 10, None, false);
        assert_eq!(found.count, 1);
        assert!(matches!(
            found.failure,
            Some(FramingError::TooLarge { len: 256, max: 64 })
        ));
        // The byte budget: a batch stops once it holds that many payload bytes.
        let big = vec![0u8; DELIVER_BATCH_BYTES as usize];
        let wire = frames_of(&[&big, b"next"]);
        let found = scan(&MessageCodec::new(1 << 20), &wire, 10, None, false);
        assert_eq!(found.count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scan_admits_what_the_rate_limiter_allows() {
        let codec = MessageCodec::new(64);
        let wire = frames_of(&[b"1", b"2", b"3", b"4"]);
        let limiter = MessageLimiter::new(
            crate::rate_limit::Rate {
                per_second: 1,
                burst: 2,
            },
            prometheus::IntCounter::new("waits", "test").unwrap(),
        );
        let found = scan(&codec, &wire, 10, Some(&limiter), false);
        assert_eq!((found.count, found.limited), (2, true));
        let found = scan(&codec, &wire[found.end..], 10, Some(&limiter), false);
        assert_eq!((found.count, found.limited), (0, true));
        // A frame whose permit the reader waited for is admitted without asking again.
        let found = scan(&codec, &wire[10..], 10, Some(&limiter), true);
        assert_eq!((found.count, found.limited), (1, true));
    }

    #[test]
    fn a_message_batch_hands_out_its_frames_in_order_without_copying() {
        let peer = PeerId::new([7; 32]);
        let protocol = ProtocolId::new("/test/1");
        let frames = frames_of(&[b"one", b"", b"three"]).freeze();
        let base = frames.as_ptr() as usize;
        let mut batch = MessageBatch {
            peer_id: peer,
            protocol,
            frames,
            len: 3,
        };
        let mut got = Vec::new();
        while let Some(event) = batch.next_event() {
            let Event::Message {
                peer_id,
                protocol: p,
                data,
            } = event
            else {
                panic!("not a message");
            };
            assert_eq!((peer_id, p), (peer, protocol));
            let at = data.as_ptr() as usize;
            assert!(
                data.is_empty() || (base..base + 20).contains(&at),
                "a slice of the batch"
            );
            got.push(data);
        }
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(batch.len(), 0);
    }

    #[test]
    fn a_message_batch_splits_between_its_frames() {
        let frames = frames_of(&[b"a", b"bb", b"ccc"]).freeze();
        let mut rest = MessageBatch {
            peer_id: PeerId::new([1; 32]),
            protocol: ProtocolId::new("/test/1"),
            frames,
            len: 3,
        };
        assert!(rest.split_off(3).is_none(), "all of it is no split");
        assert!(rest.split_off(0).is_none());
        let mut head = rest.split_off(2).unwrap();
        assert_eq!((head.len(), rest.len()), (2, 1));
        let data = |b: &mut MessageBatch| match b.next_event() {
            Some(Event::Message { data, .. }) => data,
            other => panic!("{other:?}"),
        };
        assert_eq!(data(&mut head), &b"a"[..]);
        assert_eq!(data(&mut head), &b"bb"[..]);
        assert!(head.next_event().is_none());
        assert_eq!(data(&mut rest), &b"ccc"[..]);
    }
}
