//! What a slow application is told of a peer's connections: its queued notifications
//! are coalesced rather than refused, so it always ends with the peer's current state.

use std::collections::{HashSet, VecDeque};

use crate::connection::ConnectionId;
use crate::protocols::{Delivery, Event};

/// Reduces one peer's queued connection notifications to what they amount to for an
/// application that has not read them: the loss of each connection it knew before them
/// (their `NewPeer` is not in the queue) and the arrival of the connection live at the
/// end (its `NewPeer`, with no `LostPeer` after it), in their order. A connection that
/// came and went inside the queue leaves nothing.
pub(super) fn coalesce_notifications(queue: &mut VecDeque<Delivery>) {
    let announced: HashSet<ConnectionId> = queue
        .iter()
        .filter_map(|q| match q {
            Delivery::Event(Event::NewPeer(meta)) => Some(meta.connection_id),
            _ => None,
        })
        .collect();
    let lost: HashSet<ConnectionId> = queue
        .iter()
        .filter_map(|q| match q {
            Delivery::Event(Event::LostPeer { connection_id, .. }) => Some(*connection_id),
            _ => None,
        })
        .collect();
    let live = queue.iter().rev().find_map(|q| match q {
        Delivery::Event(Event::NewPeer(meta)) if !lost.contains(&meta.connection_id) => {
            Some(meta.connection_id)
        }
        _ => None,
    });
    queue.retain(|q| match q {
        Delivery::Event(Event::NewPeer(meta)) => Some(meta.connection_id) == live,
        Delivery::Event(Event::LostPeer { connection_id, .. }) => {
            !announced.contains(connection_id)
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use netcore::PeerId;
    use netcore::transport::ConnectionOrigin;

    use super::*;
    use crate::connection::{ConnectionMetadata, DisconnectReason};

    const PEER: PeerId = PeerId::new([3; 32]);

    fn new(id: u64) -> Delivery {
        Delivery::Event(Event::NewPeer(Arc::new(ConnectionMetadata {
            peer_id: PEER,
            addr: "/memory/1".parse().expect("an address"),
            origin: ConnectionOrigin::Inbound,
            connection_id: ConnectionId(id),
            protocols: Vec::new(),
            client_version: String::new(),
        })))
    }

    fn lost(id: u64) -> Delivery {
        Delivery::Event(Event::LostPeer {
            peer_id: PEER,
            connection_id: ConnectionId(id),
            reason: DisconnectReason::ConnectionLost,
        })
    }

    /// The queue as `+id` (up) and `-id` (down).
    fn render(queue: &VecDeque<Delivery>) -> Vec<String> {
        queue
            .iter()
            .map(|q| match q {
                Delivery::Event(Event::NewPeer(m)) => format!("+{}", m.connection_id.0),
                Delivery::Event(Event::LostPeer { connection_id, .. }) => {
                    format!("-{}", connection_id.0)
                }
                _ => "other".to_owned(),
            })
            .collect()
    }

    fn coalesced(items: Vec<Delivery>) -> Vec<String> {
        let mut queue: VecDeque<Delivery> = items.into();
        coalesce_notifications(&mut queue);
        render(&queue)
    }

    #[test]
    fn the_known_connections_loss_and_the_live_ones_arrival_remain() {
        // Known connection 1 lost, 2 and 3 came and went, 4 is live.
        let queue = vec![lost(1), new(2), lost(2), new(3), lost(3), new(4)];
        assert_eq!(coalesced(queue), ["-1", "+4"]);
    }

    #[test]
    fn a_peer_that_ends_down_leaves_only_the_loss_of_what_the_application_knew() {
        assert_eq!(coalesced(vec![lost(1), new(2), lost(2)]), ["-1"]);
        assert_eq!(coalesced(vec![new(2), lost(2)]), Vec::<String>::new());
    }

    #[test]
    fn a_replacement_keeps_its_order() {
        assert_eq!(coalesced(vec![new(2), lost(1)]), ["+2", "-1"]);
    }

    proptest::proptest! {
        /// Whatever the churn, an application that follows each peer's live
        /// connection ends in the same state from the coalesced queue as from the
        /// whole one.
        #[test]
        fn coalescing_keeps_the_end_state(steps in proptest::collection::vec(proptest::bool::ANY, 0..40)) {
            // A valid history: the peer starts up on connection 0, then each step either
            // replaces the connection (new first) or loses it and maybe reconnects.
            let mut items = Vec::new();
            let (mut live, mut next) = (Some(0u64), 1u64);
            for replace in steps {
                match (live, replace) {
                    (Some(old), true) => {
                        items.push(new(next));
                        items.push(lost(old));
                        live = Some(next);
                        next += 1;
                    }
                    (Some(old), false) => {
                        items.push(lost(old));
                        live = None;
                    }
                    (None, _) => {
                        items.push(new(next));
                        live = Some(next);
                        next += 1;
                    }
                }
            }
            let follow = |queue: &[String]| {
                let mut state = Some(0u64);
                for item in queue {
                    let id: u64 = item[1..].parse().expect("an id");
                    if item.starts_with('+') {
                        state = Some(id);
                    } else if state == Some(id) {
                        state = None;
                    }
                }
                state
            };
            let whole = render(&items.iter().map(clone_event).collect());
            let short = coalesced(items);
            proptest::prop_assert_eq!(follow(&short), follow(&whole));
            proptest::prop_assert!(short.len() <= 2);
        }
    }

    fn clone_event(q: &Delivery) -> Delivery {
        match q {
            Delivery::Event(Event::NewPeer(m)) => Delivery::Event(Event::NewPeer(Arc::clone(m))),
            Delivery::Event(Event::LostPeer {
                peer_id,
                connection_id,
                reason,
            }) => Delivery::Event(Event::LostPeer {
                peer_id: *peer_id,
                connection_id: *connection_id,
                reason: *reason,
            }),
            _ => unreachable!("only notifications here"),
        }
    }
}
