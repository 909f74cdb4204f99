//! One validator: the network stack, the example mempool and the example consensus,
//! wired together.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use toy_consensus::{
    ConsensusApp, ConsensusConfig, ConsensusStatus, ToyConsensus, TransactionSource,
};
use toy_mempool::{Mempool, MempoolApp, MempoolConfig, MempoolHandle};
use validator_network::{
    Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder, StackConfig,
};

/// Consensus takes its transactions from the mempool.
struct PoolSource(MempoolHandle);

impl TransactionSource for PoolSource {
    fn pull(&self, max: usize) -> Vec<u64> {
        self.0.pull(max)
    }
    fn committed(&self, ids: &[u64]) {
        self.0.remove_committed(ids);
    }
}

/// A running validator.
pub struct RunningValidator {
    /// Its peer id.
    pub peer_id: PeerId,
    /// The addresses it listens on, naming it.
    pub listen_addrs: Vec<NetworkAddress>,
    /// Its metrics.
    pub registry: Registry,
    /// Its consensus status.
    pub status: watch::Receiver<ConsensusStatus>,
    /// Its mempool.
    pub mempool: MempoolHandle,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    network: ShutdownHandle,
}

/// Starts a validator with `identity` over `network`, its metrics in `registry`.
pub fn start(
    identity: Identity,
    network: StackConfig,
    consensus: ConsensusConfig,
    mempool: MempoolConfig,
    registry: Registry,
) -> anyhow::Result<RunningValidator> {
    let mut builder = StackBuilder::new(network, registry.clone()).with_identity(identity);
    let consensus_app = builder.register::<ConsensusApp>();
    let mempool_app = builder.register::<MempoolApp>();
    let mut running = builder.start()?;
    let (consensus_tx, consensus_events) = running.take(consensus_app);
    let (mempool_tx, mempool_events) = running.take(mempool_app);
    let (stop, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (mempool_task, pool) = Mempool::new(mempool, mempool_tx, mempool_events, &registry)?;
    let (consensus_task, status) = ToyConsensus::new(
        consensus,
        consensus_tx,
        consensus_events,
        Arc::new(PoolSource(pool.clone())),
        &registry,
    )?;
    let tasks = vec![
        mempool_task.spawn(stopped()),
        consensus_task.spawn(stopped()),
    ];
    Ok(RunningValidator {
        peer_id: running.peer_id,
        listen_addrs: running.listen_addrs,
        registry,
        status,
        mempool: pool,
        stop,
        tasks,
        network: running.shutdown,
    })
}

impl RunningValidator {
    /// Stops consensus and mempool, then the network (gracefully), and waits for all.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.network.shutdown().await;
    }
}
