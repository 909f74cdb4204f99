//! PeerManager over memsocket: connections, simultaneous dials, refusals, disconnects.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use std::time::Duration;

use common::{
    Net, Node, connect, counter_in, eventually, identities, start_node, start_nodes,
    start_nodes_with,
};
use futures::FutureExt;
use futures::StreamExt;
use netcore::transport::ConnectionOrigin;
use network::{DialError, DisconnectError, DisconnectReason, Event, NetworkConfig};

/// Every event queued for `node` right now.
fn drain(node: &mut Node) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(Some(event)) = node.events.next().now_or_never() {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn dialing_connects_both_sides_with_metadata() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let (a, b) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.sender.dial(b.addr.clone()).await.unwrap();
    let at_a = a.expect_new_peer().await;
    let at_b = b.expect_new_peer().await;
    assert_eq!(at_a.peer_id, b.peer_id);
    assert_eq!(at_a.origin, ConnectionOrigin::Outbound);
    assert_eq!(at_b.peer_id, a.peer_id);
    assert_eq!(at_b.origin, ConnectionOrigin::Inbound);
    assert_eq!(at_a.protocols, vec![common::RPC, common::DIRECT]);
    assert!(at_b.client_version.starts_with("netstack/"));
    assert_eq!(a.sender.connected_peers().len(), 1);
    assert!(b.sender.is_connected(&a.peer_id));
}

#[tokio::test(start_paused = true)]
async fn simultaneous_dials_keep_exactly_one_connection_without_stray_lost_peer() {
    let mut rounds_with_two_connections = 0;
    for round in 0..100 {
        let mut nodes = start_nodes(Net::Memory, 2);
        let (a_addr, b_addr) = (nodes[0].addr.clone(), nodes[1].addr.clone());
        let (ra, rb) = tokio::join!(nodes[0].sender.dial(b_addr), nodes[1].sender.dial(a_addr));
        ra.unwrap();
        rb.unwrap();
        // Let every spawned close and notification run (paused time: no real waiting).
        tokio::time::sleep(Duration::from_secs(1)).await;

        let ids: Vec<_> = nodes.iter().map(|n| n.peer_id).collect();
        let duplicates: u64 = nodes
            .iter()
            .map(|n| {
                n.counter("network_connection_events_total", "duplicate_closed")
                    + n.counter("network_connection_events_total", "replaced")
            })
            .sum();
        if duplicates > 0 {
            rounds_with_two_connections += 1;
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            let remote = ids[1 - i];
            let peers = node.sender.connected_peers();
            assert_eq!(peers.len(), 1, "round {round}: one connection survives");
            let survivor = &peers[0];
            assert_eq!(survivor.peer_id, remote);
            // Both ends keep the connection dialed by the smaller peer id.
            let expected = if ids[i] < remote {
                ConnectionOrigin::Outbound
            } else {
                ConnectionOrigin::Inbound
            };
            assert_eq!(survivor.origin, expected, "round {round}");

            let events = drain(node);
            let last_new = events.iter().rev().find_map(|e| match e {
                Event::NewPeer(m) => Some(m.connection_id),
                _ => None,
            });
            assert_eq!(
                last_new,
                Some(survivor.connection_id),
                "round {round}: the last NewPeer is the survivor"
            );
            for event in &events {
                if let Event::LostPeer {
                    connection_id,
                    reason,
                    ..
                } = event
                {
                    assert_ne!(
                        *connection_id, survivor.connection_id,
                        "round {round}: no LostPeer for the survivor"
                    );
                    assert_eq!(*reason, DisconnectReason::Replaced);
                }
            }
        }
        for mut node in nodes {
            node.shutdown().await;
        }
    }
    // The dials really crossed: both connections were up at once in most rounds.
    assert!(
        rounds_with_two_connections >= 50,
        "only {rounds_with_two_connections} rounds had two connections"
    );
}

/// What an application that follows each peer's live connection sees of `events`,
/// starting with the peer up on a connection announced before them: the changes it
/// sees (`up`, `down`) and the live connection at the end.
fn live_view(events: &[Event]) -> (Vec<&'static str>, Option<network::ConnectionId>) {
    enum State {
        UpBefore,
        Up(network::ConnectionId),
        Down,
    }
    let mut state = State::UpBefore;
    let mut seen = Vec::new();
    for event in events {
        match (event, &state) {
            (Event::NewPeer(meta), State::Down) => {
                seen.push("up");
                state = State::Up(meta.connection_id);
            }
            (Event::NewPeer(meta), _) => state = State::Up(meta.connection_id),
            (Event::LostPeer { .. }, State::UpBefore) => {
                seen.push("down");
                state = State::Down;
            }
            (Event::LostPeer { connection_id, .. }, State::Up(live)) if live == connection_id => {
                seen.push("down");
                state = State::Down;
            }
            _ => {}
        }
    }
    let live = match state {
        State::Up(id) => Some(id),
        _ => None,
    };
    (seen, live)
}

#[tokio::test(start_paused = true)]
async fn a_replaced_connection_is_announced_before_the_old_ones_loss() {
    // A node that comes back with the same key while its old connection still looks
    // alive: the listener keeps the newer inbound connection.
    let seed = [9u8; 32];
    let (mut ids, _) = identities(1);
    let a_id = noise::Identity::from_secret_bytes(&seed).peer_id();
    let trusted = noise::TrustedPeers::from_peers([a_id, ids[0].peer_id()]).unwrap();
    let config = NetworkConfig::default();
    let mut b = start_node(Net::Memory, ids.remove(0), trusted.clone(), config.clone());
    let old = noise::Identity::from_secret_bytes(&seed);
    let mut a_old = start_node(Net::Memory, old, trusted.clone(), config.clone());
    connect(&mut a_old, &mut b).await;
    let new = noise::Identity::from_secret_bytes(&seed);
    let a_new = start_node(Net::Memory, new, trusted, config);
    a_new.sender.dial(b.addr.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let survivor = b.sender.connected_peers()[0].connection_id;
    let events = drain(&mut b);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::NewPeer(_) => "new",
            Event::LostPeer {
                reason: DisconnectReason::Replaced,
                ..
            } => "replaced",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["new", "replaced"], "the new connection first");
    // Followed connection by connection, the peer stayed up: no event at all.
    assert_eq!(live_view(&events), (vec![], Some(survivor)));
    for mut node in [a_old, a_new, b] {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_application_ends_with_the_peers_current_state_after_heavy_churn() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let mut b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    // 50 connections come and go while b's application reads nothing: 99
    // notifications, past the 64 a peer may have queued.
    for round in 0..50 {
        a.sender.dial(b.addr.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if round < 49 {
            a.sender.disconnect(b.peer_id).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live = b.sender.connected_peers()[0].connection_id;
    let events = drain(&mut b);
    assert!(events.len() <= 64, "{} notifications queued", events.len());
    // Followed from the start (the peer was down), the events end on the live connection.
    let mut state = None;
    for event in &events {
        match event {
            Event::NewPeer(meta) => state = Some(meta.connection_id),
            Event::LostPeer { connection_id, .. } if state == Some(*connection_id) => {
                state = None;
            }
            _ => {}
        }
    }
    assert_eq!(
        state,
        Some(live),
        "the application sees the peer up on its live connection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_verdict_about_a_replaced_connection_leaves_the_live_one_and_costs_nothing() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    connect(&mut a, &mut b).await;
    let first = b.sender.connected_peers()[0].connection_id;
    a.sender.disconnect(b.peer_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.sender.dial(b.addr.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let live = b.sender.connected_peers()[0].connection_id;
    assert_ne!(first, live);

    // A health verdict about the first connection arrives late.
    let result = b
        .sender
        .disconnect_connection(a.peer_id, first, DisconnectReason::HealthCheckFailed)
        .await;
    assert!(matches!(
        result,
        Err(DisconnectError::StaleConnection { connection, .. }) if connection == first
    ));
    assert!(
        b.sender.is_connected(&a.peer_id),
        "the live connection stays"
    );
    assert_eq!(b.sender.reputation_score(&a.peer_id), 0, "no penalty");

    // The same verdict about the live connection closes it and counts.
    b.sender
        .disconnect_connection(a.peer_id, live, DisconnectReason::HealthCheckFailed)
        .await
        .unwrap();
    assert!(!b.sender.is_connected(&a.peer_id));
    assert!(b.sender.reputation_score(&a.peer_id) > 0);
}

#[tokio::test]
async fn a_failed_health_check_of_a_peer_not_connected_costs_it_nothing() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let result = b
        .sender
        .disconnect_with_reason(a.peer_id, DisconnectReason::HealthCheckFailed)
        .await;
    assert!(matches!(result, Err(DisconnectError::NotConnected(_))));
    assert_eq!(b.sender.reputation_score(&a.peer_id), 0);
}

#[tokio::test]
async fn refuses_to_dial_itself_even_through_an_address_it_was_given() {
    let nodes = start_nodes(Net::Memory, 1);
    let own = nodes[0].addr.clone();
    assert!(matches!(
        nodes[0].sender.dial(own).await,
        Err(DialError::SelfDial)
    ));
    // An address of another endpoint naming our own id is refused just the same.
    let forged = "/memory/1"
        .parse::<netcore::NetworkAddress>()
        .unwrap()
        .with_peer_id(nodes[0].peer_id);
    assert!(matches!(
        nodes[0].sender.dial(forged).await,
        Err(DialError::SelfDial)
    ));
    assert!(nodes[0].counter("network_handshake_failures_total", "self_dial") >= 2);
}

#[tokio::test]
async fn dial_needs_the_peer_id_in_the_address() {
    let nodes = start_nodes(Net::Memory, 2);
    let bare = nodes[1].addr.clone().without_peer_id();
    assert!(matches!(
        nodes[0].sender.dial(bare).await,
        Err(DialError::MissingPeerId)
    ));
}

#[tokio::test]
async fn chain_id_mismatch_closes_the_connection_and_both_sides_count_it() {
    let (ids, trusted) = identities(2);
    let mut ids = ids.into_iter();
    let mut config = NetworkConfig {
        chain_id: 1,
        ..NetworkConfig::default()
    };
    let a = start_node(
        Net::Memory,
        ids.next().unwrap(),
        trusted.clone(),
        config.clone(),
    );
    config.chain_id = 2;
    let b = start_node(Net::Memory, ids.next().unwrap(), trusted, config);

    let err = a.sender.dial(b.addr.clone()).await.unwrap_err();
    assert!(matches!(err, DialError::Failed(_)), "{err:?}");
    assert_eq!(
        a.counter("network_handshake_failures_total", "chain_mismatch"),
        1
    );
    // The listener sees the same mismatch on its side.
    eventually(|| b.counter("network_handshake_failures_total", "chain_mismatch") == 1).await;
    assert!(a.sender.connected_peers().is_empty());
    assert!(b.sender.connected_peers().is_empty());
}

#[tokio::test]
async fn untrusted_dialer_is_refused_in_mutual_mode() {
    let (ids, trusted) = identities(1);
    let listener = start_node(
        Net::Memory,
        ids.into_iter().next().unwrap(),
        trusted.clone(),
        NetworkConfig::default(),
    );
    // The stranger trusts the listener, but the listener does not trust the stranger.
    let stranger_id = noise::Identity::generate();
    let stranger = start_node(Net::Memory, stranger_id, trusted, NetworkConfig::default());
    assert!(stranger.sender.dial(listener.addr.clone()).await.is_err());
    eventually(|| listener.counter("network_handshake_failures_total", "untrusted_peer") == 1)
        .await;
    assert!(listener.sender.connected_peers().is_empty());
}

#[tokio::test]
async fn disconnect_closes_gracefully_and_both_sides_see_lost_peer() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let (a, b) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    connect(a, b).await;

    a.sender.disconnect(b.peer_id).await.unwrap();
    match a.next_event().await {
        Event::LostPeer {
            peer_id, reason, ..
        } => {
            assert_eq!(peer_id, b.peer_id);
            assert_eq!(reason, DisconnectReason::Requested);
        }
        other => panic!("expected LostPeer, got {other:?}"),
    }
    match b.next_event().await {
        Event::LostPeer {
            peer_id, reason, ..
        } => {
            assert_eq!(peer_id, a.peer_id);
            assert_eq!(reason, DisconnectReason::ConnectionLost);
        }
        other => panic!("expected LostPeer, got {other:?}"),
    }
    assert!(a.sender.connected_peers().is_empty());
    assert!(b.sender.connected_peers().is_empty());
    assert!(matches!(
        a.sender.disconnect(b.peer_id).await,
        Err(network::DisconnectError::NotConnected(_))
    ));
}

#[tokio::test]
async fn five_peers_form_a_full_mesh() {
    let mut nodes = start_nodes_with(Net::Memory, 5, NetworkConfig::default());
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr.clone()).collect();
    for (i, node) in nodes.iter().enumerate() {
        for addr in &addrs[i + 1..] {
            node.sender.dial(addr.clone()).await.unwrap();
        }
    }
    eventually(|| nodes.iter().all(|n| n.sender.connected_peers().len() == 4)).await;
    for node in &mut nodes {
        let new_peers = drain(node)
            .iter()
            .filter(|e| matches!(e, Event::NewPeer(_)))
            .count();
        assert_eq!(new_peers, 4);
    }
}

#[tokio::test]
async fn shutdown_tells_applications_and_peers() {
    let mut nodes = start_nodes(Net::Memory, 2);
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    let mut b = b;
    connect(&mut a, &mut b).await;
    b.shutdown().await;
    match a.next_event().await {
        Event::LostPeer { peer_id, .. } => assert_eq!(peer_id, b.peer_id),
        other => panic!("expected LostPeer, got {other:?}"),
    }
    match b.next_event().await {
        Event::LostPeer { reason, .. } => assert_eq!(reason, DisconnectReason::Shutdown),
        other => panic!("expected LostPeer, got {other:?}"),
    }
}

#[tokio::test]
async fn open_mode_bounds_untrusted_inbound_but_not_named_validators() {
    use netcore::transport::MemoryTransport;
    use network::NetworkBuilder;
    use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};

    let (validator, stranger, listener_id) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let validators = TrustedPeers::from_peers([validator.peer_id()]).unwrap();
    // The listener admits anyone through Noise, names one validator, and takes no
    // connection from anybody else.
    let config = NetworkConfig {
        max_inbound_untrusted: 0,
        ..NetworkConfig::default()
    };
    let registry = prometheus::Registry::new();
    let mut builder = NetworkBuilder::new(
        config,
        NoiseUpgrader::new(listener_id, NoiseConfig::open()),
        registry.clone(),
    );
    builder.trusted_peers(validators);
    builder.listen_on("/memory/0".parse().unwrap());
    let listener = builder.start(MemoryTransport::default()).unwrap();
    let addr = listener.listen_addrs()[0].clone();

    let dial_from = |id: Identity| {
        let mut b = NetworkBuilder::new(
            NetworkConfig::default(),
            NoiseUpgrader::new(id, NoiseConfig::open()),
            prometheus::Registry::new(),
        );
        b.listen_on("/memory/0".parse().unwrap());
        b.start(MemoryTransport::default()).unwrap()
    };
    let (v, s) = (dial_from(validator), dial_from(stranger));
    v.sender().dial(addr.clone()).await.unwrap();
    let _ = s.sender().dial(addr).await;
    // The stranger's connection is refused once its upgrade is through.
    let refused = || {
        counter_in(
            &registry,
            "network_connection_events_total",
            "refused_untrusted",
        )
    };
    eventually(|| refused() >= 1).await;
    let connected: Vec<_> = listener
        .sender()
        .connected_peers()
        .iter()
        .map(|m| m.peer_id)
        .collect();
    assert_eq!(connected, vec![v.local_peer_id()]);
    assert_eq!(refused(), 1);
}

#[tokio::test]
async fn an_upgrade_limit_above_noises_is_refused_at_build() {
    use network::{BuildError, NetworkBuilder};
    use noise::{Identity, NoiseConfig, NoiseUpgrader};

    let noise = NoiseConfig {
        max_concurrent_inbound: 8,
        ..NoiseConfig::open()
    };
    let config = NetworkConfig {
        max_concurrent_inbound_upgrades: 16,
        ..NetworkConfig::default()
    };
    let builder = NetworkBuilder::new(
        config,
        NoiseUpgrader::new(Identity::generate(), noise),
        prometheus::Registry::new(),
    );
    let result = builder.start(netcore::transport::MemoryTransport::default());
    assert!(matches!(
        result,
        Err(BuildError::UpgradeLimitAboveNoise {
            upgrades: 16,
            noise: 8
        })
    ));
}

#[tokio::test]
async fn a_message_size_past_the_frame_length_field_is_refused_at_build() {
    use network::{BuildError, NetworkBuilder};
    use noise::{Identity, NoiseConfig, NoiseUpgrader};

    let too_large = network::builder::MAX_MESSAGE_SIZE_LIMIT + 1;
    let config = NetworkConfig {
        max_message_size: too_large,
        ..NetworkConfig::default()
    };
    let builder = NetworkBuilder::new(
        config,
        NoiseUpgrader::new(Identity::generate(), NoiseConfig::open()),
        prometheus::Registry::new(),
    );
    let result = builder.start(netcore::transport::MemoryTransport::default());
    assert!(matches!(result, Err(BuildError::MessageSizeTooLarge(n)) if n == too_large));

    // A protocol's own limit is held to the same bound.
    let mut builder = NetworkBuilder::new(
        NetworkConfig::default(),
        NoiseUpgrader::new(Identity::generate(), NoiseConfig::open()),
        prometheus::Registry::new(),
    );
    builder.register(common::PROTOCOLS);
    builder.set_max_message_size(common::RPC, too_large);
    let result = builder.start(netcore::transport::MemoryTransport::default());
    assert!(matches!(result, Err(BuildError::MessageSizeTooLarge(n)) if n == too_large));
}
