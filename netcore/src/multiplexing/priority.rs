//! Priority classes of substreams and the queue of streams with frames to send.

use std::collections::VecDeque;

/// How urgently a substream's frames go out. The connection task sends every ready
/// frame of a higher class before any of a lower one. Streams of one class take turns:
/// one frame each in [`Priority::Urgent`] and [`Priority::Normal`], up to
/// [`BULK_TURN`] bytes each in [`Priority::Bulk`]. A stream's class changes nothing on
/// the wire: it orders only what this end sends.
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
    /// Large transfers that may wait: state sync, catch-up, block downloads. A bulk
    /// stream keeps its turn for up to [`BULK_TURN`] bytes, so of several responses
    /// the first completes first instead of all together.
    Bulk,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Bulk];

    fn index(self) -> usize {
        self as usize
    }
}

/// Bytes a [`Priority::Bulk`] stream sends in one turn, while it has data and credit,
/// before the next ready bulk stream's turn.
///
/// Bulk responses are useful once whole. Served a frame each in turn, several
/// responses of one size all finish at about the same moment: the sender then has
/// nothing to send until the next requests arrive, a round trip later, and starts them
/// all at once. On a real link that idle-then-burst pattern is what congestion control
/// misjudges (BBR measured several times the link's rate after it and queued the
/// excess in the bottleneck, in front of every consensus message). In turns of 1 MiB,
/// the first response completes a turn ahead of the second, and its successor is
/// requested while the others still send. The turn is bounded so that one endless
/// bulk stream cannot hold back the others: a turn of 1 MiB is 8 ms at 1 Gbit/s and
/// 84 ms at 100 Mbit/s, and a bulk message waits up to a turn for each bulk stream
/// ahead of it. A message that must not wait that long belongs in a higher class.
pub const BULK_TURN: usize = 1 << 20;

/// Stream ids with frames to send, one queue per class, taken in turns.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    classes: [VecDeque<u32>; 3],
    /// The bulk stream whose turn it is, and the bytes it has sent in that turn.
    bulk_turn: Option<(u32, usize)>,
}

impl ReadyQueue {
    /// Queues `id` at the back of its class.
    pub(crate) fn push(&mut self, id: u32, priority: Priority) {
        self.classes[priority.index()].push_back(id);
    }

    /// Queues `id`, which has just sent a frame of `sent` payload bytes and has more to
    /// send: at the back of its class, but at the front of [`Priority::Bulk`] until it
    /// has sent [`BULK_TURN`] bytes since its turn began.
    pub(crate) fn push_after_send(&mut self, id: u32, priority: Priority, sent: usize) {
        if priority == Priority::Bulk {
            let used = match self.bulk_turn {
                Some((turn, used)) if turn == id => used + sent,
                _ => sent,
            };
            if used < BULK_TURN {
                self.bulk_turn = Some((id, used));
                self.classes[priority.index()].push_front(id);
                return;
            }
            self.bulk_turn = None;
        }
        self.push(id, priority);
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
        self.bulk_turn = None;
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

    /// Sends frames of `frame` bytes as a session does: pops, and queues the stream
    /// again while `left` says it has more. Returns the order of the frames.
    fn serve(q: &mut ReadyQueue, left: &mut [(u32, usize)], frame: usize) -> Vec<u32> {
        let mut order = Vec::new();
        while let Some(id) = q.pop() {
            let (_, bytes) = left.iter_mut().find(|(s, _)| *s == id).expect("known");
            let sent = frame.min(*bytes);
            *bytes -= sent;
            order.push(id);
            if *bytes > 0 {
                q.push_after_send(id, Priority::Bulk, sent);
            }
        }
        order
    }

    #[test]
    fn a_bulk_stream_keeps_its_turn_for_bulk_turn_bytes() {
        const FRAME: usize = 16 * 1024;
        let per_turn = BULK_TURN / FRAME;
        let mut q = ReadyQueue::default();
        q.push(1, Priority::Bulk);
        q.push(3, Priority::Bulk);
        let mut left = [(1, 2 * BULK_TURN), (3, BULK_TURN / 2)];
        let order = serve(&mut q, &mut left, FRAME);
        let mut expected = vec![1; per_turn];
        expected.extend(vec![3; per_turn / 2]);
        expected.extend(vec![1; per_turn]);
        assert_eq!(order, expected);
        assert!(q.is_empty());
    }

    #[test]
    fn a_bulk_stream_that_stalls_gives_up_its_turn() {
        let mut q = ReadyQueue::default();
        q.push(1, Priority::Bulk);
        q.push(3, Priority::Bulk);
        assert_eq!(q.pop(), Some(1));
        q.push_after_send(1, Priority::Bulk, 100);
        assert_eq!(q.pop(), Some(1));
        // Out of credit: not queued again until it is, then behind 3, whose turn it is.
        assert_eq!(q.pop(), Some(3));
        q.push(1, Priority::Bulk);
        q.push_after_send(3, Priority::Bulk, 100);
        assert_eq!(q.pop(), Some(3));
        // 3 stalls too: 1 starts a new turn of its own.
        assert_eq!(q.pop(), Some(1));
        q.push_after_send(1, Priority::Bulk, BULK_TURN - 1);
        assert_eq!(q.pop(), Some(1));
        assert!(q.is_empty());
    }

    #[test]
    fn other_classes_take_turns_a_frame_each() {
        let mut q = ReadyQueue::default();
        for class in [Priority::Urgent, Priority::Normal] {
            q.push(1, class);
            q.push(3, class);
            assert_eq!(q.pop(), Some(1));
            q.push_after_send(1, class, 100);
            assert_eq!(q.pop(), Some(3));
            assert_eq!(q.pop(), Some(1));
            assert!(q.is_empty());
        }
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
