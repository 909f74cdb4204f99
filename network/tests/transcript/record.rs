//! A socket that records what each side writes, per step of the transcript.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use netcore::transport::ConnectionOrigin;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which end of the connection wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The end that dialed (the Noise initiator).
    Dialer,
    /// The end that accepted.
    Listener,
}

/// The bytes each side wrote during one step.
#[derive(Debug, Default, Clone)]
pub(crate) struct Step {
    pub(crate) name: &'static str,
    pub(crate) dialer: Vec<u8>,
    pub(crate) listener: Vec<u8>,
}

/// Every step's bytes, shared by the recording sockets of one test.
#[derive(Debug, Default, Clone)]
pub(crate) struct Log(Arc<Mutex<Vec<Step>>>);

impl Log {
    /// Starts a step: bytes written from now on belong to it.
    pub(crate) fn step(&self, name: &'static str) {
        self.0.lock().push(Step {
            name,
            ..Step::default()
        });
    }

    /// The steps recorded so far.
    pub(crate) fn steps(&self) -> Vec<Step> {
        self.0.lock().clone()
    }

    fn record(&self, side: Side, bytes: &[u8]) {
        let mut steps = self.0.lock();
        let step = steps
            .last_mut()
            .expect("a step is started before any byte is written");
        match side {
            Side::Dialer => step.dialer.extend_from_slice(bytes),
            Side::Listener => step.listener.extend_from_slice(bytes),
        }
    }
}

/// A socket whose writes are recorded in a [`Log`].
pub(crate) struct Recorded<S> {
    inner: S,
    side: Side,
    log: Log,
}

impl<S> Recorded<S> {
    /// Records the writes of `inner`, the socket of the side that `origin` names.
    pub(crate) fn new(inner: S, origin: ConnectionOrigin, log: Log) -> Self {
        let side = match origin {
            ConnectionOrigin::Outbound => Side::Dialer,
            ConnectionOrigin::Inbound => Side::Listener,
        };
        Self { inner, side, log }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.log.record(this.side, &buf[..n]);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = poll {
            for buf in bufs {
                let take = n.min(buf.len());
                this.log.record(this.side, &buf[..take]);
                n -= take;
            }
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
