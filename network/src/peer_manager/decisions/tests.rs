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

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_inbound_upgrades: 4,
    max_stranger_upgrades: 4,
    max_dials: 3,
    max_inbound_untrusted: 2,
};

fn peer(n: u8) -> PeerId {
    PeerId::new([n; 32])
}

fn origin() -> impl Strategy<Value = ConnectionOrigin> {
    prop_oneof![Just(Inbound), Just(Outbound)]
}

proptest! {
    /// Two peers dial each other at once: whatever order each end sees the two
    /// connections in, both keep the same one.
    #[test]
    fn a_simultaneous_dial_leaves_both_ends_on_the_same_connection(
        a in 1u8..=255,
        b in 1u8..=255,
        a_sees_its_own_first in any::<bool>(),
        b_sees_its_own_first in any::<bool>(),
    ) {
        prop_assume!(a != b);
        let (pa, pb) = (peer(a), peer(b));
        // The connection dialed by A is outbound at A and inbound at B; and back.
        let survivor_at = |local: PeerId, remote: PeerId, own_first: bool| {
            let mut d = Decisions::new(local, LIMITS);
            let order = if own_first { [Outbound, Inbound] } else { [Inbound, Outbound] };
            for origin in order {
                d.on_upgraded(remote, origin, true, false);
            }
            let live = d.live(&remote).unwrap();
            // Name the survivor by its dialer.
            if live.origin == Outbound { local } else { remote }
        };
        prop_assert_eq!(
            survivor_at(pa, pb, a_sees_its_own_first),
            survivor_at(pb, pa, b_sees_its_own_first)
        );
        prop_assert_eq!(survivor_at(pa, pb, true), pa.min(pb));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upgraded {
        peer: u8,
        origin: ConnectionOrigin,
        trusted: bool,
        banned: bool,
    },
    /// A connection ended: the live one of `peer`, or a stale id.
    Closed {
        peer: u8,
        live: bool,
    },
    Disconnect {
        peer: u8,
        named: Option<bool>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Peer 0 is the local node.
    prop_oneof![
        4 => (0u8..6, origin(), any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(peer, origin, trusted, banned)| Op::Upgraded { peer, origin, trusted, banned }
        ),
        2 => (1u8..6, any::<bool>()).prop_map(|(peer, live)| Op::Closed { peer, live }),
        1 => (1u8..6, prop::option::of(any::<bool>()))
            .prop_map(|(peer, named)| Op::Disconnect { peer, named }),
    ]
}

proptest! {
    /// Against a model of each peer's live connection: one connection per peer, fresh
    /// growing ids, replacement naming the old one, stale ends and verdicts ignored,
    /// bans and self-connections refused, the untrusted inbound limit kept.
    #[test]
    fn each_peer_has_at_most_one_live_connection_and_stale_news_changes_nothing(
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let local = peer(0);
        let mut d = Decisions::new(local, LIMITS);
        // The model: each peer's live (id, origin, counted as untrusted inbound).
        let mut model: HashMap<PeerId, (ConnectionId, ConnectionOrigin, bool)> = HashMap::new();
        let mut last_id = 0;
        for op in ops {
            match op {
                Op::Upgraded { peer: n, origin, trusted, banned } => {
                    let p = peer(n);
                    let got = d.on_upgraded(p, origin, trusted, banned);
                    let untrusted = !trusted && origin == Inbound;
                    let counted = model.values().filter(|l| l.2).count();
                    let old = model.get(&p).copied();
                    let expected = if banned {
                        Upgraded::Refuse(Refusal::Banned)
                    } else if p == local {
                        Upgraded::Refuse(Refusal::SelfConnection)
                    } else if untrusted && !old.is_some_and(|l| l.2)
                        && counted >= LIMITS.max_inbound_untrusted
                    {
                        Upgraded::Refuse(Refusal::TooManyUntrusted)
                    } else if old.is_some_and(|l| !new_connection_wins(local, p, l.1, origin)) {
                        Upgraded::KeepExisting
                    } else {
                        Upgraded::Register {
                            id: ConnectionId(last_id + 1),
                            replaces: old.map(|l| l.0),
                        }
                    };
                    prop_assert_eq!(got, expected);
                    if let Upgraded::Register { id, .. } = got {
                        prop_assert!(id.0 > last_id);
                        last_id = id.0;
                        model.insert(p, (id, origin, untrusted));
                    }
                }
                Op::Closed { peer: n, live } => {
                    let p = peer(n);
                    let id = match (live, model.get(&p)) {
                        (true, Some(l)) => l.0,
                        _ => ConnectionId(last_id + 1000),
                    };
                    let was_live = model.get(&p).is_some_and(|l| l.0 == id);
                    prop_assert_eq!(d.on_closed(&p, id), was_live);
                    if was_live {
                        model.remove(&p);
                    }
                }
                Op::Disconnect { peer: n, named } => {
                    let p = peer(n);
                    let live = model.get(&p).map(|l| l.0);
                    let named = named.map(|current| match (current, live) {
                        (true, Some(id)) => id,
                        _ => ConnectionId(last_id + 1000),
                    });
                    let got = d.disconnect(p, named);
                    match (live, named) {
                        (None, _) => prop_assert!(
                            matches!(got, Err(DisconnectError::NotConnected(_))),
                            "not connected: {:?}",
                            got
                        ),
                        (Some(l), Some(n)) if l != n => prop_assert!(
                            matches!(got, Err(DisconnectError::StaleConnection { .. })),
                            "a stale connection named: {:?}",
                            got
                        ),
                        (Some(l), _) => {
                            prop_assert_eq!(got.ok(), Some(l));
                            model.remove(&p);
                        }
                    }
                }
            }
            for (p, l) in &model {
                prop_assert_eq!(d.live(p).map(|live| (live.id, live.origin)), Some((l.0, l.1)));
            }
            prop_assert!(model.values().filter(|l| l.2).count() <= LIMITS.max_inbound_untrusted);
        }
    }

    /// Sockets arrive and upgrades finish in any order: never more than the limit in
    /// flight, and each socket over it evicts the oldest still in flight.
    #[test]
    fn upgrades_in_flight_stay_within_the_limit_and_the_oldest_go_first(
        ops in prop::collection::vec(prop::option::of(0usize..8), 0..200),
    ) {
        let mut d = Decisions::new(peer(0), LIMITS);
        let mut model: VecDeque<UpgradeId> = VecDeque::new();
        for op in ops {
            match op {
                // A socket arrives.
                None => {
                    let (id, evicted) = d.on_inbound_socket(false, |_| false).unwrap();
                    let mut expected = Vec::new();
                    while model.len() >= LIMITS.max_inbound_upgrades {
                        expected.extend(model.pop_front());
                    }
                    prop_assert_eq!(evicted, expected);
                    prop_assert!(!model.contains(&id));
                    model.push_back(id);
                }
                // The upgrade at this position (if any) finishes.
                Some(at) => {
                    if let Some(id) = model.remove(at) {
                        d.on_upgrade_finished(id);
                    }
                }
            }
            prop_assert_eq!(d.upgrades_in_flight(), model.len());
            prop_assert!(model.len() <= LIMITS.max_inbound_upgrades);
        }
    }
}

#[test]
fn no_room_for_upgrades_refuses_every_socket() {
    let mut d = Decisions::new(
        peer(0),
        Limits {
            max_inbound_upgrades: 0,
            ..LIMITS
        },
    );
    assert_eq!(d.on_inbound_socket(false, |_| false), None);
}

#[test]
fn dials_join_the_one_in_flight_and_stay_within_their_limit() {
    let mut d = Decisions::new(peer(0), LIMITS);
    assert_eq!(d.dial(peer(0), false), Dial::Refuse(DialRefusal::SelfDial));
    assert_eq!(d.dial(peer(1), true), Dial::Refuse(DialRefusal::Banned));
    assert_eq!(d.dial(peer(1), false), Dial::Start);
    assert_eq!(d.dial(peer(1), false), Dial::Join);
    assert_eq!(d.dial(peer(2), false), Dial::Start);
    assert_eq!(d.dial(peer(3), false), Dial::Start);
    assert_eq!(
        d.dial(peer(4), false),
        Dial::Refuse(DialRefusal::TooManyDials)
    );
    // The first dial connects: the next request for that peer succeeds at once, and
    // its slot is free again.
    d.on_dialed(&peer(1));
    assert!(matches!(
        d.on_upgraded(peer(1), Outbound, true, false),
        Upgraded::Register { replaces: None, .. }
    ));
    assert_eq!(d.dial(peer(1), false), Dial::Connected);
    assert_eq!(d.dial(peer(4), false), Dial::Start);
}

#[test]
fn a_ban_during_the_upgrade_refuses_even_a_trusted_peer_and_keeps_the_live_one() {
    let mut d = Decisions::new(peer(0), LIMITS);
    let Upgraded::Register { id, .. } = d.on_upgraded(peer(1), Inbound, true, false) else {
        panic!("registered");
    };
    assert_eq!(
        d.on_upgraded(peer(1), Inbound, true, true),
        Upgraded::Refuse(Refusal::Banned)
    );
    assert_eq!(d.live(&peer(1)).map(|l| l.id), Some(id));
}

proptest! {
    /// Strangers' and validators' sockets arrive in any order: strangers never hold
    /// more than their share, and never evict a validator's socket.
    #[test]
    fn strangers_never_evict_a_validators_handshake(
        arrivals in prop::collection::vec(prop::bool::weighted(0.2), 0..200),
    ) {
        let limits = Limits { max_inbound_upgrades: 6, max_stranger_upgrades: 4, ..LIMITS };
        let mut d = Decisions::new(peer(0), limits);
        let mut validators_pending: Vec<UpgradeId> = Vec::new();
        let mut strangers_pending: VecDeque<UpgradeId> = VecDeque::new();
        for validator in arrivals {
            let Some((id, evicted)) = d.on_inbound_socket(validator, |_| false) else {
                // Refused: only a stranger, with every slot held by validators.
                prop_assert!(!validator && validators_pending.len() >= 6);
                continue;
            };
            for gone in &evicted {
                if !validator {
                    prop_assert!(!validators_pending.contains(gone), "a stranger evicted a validator");
                }
                validators_pending.retain(|v| v != gone);
                strangers_pending.retain(|s| s != gone);
            }
            if validator { validators_pending.push(id) } else { strangers_pending.push_back(id) }
            prop_assert!(strangers_pending.len() <= 4);
            prop_assert!(validators_pending.len() + strangers_pending.len() <= 6);
            prop_assert_eq!(d.upgrades_in_flight(), validators_pending.len() + strangers_pending.len());
        }
    }
}

#[test]
fn a_handshake_that_shows_a_trusted_id_is_not_evicted_by_strangers() {
    let limits = Limits {
        max_inbound_upgrades: 3,
        max_stranger_upgrades: 3,
        ..LIMITS
    };
    let mut d = Decisions::new(peer(0), limits);
    let (first, _) = d.on_inbound_socket(false, |_| false).unwrap();
    d.on_inbound_socket(false, |_| false).unwrap();
    d.on_inbound_socket(false, |_| false).unwrap();
    // The first has since shown a trusted peer's id: the next stranger evicts the
    // second, not it.
    let claimed = |id| id == first;
    let (_, evicted) = d.on_inbound_socket(false, claimed).unwrap();
    assert_eq!(evicted, vec![first + 1]);
    let (_, evicted) = d.on_inbound_socket(false, claimed).unwrap();
    assert_eq!(evicted, vec![first + 2]);
    // Claims protect among strangers only: when every stranger's upgrade claims, the
    // oldest goes, so forged claims cannot lock strangers out.
    let (_, evicted) = d.on_inbound_socket(false, |_| true).unwrap();
    assert_eq!(evicted, vec![first]);
}
