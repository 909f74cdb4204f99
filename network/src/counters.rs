//! The node's network metrics, registered in a per-node prometheus [`Registry`] so that
//! several nodes in one process keep separate figures.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Buckets of the RPC latency histogram, in seconds: from 50 µs (in-process) to 10 s
/// (the longest sensible timeout).
const RPC_LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Registers `metric` in `registry` and returns it, so a metric is made and registered
/// in one expression.
pub fn register<M>(registry: &Registry, metric: M) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Every metric of one node's network.
#[derive(Clone, Debug)]
pub struct NetworkMetrics {
    /// Live connections, by origin (`inbound` / `outbound`).
    pub connections: IntGaugeVec,
    /// Connection events, by event (`opened`, `closed`, `replaced`, `refused`).
    pub connection_events: IntCounterVec,
    /// Failed connection upgrades (Noise, handshake, mux), by reason.
    pub handshake_failures: IntCounterVec,
    /// Application payload bytes received, by protocol.
    pub bytes_in: IntCounterVec,
    /// Application payload bytes sent, by protocol.
    pub bytes_out: IntCounterVec,
    /// Messages and requests received, by protocol.
    pub messages_in: IntCounterVec,
    /// Messages and requests sent, by protocol.
    pub messages_out: IntCounterVec,
    /// Outbound RPC latency, by protocol (successful requests only).
    pub rpc_latency: HistogramVec,
    /// RPC outcomes, by protocol, direction and outcome.
    pub rpc_outcomes: IntCounterVec,
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
    /// Inbound substreams refused, by reason (`mux_refused`: over the multiplexer's
    /// stream cap, answered with RST).
    pub substreams_refused: IntCounterVec,
    /// Inbound messages that failed to decode, by protocol.
    pub decode_failures: IntCounterVec,
    /// Time to dial and fully upgrade an outbound connection.
    pub dial_latency: Histogram,
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
    /// Inbound upgrades evicted to make room for a newer socket.
    pub upgrades_evicted: IntCounter,
    /// Connections closed because the remote broke the multiplexer protocol.
    pub mux_protocol_errors: IntCounter,
}

impl NetworkMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn counter(
            registry: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        fn gauge(
            registry: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        }
        let rpc_latency = HistogramVec::new(
            HistogramOpts::new(
                "network_rpc_latency_seconds",
                "Outbound RPC round-trip time",
            )
            .buckets(RPC_LATENCY_BUCKETS.to_vec()),
            &["protocol"],
        )?;
        registry.register(Box::new(rpc_latency.clone()))?;
        let dial_latency = Histogram::with_opts(
            HistogramOpts::new(
                "network_dial_latency_seconds",
                "Time to dial and upgrade an outbound connection",
            )
            .buckets(RPC_LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(dial_latency.clone()))?;
        let banned_peers = IntGauge::new("network_banned_peers", "Peers banned now")?;
        registry.register(Box::new(banned_peers.clone()))?;
        let upgrades_evicted = IntCounter::new(
            "network_upgrades_evicted_total",
            "Inbound upgrades evicted to make room for a newer socket",
        )?;
        registry.register(Box::new(upgrades_evicted.clone()))?;
        let mux_protocol_errors = IntCounter::new(
            "network_mux_protocol_errors_total",
            "Connections closed because the remote broke the multiplexer protocol",
        )?;
        registry.register(Box::new(mux_protocol_errors.clone()))?;
        Ok(Self {
            connections: gauge(
                registry,
                "network_connections",
                "Live connections",
                &["origin"],
            )?,
            connection_events: counter(
                registry,
                "network_connection_events_total",
                "Connection events",
                &["event"],
            )?,
            handshake_failures: counter(
                registry,
                "network_handshake_failures_total",
                "Failed connection upgrades",
                &["reason"],
            )?,
            bytes_in: counter(
                registry,
                "network_bytes_in_total",
                "Payload bytes received",
                &["protocol"],
            )?,
            bytes_out: counter(
                registry,
                "network_bytes_out_total",
                "Payload bytes sent",
                &["protocol"],
            )?,
            messages_in: counter(
                registry,
                "network_messages_in_total",
                "Messages received",
                &["protocol"],
            )?,
            messages_out: counter(
                registry,
                "network_messages_out_total",
                "Messages sent",
                &["protocol"],
            )?,
            rpc_latency,
            rpc_outcomes: counter(
                registry,
                "network_rpc_outcomes_total",
                "RPC outcomes",
                &["protocol", "direction", "outcome"],
            )?,
            queue_depth: gauge(
                registry,
                "network_queue_depth",
                "Items waiting in internal queues (direct_send_outbound: in steps of 16 per peer and protocol)",
                &["queue"],
            )?,
            queue_drops: counter(
                registry,
                "network_queue_drops_total",
                "Items dropped from queues",
                &["queue", "reason"],
            )?,
            substreams_refused: counter(
                registry,
                "network_substreams_refused_total",
                "Inbound substreams refused",
                &["reason"],
            )?,
            decode_failures: counter(
                registry,
                "network_decode_failures_total",
                "Inbound messages that failed to decode",
                &["protocol"],
            )?,
            dial_latency,
            penalties: counter(
                registry,
                "network_penalties_total",
                "Reputation penalties given",
                &["misbehaviour"],
            )?,
            bans: counter(registry, "network_bans_total", "Bans imposed", &["peer"])?,
            ban_refusals: counter(
                registry,
                "network_ban_refusals_total",
                "Connections and dials refused because the peer is banned",
                &["origin"],
            )?,
            banned_peers,
            rate_limited: counter(
                registry,
                "network_rate_limited_total",
                "Times an inbound reader was held back by its rate limit",
                &["kind"],
            )?,
            upgrades_evicted,
            mux_protocol_errors,
        })
    }

    /// The depth gauge of the queue named `queue`.
    pub fn queue(&self, queue: &str) -> IntGauge {
        self.queue_depth.with_label_values(&[queue])
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
        ma.messages_in.with_label_values(&["/p"]).inc();
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
