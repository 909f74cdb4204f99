//! Four validators of the example consensus over memsocket: they commit the same chain,
//! and a validator that starts late catches up by requesting blocks.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use toy_consensus::{ConsensusApp, ConsensusConfig, ConsensusStatus, NoTransactions, ToyConsensus};
use validator_network::{
    Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder, StackConfig,
};

struct Validator {
    addr: NetworkAddress,
    status: watch::Receiver<ConsensusStatus>,
    _network: ShutdownHandle,
}

/// Starts a validator of `all` with `identity`, dialing the validators in `known`.
fn start(identity: Identity, all: &[PeerId], known: &[NetworkAddress]) -> Validator {
    let config = StackConfig::for_validator_set("/memory/0", all, known);
    let registry = Registry::new();
    let mut builder = StackBuilder::new(config, registry.clone()).with_identity(identity);
    let consensus_app = builder.register::<ConsensusApp>();
    let mut running = builder.start().unwrap();
    let (sender, events) = running.take(consensus_app);
    let (consensus, status) = ToyConsensus::new(
        ConsensusConfig::new(all.to_vec()),
        sender,
        events,
        Arc::new(NoTransactions),
        &registry,
    )
    .unwrap();
    consensus.spawn(std::future::pending());
    Validator {
        addr: running.listen_addrs[0].clone(),
        status,
        _network: running.shutdown,
    }
}

/// Waits until `validator` has committed `height`, at most `within`.
async fn reaches(validator: &mut Validator, height: u64, within: Duration) {
    tokio::time::timeout(
        within,
        validator
            .status
            .wait_for(|status| status.committed_height >= height),
    )
    .await
    .expect("height not reached in time")
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_validator_commits_and_a_late_one_catches_up() {
    let identities: Vec<Identity> = (0..4).map(|_| Identity::generate()).collect();
    let all: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let mut identities = identities.into_iter();
    let mut validators: Vec<Validator> = Vec::new();
    for identity in identities.by_ref().take(3) {
        let known: Vec<NetworkAddress> = validators.iter().map(|v| v.addr.clone()).collect();
        validators.push(start(identity, &all, &known));
    }

    // Three of four are a quorum: the chain grows without the fourth.
    for v in &mut validators {
        reaches(v, 10, Duration::from_secs(60)).await;
    }
    let known: Vec<NetworkAddress> = validators.iter().map(|v| v.addr.clone()).collect();
    let head = validators[0].status.borrow().committed_height;
    let mut late = start(identities.next().unwrap(), &all, &known);

    reaches(&mut late, head + 5, Duration::from_secs(60)).await;
    assert!(late.status.borrow().blocks_fetched >= 1);
    for v in &mut validators {
        reaches(v, head + 5, Duration::from_secs(60)).await;
    }
}
