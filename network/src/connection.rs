//! The vocabulary of connections that every part of the network speaks: connection
//! ids, what is known of a live connection, why one ended, and the trust check. A leaf:
//! it names nothing else of the crate but protocol ids.

use std::fmt;

use netcore::transport::ConnectionOrigin;
use netcore::{NetworkAddress, PeerId};
use std::sync::Arc;

use crate::protocol_id::ProtocolId;

/// Names one connection of this node. Ids grow with each connection, so a stale
/// notification about a replaced connection can never be mistaken for the live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// What is known of a live connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionMetadata {
    /// The remote peer, authenticated by Noise.
    pub peer_id: PeerId,
    /// The remote's address as dialed, or as seen by the listener.
    pub addr: NetworkAddress,
    /// Who dialed.
    pub origin: ConnectionOrigin,
    /// This node's id for the connection.
    pub connection_id: ConnectionId,
    /// The protocols both sides support: registered here and listed by the remote.
    pub protocols: Vec<ProtocolId>,
    /// The remote's software and version, from its handshake.
    pub client_version: String,
}

impl ConnectionMetadata {
    /// Whether the remote said it serves `protocol`.
    pub fn supports(&self, protocol: ProtocolId) -> bool {
        self.protocols.contains(&protocol)
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// This node asked to disconnect.
    Requested,
    /// The connection failed or the remote closed it.
    ConnectionLost,
    /// A newer connection to the same peer took its place (simultaneous dial, redial).
    Replaced,
    /// The health checker saw too many failed pings.
    HealthCheckFailed,
    /// The peer left the set this node keeps connections to (e.g. at an epoch change).
    NotEligible,
    /// The network is shutting down.
    Shutdown,
    /// The peer misbehaved past the ban threshold (see [`crate::reputation`]).
    Banned,
}

impl DisconnectReason {
    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Requested => "requested",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::Replaced => "replaced",
            DisconnectReason::HealthCheckFailed => "health_check_failed",
            DisconnectReason::NotEligible => "not_eligible",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Banned => "banned",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a peer id is in the trusted set.
pub type TrustPredicate = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;
