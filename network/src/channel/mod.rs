//! Bounded queues between tasks.
//!
//! - [`FairQueue`]: many producers, each pushing under a key (a peer, or a peer and a
//!   protocol), one consumer served round-robin across keys. Each key's queue is
//!   bounded by the [`Weighted::weight`] of its items (an item may stand for several
//!   messages); a producer whose queue is full waits (backpressure on that peer only), so
//!   a flooding peer fills its own queue and slows its own reader while every other key
//!   keeps being served. A producer that pushes many items under one key (a substream's
//!   reader) holds a [`SlotSender`], which pushes without looking its key up.
//! - [`metered`]: a tokio bounded channel whose depth is a prometheus gauge.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use prometheus::IntGauge;
use slab::Slab;

mod metered;
#[cfg(test)]
mod tests;

pub use metered::{MeteredReceiver, MeteredSender, metered};

/// The weight a [`FairQueue`]'s consumer takes from the queues under one lock, in
/// service order (at least one item, however heavy); the items are then handed out one
/// by one without locking. They have left their key's queue, so a key can have up to
/// this much weight, or one item, more in the node than its capacity. The depth gauge
/// counts them until the consumer takes its next batch: it is exact whenever the
/// consumer waits, and at most this much (or one item) over while it works.
pub const CONSUMER_BATCH: usize = 32;

/// The most weight a key is served per turn while other keys wait: a heavier item is
/// split (see [`Weighted::split_off`]) and its rest waits for the key's next turn, so a
/// peer's batch of messages delays another peer's by at most this many.
pub const TURN_WEIGHT: usize = 8;

/// What an item counts for in a [`FairQueue`]'s capacity and depth gauge: the messages
/// it carries (an event is one; a batch of messages from one substream is as many).
pub trait Weighted: Sized {
    /// The item's weight; at least 1.
    fn weight(&self) -> usize;

    /// Splits off the first `weight` of the item as an item of its own, leaving the
    /// rest; `None` if it cannot be split there (the default: items are whole).
    fn split_off(&mut self, weight: usize) -> Option<Self> {
        let _ = weight;
        None
    }
}

/// Emptied item queues a [`FairQueue`] keeps for reuse, and the largest capacity kept.
const SPARE_QUEUES: usize = 16;
const SPARE_QUEUE_CAPACITY: usize = 64;

/// Why an item could not be queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError<T> {
    /// The key's queue is at capacity.
    #[error("queue is full")]
    Full(T),
    /// The consumer is gone.
    #[error("queue is closed")]
    Closed(T),
}

/// The consumer of a [`FairQueue`] is gone, or a sender closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue is closed")]
pub struct QueueClosed;

struct Slot<K, T> {
    key: K,
    items: VecDeque<T>,
    /// The sum of `items`' weights: what the key's capacity bounds.
    queued: usize,
    /// Producers waiting for room in this key's queue.
    waiting: Vec<Waker>,
    /// Live [`SlotSender`]s of this key: the slot is kept while any is alive.
    handles: usize,
}

struct Inner<K, T> {
    slots: Slab<Slot<K, T>>,
    /// The slot of each key that has one.
    index: HashMap<K, usize, foldhash::fast::RandomState>,
    /// Slots with at least one item, in service order.
    ready: VecDeque<usize>,
    /// Emptied item queues of released slots, reused by new slots (a key that comes and
    /// goes with each request costs no allocation).
    spare: Vec<VecDeque<T>>,
    capacity: usize,
    receiver_waker: Option<Waker>,
    receiver_alive: bool,
    senders: usize,
    /// A sender closed the queue: no more items; the consumer drains what is queued.
    closed: bool,
    depth: IntGauge,
}

impl<K: Eq + Hash + Clone, T: Weighted> Inner<K, T> {
    fn is_open(&self) -> bool {
        self.receiver_alive && !self.closed
    }

    /// The weight queued under `key`.
    fn len_of(&self, key: &K) -> usize {
        self.index
            .get(key)
            .and_then(|&id| self.slots.get(id))
            .map_or(0, |s| s.queued)
    }

    /// The slot of `key`, created if it has none.
    fn slot_of(&mut self, key: &K) -> usize {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        let id = self.slots.insert(Slot {
            key: key.clone(),
            items: self.spare.pop().unwrap_or_default(),
            queued: 0,
            waiting: Vec::new(),
            handles: 0,
        });
        self.index.insert(key.clone(), id);
        id
    }

    fn push_one(&mut self, id: usize, item: T) {
        let slot = &mut self.slots[id];
        if slot.items.is_empty() {
            self.ready.push_back(id);
        }
        let weight = item.weight();
        slot.queued += weight;
        slot.items.push_back(item);
        self.depth.add(weight as i64);
        self.wake_receiver();
    }

    /// Shrinks slot `id`'s queue with `coalesce`, then by its oldest items, until at
    /// most `room` of weight is queued there.
    fn make_room(&mut self, id: usize, room: usize, coalesce: impl FnOnce(&mut VecDeque<T>)) {
        let slot = &mut self.slots[id];
        let before = slot.queued;
        coalesce(&mut slot.items);
        while slot.items.iter().map(Weighted::weight).sum::<usize>() > room {
            slot.items.pop_front();
        }
        slot.queued = slot.items.iter().map(Weighted::weight).sum();
        self.depth.sub((before - slot.queued) as i64);
        if slot.items.is_empty() {
            // Out of service order until its next item, as `push_one` expects.
            self.ready.retain(|&r| r != id);
        }
    }

    /// Takes the item at the front of slot `id`'s queue, waking the producers waiting
    /// for room in it.
    fn pop_front(&mut self, id: usize) -> Option<T> {
        let slot = self.slots.get_mut(id)?;
        let item = slot.items.pop_front()?;
        slot.queued -= item.weight();
        for w in slot.waiting.drain(..) {
            w.wake();
        }
        Some(item)
    }

    /// Takes at most `turn` of weight from the front of slot `id`'s queue: the front
    /// item, or its first part if it is heavier and splits (the rest stays in front).
    fn take_turn(&mut self, id: usize, turn: usize) -> Option<T> {
        let slot = self.slots.get_mut(id)?;
        let front = slot.items.front_mut()?;
        if front.weight() <= turn {
            return self.pop_front(id);
        }
        let Some(part) = front.split_off(turn) else {
            return self.pop_front(id);
        };
        slot.queued -= part.weight();
        for w in slot.waiting.drain(..) {
            w.wake();
        }
        Some(part)
    }

    fn wake_receiver(&mut self) {
        if let Some(w) = self.receiver_waker.take() {
            w.wake();
        }
    }

    /// Drops slot `id` if it holds nothing and no [`SlotSender`] refers to it, so that
    /// keys of departed peers cost nothing. Nobody waits on an empty slot: producers
    /// wait only for a full one.
    fn release_if_idle(&mut self, id: usize) {
        if self
            .slots
            .get(id)
            .is_some_and(|s| s.items.is_empty() && s.handles == 0)
        {
            let slot = self.slots.remove(id);
            self.index.remove(&slot.key);
            if self.spare.len() < SPARE_QUEUES && slot.items.capacity() <= SPARE_QUEUE_CAPACITY {
                self.spare.push(slot.items);
            }
        }
    }
}

type Shared<K, T> = Arc<Mutex<Inner<K, T>>>;

/// Whether an item of `weight` may join a key's queue holding `queued`: within the
/// capacity, or alone.
fn fits(queued: usize, weight: usize, capacity: usize) -> bool {
    queued == 0 || queued + weight <= capacity
}

fn lock<K, T>(shared: &Shared<K, T>) -> MutexGuard<'_, Inner<K, T>> {
    // No code path panics while holding this lock with the state half-updated.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a fair queue holding at most `capacity_per_key` items per key; `depth` tracks
/// the total number of queued items.
pub fn fair_queue<K, T>(
    capacity_per_key: usize,
    depth: IntGauge,
) -> (FairSender<K, T>, FairQueue<K, T>)
where
    K: Eq + Hash + Clone,
    T: Weighted,
{
    let shared = Arc::new(Mutex::new(Inner {
        slots: Slab::new(),
        index: HashMap::default(),
        ready: VecDeque::new(),
        spare: Vec::new(),
        capacity: capacity_per_key.max(1),
        receiver_waker: None,
        receiver_alive: true,
        closed: false,
        senders: 1,
        depth: depth.clone(),
    }));
    (
        FairSender {
            shared: Arc::clone(&shared),
        },
        FairQueue {
            shared,
            taken: VecDeque::new(),
            taken_weight: 0,
            handed_out: 0,
            depth,
        },
    )
}

/// The producing side of a [`FairQueue`]; cheap to clone.
pub struct FairSender<K, T> {
    shared: Shared<K, T>,
}

impl<K, T> Clone for FairSender<K, T> {
    fn clone(&self) -> Self {
        lock(&self.shared).senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, T> Drop for FairSender<K, T> {
    fn drop(&mut self) {
        let mut inner = lock(&self.shared);
        inner.senders -= 1;
        if inner.senders == 0
            && let Some(w) = inner.receiver_waker.take()
        {
            w.wake();
        }
    }
}

impl<K: Eq + Hash + Clone, T: Weighted> FairSender<K, T> {
    /// Closes the queue for every sender: later pushes fail with `Closed`, waiting
    /// producers give up, and the consumer's stream ends once it drained the queue.
    pub fn close(&self) {
        let mut inner = lock(&self.shared);
        inner.closed = true;
        inner.wake_receiver();
        for (_, slot) in &mut inner.slots {
            for w in slot.waiting.drain(..) {
                w.wake();
            }
        }
    }

    /// Queues `item` under `key` if its queue has room.
    pub fn try_push(&self, key: K, item: T) -> Result<(), QueueError<T>> {
        self.push_up_to(key, item, None)
    }

    /// Queues `item` under `key` even past capacity, up to `hard_limit` of weight for
    /// that key. For rare control items (a peer connecting or leaving) that must not wait
    /// behind that peer's data, and whose number is bounded by connection churn.
    ///
    /// At the limit, `coalesce` first reduces the key's queued items to what they amount
    /// to (for connection notifications: the loss of the connection the consumer knew
    /// and the arrival of the live one); if that leaves no room, the oldest items go.
    /// The newest item is always queued: it is the one that tells the current state.
    /// Fails only when the consumer is gone.
    pub fn push_control(
        &self,
        key: K,
        item: T,
        hard_limit: usize,
        coalesce: impl FnOnce(&mut VecDeque<T>),
    ) -> Result<(), QueueError<T>> {
        let mut inner = lock(&self.shared);
        if !inner.is_open() {
            return Err(QueueError::Closed(item));
        }
        let id = inner.slot_of(&key);
        if inner.slots[id].queued >= hard_limit {
            inner.make_room(id, hard_limit.saturating_sub(item.weight()), coalesce);
        }
        inner.push_one(id, item);
        Ok(())
    }

    fn push_up_to(&self, key: K, item: T, limit: Option<usize>) -> Result<(), QueueError<T>> {
        let mut inner = lock(&self.shared);
        if !inner.is_open() {
            return Err(QueueError::Closed(item));
        }
        if inner.len_of(&key) >= limit.unwrap_or(inner.capacity) {
            return Err(QueueError::Full(item));
        }
        let id = inner.slot_of(&key);
        inner.push_one(id, item);
        Ok(())
    }

    /// Queues `item` under `key`, waiting while that key's queue is full. Fails only
    /// when the consumer is gone. Cancel-safe: dropping the future drops the item.
    pub async fn push(&self, key: K, item: T) -> Result<(), QueueError<T>> {
        let mut item = Some(item);
        std::future::poll_fn(|cx| {
            let mut inner = lock(&self.shared);
            let Some(it) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            if !inner.is_open() {
                return Poll::Ready(Err(QueueError::Closed(it)));
            }
            let capacity = inner.capacity;
            let id = inner.slot_of(&key);
            let slot = &mut inner.slots[id];
            if slot.queued >= capacity {
                slot.waiting.push(cx.waker().clone());
                item = Some(it);
                return Poll::Pending;
            }
            inner.push_one(id, it);
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// A sender bound to `key`, for a producer that pushes many items under it. The
    /// key's slot is kept while the returned sender lives.
    pub fn slot(&self, key: K) -> SlotSender<K, T> {
        let sender = self.clone();
        let id = {
            let mut inner = lock(&self.shared);
            let id = inner.slot_of(&key);
            inner.slots[id].handles += 1;
            id
        };
        SlotSender { sender, id }
    }
}

/// A [`FairSender`] bound to one key: pushes under it without looking it up.
pub struct SlotSender<K: Eq + Hash + Clone, T: Weighted> {
    sender: FairSender<K, T>,
    id: usize,
}

impl<K: Eq + Hash + Clone, T: Weighted> SlotSender<K, T> {
    /// Queues `item` under this key if its weight fits the room left, or if the key's
    /// queue is empty (so an item heavier than the capacity still goes, alone).
    pub fn try_push(&self, item: T) -> Result<(), QueueError<T>> {
        let mut inner = lock(&self.sender.shared);
        if !inner.is_open() {
            return Err(QueueError::Closed(item));
        }
        let capacity = inner.capacity;
        let Some(slot) = inner.slots.get(self.id) else {
            return Err(QueueError::Closed(item));
        };
        if !fits(slot.queued, item.weight(), capacity) {
            return Err(QueueError::Full(item));
        }
        inner.push_one(self.id, item);
        Ok(())
    }

    /// How much more weight this key's queue takes now (0 when it is closed).
    pub fn free(&self) -> usize {
        let inner = lock(&self.sender.shared);
        if !inner.is_open() {
            return 0;
        }
        inner
            .slots
            .get(self.id)
            .map_or(0, |s| inner.capacity.saturating_sub(s.queued))
    }

    /// Waits until this key's queue has room for an item of `weight` (as
    /// [`Self::try_push`] takes it: within the capacity, or into an empty queue). Fails
    /// when the queue is closed.
    pub async fn room_for(&self, weight: usize) -> Result<(), QueueClosed> {
        std::future::poll_fn(|cx| {
            let mut guard = lock(&self.sender.shared);
            let inner = &mut *guard;
            if !inner.is_open() {
                return Poll::Ready(Err(QueueClosed));
            }
            let capacity = inner.capacity;
            let Some(slot) = inner.slots.get_mut(self.id) else {
                return Poll::Ready(Err(QueueClosed));
            };
            if fits(slot.queued, weight, capacity) {
                return Poll::Ready(Ok(()));
            }
            slot.waiting.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<K: Eq + Hash + Clone, T: Weighted> Drop for SlotSender<K, T> {
    fn drop(&mut self) {
        let mut inner = lock(&self.sender.shared);
        if let Some(slot) = inner.slots.get_mut(self.id) {
            slot.handles -= 1;
            inner.release_if_idle(self.id);
        }
    }
}

/// The consuming side: a `Stream` of items served round-robin across keys. It ends when
/// every sender is gone and the queues are empty.
pub struct FairQueue<K, T> {
    shared: Shared<K, T>,
    /// Items already taken from their queues, in service order (about
    /// [`CONSUMER_BATCH`] of weight); they still count in the depth gauge.
    taken: VecDeque<T>,
    /// The weight of `taken`.
    taken_weight: usize,
    /// The weight of the last batch's items handed out; it leaves the depth gauge when
    /// the next batch is taken, so the gauge costs one update per batch.
    handed_out: usize,
    depth: IntGauge,
}

// Items are moved in and out by value and never pinned.
impl<K, T> Unpin for FairQueue<K, T> {}

impl<K, T> Drop for FairQueue<K, T> {
    fn drop(&mut self) {
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        inner.receiver_alive = false;
        let queued = inner.slots.iter().map(|(_, s)| s.queued).sum::<usize>();
        inner
            .depth
            .sub((queued + self.taken_weight + self.handed_out) as i64);
        self.taken.clear();
        self.taken_weight = 0;
        for (_, slot) in &mut inner.slots {
            for w in slot.waiting.drain(..) {
                w.wake();
            }
            slot.items.clear();
            slot.queued = 0;
        }
        // Slots a `SlotSender` still holds stay (empty) until it goes.
        inner.slots.retain(|_, s| s.handles > 0);
        let slots = &inner.slots;
        inner.index.retain(|_, id| slots.contains(*id));
        inner.ready.clear();
    }
}

impl<K: Eq + Hash + Clone, T: Weighted> FairQueue<K, T> {
    /// The weight queued under `key` and not yet taken by the consumer.
    pub fn len_of(&self, key: &K) -> usize {
        lock(&self.shared).len_of(key)
    }

    /// Moves `item`, taken from its key's queue, to the items to hand out.
    fn stage(&mut self, item: T) {
        self.taken_weight += item.weight();
        self.taken.push_back(item);
    }

    /// Takes about [`CONSUMER_BATCH`] of weight from the queues, one item (of at most
    /// [`TURN_WEIGHT`], when it splits) per key per round.
    fn take_batch(&mut self, inner: &mut Inner<K, T>) {
        // One key ready (a burst from one peer): its items go in one move, which is
        // what serving it round-robin alone would take.
        if inner.ready.len() == 1
            && let Some(&id) = inner.ready.front()
        {
            while self.taken_weight < CONSUMER_BATCH
                && let Some(item) = inner.pop_front(id)
            {
                self.stage(item);
            }
            if inner.slots.get(id).is_none_or(|s| s.items.is_empty()) {
                inner.ready.clear();
                inner.release_if_idle(id);
            }
            return;
        }
        while self.taken_weight < CONSUMER_BATCH {
            let Some(id) = inner.ready.pop_front() else {
                return;
            };
            // `ready` holds only slots with items; one that broke that rule is skipped
            // rather than served.
            let Some(item) = inner.take_turn(id, TURN_WEIGHT) else {
                inner.release_if_idle(id);
                continue;
            };
            if inner.slots.get(id).is_some_and(|s| !s.items.is_empty()) {
                inner.ready.push_back(id);
            } else {
                inner.release_if_idle(id);
            }
            self.stage(item);
        }
    }
}

impl<K: Eq + Hash + Clone, T: Weighted> Stream for FairQueue<K, T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.taken.is_empty() {
            if this.handed_out > 0 {
                this.depth.sub(this.handed_out as i64);
                this.handed_out = 0;
            }
            let shared = Arc::clone(&this.shared);
            let mut inner = lock(&shared);
            this.take_batch(&mut inner);
            if this.taken.is_empty() {
                if inner.senders == 0 || inner.closed {
                    return Poll::Ready(None);
                }
                inner.receiver_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let item = this.taken.pop_front();
        if let Some(item) = &item {
            let weight = item.weight();
            this.taken_weight -= weight;
            this.handed_out += weight;
        }
        Poll::Ready(item)
    }
}
