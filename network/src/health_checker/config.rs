//! The health checker's interval and thresholds: one source for each default.

use std::time::Duration;

/// Time between pings of each peer. Diem pings every 10 s: a dead peer is found within
/// tens of seconds while pings stay a negligible load.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Time a pong may take. A live peer answers within a round trip; 5 s tolerates a
/// congested intercontinental link and ends before the next ping is due.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failed pings before the peer is disconnected: one or two lost pings are
/// a hiccup, three in a row (30 s by default) a dead or stuck peer.
pub const DEFAULT_FAILURES_THRESHOLD: u32 = 3;
/// Largest ping or pong accepted: a nonce in protobuf takes at most 11 bytes.
pub const MAX_PING_MESSAGE_SIZE: usize = 64;

/// The health checker's configuration.
#[derive(Clone, Debug)]
pub struct HealthCheckerConfig {
    /// Time between pings of each peer.
    pub ping_interval: Duration,
    /// Time a pong may take before the ping counts as failed.
    pub ping_timeout: Duration,
    /// Consecutive failures after which the peer is disconnected (at least 1).
    pub failures_threshold: u32,
}

impl Default for HealthCheckerConfig {
    fn default() -> Self {
        Self {
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            failures_threshold: DEFAULT_FAILURES_THRESHOLD,
        }
    }
}
