//! How the connection task takes frames from the session: how many bytes per batch,
//! and whether to flush after each. A core without I/O, fed with what the socket did
//! and when.
//!
//! Frames taken from the session are committed to their order: while the socket
//! cannot take them, they wait in front of any frame of a higher class that arrives
//! meanwhile. So what the task holds below the multiplexer is kept to one frame while
//! the socket pushes back, and on a slow link each batch is flushed, so that the socket's
//! writer (Noise) seals frames of one batch, not of its whole 64 KiB buffer.

use std::time::Duration;

use tokio::time::Instant;

/// The most bytes of frames taken per batch: once the socket has taken every batch
/// whole for a while, large enough that a vectored write carries many frames, small
/// enough to interleave reading.
const MAX_BATCH: usize = 256 * 1024;

/// The batch after an idle moment and while the socket pushes back: one full frame.
/// An urgent frame then waits behind at most this, what the socket's writer holds and
/// what the kernel holds unsent (see `TCP_NOTSENT_LOWAT`): on a slow link, bytes are
/// the urgent frame's wait (16 KiB is 1.3 ms at 100 Mbit/s). Small batches cost a
/// session lock per frame; under Noise, socket writes stay whole Noise frames unless
/// the link is slow.
const MIN_BATCH: usize = 16 * 1024;

/// A socket that takes more only this long after it pushed back drains slowly: each
/// batch is then flushed. A 64 KiB Noise frame takes this long at 262 Mbit/s.
const SLOW_DRAIN: Duration = Duration::from_millis(2);

/// A socket that takes more within this after it pushed back drains fast again: each
/// batch joins the writer's buffer. Between the two marks the last verdict stands, so
/// the smaller frames of a slow link do not by themselves make it look fast.
const FAST_DRAIN: Duration = Duration::from_micros(500);

/// The task's batching state.
///
/// A batch starts at [`MIN_BATCH`] after an idle moment and doubles with each batch
/// taken while the socket has taken all it was given, up to [`MAX_BATCH`]. Once the
/// socket pushes back it stays at [`MIN_BATCH`] until the task runs out of frames: the
/// socket, not the batch, is then the limit, and a large batch would only hold frames
/// in front of more urgent ones. Growing from small keeps a burst after idle on a slow
/// link from committing a large batch at once.
#[derive(Debug)]
pub(crate) struct Batching {
    next: usize,
    pushed_back: bool,
    /// When the socket last refused bytes, while the task waits for it to take more.
    waiting_since: Option<Instant>,
    /// The socket drains slowly: flush after each batch.
    slow: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            next: MIN_BATCH,
            pushed_back: false,
            waiting_since: None,
            slow: false,
        }
    }
}

impl Batching {
    /// The size of the batch to take now.
    pub(crate) fn take(&mut self) -> usize {
        let n = self.next;
        if !self.pushed_back {
            self.next = (n * 2).min(MAX_BATCH);
        }
        n
    }

    /// Whether to flush once the batch just taken is written.
    pub(crate) fn flush_each(&self) -> bool {
        self.slow
    }

    /// The socket took less than it was given, at `now`.
    pub(crate) fn pushed_back(&mut self, now: Instant) {
        self.pushed_back = true;
        self.next = MIN_BATCH;
        self.waiting_since.get_or_insert(now);
    }

    /// The socket took bytes. After a push back, how long it took to do so says how
    /// fast the link drains (the clock is read only then).
    pub(crate) fn took(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.drained_after(Instant::now() - since);
        }
    }

    fn drained_after(&mut self, waited: Duration) {
        if waited >= SLOW_DRAIN {
            self.slow = true;
        } else if waited <= FAST_DRAIN {
            self.slow = false;
        }
    }

    /// The session had nothing to send. How fast the link drains is kept: it is the
    /// path's, not the burst's.
    pub(crate) fn idle(&mut self) {
        self.next = MIN_BATCH;
        self.pushed_back = false;
        self.waiting_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn batches_grow_from_one_frame_while_the_socket_keeps_up() {
        let mut b = Batching::default();
        let sizes: Vec<usize> = (0..7).map(|_| b.take()).collect();
        assert_eq!(
            sizes,
            [
                16 * KIB,
                32 * KIB,
                64 * KIB,
                128 * KIB,
                256 * KIB,
                256 * KIB,
                256 * KIB
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batches_stay_one_frame_once_the_socket_pushes_back_until_idle() {
        let mut b = Batching::default();
        b.take();
        b.take();
        b.pushed_back(Instant::now());
        assert!((0..5).all(|_| b.take() == MIN_BATCH));
        b.idle();
        assert_eq!(b.take(), MIN_BATCH);
        assert_eq!(b.take(), 2 * MIN_BATCH);
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_drains_slowly_has_each_batch_flushed_until_it_drains_fast() {
        let mut b = Batching::default();
        assert!(!b.flush_each());
        // A push back cleared within a fast drain: no verdict of slowness.
        b.pushed_back(Instant::now());
        tokio::time::advance(FAST_DRAIN).await;
        b.took();
        assert!(!b.flush_each());
        // The wait runs from the first push back: 1.9 ms + 0.2 ms is slow, though 0.2 ms
        // passed since the last one.
        b.pushed_back(Instant::now());
        tokio::time::advance(Duration::from_micros(1900)).await;
        b.pushed_back(Instant::now());
        tokio::time::advance(Duration::from_micros(200)).await;
        b.took();
        assert!(b.flush_each());
        // Bytes taken without a push back say nothing.
        b.took();
        assert!(b.flush_each());
        // Between the marks the verdict stands, across an idle moment too.
        b.pushed_back(Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        b.took();
        b.idle();
        assert!(b.flush_each());
        b.pushed_back(Instant::now());
        tokio::time::advance(Duration::from_micros(100)).await;
        b.took();
        assert!(!b.flush_each());
    }
}
