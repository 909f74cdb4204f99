//! Whether a large buffer is still needed: the clock of its quiet period.

use tokio::time::Instant;

use crate::constants::LARGE_BUFFER_QUIET;

/// Tracks a large buffer's use between the moments it is empty. Told of each use that
/// needed the large buffer, and asked only at moments the buffer is empty (the socket
/// has nothing more to give, or everything written went out): a use since the last
/// moment starts the quiet period over, and the buffer may go once the period reaches
/// [`LARGE_BUFFER_QUIET`].
#[derive(Debug, Default)]
pub(super) struct Quiet {
    used: bool,
    since: Option<Instant>,
}

impl Quiet {
    /// A use that needed the large buffer.
    pub(super) fn used(&mut self) {
        self.used = true;
    }

    /// At a moment the buffer is empty: whether it has gone unneeded for the quiet
    /// period. Starts the period if it is not running.
    pub(super) fn long_enough(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if !self.used => now.saturating_duration_since(since) >= LARGE_BUFFER_QUIET,
            _ => {
                self.used = false;
                self.since = Some(now);
                false
            }
        }
    }
}
