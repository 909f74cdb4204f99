//! The pool of pending transactions: insertion order, origin, and what was seen.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use validator_network::PeerId;

/// Whether a transaction offered to the pool was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// New: it is in the pool.
    Added,
    /// Seen before (pending or committed): ignored.
    Duplicate,
    /// The pool is full: dropped.
    Full,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    origin: Option<PeerId>,
    payload: Bytes,
}

/// Pending transactions in arrival order, plus a bounded memory of ids already seen so
/// that a transaction gossiped back or committed is not taken again.
#[derive(Debug)]
pub struct Pool {
    max_pending: usize,
    max_seen: usize,
    next_seq: u64,
    order: BTreeMap<u64, u64>,
    pending: HashMap<u64, Entry>,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
}

impl Pool {
    /// A pool of at most `max_pending` transactions remembering the last `max_seen` ids.
    pub fn new(max_pending: usize, max_seen: usize) -> Self {
        Self {
            max_pending,
            max_seen: max_seen.max(max_pending),
            next_seq: 0,
            order: BTreeMap::new(),
            pending: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Offers transaction `id`, learned from `origin` (`None`: created here).
    pub fn insert(&mut self, id: u64, payload: Bytes, origin: Option<PeerId>) -> Insert {
        if self.seen.contains(&id) {
            return Insert::Duplicate;
        }
        if self.pending.len() >= self.max_pending {
            return Insert::Full;
        }
        self.remember(id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id);
        self.pending.insert(
            id,
            Entry {
                seq,
                origin,
                // A received payload is a slice of the buffer its batch was read into:
                // a copy keeps one pending transaction from holding the whole batch.
                payload: Bytes::copy_from_slice(&payload),
            },
        );
        Insert::Added
    }

    fn remember(&mut self, id: u64) {
        if self.seen.insert(id) {
            self.seen_order.push_back(id);
            while self.seen_order.len() > self.max_seen {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// The oldest `max` pending transaction ids.
    pub fn pull(&self, max: usize) -> Vec<u64> {
        self.order.values().take(max).copied().collect()
    }

    /// Removes committed transactions; they stay remembered as seen.
    pub fn remove_committed(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(entry) = self.pending.remove(id) {
                self.order.remove(&entry.seq);
            }
            self.remember(*id);
        }
    }

    /// Up to `max` pending transactions that arrived after `cursor` and did not come
    /// from `peer`, with the cursor to continue from.
    pub fn since(&self, cursor: u64, peer: PeerId, max: usize) -> (Vec<(u64, Bytes)>, u64) {
        let mut out = Vec::new();
        let mut next = cursor;
        for (&seq, id) in self.order.range(cursor..) {
            if out.len() >= max {
                break;
            }
            next = seq + 1;
            if let Some(entry) = self.pending.get(id)
                && entry.origin != Some(peer)
            {
                out.push((*id, entry.payload.clone()));
            }
        }
        (out, next)
    }

    /// The sequence number the next transaction will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Pending transactions.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(b: u8) -> PeerId {
        PeerId::new([b; 32])
    }

    #[test]
    fn a_transaction_is_taken_once() {
        let mut pool = Pool::new(10, 10);
        assert_eq!(pool.insert(1, Bytes::new(), None), Insert::Added);
        assert_eq!(
            pool.insert(1, Bytes::new(), Some(peer(1))),
            Insert::Duplicate
        );
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_committed_transaction_is_not_taken_again() {
        let mut pool = Pool::new(10, 10);
        pool.insert(1, Bytes::new(), None);
        pool.remove_committed(&[1]);
        assert!(pool.is_empty());
        assert_eq!(pool.insert(1, Bytes::new(), None), Insert::Duplicate);
    }

    #[test]
    fn a_full_pool_drops_new_transactions() {
        let mut pool = Pool::new(2, 2);
        pool.insert(1, Bytes::new(), None);
        pool.insert(2, Bytes::new(), None);
        assert_eq!(pool.insert(3, Bytes::new(), None), Insert::Full);
    }

    #[test]
    fn pull_returns_the_oldest_first() {
        let mut pool = Pool::new(10, 10);
        for id in [5, 3, 9] {
            pool.insert(id, Bytes::new(), None);
        }
        assert_eq!(pool.pull(2), vec![5, 3]);
    }

    #[test]
    fn gossip_skips_what_the_peer_sent_and_resumes_at_the_cursor() {
        let mut pool = Pool::new(10, 10);
        pool.insert(1, Bytes::new(), None);
        pool.insert(2, Bytes::new(), Some(peer(7)));
        pool.insert(3, Bytes::new(), None);

        let (first, cursor) = pool.since(0, peer(7), 1);
        let (rest, end) = pool.since(cursor, peer(7), 10);

        assert_eq!(first.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(rest.iter().map(|t| t.0).collect::<Vec<_>>(), vec![3]);
        assert_eq!(end, pool.next_seq());
    }
}
