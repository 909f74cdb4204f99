//! The outbound queue of one (peer, protocol), its writer's side, and each thread's
//! memory of the last queue it sent to.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use bytes::Bytes;
use netcore::PeerId;
use parking_lot::Mutex;
use prometheus::IntGauge;
use tokio::sync::oneshot;

use super::DEPTH_STEP;
use super::core::Packer;
use crate::channel::QueueError;
use crate::protocol_id::ProtocolId;
use crate::protocols::Protocols;

thread_local! {
    /// The queue this thread's `send_to` calls went to last; see [`OutboxCache`].
    static OUTBOX_CACHE: RefCell<OutboxCache> = const { RefCell::new(OutboxCache::Empty) };
}

/// A thread's memory of its last `send_to`, so that a run of messages to one (peer,
/// protocol) (a stream of proposals or votes to one validator, a benchmark) goes
/// straight to its queue, without the peer table's lock and lookup. It is kept from the
/// second lookup of the same (node, peer, protocol) in a row on: a loop over many peers
/// (a broadcast) costs it one comparison per message and no reference counting. A
/// queue closed with its connection is never used: the call goes through the table.
pub(super) enum OutboxCache {
    Empty,
    /// Looked up once: the node (by address, only compared), peer and protocol.
    LookedUpOnce(usize, PeerId, ProtocolId),
    /// Looked up twice in a row: the queue, and its route's index.
    Cached {
        /// The node; a weak reference, so its address is not reused by another node.
        node: Weak<Protocols>,
        peer: PeerId,
        protocol: ProtocolId,
        route: usize,
        queue: OutboxShared,
    },
}

/// Why [`OutboxCache::push`] did not queue a message.
pub(super) enum NotPushed {
    /// The cached queue is full; the index of its route.
    Full(usize),
    /// No live queue of (peer, protocol) is cached: look it up.
    Uncached(Bytes),
}

impl OutboxCache {
    /// Pushes `msg` to the cached queue if it is (peer, protocol)'s of this node and
    /// open; returns the writer's waker, to wake.
    pub(super) fn push(
        protocols: &Arc<Protocols>,
        peer: PeerId,
        protocol: ProtocolId,
        msg: Bytes,
    ) -> Result<Option<Waker>, NotPushed> {
        let mut msg = Some(msg);
        let pushed = OUTBOX_CACHE.try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            let OutboxCache::Cached {
                node,
                peer: kept_peer,
                protocol: kept_protocol,
                route,
                queue,
            } = &*last
            else {
                return None;
            };
            if node.as_ptr() != Arc::as_ptr(protocols)
                || *kept_peer != peer
                || *kept_protocol != protocol
            {
                return None;
            }
            let route = *route;
            Some(match push_to(queue, msg.take()?) {
                Ok(waker) => Ok(waker),
                Err(QueueError::Full(_)) => Err(NotPushed::Full(route)),
                Err(QueueError::Closed(msg)) => {
                    *last = OutboxCache::Empty;
                    Err(NotPushed::Uncached(msg))
                }
            })
        });
        match (pushed, msg) {
            (Ok(Some(pushed)), _) => pushed,
            // Not cached (or the thread is exiting): `msg` was not taken.
            (_, Some(msg)) => Err(NotPushed::Uncached(msg)),
            // Not reached: the message is taken only to be pushed, which gives an
            // outcome.
            (_, None) => Ok(None),
        }
    }

    /// Records a lookup of (peer, protocol)'s queue, keeping the queue if the last
    /// lookup on this thread was the same.
    pub(super) fn looked_up(
        protocols: &Arc<Protocols>,
        peer: PeerId,
        protocol: ProtocolId,
        route: usize,
        queue: &Outbox,
    ) {
        let node = Arc::as_ptr(protocols) as usize;
        let _ = OUTBOX_CACHE.try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return;
            };
            *last = match &*last {
                OutboxCache::LookedUpOnce(n, p, pr) if (*n, *p, *pr) == (node, peer, protocol) => {
                    OutboxCache::Cached {
                        node: Arc::downgrade(protocols),
                        peer,
                        protocol,
                        route,
                        queue: Arc::clone(&queue.shared),
                    }
                }
                _ => OutboxCache::LookedUpOnce(node, peer, protocol),
            };
        });
    }
}

/// The state an [`Outbox`] shares with its writer: the messages, encoded, and what
/// the lock guards around them (the bound, the writer's waker, the depth gauge).
pub(super) struct OutboxState {
    /// The messages queued, as the wire bytes the writer takes.
    packer: Packer,
    /// Of the messages queued, those counted in the depth gauge.
    reported: usize,
    capacity: usize,
    depth: IntGauge,
    /// The writer, waiting for messages.
    waker: Option<Waker>,
    /// The writer or the peer's handle is gone: no more messages are accepted.
    closed: bool,
    /// Messages ever queued, and ever taken by the writer: a message's sequence number
    /// is the count queued before it.
    pushed: u64,
    taken: u64,
    /// Callers waiting to learn that their message went to the socket, by the
    /// message's sequence number, in order (see [`push_tracked`]).
    marks: VecDeque<(u64, oneshot::Sender<()>)>,
}

pub(super) type OutboxShared = Arc<Mutex<OutboxState>>;

/// The queue of one (peer, protocol): at most `capacity` messages, encoded as they are
/// queued. Dropping it closes the queue: the writer takes what is left, then ends.
pub(crate) struct Outbox {
    pub(super) shared: OutboxShared,
}

/// What a writer took from its outbox at once.
pub(super) struct Taken {
    /// Wire bytes, in order.
    pub(super) runs: Vec<Bytes>,
    pub(super) messages: usize,
    pub(super) bytes: u64,
    /// The sequence number after the last message taken.
    pub(super) end: u64,
    /// A caller waits to learn when one of these messages went to the socket.
    pub(super) marked: bool,
}

impl Taken {
    /// Nothing taken yet.
    pub(super) fn new() -> Self {
        Self {
            runs: Vec::new(),
            messages: 0,
            bytes: 0,
            end: 0,
            marked: false,
        }
    }
}

/// The writer's side of an [`Outbox`]; dropping it closes the queue.
pub(super) struct OutboxReader {
    shared: OutboxShared,
}

/// Creates an outbox of `capacity` messages and its writer's side.
pub(super) fn outbox(capacity: usize, depth: IntGauge) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Mutex::new(OutboxState {
        packer: Packer::new(),
        reported: 0,
        capacity: capacity.max(1),
        depth,
        waker: None,
        closed: false,
        pushed: 0,
        taken: 0,
        marks: VecDeque::new(),
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
pub(super) fn push_to(
    shared: &OutboxShared,
    msg: Bytes,
) -> Result<Option<Waker>, QueueError<Bytes>> {
    push_locked(&mut shared.lock(), msg)
}

/// The body of [`push_to`] under the lock; inlined into its two callers, `send_to`'s
/// hot path among them.
#[inline(always)]
fn push_locked(state: &mut OutboxState, msg: Bytes) -> Result<Option<Waker>, QueueError<Bytes>> {
    if state.closed {
        return Err(QueueError::Closed(msg));
    }
    if state.packer.messages() >= state.capacity {
        return Err(QueueError::Full(msg));
    }
    state.packer.push(msg);
    state.pushed += 1;
    let queued = state.packer.messages();
    if queued - state.reported >= DEPTH_STEP {
        state.depth.add((queued - state.reported) as i64);
        state.reported = queued;
    }
    Ok(state.waker.take())
}

/// As [`push_to`], and returns a receiver told when the message's last byte has been
/// taken by the connection for the socket (see `Substream::poll_sent`); it is dropped
/// unsent if the message is.
pub(super) fn push_tracked(
    shared: &OutboxShared,
    msg: Bytes,
) -> Result<(Option<Waker>, oneshot::Receiver<()>), QueueError<Bytes>> {
    let mut state = shared.lock();
    let waker = push_locked(&mut state, msg)?;
    let (tx, rx) = oneshot::channel();
    let seq = state.pushed - 1;
    state.marks.push_back((seq, tx));
    Ok((waker, rx))
}

impl Outbox {
    /// Closes the queue: later messages are refused (`send_to` then looks the peer up
    /// again), and the writer takes what is queued, then ends. Done when the connection
    /// leaves the peer table, so that no thread's cached queue outlives it there.
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
    pub(super) async fn take(&mut self, into: &mut Taken) -> bool {
        into.runs.clear();
        std::future::poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if state.packer.is_empty() {
                if state.closed {
                    return Poll::Ready(false);
                }
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let taken = state.packer.take_into(&mut into.runs);
            into.messages = taken.messages;
            into.bytes = taken.bytes;
            state.taken += taken.messages as u64;
            into.end = state.taken;
            into.marked = state.marks.front().is_some_and(|(seq, _)| *seq < into.end);
            state.unreport();
            Poll::Ready(true)
        })
        .await
    }

    /// Tells the callers of messages before `end` that they were sent, if `sent`;
    /// drops their receipts otherwise (their messages were lost with the substream).
    pub(super) fn settle_marks(&mut self, end: u64, sent: bool) {
        let mut settled = Vec::new();
        {
            let mut state = self.shared.lock();
            while state.marks.front().is_some_and(|(seq, _)| *seq < end) {
                settled.extend(state.marks.pop_front().map(|(_, tx)| tx));
            }
        }
        if sent {
            for tx in settled {
                let _ = tx.send(());
            }
        }
    }

    /// Closes the queue and drops what it holds; returns how many messages that was.
    pub(super) fn close_and_clear(&mut self) -> usize {
        let mut state = self.shared.lock();
        state.closed = true;
        state.unreport();
        state.marks.clear();
        state.packer.clear()
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        self.close_and_clear();
    }
}
