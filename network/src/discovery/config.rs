//! Discovery's interval and limits: one source for each default.

use std::time::Duration;

/// Time between pushes of this node's notes to a random connected peer. Gossip converges
/// in O(log N) pushes; 5 s spreads a changed address through a few hundred validators
/// within about a minute at negligible load.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Notes held (this node's included): a validator set of a few hundred with room for
/// growth. A note of a new peer past it is dropped.
pub const DEFAULT_MAX_NOTES: usize = 1024;
/// Addresses per note: a node listens on a handful of interfaces; more is refused.
pub const DEFAULT_MAX_ADDRESSES_PER_NOTE: usize = 8;
/// Largest push message, checked before it is decoded: `DEFAULT_MAX_NOTES` notes of a
/// few short addresses each (about 300 bytes) fit several times over.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 2 * 1024 * 1024;

/// Discovery's configuration.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Time between pushes.
    pub push_interval: Duration,
    /// Notes held at most (this node's own included); also the most sent in one push.
    pub max_notes: usize,
    /// Addresses per note at most.
    pub max_addresses_per_note: usize,
    /// Largest push message accepted, in bytes.
    pub max_message_size: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            push_interval: DEFAULT_PUSH_INTERVAL,
            max_notes: DEFAULT_MAX_NOTES,
            max_addresses_per_note: DEFAULT_MAX_ADDRESSES_PER_NOTE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}
