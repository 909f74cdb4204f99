//! Validator-set changes at epochs, over memsocket: 100 validators, then an epoch
//! that replaces 33 of them while the 67 that stay keep sending to each other.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use proto::consensus::{ConsensusMsg, SyncInfo, consensus_msg};
use tokio::time::Instant;
use validator_network::{
    AppEvent, EpochError, EpochHandle, Identity, NetworkAddress, PeerId, Registry, SendError,
    ShutdownHandle, StackBuilder, StackConfig, ValidatorInfo,
};

mod common;
use common::{Consensus, ConsensusSender};

/// Validators of the first epoch.
const FIRST: usize = 100;
/// Of those, the validators of the second epoch too; the rest are replaced.
const STAYING: usize = 67;
/// Validators new in the second epoch.
const NEW: usize = FIRST - STAYING;

/// The connectivity manager's check interval and first backoff step in this test.
const CHECK: Duration = Duration::from_secs(5);
const BACKOFF: Duration = Duration::from_secs(1);

struct Node {
    peer_id: PeerId,
    addr: NetworkAddress,
    sender: ConsensusSender,
    epochs: EpochHandle,
    /// Messages received from each peer.
    received: Arc<std::sync::Mutex<HashMap<PeerId, u64>>>,
    registry: Registry,
    _shutdown: ShutdownHandle,
}

fn config(set: &[PeerId], known: &[NetworkAddress]) -> StackConfig {
    let mut config = StackConfig::for_validator_set("/memory/0", set, known);
    config.intervals.connectivity_check_ms = CHECK.as_millis() as u64;
    config.intervals.backoff_base_ms = BACKOFF.as_millis() as u64;
    // Quiet: this test is about connections, not liveness checks or gossip.
    config.intervals.ping_interval_ms = 3_600_000;
    config.intervals.discovery_push_ms = 3_600_000;
    config
}

fn start(identity: Identity, set: &[PeerId], known: &[NetworkAddress]) -> Node {
    let registry = Registry::new();
    let mut builder =
        StackBuilder::new(config(set, known), registry.clone()).with_identity(identity);
    let app = builder.register::<Consensus>();
    let mut running = builder.start().unwrap();
    let (sender, mut events) = running.take(app);
    let received: Arc<std::sync::Mutex<HashMap<PeerId, u64>>> = Arc::default();
    let counts = Arc::clone(&received);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let AppEvent::Message { peer_id, .. } = event {
                *counts.lock().unwrap().entry(peer_id).or_default() += 1;
            }
        }
    });
    Node {
        peer_id: running.peer_id,
        addr: running.listen_addrs[0].clone(),
        sender,
        epochs: running.epochs.clone(),
        received,
        registry,
        _shutdown: running.shutdown,
    }
}

/// Starts one node per identity, each dialing those started before it.
fn start_all(
    identities: Vec<Identity>,
    set: &[PeerId],
    known: &mut Vec<NetworkAddress>,
) -> Vec<Node> {
    identities
        .into_iter()
        .map(|identity| {
            let node = start(identity, set, known);
            known.push(node.addr.clone());
            node
        })
        .collect()
}

/// Waits (virtual time) until `done`, at most `bound`; returns the time it took.
async fn within(bound: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() <= bound, "not done within {bound:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn connected_to_all(node: &Node, others: &[PeerId]) -> bool {
    others
        .iter()
        .all(|p| *p == node.peer_id || node.sender.is_connected(p))
}

/// The sum of a counter's values whose labels include `label`.
fn counter(registry: &Registry, name: &str, label: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn sync_info(round: u64) -> ConsensusMsg {
    ConsensusMsg {
        message: Some(consensus_msg::Message::SyncInfo(SyncInfo {
            committed_height: round,
            ..SyncInfo::default()
        })),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_epoch_change_replaces_a_third_of_100_validators_without_losing_a_message() {
    let identities: Vec<Identity> = (0..FIRST + NEW).map(|_| Identity::generate()).collect();
    let ids: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let first_set = &ids[..FIRST];
    let second_set: Vec<PeerId> = ids[..STAYING]
        .iter()
        .chain(&ids[FIRST..])
        .copied()
        .collect();
    let mut identities = identities.into_iter();

    // Epoch 0: 100 validators form a full mesh.
    let mut known = Vec::new();
    let old = start_all(
        identities.by_ref().take(FIRST).collect(),
        first_set,
        &mut known,
    );
    within(Duration::from_secs(60), || {
        old.iter().all(|n| connected_to_all(n, first_set))
    })
    .await;

    // The 33 validators of the next epoch start with its set; the 67 that stay refuse
    // them until they move to it.
    let mut known_new: Vec<NetworkAddress> = known[..STAYING].to_vec();
    let new = start_all(identities.collect(), &second_set, &mut known_new);

    // The 67 that stay send to each other throughout the change.
    let sending = Arc::new(AtomicBool::new(true));
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..STAYING * STAYING).map(|_| AtomicU64::new(0)).collect());
    let staying: Vec<PeerId> = ids[..STAYING].to_vec();
    for (i, node) in old[..STAYING].iter().enumerate() {
        let (sender, sending, sent, staying) = (
            node.sender.clone(),
            Arc::clone(&sending),
            Arc::clone(&sent),
            staying.clone(),
        );
        tokio::spawn(async move {
            let mut round = 0;
            while sending.load(Ordering::Relaxed) {
                round += 1;
                for (j, peer) in staying.iter().enumerate() {
                    match sender.send_to(*peer, &sync_info(round)) {
                        Ok(()) => {
                            sent[i * STAYING + j].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(SendError::NotConnected(_) | SendError::QueueFull) if i != j => {
                            panic!("a staying validator could not send to another: round {round}")
                        }
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Epoch 1: the 67 that stay move to the new set, with the new validators'
    // addresses.
    let infos: Vec<ValidatorInfo> = second_set
        .iter()
        .map(|peer| ValidatorInfo {
            peer_id: *peer,
            addresses: new
                .iter()
                .filter(|n| n.peer_id == *peer)
                .map(|n| n.addr.clone())
                .collect(),
        })
        .collect();
    for node in &old[..STAYING] {
        node.epochs.change_epoch(1, infos.clone()).await.unwrap();
    }
    let all_new: Vec<&Node> = old[..STAYING].iter().chain(&new).collect();
    let bound = CHECK + BACKOFF;
    let took = within(bound, || {
        all_new.iter().all(|n| connected_to_all(n, &second_set))
    })
    .await;
    // No removed validator stays connected to the new set.
    let removed = &ids[STAYING..FIRST];
    within(bound, || {
        all_new
            .iter()
            .all(|n| removed.iter().all(|r| !n.sender.is_connected(r)))
    })
    .await;
    println!("every pair of the new set connected {took:?} after the change (bound {bound:?})");

    // An older epoch is refused.
    let stale = old[0].epochs.change_epoch(0, infos.clone()).await;
    assert!(
        matches!(stale, Err(EpochError::Stale { current: 1, got: 0 })),
        "{stale:?}"
    );

    // Stop sending, let everything arrive, and count: nothing between the 67 was lost.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sending.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0;
    for (i, from) in old[..STAYING].iter().enumerate() {
        let dropped = counter(
            &from.registry,
            "network_queue_drops_total",
            common::CONSENSUS_DIRECT_SEND.as_str(),
        );
        assert_eq!(dropped, 0, "{} dropped messages", from.peer_id.short_str());
        for (j, to) in old[..STAYING].iter().enumerate() {
            if i == j {
                continue;
            }
            let sent = sent[i * STAYING + j].load(Ordering::Relaxed);
            let received = to
                .received
                .lock()
                .unwrap()
                .get(&from.peer_id)
                .copied()
                .unwrap_or(0);
            assert_eq!(sent, received, "{i} -> {j}");
            total += sent;
        }
    }
    assert!(total > 0);
}
