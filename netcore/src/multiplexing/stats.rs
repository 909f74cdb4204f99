//! A connection's counters, shared between its session and whoever exports them.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Counters of one connection, for metrics. Plain atomics: the `network` crate exports
/// them; this crate has no metrics dependency.
#[derive(Debug, Default)]
pub struct MuxStats {
    /// Inbound streams refused with RST: over the stream cap, after GoAway, or with no
    /// one accepting.
    pub streams_refused: AtomicU64,
    /// Protocol errors of the remote (each closed the connection).
    pub protocol_errors: AtomicU64,
    /// Times a stream's receive window was grown by auto-tuning.
    pub window_grows: AtomicU64,
    /// Told when `streams_refused` or `protocol_errors` grows.
    changed: Notify,
}

impl MuxStats {
    /// Waits until `streams_refused` or `protocol_errors` grows. A count made while
    /// nobody waited ends the next wait at once, so an exporter that waits, copies the
    /// counters and waits again misses none and wakes only when there is news.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(crate) fn count_refused(&self) {
        self.streams_refused.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(crate) fn count_protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }
}
