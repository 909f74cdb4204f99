//! The registered protocols: each one's kind, the application it belongs to and its
//! metrics, resolved once at start so the message path does no label lookup.

use netcore::multiplexing::Priority;
use prometheus::{Histogram, IntCounter, IntCounterVec};

use crate::counters::NetworkMetrics;
use crate::protocol_id::{ProtocolId, ProtocolKind};

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
    /// Every RPC outcome, by protocol, direction and outcome.
    pub(crate) rpc_outcomes: IntCounterVec,
}

impl ProtocolMetrics {
    pub(crate) fn new(metrics: &NetworkMetrics, protocol: ProtocolId) -> Self {
        let p = [protocol.as_str()];
        Self {
            bytes_in: metrics.traffic.bytes_in.with_label_values(&p),
            bytes_out: metrics.traffic.bytes_out.with_label_values(&p),
            messages_in: metrics.traffic.messages_in.with_label_values(&p),
            messages_out: metrics.traffic.messages_out.with_label_values(&p),
            queue_drops: metrics
                .traffic
                .queue_drops
                .with_label_values(&[protocol.as_str(), "queue_full"]),
            stream_drops: metrics
                .traffic
                .queue_drops
                .with_label_values(&[protocol.as_str(), "stream_failed"]),
            unconfirmed: metrics
                .traffic
                .queue_drops
                .with_label_values(&[protocol.as_str(), "unconfirmed"]),
            decode_failures: metrics.traffic.decode_failures.with_label_values(&p),
            rpc_latency: metrics.rpc.latency.with_label_values(&p),
            rpc_outbound_ok: metrics.rpc.outcomes.with_label_values(&[
                protocol.as_str(),
                "outbound",
                "ok",
            ]),
            rpc_inbound_ok: metrics.rpc.outcomes.with_label_values(&[
                protocol.as_str(),
                "inbound",
                "ok",
            ]),
            rpc_outcomes: metrics.rpc.outcomes.clone(),
        }
    }

    /// Counts an RPC of this protocol that ended with `outcome`, `direction` being
    /// `"inbound"` or `"outbound"`.
    pub(crate) fn rpc_outcome(&self, protocol: ProtocolId, direction: &str, outcome: &str) {
        match (direction, outcome) {
            ("inbound", "ok") => self.rpc_inbound_ok.inc(),
            ("outbound", "ok") => self.rpc_outbound_ok.inc(),
            _ => self
                .rpc_outcomes
                .with_label_values(&[protocol.as_str(), direction, outcome])
                .inc(),
        }
    }
}

/// A registered protocol: its kind, the application it belongs to, its metrics.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) protocol: ProtocolId,
    pub(crate) kind: ProtocolKind,
    /// The class its substreams are sent in, both ways.
    pub(crate) priority: Priority,
    /// The largest payload of one of its messages or responses.
    pub(crate) max_message_size: usize,
    /// The largest RPC request: the smaller of `max_message_size` and the network's
    /// default limit, so that a protocol of large responses does not let each of a
    /// peer's concurrent requests be as large.
    pub(crate) max_request_size: usize,
    pub(crate) app: usize,
    pub(crate) metrics: ProtocolMetrics,
}

/// Every registered protocol, in registration order: a protocol's index here is its
/// index in the list negotiated on inbound substreams.
#[derive(Debug)]
pub(crate) struct Routes {
    routes: Vec<Route>,
    names: Vec<&'static str>,
    /// The smallest `max_message_size` of any route: a message no larger is within
    /// every protocol's limit, with no lookup.
    smallest_limit: usize,
}

impl Routes {
    /// The routes of `routes`, in that order.
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        let names = routes.iter().map(|r| r.protocol.as_str()).collect();
        let smallest_limit = routes.iter().map(|r| r.max_message_size).min();
        Self {
            routes,
            names,
            smallest_limit: smallest_limit.unwrap_or(0),
        }
    }

    /// The route of a registered protocol.
    pub(crate) fn get(&self, protocol: ProtocolId) -> Option<&Route> {
        self.index_of(protocol).map(|(_, route)| route)
    }

    /// The route of a registered protocol, with its index.
    pub(crate) fn index_of(&self, protocol: ProtocolId) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.protocol == protocol)
    }

    /// Whether a payload of `len` bytes is within `protocol`'s limit; `Err` gives the
    /// limit. An unregistered protocol has none here (its caller refuses it).
    pub(crate) fn check_size(&self, protocol: ProtocolId, len: usize) -> Result<(), usize> {
        if len <= self.smallest_limit {
            return Ok(());
        }
        match self.get(protocol) {
            Some(route) if len > route.max_message_size => Err(route.max_message_size),
            _ => Ok(()),
        }
    }

    /// The route at `index`.
    pub(crate) fn at(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The protocol ids, by index, as inbound negotiation offers them.
    pub(crate) fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Every route, by index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

impl std::ops::Index<usize> for Routes {
    type Output = Route;

    /// The route at `index`, an index this node handed out (negotiation's, or
    /// [`Routes::index_of`]'s).
    fn index(&self, index: usize) -> &Route {
        &self.routes[index]
    }
}
