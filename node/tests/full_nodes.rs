//! Four validators and two full nodes over loopback TCP, in one process: the full nodes
//! follow the chain over the public network; what only validators may do stays theirs.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::{Duration, Instant};

use node::demo::{self, DemoOptions};
use node::full_node::RunningFullNode;
use node::validator::RunningValidator;
use toy_consensus::{CONSENSUS_RPC, ConsensusApp};
use validator_network::proto::consensus::BlockRetrievalRequest;
use validator_network::{Identity, Registry, RequestError, RpcError, StackBuilder, StackConfig};

/// Bound on every wait: blocks come every few tens of milliseconds on loopback.
const WAIT: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} not seen within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lowest_validator_height(validators: &[RunningValidator]) -> u64 {
    validators
        .iter()
        .map(|v| v.status.borrow().committed_height)
        .min()
        .unwrap_or(0)
}

fn lowest_full_node_height(full_nodes: &[RunningFullNode]) -> u64 {
    full_nodes
        .iter()
        .map(|f| f.status.borrow().height)
        .min()
        .unwrap_or(0)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_nodes_follow_the_chain_and_cannot_do_what_only_validators_may() {
    let options = DemoOptions {
        validators: 4,
        full_nodes: 2,
        epoch_change_at: None,
        ..DemoOptions::default()
    };
    let validators = demo::start_validators(&options).unwrap();
    let full_nodes = demo::start_full_nodes(&options, &validators).unwrap();

    // They reach the validators' height, and then follow it as it grows.
    wait_until("validators at height 5", || {
        lowest_validator_height(&validators) >= 5
    })
    .await;
    let reached = lowest_validator_height(&validators);
    wait_until("full nodes at the validators' height", || {
        lowest_full_node_height(&full_nodes) >= reached
    })
    .await;
    let later = lowest_validator_height(&validators) + 10;
    wait_until("full nodes following", || {
        lowest_full_node_height(&full_nodes) >= later
    })
    .await;

    let ids: Vec<_> = validators.iter().map(|v| v.peer_id).collect();
    let public: Vec<_> = validators
        .iter()
        .flat_map(|v| v.public_addrs.iter().cloned())
        .collect();
    let target = &validators[0];

    // An unknown key joins the public network, and asks for a validator-only protocol
    // there: refused, and counted by the validator.
    let stranger = Identity::generate();
    let mut builder = StackBuilder::new(
        StackConfig::for_public_network("/ip4/127.0.0.1/tcp/0", &ids, &public),
        Registry::new(),
    )
    .with_identity(stranger.clone());
    let consensus = builder.register::<ConsensusApp>();
    let mut running = builder.start().unwrap();
    let (sender, _events) = running.take(consensus);
    wait_until("the stranger on the public network", || {
        sender.is_connected(&target.peer_id)
    })
    .await;
    let public_registry = target.public_registry.clone().unwrap();
    let refused_before = counter(
        &public_registry,
        "network_substreams_refused_total",
        "unknown_protocol",
    );
    let request = BlockRetrievalRequest {
        from_height: 1,
        max_blocks: 1,
    };
    let answer = sender
        .request(target.peer_id, &request, Duration::from_secs(5))
        .await;
    assert!(
        matches!(
            answer,
            Err(RequestError::Rpc(RpcError::ProtocolNotSupported))
        ),
        "{} is not served on the public network: {answer:?}",
        CONSENSUS_RPC
    );
    // Counted once the validator's side of the refusal is done (the caller may read
    // the refusal first).
    wait_until("the refusal counted", || {
        counter(
            &public_registry,
            "network_substreams_refused_total",
            "unknown_protocol",
        ) > refused_before
    })
    .await;

    // The same key is refused by the validator network: its dials fail Noise's check
    // of the trusted set, which the validator counts.
    let untrusted_before = counter(
        &target.registry,
        "network_handshake_failures_total",
        "untrusted_peer",
    );
    let mut builder = StackBuilder::new(
        StackConfig::for_validator_set("/ip4/127.0.0.1/tcp/0", &ids, &target.listen_addrs),
        Registry::new(),
    )
    .with_identity(stranger);
    let intruder_app = builder.register::<ConsensusApp>();
    let mut intruder = builder.start().unwrap();
    let (intruder_sender, _intruder_events) = intruder.take(intruder_app);
    wait_until("the validator refusing the stranger", || {
        counter(
            &target.registry,
            "network_handshake_failures_total",
            "untrusted_peer",
        ) > untrusted_before
    })
    .await;
    assert!(!intruder_sender.is_connected(&target.peer_id));

    intruder.shutdown.shutdown().await;
    running.shutdown.shutdown().await;
    for f in full_nodes {
        f.shutdown().await;
    }
    for v in validators {
        v.shutdown().await;
    }
}
