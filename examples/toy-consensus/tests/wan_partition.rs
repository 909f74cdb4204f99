//! 100 validators of the example consensus over a simulated WAN
//! (`simnet::five_regions`: round trips of 87 to 324 ms; 1 Gbit/s links): 33 of them are cut off; the other 67, a
//! quorum, go on committing; once the cut heals, every validator commits again within
//! [`AFTER_HEAL`].

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::sync::Arc;
use std::time::Duration;

use simnet::{NodeConfig, NodeId, REGIONS, SimConfig, SimNetwork};
use tokio::sync::watch;
use tokio::time::Instant;
use toy_consensus::{ConsensusApp, ConsensusConfig, ConsensusStatus, NoTransactions, ToyConsensus};
use validator_network::{
    Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder, StackConfig,
};

const VALIDATORS: usize = 100;
/// Validators cut off: as many as the other 67 can do without.
const CUT: usize = 33;
/// How long the cut lasts.
const PARTITION: Duration = Duration::from_secs(30);
/// Every validator commits a block above the majority's height at the heal within this
/// (simulated) time: dials that failed during the cut back off (up to 16 s after 30 s
/// of failures), the connectivity check runs every 5 s, and the cut-off validators
/// then fetch what they missed.
const AFTER_HEAL: Duration = Duration::from_secs(45);

struct Validator {
    node: NodeId,
    addr: NetworkAddress,
    status: watch::Receiver<ConsensusStatus>,
    _network: ShutdownHandle,
}

fn network() -> SimNetwork {
    SimNetwork::new(SimConfig::default(), simnet::five_regions())
}

fn start(
    net: &SimNetwork,
    index: usize,
    identity: Identity,
    all: &[PeerId],
    known: &[NetworkAddress],
) -> Validator {
    let transport = net.add_node(NodeConfig::new(REGIONS[index % 5], simnet::mbit(1000)));
    let node = transport.node();
    let config = StackConfig::for_validator_set("/memory/0", all, known);
    let registry = Registry::new();
    let mut builder = StackBuilder::new(config, registry.clone())
        .with_identity(identity)
        .with_transport(transport);
    let app = builder.register::<ConsensusApp>();
    let mut running = builder.start().unwrap();
    let (sender, events) = running.take(app);
    let mut consensus = ConsensusConfig::new(all.to_vec());
    // A round crosses the widest round trip (324 ms) about twice.
    consensus.round_timeout = Duration::from_secs(3);
    let (consensus, status) = ToyConsensus::new(
        consensus,
        sender,
        events,
        Arc::new(NoTransactions),
        &registry,
    )
    .unwrap();
    consensus.spawn(std::future::pending());
    Validator {
        node,
        addr: running.listen_addrs[0].clone(),
        status,
        _network: running.shutdown,
    }
}

fn height(v: &Validator) -> u64 {
    v.status.borrow().committed_height
}

/// Waits (simulated time) until `done`, at most `bound`; returns the time it took.
async fn within(bound: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() <= bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_third_cut_off_then_healed_commits_again_within_the_bound() {
    let net = network();
    let identities: Vec<Identity> = (0..VALIDATORS).map(|_| Identity::generate()).collect();
    let all: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let mut validators: Vec<Validator> = Vec::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let known: Vec<NetworkAddress> = validators.iter().map(|v| v.addr.clone()).collect();
        validators.push(start(&net, i, identity, &all, &known));
    }
    within(
        Duration::from_secs(120),
        "every validator commits 3 blocks",
        || validators.iter().all(|v| height(v) >= 3),
    )
    .await;

    // A third (every region loses some) is cut off from the rest.
    let (majority, minority) = validators.split_at(VALIDATORS - CUT);
    let ids = |vs: &[Validator]| vs.iter().map(|v| v.node).collect::<Vec<_>>();
    net.cut(&ids(majority), &ids(minority));
    let cut_at = majority.iter().map(height).max().unwrap();
    tokio::time::sleep(PARTITION).await;
    let majority_height = majority.iter().map(height).min().unwrap();
    let minority_height = minority.iter().map(height).max().unwrap();
    assert!(
        majority_height >= cut_at + 3,
        "the 67 committed {cut_at} → {majority_height} during the cut"
    );
    assert!(
        minority_height <= cut_at + 1,
        "the cut-off third committed alone: {minority_height} against {cut_at}"
    );

    net.heal();
    let target = majority.iter().map(height).max().unwrap() + 1;
    let took = within(AFTER_HEAL, "every validator commits after the heal", || {
        validators.iter().all(|v| height(v) >= target)
    })
    .await;
    eprintln!(
        "cut at height {cut_at}; the 67 reached {majority_height} in {PARTITION:?}; \
         all 100 above {} {took:?} after the heal",
        target - 1
    );
}
