//! The reputation system's configuration: the penalty of each misbehaviour, the ban
//! threshold, how fast scores fade and how long bans last. One source for each default.

use std::time::Duration;

use super::Misbehaviour;

/// Penalty of a multiplexer protocol violation (a frame past the window, a bad header):
/// no honest implementation does it, so two end in a ban.
pub const DEFAULT_PROTOCOL_VIOLATION_PENALTY: u32 = 50;
/// Penalty of garbage in a substream's protocol negotiation: malformed lines or too many
/// proposals. Honest peers negotiate cleanly; five are a ban.
pub const DEFAULT_NEGOTIATION_GARBAGE_PENALTY: u32 = 20;
/// Penalty of a message whose length prefix is over the maximum: it tries to make us
/// allocate, so two are a ban.
pub const DEFAULT_OVERSIZED_MESSAGE_PENALTY: u32 = 50;
/// Penalty of a message the application could not decode. Lower than a wire violation:
/// a version skew between honest nodes produces it too, so it takes ten.
pub const DEFAULT_UNDECODABLE_MESSAGE_PENALTY: u32 = 10;
/// Penalty of a bad signature (e.g. on a discovery note): forged data, two are a ban.
pub const DEFAULT_BAD_SIGNATURE_PENALTY: u32 = 50;
/// Penalty of failing the health checks (the checker has already disconnected the
/// peer): a slow or overloaded peer is not malicious, so it takes four in a row.
pub const DEFAULT_FAILED_HEALTH_CHECK_PENALTY: u32 = 25;
/// Score at which a peer is banned.
pub const DEFAULT_BAN_THRESHOLD: u32 = 100;
/// Time for a score to halve: an honest peer with rare faults never accumulates to the
/// threshold, while a burst of violations within minutes does.
pub const DEFAULT_SCORE_HALF_LIFE: Duration = Duration::from_secs(5 * 60);
/// First ban of a peer; each further ban doubles it.
pub const DEFAULT_BASE_BAN: Duration = Duration::from_secs(60);
/// Longest ban of an untrusted peer: a day, so a persistent attacker costs one refused
/// Noise handshake per reconnection attempt, and a misconfigured node recovers daily.
pub const DEFAULT_MAX_BAN: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest ban of a validator in the trusted set: short, so a transient fault (a bug
/// fixed by a restart, a corrupt message) cannot cut a node off from its validator set
/// for longer than a few consensus rounds.
pub const DEFAULT_TRUSTED_MAX_BAN: Duration = Duration::from_secs(30);
/// Time after its last ban when a peer's offence count is forgotten and its next ban
/// starts again from the base period.
pub const DEFAULT_FORGET_OFFENCES_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Peers whose reputation is tracked at once: bounds the memory a stream of new
/// identities (free in open mode) can make us hold. 16 Ki records are well under 1 MiB.
pub const DEFAULT_MAX_TRACKED_PEERS: usize = 16 * 1024;

/// The penalty of each kind of misbehaviour, in score points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PenaltyTable {
    /// A multiplexer protocol violation.
    pub protocol_violation: u32,
    /// Garbage in substream protocol negotiation.
    pub negotiation_garbage: u32,
    /// A message over the maximum size.
    pub oversized_message: u32,
    /// A message the application could not decode.
    pub undecodable_message: u32,
    /// A bad signature.
    pub bad_signature: u32,
    /// Failed health checks.
    pub failed_health_check: u32,
}

impl PenaltyTable {
    /// The penalty of `misbehaviour`.
    pub fn penalty(&self, misbehaviour: Misbehaviour) -> u32 {
        match misbehaviour {
            Misbehaviour::ProtocolViolation => self.protocol_violation,
            Misbehaviour::NegotiationGarbage => self.negotiation_garbage,
            Misbehaviour::OversizedMessage => self.oversized_message,
            Misbehaviour::UndecodableMessage => self.undecodable_message,
            Misbehaviour::BadSignature => self.bad_signature,
            Misbehaviour::FailedHealthCheck => self.failed_health_check,
        }
    }
}

impl Default for PenaltyTable {
    fn default() -> Self {
        Self {
            protocol_violation: DEFAULT_PROTOCOL_VIOLATION_PENALTY,
            negotiation_garbage: DEFAULT_NEGOTIATION_GARBAGE_PENALTY,
            oversized_message: DEFAULT_OVERSIZED_MESSAGE_PENALTY,
            undecodable_message: DEFAULT_UNDECODABLE_MESSAGE_PENALTY,
            bad_signature: DEFAULT_BAD_SIGNATURE_PENALTY,
            failed_health_check: DEFAULT_FAILED_HEALTH_CHECK_PENALTY,
        }
    }
}

/// How misbehaviour turns into bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReputationConfig {
    /// Points per misbehaviour.
    pub penalties: PenaltyTable,
    /// Score at which a peer is banned, compared rounded to the nearest point (its score
    /// then restarts from zero).
    pub ban_threshold: u32,
    /// Time for a score to halve.
    pub score_half_life: Duration,
    /// The first ban's length; the n-th ban lasts `base_ban × 2^(n-1)`.
    pub base_ban: Duration,
    /// The longest ban of a peer outside the trusted set.
    pub max_ban: Duration,
    /// The longest ban of a peer in the trusted set.
    pub trusted_max_ban: Duration,
    /// Time after the last ban when the offence count restarts from zero.
    pub forget_offences_after: Duration,
    /// Peers tracked at once.
    pub max_tracked_peers: usize,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            penalties: PenaltyTable::default(),
            ban_threshold: DEFAULT_BAN_THRESHOLD,
            score_half_life: DEFAULT_SCORE_HALF_LIFE,
            base_ban: DEFAULT_BASE_BAN,
            max_ban: DEFAULT_MAX_BAN,
            trusted_max_ban: DEFAULT_TRUSTED_MAX_BAN,
            forget_offences_after: DEFAULT_FORGET_OFFENCES_AFTER,
            max_tracked_peers: DEFAULT_MAX_TRACKED_PEERS,
        }
    }
}
