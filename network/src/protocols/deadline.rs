//! Deadlines of inbound substreams, and the clock arithmetic they share.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// `now + timeout`, or a year from now for a timeout too large to add: a configured
/// timeout of `Duration::MAX` means "never" rather than an overflow.
pub(crate) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(timeout).unwrap_or(now + FAR)
}

/// An inbound substream's deadline. Its timer is made only when something has to wait
/// for it: serving that completes at once needs none, and the serving's future (begun
/// in a box) stays small and free of the timer's alignment.
pub(crate) struct Deadline {
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// A deadline at `at`.
    pub(crate) fn new(at: Instant) -> Self {
        Self { at, timer: None }
    }

    /// When it passes.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// `fut`'s output, or `None` once the deadline passed first.
    pub(crate) async fn bound<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            let at = self.at;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}
