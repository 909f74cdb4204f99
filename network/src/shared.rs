//! What the peer manager, the connection tasks and the applications' senders share:
//! the protocols' state, the table of live connections and the peer manager's queue.

use std::sync::Arc;

use netcore::PeerId;

use crate::channel::MeteredSender;
use crate::protocols::{PeerHandle, PeerTable, Protocols};
use crate::requests::Request;

/// The node's state that its tasks share, each part owned by one component: the
/// protocols' (configuration, routes, application queues, reporter), the peer
/// manager's table of live connections, which it alone writes, and the queue of
/// requests to it.
pub(crate) struct Shared {
    pub(crate) local_peer_id: PeerId,
    pub(crate) protocols: Arc<Protocols>,
    pub(crate) peers: PeerTable,
    pub(crate) requests: MeteredSender<Request>,
}

impl Shared {
    /// The live connection to `peer`.
    pub(crate) fn peer(&self, peer: &PeerId) -> Option<Arc<PeerHandle>> {
        self.peers.read().get(peer).cloned()
    }
}
