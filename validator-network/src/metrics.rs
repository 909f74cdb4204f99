//! The figures this crate adds to the node's registry.

use prometheus::{IntCounterVec, Opts, Registry};

/// Counters shared by every application's sender and event stream.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    /// Inbound messages, requests and responses that did not decode, by application and
    /// kind (`message`, `request`, `response`); each was dropped.
    decode_failures: IntCounterVec,
}

impl Metrics {
    /// Registers the counters in `registry`.
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let decode_failures = IntCounterVec::new(
            Opts::new(
                "validator_network_decode_failures_total",
                "Inbound application messages that failed to decode and were dropped",
            ),
            &["app", "kind"],
        )?;
        registry.register(Box::new(decode_failures.clone()))?;
        Ok(Self { decode_failures })
    }

    /// Counts one undecodable `kind` of `app`.
    pub(crate) fn decode_failure(&self, app: &str, kind: &str) {
        self.decode_failures.with_label_values(&[app, kind]).inc();
    }
}
