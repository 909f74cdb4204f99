//! Assembles a running network from a configuration, a base transport and the
//! applications' protocols.

use std::collections::HashMap;
use std::sync::Arc;

use netcore::multiplexing::Priority;
use netcore::transport::{BoxedListener, BoxedTransport, SourceFilter, Transport, TransportError};
use netcore::{NetworkAddress, PeerId};
use noise::{AuthMode, NoiseUpgrader, TrustedPeers};
use parking_lot::Mutex;
use prometheus::Registry;
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::{ClaimBoard, ValidatorAddresses};
use crate::channel::{fair_queue, metered};
use crate::config::NetworkConfig;
use crate::connection::TrustPredicate;
use crate::counters::NetworkMetrics;
use crate::interface::{NetworkEvents, NetworkSender};
use crate::peer_manager::PeerManager;
use crate::protocol_id::{ProtocolId, ProtocolKind};
use crate::protocols::{AppQueue, Protocols};
use crate::reporter::Reporter;
use crate::reputation::Reputation;
use crate::routes::{ProtocolMetrics, Route, Routes};
use crate::shared::Shared;
use crate::transport::{self, PeerGuard, UpgradeError, UpgradedConnection};

/// Requests queued for the peer manager: dials and disconnects are rare and the
/// manager serves them in microseconds, so this only absorbs bursts.
const REQUEST_QUEUE_SIZE: usize = 256;

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two registrations name the same protocol.
    #[error("protocol {0} is registered twice")]
    DuplicateProtocol(ProtocolId),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: NetworkAddress,
        /// Why.
        source: Box<UpgradeError>,
    },
    /// The peer manager would keep more inbound upgrades in flight than Noise admits
    /// handshakes: past Noise's limit new sockets would be refused instead of evicting
    /// the oldest stalled upgrade, and an idle-connection flood would lock peers out.
    #[error(
        "max_concurrent_inbound_upgrades ({upgrades}) is above Noise's max_concurrent_inbound ({noise})"
    )]
    UpgradeLimitAboveNoise {
        /// The peer manager's limit.
        upgrades: usize,
        /// Noise's limit.
        noise: usize,
    },
    /// `max_message_size` is over what the 4-byte length prefix of a frame can carry
    /// (less the RPC response envelope).
    #[error("max_message_size ({0}) is over the frame limit of {MAX_MESSAGE_SIZE_LIMIT} bytes")]
    MessageSizeTooLarge(usize),
    /// The metrics could not be registered (e.g. registered twice in one registry).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The largest `max_message_size`: a frame's length is a `u32`, and a response frame
/// holds the payload in an envelope of up to 11 bytes.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = u32::MAX as usize - 11;

/// Names an application registered with [`NetworkBuilder::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppId(usize);

/// Collects what the network needs, then [`start`](NetworkBuilder::start)s it.
pub struct NetworkBuilder {
    config: NetworkConfig,
    noise: NoiseUpgrader,
    registry: Registry,
    listen: Vec<NetworkAddress>,
    apps: Vec<Vec<(ProtocolId, ProtocolKind)>>,
    priorities: HashMap<ProtocolId, Priority>,
    message_sizes: HashMap<ProtocolId, usize>,
    is_trusted: TrustPredicate,
    validator_addresses: ValidatorAddresses,
    source_filter: Option<SourceFilter>,
}

impl NetworkBuilder {
    /// A builder for the node whose identity `noise` holds. Metrics go to `registry`.
    pub fn new(config: NetworkConfig, noise: NoiseUpgrader, registry: Registry) -> Self {
        let is_trusted: TrustPredicate = match &noise.config().mode {
            AuthMode::Mutual(set) => {
                let set = set.clone();
                Arc::new(move |peer: &PeerId| set.contains(peer))
            }
            AuthMode::Open => Arc::new(|_: &PeerId| false),
        };
        Self {
            config,
            noise,
            registry,
            listen: Vec::new(),
            apps: Vec::new(),
            priorities: HashMap::new(),
            message_sizes: HashMap::new(),
            is_trusted,
            validator_addresses: ValidatorAddresses::default(),
            source_filter: None,
        }
    }

    /// The peers treated as trusted validators (exempt from the untrusted-inbound
    /// bound, the trusted rate-limit default and long bans). In mutual mode this is
    /// the Noise trusted set already; in open mode, where Noise admits anyone, it
    /// names the validators among them.
    pub fn trusted_peers(&mut self, trusted: TrustedPeers) -> &mut Self {
        self.is_trusted = Arc::new(move |peer: &PeerId| trusted.contains(peer));
        self
    }

    /// The IPs of known validators: their sockets get the handshake slots kept for
    /// validators and pass the per-IP and per-subnet pending limits (see
    /// [`crate::admission`]). Shared: a later `replace` (an epoch change) applies at once.
    pub fn validator_addresses(&mut self, addresses: ValidatorAddresses) -> &mut Self {
        self.validator_addresses = addresses;
        self
    }

    /// The socket filter of the TCP listeners ([`TcpTransport::with_source_filter`] with
    /// the same handle): sources admission refuses for their rate are blocked there for
    /// a while, and their SYNs dropped by the kernel before any accept (see
    /// [`crate::admission`]). Without it they are refused at accept, which costs more.
    ///
    /// [`TcpTransport::with_source_filter`]: netcore::transport::TcpTransport::with_source_filter
    pub fn source_filter(&mut self, filter: SourceFilter) -> &mut Self {
        self.source_filter = Some(filter);
        self
    }

    /// Listens on `addr` once started (port 0 picks a port; see [`Network::listen_addrs`]).
    pub fn listen_on(&mut self, addr: NetworkAddress) -> &mut Self {
        self.listen.push(addr);
        self
    }

    /// Registers an application and the protocols it serves.
    pub fn register(&mut self, protocols: &[(ProtocolId, ProtocolKind)]) -> AppId {
        self.apps.push(protocols.to_vec());
        AppId(self.apps.len() - 1)
    }

    /// Sends the substreams of `protocol` in class `priority` on every connection: its
    /// requests, responses and messages go out before those of lower classes waiting on
    /// the same connection (see [`Priority`]). A protocol not named here is
    /// [`Priority::Normal`].
    pub fn set_priority(&mut self, protocol: ProtocolId, priority: Priority) -> &mut Self {
        self.priorities.insert(protocol, priority);
        self
    }

    /// Sets the largest payload of one message or response of `protocol`, in place of
    /// [`NetworkConfig::max_message_size`] (for a protocol of large transfers, such as
    /// state sync, or of small messages only). Its RPC requests are held to the smaller
    /// of this and `max_message_size`: a peer may have many requests in flight, and
    /// large transfers are responses. A message over its limit is refused by the sender
    /// and ends the substream of a receiver it reaches. Checked at [`Self::start`]
    /// against [`MAX_MESSAGE_SIZE_LIMIT`].
    pub fn set_max_message_size(&mut self, protocol: ProtocolId, bytes: usize) -> &mut Self {
        self.message_sizes.insert(protocol, bytes);
        self
    }

    /// Refuses an upgrade limit that Noise's own would undercut: past Noise's limit new
    /// sockets would be refused instead of evicting the oldest upgrade.
    fn check_limits(&self) -> Result<(), BuildError> {
        let sizes = self.message_sizes.values();
        if let Some(&size) = std::iter::once(&self.config.max_message_size)
            .chain(sizes)
            .find(|&&size| size > MAX_MESSAGE_SIZE_LIMIT)
        {
            return Err(BuildError::MessageSizeTooLarge(size));
        }
        let noise_limit = self.noise.config().max_concurrent_inbound;
        if self.config.max_concurrent_inbound_upgrades > noise_limit {
            return Err(BuildError::UpgradeLimitAboveNoise {
                upgrades: self.config.max_concurrent_inbound_upgrades,
                noise: noise_limit,
            });
        }
        Ok(())
    }

    /// The handshake message this node sends: its chain, network, protocols and version.
    fn handshake(&self, routes: &[Route]) -> HandshakeMsg {
        HandshakeMsg {
            chain_id: self.config.chain_id,
            network_id: self.config.network_id.clone(),
            supported_protocols: routes
                .iter()
                .map(|r| r.protocol.as_str().to_owned())
                .collect(),
            client_version: self.config.client_version.clone(),
        }
    }

    /// The route of each registered protocol, in registration order; a protocol
    /// registered twice is an error.
    fn routes(&self, metrics: &NetworkMetrics) -> Result<Vec<Route>, BuildError> {
        let mut routes: Vec<Route> = Vec::new();
        for (app, protocols) in self.apps.iter().enumerate() {
            for &(protocol, kind) in protocols {
                if routes.iter().any(|r| r.protocol == protocol) {
                    return Err(BuildError::DuplicateProtocol(protocol));
                }
                let max_message_size = (self.message_sizes.get(&protocol))
                    .copied()
                    .unwrap_or(self.config.max_message_size);
                routes.push(Route {
                    protocol,
                    kind,
                    priority: self.priorities.get(&protocol).copied().unwrap_or_default(),
                    max_message_size,
                    max_request_size: max_message_size.min(self.config.max_message_size),
                    app,
                    metrics: ProtocolMetrics::new(metrics, protocol),
                });
            }
        }
        Ok(routes)
    }

    /// Each registered application's event queue: the protocols' side, and the
    /// application's.
    fn app_queues(&self, metrics: &NetworkMetrics) -> (Vec<AppQueue>, Vec<NetworkEvents>) {
        self.apps
            .iter()
            .map(|_| {
                let (sender, queue) = fair_queue(
                    self.config.inbound_queue_size,
                    metrics.queue("inbound_events"),
                );
                let events = NetworkEvents {
                    queue,
                    messages: None,
                };
                (sender, events)
            })
            .unzip()
    }

    /// Starts the network over `base` on the current tokio runtime.
    pub fn start<T>(self, base: T) -> Result<Network, BuildError>
    where
        T: Transport<Error = TransportError> + Send + Sync + 'static,
        T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T::Inbound: 'static,
        T::Outbound: 'static,
        T::Listener: 'static,
    {
        self.check_limits()?;
        let metrics = NetworkMetrics::new(&self.registry)?;
        let routes = self.routes(&metrics)?;
        let (app_senders, app_events) = self.app_queues(&metrics);
        let handshake = self.handshake(&routes);
        let local_peer_id = self.noise.peer_id();
        let reputation = Arc::new(Mutex::new(Reputation::new(self.config.reputation.clone())));
        let claims = ClaimBoard::default();
        let guard = PeerGuard {
            claims: claims.clone(),
            reputation: Arc::clone(&reputation),
            is_trusted: Arc::clone(&self.is_trusted),
            rate_limit: self.config.rate_limit.clone(),
            rate_limited: metrics.defence.rate_limited.with_label_values(&["bytes"]),
        };
        let transport = transport::upgrade_guarded(
            base,
            self.noise,
            handshake,
            self.config.mux.clone(),
            self.config.upgrade_timeout,
            Some(guard),
        );

        let (listeners, listen_addrs) = listen(&transport, self.listen, local_peer_id)?;
        let (requests_tx, requests_rx) =
            metered(REQUEST_QUEUE_SIZE, metrics.queue("peer_manager_requests"));
        let reporter = Reporter::new(
            reputation,
            Arc::clone(&self.is_trusted),
            &metrics,
            requests_tx.clone(),
        );
        let shared = Arc::new(Shared {
            local_peer_id,
            protocols: Arc::new(Protocols {
                config: self.config,
                metrics,
                routes: Routes::new(routes),
                apps: app_senders,
                reporter,
                runtime: tokio::runtime::Handle::current(),
            }),
            peers: Default::default(),
            requests: requests_tx,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let manager = PeerManager::new(
            Arc::clone(&shared),
            transport,
            listeners,
            requests_rx,
            self.is_trusted,
            self.validator_addresses,
            claims,
            self.source_filter,
            shutdown_rx,
        );
        let task = tokio::spawn(manager.run());
        let sender = NetworkSender { shared };
        let apps = app_events
            .into_iter()
            .map(|events| Some((sender.clone(), events)))
            .collect();
        Ok(Network {
            local_peer_id,
            listen_addrs,
            apps,
            sender,
            shutdown: shutdown_tx,
            task,
        })
    }
}

/// A running network.
pub struct Network {
    local_peer_id: PeerId,
    listen_addrs: Vec<NetworkAddress>,
    apps: Vec<Option<(NetworkSender, NetworkEvents)>>,
    sender: NetworkSender,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Network {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The addresses actually bound, each naming this node (`/p2p/<id>`), ready to give
    /// to peers.
    pub fn listen_addrs(&self) -> &[NetworkAddress] {
        &self.listen_addrs
    }

    /// Takes the sender and event stream of a registered application (once).
    pub fn take_app(&mut self, app: AppId) -> Option<(NetworkSender, NetworkEvents)> {
        self.apps.get_mut(app.0).and_then(Option::take)
    }

    /// A sender not tied to an application: for dials, disconnects and peer queries.
    pub fn sender(&self) -> NetworkSender {
        self.sender.clone()
    }

    /// Closes every connection gracefully (each application sees `LostPeer` with reason
    /// `Shutdown`), waits for the peer manager to end, then ends every application's
    /// event stream.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        // The applications' streams end once they have read the last `LostPeer`.
        for app in &self.sender.shared.protocols.apps {
            app.close();
        }
    }
}

/// A listener of the upgraded transport.
type Listener = BoxedListener<UpgradedConnection, UpgradeError>;

/// Listens on each of `addrs`; returns the listeners and the addresses bound, with our
/// peer id.
fn listen(
    transport: &BoxedTransport<UpgradedConnection, UpgradeError>,
    addrs: Vec<NetworkAddress>,
    local_peer_id: PeerId,
) -> Result<(Vec<Listener>, Vec<NetworkAddress>), BuildError> {
    let mut listeners = Vec::new();
    let mut bound_addrs = Vec::new();
    for addr in addrs {
        let (listener, bound) =
            transport
                .listen_on(addr.clone())
                .map_err(|source| BuildError::Listen {
                    addr,
                    source: Box::new(source),
                })?;
        listeners.push(listener);
        bound_addrs.push(bound.with_peer_id(local_peer_id));
    }
    Ok((listeners, bound_addrs))
}
