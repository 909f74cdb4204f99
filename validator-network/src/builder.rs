//! From one [`NetworkConfig`] to a running network stack: transport, Noise, the peer
//! manager, the typed applications, and the connectivity manager, health checker and
//! discovery that keep the validators connected.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use netcore::address::{Endpoint, Host};
use netcore::transport::{MemoryTransport, TcpTransport, Transport, TransportError};
use netcore::{NetworkAddress, PeerId};
use network::connectivity_manager::ConnectivityManager;
use network::discovery::{self, Discovery, DiscoveryError, DiscoveryHandle};
use network::health_checker::{self as hc, HealthChecker};
use network::{AppId, Network};
use noise::{Identity, KeyError, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::app::{Application, Consensus, Mempool};
use crate::config::{ConfigError, FieldError, Mode, NetworkConfig, Resolved};
use crate::event::Events;
use crate::metrics::Metrics;
use crate::sender::Sender;

/// The consensus application's handles: its sender and its event stream.
pub type ConsensusNetwork = (Sender<Consensus>, Events<Consensus>);
/// The mempool application's handles: its sender and its event stream.
pub type MempoolNetwork = (Sender<Mempool>, Events<Mempool>);

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid; the error names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity key could not be loaded.
    #[error("identity_key: {0}")]
    Identity(#[from] KeyError),
    /// The network could not start (a listen address could not be bound...).
    #[error(transparent)]
    Network(#[from] network::BuildError),
    /// Discovery could not start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The metrics could not be registered (e.g. the registry already holds them).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Collects a configuration and the applications to run, then
/// [`start`](NetworkBuilder::start)s the stack on the current tokio runtime.
///
/// ```no_run
/// # async fn example() -> Result<(), validator_network::BuildError> {
/// use validator_network::{NetworkBuilder, NetworkConfig};
///
/// let config = NetworkConfig::from_toml(&std::fs::read_to_string("node.toml").unwrap())?;
/// let mut running = NetworkBuilder::new(config, prometheus::Registry::new())
///     .with_consensus()
///     .with_mempool()
///     .start()?;
/// let (consensus_tx, consensus_events) = running.consensus.take().unwrap();
/// // ... run consensus ...
/// running.shutdown.shutdown().await;
/// # Ok(()) }
/// ```
pub struct NetworkBuilder {
    config: NetworkConfig,
    identity: Option<Identity>,
    registry: Registry,
    consensus: bool,
    mempool: bool,
    transport: Option<StartWith>,
}

/// Starts the lower network over a base transport chosen by
/// [`NetworkBuilder::with_transport`].
type StartWith =
    Box<dyn FnOnce(network::NetworkBuilder) -> Result<Network, network::BuildError> + Send>;

impl fmt::Debug for NetworkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkBuilder")
            .field("config", &self.config)
            .field("identity", &self.identity.as_ref().map(Identity::peer_id))
            .field("consensus", &self.consensus)
            .field("mempool", &self.mempool)
            .field("custom_transport", &self.transport.is_some())
            .finish_non_exhaustive()
    }
}

impl NetworkBuilder {
    /// A builder for `config`; metrics go to `registry`.
    pub fn new(config: NetworkConfig, registry: Registry) -> Self {
        Self {
            config,
            identity: None,
            registry,
            consensus: false,
            mempool: false,
            transport: None,
        }
    }

    /// Runs over `transport` instead of the TCP or memory transport the listen
    /// addresses imply: e.g. a `netcore::transport::FaultyTransport` in fault-injection
    /// tests. It must listen on and dial the configured addresses.
    pub fn with_transport<T>(mut self, transport: T) -> Self
    where
        T: Transport<Error = TransportError> + Send + Sync + 'static,
        T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T::Inbound: 'static,
        T::Outbound: 'static,
        T::Listener: 'static,
    {
        self.transport = Some(Box::new(move |builder: network::NetworkBuilder| {
            builder.start(transport)
        }));
        self
    }

    /// Uses `identity` instead of loading `config.identity_key` (tests, the demo).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Runs the consensus application: [`RunningNetwork::consensus`] holds its handles.
    pub fn with_consensus(mut self) -> Self {
        self.consensus = true;
        self
    }

    /// Runs the mempool application: [`RunningNetwork::mempool`] holds its handles.
    pub fn with_mempool(mut self) -> Self {
        self.mempool = true;
        self
    }

    /// Validates the configuration, loads the identity, and starts everything on the
    /// current tokio runtime (so it must be called inside one).
    pub fn start(self) -> Result<RunningNetwork, BuildError> {
        let resolved = self.config.resolve()?;
        let identity = match self.identity {
            Some(identity) => identity,
            None => {
                let path =
                    self.config
                        .identity_key
                        .as_ref()
                        .ok_or_else(|| ConfigError::Invalid {
                            field: "identity_key".to_owned(),
                            error: FieldError::Empty,
                        })?;
                Identity::load(path)?
            }
        };
        let local = identity.peer_id();
        let trusted_ids: HashSet<PeerId> = resolved
            .trusted
            .iter()
            .map(|(peer, _)| *peer)
            .filter(|peer| *peer != local)
            .collect();
        let trusted = TrustedPeers::from_peers(trusted_ids.iter().copied())?;
        let noise_config = match resolved.mode {
            Mode::Mutual => NoiseConfig::mutual(trusted.clone()),
            Mode::Open => NoiseConfig::open(),
        };
        // One limit for both layers: Noise admits as many handshakes as the peer manager
        // keeps upgrades in flight, so a full slot table evicts rather than refuses.
        let noise_config = NoiseConfig {
            max_concurrent_inbound: resolved.network.max_concurrent_inbound_upgrades,
            ..noise_config
        };
        let upgrader = NoiseUpgrader::new(identity.clone(), noise_config);

        let metrics = Metrics::new(&self.registry)?;
        let mut builder =
            network::NetworkBuilder::new(resolved.network.clone(), upgrader, self.registry.clone());
        // In open mode Noise admits anyone; the configured validators stay trusted.
        builder.trusted_peers(trusted.clone());
        for addr in &resolved.listen {
            builder.listen_on(addr.clone());
        }
        let consensus_app = self
            .consensus
            .then(|| builder.register(&Consensus::protocols()));
        let mempool_app = self
            .mempool
            .then(|| builder.register(&Mempool::protocols()));
        let connectivity_app = builder.register(&[]);
        let health_app = builder.register(hc::PROTOCOLS);
        let discovery_app = builder.register(discovery::PROTOCOLS);
        let mut network = if let Some(start) = self.transport {
            start(builder)?
        } else if resolved.memory {
            builder.start(MemoryTransport::default())?
        } else {
            builder.start(TcpTransport::default())?
        };
        let listen_addrs = network.listen_addrs().to_vec();
        info!(peer = %local, addrs = ?listen_addrs, "network started");

        let (stop_tx, stop_rx) = watch::channel(false);
        let components = Components {
            resolved: &resolved,
            identity,
            trusted,
            trusted_ids: &trusted_ids,
            listen_addrs: &listen_addrs,
            registry: &self.registry,
        };
        let (tasks, discovery_handle) = match components.start(
            &mut network,
            connectivity_app,
            health_app,
            discovery_app,
            stop_rx,
        ) {
            Ok(started) => started,
            Err(error) => {
                // Do not leave a half-started network running.
                tokio::spawn(network.shutdown());
                return Err(error);
            }
        };

        let validators = (!trusted_ids.is_empty()).then(|| Arc::new(trusted_ids));
        let consensus = consensus_app.map(|app| {
            let (sender, events) = take(&mut network, app);
            (
                Sender::new(sender, metrics.clone(), validators.clone()),
                Events::new(events, metrics.clone()),
            )
        });
        let mempool = mempool_app.map(|app| {
            let (sender, events) = take(&mut network, app);
            (
                Sender::new(sender, metrics.clone(), validators.clone()),
                Events::new(events, metrics.clone()),
            )
        });
        Ok(RunningNetwork {
            peer_id: local,
            listen_addrs,
            consensus,
            mempool,
            shutdown: ShutdownHandle {
                network,
                stop: stop_tx,
                tasks,
                _discovery: discovery_handle,
            },
        })
    }
}

/// What the connectivity manager, health checker and discovery are started from.
struct Components<'a> {
    resolved: &'a Resolved,
    identity: Identity,
    trusted: TrustedPeers,
    trusted_ids: &'a HashSet<PeerId>,
    listen_addrs: &'a [NetworkAddress],
    registry: &'a Registry,
}

impl Components<'_> {
    /// Starts the three components on their registered applications; they stop when
    /// `stop` turns true (or its sender is dropped).
    fn start(
        self,
        network: &mut Network,
        connectivity_app: AppId,
        health_app: AppId,
        discovery_app: AppId,
        stop: watch::Receiver<bool>,
    ) -> Result<(Vec<JoinHandle<()>>, DiscoveryHandle), BuildError> {
        let stopped = move || {
            let mut rx = stop.clone();
            async move {
                // An error means the handle is gone: stop too.
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mutual = self.resolved.mode == Mode::Mutual;
        let (sender, events) = take(network, connectivity_app);
        let (connectivity, connectivity_handle) = ConnectivityManager::new(
            self.resolved.connectivity.clone(),
            mutual.then(|| self.trusted_ids.clone()),
            sender,
            events,
            self.registry,
        )?;
        let (sender, events) = take(network, health_app);
        let health =
            HealthChecker::new(self.resolved.health.clone(), sender, events, self.registry)?;
        let (sender, events) = take(network, discovery_app);
        let (discovery, discovery_handle) = Discovery::new(
            self.resolved.discovery.clone(),
            self.identity,
            advertised(self.listen_addrs),
            mutual.then_some(self.trusted),
            connectivity_handle,
            sender,
            events,
            self.registry,
        )?;
        let tasks = vec![
            connectivity.spawn(stopped()),
            health.spawn(stopped()),
            discovery.spawn(stopped()),
        ];
        Ok((tasks, discovery_handle))
    }
}

/// The listen addresses worth telling peers: not the unspecified ones (`0.0.0.0`, `::`),
/// which name every interface here and no host elsewhere. Peers reach such a node at
/// the addresses their own configuration lists.
fn advertised(listen: &[NetworkAddress]) -> Vec<NetworkAddress> {
    listen
        .iter()
        .filter(|addr| match addr.endpoint() {
            Endpoint::Tcp {
                host: Host::Ip4(ip),
                ..
            } => !ip.is_unspecified(),
            Endpoint::Tcp {
                host: Host::Ip6(ip),
                ..
            } => !ip.is_unspecified(),
            _ => true,
        })
        .cloned()
        .collect()
}

/// The handles of an application registered once, taken once.
fn take(network: &mut Network, app: AppId) -> (network::NetworkSender, network::NetworkEvents) {
    network
        .take_app(app)
        .unwrap_or_else(|| unreachable!("each application is registered and taken once"))
}

/// A running network stack: the typed handles of each application and the handle that
/// stops it all.
#[derive(Debug)]
pub struct RunningNetwork {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// The addresses bound, each ending with `/p2p/<peer id>`, ready to give to peers.
    pub listen_addrs: Vec<NetworkAddress>,
    /// The consensus handles, if [`NetworkBuilder::with_consensus`] asked for them.
    pub consensus: Option<ConsensusNetwork>,
    /// The mempool handles, if [`NetworkBuilder::with_mempool`] asked for them.
    pub mempool: Option<MempoolNetwork>,
    /// Stops the stack.
    pub shutdown: ShutdownHandle,
}

/// Stops a running stack: see [`shutdown`](ShutdownHandle::shutdown).
pub struct ShutdownHandle {
    network: Network,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _discovery: DiscoveryHandle,
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("peer_id", &self.network.local_peer_id())
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Stops the connectivity manager, health checker and discovery, then closes every
    /// connection gracefully (each application sees `LostPeer` with reason `Shutdown`,
    /// and peers see this node lost) and waits until every task has ended.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            // A task that panicked has ended too; there is nothing left to stop.
            let _ = task.await;
        }
        self.network.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_not_advertised() {
        let listen: Vec<NetworkAddress> = [
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/::/tcp/2",
            "/ip4/10.0.0.1/tcp/3",
            "/memory/4",
        ]
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect();

        let advertised: Vec<String> = advertised(&listen)
            .iter()
            .map(ToString::to_string)
            .collect();

        assert_eq!(advertised, ["/ip4/10.0.0.1/tcp/3", "/memory/4"]);
    }
}
