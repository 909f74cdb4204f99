//! State shared by the peer manager, the per-connection tasks and the applications'
//! senders: the routing table and the live peers.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use netcore::PeerId;
use netcore::multiplexing::Control;
use parking_lot::{Mutex, RwLock};
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::channel::{FairSender, MeteredSender};
use crate::config::NetworkConfig;
use crate::connection::{ConnectionMetadata, DisconnectReason, TrustPredicate};
use crate::counters::NetworkMetrics;
use crate::interface::{EventKey, Queued};
use crate::protocol_id::{ProtocolId, ProtocolKind};
use crate::protocols::direct_send::Outbox;
use crate::protocols::rpc::AnswerDeadlines;
use crate::rate_limit::MessageLimiter;
use crate::reputation::{Misbehaviour, Reputation, Verdict};
use crate::requests::Request;

/// The metrics of one protocol, resolved once so the message path does no label lookup.
#[derive(Clone, Debug)]
pub(crate) struct ProtocolMetrics {
    pub(crate) bytes_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    pub(crate) messages_in: IntCounter,
    pub(crate) messages_out: IntCounter,
    /// DirectSend messages refused because their queue was full.
    pub(crate) queue_drops: IntCounter,
    /// DirectSend messages accepted and never written: no substream could be opened for
    /// them, or the connection closed while they waited in the queue.
    pub(crate) stream_drops: IntCounter,
    /// DirectSend messages written to a substream that ended before the receiver
    /// acknowledged them: each was delivered or lost, and the sender cannot tell which.
    pub(crate) unconfirmed: IntCounter,
    pub(crate) decode_failures: IntCounter,
    /// Latency of this protocol's successful outbound RPCs.
    pub(crate) rpc_latency: Histogram,
    /// Outbound and inbound RPCs of this protocol that ended well (the other outcomes
    /// are rare and looked up by label when they happen).
    pub(crate) rpc_outbound_ok: IntCounter,
    pub(crate) rpc_inbound_ok: IntCounter,
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
            stream_drops: metrics
                .queue_drops
                .with_label_values(&[protocol.as_str(), "stream_failed"]),
            unconfirmed: metrics
                .queue_drops
                .with_label_values(&[protocol.as_str(), "unconfirmed"]),
            decode_failures: metrics.decode_failures.with_label_values(&p),
            rpc_latency: metrics.rpc_latency.with_label_values(&p),
            rpc_outbound_ok: metrics.rpc_outcomes.with_label_values(&[
                protocol.as_str(),
                "outbound",
                "ok",
            ]),
            rpc_inbound_ok: metrics.rpc_outcomes.with_label_values(&[
                protocol.as_str(),
                "inbound",
                "ok",
            ]),
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
    /// The DirectSend queue of each registered protocol, indexed like
    /// [`Shared::routes`] and created on first use. They close when the connection
    /// leaves the peer table (or the handle is dropped), which ends their writer tasks
    /// once they have written what was queued.
    pub(crate) direct_send: Box<[OnceLock<Outbox>]>,
    /// Messages waiting in this peer's DirectSend queues.
    pub(crate) direct_send_depth: IntGauge,
    /// Paces the messages this peer hands to the applications, if it is rate limited.
    pub(crate) message_limiter: Option<Arc<MessageLimiter>>,
    /// Inbound RPCs waiting for an answer written without their task, for the
    /// connection's task to time out.
    pub(crate) answer_deadlines: Arc<AnswerDeadlines>,
}

impl PeerHandle {
    /// The handle of a new connection described by `metadata`, with the limits of
    /// `shared`'s configuration; `trusted` peers are not rate limited by default.
    pub(crate) fn new(
        shared: &Shared,
        metadata: ConnectionMetadata,
        control: Control,
        trusted: bool,
    ) -> Self {
        let config = &shared.config;
        let message_limiter = config
            .rate_limit
            .for_peer(trusted)
            .and_then(|limit| limit.messages)
            .map(|rate| {
                let waits = shared.metrics.rate_limited.with_label_values(&["messages"]);
                Arc::new(MessageLimiter::new(rate, waits))
            });
        Self {
            metadata,
            control,
            outbound_rpcs: Arc::new(Semaphore::new(config.max_concurrent_outbound_rpcs)),
            inbound_rpcs: Arc::new(Semaphore::new(config.max_concurrent_inbound_rpcs)),
            direct_send: shared.routes.iter().map(|_| OnceLock::new()).collect(),
            direct_send_depth: shared.metrics.queue("direct_send_outbound"),
            message_limiter,
            answer_deadlines: Arc::new(AnswerDeadlines::new(crate::protocols::rpc::later(
                tokio::time::Instant::now(),
                config.inbound_rpc_timeout,
            ))),
        }
    }

    /// Closes the connection's DirectSend queues: it is leaving the peer table.
    pub(crate) fn close_direct_send(&self) {
        for queue in self.direct_send.iter().filter_map(OnceLock::get) {
            queue.close();
        }
    }
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
    pub(crate) apps: Vec<FairSender<EventKey, Queued>>,
    pub(crate) peers: RwLock<HashMap<PeerId, Arc<PeerHandle>, RandomState>>,
    pub(crate) requests: MeteredSender<Request>,
    /// Penalties and bans, shared with the transport (which refuses banned peers).
    pub(crate) reputation: Arc<Mutex<Reputation>>,
    /// Whether a peer is in the trusted set.
    pub(crate) is_trusted: TrustPredicate,
    /// The runtime the network started on, for work begun outside it (an answer that
    /// could not be written at once).
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Shared {
    /// The live connection to `peer`.
    pub(crate) fn peer(&self, peer: &PeerId) -> Option<Arc<PeerHandle>> {
        self.peers.read().get(peer).cloned()
    }

    /// Penalizes `peer` for `misbehaviour`; when that bans it, counts the ban and asks
    /// the peer manager to disconnect it (or, if its queue is full, closes the
    /// connection directly). Never waits.
    pub(crate) fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) {
        let trusted = (self.is_trusted)(&peer);
        self.metrics
            .penalties
            .with_label_values(&[misbehaviour.as_str()])
            .inc();
        let now = tokio::time::Instant::now().into_std();
        let (verdict, banned) = {
            let mut reputation = self.reputation.lock();
            let verdict = reputation.penalize(peer, misbehaviour, trusted, now);
            (verdict, reputation.banned_count(now))
        };
        self.metrics.banned_peers.set(banned as i64);
        let Verdict::Banned { period, offence } = verdict else {
            debug!(peer = %peer.short_str(), %misbehaviour, ?verdict, "peer penalized");
            return;
        };
        warn!(peer = %peer.short_str(), %misbehaviour, ?period, offence, trusted, "peer banned");
        let kind = if trusted { "trusted" } else { "untrusted" };
        self.metrics.bans.with_label_values(&[kind]).inc();
        let (reply, _) = tokio::sync::oneshot::channel();
        let request = Request::Disconnect {
            peer,
            connection: None,
            reason: DisconnectReason::Banned,
            reply,
        };
        // The peer manager's queue is full (or it stopped): close the connection here.
        // `report` may be called outside the runtime; then the ban alone stands, and the
        // connection's next refusal or close ends it.
        if self.requests.try_send(request).is_err()
            && let Some(handle) = self.peer(&peer)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let control = handle.control.clone();
            runtime.spawn(async move {
                let _ = control.close().await;
            });
        }
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.reputation
            .lock()
            .is_banned(peer, tokio::time::Instant::now().into_std())
    }

    /// The route of a registered protocol.
    pub(crate) fn route(&self, protocol: ProtocolId) -> Option<&Route> {
        self.route_index(protocol).map(|(_, route)| route)
    }

    /// The route of a registered protocol, with its index in [`Shared::routes`].
    pub(crate) fn route_index(&self, protocol: ProtocolId) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.protocol == protocol)
    }
}
