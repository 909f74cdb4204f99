//! The deadlines of a connection's directly answered RPCs, which its task times out,
//! and the clock arithmetic they share.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::answering::Answering;

/// A connection's directly answered RPCs that still wait, by deadline, for the
/// connection's task to time out. A deadline is the substream's arrival plus the
/// inbound timeout, so requests queue nearly in deadline order (one read slowly, or
/// held by its peer's message rate, goes in before later arrivals); and one that
/// arrives after the task looked is due no earlier than the task waits for, so queueing
/// it wakes nobody.
pub(crate) struct AnswerDeadlines {
    pub(super) inner: parking_lot::Mutex<DeadlineQueue>,
    /// Wakes the connection's task for a deadline earlier than the one it waits for (a
    /// request that arrived before the task last looked, queued after).
    earlier: Notify,
}

pub(super) struct DeadlineQueue {
    /// By deadline, earliest first.
    pub(super) queue: VecDeque<(tokio::time::Instant, Arc<Answering>)>,
    /// The deadline the connection's task waits for.
    armed: tokio::time::Instant,
    /// The connection ended: nothing more is queued (its requests are served by their
    /// substream tasks, which keep their own deadlines).
    closed: bool,
}

/// How long an idle connection's task waits at least before it looks again, however
/// short the inbound timeout: an empty queue never makes it spin.
pub(super) const MIN_LOOK_INTERVAL: Duration = Duration::from_secs(1);

impl AnswerDeadlines {
    /// An empty queue whose task first looks at `armed`.
    pub(crate) fn new(armed: tokio::time::Instant) -> Self {
        Self {
            inner: parking_lot::Mutex::new(DeadlineQueue {
                queue: VecDeque::new(),
                armed,
                closed: false,
            }),
            earlier: Notify::new(),
        }
    }

    /// Queues `answering`, due at `deadline`; gives it back once the connection has
    /// ended. Answered ones leave from the front, and all of them once the queue
    /// reaches `compact_at` (twice the RPCs a peer may have waiting), so it stays that
    /// short behind one that waits long.
    pub(super) fn push(
        &self,
        deadline: tokio::time::Instant,
        answering: Arc<Answering>,
        compact_at: usize,
    ) -> Result<(), Arc<Answering>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(answering);
        }
        while inner.queue.front().is_some_and(|(_, a)| a.is_done()) {
            inner.queue.pop_front();
        }
        if inner.queue.len() >= compact_at {
            inner.queue.retain(|(_, a)| !a.is_done());
        }
        if inner.queue.back().is_none_or(|(last, _)| *last <= deadline) {
            inner.queue.push_back((deadline, answering));
        } else {
            let at = inner.queue.partition_point(|(due, _)| *due <= deadline);
            inner.queue.insert(at, (deadline, answering));
        }
        let earlier = deadline < inner.armed;
        drop(inner);
        if earlier {
            self.earlier.notify_one();
        }
        Ok(())
    }

    /// The deadline the connection's task should wait for.
    pub(crate) fn armed(&self) -> tokio::time::Instant {
        self.inner.lock().armed
    }

    /// Waits until a deadline earlier than the armed one was queued.
    pub(crate) async fn earlier(&self) {
        self.earlier.notified().await;
    }

    /// Times out what is due at `now`; returns when to look next: at the earliest
    /// deadline left, or (nothing left) one `timeout` from now, at least
    /// [`MIN_LOOK_INTERVAL`].
    pub(crate) fn expire(
        &self,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> tokio::time::Instant {
        self.time_out_due(now)
            .unwrap_or_else(|| later(now, timeout.max(MIN_LOOK_INTERVAL)))
    }

    /// Times out what is due at `now`, dropping the answered ones at the front on the
    /// way; returns the earliest deadline left, then armed.
    fn time_out_due(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut due = Vec::new();
        let next = {
            let mut inner = self.inner.lock();
            while let Some((at, answering)) = inner.queue.front() {
                if answering.is_done() {
                    inner.queue.pop_front();
                } else if *at <= now {
                    if let Some((_, answering)) = inner.queue.pop_front() {
                        due.push(answering);
                    }
                } else {
                    break;
                }
            }
            let next = inner.queue.front().map(|(at, _)| *at);
            if let Some(next) = next {
                inner.armed = next;
            }
            next
        };
        // Written outside the lock.
        for answering in due {
            answering.time_out();
        }
        next
    }

    /// The connection ended: nothing more is queued. What waits keeps its deadline:
    /// drive [`Self::drain`] until it returns.
    pub(crate) fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// After [`Self::close`]: times out what waits as its deadlines pass, answered or
    /// not by then, and returns once nothing waits. Its substreams are not reset
    /// early, so their callers learn of the connection's end from the connection.
    pub(crate) async fn drain(&self) {
        while let Some(next) = self.time_out_due(tokio::time::Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
    }
}

/// `now + timeout`, or a year from now for a timeout too large to add.
pub(crate) fn later(now: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(timeout).unwrap_or(now + FAR)
}
