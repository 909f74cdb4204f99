//! ConnectivityManager over memsocket with paused time: it connects the eligible set,
//! follows changes to it, and redials a dead peer with bounded, resetting backoff.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

#[path = "common/components.rs"]
mod components;

use std::collections::HashSet;
use std::time::Duration;

use components::{Components, Listen, StackNode, identities, start_stack};
use network::connectivity_manager::{Backoff, ConnectivityConfig};
use network::{DisconnectReason, Event};
use tokio::time::Instant;

const CHECK: Duration = Duration::from_millis(100);

fn manager_config(seeds: Vec<netcore::NetworkAddress>) -> ConnectivityConfig {
    ConnectivityConfig {
        check_interval: CHECK,
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(8),
        seeds,
        ..ConnectivityConfig::default()
    }
}

fn with_manager(config: ConnectivityConfig) -> Components {
    Components {
        connectivity: Some(config),
        ..Components::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_eligible_set_change_connects_new_peers_and_drops_removed_ones() {
    let (ids, trusted) = identities(4);
    let peers: Vec<_> = ids.iter().map(|i| i.peer_id()).collect();
    let mut others: Vec<StackNode> = ids[1..]
        .iter()
        .map(|id| {
            start_stack(
                id.clone(),
                &trusted,
                &[],
                Listen::Memory,
                Components::default(),
            )
        })
        .collect();
    let seeds = others.iter().map(|n| n.addr.clone()).collect();
    let mut node = start_stack(
        ids[0].clone(),
        &trusted,
        &peers[1..3],
        Listen::Memory,
        with_manager(manager_config(seeds)),
    );

    tokio::time::sleep(CHECK * 3).await;
    assert_eq!(node.connected(), HashSet::from([peers[1], peers[2]]));

    let handle = node.connectivity.clone().unwrap();
    handle
        .set_eligible(HashSet::from([peers[2], peers[3]]))
        .await
        .unwrap();
    tokio::time::sleep(CHECK * 3).await;
    assert_eq!(node.connected(), HashSet::from([peers[2], peers[3]]));
    // Peer 1 saw its connection closed by the manager, and it stays closed.
    let mut lost = None;
    while let Some(event) = others[0].next_event(Duration::from_millis(1)).await {
        if let Event::LostPeer {
            peer_id, reason, ..
        } = event
        {
            lost = Some((peer_id, reason));
        }
    }
    assert_eq!(lost, Some((peers[0], DisconnectReason::ConnectionLost)));
    tokio::time::sleep(CHECK * 10).await;
    assert!(!node.connected().contains(&peers[1]));

    node.shutdown().await;
    for other in &mut others {
        other.shutdown().await;
    }
}

/// Polls `node`'s failed-dial counter every `step` until `until` and returns the instants
/// at which it grew.
async fn failed_dial_instants(node: &StackNode, until: Instant, step: Duration) -> Vec<Instant> {
    let mut seen = node.counter("network_connectivity_dials_total", Some("failure"));
    let mut instants = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(step).await;
        let now = node.counter("network_connectivity_dials_total", Some("failure"));
        if now > seen {
            instants.push(Instant::now());
            seen = now;
        }
    }
    instants
}

/// Each gap between failed dials lies within the backoff bounds of its failure count,
/// widened by one check interval and one polling step (the dial happens at the first
/// check after the backoff; the failure is seen at the next poll).
fn assert_gaps_within_backoff(instants: &[Instant], backoff: Backoff, step: Duration) {
    assert!(instants.len() >= 4, "too few failures: {}", instants.len());
    for (i, pair) in instants.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let (low, high) = backoff.bounds(u32::try_from(i + 1).unwrap());
        assert!(
            gap + step >= low && gap <= high + CHECK + step,
            "gap {i}: {gap:?} not within [{low:?}, {high:?}] (+ check and poll)"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_peer_is_redialed_with_bounded_backoff_that_resets_after_a_connection() {
    // Below memsocket's ephemeral range, so no port-0 bind can take it.
    const PORT: u16 = 21_311;
    let (ids, trusted) = identities(2);
    let peers: Vec<_> = ids.iter().map(|i| i.peer_id()).collect();
    let seed = netcore::NetworkAddress::memory(PORT).with_peer_id(peers[1]);
    let config = manager_config(vec![seed]);
    let backoff = Backoff {
        base: config.backoff_base,
        cap: config.backoff_cap,
    };
    let node = start_stack(
        ids[0].clone(),
        &trusted,
        &peers[1..],
        Listen::Memory,
        with_manager(config),
    );
    let step = Duration::from_millis(10);

    // Nobody listens on the seed's port: dials fail with growing gaps up to the cap.
    let failures =
        failed_dial_instants(&node, Instant::now() + Duration::from_secs(60), step).await;
    assert_gaps_within_backoff(&failures, backoff, step);
    // With a cap of 8 s, at least 60 s / 8 s - 1 failures, and no more than the
    // uncapped doubling allows.
    assert!(
        failures.len() >= 6 && failures.len() <= 16,
        "{}",
        failures.len()
    );

    // The peer comes up: it is connected within one capped backoff and a check.
    let mut peer = start_stack(
        ids[1].clone(),
        &trusted,
        &[],
        Listen::MemoryPort(PORT),
        Components::default(),
    );
    let up = Instant::now();
    while !node.connected().contains(&peers[1]) {
        tokio::time::sleep(step).await;
        assert!(
            Instant::now() - up <= backoff.cap + CHECK + step,
            "not reconnected"
        );
    }

    // It goes away again: the backoff starts over from its base.
    peer.shutdown().await;
    let failures =
        failed_dial_instants(&node, Instant::now() + Duration::from_secs(20), step).await;
    assert_gaps_within_backoff(&failures, backoff, step);
    let (low, high) = backoff.bounds(1);
    let first_gap = failures[1] - failures[0];
    assert!(first_gap + step >= low && first_gap <= high + CHECK + step);
}
