//! The ConnectivityManager's intervals and limits: one source for each default.

use std::time::Duration;

use netcore::NetworkAddress;

/// How often the manager looks for eligible peers to dial and ineligible ones to drop.
/// Diem checks every 5 s: a lost validator is redialed within seconds, and a check costs
/// a map walk.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// First backoff delay after a failed dial: long enough not to spin on a refused port,
/// short enough that a restarting peer is back within a check or two.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest backoff delay. Diem's ten-minute cap made recovery slow; near a minute keeps a
/// dead peer cheap and a recovered one quickly found.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Outbound connections (established plus dials in flight) in open mode, where anyone may
/// be eligible: enough for redundancy, few enough not to load public nodes.
pub const DEFAULT_MAX_OUTBOUND_OPEN: usize = 8;
/// Requests (address updates, eligible-set changes) queued for the manager. They are rare
/// (one per discovery push that taught something, one per epoch) and served at once.
pub const REQUEST_QUEUE_SIZE: usize = 64;

/// The ConnectivityManager's configuration.
#[derive(Clone, Debug)]
pub struct ConnectivityConfig {
    /// Time between checks.
    pub check_interval: Duration,
    /// First backoff delay after a failed dial; it doubles with each failure.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_cap: Duration,
    /// In open mode, outbound connections plus dials in flight at most.
    pub max_outbound_open: usize,
    /// Addresses known from configuration, each naming its peer (`/p2p/<id>`); kept
    /// beside what discovery learns and tried after it.
    pub seeds: Vec<NetworkAddress>,
}

impl Default for ConnectivityConfig {
    fn default() -> Self {
        Self {
            check_interval: DEFAULT_CHECK_INTERVAL,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_outbound_open: DEFAULT_MAX_OUTBOUND_OPEN,
            seeds: Vec::new(),
        }
    }
}
