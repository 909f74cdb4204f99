//! The handles users hold: [`Control`], [`Incoming`] and [`Substream`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::driver::Shared;
use super::error::MuxError;
use super::priority::Priority;
use super::stats::MuxStats;

/// Closes the connection when the last [`Control`] clone is dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.with(|s| s.close(Instant::now()));
    }
}

/// The handle of a multiplexed connection: opens streams and closes the connection.
/// Cheap to clone; when the last clone is dropped the connection closes gracefully.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        }
    }

    /// Opens a stream. Costs no round trip: the SYN rides on the stream's first frame,
    /// so data written at once reaches the remote with it.
    ///
    /// Fails when the connection is closed, the remote sent GoAway, or the streams are
    /// at [`MuxConfig::max_streams`](super::MuxConfig::max_streams).
    pub async fn open_stream(&self) -> Result<Substream, MuxError> {
        self.open_stream_with_priority(Priority::default()).await
    }

    /// Opens a stream whose frames go out in class `priority` from its first, the SYN
    /// included (see [`Priority`]). Fails as [`Self::open_stream`] does.
    pub async fn open_stream_with_priority(
        &self,
        priority: Priority,
    ) -> Result<Substream, MuxError> {
        let id = self
            .shared
            .with(|s| s.open_stream(Instant::now(), priority))?;
        Ok(Substream::new(id, self.shared.clone()))
    }

    /// Closes the connection: what streams have buffered goes out, then GoAway, a flush
    /// and a shutdown of the socket; the connection task ends. Returns how the
    /// connection ended (an error if it had already failed). A remote that does not read
    /// cannot hold it open: past [`MuxConfig::close_timeout`](super::MuxConfig) the
    /// socket is dropped, and this returns [`MuxError::CloseTimedOut`].
    pub async fn close(&self) -> Result<(), MuxError> {
        self.shared.with(|s| s.close(Instant::now()));
        self.closed().await
    }

    /// Waits until the connection has ended; `Ok` when it ended cleanly, else why it
    /// failed (for example a protocol error of the remote).
    pub async fn closed(&self) -> Result<(), MuxError> {
        std::future::poll_fn(|cx| self.shared.with(|s| s.poll_closed(cx.waker()))).await
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.with(|s| s.is_closed())
    }

    /// The connection's counters.
    pub fn stats(&self) -> Arc<MuxStats> {
        self.shared.with(|s| s.stats().clone())
    }

    /// The last round-trip time measured with a Ping, if any yet.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.with(|s| s.rtt())
    }

    /// The smallest round-trip time measured with a Ping, if any yet: the path's own,
    /// where a later probe may have waited behind bulk data (at the start of a
    /// connection, and every RTT probe interval after).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.shared.with(|s| s.min_rtt())
    }
}

/// The streams the remote opens, in order. Ends when the connection closes or the
/// remote sends GoAway. Dropping it refuses further inbound streams (with RST).
pub struct Incoming {
    shared: Arc<Shared>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Hands each inbound stream to `accept`, on the connection task, as soon as its
    /// opening frame is read, instead of yielding it here: a stream costs no wake-up of
    /// the task polling this. Streams already waiting go to `accept` now. This stream
    /// then yields nothing and still ends when the connection closes (or the remote
    /// sends GoAway), so keep polling it for that.
    ///
    /// `accept` runs on the connection task and must not block: it may do what
    /// completes at once (such as polling the stream's work once) and hand the rest to
    /// a task. It is dropped when the connection ends, so it may hold what holds the
    /// connection.
    pub fn accept_with(&self, accept: impl FnMut(Substream) + Send + 'static) {
        self.shared.set_acceptor(Box::new(accept));
    }
}

impl Stream for Incoming {
    type Item = Substream;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Substream>> {
        let shared = &self.shared;
        shared
            .with(|s| s.poll_accept(cx.waker()))
            .map(|id| id.map(|id| Substream::new(id, shared.clone())))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.shared.with(|s| s.close_incoming());
    }
}

/// One flow-controlled stream of a multiplexed connection.
///
/// `poll_shutdown` half-closes (the remote reads EOF after the data); [`reset`]
/// aborts both ways. Dropping a stream that is not closed both ways resets it, except
/// that data and a FIN already queued by `poll_shutdown` still go out first. Writes
/// are handed to the connection task without waiting for it, so `poll_flush` returns
/// at once; the task sends and flushes them in its next batch.
///
/// [`reset`]: Substream::reset
pub struct Substream {
    id: u32,
    shared: Arc<Shared>,
}

impl fmt::Debug for Substream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Substream").field("id", &self.id).finish()
    }
}

impl Substream {
    pub(crate) fn new(id: u32, shared: Arc<Shared>) -> Self {
        Self { id, shared }
    }

    /// The stream id: odd for streams the client opened, even for the server's.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends this stream's frames in class `priority` from now on (see [`Priority`]);
    /// an inbound stream starts in [`Priority::Normal`].
    pub fn set_priority(&self, priority: Priority) {
        let id = self.id;
        self.shared.with(|s| s.set_priority(id, priority));
    }

    /// Ready once every byte written so far has been taken by the connection task for
    /// the socket: at most one write batch ahead of it, so the rest of the way is the
    /// socket's (on TCP, at most `TCP_NOTSENT_LOWAT` unsent bytes). For a sender that
    /// paces large transfers across connections: start the next when this one is
    /// there. An error if the stream was reset or the connection is closing or closed.
    /// One waiter at a time: it shares the stream's writer waker, so a second task
    /// polling it (or writing) replaces the first's.
    pub fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        self.shared.with(|s| s.poll_sent(id, cx.waker()))
    }

    /// Waits for [`poll_sent`](Self::poll_sent).
    pub async fn sent(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_sent(cx)).await
    }

    /// Resets the stream: buffered data is dropped both ways, the remote gets RST, and
    /// reads and writes on either side fail with `ConnectionReset`.
    pub fn reset(&mut self) {
        let id = self.id;
        self.shared.with(|s| s.reset(id));
    }
}

impl AsyncRead for Substream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        self.shared
            .with(|s| s.poll_read(id, cx.waker(), buf, Instant::now))
    }
}

impl AsyncWrite for Substream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.id;
        self.shared.with(|s| s.poll_write(id, cx.waker(), data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already the connection task's to send.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        Poll::Ready(self.shared.with(|s| s.shutdown(id)))
    }
}

impl Drop for Substream {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.with(|s| s.drop_handle(id));
    }
}
