//! The errors applications see.

use std::sync::Arc;

use netcore::PeerId;

use crate::connection::ConnectionId;
use crate::protocol_id::ProtocolId;
use crate::transport::UpgradeError;

/// Why an RPC failed. Every request ends in a response or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No response within the caller's timeout.
    #[error("RPC timed out")]
    Timeout,
    /// The connection closed while the request was in flight.
    #[error("peer disconnected during the RPC")]
    Disconnected,
    /// There is no connection to the peer.
    #[error("peer {0:?} is not connected")]
    NotConnected(PeerId),
    /// Too many requests in flight to (or, as the remote reports, from) this peer.
    #[error("too many requests in flight")]
    TooManyRequests,
    /// The remote does not serve the protocol.
    #[error("the remote does not support the protocol")]
    ProtocolNotSupported,
    /// No application registered the protocol on this node.
    #[error("protocol {0} is not registered")]
    UnregisteredProtocol(ProtocolId),
    /// The remote answered with a failure.
    #[error("the remote failed the request: {failure}: {message}")]
    Remote {
        /// Why, as the remote reported it.
        failure: RemoteFailure,
        /// The remote's short explanation, for logs.
        message: String,
    },
    /// The request or the response is over the configured maximum message size.
    #[error("message of {len} bytes is over the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The remote did not answer with a response.
    #[error("invalid response: {0}")]
    InvalidResponse(InvalidResponse),
}

/// Why the remote failed a request, as it reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemoteFailure {
    /// Its application dropped the request without answering, or it has none for the
    /// protocol any more.
    #[error("its application did not answer")]
    NoResponse,
    /// Its application failed the request.
    #[error("its application failed the request")]
    Application,
    /// It ran out of time waiting for its application.
    #[error("it timed out")]
    Timeout,
}

/// How the remote's side of an RPC substream was not a response. The underlying error,
/// where there is one, is logged at debug level when the RPC fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    /// The protocol negotiation on the substream failed: the remote's answer to our
    /// proposal was malformed or unexpected, or the substream failed or ended before it.
    #[error("the protocol negotiation failed")]
    Negotiation,
    /// The substream failed, was reset or ended while the request went out or before
    /// the response was whole.
    #[error("the substream failed before the response was whole")]
    Stream,
    /// The substream closed without a response.
    #[error("the substream closed without a response")]
    Missing,
    /// The response is not an `RpcResponse` message.
    #[error("the response does not decode")]
    Undecodable,
    /// The response holds neither a result nor a failure.
    #[error("the response is empty")]
    Empty,
}

impl RpcError {
    /// A short label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            RpcError::Timeout => "timeout",
            RpcError::Disconnected => "disconnected",
            RpcError::NotConnected(_) => "not_connected",
            RpcError::TooManyRequests => "too_many_requests",
            RpcError::ProtocolNotSupported => "protocol_not_supported",
            RpcError::Remote { .. } => "remote",
            RpcError::UnregisteredProtocol(_) => "unregistered_protocol",
            RpcError::TooLarge { .. } => "too_large",
            RpcError::InvalidResponse(_) => "invalid_response",
        }
    }
}

/// Why a DirectSend message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// There is no connection to the peer.
    #[error("peer {0:?} is not connected")]
    NotConnected(PeerId),
    /// No application registered the protocol on this node.
    #[error("protocol {0} is not registered")]
    UnregisteredProtocol(ProtocolId),
    /// The peer's queue for this protocol is full: the message was dropped (and counted).
    #[error("outbound queue is full; message dropped")]
    QueueFull,
    /// The message is over the configured maximum message size.
    #[error("message of {len} bytes is over the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The message was queued, but its connection or substream failed or closed before
    /// it was seen going out (counted with the queue's drops or unconfirmed messages);
    /// only [`Sent`](crate::Sent) reports this.
    #[error("message lost before it was sent")]
    Lost,
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The address has no `/p2p/<peer id>` part, so the peer to authenticate is unknown.
    #[error("address names no peer (/p2p/ part missing)")]
    MissingPeerId,
    /// The address names this node.
    #[error("refusing to dial this node itself")]
    SelfDial,
    /// Too many dials are in flight.
    #[error("too many dials in flight")]
    TooManyDials,
    /// The connection could not be established or upgraded.
    #[error("dial failed: {0}")]
    Failed(#[source] Arc<UpgradeError>),
    /// The network is shutting down.
    #[error("the network is shutting down")]
    Shutdown,
    /// The peer is banned for misbehaviour (see [`crate::reputation`]).
    #[error("peer {0:?} is banned")]
    Banned(PeerId),
}

/// Why a disconnect request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// There is no connection to the peer.
    #[error("peer {0:?} is not connected")]
    NotConnected(PeerId),
    /// The connection named is no longer the peer's live one (a newer one replaced it);
    /// the live one stays open.
    #[error("connection {connection} of peer {peer:?} is gone; the peer's live connection stays")]
    StaleConnection {
        /// The peer.
        peer: PeerId,
        /// The connection named.
        connection: ConnectionId,
    },
    /// The network is shutting down.
    #[error("the network is shutting down")]
    Shutdown,
}

/// An RPC response over its protocol's message limit: it was not sent, and the
/// caller was told [`RpcError::TooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response of {len} bytes is over the maximum of {max}; the caller was told")]
pub struct ResponseTooLarge {
    /// The response's length.
    pub len: usize,
    /// The maximum.
    pub max: usize,
}
