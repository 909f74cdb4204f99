//! A live connection as the protocols see it: its control, its limits and its
//! DirectSend queues; and the table of them, keyed by peer.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use netcore::PeerId;
use netcore::multiplexing::Control;
use parking_lot::RwLock;
use prometheus::IntGauge;
use tokio::sync::Semaphore;

use super::Protocols;
use super::deadline::deadline_after;
use super::direct_send::Outbox;
use super::rpc::AnswerDeadlines;
use crate::connection::ConnectionMetadata;
use crate::rate_limit::MessageLimiter;

/// The live connection of each connected peer. The peer manager inserts and removes;
/// the senders and the connection tasks read.
pub(crate) type PeerTable = RwLock<HashMap<PeerId, Arc<PeerHandle>, RandomState>>;

/// A live connection, as the senders and the connection's task see it.
pub(crate) struct PeerHandle {
    pub(crate) metadata: ConnectionMetadata,
    pub(crate) control: Control,
    /// Permits for outbound RPCs in flight.
    pub(crate) outbound_rpcs: Arc<Semaphore>,
    /// Permits for inbound RPCs being served.
    pub(crate) inbound_rpcs: Arc<Semaphore>,
    /// The DirectSend queue of each registered protocol, indexed like the node's
    /// routes and created on first use. They close when the connection leaves the peer
    /// table (or the handle is dropped), which ends their writer tasks once they have
    /// written what was queued.
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
    /// `protocols`' configuration; `trusted` peers are not rate limited by default.
    pub(crate) fn new(
        protocols: &Protocols,
        metadata: ConnectionMetadata,
        control: Control,
        trusted: bool,
    ) -> Self {
        let config = &protocols.config;
        let metrics = &protocols.metrics;
        let message_limiter = config
            .rate_limit
            .for_peer(trusted)
            .and_then(|limit| limit.messages)
            .map(|rate| {
                let waits = metrics
                    .defence
                    .rate_limited
                    .with_label_values(&["messages"]);
                Arc::new(MessageLimiter::new(rate, waits))
            });
        let first_look = deadline_after(tokio::time::Instant::now(), config.inbound_rpc_timeout);
        Self {
            metadata,
            control,
            outbound_rpcs: Arc::new(Semaphore::new(config.max_concurrent_outbound_rpcs)),
            inbound_rpcs: Arc::new(Semaphore::new(config.max_concurrent_inbound_rpcs)),
            direct_send: protocols.routes.iter().map(|_| OnceLock::new()).collect(),
            direct_send_depth: metrics.queue("direct_send_outbound"),
            message_limiter,
            answer_deadlines: Arc::new(AnswerDeadlines::new(first_look)),
        }
    }

    /// Closes the connection's DirectSend queues: it is leaving the peer table.
    pub(crate) fn close_direct_send(&self) {
        for queue in self.direct_send.iter().filter_map(OnceLock::get) {
            queue.close();
        }
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}
