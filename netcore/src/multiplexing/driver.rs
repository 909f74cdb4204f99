//! The connection task: the only code that touches the socket.
//!
//! One task per connection reads large chunks from the socket, decodes frames and
//! hands them to the [`Session`] (one lock per chunk, not per frame), then takes the
//! frames the session has ready in batches (`batch.rs`), writes them and flushes once
//! nothing more is ready, or sooner for urgent data and on a slow link. Substreams
//! reach it through the shared session and a waker, never through a channel.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::Mode;
use super::batch::Batching;
use super::buffers::OutQueue;
use super::error::MuxError;
use super::handles::Substream;
use super::reader::FrameReader;
use super::session::Session;

/// Control frames (mostly pongs and RSTs answering the remote) allowed to wait before
/// the task stops reading from the remote: local work goes before new remote work.
const CONTROL_BACKLOG_LIMIT: usize = 64 * 1024;

/// Chunks handed to one vectored write (headers and payloads alternate, so 64 chunks
/// carry about 32 frames, 512 KiB of 16 KiB frames).
const MAX_IO_SLICES: usize = 64;

/// Read/write rounds per poll before the task yields to others.
const ROUNDS_PER_POLL: usize = 32;

/// Wakers taken from the session, to call once its lock is released.
enum Wakes {
    None,
    One(Option<Waker>),
    Many(Vec<Waker>),
}

/// What takes inbound streams when the application set one (see
/// [`Incoming::accept_with`](super::Incoming::accept_with)).
pub(crate) type Acceptor = Box<dyn FnMut(Substream) + Send>;

/// The session and the handles' way to it.
pub(crate) struct Shared {
    session: Mutex<Session>,
    /// Called by the connection task with each inbound stream; dropped when the
    /// connection ends.
    acceptor: Mutex<Option<Acceptor>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session: Mutex::new(session),
            acceptor: Mutex::new(None),
        }
    }

    /// Hands inbound streams to `acceptor` from now on, starting with those already
    /// waiting.
    pub(crate) fn set_acceptor(self: &Arc<Self>, acceptor: Acceptor) {
        *self.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(acceptor);
        self.with(|s| s.set_direct_accept(true));
        self.deliver_inbound();
    }

    /// Passes every waiting inbound stream to the acceptor, if one is set, outside the
    /// session's lock.
    pub(crate) fn deliver_inbound(self: &Arc<Self>) {
        let mut acceptor = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        let Some(accept) = acceptor.as_mut() else {
            return;
        };
        while let Some(id) = self.with(Session::take_inbound) {
            accept(Substream::new(id, Arc::clone(self)));
        }
    }

    /// Drops the acceptor: the connection has ended (or its task was dropped). It may
    /// hold what holds this connection, so keeping it would keep both alive.
    fn drop_acceptor(&self) {
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(acceptor);
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // The session keeps its invariants between statements that can panic, so a
        // poisoned lock is still consistent enough to close the connection with.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the session, then wakes whom it asked to wake, outside the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        let (r, wakes) = {
            let mut s = self.lock();
            let r = f(&mut s);
            // One waker (the common case) leaves the session's list, and its
            // capacity, in place; more are moved out whole.
            let wakes = match s.to_wake.len() {
                0 => Wakes::None,
                1 => Wakes::One(s.to_wake.pop()),
                _ => Wakes::Many(std::mem::take(&mut s.to_wake)),
            };
            (r, wakes)
        };
        match wakes {
            Wakes::None | Wakes::One(None) => {}
            Wakes::One(Some(w)) => w.wake(),
            Wakes::Many(ws) => ws.into_iter().for_each(Waker::wake),
        }
        r
    }
}

/// The future of the connection task.
pub(crate) struct Driver<IO> {
    io: IO,
    shared: Arc<Shared>,
    reader: FrameReader,
    /// No more reading: the remote broke the protocol.
    read_done: bool,
    /// Reading stopped because the control backlog was over its limit; it resumes once
    /// the write side has brought it under.
    backlogged: bool,
    /// Encoded frames not yet written.
    out: OutQueue,
    unflushed: bool,
    /// A client's task that has not run yet: its first run writes before it reads
    /// (see [`start`](super::start)).
    write_first: bool,
    /// How much to take from the session per batch, and when to flush.
    batch: Batching,
    /// Flush once the frames in `out` are written: they carry urgent data, or the
    /// socket drains slowly.
    flush_after: bool,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// The waker the timer holds since its last reset: while it is this task's and the
    /// timer is not due, polling it again would only register the same waker.
    timer_waker: Option<Waker>,
}

impl<IO> Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(io: IO, shared: Arc<Shared>, mode: Mode) -> Self {
        Self {
            io,
            shared,
            reader: FrameReader::default(),
            read_done: false,
            backlogged: false,
            out: OutQueue::default(),
            // What the upgrade wrote and left unflushed goes out with the first
            // frames, or alone.
            unflushed: true,
            write_first: mode == Mode::Client,
            batch: Batching::default(),
            flush_after: false,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
            timer_waker: None,
        }
    }

    /// Decodes and delivers every complete frame read. Returns whether reading may go
    /// on now: not after a protocol error, nor while the control backlog is large.
    fn process(&mut self, now: Instant) -> bool {
        let reader = &mut self.reader;
        let (result, inbound) = self.shared.with(|s| {
            let result = match reader.decode(s, now) {
                Ok(()) => Ok(s.control_backlog() <= CONTROL_BACKLOG_LIMIT),
                Err(e) => {
                    s.on_protocol_error(e, now);
                    Err(())
                }
            };
            (result, s.direct_inbound_waiting())
        });
        if inbound {
            self.shared.deliver_inbound();
        }
        match result {
            Ok(go_on) => go_on,
            Err(()) => {
                self.read_done = true;
                false
            }
        }
    }

    /// Reads while the socket has data. `Ok(None)` means the remote closed the socket;
    /// `Ok(Some(again))` otherwise, `again` when reading stopped with the socket still
    /// readable and nothing registered to wake the task for it (the control backlog is
    /// large: reading goes on once the write side has sent it); `Err` ends the
    /// connection.
    fn poll_read_side(&mut self, cx: &mut Context<'_>) -> Result<Option<bool>, MuxError> {
        if self.backlogged {
            // Nothing more is read (and answered) until what is owed has gone out.
            if self
                .shared
                .with(|s| s.control_backlog() > CONTROL_BACKLOG_LIMIT)
            {
                return Ok(Some(true));
            }
            self.backlogged = false;
        }
        while !self.read_done {
            match self.reader.poll_read(&mut self.io, cx) {
                // The socket registered the task's waker.
                Poll::Pending => {
                    self.reader.release_if_small();
                    return Ok(Some(false));
                }
                Poll::Ready(Ok(0)) => {
                    self.shared.with(Session::on_eof);
                    return Ok(None);
                }
                Poll::Ready(Ok(_)) => {
                    if !self.process(Instant::now()) {
                        // After a protocol error nothing more is read.
                        self.backlogged = !self.read_done;
                        return Ok(Some(self.backlogged));
                    }
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
            }
        }
        Ok(Some(false))
    }

    /// Writes what the session has ready; flushes once nothing more is ready, and after
    /// a batch that carried urgent data or, on a slow link, after every batch. It
    /// returns with the task registered to be woken for more: by the session (when it
    /// had nothing more to send) or by the socket (when it took no more). `Err` ends
    /// the connection.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> Result<(), MuxError> {
        loop {
            if self.out.is_empty() {
                if self.flush_after {
                    // What was written goes out (under Noise, sealed) before more frames
                    // join it. A Noise frame is opened only once received whole, so
                    // bulk sealed behind urgent data would cross the link before the
                    // urgent data could be read; and on a slow link a full Noise frame
                    // waiting for the socket is milliseconds in front of the next one.
                    if !self.flush(cx)? {
                        return Ok(());
                    }
                    self.flush_after = false;
                }
                self.take_batch(cx.waker());
                if self.out.is_empty() {
                    self.batch.idle();
                    break;
                }
            }
            if !self.write_some(cx)? {
                return Ok(());
            }
        }
        if self.unflushed {
            self.flush(cx)?;
        }
        Ok(())
    }

    /// Takes the next batch of frames from the session into `out`.
    fn take_batch(&mut self, waker: &Waker) {
        let out = &mut self.out;
        let batch = self.batch.take();
        let (urgent, deadline) = self.shared.with(|s| {
            s.set_driver(waker);
            (s.poll_transmit(out, batch), s.poll_timeout())
        });
        self.flush_after = urgent || self.batch.flush_each();
        self.set_timer(deadline);
    }

    /// Writes from `out` once. Returns whether the socket took bytes; if not, the task
    /// is registered to be woken when it can go on.
    fn write_some(&mut self, cx: &mut Context<'_>) -> Result<bool, MuxError> {
        let had_budget = tokio::task::coop::has_budget_remaining();
        let written = if self.io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let n = self.out.io_slices(&mut slices);
            Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
        } else {
            match self.out.front() {
                Some(chunk) => Pin::new(&mut self.io).poll_write(cx, chunk),
                // Unreachable: `out` is not empty.
                None => return Ok(true),
            }
        };
        match written {
            Poll::Ready(Ok(0)) => Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Poll::Ready(Ok(n)) => {
                self.out.advance(n);
                self.unflushed = true;
                self.batch.took(n);
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Pending => {
                self.socket_pending(had_budget, cx.waker());
                Ok(false)
            }
        }
    }

    /// Flushes the socket. Returns whether it is flushed; if not, the task is registered
    /// to be woken when it can go on.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<bool, MuxError> {
        let had_budget = tokio::task::coop::has_budget_remaining();
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                self.batch.took(0);
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Pending => {
                self.socket_pending(had_budget, cx.waker());
                Ok(false)
            }
        }
    }

    /// The socket took nothing. That is a push back, unless the task had run out of
    /// its runtime budget: then the socket said nothing about the link, and the task
    /// is woken again at once.
    fn socket_pending(&mut self, had_budget: bool, waker: &Waker) {
        if had_budget {
            self.batch.pushed_back(Instant::now());
        }
        self.refresh(waker);
    }

    /// Arms the timer for `deadline` if it changed.
    fn set_timer(&mut self, deadline: Option<Instant>) {
        if deadline != self.timer_at {
            self.timer_at = deadline;
            self.timer_waker = None;
            if let Some(t) = deadline {
                self.timer.as_mut().reset(t);
            }
        }
    }

    /// While the socket does not take what is queued, frames are not fetched, so this
    /// does what fetching them would: registers the task to be woken by the session
    /// (a close, say) and re-reads the session's deadline, so that a close begun
    /// meanwhile is still bounded.
    fn refresh(&mut self, waker: &Waker) {
        let deadline = self.shared.with(|s| {
            s.set_driver(waker);
            s.poll_timeout()
        });
        self.set_timer(deadline);
    }

    /// Polls the timer; on time, lets the session act. Returns whether it did.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer_at.is_none() {
            return false;
        }
        let registered = self
            .timer_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if registered && !self.timer.is_elapsed() {
            return false;
        }
        // With the task's budget spent, `Sleep` returns pending without registering
        // the waker: then it must be polled again next time.
        let registers = tokio::task::coop::has_budget_remaining();
        if self.timer.as_mut().poll(cx).is_pending() {
            self.timer_waker = registers.then(|| cx.waker().clone());
            return false;
        }
        self.timer_at = None;
        self.timer_waker = None;
        // A timer (the RTT probe's, every 10 s while the peer answers probes): a read
        // buffer grown by a burst is let go if it holds nothing.
        self.reader.release_if_empty();
        let now = Instant::now();
        self.shared.with(|s| s.handle_timeout(now));
        true
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MuxError>> {
        if self.write_first {
            // The first frames (the RTT probe) leave in one write with what the upgrade
            // left buffered; the first read of an optimistic negotiation would send
            // that alone, before waiting for the answer.
            self.write_first = false;
            self.poll_write_side(cx)?;
        }
        for _ in 0..ROUNDS_PER_POLL {
            let Some(backlogged) = self.poll_read_side(cx)? else {
                return Poll::Ready(Ok(()));
            };
            self.poll_write_side(cx)?;
            // Reading resumes in another round once the write side has sent enough of
            // the backlog; while the socket takes none of it, the task waits for the
            // socket (a remote that pings without reading gets no more answers).
            let mut again = backlogged
                && self
                    .shared
                    .with(|s| s.control_backlog() <= CONTROL_BACKLOG_LIMIT);
            // After the write side, which may have armed the timer for a close.
            if self.poll_timer(cx) {
                if self.shared.with(|s| s.is_finished()) {
                    // A close that timed out: the socket is dropped with the task.
                    return Poll::Ready(Err(MuxError::CloseTimedOut));
                }
                // What the session did on time is sent in the next round.
                again = true;
            }
            if self.out.is_empty() && !self.unflushed && self.shared.with(|s| s.go_away_sent()) {
                return match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
            // Each side is registered to wake the task for more: another round now
            // would find nothing, unless reading stopped on a backlog the write side
            // has since sent, or the timer fired.
            if !again {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO> Drop for Driver<IO> {
    fn drop(&mut self) {
        // A driver dropped before it finished (its runtime shut down) lets go of the
        // acceptor too.
        self.shared.drop_acceptor();
    }
}

impl<IO> Future for Driver<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_run(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.shared.with(|s| s.finish(result));
                self.shared.drop_acceptor();
                Poll::Ready(())
            }
        }
    }
}
