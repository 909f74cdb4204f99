//! What reaches the peer manager: the requests of the applications' senders and the
//! notices of connection tasks that ended. Below the peer manager, so that the senders
//! and the connection tasks need not know it.

use netcore::{NetworkAddress, PeerId};
use tokio::sync::oneshot;

use crate::connection::{ConnectionId, DisconnectReason};
use crate::error::{DialError, DisconnectError};

/// Requests to the peer manager.
#[derive(Debug)]
pub(crate) enum Request {
    /// Dial an address that names its peer.
    Dial(NetworkAddress, oneshot::Sender<Result<(), DialError>>),
    /// Close the connection to a peer: its live one, or only the one named.
    Disconnect {
        peer: PeerId,
        connection: Option<ConnectionId>,
        reason: DisconnectReason,
        reply: oneshot::Sender<Result<(), DisconnectError>>,
    },
}

/// A connection's task ended.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) peer_id: PeerId,
    pub(crate) connection_id: ConnectionId,
}
