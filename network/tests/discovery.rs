//! Discovery with the ConnectivityManager: nodes told one seed each learn every address
//! and form a full mesh (50 nodes over memsocket within O(log N) gossip rounds; 10 over
//! TCP, including a node restarting on a new port), and bad notes from the wire are
//! dropped and counted.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

#[path = "common/components.rs"]
mod components;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use components::{Components, Listen, StackNode, identities, start_stack};
use netcore::NetworkAddress;
use netcore::transport::MemoryTransport;
use network::connectivity_manager::ConnectivityConfig;
use network::discovery::{self, DISCOVERY_PROTOCOL, DiscoveryConfig, SignedNote, now_millis};
use network::{Event, NetworkBuilder, NetworkConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader};
use prometheus::Registry;
use proto::Message;

/// Discovery and connectivity with a push every `push` and checks four times as often.
fn components(push: Duration) -> Components {
    Components {
        discovery: Some(DiscoveryConfig {
            push_interval: push,
            ..DiscoveryConfig::default()
        }),
        connectivity: Some(ConnectivityConfig {
            check_interval: push / 4,
            backoff_base: push / 4,
            backoff_cap: push * 2,
            ..ConnectivityConfig::default()
        }),
        health: None,
    }
}

fn with_seed(mut c: Components, seed: NetworkAddress) -> Components {
    if let Some(conn) = c.connectivity.as_mut() {
        conn.seeds = vec![seed];
    }
    c
}

/// Whether every node holds every note and is connected to every other node.
fn full_mesh(nodes: &[StackNode]) -> bool {
    let n = nodes.len();
    nodes.iter().all(|node| {
        node.gauge("network_discovery_notes_held") == i64::try_from(n).unwrap()
            && node.connected().len() == n - 1
    })
}

#[tokio::test(start_paused = true)]
async fn fifty_nodes_told_one_seed_each_learn_every_address_and_form_a_full_mesh_in_o_log_n_rounds()
{
    const N: usize = 50;
    // Push gossip spreads a note to all N nodes in about log2 N + ln N rounds; we allow
    // 4 * ceil(log2 N) = 24 rounds, still O(log N).
    const MAX_ROUNDS: u32 = 4 * (usize::BITS - (N - 1).leading_zeros());
    const PUSH: Duration = Duration::from_secs(1);
    let (ids, trusted) = identities(N);
    let all: Vec<_> = ids.iter().map(Identity::peer_id).collect();
    // Node i's only seed is its parent in a binary tree (node 0's is node 1).
    let mut nodes: Vec<Option<StackNode>> = (0..N).map(|_| None).collect();
    let mut addrs: Vec<Option<NetworkAddress>> = vec![None; N];
    // Fixed ports below memsocket's ephemeral range, so every seed address is known
    // before its node starts.
    let ports: Vec<u16> = (0..N).map(|i| 20_000 + u16::try_from(i).unwrap()).collect();
    for i in 0..N {
        addrs[i] = Some(NetworkAddress::memory(ports[i]).with_peer_id(all[i]));
    }
    for i in 0..N {
        let seed = if i == 0 { 1 } else { (i - 1) / 2 };
        nodes[i] = Some(start_stack(
            ids[i].clone(),
            &trusted,
            &all,
            Listen::MemoryPort(ports[i]),
            with_seed(components(PUSH), addrs[seed].clone().unwrap()),
        ));
    }
    let mut nodes: Vec<StackNode> = nodes.into_iter().map(Option::unwrap).collect();

    let started = std::time::Instant::now();
    let mut rounds = 0;
    while !full_mesh(&nodes) {
        rounds += 1;
        assert!(
            rounds <= MAX_ROUNDS,
            "no full mesh after {MAX_ROUNDS} rounds: {:?}",
            nodes
                .iter()
                .map(|n| n.connected().len())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(PUSH).await;
    }
    eprintln!(
        "{N} nodes: full mesh after {rounds} push rounds (allowed {MAX_ROUNDS}), {:?} wall time",
        started.elapsed()
    );
    for node in &nodes {
        assert_eq!(
            node.counter("network_discovery_notes_accepted_total", None),
            u64::try_from(N - 1).unwrap(),
            "each note learned once"
        );
        assert_eq!(
            node.counter("network_discovery_notes_dropped_total", None),
            0
        );
    }
    for node in &mut nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn ten_tcp_nodes_form_a_full_mesh_see_a_node_leave_and_reconnect_to_it_on_its_new_port() {
    const N: usize = 10;
    const PUSH: Duration = Duration::from_millis(100);
    const LIMIT: Duration = Duration::from_secs(30);
    let (ids, trusted) = identities(N);
    let all: Vec<_> = ids.iter().map(Identity::peer_id).collect();
    let mut nodes: Vec<StackNode> = Vec::new();
    // Node i is told node i-1; node 0 is told nobody (it is everyone's first contact).
    for (i, id) in ids.iter().enumerate() {
        let c = match nodes.last() {
            Some(prev) if i > 0 => with_seed(components(PUSH), prev.addr.clone()),
            _ => components(PUSH),
        };
        nodes.push(start_stack(id.clone(), &trusted, &all, Listen::Tcp, c));
    }
    wait_for(LIMIT, || full_mesh(&nodes)).await;

    // Stop node 5: every other node sees LostPeer for it.
    let gone = 5;
    let old_port = nodes[gone].addr.port();
    nodes[gone].shutdown().await;
    for (i, node) in nodes.iter_mut().enumerate().filter(|(i, _)| *i != gone) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match node.next_event(left).await {
                Some(Event::LostPeer { peer_id, .. }) if peer_id == all[gone] => break,
                Some(_) => {}
                None => panic!("node {i} saw no LostPeer for node {gone}"),
            }
        }
    }
    let accepted_before: Vec<u64> = nodes
        .iter()
        .map(|n| n.counter("network_discovery_notes_accepted_total", None))
        .collect();

    // Restart it with the same identity on a new port, told only node 0.
    let restarted = start_stack(
        ids[gone].clone(),
        &trusted,
        &all,
        Listen::Tcp,
        with_seed(components(PUSH), nodes[0].addr.clone()),
    );
    assert_ne!(restarted.addr.port(), old_port);
    nodes[gone] = restarted;
    // Every other node learns the new note through gossip, and the mesh is whole again.
    let learned_new_note = |nodes: &[StackNode]| {
        nodes.iter().enumerate().all(|(i, node)| {
            i == gone
                || node.counter("network_discovery_notes_accepted_total", None) > accepted_before[i]
        })
    };
    wait_for(LIMIT, || full_mesh(&nodes) && learned_new_note(&nodes)).await;
    for node in &mut nodes {
        node.shutdown().await;
    }
}

/// Polls `done` every 20 ms (real time) until it holds; panics after `limit`.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not done within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn forged_untrusted_and_oversized_notes_are_dropped_and_counted_and_good_ones_dialed() {
    let (ids, trusted) = identities(3);
    let all: Vec<_> = ids.iter().map(Identity::peer_id).collect();
    let node = start_stack(
        ids[0].clone(),
        &trusted,
        &all,
        Listen::Memory,
        components(Duration::from_secs(1)),
    );
    let target = start_stack(
        ids[2].clone(),
        &trusted,
        &[],
        Listen::Memory,
        Components::default(),
    );
    // A trusted peer that speaks discovery by hand.
    let upgrader = NoiseUpgrader::new(ids[1].clone(), NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(NetworkConfig::default(), upgrader, Registry::new());
    let app = builder.register(discovery::PROTOCOLS);
    let mut raw = builder.start(MemoryTransport::default()).unwrap();
    let (sender, _events) = raw.take_app(app).unwrap();
    sender.dial(node.addr.clone()).await.unwrap();

    let stranger = Identity::generate();
    let epoch = now_millis();
    let good = SignedNote::sign(&ids[2], std::slice::from_ref(&target.addr), epoch);
    let untrusted = SignedNote::sign(&stranger, &[NetworkAddress::memory(1)], epoch);
    let mut forged = good.to_proto();
    forged.epoch += 1;
    let mut crowded = SignedNote::sign(&ids[1], &[NetworkAddress::memory(1)], epoch).to_proto();
    crowded.addresses = vec!["/memory/1".to_owned(); 9];
    let notes = proto::discovery::Notes {
        notes: vec![forged, untrusted.to_proto(), crowded, good.to_proto()],
    };
    sender
        .send_to(
            node.peer_id,
            DISCOVERY_PROTOCOL,
            Bytes::from(notes.encode_to_vec()),
        )
        .unwrap();
    sender
        .send_to(
            node.peer_id,
            DISCOVERY_PROTOCOL,
            Bytes::from_static(b"\xff\xff\xff"),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let dropped = |reason| node.counter("network_discovery_notes_dropped_total", Some(reason));
    assert_eq!(dropped("bad_signature"), 1);
    assert_eq!(dropped("untrusted"), 1);
    assert_eq!(dropped("too_many_addresses"), 1);
    assert_eq!(dropped("malformed"), 1);
    // The sender is penalized for what was its fault (not for the untrusted note):
    // 50 + 10 + 10, under the ban threshold.
    let penalty = |m| node.counter("network_penalties_total", Some(m));
    assert_eq!(penalty("bad_signature"), 1);
    assert_eq!(penalty("undecodable_message"), 2);
    assert_eq!(node.sender.reputation_score(&all[1]), 70);
    assert_eq!(
        node.counter("network_discovery_notes_accepted_total", None),
        1
    );
    // The good note's address went to the connectivity manager, which dialed it.
    assert_eq!(node.connected(), HashSet::from([all[1], all[2]]));
    raw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_listen_address_changes_publishes_a_newer_note_that_peers_take() {
    const PUSH: Duration = Duration::from_secs(1);
    let (ids, trusted) = identities(2);
    let all: Vec<_> = ids.iter().map(Identity::peer_id).collect();
    let mut a = start_stack(
        ids[0].clone(),
        &trusted,
        &all,
        Listen::Memory,
        components(PUSH),
    );
    let mut b = start_stack(
        ids[1].clone(),
        &trusted,
        &all,
        Listen::Memory,
        with_seed(components(PUSH), a.addr.clone()),
    );
    tokio::time::sleep(PUSH * 3).await;
    assert_eq!(b.counter("network_discovery_notes_accepted_total", None), 1);

    let moved = NetworkAddress::memory(21_999);
    a.discovery.as_ref().unwrap().set_listen_addrs(vec![moved]);
    // Each push goes to a's only peer, b.
    tokio::time::sleep(PUSH * 2).await;
    assert_eq!(
        b.counter("network_discovery_notes_accepted_total", None),
        2,
        "the newer note replaced the old one"
    );
    assert_eq!(b.gauge("network_discovery_notes_held"), 2);
    a.shutdown().await;
    b.shutdown().await;
}
