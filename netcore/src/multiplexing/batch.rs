//! How the connection task takes frames from the session: how many bytes per batch,
//! and whether to flush after each. A core without I/O, fed with what the socket did
//! and when.
//!
//! Frames taken from the session are committed to their order: while the socket
//! cannot take them, they wait in front of any frame of a higher class that arrives
//! meanwhile. So what the task holds below the multiplexer is kept to one frame while
//! the socket pushes back, and on a slow link each batch is flushed, so that the socket's
//! writer (Noise) seals frames of one batch, not of its whole 64 KiB buffer.

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

/// A socket that drains slower than this, in bytes per second, is on a slow link:
/// each batch is then flushed. At 256 Mbit/s a 64 KiB Noise frame is 2 ms of the link.
const SLOW_RATE: f64 = 32e6;

/// A socket that drains faster than this is on a fast link again: each batch joins the
/// writer's buffer. Between the two marks the last verdict stands.
const FAST_RATE: f64 = 64e6;

/// Weight of the latest cycle in the averaged rate. One cycle in which the task was
/// slow to run (a busy runtime, a busy machine) does not make a fast link look slow;
/// a slow link is found at its first cycle, which starts the average.
const RATE_WEIGHT: f64 = 0.25;

/// The task's batching state.
///
/// A batch starts at [`MIN_BATCH`] after an idle moment and doubles with each batch
/// taken while the socket has taken all it was given, up to [`MAX_BATCH`]. Once the
/// socket pushes back it stays at [`MIN_BATCH`] until the task runs out of frames: the
/// socket, not the batch, is then the limit, and a large batch would only hold frames
/// in front of more urgent ones. Growing from small keeps a burst after idle on a slow
/// link from committing a large batch at once.
///
/// How fast the link drains is measured over push-back cycles: from one push back to
/// the next, the bytes the socket took in between over the time. While the socket
/// pushes back, that is the rate at which it frees room, which is the link's (or the
/// reader's) rate.
#[derive(Debug)]
pub(crate) struct Batching {
    next: usize,
    pushed_back: bool,
    /// The socket refused bytes and has taken none since.
    waiting: bool,
    /// The first push back of the current cycle, and the bytes taken since.
    cycle: Option<(Instant, usize)>,
    /// The averaged drain rate, bytes per second, once a cycle was measured.
    rate: Option<f64>,
    /// The link drains slowly: flush after each batch.
    slow: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            next: MIN_BATCH,
            pushed_back: false,
            waiting: false,
            cycle: None,
            rate: None,
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

    /// The socket took less than it was given, at `now`. The first push back after
    /// bytes were taken ends a cycle and starts the next.
    pub(crate) fn pushed_back(&mut self, now: Instant) {
        self.pushed_back = true;
        self.next = MIN_BATCH;
        if std::mem::replace(&mut self.waiting, true) {
            return;
        }
        if let Some((start, bytes)) = self.cycle {
            let secs = now.saturating_duration_since(start).as_secs_f64();
            if secs > 0.0 {
                self.measured(bytes as f64 / secs);
            }
        }
        self.cycle = Some((now, 0));
    }

    /// The socket took `n` bytes (0 for a completed flush).
    pub(crate) fn took(&mut self, n: usize) {
        self.waiting = false;
        if let Some((_, bytes)) = &mut self.cycle {
            *bytes += n;
        }
    }

    fn measured(&mut self, sample: f64) {
        let rate = match self.rate {
            Some(rate) => rate + RATE_WEIGHT * (sample - rate),
            None => sample,
        };
        self.rate = Some(rate);
        if rate < SLOW_RATE {
            self.slow = true;
        } else if rate > FAST_RATE {
            self.slow = false;
        }
    }

    /// The session had nothing to send: the cycle ends unmeasured (the socket was not
    /// the limit). How fast the link drains is kept: it is the path's, not the burst's.
    pub(crate) fn idle(&mut self) {
        self.next = MIN_BATCH;
        self.pushed_back = false;
        self.waiting = false;
        self.cycle = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// Runs push-back cycles of `bytes` taken every `every`.
    async fn cycles(b: &mut Batching, n: usize, bytes: usize, every: Duration) {
        for _ in 0..n {
            b.pushed_back(Instant::now());
            tokio::time::advance(every).await;
            b.took(bytes);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_that_drains_slowly_has_each_batch_flushed_until_it_drains_fast() {
        let mut b = Batching::default();
        assert!(!b.flush_each());
        // 64 KiB per 5 ms (13 MB/s, a 100 Mbit/s link): slow from the first cycle.
        cycles(&mut b, 2, 64 * KIB, Duration::from_millis(5)).await;
        b.pushed_back(Instant::now());
        assert!(b.flush_each());
        // Further push backs of the same wait do not end a cycle.
        tokio::time::advance(Duration::from_secs(1)).await;
        b.pushed_back(Instant::now());
        b.took(64 * KIB);
        assert!(b.flush_each());
        // 64 KiB per 0.1 ms (655 MB/s): fast again once the average passes the mark.
        cycles(&mut b, 20, 64 * KIB, Duration::from_micros(100)).await;
        b.pushed_back(Instant::now());
        assert!(!b.flush_each());
        // An idle moment keeps the verdict, and ends the cycle unmeasured.
        b.idle();
        tokio::time::advance(Duration::from_secs(10)).await;
        cycles(&mut b, 1, 64 * KIB, Duration::from_micros(100)).await;
        b.pushed_back(Instant::now());
        assert!(!b.flush_each());
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_cycle_does_not_make_a_fast_link_slow() {
        let mut b = Batching::default();
        cycles(&mut b, 4, 128 * KIB, Duration::from_micros(200)).await;
        // A cycle in which the task waited 5 ms to run (26 MB/s).
        cycles(&mut b, 1, 128 * KIB, Duration::from_millis(5)).await;
        b.pushed_back(Instant::now());
        assert!(!b.flush_each());
    }
}
