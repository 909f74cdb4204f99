//! One validator: the validator network with the example mempool and consensus, and
//! optionally a public network on which it serves the chain it commits to full nodes.

use std::sync::Arc;

use state_sync::{BlockStore, StateSync, StateSyncApp, StateSyncConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use toy_consensus::{
    ConsensusApp, ConsensusConfig, ConsensusStatus, Reconfiguration, ToyConsensus,
    TransactionSource,
};
use toy_mempool::{Mempool, MempoolApp, MempoolConfig, MempoolHandle};
use tracing::{info, warn};
use validator_network::proto::consensus::Block;
use validator_network::{
    EpochHandle, Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder,
    StackConfig, ValidatorInfo,
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
    /// The addresses its validator network listens on, naming it.
    pub listen_addrs: Vec<NetworkAddress>,
    /// The addresses its public network listens on, naming it (empty without one).
    pub public_addrs: Vec<NetworkAddress>,
    /// Its metrics: the validator network's, consensus and mempool.
    pub registry: Registry,
    /// Its public network's metrics, if it runs one.
    pub public_registry: Option<Registry>,
    /// Its consensus status.
    pub status: watch::Receiver<ConsensusStatus>,
    /// Its mempool.
    pub mempool: MempoolHandle,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    network: ShutdownHandle,
    public: Option<ShutdownHandle>,
}

/// The networks a validator runs.
pub struct Networks {
    /// The validator network: mutual authentication, validators only.
    pub validator: StackConfig,
    /// The public network, if it serves full nodes.
    pub public: Option<PublicNetwork>,
    /// A validator-set change scheduled at a height, if any.
    pub epoch_change: Option<ScheduledEpoch>,
}

/// A validator-set change at a height: once the block at `at_height` is committed,
/// consensus hands over to `validators` and the validator network moves to `epoch`
/// with them (in a real chain the change would be a transaction of that block).
#[derive(Clone, Debug)]
pub struct ScheduledEpoch {
    /// The height of the old set's last block.
    pub at_height: u64,
    /// The new epoch's number.
    pub epoch: u64,
    /// The new set, with addresses to dial.
    pub validators: Vec<ValidatorInfo>,
}

/// A validator's public network: open authentication, its own listen address and
/// limits, and only the state-sync protocol.
pub struct PublicNetwork {
    /// Its configuration.
    pub config: StackConfig,
    /// Where its metrics go: a registry of its own, since both networks register the
    /// same metric names (give it a label such as `network="public"`).
    pub registry: Registry,
}

/// Starts a validator with `identity` over `networks`, its metrics in `registry`.
pub fn start(
    identity: Identity,
    networks: Networks,
    mut consensus: ConsensusConfig,
    mempool: MempoolConfig,
    registry: Registry,
) -> anyhow::Result<RunningValidator> {
    if let Some(change) = &networks.epoch_change {
        consensus.reconfiguration = Some(Reconfiguration {
            at_height: change.at_height,
            validators: change.validators.iter().map(|v| v.peer_id).collect(),
        });
    }
    let mut builder =
        StackBuilder::new(networks.validator, registry.clone()).with_identity(identity.clone());
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
    let store = consensus_task.blocks();
    let consensus_task = consensus_task.on_commit(epoch_change_at(
        running.epochs.clone(),
        networks.epoch_change,
    ));
    let mut tasks = vec![
        mempool_task.spawn(stopped()),
        consensus_task.spawn(stopped()),
    ];
    let (public, public_addrs, public_registry) = match networks.public {
        Some(public) => {
            let (handle, addrs, task) = serve_public(identity, &public, store)?;
            tasks.push(task.spawn(stopped()));
            (Some(handle), addrs, Some(public.registry))
        }
        None => (None, Vec::new(), None),
    };
    Ok(RunningValidator {
        peer_id: running.peer_id,
        listen_addrs: running.listen_addrs,
        registry,
        public_registry,
        status,
        mempool: pool,
        stop,
        tasks,
        network: running.shutdown,
        public_addrs,
        public,
    })
}

/// Moves the validator network to the new epoch when the block at a scheduled change's
/// height is committed.
fn epoch_change_at(
    epochs: EpochHandle,
    epoch_change: Option<ScheduledEpoch>,
) -> impl Fn(&Block) + Send + Sync + 'static {
    move |block| {
        let Some(change) = epoch_change
            .as_ref()
            .filter(|c| c.at_height == block.height)
        else {
            return;
        };
        let (epochs, change) = (epochs.clone(), change.clone());
        tokio::spawn(async move {
            match epochs.change_epoch(change.epoch, change.validators).await {
                Ok(()) => info!(
                    epoch = change.epoch,
                    "validator network moved to the new set"
                ),
                Err(error) => warn!(%error, "epoch change refused"),
            }
        });
    }
}

/// Starts the public network, on which this validator serves `store` by state sync
/// and nothing else.
fn serve_public(
    identity: Identity,
    public: &PublicNetwork,
    store: BlockStore,
) -> anyhow::Result<(ShutdownHandle, Vec<NetworkAddress>, StateSync)> {
    let mut builder =
        StackBuilder::new(public.config.clone(), public.registry.clone()).with_identity(identity);
    let sync_app = builder.register::<StateSyncApp>();
    let mut running = builder.start()?;
    let (sender, events) = running.take(sync_app);
    let (sync, _) = StateSync::new(
        StateSyncConfig::new(false),
        sender,
        events,
        store,
        &public.registry,
    )?;
    Ok((running.shutdown, running.listen_addrs, sync))
}

impl RunningValidator {
    /// Stops consensus and mempool, then the network (gracefully), and waits for all.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(public) = self.public {
            public.shutdown().await;
        }
        self.network.shutdown().await;
    }
}
