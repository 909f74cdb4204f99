//! The health checker's failure counting, free of I/O: which peers to ping, and what a
//! ping's outcome means.

use std::collections::HashMap;

use netcore::PeerId;

use crate::connection::ConnectionId;

/// What a ping's outcome means for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The ping succeeded; the failure count is back to zero.
    Healthy,
    /// The ping failed; this many consecutive failures so far, under the threshold.
    Failing(u32),
    /// The threshold is reached: disconnect the peer (it is no longer pinged).
    Disconnect,
    /// The outcome belongs to a connection that is gone; it changes nothing.
    Stale,
}

#[derive(Debug)]
struct PeerHealth {
    connection: ConnectionId,
    failures: u32,
    in_flight: bool,
}

/// Consecutive ping failures per connected peer.
#[derive(Debug)]
pub struct HealthState {
    threshold: u32,
    peers: HashMap<PeerId, PeerHealth>,
}

impl HealthState {
    /// Disconnect after `threshold` consecutive failures (a threshold of 0 acts as 1).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            peers: HashMap::new(),
        }
    }

    /// A connection to `peer` is up: it starts with no failures.
    pub fn on_connected(&mut self, peer: PeerId, connection: ConnectionId) {
        self.peers.insert(
            peer,
            PeerHealth {
                connection,
                failures: 0,
                in_flight: false,
            },
        );
    }

    /// The connection `connection` to `peer` ended (stale ids are ignored).
    pub fn on_lost(&mut self, peer: PeerId, connection: ConnectionId) {
        if self
            .peers
            .get(&peer)
            .is_some_and(|h| h.connection == connection)
        {
            self.peers.remove(&peer);
        }
    }

    /// The peers to ping now: every tracked peer without a ping in flight, which is
    /// then marked in flight.
    pub fn peers_to_ping(&mut self) -> Vec<(PeerId, ConnectionId)> {
        let mut due: Vec<(PeerId, ConnectionId)> = self
            .peers
            .iter_mut()
            .filter(|(_, h)| !h.in_flight)
            .map(|(peer, h)| {
                h.in_flight = true;
                (*peer, h.connection)
            })
            .collect();
        due.sort();
        due
    }

    /// Records the outcome of the ping of `peer` over `connection`.
    pub fn on_ping_result(&mut self, peer: PeerId, connection: ConnectionId, ok: bool) -> Verdict {
        let Some(health) = self
            .peers
            .get_mut(&peer)
            .filter(|h| h.connection == connection)
        else {
            return Verdict::Stale;
        };
        health.in_flight = false;
        if ok {
            health.failures = 0;
            return Verdict::Healthy;
        }
        health.failures += 1;
        if health.failures >= self.threshold {
            self.peers.remove(&peer);
            Verdict::Disconnect
        } else {
            Verdict::Failing(health.failures)
        }
    }

    /// Consecutive failures of `peer` so far.
    pub fn failures(&self, peer: &PeerId) -> Option<u32> {
        self.peers.get(peer).map(|h| h.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PeerId = PeerId::new([1; 32]);
    const C1: ConnectionId = ConnectionId(1);
    const C2: ConnectionId = ConnectionId(2);

    fn ping(state: &mut HealthState, ok: bool) -> Verdict {
        assert_eq!(state.peers_to_ping(), vec![(P, C1)]);
        state.on_ping_result(P, C1, ok)
    }

    #[test]
    fn exactly_threshold_consecutive_failures_disconnect() {
        let mut state = HealthState::new(3);
        state.on_connected(P, C1);
        assert_eq!(ping(&mut state, false), Verdict::Failing(1));
        assert_eq!(ping(&mut state, false), Verdict::Failing(2));
        assert_eq!(ping(&mut state, false), Verdict::Disconnect);
        assert!(
            state.peers_to_ping().is_empty(),
            "a dropped peer is not pinged"
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut state = HealthState::new(3);
        state.on_connected(P, C1);
        assert_eq!(ping(&mut state, false), Verdict::Failing(1));
        assert_eq!(ping(&mut state, false), Verdict::Failing(2));
        assert_eq!(ping(&mut state, true), Verdict::Healthy);
        assert_eq!(state.failures(&P), Some(0));
        assert_eq!(ping(&mut state, false), Verdict::Failing(1));
        assert_eq!(ping(&mut state, false), Verdict::Failing(2));
    }

    #[test]
    fn a_peer_with_a_ping_in_flight_is_not_pinged_again() {
        let mut state = HealthState::new(3);
        state.on_connected(P, C1);
        assert_eq!(state.peers_to_ping().len(), 1);
        assert!(state.peers_to_ping().is_empty());
        state.on_ping_result(P, C1, true);
        assert_eq!(state.peers_to_ping().len(), 1);
    }

    #[test]
    fn outcomes_of_a_replaced_connection_are_stale() {
        let mut state = HealthState::new(1);
        state.on_connected(P, C1);
        let _ = state.peers_to_ping();
        state.on_connected(P, C2);
        assert_eq!(state.on_ping_result(P, C1, false), Verdict::Stale);
        state.on_lost(P, C1);
        assert_eq!(state.failures(&P), Some(0), "the live connection stays");
        state.on_lost(P, C2);
        assert_eq!(state.failures(&P), None);
    }
}
