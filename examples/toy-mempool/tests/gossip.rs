//! Three mempools over memsocket: transactions made by one reach every pool once.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use toy_mempool::{Mempool, MempoolApp, MempoolConfig, MempoolHandle};
use validator_network::{
    Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder, StackConfig,
};

struct Node {
    addr: NetworkAddress,
    pool: MempoolHandle,
    registry: Registry,
    _network: ShutdownHandle,
}

fn start(identity: Identity, all: &[PeerId], known: &[NetworkAddress], rate: u64) -> Node {
    let config = StackConfig::for_validator_set("/memory/0", all, known);
    let registry = Registry::new();
    let mut builder = StackBuilder::new(config, registry.clone()).with_identity(identity);
    let mempool_app = builder.register::<MempoolApp>();
    let mut running = builder.start().unwrap();
    let (sender, events) = running.take(mempool_app);
    let config = MempoolConfig {
        transactions_per_second: rate,
        ..MempoolConfig::default()
    };
    let (mempool, pool) = Mempool::new(config, sender, events, &registry).unwrap();
    mempool.spawn(std::future::pending());
    Node {
        addr: running.listen_addrs[0].clone(),
        pool,
        registry,
        _network: running.shutdown,
    }
}

fn counter(registry: &Registry, label: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "mempool_transactions_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(start_paused = true)]
async fn transactions_of_one_node_reach_every_pool_once() {
    let identities: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let all: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let known: Vec<NetworkAddress> = nodes.iter().map(|n| n.addr.clone()).collect();
        // Only the last node makes transactions, after every node is up.
        let rate = if i == 2 { 100 } else { 0 };
        nodes.push(start(identity, &all, &known, rate));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    // Stop counting new ones: wait a gossip round past a whole second of generation.
    let made = counter(&nodes[2].registry, "generated");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made_after = counter(&nodes[2].registry, "generated");

    assert!(made >= 150, "{made}");
    for node in &nodes[..2] {
        let pending = node.pool.pending() as u64;
        assert!(
            pending >= made && pending <= made_after,
            "{pending} of {made}..{made_after}"
        );
    }
    // Each of the two receivers forwards what it learned to the other, which already
    // had it from the maker: those copies are counted as duplicates and dropped.
    let duplicates: u64 = nodes[..2]
        .iter()
        .map(|n| counter(&n.registry, "duplicate"))
        .sum();
    assert!(duplicates > 0);
}
