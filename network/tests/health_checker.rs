//! HealthChecker over memsocket with paused time: exactly N consecutive failed pings
//! disconnect a peer, a successful ping resets the count, and two checkers keep each
//! other connected.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

#[path = "common/components.rs"]
mod components;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use components::{Components, Listen, StackNode, identities, start_stack};
use futures::StreamExt;
use netcore::transport::MemoryTransport;
use network::health_checker::{HEALTH_PROTOCOL, HealthCheckerConfig};
use network::{DisconnectReason, Event, Network, NetworkBuilder, NetworkConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use parking_lot::Mutex;
use prometheus::Registry;
use proto::Message;
use proto::health::{Ping, Pong};

const INTERVAL: Duration = Duration::from_secs(1);
const THRESHOLD: u32 = 3;

fn checker() -> Components {
    Components {
        health: Some(HealthCheckerConfig {
            ping_interval: INTERVAL,
            ping_timeout: Duration::from_millis(300),
            failures_threshold: THRESHOLD,
        }),
        ..Components::default()
    }
}

/// A peer that serves the health protocol by script: `true` answers the next ping
/// correctly, `false` echoes a wrong nonce. Once the script is empty it answers
/// correctly.
fn scripted_peer(identity: Identity, trusted: &TrustedPeers, script: &[bool]) -> Network {
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(NetworkConfig::default(), upgrader, Registry::new());
    let app = builder.register(network::health_checker::PROTOCOLS);
    builder.listen_on("/memory/0".parse().unwrap());
    let mut network = builder.start(MemoryTransport::default()).unwrap();
    let (_, mut events) = network.take_app(app).unwrap();
    let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::RpcRequest {
                protocol,
                data,
                responder,
                ..
            } = event
            {
                assert_eq!(protocol, HEALTH_PROTOCOL);
                let nonce = Ping::decode(data).unwrap().nonce;
                let healthy = script.lock().pop_front().unwrap_or(true);
                let echoed = if healthy {
                    nonce
                } else {
                    nonce.wrapping_add(1)
                };
                responder
                    .respond(Bytes::from(Pong { nonce: echoed }.encode_to_vec()))
                    .unwrap();
            }
        }
    });
    network
}

/// Starts a checker node and a scripted peer, connects them, and returns both; the
/// checker's first ping goes out one interval after this returns.
async fn checker_and_peer(script: &[bool]) -> (StackNode, Network) {
    let (ids, trusted) = identities(2);
    let peer = scripted_peer(ids[1].clone(), &trusted, script);
    let node = start_stack(ids[0].clone(), &trusted, &[], Listen::Memory, checker());
    node.sender
        .dial(peer.listen_addrs()[0].clone())
        .await
        .unwrap();
    (node, peer)
}

/// The reason of the first `LostPeer` the observer saw, if any.
async fn lost_reason(node: &mut StackNode) -> Option<DisconnectReason> {
    while let Some(event) = node.next_event(Duration::from_millis(1)).await {
        if let Event::LostPeer { reason, .. } = event {
            return Some(reason);
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn exactly_threshold_consecutive_failed_pings_disconnect_the_peer() {
    let (mut node, peer) = checker_and_peer(&[false; 10]).await;
    let remote = peer.local_peer_id();
    // Pings at 1 s, 2 s: two failures, still connected.
    tokio::time::sleep(INTERVAL * 2 + INTERVAL / 2).await;
    assert!(node.sender.is_connected(&remote));
    assert_eq!(node.counter("network_health_check_failures_total", None), 2);
    assert_eq!(lost_reason(&mut node).await, None);
    // The third failure, at 3 s, disconnects.
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(node.counter("network_health_check_failures_total", None), 3);
    assert!(!node.sender.is_connected(&remote));
    assert_eq!(
        lost_reason(&mut node).await,
        Some(DisconnectReason::HealthCheckFailed)
    );
    assert_eq!(
        node.counter("network_health_check_disconnects_total", None),
        1
    );
    // Failing the health checks costs the peer reputation (not yet a ban).
    assert_eq!(
        node.counter("network_penalties_total", Some("failed_health_check")),
        1
    );
    assert_eq!(node.sender.reputation_score(&remote), 25);
    node.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_successful_ping_resets_the_failure_count() {
    // Fail, fail, succeed, fail, fail: never three in a row. Then a sixth failure makes
    // three in a row.
    let (mut node, peer) = checker_and_peer(&[false, false, true, false, false, false]).await;
    let remote = peer.local_peer_id();
    tokio::time::sleep(INTERVAL * 5 + INTERVAL / 2).await;
    assert_eq!(node.counter("network_health_check_failures_total", None), 4);
    assert_eq!(
        node.counter("network_health_check_pings_total", Some("success")),
        1
    );
    assert!(node.sender.is_connected(&remote));
    tokio::time::sleep(INTERVAL).await;
    assert!(!node.sender.is_connected(&remote));
    assert_eq!(
        lost_reason(&mut node).await,
        Some(DisconnectReason::HealthCheckFailed)
    );
    node.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_answer_is_disconnected_after_threshold_timeouts() {
    let (ids, trusted) = identities(2);
    // The peer registers the protocol but holds every request unanswered.
    let upgrader = NoiseUpgrader::new(ids[1].clone(), NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(NetworkConfig::default(), upgrader, Registry::new());
    let app = builder.register(network::health_checker::PROTOCOLS);
    builder.listen_on("/memory/0".parse().unwrap());
    let mut silent = builder.start(MemoryTransport::default()).unwrap();
    let (_, mut events) = silent.take_app(app).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = events.next().await {
            held.push(event);
        }
    });
    let mut node = start_stack(ids[0].clone(), &trusted, &[], Listen::Memory, checker());
    node.sender
        .dial(silent.listen_addrs()[0].clone())
        .await
        .unwrap();
    tokio::time::sleep(INTERVAL * 3 - INTERVAL / 2).await;
    assert!(node.sender.is_connected(&ids[1].peer_id()));
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(
        node.counter("network_health_check_pings_total", Some("timeout")),
        3
    );
    assert_eq!(
        lost_reason(&mut node).await,
        Some(DisconnectReason::HealthCheckFailed)
    );
    node.shutdown().await;
    silent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn two_health_checkers_answer_each_other_and_stay_connected() {
    let (ids, trusted) = identities(2);
    let mut a = start_stack(ids[0].clone(), &trusted, &[], Listen::Memory, checker());
    let mut b = start_stack(ids[1].clone(), &trusted, &[], Listen::Memory, checker());
    a.sender.dial(b.addr.clone()).await.unwrap();
    tokio::time::sleep(INTERVAL * 10 + INTERVAL / 2).await;
    for node in [&a, &b] {
        assert_eq!(
            node.counter("network_health_check_pings_total", Some("success")),
            10
        );
        assert_eq!(node.counter("network_health_check_failures_total", None), 0);
        assert_eq!(node.connected().len(), 1);
    }
    a.shutdown().await;
    b.shutdown().await;
}
