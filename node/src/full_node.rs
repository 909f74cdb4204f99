//! One full node: the public network only, following the chain by state sync.

use state_sync::{BlockStore, StateSync, StateSyncApp, StateSyncConfig, SyncStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use validator_network::{
    Identity, NetworkAddress, PeerId, Registry, ShutdownHandle, StackBuilder, StackConfig,
};

/// Blocks a full node keeps to serve other full nodes.
pub const FULL_NODE_BLOCKS_KEPT: usize = 2000;

/// A running full node.
pub struct RunningFullNode {
    /// Its peer id.
    pub peer_id: PeerId,
    /// The addresses its public network listens on, naming it.
    pub listen_addrs: Vec<NetworkAddress>,
    /// Its metrics.
    pub registry: Registry,
    /// How far it has followed the chain.
    pub status: watch::Receiver<SyncStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    network: ShutdownHandle,
}

/// Starts a full node with `identity` over the public network `public` (open mode,
/// trusting the validators), its metrics in `registry`.
pub fn start(
    identity: Identity,
    public: StackConfig,
    registry: Registry,
) -> anyhow::Result<RunningFullNode> {
    let mut builder = StackBuilder::new(public, registry.clone()).with_identity(identity);
    let sync_app = builder.register::<StateSyncApp>();
    let mut running = builder.start()?;
    let (sender, events) = running.take(sync_app);
    let store = BlockStore::new(FULL_NODE_BLOCKS_KEPT);
    let (sync, status) =
        StateSync::new(StateSyncConfig::new(true), sender, events, store, &registry)?;
    let (stop, mut stop_rx) = watch::channel(false);
    let task = sync.spawn(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    Ok(RunningFullNode {
        peer_id: running.peer_id,
        listen_addrs: running.listen_addrs,
        registry,
        status,
        stop,
        task,
        network: running.shutdown,
    })
}

impl RunningFullNode {
    /// Stops state sync, then the network, and waits for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.network.shutdown().await;
    }
}
