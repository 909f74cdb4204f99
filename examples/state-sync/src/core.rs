//! The state-sync client's decisions, without I/O: which chunks of the chain to ask
//! which peer for, with a bounded number in flight, and which received blocks extend
//! the local chain, in order. The driver sends the requests, feeds back the answers
//! and the time, and applies the blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use validator_network::PeerId;
use validator_network::proto::consensus::Block;

/// A request for `count` blocks from height `from`, to `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The peer to ask.
    pub peer: PeerId,
    /// The first height asked for.
    pub from: u64,
    /// How many blocks, at most.
    pub count: u64,
    /// Names this request: an answer to an older request for the same chunk (its
    /// peer left, it was asked again) is told apart.
    pub request: u64,
}

/// What an answer to a [`Fetch`] was.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Blocks from the requested height on, as many as the peer has (fewer than asked:
    /// the peer's chain ends there; none: the peer has nothing from that height).
    Blocks(Vec<Block>),
    /// The request failed (timeout, disconnection, the peer pruned that range...).
    Failed,
}

/// What became of an answer.
#[derive(Debug, Default)]
pub struct Progress {
    /// Blocks that extend the local chain, in order, to apply now.
    pub apply: Vec<Block>,
    /// The peer answered blocks that do not chain (wrong height or parent): it should
    /// be reported.
    pub misbehaved: Option<PeerId>,
}

/// The client's state: the local chain's head, the chunks in flight and those received
/// ahead of the head.
#[derive(Debug)]
pub struct SyncCore {
    chunk: u64,
    max_in_flight: usize,
    poll_interval: Duration,
    /// The next height to apply.
    next: u64,
    /// The id of the last applied block (empty before height 1).
    head_id: Bytes,
    /// Heights below this are applied, in flight, received or queued for a retry.
    planned_to: u64,
    /// Chunks in flight, by first height: the peer, the count and the request.
    in_flight: BTreeMap<u64, (PeerId, u64, u64)>,
    /// The next request's name.
    next_request: u64,
    /// Chunks received ahead of `next`, by first height, with the peer that sent each.
    received: BTreeMap<u64, (PeerId, Vec<Block>)>,
    /// Chunks to ask (again) now (first height, count).
    retry: BTreeSet<(u64, u64)>,
    /// Chunks no peer is known to have yet, asked again after the pause.
    parked: BTreeSet<(u64, u64)>,
    /// Connected peers, asked in turn.
    peers: Vec<PeerId>,
    turn: usize,
    /// Where a peer's chain was found to end (until the next pause ends: chains grow).
    tips: HashMap<PeerId, u64>,
    /// No new chunk is planned before this: no peer had the next one.
    idle_until: Option<Instant>,
}

impl SyncCore {
    /// A client whose chain ends at `height` with block id `head_id`, asking for
    /// `chunk` blocks per request with at most `max_in_flight` chunks in flight or
    /// waiting to be applied, and asking again `poll_interval` after reaching the end
    /// of a peer's chain.
    pub fn new(
        height: u64,
        head_id: Bytes,
        chunk: u64,
        max_in_flight: usize,
        poll_interval: Duration,
    ) -> Self {
        Self {
            chunk: chunk.max(1),
            max_in_flight: max_in_flight.max(1),
            poll_interval,
            next: height + 1,
            head_id,
            planned_to: height + 1,
            in_flight: BTreeMap::new(),
            next_request: 0,
            received: BTreeMap::new(),
            retry: BTreeSet::new(),
            parked: BTreeSet::new(),
            peers: Vec::new(),
            turn: 0,
            tips: HashMap::new(),
            idle_until: None,
        }
    }

    /// The height of the local chain.
    pub fn height(&self) -> u64 {
        self.next - 1
    }

    /// Chunks in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// `peer` is connected: it may be asked.
    pub fn on_peer_up(&mut self, peer: PeerId) {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
    }

    /// `peer` is gone: what it was asked is asked of others.
    pub fn on_peer_down(&mut self, peer: &PeerId) {
        self.peers.retain(|p| p != peer);
        self.tips.remove(peer);
        let lost: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, (p, _, _))| p == peer)
            .map(|(from, (_, count, _))| (*from, *count))
            .collect();
        for (from, count) in lost {
            self.in_flight.remove(&from);
            self.retry.insert((from, count));
        }
    }

    /// The requests to send now, keeping at most `max_in_flight` chunks in flight or
    /// waiting to be applied (one more while the chunk at the head is asked again). Each chunk goes to the next peer in turn whose chain is
    /// not known to end before it; a chunk no peer has is parked until the pause ends.
    pub fn poll(&mut self, now: Instant) -> Vec<Fetch> {
        if self.idle_until.is_some_and(|until| now >= until) {
            // Chains grew meanwhile: ask again, of every peer.
            self.idle_until = None;
            self.tips.clear();
            self.retry.append(&mut self.parked);
        }
        let mut out = Vec::new();
        while !self.peers.is_empty() && (self.has_room() || self.head_is_missing()) {
            let (from, count) = if let Some(first) = self.retry.pop_first() {
                first
            } else if self.idle_until.is_none() {
                let from = self.planned_to;
                self.planned_to += self.chunk;
                (from, self.chunk)
            } else {
                break;
            };
            let Some(peer) = self.peer_for(from) else {
                self.parked.insert((from, count));
                self.idle_until.get_or_insert(now + self.poll_interval);
                continue;
            };
            let request = self.next_request;
            self.next_request += 1;
            self.in_flight.insert(from, (peer, count, request));
            out.push(Fetch {
                peer,
                from,
                count,
                request,
            });
        }
        out
    }

    /// Whether fewer than `max_in_flight` chunks are in flight or waiting.
    fn has_room(&self) -> bool {
        self.in_flight.len() + self.received.len() < self.max_in_flight
    }

    /// Whether the chunk at the head must be asked again: it always may be, past the
    /// limit (by one), or the chunks received after it would wait for it forever.
    fn head_is_missing(&self) -> bool {
        self.retry
            .first()
            .is_some_and(|(from, _)| *from <= self.next)
    }

    /// The next peer in turn whose chain is not known to end below `from`.
    fn peer_for(&mut self, from: u64) -> Option<PeerId> {
        let n = self.peers.len();
        for _ in 0..n {
            let peer = self.peers[self.turn % n];
            self.turn = self.turn.wrapping_add(1);
            if self.tips.get(&peer).is_none_or(|tip| *tip >= from) {
                return Some(peer);
            }
        }
        None
    }

    /// When [`Self::poll`] has something new to ask: at the end of an idle period.
    pub fn next_poll(&self) -> Option<Instant> {
        self.idle_until
    }

    /// The answer to `fetch`, at `now`. A failed request is asked again after the
    /// pause (not at once: a chunk every peer has pruned would otherwise be asked in a
    /// loop).
    pub fn on_answer(&mut self, fetch: &Fetch, answer: Answer, now: Instant) -> Progress {
        let from = fetch.from;
        if self
            .in_flight
            .get(&from)
            .is_none_or(|(_, _, r)| *r != fetch.request)
        {
            // Given up on (its peer left) and perhaps asked again since: the answer to
            // the newer request is the one that counts.
            return Progress::default();
        }
        let Some((peer, count, _)) = self.in_flight.remove(&from) else {
            return Progress::default();
        };
        let blocks = match answer {
            Answer::Failed => {
                self.parked.insert((from, count));
                self.idle_until.get_or_insert(now + self.poll_interval);
                return Progress::default();
            }
            Answer::Blocks(blocks) => blocks,
        };
        let well_formed = blocks.len() as u64 <= count
            && blocks
                .iter()
                .zip(from..)
                .all(|(block, height)| block.height == height);
        if !well_formed {
            self.retry.insert((from, count));
            return Progress {
                misbehaved: Some(peer),
                ..Progress::default()
            };
        }
        let got = blocks.len() as u64;
        if got < count {
            // The peer's chain ends at `from + got - 1`: the rest goes to a peer with
            // more, or waits for the pause to end.
            self.tips.insert(peer, from + got - 1);
            self.retry.insert((from + got, count - got));
        }
        if got > 0 && from + got > self.next {
            self.received.insert(from, (peer, blocks));
        }
        self.apply_ready()
    }

    /// Applies the received chunks that continue the chain, in order. A chunk may
    /// start below the head (it overlaps a retried one): its blocks already applied are
    /// skipped.
    fn apply_ready(&mut self) -> Progress {
        let mut progress = Progress::default();
        while let Some(entry) = self.received.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (peer, blocks) = entry.remove();
            for block in blocks {
                if block.height < self.next {
                    continue;
                }
                if block.parent_id != self.head_id {
                    // It does not chain onto ours: ask for the rest again, and hold the
                    // peer that sent it to account.
                    progress.misbehaved = Some(peer);
                    self.retry.insert((self.next, self.chunk));
                    return progress;
                }
                self.next += 1;
                self.head_id = block.id.clone();
                progress.apply.push(block);
            }
        }
        progress
    }
}

#[cfg(test)]
mod tests;
