//! `node run --config node.toml`: one validator of a set spread over machines (with,
//! if configured, the public network on which it serves full nodes), or one full node.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};
use validator_network::{Identity, Registry};

use crate::config::{NodeConfig, Role};
use crate::full_node::{self, RunningFullNode};
use crate::metrics::{self, Snapshot};
use crate::validator::{self, Networks, PublicNetwork, RunningValidator};

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
    let (listener, bound) = metrics::bind(config.metrics_address)
        .await
        .with_context(|| format!("metrics_address: cannot bind {}", config.metrics_address))?;
    let (stop_metrics, mut stop_metrics_rx) = watch::channel(false);
    let serve_metrics = |registries: Vec<Registry>| {
        tokio::spawn(metrics::serve(listener, registries, async move {
            let _ = stop_metrics_rx.wait_for(|s| *s).await;
        }));
    };
    match config.role {
        Role::Validator => {
            let node = start_validator(&config, identity)?;
            let registries = [Some(node.registry.clone()), node.public_registry.clone()];
            serve_metrics(registries.into_iter().flatten().collect());
            info!(metrics = %format!("http://{bound}/metrics"), "metrics served");
            started(bound);
            report_validator(&node, stop).await;
            info!("shutting down");
            let _ = stop_metrics.send(true);
            node.shutdown().await;
        }
        Role::FullNode => {
            let registry = Registry::new();
            let node = full_node::start(identity, config.network.clone(), registry.clone())?;
            let addrs: Vec<String> = node.listen_addrs.iter().map(ToString::to_string).collect();
            info!(peer = %node.peer_id, addrs = %addrs.join(", "), "full node started");
            serve_metrics(vec![registry]);
            info!(metrics = %format!("http://{bound}/metrics"), "metrics served");
            started(bound);
            report_full_node(&node, stop).await;
            info!("shutting down");
            let _ = stop_metrics.send(true);
            node.shutdown().await;
        }
    }
    Ok(())
}

/// Starts the validator `config` describes, with `identity`.
fn start_validator(config: &NodeConfig, identity: Identity) -> anyhow::Result<RunningValidator> {
    let validators = config.validators(identity.peer_id())?;
    warn_of_gaps(config, identity.peer_id());
    let public = match &config.public_network {
        Some(public) => Some(PublicNetwork {
            config: public.clone(),
            registry: Registry::new_custom(
                None,
                Some(HashMap::from([("network".to_owned(), "public".to_owned())])),
            )?,
        }),
        None => None,
    };
    let networks = Networks {
        validator: config.network.clone(),
        public,
        epoch_change: None,
    };
    let node = validator::start(
        identity,
        networks,
        config.consensus(validators.clone()),
        config.mempool(),
        Registry::new(),
    )?;
    let addrs: Vec<String> = node.listen_addrs.iter().map(ToString::to_string).collect();
    let public: Vec<String> = node.public_addrs.iter().map(ToString::to_string).collect();
    info!(
        peer = %node.peer_id,
        addrs = %addrs.join(", "),
        public = %public.join(", "),
        validators = validators.len(),
        "validator started"
    );
    Ok(node)
}

/// Logs a validator's status every [`STATUS_INTERVAL`] until `stop` completes.
async fn report_validator(node: &RunningValidator, stop: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval(STATUS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut refused_before = metrics::refusals(&node.registry);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let snap = Snapshot::read(&node.registry);
                let refused_now = metrics::refusals(&node.registry);
                let refused = metrics::describe_refusals(&refused_now, &refused_before);
                refused_before = refused_now;
                info!(
                    connected = snap.connected,
                    height = snap.height,
                    committed_transactions = snap.committed_transactions,
                    pending = node.mempool.pending(),
                    refused = %refused,
                    "status"
                );
            }
        }
    }
}

/// Logs a full node's status every [`STATUS_INTERVAL`] until `stop` completes.
async fn report_full_node(node: &RunningFullNode, stop: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval(STATUS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let snap = Snapshot::read(&node.registry);
                let status = node.status.borrow().clone();
                info!(
                    connected = snap.connected,
                    height = status.height,
                    fetched = status.fetched,
                    "status"
                );
            }
        }
    }
}

/// Warns of a configuration that runs but cannot do what a validator should: no other
/// validator to talk to, or one that this node cannot dial.
fn warn_of_gaps(config: &NodeConfig, me: validator_network::PeerId) {
    let others: Vec<_> = config
        .network
        .trusted_peers
        .iter()
        .filter(|p| p.peer_id.parse().ok() != Some(me))
        .collect();
    if others.is_empty() {
        warn!(
            "network.trusted_peers names no other validator: this node will accept no \
             connection and dial none"
        );
    }
    for peer in others.iter().filter(|p| p.addresses.is_empty()) {
        warn!(
            peer = %peer.peer_id,
            "network.trusted_peers: no addresses for this validator: this node will not \
             dial it and only connects when it dials us (or discovery finds it)"
        );
    }
}
