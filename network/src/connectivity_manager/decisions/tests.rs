use std::collections::HashSet;
use std::time::Duration;

use netcore::transport::ConnectionOrigin;
use netcore::{NetworkAddress, PeerId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::{Action, Backoff, ConnectivityCore};
use crate::connection::ConnectionId;
use crate::connectivity_manager::config::ConnectivityConfig;

fn peer(n: u8) -> PeerId {
    PeerId::new([n; 32])
}

fn addr(port: u16, p: PeerId) -> NetworkAddress {
    NetworkAddress::memory(port).with_peer_id(p)
}

fn config() -> ConnectivityConfig {
    ConnectivityConfig {
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(60),
        max_outbound_open: 2,
        ..ConnectivityConfig::default()
    }
}

fn set(peers: &[PeerId]) -> HashSet<PeerId> {
    peers.iter().copied().collect()
}

#[test]
fn backoff_doubles_within_its_jitter_bounds_up_to_the_cap() {
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut ceilings = Vec::new();
    for failures in 1..=40 {
        let (low, high) = backoff.bounds(failures);
        assert_eq!(low, high / 2);
        ceilings.push(high.as_secs());
        for _ in 0..50 {
            let d = backoff.delay(failures, &mut rng);
            assert!(low <= d && d <= high, "failure {failures}: {d:?}");
        }
    }
    assert_eq!(&ceilings[..8], &[1, 2, 4, 8, 16, 32, 60, 60]);
    assert!(ceilings.iter().all(|c| *c <= 60));
}

#[test]
fn dials_every_eligible_unconnected_peer_at_once_but_never_itself() {
    let me = peer(0);
    let mut cfg = config();
    cfg.seeds = vec![addr(1, peer(1)), addr(2, peer(2)), addr(9, me)];
    let mut core = ConnectivityCore::new(me, &cfg, Some(set(&[me, peer(1), peer(2), peer(3)])));
    let mut rng = StdRng::seed_from_u64(1);
    let now = Instant::now();
    let actions = core.on_tick(now, &mut rng);
    assert_eq!(
        actions,
        vec![
            Action::Dial(peer(1), addr(1, peer(1))),
            Action::Dial(peer(2), addr(2, peer(2))),
        ]
    );
    // Peer 3 has no address yet; learning one makes it dialable.
    core.update_discovered(peer(3), vec![NetworkAddress::memory(3)]);
    // Peers being dialed are not dialed twice.
    assert_eq!(
        core.on_tick(now, &mut rng),
        vec![Action::Dial(peer(3), addr(3, peer(3)))]
    );
    // Discovery telling us about ourselves changes nothing.
    core.update_discovered(me, vec![NetworkAddress::memory(9)]);
    assert!(core.on_tick(now, &mut rng).is_empty());
}

#[test]
fn failed_dials_back_off_rotate_addresses_and_reset_after_a_connection() {
    let me = peer(0);
    let p = peer(1);
    let mut cfg = config();
    cfg.seeds = vec![addr(10, p)];
    let mut core = ConnectivityCore::new(me, &cfg, Some(set(&[p])));
    core.update_discovered(p, vec![NetworkAddress::memory(11)]);
    let mut rng = StdRng::seed_from_u64(3);
    let start = Instant::now();
    let mut now = start;
    let mut dialed = Vec::new();
    for failures in 1..=10u32 {
        let actions = core.on_tick(now, &mut rng);
        let [Action::Dial(_, a)] = actions.as_slice() else {
            panic!("expected one dial, got {actions:?}");
        };
        dialed.push(a.port());
        core.on_dial_result(p, false, now, &mut rng);
        assert_eq!(core.failures(&p), failures);
        let retry = core.retry_at(&p).unwrap();
        let (low, high) = core.backoff.bounds(failures);
        assert!(retry >= now + low && retry <= now + high);
        // Not before the backoff has passed.
        assert!(
            core.on_tick(retry - Duration::from_millis(1), &mut rng)
                .is_empty()
        );
        now = retry;
    }
    // Discovered address first, then the seed, in turn.
    assert_eq!(&dialed[..4], &[11, 10, 11, 10]);

    core.on_connected(p, ConnectionId(1), ConnectionOrigin::Outbound);
    assert_eq!(core.failures(&p), 0);
    core.on_lost(p, ConnectionId(1));
    core.on_dial_result(p, false, now, &mut rng);
    let (low, high) = core.backoff.bounds(1);
    let retry = core.retry_at(&p).unwrap();
    assert!(
        retry >= now + low && retry <= now + high,
        "backoff starts over"
    );
}

#[test]
fn an_eligible_set_change_dials_new_peers_and_drops_removed_ones() {
    let me = peer(0);
    let (a, b, c) = (peer(1), peer(2), peer(3));
    let mut cfg = config();
    cfg.seeds = vec![addr(1, a), addr(2, b), addr(3, c)];
    let mut core = ConnectivityCore::new(me, &cfg, Some(set(&[a, b])));
    let mut rng = StdRng::seed_from_u64(5);
    let now = Instant::now();
    assert_eq!(core.on_tick(now, &mut rng).len(), 2);
    core.on_dial_result(a, true, now, &mut rng);
    core.on_dial_result(b, true, now, &mut rng);
    core.on_connected(a, ConnectionId(1), ConnectionOrigin::Outbound);
    core.on_connected(b, ConnectionId(2), ConnectionOrigin::Outbound);
    assert!(core.on_tick(now, &mut rng).is_empty());

    core.set_eligible(set(&[b, c]));
    assert_eq!(
        core.on_tick(now, &mut rng),
        vec![Action::Disconnect(a), Action::Dial(c, addr(3, c))]
    );
    // Asked once, not at every tick.
    assert!(core.on_tick(now, &mut rng).is_empty());
    core.on_lost(a, ConnectionId(1));
    assert!(core.on_tick(now, &mut rng).is_empty(), "a is not redialed");
}

#[test]
fn a_stale_lost_peer_does_not_remove_the_live_connection() {
    let me = peer(0);
    let p = peer(1);
    let mut cfg = config();
    cfg.seeds = vec![addr(1, p)];
    let mut core = ConnectivityCore::new(me, &cfg, Some(set(&[p])));
    let mut rng = StdRng::seed_from_u64(5);
    core.on_connected(p, ConnectionId(1), ConnectionOrigin::Outbound);
    core.on_connected(p, ConnectionId(2), ConnectionOrigin::Inbound);
    core.on_lost(p, ConnectionId(1));
    assert!(core.on_tick(Instant::now(), &mut rng).is_empty());
    core.on_lost(p, ConnectionId(2));
    assert_eq!(core.on_tick(Instant::now(), &mut rng).len(), 1);
}

#[test]
fn open_mode_bounds_outbound_connections_and_dials() {
    let me = peer(0);
    let mut cfg = config();
    cfg.seeds = (1..=6).map(|n| addr(u16::from(n), peer(n))).collect();
    let mut core = ConnectivityCore::new(me, &cfg, None);
    let mut rng = StdRng::seed_from_u64(9);
    let now = Instant::now();
    let first = core.on_tick(now, &mut rng);
    assert_eq!(first.len(), 2, "max_outbound_open is 2");
    assert!(
        core.on_tick(now, &mut rng).is_empty(),
        "two dials in flight"
    );
    let Action::Dial(p, _) = first[0].clone() else {
        panic!("dial expected");
    };
    core.on_dial_result(p, true, now, &mut rng);
    core.on_connected(p, ConnectionId(1), ConnectionOrigin::Outbound);
    assert!(
        core.on_tick(now, &mut rng).is_empty(),
        "one connected, one dialing"
    );
    // Inbound connections do not count against the outbound bound.
    core.on_connected(peer(6), ConnectionId(2), ConnectionOrigin::Inbound);
    let Action::Dial(q, _) = first[1].clone() else {
        panic!("dial expected");
    };
    core.on_dial_result(q, false, now, &mut rng);
    assert_eq!(core.on_tick(now, &mut rng).len(), 1);
}
