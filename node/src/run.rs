//! `node run --config node.toml`: one validator of a set spread over machines.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::info;
use validator_network::{Identity, Registry};

use crate::config::NodeConfig;
use crate::metrics::{self, Snapshot};
use crate::validator;

/// Time between status log lines of a running node: frequent enough to follow, rare
/// enough not to flood a log.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the node of `config_path` until `stop` completes, then shuts it down gracefully.
/// `started` is told the metrics address once it is served.
pub async fn run(
    config_path: &Path,
    started: impl FnOnce(std::net::SocketAddr),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path)?;
    let key = config
        .network
        .identity_key
        .clone()
        .context("network.identity_key: must be set (node keygen --out PATH makes one)")?;
    let identity = Identity::load(&key).context("network.identity_key")?;
    let validators = config.validators(identity.peer_id())?;
    let registry = Registry::new();
    let (listener, bound) = metrics::bind(config.metrics_address)
        .await
        .with_context(|| format!("metrics_address: cannot bind {}", config.metrics_address))?;
    let node = validator::start(
        identity,
        config.network.clone(),
        config.consensus(validators.clone()),
        config.mempool(),
        registry.clone(),
    )?;
    info!(
        peer = %node.peer_id,
        addrs = ?node.listen_addrs,
        validators = validators.len(),
        metrics = %format!("http://{bound}/metrics"),
        "node started"
    );
    let (stop_metrics, mut stop_metrics_rx) = watch::channel(false);
    tokio::spawn(metrics::serve(
        listener,
        vec![registry.clone()],
        async move {
            let _ = stop_metrics_rx.wait_for(|s| *s).await;
        },
    ));
    started(bound);

    let mut ticker = tokio::time::interval(STATUS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let snap = Snapshot::read(&registry);
                info!(
                    connected = snap.connected,
                    height = snap.height,
                    committed_transactions = snap.committed_transactions,
                    pending = node.mempool.pending(),
                    "status"
                );
            }
        }
    }
    info!("shutting down");
    let _ = stop_metrics.send(true);
    node.shutdown().await;
    Ok(())
}
