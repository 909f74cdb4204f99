//! The node's network metrics, registered in a per-node prometheus [`Registry`] so that
//! several nodes in one process keep separate figures.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, register_histogram_vec_with_registry, register_histogram_with_registry,
    register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry,
};

/// Buckets of the RPC latency histogram, in seconds: from 50 µs (in-process) to 10 s
/// (the longest sensible timeout).
const RPC_LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every metric of one node's network, by concern.
#[derive(Clone, Debug)]
pub struct NetworkMetrics {
    /// Connections and their upgrades.
    pub connection: ConnectionMetrics,
    /// What the protocols carry, and the queues it waits in.
    pub traffic: TrafficMetrics,
    /// RPC latency and outcomes.
    pub rpc: RpcMetrics,
    /// Penalties, bans and rate limits.
    pub defence: DefenceMetrics,
}

impl NetworkMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            connection: ConnectionMetrics::new(registry)?,
            traffic: TrafficMetrics::new(registry)?,
            rpc: RpcMetrics::new(registry)?,
            defence: DefenceMetrics::new(registry)?,
        })
    }

    /// The depth gauge of the queue named `queue`.
    pub fn queue(&self, queue: &str) -> IntGauge {
        self.traffic.queue_depth.with_label_values(&[queue])
    }
}

/// The RPC latency histogram's options: `name`, `help`, and [`RPC_LATENCY_BUCKETS`].
fn latency(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(RPC_LATENCY_BUCKETS.to_vec())
}

/// Connections and their upgrades.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    /// Live connections, by origin (`inbound` / `outbound`).
    pub live: IntGaugeVec,
    /// Connection events, by event (`opened`, `closed`, `replaced`, `refused`).
    pub events: IntCounterVec,
    /// Failed connection upgrades (Noise, handshake, mux), by reason.
    pub handshake_failures: IntCounterVec,
    /// Time to dial and fully upgrade an outbound connection.
    pub dial_latency: Histogram,
    /// Inbound sockets refused at accept, before any cryptography, by reason.
    pub admission_refusals: IntCounterVec,
    /// Sources (IPs and subnets) whose SYNs the listeners' socket filter drops now.
    pub filtered_sources: IntGauge,
    /// Inbound upgrades evicted to make room for a newer socket.
    pub upgrades_evicted: IntCounter,
    /// Connections closed because the remote broke the multiplexer protocol.
    pub mux_protocol_errors: IntCounter,
    /// Inbound substreams refused, by reason (`mux_refused`: over the multiplexer's
    /// stream cap, answered with RST).
    pub substreams_refused: IntCounterVec,
}

impl ConnectionMetrics {
    /// Creates these metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        Ok(Self {
            live: register_int_gauge_vec_with_registry!(
                "network_connections",
                "Live connections",
                &["origin"],
                r
            )?,
            events: register_int_counter_vec_with_registry!(
                "network_connection_events_total",
                "Connection events",
                &["event"],
                r
            )?,
            handshake_failures: register_int_counter_vec_with_registry!(
                "network_handshake_failures_total",
                "Failed connection upgrades",
                &["reason"],
                r
            )?,
            dial_latency: register_histogram_with_registry!(
                latency(
                    "network_dial_latency_seconds",
                    "Time to dial and upgrade an outbound connection"
                ),
                r
            )?,
            admission_refusals: register_int_counter_vec_with_registry!(
                "network_admission_refusals_total",
                "Inbound sockets refused at accept, before any cryptography",
                &["reason"],
                r
            )?,
            filtered_sources: register_int_gauge_with_registry!(
                "network_admission_filtered_sources",
                "Sources (IPs and subnets) whose SYNs the listeners' socket filter drops now",
                r
            )?,
            upgrades_evicted: register_int_counter_with_registry!(
                "network_upgrades_evicted_total",
                "Inbound upgrades evicted to make room for a newer socket",
                r
            )?,
            mux_protocol_errors: register_int_counter_with_registry!(
                "network_mux_protocol_errors_total",
                "Connections closed because the remote broke the multiplexer protocol",
                r
            )?,
            substreams_refused: register_int_counter_vec_with_registry!(
                "network_substreams_refused_total",
                "Inbound substreams refused",
                &["reason"],
                r
            )?,
        })
    }
}

/// What the protocols carry, and the queues it waits in.
#[derive(Clone, Debug)]
pub struct TrafficMetrics {
    /// Application payload bytes received, by protocol.
    pub bytes_in: IntCounterVec,
    /// Application payload bytes sent, by protocol.
    pub bytes_out: IntCounterVec,
    /// Messages and requests received, by protocol.
    pub messages_in: IntCounterVec,
    /// Messages and requests sent, by protocol.
    pub messages_out: IntCounterVec,
    /// Inbound messages that failed to decode, by protocol.
    pub decode_failures: IntCounterVec,
    /// Items waiting in internal queues, by queue. `inbound_events` counts DirectSend
    /// messages one by one although they wait in batches; `direct_send_outbound` moves
    /// in steps of 16 messages per (peer, protocol) queue, so it may read up to 15 per
    /// queue low while messages wait, and is exact when the writers have taken them.
    pub queue_depth: IntGaugeVec,
    /// Items dropped, by queue and reason. For a DirectSend protocol the queue is the
    /// protocol and the reason one of `queue_full`, `stream_failed` (never written: no
    /// substream could be opened, or the connection closed while they waited) and `unconfirmed` (written to a substream that ended before the
    /// receiver acknowledged it: lost or delivered, the sender cannot tell).
    pub queue_drops: IntCounterVec,
}

impl TrafficMetrics {
    /// Creates these metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        Ok(Self {
            bytes_in: register_int_counter_vec_with_registry!(
                "network_bytes_in_total",
                "Payload bytes received",
                &["protocol"],
                r
            )?,
            bytes_out: register_int_counter_vec_with_registry!(
                "network_bytes_out_total",
                "Payload bytes sent",
                &["protocol"],
                r
            )?,
            messages_in: register_int_counter_vec_with_registry!(
                "network_messages_in_total",
                "Messages received",
                &["protocol"],
                r
            )?,
            messages_out: register_int_counter_vec_with_registry!(
                "network_messages_out_total",
                "Messages sent",
                &["protocol"],
                r
            )?,
            decode_failures: register_int_counter_vec_with_registry!(
                "network_decode_failures_total",
                "Inbound messages that failed to decode",
                &["protocol"],
                r
            )?,
            queue_depth: register_int_gauge_vec_with_registry!(
                "network_queue_depth",
                "Items waiting in internal queues (direct_send_outbound: in steps of 16 per peer and protocol)",
                &["queue"],
                r
            )?,
            queue_drops: register_int_counter_vec_with_registry!(
                "network_queue_drops_total",
                "Items dropped from queues",
                &["queue", "reason"],
                r
            )?,
        })
    }
}

/// RPC latency and outcomes.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    /// Outbound RPC latency, by protocol (successful requests only).
    pub latency: HistogramVec,
    /// RPC outcomes, by protocol, direction and outcome.
    pub outcomes: IntCounterVec,
}

impl RpcMetrics {
    /// Creates these metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        Ok(Self {
            latency: register_histogram_vec_with_registry!(
                latency(
                    "network_rpc_latency_seconds",
                    "Outbound RPC round-trip time"
                ),
                &["protocol"],
                r
            )?,
            outcomes: register_int_counter_vec_with_registry!(
                "network_rpc_outcomes_total",
                "RPC outcomes",
                &["protocol", "direction", "outcome"],
                r
            )?,
        })
    }
}

/// Penalties, bans and rate limits.
#[derive(Clone, Debug)]
pub struct DefenceMetrics {
    /// Penalties given, by misbehaviour.
    pub penalties: IntCounterVec,
    /// Bans imposed, by kind of peer (`trusted` / `untrusted`).
    pub bans: IntCounterVec,
    /// Connections and dials refused because the peer is banned, by origin.
    pub ban_refusals: IntCounterVec,
    /// Peers banned, as of the last penalty or ban refusal (an expired ban is taken
    /// off at the next one).
    pub banned_peers: IntGauge,
    /// Times a peer's inbound reader was held back by its rate limit, by kind
    /// (`bytes` / `messages`).
    pub rate_limited: IntCounterVec,
}

impl DefenceMetrics {
    /// Creates these metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = registry;
        Ok(Self {
            penalties: register_int_counter_vec_with_registry!(
                "network_penalties_total",
                "Reputation penalties given",
                &["misbehaviour"],
                r
            )?,
            bans: register_int_counter_vec_with_registry!(
                "network_bans_total",
                "Bans imposed",
                &["peer"],
                r
            )?,
            ban_refusals: register_int_counter_vec_with_registry!(
                "network_ban_refusals_total",
                "Connections and dials refused because the peer is banned",
                &["origin"],
                r
            )?,
            banned_peers: register_int_gauge_with_registry!(
                "network_banned_peers",
                "Peers banned now",
                r
            )?,
            rate_limited: register_int_counter_vec_with_registry!(
                "network_rate_limited_total",
                "Times an inbound reader was held back by its rate limit",
                &["kind"],
                r
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_in_one_process_keep_separate_registries() {
        let (a, b) = (Registry::new(), Registry::new());
        let ma = NetworkMetrics::new(&a).unwrap();
        let _mb = NetworkMetrics::new(&b).unwrap();
        ma.traffic.messages_in.with_label_values(&["/p"]).inc();
        let count = |r: &Registry| {
            r.gather()
                .iter()
                .filter(|f| f.name() == "network_messages_in_total")
                .map(|f| f.get_metric().len())
                .sum::<usize>()
        };
        assert_eq!(count(&a), 1);
        assert_eq!(count(&b), 0);
    }
}
