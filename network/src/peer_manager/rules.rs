//! The peer manager's decisions, as pure functions tested on their own.

use netcore::PeerId;
use netcore::transport::ConnectionOrigin;

/// Whether a new connection to `remote` replaces the `existing` one.
///
/// When two peers dial each other at the same moment each ends up with two connections,
/// one of each origin. Both ends must keep the same one, or each closes the other's
/// survivor: the rule keeps the connection dialed by the peer with the smaller id. Two
/// connections of the same origin mean the same side dialed twice; the newer one wins,
/// since the older one is most likely dead on the dialer's side.
pub fn new_connection_wins(
    local: PeerId,
    remote: PeerId,
    existing: ConnectionOrigin,
    new: ConnectionOrigin,
) -> bool {
    if existing == new {
        return true;
    }
    let new_dialed_by_local = new == ConnectionOrigin::Outbound;
    new_dialed_by_local == (local < remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionOrigin::{Inbound, Outbound};

    #[test]
    fn both_ends_keep_the_connection_dialed_by_the_smaller_id() {
        let small = PeerId::new([1; 32]);
        let large = PeerId::new([2; 32]);
        // The connection dialed by `small` is outbound at `small`, inbound at `large`.
        // Whichever arrived first, both ends keep it.
        assert!(new_connection_wins(small, large, Inbound, Outbound));
        assert!(!new_connection_wins(small, large, Outbound, Inbound));
        assert!(new_connection_wins(large, small, Outbound, Inbound));
        assert!(!new_connection_wins(large, small, Inbound, Outbound));
    }

    #[test]
    fn a_redial_from_the_same_side_replaces_the_old_connection() {
        let a = PeerId::new([1; 32]);
        let b = PeerId::new([2; 32]);
        for origin in [Inbound, Outbound] {
            assert!(new_connection_wins(a, b, origin, origin));
            assert!(new_connection_wins(b, a, origin, origin));
        }
    }
}
