//! From one [`StackConfig`] to a running network stack: transport, Noise, the peer
//! manager, the applications registered with it, and the connectivity manager, health
//! checker and discovery that keep the validators connected.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use netcore::address::{Endpoint, Host};
use netcore::transport::{MemoryTransport, SourceFilter, TcpTransport, Transport, TransportError};
use netcore::{NetworkAddress, PeerId};
use network::admission::ValidatorAddresses;
use network::connectivity_manager::{ConnectivityHandle, ConnectivityManager};
use network::discovery::{self, Discovery, DiscoveryError, DiscoveryHandle};
use network::health_checker::{self as hc, HealthChecker};
use network::{AppId, Network, Priority};
use noise::{Identity, KeyError, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::app::{self, Application};
use crate::config::{ConfigError, FieldError, Mode, Resolved, StackConfig};
use crate::epoch::{self, EpochHandle};
use crate::event::Events;
use crate::metrics::Metrics;
use crate::sender::Sender;

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
/// [`start`](StackBuilder::start)s the stack on the current tokio runtime.
///
/// ```no_run
/// # async fn example() -> Result<(), validator_network::StartError> {
/// use validator_network::proto::mempool::{BatchAck, TransactionBatch};
/// use validator_network::{Application, Never, ProtocolId, StackBuilder, StackConfig};
///
/// enum Gossip {}
///
/// impl Application for Gossip {
///     const NAME: &'static str = "gossip";
///     const DIRECT_SEND: Option<ProtocolId> = None;
///     const RPC: Option<ProtocolId> = Some(ProtocolId::new("/gossip/rpc/1"));
///     type Message = Never;
///     type Request = TransactionBatch;
///     type Response = BatchAck;
/// }
///
/// let config = StackConfig::from_toml(&std::fs::read_to_string("node.toml").unwrap())?;
/// let mut builder = StackBuilder::new(config, prometheus::Registry::new());
/// let gossip = builder.register::<Gossip>();
/// let mut running = builder.start()?;
/// let (sender, events) = running.take(gossip);
/// // ... run the application ...
/// running.shutdown.shutdown().await;
/// # Ok(()) }
/// ```
pub struct StackBuilder {
    config: StackConfig,
    identity: Option<Identity>,
    registry: Registry,
    /// The registered applications: name and protocols, in registration order.
    apps: Vec<RegisteredApp>,
    /// Names this builder's registrations, so that one taken from another stack is
    /// refused.
    id: u64,
    transport: Option<StartWith>,
}

/// An application registered with a [`StackBuilder`].
struct RegisteredApp {
    name: &'static str,
    protocols: Vec<(network::ProtocolId, network::ProtocolKind)>,
    priority: Priority,
    max_message_size: Option<usize>,
}

/// The receipt of [`StackBuilder::register`]: hand it to [`RunningStack::take`] for
/// the application's typed handles. It is used once.
#[must_use = "the application's handles are taken with it from the running stack"]
pub struct Registration<A: Application> {
    stack: u64,
    index: usize,
    _app: PhantomData<fn() -> A>,
}

impl<A: Application> fmt::Debug for Registration<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("app", &A::NAME)
            .finish_non_exhaustive()
    }
}

/// Gives each builder its own id.
static NEXT_STACK_ID: AtomicU64 = AtomicU64::new(0);

/// Starts the lower network over a base transport chosen by
/// [`StackBuilder::with_transport`].
type StartWith =
    Box<dyn FnOnce(network::NetworkBuilder) -> Result<Network, network::BuildError> + Send>;

impl fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apps: Vec<_> = self.apps.iter().map(|app| app.name).collect();
        f.debug_struct("StackBuilder")
            .field("config", &self.config)
            .field("identity", &self.identity.as_ref().map(Identity::peer_id))
            .field("apps", &apps)
            .field("custom_transport", &self.transport.is_some())
            .finish_non_exhaustive()
    }
}

impl StackBuilder {
    /// A builder for `config`; metrics go to `registry`.
    pub fn new(config: StackConfig, registry: Registry) -> Self {
        Self {
            config,
            identity: None,
            registry,
            apps: Vec::new(),
            id: NEXT_STACK_ID.fetch_add(1, Ordering::Relaxed),
            transport: None,
        }
    }

    /// Runs application `A`: its protocols are registered, and its typed sender and
    /// event stream are taken from the running stack with the returned
    /// [`Registration`]. Two applications that declare one protocol fail the start
    /// ([`network::BuildError::DuplicateProtocol`]).
    pub fn register<A: Application>(&mut self) -> Registration<A> {
        self.apps.push(RegisteredApp {
            name: A::NAME,
            protocols: app::protocols::<A>(),
            priority: A::PRIORITY,
            max_message_size: A::MAX_MESSAGE_SIZE,
        });
        Registration {
            stack: self.id,
            index: self.apps.len() - 1,
            _app: PhantomData,
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

    /// Validates the configuration, loads the identity, and starts everything on the
    /// current tokio runtime (so it must be called inside one).
    pub fn start(self) -> Result<RunningStack, StartError> {
        let resolved = self.config.resolve()?;
        let identity = self.identity()?;
        let local = identity.peer_id();
        let trusted_ids = resolved.trusted_ids(local);
        let trusted = TrustedPeers::from_peers(trusted_ids.iter().copied())?;
        let metrics = Metrics::new(&self.registry)?;
        let validator_addresses = ValidatorAddresses::default();
        validator_addresses.replace(epoch::ips(
            resolved.trusted.iter().flat_map(|(_, addrs)| addrs),
        ));
        let mut builder = self.lower_builder(&resolved, &identity, &trusted, &validator_addresses);
        let app_ids: Vec<AppId> = self
            .apps
            .iter()
            .map(|app| {
                for &(protocol, _) in &app.protocols {
                    builder.set_priority(protocol, app.priority);
                    if let Some(size) = app.max_message_size {
                        builder.set_max_message_size(protocol, size);
                    }
                }
                builder.register(&app.protocols)
            })
            .collect();
        let component_apps = [
            builder.register(&[]),
            builder.register(hc::PROTOCOLS),
            builder.register(discovery::PROTOCOLS),
        ];
        // A ping that waits behind bulk would report a busy peer as dead.
        builder.set_priority(hc::HEALTH_PROTOCOL, Priority::Urgent);
        let mut network = match self.transport {
            Some(start) => start(builder)?,
            None if resolved.memory => builder.start(MemoryTransport::default())?,
            None => {
                // Admission blocks sources that flood it in the listeners' socket
                // filter, so the kernel drops their SYNs before any accept.
                let filter = SourceFilter::default();
                builder.source_filter(filter.clone());
                let tcp = TcpTransport::new(self.config.socket.tcp_config());
                builder.start(tcp.with_source_filter(filter))?
            }
        };
        let listen_addrs = network.listen_addrs().to_vec();
        info!(peer = %local, addrs = ?listen_addrs, "network started");

        let (stop_tx, stop_rx) = watch::channel(false);
        let components = Components {
            resolved: &resolved,
            identity,
            trusted: trusted.clone(),
            trusted_ids: &trusted_ids,
            listen_addrs: &listen_addrs,
            registry: &self.registry,
        };
        let (tasks, discovery_handle, connectivity_handle) =
            match components.start(&mut network, component_apps, stop_rx) {
                Ok(started) => started,
                Err(error) => {
                    // Do not leave a half-started network running.
                    tokio::spawn(network.shutdown());
                    return Err(error);
                }
            };
        let validators = (!trusted_ids.is_empty()).then(|| trusted.clone());
        let mutual = resolved.mode == Mode::Mutual;
        let epochs = EpochHandle::new(
            local,
            trusted,
            connectivity_handle,
            mutual,
            validator_addresses,
            resolved.epoch,
        );
        let apps = app_ids
            .into_iter()
            .map(|app| Some(take(&mut network, app)))
            .collect();
        Ok(RunningStack {
            peer_id: local,
            listen_addrs,
            epochs,
            apps,
            stack: self.id,
            metrics,
            max_message_size: resolved.network.max_message_size,
            validators,
            shutdown: ShutdownHandle {
                network,
                stop: stop_tx,
                tasks,
                _discovery: discovery_handle,
            },
        })
    }

    /// The `network` builder of this stack: Noise for its mode, the trusted set, the
    /// validators' addresses and the listen addresses.
    fn lower_builder(
        &self,
        resolved: &Resolved,
        identity: &Identity,
        trusted: &TrustedPeers,
        validator_addresses: &ValidatorAddresses,
    ) -> network::NetworkBuilder {
        let mut builder = network::NetworkBuilder::new(
            resolved.network.clone(),
            noise_upgrader(resolved, identity, trusted),
            self.registry.clone(),
        );
        // In open mode Noise admits anyone; the configured validators stay trusted.
        builder.trusted_peers(trusted.clone());
        builder.validator_addresses(validator_addresses.clone());
        for addr in &resolved.listen {
            builder.listen_on(addr.clone());
        }
        builder
    }

    /// The identity given, or the one `identity_key` names.
    fn identity(&self) -> Result<Identity, StartError> {
        if let Some(identity) = &self.identity {
            return Ok(identity.clone());
        }
        let path = self
            .config
            .identity_key
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid {
                field: "identity_key".to_owned(),
                error: FieldError::Empty,
            })?;
        Ok(Identity::load(path)?)
    }
}

/// Noise for `resolved`'s mode: the trusted set alone in mutual mode, anyone in open
/// mode. One limit for both layers: Noise admits as many handshakes as the peer manager
/// keeps upgrades in flight, so a full slot table evicts rather than refuses.
fn noise_upgrader(
    resolved: &Resolved,
    identity: &Identity,
    trusted: &TrustedPeers,
) -> NoiseUpgrader {
    let config = match resolved.mode {
        Mode::Mutual => NoiseConfig::mutual(trusted.clone()),
        Mode::Open => NoiseConfig::open(),
    };
    let config = NoiseConfig {
        max_concurrent_inbound: resolved.network.max_concurrent_inbound_upgrades,
        ..config
    };
    NoiseUpgrader::new(identity.clone(), config)
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
    /// `apps` are the connectivity manager's, the health checker's and discovery's.
    fn start(
        self,
        network: &mut Network,
        apps: [AppId; 3],
        stop: watch::Receiver<bool>,
    ) -> Result<(Vec<JoinHandle<()>>, DiscoveryHandle, ConnectivityHandle), StartError> {
        let stopped = move || {
            let mut rx = stop.clone();
            async move {
                // An error means the handle is gone: stop too.
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mutual = self.resolved.mode == Mode::Mutual;
        let [connectivity_app, health_app, discovery_app] = apps;
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
            connectivity_handle.clone(),
            sender,
            events,
            self.registry,
        )?;
        let tasks = vec![
            connectivity.spawn(stopped()),
            health.spawn(stopped()),
            discovery.spawn(stopped()),
        ];
        Ok((tasks, discovery_handle, connectivity_handle))
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

/// A running network stack: the handles of each registered application, to take with
/// its [`Registration`], and the handle that stops it all.
pub struct RunningStack {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// The addresses bound, each ending with `/p2p/<peer id>`, ready to give to peers.
    pub listen_addrs: Vec<NetworkAddress>,
    /// Moves the stack to a new validator set at an epoch change.
    pub epochs: EpochHandle,
    /// Stops the stack.
    pub shutdown: ShutdownHandle,
    /// Each registered application's untyped handles, until taken.
    apps: Vec<Option<(network::NetworkSender, network::NetworkEvents)>>,
    /// The builder's id, which its registrations carry.
    stack: u64,
    metrics: Metrics,
    /// The largest payload, decompressed, of an application that does not set its own.
    max_message_size: usize,
    /// The validators `broadcast` sends to: the trusted set, following epoch changes,
    /// or `None` (every connected peer) when none were configured.
    validators: Option<TrustedPeers>,
}

impl fmt::Debug for RunningStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningStack")
            .field("peer_id", &self.peer_id)
            .field("listen_addrs", &self.listen_addrs)
            .finish_non_exhaustive()
    }
}

impl RunningStack {
    /// Application `A`'s typed sender and event stream.
    ///
    /// # Panics
    ///
    /// If `registration` came from another [`StackBuilder`]: a registration is good
    /// only for the stack its builder started, and it is taken once (it is consumed).
    pub fn take<A: Application>(
        &mut self,
        registration: Registration<A>,
    ) -> (Sender<A>, Events<A>) {
        assert_eq!(
            registration.stack,
            self.stack,
            "the registration of {} is from another stack",
            A::NAME
        );
        let Some((sender, events)) = self.apps.get_mut(registration.index).and_then(Option::take)
        else {
            unreachable!("a registration is consumed when its handles are taken");
        };
        let max_message_size = A::MAX_MESSAGE_SIZE.unwrap_or(self.max_message_size);
        (
            Sender::new(
                sender,
                self.metrics.clone(),
                self.validators.clone(),
                max_message_size,
            ),
            Events::new(events, self.metrics.clone(), max_message_size),
        )
    }
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
