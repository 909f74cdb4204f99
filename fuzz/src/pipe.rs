//! An in-process duplex pipe whose wire the harness can reach into: inject bytes the
//! other side never wrote, corrupt what is in flight, end it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One direction of a pipe: the bytes in flight, whether the writer finished, and the
/// reader waiting for more.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    bytes: BytesMut,
    closed: bool,
    reader: Option<Waker>,
}

/// A shared direction of a pipe.
#[derive(Clone, Debug, Default)]
pub(crate) struct WireHandle(Arc<Mutex<Wire>>);

impl WireHandle {
    fn lock(&self) -> MutexGuard<'_, Wire> {
        // The harness is single-threaded; a poisoned lock only follows a panic, which
        // has already failed the run.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `data` as if the writer had sent it.
    pub(crate) fn inject(&self, data: &[u8]) {
        let mut wire = self.lock();
        wire.bytes.extend_from_slice(data);
        if let Some(w) = wire.reader.take() {
            w.wake();
        }
    }

    /// Flips bits of the byte at `index` (modulo the bytes in flight), if any are.
    pub(crate) fn corrupt(&self, index: usize, mask: u8) {
        let mut wire = self.lock();
        let len = wire.bytes.len();
        if len > 0 {
            wire.bytes[index % len] ^= mask.max(1);
        }
    }

    /// Drops up to `n` bytes in flight.
    pub(crate) fn drop_bytes(&self, n: usize) {
        let mut wire = self.lock();
        let n = n.min(wire.bytes.len());
        wire.bytes.advance(n);
    }

    /// Ends this direction: the reader sees EOF once it drained the bytes in flight.
    pub(crate) fn close(&self) {
        let mut wire = self.lock();
        wire.closed = true;
        if let Some(w) = wire.reader.take() {
            w.wake();
        }
    }
}

/// One end of a pipe: reads from `rx`, writes to `tx`.
#[derive(Debug)]
pub(crate) struct PipeEnd {
    pub(crate) rx: WireHandle,
    pub(crate) tx: WireHandle,
}

/// Two connected ends.
pub(crate) fn pipe() -> (PipeEnd, PipeEnd) {
    let (ab, ba) = (WireHandle::default(), WireHandle::default());
    (
        PipeEnd {
            rx: ba.clone(),
            tx: ab.clone(),
        },
        PipeEnd { rx: ab, tx: ba },
    )
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut wire = self.rx.lock();
        if wire.bytes.is_empty() {
            if wire.closed {
                return Poll::Ready(Ok(()));
            }
            wire.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = wire.bytes.len().min(buf.remaining());
        buf.put_slice(&wire.bytes[..n]);
        wire.bytes.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.tx.lock().closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.tx.inject(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}
