//! Bounded queues between tasks.
//!
//! - [`FairQueue`]: many producers, each pushing under a key (a peer, or a peer and a
//!   protocol), one consumer served round-robin across keys. Each key's queue is
//!   bounded; a producer whose queue is full waits (backpressure on that peer only), so a
//!   flooding peer fills its own queue and slows its own reader while every other key
//!   keeps being served.
//! - [`metered`]: a tokio bounded channel whose depth is a prometheus gauge.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use prometheus::IntGauge;
use tokio::sync::mpsc;

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

struct Slot<T> {
    items: VecDeque<T>,
    /// Producers waiting for room in this key's queue.
    waiting: Vec<Waker>,
}

struct Inner<K, T> {
    slots: HashMap<K, Slot<T>, foldhash::fast::RandomState>,
    /// Keys with at least one item, in service order.
    ready: VecDeque<K>,
    capacity: usize,
    receiver_waker: Option<Waker>,
    receiver_alive: bool,
    senders: usize,
    /// A sender closed the queue: no more items; the consumer drains what is queued.
    closed: bool,
    depth: IntGauge,
}

type Shared<K, T> = Arc<Mutex<Inner<K, T>>>;

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
{
    let shared = Arc::new(Mutex::new(Inner {
        slots: HashMap::default(),
        ready: VecDeque::new(),
        capacity: capacity_per_key.max(1),
        receiver_waker: None,
        receiver_alive: true,
        closed: false,
        senders: 1,
        depth,
    }));
    (
        FairSender {
            shared: Arc::clone(&shared),
        },
        FairQueue { shared },
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

impl<K: Eq + Hash + Clone, T> FairSender<K, T> {
    fn push_locked(inner: &mut Inner<K, T>, key: K, item: T) {
        let slot = inner.slots.entry(key.clone()).or_insert_with(|| Slot {
            items: VecDeque::new(),
            waiting: Vec::new(),
        });
        if slot.items.is_empty() {
            inner.ready.push_back(key);
        }
        slot.items.push_back(item);
        inner.depth.inc();
        if let Some(w) = inner.receiver_waker.take() {
            w.wake();
        }
    }

    /// Closes the queue for every sender: later pushes fail with `Closed`, waiting
    /// producers give up, and the consumer's stream ends once it drained the queue.
    pub fn close(&self) {
        let mut inner = lock(&self.shared);
        inner.closed = true;
        if let Some(w) = inner.receiver_waker.take() {
            w.wake();
        }
        for slot in inner.slots.values_mut() {
            for w in slot.waiting.drain(..) {
                w.wake();
            }
        }
    }

    /// Queues `item` under `key` if its queue has room.
    pub fn try_push(&self, key: K, item: T) -> Result<(), QueueError<T>> {
        let mut inner = lock(&self.shared);
        if !inner.receiver_alive || inner.closed {
            return Err(QueueError::Closed(item));
        }
        let capacity = inner.capacity;
        if inner
            .slots
            .get(&key)
            .is_some_and(|s| s.items.len() >= capacity)
        {
            return Err(QueueError::Full(item));
        }
        Self::push_locked(&mut inner, key, item);
        Ok(())
    }

    /// Queues `item` under `key` even past capacity, up to `hard_limit` items for that
    /// key. For rare control items (a peer connecting or leaving) that must not wait
    /// behind that peer's data, and whose number is bounded by connection churn.
    pub fn push_control(&self, key: K, item: T, hard_limit: usize) -> Result<(), QueueError<T>> {
        let mut inner = lock(&self.shared);
        if !inner.receiver_alive || inner.closed {
            return Err(QueueError::Closed(item));
        }
        if inner
            .slots
            .get(&key)
            .is_some_and(|s| s.items.len() >= hard_limit)
        {
            return Err(QueueError::Full(item));
        }
        Self::push_locked(&mut inner, key, item);
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
            if !inner.receiver_alive || inner.closed {
                return Poll::Ready(Err(QueueError::Closed(it)));
            }
            let capacity = inner.capacity;
            if let Some(slot) = inner.slots.get_mut(&key)
                && slot.items.len() >= capacity
            {
                slot.waiting.push(cx.waker().clone());
                item = Some(it);
                return Poll::Pending;
            }
            Self::push_locked(&mut inner, key.clone(), it);
            Poll::Ready(Ok(()))
        })
        .await
    }
}

/// The consuming side: a `Stream` of `(key, item)` served round-robin across keys. It
/// ends when every sender is gone and the queues are empty.
pub struct FairQueue<K, T> {
    shared: Shared<K, T>,
}

impl<K, T> Drop for FairQueue<K, T> {
    fn drop(&mut self) {
        let mut inner = lock(&self.shared);
        inner.receiver_alive = false;
        let dropped = inner.slots.values().map(|s| s.items.len()).sum::<usize>();
        inner.depth.sub(dropped as i64);
        for slot in inner.slots.values_mut() {
            for w in slot.waiting.drain(..) {
                w.wake();
            }
        }
        inner.slots.clear();
        inner.ready.clear();
    }
}

impl<K: Eq + Hash + Clone, T> FairQueue<K, T> {
    /// Items queued under `key`.
    pub fn len_of(&self, key: &K) -> usize {
        lock(&self.shared)
            .slots
            .get(key)
            .map_or(0, |s| s.items.len())
    }
}

impl<K: Eq + Hash + Clone + Unpin, T> Stream for FairQueue<K, T> {
    type Item = (K, T);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = lock(&self.shared);
        loop {
            let Some(key) = inner.ready.pop_front() else {
                if inner.senders == 0 || inner.closed {
                    return Poll::Ready(None);
                }
                inner.receiver_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            // `ready` holds only keys with a non-empty slot; a key that broke that rule
            // is skipped rather than served.
            let Some(slot) = inner.slots.get_mut(&key) else {
                continue;
            };
            let Some(item) = slot.items.pop_front() else {
                inner.slots.remove(&key);
                continue;
            };
            for w in slot.waiting.drain(..) {
                w.wake();
            }
            if slot.items.is_empty() {
                // Drop the empty slot so that keys of departed peers cost nothing.
                inner.slots.remove(&key);
            } else {
                inner.ready.push_back(key.clone());
            }
            inner.depth.dec();
            return Poll::Ready(Some((key, item)));
        }
    }
}

/// A bounded channel whose depth is tracked by a prometheus gauge.
pub fn metered<T>(capacity: usize, depth: IntGauge) -> (MeteredSender<T>, MeteredReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        MeteredSender {
            inner: tx,
            depth: depth.clone(),
        },
        MeteredReceiver { inner: rx, depth },
    )
}

/// The sending side of [`metered`].
#[derive(Debug)]
pub struct MeteredSender<T> {
    inner: mpsc::Sender<T>,
    depth: IntGauge,
}

impl<T> Clone for MeteredSender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<T> MeteredSender<T> {
    /// Sends, waiting for room. Fails with the item when the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        self.inner.send(item).await.map_err(|e| e.0)?;
        self.depth.inc();
        Ok(())
    }

    /// Sends if there is room.
    pub fn try_send(&self, item: T) -> Result<(), QueueError<T>> {
        match self.inner.try_send(item) {
            Ok(()) => {
                self.depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(t)) => Err(QueueError::Full(t)),
            Err(mpsc::error::TrySendError::Closed(t)) => Err(QueueError::Closed(t)),
        }
    }
}

/// The receiving side of [`metered`].
#[derive(Debug)]
pub struct MeteredReceiver<T> {
    inner: mpsc::Receiver<T>,
    depth: IntGauge,
}

impl<T> MeteredReceiver<T> {
    /// Receives the next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        let item = self.inner.recv().await;
        if item.is_some() {
            self.depth.dec();
        }
        item
    }

    /// Receives an item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.inner.try_recv().ok();
        if item.is_some() {
            self.depth.dec();
        }
        item
    }
}

impl<T> Drop for MeteredReceiver<T> {
    fn drop(&mut self) {
        self.inner.close();
        while self.inner.try_recv().is_ok() {
            self.depth.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    fn gauge() -> IntGauge {
        IntGauge::new("depth", "test").unwrap()
    }

    #[tokio::test]
    async fn serves_keys_round_robin() {
        let (tx, mut rx) = fair_queue::<&str, u32>(100, gauge());
        for i in 0..10 {
            tx.try_push("flood", i).unwrap();
        }
        tx.try_push("quiet", 100).unwrap();
        let first_two: Vec<_> = (&mut rx).take(2).collect().await;
        assert_eq!(first_two, vec![("flood", 0), ("quiet", 100)]);
    }

    #[tokio::test]
    async fn a_full_key_refuses_only_itself() {
        let (tx, _rx) = fair_queue::<&str, u32>(2, gauge());
        tx.try_push("a", 1).unwrap();
        tx.try_push("a", 2).unwrap();
        assert_eq!(tx.try_push("a", 3), Err(QueueError::Full(3)));
        tx.try_push("b", 1).unwrap();
        assert_eq!(tx.push_control("a", 4, 3), Ok(()));
        assert_eq!(tx.push_control("a", 5, 3), Err(QueueError::Full(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn push_waits_for_room_then_proceeds() {
        let (tx, mut rx) = fair_queue::<&str, u32>(1, gauge());
        tx.push("a", 1).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_secs(1), tx.push("a", 2)).await;
        assert!(blocked.is_err(), "a full key makes its producer wait");
        let tx2 = tx.clone();
        let waiter = tokio::spawn(async move { tx2.push("a", 2).await });
        assert_eq!(rx.next().await, Some(("a", 1)));
        waiter.await.unwrap().unwrap();
        assert_eq!(rx.next().await, Some(("a", 2)));
    }

    #[tokio::test]
    async fn depth_gauge_follows_the_queue_and_ends_when_senders_go() {
        let depth = gauge();
        let (tx, mut rx) = fair_queue::<u8, u8>(10, depth.clone());
        tx.try_push(1, 1).unwrap();
        tx.try_push(2, 2).unwrap();
        assert_eq!(depth.get(), 2);
        rx.next().await.unwrap();
        assert_eq!(depth.get(), 1);
        drop(tx);
        assert!(rx.next().await.is_some(), "queued items are still served");
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn closing_ends_the_stream_after_the_queued_items() {
        let (tx, mut rx) = fair_queue::<u8, u8>(1, gauge());
        tx.try_push(1, 1).unwrap();
        let other = tx.clone();
        let waiting = tokio::spawn(async move { other.push(1, 2).await });
        tokio::task::yield_now().await;
        tx.close();
        assert_eq!(waiting.await.unwrap(), Err(QueueError::Closed(2)));
        assert_eq!(tx.try_push(2, 3), Err(QueueError::Closed(3)));
        assert_eq!(rx.next().await, Some((1, 1)));
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn dropping_the_consumer_fails_producers() {
        let (tx, rx) = fair_queue::<u8, u8>(10, gauge());
        drop(rx);
        assert_eq!(tx.try_push(1, 1), Err(QueueError::Closed(1)));
        assert_eq!(tx.push(1, 2).await, Err(QueueError::Closed(2)));
    }

    #[tokio::test]
    async fn metered_channel_tracks_depth() {
        let depth = gauge();
        let (tx, mut rx) = metered::<u8>(2, depth.clone());
        tx.send(1).await.unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(QueueError::Full(3)));
        assert_eq!(depth.get(), 2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(depth.get(), 1);
        drop(rx);
        assert_eq!(depth.get(), 0);
    }
}
