//! The ConnectivityManager's decisions, free of I/O: connection events, dial results and
//! address updates go in; [`Action`]s come out of [`ConnectivityCore::on_tick`]. Time is
//! an argument and randomness a caller's `Rng`, so tests feed exact instants and seeds.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use netcore::transport::ConnectionOrigin;
use netcore::{NetworkAddress, PeerId};
use rand::Rng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::config::ConnectivityConfig;
use crate::connection::ConnectionId;

/// What the driver should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Dial the peer at this address (which names it with `/p2p/`).
    Dial(PeerId, NetworkAddress),
    /// Close the connection to the peer: it left the eligible set.
    Disconnect(PeerId),
}

/// Exponential backoff with jitter: after the `n`-th consecutive failure the delay is
/// drawn uniformly from `[d/2, d]` where `d = min(cap, base * 2^(n-1))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The largest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The range the delay after `failures` consecutive failures (at least 1) lies in.
    pub fn bounds(&self, failures: u32) -> (Duration, Duration) {
        let shift = failures.saturating_sub(1).min(32);
        let ceiling = self
            .base
            .checked_mul(1u32 << shift.min(31))
            .map_or(self.cap, |d| d.min(self.cap));
        (ceiling / 2, ceiling)
    }

    /// A delay after `failures` consecutive failures, jittered within [`Backoff::bounds`].
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let (low, high) = self.bounds(failures);
        if high <= low {
            return high;
        }
        low + rng.gen_range(Duration::ZERO..=high - low)
    }
}

/// What is known of one peer: where it listens, and how dialing it went.
#[derive(Debug, Default)]
struct PeerEntry {
    /// Learned from discovery, tried first (fresher).
    discovered: Vec<NetworkAddress>,
    /// From configuration.
    seeds: Vec<NetworkAddress>,
    /// Index (modulo the address count) of the address to dial next.
    next_addr: usize,
    /// Consecutive failed dials since the last connection.
    failures: u32,
    /// No dial before this instant.
    retry_at: Option<Instant>,
}

impl PeerEntry {
    fn addresses(&self) -> impl Iterator<Item = &NetworkAddress> {
        let discovered = &self.discovered;
        discovered
            .iter()
            .chain(self.seeds.iter().filter(move |a| !discovered.contains(a)))
    }

    fn address_to_dial(&self) -> Option<NetworkAddress> {
        let count = self.addresses().count();
        if count == 0 {
            return None;
        }
        self.addresses().nth(self.next_addr % count).cloned()
    }
}

/// The eligible set, the address book, connections and backoff; see the module docs.
#[derive(Debug)]
pub struct ConnectivityCore {
    local: PeerId,
    backoff: Backoff,
    max_outbound_open: usize,
    /// `Some`: only these peers (mutual mode). `None`: open mode, anyone in the book.
    eligible: Option<HashSet<PeerId>>,
    book: HashMap<PeerId, PeerEntry>,
    connected: HashMap<PeerId, (ConnectionId, ConnectionOrigin)>,
    dialing: HashSet<PeerId>,
    disconnecting: HashSet<PeerId>,
}

impl ConnectivityCore {
    /// A core for the node `local`. `eligible` is the trusted set in mutual mode, `None`
    /// in open mode. Seeds in `config` that name no peer (or this node) are skipped.
    pub fn new(
        local: PeerId,
        config: &ConnectivityConfig,
        eligible: Option<HashSet<PeerId>>,
    ) -> Self {
        let mut core = Self {
            local,
            backoff: Backoff {
                base: config.backoff_base,
                cap: config.backoff_cap,
            },
            max_outbound_open: config.max_outbound_open,
            eligible: None,
            book: HashMap::new(),
            connected: HashMap::new(),
            dialing: HashSet::new(),
            disconnecting: HashSet::new(),
        };
        if let Some(set) = eligible {
            core.set_eligible(set);
        }
        for seed in &config.seeds {
            if let Some(peer) = seed.peer_id().filter(|p| *p != local) {
                let entry = core.book.entry(peer).or_default();
                if !entry.seeds.contains(seed) {
                    entry.seeds.push(seed.clone());
                }
            }
        }
        core
    }

    /// Replaces the eligible set (e.g. at an epoch change). Peers that left it are
    /// disconnected at the next tick; new ones are dialed then (the manager ticks at
    /// once after a change).
    pub fn set_eligible(&mut self, mut peers: HashSet<PeerId>) {
        peers.remove(&self.local);
        self.eligible = Some(peers);
    }

    /// Whether `peer` may be connected.
    pub fn is_eligible(&self, peer: &PeerId) -> bool {
        *peer != self.local && self.eligible.as_ref().is_none_or(|set| set.contains(peer))
    }

    /// Replaces what discovery knows of `peer`'s addresses. A changed set is tried from
    /// its first address at the next tick, without waiting for the backoff: the old
    /// addresses were what failed.
    pub fn update_discovered(&mut self, peer: PeerId, addrs: Vec<NetworkAddress>) {
        if peer == self.local {
            return;
        }
        let addrs: Vec<NetworkAddress> = addrs.into_iter().map(|a| a.with_peer_id(peer)).collect();
        let entry = self.book.entry(peer).or_default();
        if entry.discovered != addrs {
            entry.discovered = addrs;
            entry.next_addr = 0;
            entry.retry_at = None;
        }
    }

    /// A connection to `peer` is up; its backoff resets.
    pub fn on_connected(&mut self, peer: PeerId, id: ConnectionId, origin: ConnectionOrigin) {
        self.connected.insert(peer, (id, origin));
        let entry = self.book.entry(peer).or_default();
        entry.failures = 0;
        entry.retry_at = None;
    }

    /// The connection `id` to `peer` ended. A stale id (a replaced connection) is ignored.
    pub fn on_lost(&mut self, peer: PeerId, id: ConnectionId) {
        if self
            .connected
            .get(&peer)
            .is_some_and(|(live, _)| *live == id)
        {
            self.connected.remove(&peer);
            self.disconnecting.remove(&peer);
        }
    }

    /// A dial this core asked for ended. A failure moves to the peer's next address and
    /// delays the next dial by the backoff.
    pub fn on_dial_result(&mut self, peer: PeerId, ok: bool, now: Instant, rng: &mut impl Rng) {
        self.dialing.remove(&peer);
        let entry = self.book.entry(peer).or_default();
        if ok {
            entry.failures = 0;
            entry.retry_at = None;
        } else {
            entry.failures = entry.failures.saturating_add(1);
            entry.next_addr = entry.next_addr.wrapping_add(1);
            entry.retry_at = Some(now + self.backoff.delay(entry.failures, rng));
        }
    }

    /// The decisions of one check: dial every eligible, unconnected peer whose backoff
    /// has passed (all at once in mutual mode; up to the outbound limit in open mode),
    /// and disconnect connected peers that are no longer eligible.
    pub fn on_tick(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut to_drop: Vec<PeerId> = self
            .connected
            .keys()
            .filter(|p| !self.is_eligible(p) && !self.disconnecting.contains(p))
            .copied()
            .collect();
        to_drop.sort();
        for peer in to_drop {
            self.disconnecting.insert(peer);
            actions.push(Action::Disconnect(peer));
        }

        let mut candidates: Vec<(PeerId, NetworkAddress)> = self
            .book
            .iter()
            .filter(|(peer, entry)| {
                self.is_eligible(peer)
                    && !self.connected.contains_key(peer)
                    && !self.dialing.contains(peer)
                    && entry.retry_at.is_none_or(|at| at <= now)
            })
            .filter_map(|(peer, entry)| entry.address_to_dial().map(|a| (*peer, a)))
            .collect();
        candidates.sort_by_key(|c| c.0);
        if self.eligible.is_none() {
            let outbound = self
                .connected
                .values()
                .filter(|(_, origin)| *origin == ConnectionOrigin::Outbound)
                .count();
            let room = self
                .max_outbound_open
                .saturating_sub(outbound + self.dialing.len());
            candidates.shuffle(rng);
            candidates.truncate(room);
        }
        for (peer, addr) in candidates {
            self.dialing.insert(peer);
            actions.push(Action::Dial(peer, addr));
        }
        actions
    }

    /// Consecutive failed dials of `peer` since its last connection.
    pub fn failures(&self, peer: &PeerId) -> u32 {
        self.book.get(peer).map_or(0, |e| e.failures)
    }

    /// When `peer` may be dialed again, if it is backing off.
    pub fn retry_at(&self, peer: &PeerId) -> Option<Instant> {
        self.book.get(peer).and_then(|e| e.retry_at)
    }

    /// The peers connected now.
    pub fn connected(&self) -> impl Iterator<Item = &PeerId> {
        self.connected.keys()
    }
}

#[cfg(test)]
mod tests;
