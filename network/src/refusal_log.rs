//! How refusals reach the log: one line per refused or failed connection that an
//! operator can act on, rate-limited so that a flood of bad connections writes a few
//! lines, not thousands.
//!
//! [`LogLimiter`] is a core without I/O, fed instants: at most one line per (peer or
//! address, reason) per [`PER_KEY_INTERVAL`], and at most [`LINES_PER_SECOND`] lines a
//! second in all; a line written after others were held back says how many.

use std::collections::HashMap;
use std::time::Duration;

use netcore::{NetworkAddress, PeerId};
use noise::NoiseError;
use tokio::time::Instant;
use tracing::warn;

use crate::handshake::HandshakeError;
use crate::transport::UpgradeError;

/// Least time between two lines about the same peer (or address) and reason: a peer
/// that redials with backoff is logged about once a minute, not at every attempt.
pub const PER_KEY_INTERVAL: Duration = Duration::from_secs(60);
/// Most refusal lines a second, whatever their keys: a flood from many addresses writes
/// this many and counts the rest.
pub const LINES_PER_SECOND: u32 = 5;
/// Keys remembered at most; past it, the oldest are forgotten (their next refusal may
/// then be logged again, still within [`LINES_PER_SECOND`]).
const MAX_KEYS: usize = 4096;

/// Decides which refusal lines are written.
#[derive(Debug)]
pub struct LogLimiter {
    /// When each (key, reason) was last logged.
    last: HashMap<(String, &'static str), Instant>,
    /// The current second and the lines written in it.
    second: Option<Instant>,
    lines: u32,
    /// Refusals not logged since the last line written.
    held_back: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A limiter that has logged nothing.
    pub fn new() -> Self {
        Self {
            last: HashMap::new(),
            second: None,
            lines: 0,
            held_back: 0,
        }
    }

    /// Whether a refusal of `key` (a peer id or an address) for `reason` is logged at
    /// `now`: `Some(n)` with the number of refusals held back since the last line
    /// written, or `None` when this one is held back.
    pub fn allow(&mut self, key: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let recent = self
            .last
            .get(&(key.to_owned(), reason))
            .is_some_and(|&at| now.duration_since(at) < PER_KEY_INTERVAL);
        if self
            .second
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.lines = 0;
        }
        if recent || self.lines >= LINES_PER_SECOND {
            self.held_back += 1;
            return None;
        }
        self.lines += 1;
        if self.last.len() >= MAX_KEYS {
            self.last
                .retain(|_, at| now.duration_since(*at) < PER_KEY_INTERVAL);
            if self.last.len() >= MAX_KEYS
                && let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert((key.to_owned(), reason), now);
        Some(std::mem::take(&mut self.held_back))
    }
}

impl LogLimiter {
    /// Logs an inbound connection refused during its upgrade, unless held back.
    pub(crate) fn log_inbound_refusal(
        &mut self,
        from: &NetworkAddress,
        error: &UpgradeError,
        now: Instant,
    ) {
        let key = match refused_peer(error) {
            Some(peer) => peer.to_string(),
            None => host(from),
        };
        if let Some(held_back) = self.allow(&key, error.reason(), now) {
            warn!(
                %from,
                reason = error.reason(),
                %error,
                hint = hint(error),
                held_back,
                "refused an inbound connection"
            );
        }
    }

    /// Logs a dial that failed, unless held back.
    pub(crate) fn log_dial_failure(&mut self, peer: PeerId, error: &UpgradeError, now: Instant) {
        if let Some(held_back) = self.allow(&peer.to_string(), error.reason(), now) {
            warn!(
                peer = %peer.short_str(),
                reason = error.reason(),
                %error,
                hint = hint(error),
                held_back,
                "dial failed"
            );
        }
    }

    /// Logs the eviction of an inbound upgrade for a newer socket, unless held back.
    pub(crate) fn log_eviction(&mut self, limit: usize, now: Instant) {
        if let Some(held_back) = self.allow("", "too_many_upgrades", now) {
            warn!(
                limit,
                held_back,
                "evicted the oldest inbound connection still upgrading: more connections \
                 arrive than finish their handshakes (a flood, or many stalled dialers)"
            );
        }
    }

    /// Logs one peer id connected from two hosts at once, unless held back: two nodes
    /// running with one key, which makes the peer's connections flap between them.
    pub(crate) fn log_shared_key(
        &mut self,
        peer: PeerId,
        first: &NetworkAddress,
        second: &NetworkAddress,
        now: Instant,
    ) {
        if let Some(held_back) = self.allow(&peer.to_string(), "shared_key", now) {
            warn!(
                peer = %peer.short_str(),
                %first,
                %second,
                held_back,
                "one peer id connects from two hosts at once: two nodes probably share one \
                 key (each replaces the other's connection); give each node its own key"
            );
        }
    }
}

/// Replacements of one inbound connection by another within this time that make a
/// peer count as flapping.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// How many replacements within [`FLAP_WINDOW`] make a peer count as flapping: a node
/// that restarts replaces its connection once, two nodes with one key do so each time
/// either redials.
pub const FLAPS: usize = 3;

/// Recent replacements of peers' inbound connections: a peer whose connection is
/// replaced [`FLAPS`] times within [`FLAP_WINDOW`] is probably two nodes with one key.
#[derive(Debug, Default)]
pub struct Flaps(HashMap<PeerId, Vec<Instant>>);

impl Flaps {
    /// Records a replacement of `peer`'s connection at `now`; whether the peer flaps.
    pub fn record(&mut self, peer: PeerId, now: Instant) -> bool {
        // Peers that stopped flapping are forgotten as others are recorded.
        if self.0.len() >= MAX_KEYS {
            self.0.retain(|_, times| {
                times
                    .last()
                    .is_some_and(|t| now.duration_since(*t) < FLAP_WINDOW)
            });
        }
        let times = self.0.entry(peer).or_default();
        times.retain(|t| now.duration_since(*t) < FLAP_WINDOW);
        times.push(now);
        if times.len() > FLAPS {
            times.remove(0);
        }
        times.len() >= FLAPS
    }
}

/// The peer a refusal names, if it names one.
fn refused_peer(error: &UpgradeError) -> Option<&PeerId> {
    match error {
        UpgradeError::Noise(NoiseError::UntrustedPeer(peer) | NoiseError::Replay { peer, .. })
        | UpgradeError::Banned(peer) => Some(peer),
        _ => None,
    }
}

/// An address without its port: the host a connection came from.
pub(crate) fn host(addr: &NetworkAddress) -> String {
    let text = addr.to_string();
    text.split("/tcp/").next().unwrap_or(&text).to_owned()
}

/// What an operator should check about a refused or failed connection.
pub fn hint(error: &UpgradeError) -> &'static str {
    match error {
        UpgradeError::Handshake(HandshakeError::ChainMismatch { .. }) => {
            "check chain_id in both nodes' configs"
        }
        UpgradeError::Handshake(HandshakeError::NetworkMismatch { .. }) => {
            "check network_id in both nodes' configs"
        }
        UpgradeError::Noise(NoiseError::UntrustedPeer(_)) => {
            "the dialer is not in our trusted peers: add its peer id, or check its key"
        }
        UpgradeError::Noise(NoiseError::WrongExpectedKey(_)) => {
            "the dialer expects another node at this address: check the peer id it has for it"
        }
        UpgradeError::Noise(NoiseError::Replay { .. } | NoiseError::TimestampTooOld { .. }) => {
            "a replayed handshake, or the dialer's clock is behind ours: check its clock"
        }
        UpgradeError::Noise(NoiseError::TimestampInFuture { .. }) => {
            "the dialer's clock is over a minute ahead of ours: check both clocks"
        }
        UpgradeError::Noise(NoiseError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            "the remote closed the connection during the handshake: it may not trust our \
             key (is our peer id in its trusted peers?) or expect another key at this address"
        }
        UpgradeError::Noise(NoiseError::Truncated) => {
            "the remote closed the connection during the handshake: it may not trust our \
             key (is our peer id in its trusted peers?) or expect another key at this address"
        }
        UpgradeError::Noise(NoiseError::SelfDial) => {
            "an address of our own is configured as a peer's"
        }
        UpgradeError::Banned(_) => "the peer is banned for misbehaviour until its ban ends",
        UpgradeError::Timeout(_) | UpgradeError::Noise(NoiseError::Timeout(_)) => {
            "no complete handshake in time: a slow or stalled connection"
        }
        UpgradeError::WrongPeer => {
            "another node answers at this address: check the peer id configured for it"
        }
        _ => "see the error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_reason_per_interval() {
        let mut log = LogLimiter::new();
        let t = Instant::now();
        assert_eq!(log.allow("peer a", "untrusted_peer", t), Some(0));
        assert_eq!(
            log.allow("peer a", "untrusted_peer", t + Duration::from_secs(5)),
            None
        );
        // Another reason or another key is its own line.
        assert_eq!(
            log.allow("peer a", "replay", t + Duration::from_secs(6)),
            Some(1)
        );
        assert_eq!(
            log.allow("peer b", "untrusted_peer", t + Duration::from_secs(7)),
            Some(0)
        );
        // After the interval, the same again, saying how many were held back.
        assert_eq!(
            log.allow("peer a", "untrusted_peer", t + Duration::from_secs(61)),
            Some(0)
        );
    }

    #[test]
    fn a_flood_from_many_addresses_writes_a_few_lines_a_second() {
        let mut log = LogLimiter::new();
        let t = Instant::now();
        let (mut written, mut reported) = (0, 0);
        // 10,000 refusals from distinct addresses over two seconds.
        for i in 0..10_000u32 {
            let at = t + Duration::from_micros(u64::from(i) * 200);
            let key = format!("10.0.{}.{}", i / 256, i % 256);
            if let Some(held_back) = log.allow(&key, "noise", at) {
                written += 1;
                reported += held_back;
            }
        }
        assert!(written <= 2 * LINES_PER_SECOND, "{written} lines");
        // The lines written say how many were held back, to the last one.
        let next = log.allow("10.9.9.9", "noise", t + Duration::from_secs(3));
        assert_eq!(reported + next.unwrap(), u64::from(10_000 - written));
    }

    #[test]
    fn a_peer_replaced_three_times_in_a_minute_flaps() {
        let mut flaps = Flaps::default();
        let peer = PeerId::new([1; 32]);
        let t = Instant::now();
        assert!(!flaps.record(peer, t));
        assert!(!flaps.record(peer, t + Duration::from_secs(10)));
        assert!(flaps.record(peer, t + Duration::from_secs(20)));
        // A restart now and then is no flapping.
        let other = PeerId::new([2; 32]);
        for i in 0..5 {
            assert!(!flaps.record(other, t + Duration::from_secs(100 * i)));
        }
    }

    #[test]
    fn memory_stays_bounded() {
        let mut log = LogLimiter::new();
        let t = Instant::now();
        for i in 0..3 * MAX_KEYS {
            log.allow(&i.to_string(), "noise", t + Duration::from_secs(i as u64));
        }
        assert!(log.last.len() <= MAX_KEYS);
    }
}
