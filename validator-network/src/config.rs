//! The node's network configuration as written in TOML, and its validation.
//!
//! Every default comes from the `network` crate's constants, so a number is written in
//! one place. Durations are whole milliseconds (`*_ms`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use netcore::address::Endpoint;
use netcore::{AddressError, NetworkAddress, PeerId, PeerIdError};
use network::config as net;
use network::connectivity_manager::{self as cm, ConnectivityConfig};
use network::discovery::{self, DiscoveryConfig};
use network::health_checker::{self as hc, HealthCheckerConfig};
use serde::{Deserialize, Serialize};

mod error;
mod socket;
pub use error::{ConfigError, FieldError};
pub use socket::Socket;

/// The network id of a public network ([`StackConfig::for_public_network`]): a
/// connection between a node of it and a node of the validator network (`validator`)
/// is refused at the handshake, so the two cannot be mixed up by a wrong address.
pub const PUBLIC_NETWORK_ID: &str = "public";

/// Who may connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the trusted peers, authenticated by their keys (a validator network).
    #[default]
    Mutual,
    /// Anyone; peer ids come from their keys.
    Open,
}

/// A peer this node trusts, and where it may listen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedPeer {
    /// Its peer id, 64 hex digits (`node peer-id --key PATH` prints it).
    pub peer_id: String,
    /// Addresses to dial it at (`/ip4/10.0.0.2/tcp/6180`); may be empty when it dials us
    /// or discovery finds it.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Limits of the network, each defaulting to the `network` crate's constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest application message, in bytes.
    pub max_message_size: usize,
    /// Inbound connection upgrades in flight at once.
    pub max_concurrent_inbound_upgrades: usize,
    /// Outbound dials in flight at once.
    pub max_concurrent_dials: usize,
    /// Inbound connections from untrusted peers (open mode).
    pub max_inbound_untrusted: usize,
    /// Outbound RPCs in flight per peer.
    pub max_concurrent_outbound_rpcs: usize,
    /// Inbound RPCs served at once per peer.
    pub max_concurrent_inbound_rpcs: usize,
    /// DirectSend messages queued per (peer, protocol).
    pub direct_send_queue_size: usize,
    /// Inbound events queued per (peer, protocol) for an application.
    pub inbound_queue_size: usize,
    /// Outbound connections in open mode.
    pub max_outbound_open: usize,
    /// Consecutive failed pings before a peer is disconnected.
    pub ping_failures_threshold: u32,
    /// Discovery notes held.
    pub max_discovery_notes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: net::DEFAULT_MAX_MESSAGE_SIZE,
            max_concurrent_inbound_upgrades: net::DEFAULT_MAX_CONCURRENT_INBOUND_UPGRADES,
            max_concurrent_dials: net::DEFAULT_MAX_CONCURRENT_DIALS,
            max_inbound_untrusted: net::DEFAULT_MAX_INBOUND_UNTRUSTED,
            max_concurrent_outbound_rpcs: net::DEFAULT_MAX_CONCURRENT_OUTBOUND_RPCS,
            max_concurrent_inbound_rpcs: net::DEFAULT_MAX_CONCURRENT_INBOUND_RPCS,
            direct_send_queue_size: net::DEFAULT_DIRECT_SEND_QUEUE_SIZE,
            inbound_queue_size: net::DEFAULT_INBOUND_QUEUE_SIZE,
            max_outbound_open: cm::DEFAULT_MAX_OUTBOUND_OPEN,
            ping_failures_threshold: hc::DEFAULT_FAILURES_THRESHOLD,
            max_discovery_notes: discovery::DEFAULT_MAX_NOTES,
        }
    }
}

/// Timeouts and intervals in milliseconds, each defaulting to the `network` crate's
/// constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intervals {
    /// Time to upgrade a connection (Noise, handshake, multiplexer).
    pub upgrade_timeout_ms: u64,
    /// Time an inbound RPC may take.
    pub inbound_rpc_timeout_ms: u64,
    /// Time between the connectivity manager's checks for peers to dial.
    pub connectivity_check_ms: u64,
    /// First redial delay after a failed dial; it doubles per failure.
    pub backoff_base_ms: u64,
    /// Largest redial delay.
    pub backoff_cap_ms: u64,
    /// Time between health pings of each peer.
    pub ping_interval_ms: u64,
    /// Time a pong may take.
    pub ping_timeout_ms: u64,
    /// Time between discovery pushes.
    pub discovery_push_ms: u64,
}

/// Whole milliseconds of `d`, for defaults.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            upgrade_timeout_ms: ms(net::DEFAULT_UPGRADE_TIMEOUT),
            inbound_rpc_timeout_ms: ms(net::DEFAULT_INBOUND_RPC_TIMEOUT),
            connectivity_check_ms: ms(cm::DEFAULT_CHECK_INTERVAL),
            backoff_base_ms: ms(cm::DEFAULT_BACKOFF_BASE),
            backoff_cap_ms: ms(cm::DEFAULT_BACKOFF_CAP),
            ping_interval_ms: ms(hc::DEFAULT_PING_INTERVAL),
            ping_timeout_ms: ms(hc::DEFAULT_PING_TIMEOUT),
            discovery_push_ms: ms(discovery::DEFAULT_PUSH_INTERVAL),
        }
    }
}

/// The network configuration of one node, as written in TOML.
///
/// ```toml
/// identity_key = "validator.key"
/// listen_addresses = ["/ip4/0.0.0.0/tcp/6180"]
/// chain_id = 1
/// network_id = "validator"
/// mode = "mutual"
/// seeds = []
///
/// [[trusted_peers]]
/// peer_id = "<64 hex digits>"
/// addresses = ["/ip4/10.0.0.2/tcp/6180"]
///
/// [limits]
/// max_message_size = 8388608
///
/// [intervals]
/// connectivity_check_ms = 5000
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackConfig {
    /// The identity key file (`node keygen --out PATH` writes one). Not needed when the
    /// builder is given an identity.
    pub identity_key: Option<PathBuf>,
    /// Where to listen: TCP (`/ip4/0.0.0.0/tcp/6180`, port 0 picks one) or, in tests,
    /// memory (`/memory/0`); not both kinds.
    pub listen_addresses: Vec<String>,
    /// The chain; connections from other chains are refused.
    pub chain_id: u32,
    /// The network within the chain; connections from other networks are refused.
    pub network_id: String,
    /// Who may connect.
    pub mode: Mode,
    /// Addresses to dial at start, each naming its peer (`.../p2p/<peer id>`).
    pub seeds: Vec<String>,
    /// The peers this node trusts (in mutual mode, the only ones that may connect), with
    /// their addresses: the validator set of `epoch`.
    pub trusted_peers: Vec<TrustedPeer>,
    /// The epoch of `trusted_peers`; a later set replaces it at run time
    /// (`EpochHandle::change_epoch`), an older one is refused.
    pub epoch: u64,
    /// Limits.
    pub limits: Limits,
    /// Timeouts and intervals.
    pub intervals: Intervals,
    /// TCP options of every connection.
    pub socket: Socket,
}

impl Default for StackConfig {
    fn default() -> Self {
        let base = net::NetworkConfig::default();
        Self {
            identity_key: None,
            listen_addresses: Vec::new(),
            chain_id: base.chain_id,
            network_id: base.network_id,
            mode: Mode::default(),
            seeds: Vec::new(),
            trusted_peers: Vec::new(),
            epoch: 0,
            limits: Limits::default(),
            intervals: Intervals::default(),
            socket: Socket::default(),
        }
    }
}

/// Peers and their addresses.
pub(crate) type PeerAddresses = Vec<(PeerId, Vec<NetworkAddress>)>;

/// A validated configuration, in the types the network's components take.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) network: net::NetworkConfig,
    pub(crate) listen: Vec<NetworkAddress>,
    pub(crate) memory: bool,
    pub(crate) mode: Mode,
    /// Each trusted peer and its addresses, completed with `/p2p/<peer id>`.
    pub(crate) trusted: PeerAddresses,
    pub(crate) epoch: u64,
    pub(crate) connectivity: ConnectivityConfig,
    pub(crate) health: HealthCheckerConfig,
    pub(crate) discovery: DiscoveryConfig,
}

impl Resolved {
    /// The trusted peers other than `local`.
    pub(crate) fn trusted_ids(&self, local: PeerId) -> HashSet<PeerId> {
        self.trusted
            .iter()
            .map(|(peer, _)| *peer)
            .filter(|peer| *peer != local)
            .collect()
    }
}

impl StackConfig {
    /// The configuration of a public network (open authentication: anyone may
    /// connect, rate limited unless trusted) listening on `listen_address`, trusting
    /// the validators in `validators` and dialing those of them whose addresses `known`
    /// lists (each naming its peer with `/p2p/`). A validator serves full nodes on such
    /// a network; a full node follows the chain on it.
    pub fn for_public_network(
        listen_address: &str,
        validators: &[PeerId],
        known: &[NetworkAddress],
    ) -> Self {
        Self {
            mode: Mode::Open,
            network_id: PUBLIC_NETWORK_ID.to_owned(),
            ..Self::for_validator_set(listen_address, validators, known)
        }
    }

    /// The configuration of one validator of the set `validators`, listening on
    /// `listen_address` and knowing the addresses in `known` (each naming its peer with
    /// `/p2p/`): e.g. a cluster started one node at a time, where each dials those
    /// already up and is dialed by the later ones. Everything else is the default.
    pub fn for_validator_set(
        listen_address: &str,
        validators: &[PeerId],
        known: &[NetworkAddress],
    ) -> Self {
        Self {
            listen_addresses: vec![listen_address.to_owned()],
            trusted_peers: validators
                .iter()
                .map(|peer| TrustedPeer {
                    peer_id: peer.to_string(),
                    addresses: known
                        .iter()
                        .filter(|a| a.peer_id() == Some(*peer))
                        .map(ToString::to_string)
                        .collect(),
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Parses a configuration from TOML text (it is not validated yet; see
    /// [`validate`](StackConfig::validate)).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, list or table: serialization cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        let (listen, memory) = self.resolve_listen()?;
        if self.network_id.is_empty() {
            return Err(ConfigError::invalid("network_id", FieldError::Empty));
        }
        let (trusted, seeds) = self.resolve_peers(memory)?;
        self.check_limits()?;
        self.check_intervals()?;
        let (l, t) = (&self.limits, &self.intervals);
        let network = net::NetworkConfig {
            chain_id: self.chain_id,
            network_id: self.network_id.clone(),
            max_message_size: l.max_message_size,
            upgrade_timeout: Duration::from_millis(t.upgrade_timeout_ms),
            max_concurrent_inbound_upgrades: l.max_concurrent_inbound_upgrades,
            max_concurrent_dials: l.max_concurrent_dials,
            max_inbound_untrusted: l.max_inbound_untrusted,
            max_concurrent_outbound_rpcs: l.max_concurrent_outbound_rpcs,
            max_concurrent_inbound_rpcs: l.max_concurrent_inbound_rpcs,
            inbound_rpc_timeout: Duration::from_millis(t.inbound_rpc_timeout_ms),
            direct_send_queue_size: l.direct_send_queue_size,
            inbound_queue_size: l.inbound_queue_size,
            ..net::NetworkConfig::default()
        };
        let connectivity = ConnectivityConfig {
            check_interval: Duration::from_millis(t.connectivity_check_ms),
            backoff_base: Duration::from_millis(t.backoff_base_ms),
            backoff_cap: Duration::from_millis(t.backoff_cap_ms),
            max_outbound_open: l.max_outbound_open,
            seeds,
        };
        let health = HealthCheckerConfig {
            ping_interval: Duration::from_millis(t.ping_interval_ms),
            ping_timeout: Duration::from_millis(t.ping_timeout_ms),
            failures_threshold: l.ping_failures_threshold,
        };
        let discovery = DiscoveryConfig {
            push_interval: Duration::from_millis(t.discovery_push_ms),
            max_notes: l.max_discovery_notes,
            ..DiscoveryConfig::default()
        };
        Ok(Resolved {
            network,
            listen,
            memory,
            mode: self.mode,
            trusted,
            epoch: self.epoch,
            connectivity,
            health,
            discovery,
        })
    }

    /// The listen addresses, and whether they are memory addresses (all one kind).
    fn resolve_listen(&self) -> Result<(Vec<NetworkAddress>, bool), ConfigError> {
        if self.listen_addresses.is_empty() {
            return Err(ConfigError::invalid("listen_addresses", FieldError::Empty));
        }
        let mut listen = Vec::new();
        for (i, text) in self.listen_addresses.iter().enumerate() {
            let field = format!("listen_addresses[{i}]");
            let addr: NetworkAddress = text
                .parse()
                .map_err(|e: AddressError| ConfigError::invalid(&field, e))?;
            if addr.peer_id().is_some() {
                return Err(ConfigError::invalid(field, FieldError::UnexpectedPeerId));
            }
            listen.push(addr);
        }
        let memory = is_memory(&listen[0]);
        for (i, addr) in listen.iter().enumerate() {
            same_transport(memory, format!("listen_addresses[{i}]"), addr)?;
        }
        Ok((listen, memory))
    }

    /// The trusted peers with their addresses, and every address to dial (the seeds,
    /// then the trusted peers'), each of the listen addresses' kind.
    fn resolve_peers(
        &self,
        memory: bool,
    ) -> Result<(PeerAddresses, Vec<NetworkAddress>), ConfigError> {
        let mut trusted = Vec::new();
        let mut seen = HashSet::new();
        for (i, peer) in self.trusted_peers.iter().enumerate() {
            let field = format!("trusted_peers[{i}].peer_id");
            let peer_id: PeerId = peer
                .peer_id
                .parse()
                .map_err(|e: PeerIdError| ConfigError::invalid(&field, e))?;
            if noise::x25519_public_key(&peer_id).is_err() {
                return Err(ConfigError::invalid(field, FieldError::NotAKey));
            }
            if !seen.insert(peer_id) {
                return Err(ConfigError::invalid(field, FieldError::Duplicate));
            }
            let mut addrs = Vec::new();
            for (j, text) in peer.addresses.iter().enumerate() {
                let field = format!("trusted_peers[{i}].addresses[{j}]");
                let addr = parse_peer_address(&field, text, Some(peer_id))?;
                same_transport(memory, field, &addr)?;
                addrs.push(addr);
            }
            trusted.push((peer_id, addrs));
        }
        let mut seeds = Vec::new();
        for (i, text) in self.seeds.iter().enumerate() {
            let field = format!("seeds[{i}]");
            let addr = parse_peer_address(&field, text, None)?;
            same_transport(memory, field, &addr)?;
            seeds.push(addr);
        }
        seeds.extend(trusted.iter().flat_map(|(_, addrs)| addrs.iter().cloned()));
        Ok((trusted, seeds))
    }

    /// Every limit that must not be zero.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let limits = [
            ("limits.max_message_size", l.max_message_size),
            (
                "limits.max_concurrent_inbound_upgrades",
                l.max_concurrent_inbound_upgrades,
            ),
            ("limits.max_concurrent_dials", l.max_concurrent_dials),
            (
                "limits.max_concurrent_outbound_rpcs",
                l.max_concurrent_outbound_rpcs,
            ),
            (
                "limits.max_concurrent_inbound_rpcs",
                l.max_concurrent_inbound_rpcs,
            ),
            ("limits.direct_send_queue_size", l.direct_send_queue_size),
            ("limits.inbound_queue_size", l.inbound_queue_size),
            ("limits.max_outbound_open", l.max_outbound_open),
            ("limits.max_discovery_notes", l.max_discovery_notes),
        ];
        for (field, value) in limits {
            if value == 0 {
                return Err(ConfigError::invalid(field, FieldError::Zero));
            }
        }
        if l.ping_failures_threshold == 0 {
            return Err(ConfigError::invalid(
                "limits.ping_failures_threshold",
                FieldError::Zero,
            ));
        }
        Ok(())
    }

    /// Every interval that must not be zero, and their order.
    fn check_intervals(&self) -> Result<(), ConfigError> {
        let t = &self.intervals;
        let intervals = [
            ("intervals.upgrade_timeout_ms", t.upgrade_timeout_ms),
            ("intervals.inbound_rpc_timeout_ms", t.inbound_rpc_timeout_ms),
            ("intervals.connectivity_check_ms", t.connectivity_check_ms),
            ("intervals.backoff_base_ms", t.backoff_base_ms),
            ("intervals.backoff_cap_ms", t.backoff_cap_ms),
            ("intervals.ping_interval_ms", t.ping_interval_ms),
            ("intervals.ping_timeout_ms", t.ping_timeout_ms),
            ("intervals.discovery_push_ms", t.discovery_push_ms),
        ];
        for (field, value) in intervals {
            if value == 0 {
                return Err(ConfigError::invalid(field, FieldError::Zero));
            }
        }
        if t.backoff_base_ms > t.backoff_cap_ms {
            return Err(ConfigError::invalid(
                "intervals.backoff_base_ms",
                FieldError::GreaterThan("intervals.backoff_cap_ms"),
            ));
        }
        if t.ping_timeout_ms > t.ping_interval_ms {
            return Err(ConfigError::invalid(
                "intervals.ping_timeout_ms",
                FieldError::GreaterThan("intervals.ping_interval_ms"),
            ));
        }

        Ok(())
    }
}

/// `addr` is of the listen addresses' kind (`memory` or not), or `field` is refused.
fn same_transport(memory: bool, field: String, addr: &NetworkAddress) -> Result<(), ConfigError> {
    if is_memory(addr) == memory {
        Ok(())
    } else {
        Err(ConfigError::invalid(field, FieldError::MixedTransports))
    }
}

fn is_memory(addr: &NetworkAddress) -> bool {
    matches!(addr.endpoint(), Endpoint::Memory(_))
}

/// Parses an address of a peer: it must name `expected` if given (an address without a
/// `/p2p/` part is completed with it), or name some peer otherwise.
fn parse_peer_address(
    field: &str,
    text: &str,
    expected: Option<PeerId>,
) -> Result<NetworkAddress, ConfigError> {
    let addr: NetworkAddress = text
        .parse()
        .map_err(|e: AddressError| ConfigError::invalid(field, e))?;
    match (addr.peer_id(), expected) {
        (Some(found), Some(expected)) if found != expected => Err(ConfigError::invalid(
            field,
            FieldError::PeerIdMismatch { expected, found },
        )),
        (Some(_), _) => Ok(addr),
        (None, Some(expected)) => Ok(addr.with_peer_id(expected)),
        (None, None) => Err(ConfigError::invalid(field, FieldError::MissingPeerId)),
    }
}
