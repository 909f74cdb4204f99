//! The network's limits and timeouts: one source for each default.

use std::time::Duration;

use netcore::multiplexing::MuxConfig;

use crate::admission::AdmissionConfig;
use crate::rate_limit::RateLimitConfig;
use crate::reputation::ReputationConfig;

/// Largest application message (RPC request or response, DirectSend message): room for a
/// block of a few thousand transactions, small enough that a hostile peer cannot make us
/// buffer much per stream.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;
/// Largest connection handshake message: a few hundred protocol ids fit many times over.
pub const MAX_HANDSHAKE_MESSAGE_SIZE: usize = 64 * 1024;
/// Time to complete Noise, the handshake message exchange and the multiplexer start. A
/// validator on another continent needs a few round trips; 10 s is generous and still
/// frees a stalled slot quickly.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound connection upgrades in flight at once; a socket that arrives past it evicts
/// the oldest upgrade in flight (its socket is closed and counted as
/// `too_many_upgrades`), so sockets that stall cannot hold every slot until their
/// timeout. Sized for a validator set of a few hundred reconnecting together.
pub const DEFAULT_MAX_CONCURRENT_INBOUND_UPGRADES: usize = 128;
/// Outbound dials in flight at once.
pub const DEFAULT_MAX_CONCURRENT_DIALS: usize = 128;
/// Inbound connections from peers outside the trusted set (open mode only).
pub const DEFAULT_MAX_INBOUND_UNTRUSTED: usize = 100;
/// Outbound RPCs in flight to one peer; past it, `rpc` fails at once with
/// `TooManyRequests`. Consensus keeps a handful in flight; 100 leaves room for bursts.
pub const DEFAULT_MAX_CONCURRENT_OUTBOUND_RPCS: usize = 100;
/// Inbound RPCs from one peer being served at once; past it, requests are refused.
pub const DEFAULT_MAX_CONCURRENT_INBOUND_RPCS: usize = 100;
/// Time an inbound request may take: reading it, the application answering, and writing
/// the answer.
pub const DEFAULT_INBOUND_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued per (peer, protocol) for DirectSend before new ones are dropped.
pub const DEFAULT_DIRECT_SEND_QUEUE_SIZE: usize = 1024;
/// Events queued per (peer, protocol) for the application before that peer's reader
/// waits (backpressure on that peer alone).
pub const DEFAULT_INBOUND_QUEUE_SIZE: usize = 1024;
/// Connection notifications queued per peer past the data limit: they are few (bounded
/// by connection churn) and must not wait behind a peer's messages. At this many, a
/// peer's queued notifications are coalesced to what they amount to (the loss of the
/// connection the application knew, the arrival of the live one): a slow application
/// still ends with every peer's current state.
pub const MAX_QUEUED_NOTIFICATIONS_PER_PEER: usize = 64;

/// The network's configuration.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The chain this node serves; connections from other chains are refused.
    pub chain_id: u32,
    /// The network within the chain (e.g. `validator`); other networks are refused.
    pub network_id: String,
    /// This node's software and version, sent in the handshake.
    pub client_version: String,
    /// Largest application message, in bytes.
    pub max_message_size: usize,
    /// Time to upgrade a connection (Noise, handshake, multiplexer).
    pub upgrade_timeout: Duration,
    /// Inbound upgrades in flight at once.
    pub max_concurrent_inbound_upgrades: usize,
    /// Outbound dials in flight at once.
    pub max_concurrent_dials: usize,
    /// Inbound connections from peers outside the trusted set.
    pub max_inbound_untrusted: usize,
    /// Outbound RPCs in flight per peer.
    pub max_concurrent_outbound_rpcs: usize,
    /// Inbound RPCs served at once per peer.
    pub max_concurrent_inbound_rpcs: usize,
    /// Time limit of an inbound RPC, from its substream's arrival (negotiation
    /// included) to its answer; also the limit of an inbound substream's negotiation.
    pub inbound_rpc_timeout: Duration,
    /// DirectSend messages queued per (peer, protocol).
    pub direct_send_queue_size: usize,
    /// Inbound events queued per (peer, protocol) for the application.
    pub inbound_queue_size: usize,
    /// The multiplexer's windows and limits.
    pub mux: MuxConfig,
    /// Penalties, ban threshold and ban periods.
    pub reputation: ReputationConfig,
    /// Inbound rate limits per peer (trusted validators exempt by default; see
    /// [`crate::rate_limit`]).
    pub rate_limit: RateLimitConfig,
    /// Limits on inbound sockets applied at accept, before any cryptography.
    pub admission: AdmissionConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            chain_id: 0,
            network_id: "validator".to_owned(),
            client_version: concat!("netstack/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            max_concurrent_inbound_upgrades: DEFAULT_MAX_CONCURRENT_INBOUND_UPGRADES,
            max_concurrent_dials: DEFAULT_MAX_CONCURRENT_DIALS,
            max_inbound_untrusted: DEFAULT_MAX_INBOUND_UNTRUSTED,
            max_concurrent_outbound_rpcs: DEFAULT_MAX_CONCURRENT_OUTBOUND_RPCS,
            max_concurrent_inbound_rpcs: DEFAULT_MAX_CONCURRENT_INBOUND_RPCS,
            inbound_rpc_timeout: DEFAULT_INBOUND_RPC_TIMEOUT,
            direct_send_queue_size: DEFAULT_DIRECT_SEND_QUEUE_SIZE,
            inbound_queue_size: DEFAULT_INBOUND_QUEUE_SIZE,
            mux: MuxConfig::default(),
            reputation: ReputationConfig::default(),
            rate_limit: RateLimitConfig::default(),
            admission: AdmissionConfig::default(),
        }
    }
}
