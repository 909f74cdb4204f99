//! One direction of an in-memory connection: a bounded byte buffer shared by one writer
//! and one reader.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::ReadBuf;

/// The shared state of one direction.
#[derive(Debug)]
struct State {
    buf: VecDeque<u8>,
    capacity: usize,
    /// The writer shut down or was dropped: once `buf` drains, reads see EOF.
    write_closed: bool,
    /// The reader was dropped: writes fail with `BrokenPipe`.
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// A bounded, single-producer single-consumer byte pipe.
#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    state: Arc<Mutex<State>>,
}

impl Pipe {
    /// A pipe that holds at most `capacity` unread bytes (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Arc::new(Mutex::new(State {
                buf: VecDeque::new(),
                capacity,
                write_closed: false,
                read_closed: false,
                reader: None,
                writer: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the buffer half-updated in a way
        // that matters to the other side, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies as much of `data` as fits; waits while the buffer is full.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut s = self.lock();
        if s.read_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if s.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = s.capacity - s.buf.len();
        if room == 0 {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        s.buf.extend(&data[..n]);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    /// Copies buffered bytes into `out`, filling it from its unfilled part without
    /// zeroing it first; EOF leaves `out` as it was; waits while the buffer is empty.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.lock();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if s.buf.is_empty() {
            if s.write_closed {
                return Poll::Ready(Ok(()));
            }
            s.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.remaining().min(s.buf.len());
        let (a, b) = s.buf.as_slices();
        let from_a = n.min(a.len());
        out.put_slice(&a[..from_a]);
        out.put_slice(&b[..n - from_a]);
        s.buf.drain(..n);
        if let Some(w) = s.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// The writer is done: the reader drains what is buffered, then sees EOF.
    pub(crate) fn close_write(&self) {
        let mut s = self.lock();
        s.write_closed = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The reader is gone: buffered bytes are discarded and writes fail.
    pub(crate) fn close_read(&self) {
        let mut s = self.lock();
        s.read_closed = true;
        s.buf = VecDeque::new();
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }
}
