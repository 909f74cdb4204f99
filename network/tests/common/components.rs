//! Test nodes running the connectivity components (health checker, discovery,
//! connectivity manager) beside an observer application whose events the test reads.
//! Included with `#[path = "common/components.rs"] mod components;`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use netcore::transport::{MemoryTransport, TcpTransport};
use netcore::{NetworkAddress, PeerId};
use network::connectivity_manager::{ConnectivityConfig, ConnectivityHandle, ConnectivityManager};
use network::discovery::{self, Discovery, DiscoveryConfig};
use network::health_checker::{self, HealthChecker, HealthCheckerConfig};
use network::{Event, Network, NetworkBuilder, NetworkConfig, NetworkEvents, NetworkSender};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where a node listens.
#[derive(Clone, Debug)]
pub enum Listen {
    /// Any free memsocket port.
    Memory,
    /// This memsocket port.
    MemoryPort(u16),
    /// Any free loopback TCP port.
    Tcp,
}

/// Which components a node runs, with their configs.
#[derive(Clone, Debug, Default)]
pub struct Components {
    pub health: Option<HealthCheckerConfig>,
    pub discovery: Option<DiscoveryConfig>,
    pub connectivity: Option<ConnectivityConfig>,
}

/// A running node: its network, the components' tasks, and an observer's events.
pub struct StackNode {
    pub network: Option<Network>,
    pub sender: NetworkSender,
    pub observer: NetworkEvents,
    pub peer_id: PeerId,
    pub addr: NetworkAddress,
    pub registry: Registry,
    pub connectivity: Option<ConnectivityHandle>,
    pub discovery: Option<discovery::DiscoveryHandle>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl StackNode {
    /// Stops the components and shuts the network down (once).
    pub async fn shutdown(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        if let Some(network) = self.network.take() {
            network.shutdown().await;
        }
    }

    /// The peers connected now.
    pub fn connected(&self) -> HashSet<PeerId> {
        self.sender
            .connected_peers()
            .into_iter()
            .map(|m| m.peer_id)
            .collect()
    }

    /// Waits for the observer's next event, at most `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.observer.next())
            .await
            .ok()
            .flatten()
    }

    /// The sum of a counter's values whose labels include `label_value` (any value if
    /// `None`).
    pub fn counter(&self, name: &str, label_value: Option<&str>) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| label_value.is_none_or(|v| m.get_label().iter().any(|l| l.value() == v)))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The value of an unlabelled gauge.
    pub fn gauge(&self, name: &str) -> i64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_gauge().get_value() as i64)
            .sum()
    }
}

/// A future that completes when `rx` fires or is dropped.
async fn stopped(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Starts a node with `identity`, trusting `trusted` (mutual mode), listening on
/// `listen`, running `components`. The connectivity manager's eligible set is the
/// trusted set.
pub fn start_stack(
    identity: Identity,
    trusted: &TrustedPeers,
    eligible: &[PeerId],
    listen: Listen,
    components: Components,
) -> StackNode {
    let registry = Registry::new();
    let upgrader = NoiseUpgrader::new(identity.clone(), NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(NetworkConfig::default(), upgrader, registry.clone());
    let observer_app = builder.register(&[]);
    let health_app = components
        .health
        .as_ref()
        .map(|_| builder.register(health_checker::PROTOCOLS));
    let discovery_app = components
        .discovery
        .as_ref()
        .map(|_| builder.register(discovery::PROTOCOLS));
    let connectivity_app = components
        .connectivity
        .as_ref()
        .map(|_| builder.register(&[]));
    let mut network = match listen {
        Listen::Memory => {
            builder.listen_on("/memory/0".parse().unwrap());
            builder.start(MemoryTransport::default()).unwrap()
        }
        Listen::MemoryPort(port) => {
            builder.listen_on(NetworkAddress::memory(port));
            builder.start(MemoryTransport::default()).unwrap()
        }
        Listen::Tcp => {
            builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
            builder.start(TcpTransport::default()).unwrap()
        }
    };
    let (sender, observer) = network.take_app(observer_app).unwrap();
    let addr = network.listen_addrs()[0].clone();
    let mut stop = Vec::new();
    let mut tasks = Vec::new();
    let mut spawn_stop = || {
        let (tx, rx) = oneshot::channel();
        stop.push(tx);
        stopped(rx)
    };

    let mut connectivity = None;
    let mut manager = None;
    if let (Some(config), Some(app)) = (components.connectivity, connectivity_app) {
        let (s, e) = network.take_app(app).unwrap();
        let eligible = Some(eligible.iter().copied().collect());
        let (m, handle) = ConnectivityManager::new(config, eligible, s, e, &registry).unwrap();
        connectivity = Some(handle);
        manager = Some(m);
    }
    if let Some(m) = manager {
        tasks.push(m.spawn(spawn_stop()));
    }
    let mut discovery_handle = None;
    if let (Some(config), Some(app)) = (components.discovery, discovery_app) {
        let (s, e) = network.take_app(app).unwrap();
        let handle = connectivity
            .clone()
            .expect("discovery needs the connectivity manager");
        let (d, h) = Discovery::new(
            config,
            identity,
            network.listen_addrs().to_vec(),
            Some(trusted.clone()),
            handle,
            s,
            e,
            &registry,
        )
        .unwrap();
        discovery_handle = Some(h);
        tasks.push(d.spawn(spawn_stop()));
    }
    if let (Some(config), Some(app)) = (components.health, health_app) {
        let (s, e) = network.take_app(app).unwrap();
        let checker = HealthChecker::new(config, s, e, &registry).unwrap();
        tasks.push(checker.spawn(spawn_stop()));
    }
    StackNode {
        peer_id: network.local_peer_id(),
        network: Some(network),
        sender,
        observer,
        addr,
        registry,
        connectivity,
        discovery: discovery_handle,
        stop,
        tasks,
    }
}

/// `n` identities that all trust each other.
pub fn identities(n: usize) -> (Vec<Identity>, TrustedPeers) {
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let trusted = TrustedPeers::from_peers(ids.iter().map(|i| i.peer_id())).unwrap();
    (ids, trusted)
}
