//! The deadlines of a connection's directly answered RPCs, which its task times out: a
//! queue fed deadlines and the time, returning what is due and when to look next
//! ([`DeadlineQueue`]), and the connection's shared, locked copy of it
//! ([`AnswerDeadlines`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::answering::Answering;
use crate::protocols::deadline::deadline_after;

/// What waits in a [`DeadlineQueue`]: something that may be settled (answered) before
/// its deadline, and then needs no timing out.
pub(crate) trait Settled {
    /// Whether it no longer needs timing out.
    fn is_settled(&self) -> bool;
}

impl Settled for Arc<Answering> {
    fn is_settled(&self) -> bool {
        self.is_done()
    }
}

/// Deadlines of waiting entries, without I/O or a clock: fed deadlines and the time,
/// it returns what is due and when to look next.
///
/// A deadline is a substream's arrival plus the inbound timeout, so entries arrive
/// nearly in deadline order (one read slowly, or held by its peer's message rate, goes
/// in before later arrivals): pushing is an append but for those, and a tokio
/// `DelayQueue` (a timer wheel with a key per entry, removed on answer) would do more
/// work per RPC for an order that is already there. An entry that arrives after the
/// owner armed its timer is due no earlier than that timer, so queueing it needs no
/// wake-up; [`DeadlineQueue::push`] says when one does.
pub(crate) struct DeadlineQueue<T> {
    /// By deadline, earliest first.
    queue: VecDeque<(Instant, T)>,
    /// The deadline the owner's timer waits for.
    armed: Instant,
    /// Nothing more is queued.
    closed: bool,
}

impl<T: Settled> DeadlineQueue<T> {
    /// An empty queue whose owner first looks at `armed`.
    pub(crate) fn new(armed: Instant) -> Self {
        Self {
            queue: VecDeque::new(),
            armed,
            closed: false,
        }
    }

    /// Queues `entry`, due at `deadline`; gives it back once the queue is closed.
    /// Returns whether the deadline is earlier than the armed one (the owner must be
    /// woken to wait for it). Settled entries leave from the front, and all of them once
    /// the queue reaches `compact_at`, so it stays that short behind one that waits long.
    pub(crate) fn push(
        &mut self,
        deadline: Instant,
        entry: T,
        compact_at: usize,
    ) -> Result<bool, T> {
        if self.closed {
            return Err(entry);
        }
        while self.queue.front().is_some_and(|(_, e)| e.is_settled()) {
            self.queue.pop_front();
        }
        if self.queue.len() >= compact_at {
            self.queue.retain(|(_, e)| !e.is_settled());
        }
        if self.queue.back().is_none_or(|(last, _)| *last <= deadline) {
            self.queue.push_back((deadline, entry));
        } else {
            let at = self.queue.partition_point(|(due, _)| *due <= deadline);
            self.queue.insert(at, (deadline, entry));
        }
        Ok(deadline < self.armed)
    }

    /// Moves the unsettled entries due at `now` into `due`, dropping settled ones at the
    /// front on the way; returns the earliest deadline left, which is then armed.
    pub(crate) fn take_due(&mut self, now: Instant, due: &mut Vec<T>) -> Option<Instant> {
        while let Some((at, entry)) = self.queue.front() {
            if entry.is_settled() {
                self.queue.pop_front();
            } else if *at <= now {
                if let Some((_, entry)) = self.queue.pop_front() {
                    due.push(entry);
                }
            } else {
                break;
            }
        }
        let next = self.queue.front().map(|(at, _)| *at);
        if let Some(next) = next {
            self.armed = next;
        }
        next
    }

    /// The deadline the owner's timer waits for.
    pub(crate) fn armed(&self) -> Instant {
        self.armed
    }

    /// The owner's timer now waits for `at` (with nothing queued, a look later on).
    pub(crate) fn arm(&mut self, at: Instant) {
        self.armed = at;
    }

    /// Nothing more is queued; what waits keeps its deadline.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Entries queued, settled ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A connection's directly answered RPCs that still wait, by deadline, for the
/// connection's task to time out.
pub(crate) struct AnswerDeadlines {
    pub(super) inner: parking_lot::Mutex<DeadlineQueue<Arc<Answering>>>,
    /// Wakes the connection's task for a deadline earlier than the one it waits for (a
    /// request that arrived before the task last looked, queued after).
    earlier: Notify,
}

/// How long an idle connection's task waits at least before it looks again, however
/// short the inbound timeout: an empty queue never makes it spin.
pub(super) const MIN_LOOK_INTERVAL: Duration = Duration::from_secs(1);

impl AnswerDeadlines {
    /// An empty queue whose task first looks at `armed`.
    pub(crate) fn new(armed: Instant) -> Self {
        Self {
            inner: parking_lot::Mutex::new(DeadlineQueue::new(armed)),
            earlier: Notify::new(),
        }
    }

    /// Queues `answering`, due at `deadline`; gives it back once the connection has
    /// ended. `compact_at` is twice the RPCs a peer may have waiting (see
    /// [`DeadlineQueue::push`]).
    pub(super) fn push(
        &self,
        deadline: Instant,
        answering: Arc<Answering>,
        compact_at: usize,
    ) -> Result<(), Arc<Answering>> {
        let earlier = self.inner.lock().push(deadline, answering, compact_at)?;
        if earlier {
            self.earlier.notify_one();
        }
        Ok(())
    }

    /// The deadline the connection's task should wait for.
    pub(crate) fn armed(&self) -> Instant {
        self.inner.lock().armed()
    }

    /// Waits until a deadline earlier than the armed one was queued.
    pub(crate) async fn earlier(&self) {
        self.earlier.notified().await;
    }

    /// Times out what is due at `now`; returns when to look next: at the earliest
    /// deadline left, or (nothing left) one `timeout` from now, at least
    /// [`MIN_LOOK_INTERVAL`].
    pub(crate) fn expire(&self, now: Instant, timeout: Duration) -> Instant {
        match self.time_out_due(now) {
            Some(next) => next,
            None => {
                // Armed at the later look, so that a request queued meanwhile with an
                // earlier deadline wakes the task.
                let look = deadline_after(now, timeout.max(MIN_LOOK_INTERVAL));
                self.inner.lock().arm(look);
                look
            }
        }
    }

    /// Times out what is due at `now`; returns the earliest deadline left.
    fn time_out_due(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = self.inner.lock().take_due(now, &mut due);
        // Written outside the lock.
        for answering in due {
            answering.time_out();
        }
        next
    }

    /// The connection ended: nothing more is queued. What waits keeps its deadline:
    /// drive [`Self::drain`] until it returns.
    pub(crate) fn close(&self) {
        self.inner.lock().close();
    }

    /// After [`Self::close`]: times out what waits as its deadlines pass, answered or
    /// not by then, and returns once nothing waits. Its substreams are not reset
    /// early, so their callers learn of the connection's end from the connection.
    pub(crate) async fn drain(&self) {
        while let Some(next) = self.time_out_due(Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
    }
}
