//! The peer manager's counts: refusals, failures and connection events, in the node's
//! metrics.

use netcore::transport::ConnectionOrigin;

use super::PeerManager;
use super::decisions::Refusal;

impl PeerManager {
    /// Counts a connection or dial refused because the peer is banned.
    pub(super) fn count_ban_refusal(&self, origin: ConnectionOrigin) {
        self.shared
            .protocols
            .metrics
            .defence
            .ban_refusals
            .with_label_values(&[origin.as_str()])
            .inc();
        let now = tokio::time::Instant::now().into_std();
        let banned = self
            .shared
            .protocols
            .reporter
            .reputation
            .lock()
            .banned_count(now);
        self.shared
            .protocols
            .metrics
            .defence
            .banned_peers
            .set(banned as i64);
    }

    /// Counts a failed handshake or upgrade, by `reason`.
    pub(super) fn count_failure(&self, reason: &str) {
        self.shared
            .protocols
            .metrics
            .connection
            .handshake_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// Counts a connection event, by name.
    pub(super) fn count_event(&self, event: &str) {
        self.shared
            .protocols
            .metrics
            .connection
            .events
            .with_label_values(&[event])
            .inc();
    }

    /// Counts an upgraded connection refused before the tie-break.
    pub(super) fn count_refusal(&self, refusal: Refusal, origin: ConnectionOrigin) {
        match refusal {
            Refusal::Banned => {
                // Banned while its upgrade was in flight.
                self.count_ban_refusal(origin);
                self.count_failure("banned");
            }
            Refusal::SelfConnection => self.count_failure("self_dial"),
            Refusal::TooManyUntrusted => self.count_event("refused_untrusted"),
        }
    }
}
