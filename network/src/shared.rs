//! State shared by the peer manager, the per-connection tasks and the applications'
//! senders: the routing table and the live peers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use netcore::PeerId;
use netcore::multiplexing::Control;
use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{Semaphore, mpsc};

use crate::channel::{FairSender, MeteredSender};
use crate::config::NetworkConfig;
use crate::counters::NetworkMetrics;
use crate::interface::{Event, EventKey};
use crate::peer_manager::{ConnectionMetadata, Request};
use crate::protocol_id::{ProtocolId, ProtocolKind};

/// The metrics of one protocol, resolved once so the message path does no label lookup.
#[derive(Clone, Debug)]
pub(crate) struct ProtocolMetrics {
    pub(crate) bytes_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    pub(crate) messages_in: IntCounter,
    pub(crate) messages_out: IntCounter,
    pub(crate) queue_drops: IntCounter,
    pub(crate) decode_failures: IntCounter,
}

impl ProtocolMetrics {
    pub(crate) fn new(metrics: &NetworkMetrics, protocol: ProtocolId) -> Self {
        let p = [protocol.as_str()];
        Self {
            bytes_in: metrics.bytes_in.with_label_values(&p),
            bytes_out: metrics.bytes_out.with_label_values(&p),
            messages_in: metrics.messages_in.with_label_values(&p),
            messages_out: metrics.messages_out.with_label_values(&p),
            queue_drops: metrics
                .queue_drops
                .with_label_values(&[protocol.as_str(), "queue_full"]),
            decode_failures: metrics.decode_failures.with_label_values(&p),
        }
    }
}

/// A registered protocol: its kind, the application it belongs to, its metrics.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) protocol: ProtocolId,
    pub(crate) kind: ProtocolKind,
    pub(crate) app: usize,
    pub(crate) metrics: ProtocolMetrics,
}

/// A live connection, as the senders see it.
pub(crate) struct PeerHandle {
    pub(crate) metadata: ConnectionMetadata,
    pub(crate) control: Control,
    /// Permits for outbound RPCs in flight.
    pub(crate) outbound_rpcs: Arc<Semaphore>,
    /// Permits for inbound RPCs being served.
    pub(crate) inbound_rpcs: Arc<Semaphore>,
    /// The DirectSend queue of each protocol, created on first use. Dropping the handle
    /// drops the queues, which ends their writer tasks.
    pub(crate) direct_send: Mutex<HashMap<ProtocolId, mpsc::Sender<Bytes>>>,
    /// Messages waiting in this peer's DirectSend queues.
    pub(crate) direct_send_depth: IntGauge,
}

/// Everything the network's tasks share.
pub(crate) struct Shared {
    pub(crate) local_peer_id: PeerId,
    pub(crate) config: NetworkConfig,
    pub(crate) metrics: NetworkMetrics,
    /// Registered protocols; a protocol's index here is its index in `protocol_names`.
    pub(crate) routes: Vec<Route>,
    pub(crate) protocol_names: Vec<&'static str>,
    /// Each application's event queue.
    pub(crate) apps: Vec<FairSender<EventKey, Event>>,
    pub(crate) peers: RwLock<HashMap<PeerId, Arc<PeerHandle>>>,
    pub(crate) requests: MeteredSender<Request>,
}

impl Shared {
    /// The live connection to `peer`.
    pub(crate) fn peer(&self, peer: &PeerId) -> Option<Arc<PeerHandle>> {
        self.peers.read().get(peer).cloned()
    }

    /// The route of a registered protocol.
    pub(crate) fn route(&self, protocol: ProtocolId) -> Option<&Route> {
        self.routes.iter().find(|r| r.protocol == protocol)
    }
}
