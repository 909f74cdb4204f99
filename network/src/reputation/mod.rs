//! Reputation and bans: misbehaviour adds graded penalties to a peer's score, which
//! fades with a half-life; a score at the threshold bans the peer for a period that
//! doubles with each repeat offence, capped short for validators in the trusted set.
//!
//! [`Reputation`] is an I/O-free core: misbehaviour and instants go in, verdicts come
//! out; it never reads the clock. The network feeds it (from protocol violations seen on
//! the wire, from failed health checks, and from applications through
//! [`NetworkSender::report`](crate::NetworkSender::report)), disconnects a peer when it
//! is banned and refuses the peer's connections, right after Noise authenticates them,
//! until the ban ends.

mod config;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use netcore::PeerId;

pub use config::*;

/// What a peer did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// It broke the multiplexer protocol (e.g. sent past a stream's window).
    ProtocolViolation,
    /// It sent garbage in a substream's protocol negotiation.
    NegotiationGarbage,
    /// It announced a message over the maximum size.
    OversizedMessage,
    /// It sent a message the application could not decode.
    UndecodableMessage,
    /// It sent data with a bad signature.
    BadSignature,
    /// It failed enough health checks in a row to be disconnected.
    FailedHealthCheck,
}

impl Misbehaviour {
    /// Every kind, for metrics and tests.
    pub const ALL: [Misbehaviour; 6] = [
        Misbehaviour::ProtocolViolation,
        Misbehaviour::NegotiationGarbage,
        Misbehaviour::OversizedMessage,
        Misbehaviour::UndecodableMessage,
        Misbehaviour::BadSignature,
        Misbehaviour::FailedHealthCheck,
    ];

    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Misbehaviour::ProtocolViolation => "protocol_violation",
            Misbehaviour::NegotiationGarbage => "negotiation_garbage",
            Misbehaviour::OversizedMessage => "oversized_message",
            Misbehaviour::UndecodableMessage => "undecodable_message",
            Misbehaviour::BadSignature => "bad_signature",
            Misbehaviour::FailedHealthCheck => "failed_health_check",
        }
    }
}

impl fmt::Display for Misbehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a penalty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The score rose but stays under the threshold.
    Penalized {
        /// The score now, rounded to the nearest point.
        score: u32,
    },
    /// The score reached the threshold: the peer is banned from now for `period`.
    Banned {
        /// The ban's length.
        period: Duration,
        /// Which ban of this peer it is (1 for the first).
        offence: u32,
    },
    /// The peer was already banned; the penalty changes nothing.
    AlreadyBanned,
}

/// What is remembered of one peer.
#[derive(Clone, Debug)]
struct Record {
    score: f64,
    updated: Instant,
    /// Bans so far (forgotten `forget_offences_after` past the last one).
    offences: u32,
    banned_until: Option<Instant>,
    last_ban: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self {
            score: 0.0,
            updated: now,
            offences: 0,
            banned_until: None,
            last_ban: None,
        }
    }

    /// Fades the score to `now`.
    fn decay(&mut self, now: Instant, half_life: Duration) {
        let elapsed = now.saturating_duration_since(self.updated);
        if !half_life.is_zero() {
            let halvings = elapsed.as_secs_f64() / half_life.as_secs_f64();
            self.score *= 0.5f64.powf(halvings);
        }
        self.updated = self.updated.max(now);
    }

    fn banned_at(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| now < until)
    }

    /// Whether the record carries nothing worth keeping at `now`.
    fn is_idle(&self, now: Instant, forget: Duration) -> bool {
        !self.banned_at(now)
            && self.score < 1.0
            && self
                .last_ban
                .is_none_or(|at| now.saturating_duration_since(at) >= forget)
    }
}

/// The reputation of every peer that misbehaved recently; see the module docs.
#[derive(Debug)]
pub struct Reputation {
    config: ReputationConfig,
    peers: HashMap<PeerId, Record>,
}

impl Reputation {
    /// An empty reputation table.
    pub fn new(config: ReputationConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReputationConfig {
        &self.config
    }

    /// Adds the penalty of `misbehaviour` to `peer`'s score at `now`; `trusted` says
    /// whether the peer is in the trusted set (its ban is then capped at
    /// [`ReputationConfig::trusted_max_ban`]).
    pub fn penalize(
        &mut self,
        peer: PeerId,
        misbehaviour: Misbehaviour,
        trusted: bool,
        now: Instant,
    ) -> Verdict {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_tracked_peers {
            self.make_room(now);
        }
        let config = &self.config;
        let record = self.peers.entry(peer).or_insert_with(|| Record::new(now));
        if record.banned_at(now) {
            return Verdict::AlreadyBanned;
        }
        if record
            .last_ban
            .is_some_and(|at| now.saturating_duration_since(at) >= config.forget_offences_after)
        {
            record.offences = 0;
        }
        record.decay(now, config.score_half_life);
        record.score += f64::from(config.penalties.penalty(misbehaviour));
        // Compared rounded to the nearest point: penalties that add up to the threshold
        // ban even when a few microseconds of decay passed between them.
        if record.score.round() < f64::from(config.ban_threshold) {
            return Verdict::Penalized {
                score: record.score.round() as u32,
            };
        }
        record.offences = record.offences.saturating_add(1);
        let period = ban_period(config, record.offences, trusted);
        record.score = 0.0;
        record.banned_until = Some(now + period);
        record.last_ban = Some(now);
        Verdict::Banned {
            period,
            offence: record.offences,
        }
    }

    /// When `peer`'s ban ends, if it is banned at `now`.
    pub fn banned_until(&self, peer: &PeerId, now: Instant) -> Option<Instant> {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .filter(|&until| now < until)
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.banned_until(peer, now).is_some()
    }

    /// `peer`'s score at `now`, rounded to the nearest point (0 for a peer never
    /// penalized).
    pub fn score(&self, peer: &PeerId, now: Instant) -> u32 {
        self.peers.get(peer).map_or(0, |r| {
            let mut r = r.clone();
            r.decay(now, self.config.score_half_life);
            r.score.round() as u32
        })
    }

    /// Peers banned at `now`.
    pub fn banned_count(&self, now: Instant) -> usize {
        self.peers.values().filter(|r| r.banned_at(now)).count()
    }

    /// Peers tracked.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Forgets records that carry nothing at `now` (score faded, no ban in force, no
    /// offence to remember).
    pub fn prune(&mut self, now: Instant) {
        let half_life = self.config.score_half_life;
        let forget = self.config.forget_offences_after;
        self.peers.retain(|_, r| {
            r.decay(now, half_life);
            !r.is_idle(now, forget)
        });
    }

    /// Frees one slot when the table is full: prunes, then evicts the record that
    /// matters least (no ban in force and the lowest score; else the ban ending first).
    fn make_room(&mut self, now: Instant) {
        self.prune(now);
        if self.peers.len() < self.config.max_tracked_peers {
            return;
        }
        let victim = self
            .peers
            .iter()
            .min_by(|(_, a), (_, b)| {
                let key = |r: &Record| {
                    (
                        r.banned_at(now),
                        r.banned_until.unwrap_or(now),
                        r.score as u64,
                    )
                };
                key(a).cmp(&key(b))
            })
            .map(|(peer, _)| *peer);
        if let Some(peer) = victim {
            self.peers.remove(&peer);
        }
    }
}

/// The length of a peer's `offence`-th ban: doubling from the base, capped.
pub fn ban_period(config: &ReputationConfig, offence: u32, trusted: bool) -> Duration {
    let doublings = offence.saturating_sub(1).min(31);
    let period = config
        .base_ban
        .checked_mul(1u32 << doublings)
        .unwrap_or(Duration::MAX);
    let cap = if trusted {
        config.trusted_max_ban.min(config.max_ban)
    } else {
        config.max_ban
    };
    period.min(cap)
}

#[cfg(test)]
mod tests;
