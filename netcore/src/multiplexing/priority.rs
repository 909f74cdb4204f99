//! Priority classes of substreams and the queue of streams with frames to send.

use std::collections::VecDeque;

/// How urgently a substream's frames go out. The connection task sends every ready
/// frame of a higher class before any of a lower one; streams of one class take turns,
/// one frame each. A stream's class changes nothing on the wire: it orders only what
/// this end sends.
///
/// Strict order is what a validator network needs: consensus messages are few and
/// small, and a vote that waits behind a block being sent delays the whole round. A
/// class that sends without pause starves those below it, so only latency-critical,
/// bounded traffic belongs above [`Priority::Normal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Latency-critical and small: consensus votes and proposals.
    Urgent,
    /// Everything not said otherwise: requests, transactions.
    #[default]
    Normal,
    /// Large transfers that may wait: state sync, catch-up, block downloads.
    Bulk,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Bulk];

    fn index(self) -> usize {
        self as usize
    }
}

/// Stream ids with frames to send, one round-robin queue per class.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    classes: [VecDeque<u32>; 3],
}

impl ReadyQueue {
    /// Queues `id` at the back of its class.
    pub(crate) fn push(&mut self, id: u32, priority: Priority) {
        self.classes[priority.index()].push_back(id);
    }

    /// Whether a stream of class `priority` is queued.
    pub(crate) fn has(&self, priority: Priority) -> bool {
        !self.classes[priority.index()].is_empty()
    }

    /// The next stream to send a frame of: the front of the highest non-empty class.
    pub(crate) fn pop(&mut self) -> Option<u32> {
        self.classes.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Moves `id`, queued in class `from`, to the back of class `to`.
    pub(crate) fn requeue(&mut self, id: u32, from: Priority, to: Priority) {
        let queue = &mut self.classes[from.index()];
        if let Some(at) = queue.iter().position(|q| *q == id) {
            queue.remove(at);
            self.push(id, to);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.classes.iter().all(VecDeque::is_empty)
    }

    pub(crate) fn clear(&mut self) {
        self.classes.iter_mut().for_each(VecDeque::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_classes_go_first_and_a_class_takes_turns() {
        let mut q = ReadyQueue::default();
        q.push(5, Priority::Bulk);
        q.push(1, Priority::Normal);
        q.push(3, Priority::Normal);
        q.push(7, Priority::Urgent);
        assert_eq!(q.pop(), Some(7));
        assert_eq!(q.pop(), Some(1));
        q.push(1, Priority::Normal);
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(5));
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_requeued_stream_moves_to_the_back_of_its_new_class() {
        let mut q = ReadyQueue::default();
        q.push(1, Priority::Bulk);
        q.push(3, Priority::Urgent);
        q.requeue(1, Priority::Bulk, Priority::Urgent);
        // Not queued in `from`: nothing moves.
        q.requeue(9, Priority::Bulk, Priority::Urgent);
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(1));
        assert!(q.is_empty());
    }
}
