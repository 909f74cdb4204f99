//! [`Negotiated`]: a stream after protocol negotiation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::core::{DialerCore, DialerProgress};
use super::error::NegotiateError;
use super::{MAX_COALESCED_WRITE, READ_CHUNK};

/// A stream on which a protocol was negotiated (or, after
/// [`negotiate_outbound_select`](super::negotiate_outbound_select), optimistically
/// chosen).
///
/// It reads and writes the application protocol's bytes. Bytes that arrived together
/// with the negotiation are served first; after that, and once any queued negotiation
/// bytes are sent, every call goes straight to the inner stream with no copy.
///
/// After an optimistic selection it still owes the negotiation two things, which it does
/// on its own: the header and the proposal go out in front of the first written bytes
/// (in the same write call on the inner stream, for a first write of up to
/// [`MAX_COALESCED_WRITE`] bytes) or on the first flush; and the listener's answer is
/// read on the first read. If the listener refused, that read (and every later read and
/// write) fails with an `io::Error` of kind `ConnectionRefused` wrapping
/// [`NegotiateError::Refused`]; other negotiation failures come wrapped with the kinds
/// listed at [`NegotiateError::io_kind`]. [`NegotiateError::from_io`] recovers the typed
/// error.
#[derive(Debug)]
pub struct Negotiated<IO> {
    io: IO,
    /// Bytes read past the negotiation, served before reading from `io` again.
    read_buf: BytesMut,
    /// Bytes accepted for writing but not yet written to `io`: the optimistic header and
    /// proposal, and the first write coalesced behind them.
    write_buf: BytesMut,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Negotiated: a pass-through once the buffers are empty.
    Done,
    /// An optimistic proposal awaits the listener's answer.
    Expecting {
        core: DialerCore,
        /// The proposal was written and flushed, so the answer can be awaited.
        flushed: bool,
        /// The write buffer kept the size `DialerCore::start` gave it (a first write
        /// joined it without growing it), so once sent it may take the answer.
        small_buffer: bool,
    },
    /// The listener refused, or the exchange failed: reported on every call.
    Failed(NegotiateError),
}

impl<IO> Negotiated<IO> {
    /// A negotiated stream whose first bytes to read are `leftover`.
    pub(super) fn new(io: IO, leftover: BytesMut) -> Self {
        // An empty leftover gives its buffer back at once.
        let read_buf = if leftover.is_empty() {
            BytesMut::new()
        } else {
            leftover
        };
        Negotiated {
            io,
            read_buf,
            write_buf: BytesMut::new(),
            state: State::Done,
        }
    }

    /// A listener's stream whose first bytes to read are `leftover` (not empty: the
    /// dialer sent data behind its proposal, so it is not waiting for the answer) and
    /// which sends `answer` ahead of its first write, or on its first flush.
    pub(super) fn answering(io: IO, leftover: BytesMut, answer: BytesMut) -> Self {
        Negotiated {
            io,
            read_buf: leftover,
            write_buf: answer,
            state: State::Done,
        }
    }

    /// A stream that sends `queued` (a header and a proposal) ahead of its first write,
    /// and reads the answer `core` awaits before its first read.
    pub(super) fn expecting(io: IO, queued: BytesMut, core: DialerCore) -> Self {
        Negotiated {
            io,
            read_buf: BytesMut::new(),
            write_buf: queued,
            state: State::Expecting {
                core,
                flushed: false,
                small_buffer: true,
            },
        }
    }

    /// Whether the protocol is confirmed: always after an inbound or interactive
    /// negotiation; after an optimistic selection, once a read has seen the listener's
    /// echo.
    pub fn is_confirmed(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The inner stream, for inspection (addresses, socket options). Reading or writing
    /// it directly would skip the bytes this wrapper buffers.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Negotiated<IO> {
    /// Writes all of `write_buf` to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write_buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write_buf.advance(n);
            if self.write_buf.is_empty() {
                // From now on writes go straight through. An optimistic dialer reads the
                // answer into the spent buffer, which has room for it: one allocation
                // serves both ways of the negotiation. Not one that a large first write
                // grew: the answer takes a few dozen bytes.
                let spent = std::mem::take(&mut self.write_buf);
                let small = matches!(
                    self.state,
                    State::Expecting {
                        small_buffer: true,
                        ..
                    }
                );
                if small && self.read_buf.capacity() == 0 {
                    self.read_buf = spent;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Drives an optimistic negotiation to its answer: sends what is queued, then reads
    /// until the listener has answered. Leaves the state `Done` or `Failed`.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let State::Expecting { core, flushed, .. } = &mut self.state else {
                return Poll::Ready(Ok(()));
            };
            if !*flushed || !self.write_buf.is_empty() {
                ready!(self.poll_drain(cx))?;
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                if let State::Expecting { flushed, .. } = &mut self.state {
                    *flushed = true;
                }
                continue;
            }
            let next = match core.on_input(&mut self.read_buf) {
                Ok(DialerProgress::Accepted) => {
                    if self.read_buf.is_empty() {
                        self.read_buf = BytesMut::new();
                    }
                    State::Done
                }
                Ok(DialerProgress::Refused) => State::Failed(NegotiateError::Refused),
                Err(err) => State::Failed(err),
                Ok(DialerProgress::NeedInput) => {
                    if ready!(poll_fill(&mut self.io, cx, &mut self.read_buf))? > 0 {
                        continue;
                    }
                    State::Failed(core.on_eof())
                }
            };
            if let State::Failed(_) = next {
                // Nothing more is read from a failed negotiation.
                self.read_buf = BytesMut::new();
            }
            self.state = next;
        }
    }

    /// The error to report if the negotiation failed.
    fn failure(&self) -> Option<io::Error> {
        match &self.state {
            State::Failed(err) => Some(err.replicate().into()),
            State::Done | State::Expecting { .. } => None,
        }
    }

    /// A read while the answer is awaited, negotiation bytes are buffered or the
    /// negotiation failed.
    #[inline(never)]
    fn poll_read_negotiating(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        if let Some(err) = self.failure() {
            return Poll::Ready(Err(err));
        }
        if self.read_buf.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read_buf.len().min(buf.remaining());
        buf.put_slice(&self.read_buf[..n]);
        self.read_buf.advance(n);
        if self.read_buf.is_empty() {
            // Give back the negotiation buffer: from now on reads go straight through.
            self.read_buf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// A write while negotiation bytes are queued or after the negotiation failed.
    #[inline(never)]
    fn poll_write_negotiating(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.failure() {
            return Poll::Ready(Err(err));
        }
        if !self.write_buf.is_empty() {
            if self.write_buf.len() < MAX_COALESCED_WRITE {
                // Put the data behind the queued negotiation bytes, so both leave in one
                // write call. The data is ours once buffered: whatever `io` does not take
                // now goes out on the next write or flush.
                let take = data.len().min(MAX_COALESCED_WRITE - self.write_buf.len());
                if take > self.write_buf.capacity() - self.write_buf.len()
                    && let State::Expecting { small_buffer, .. } = &mut self.state
                {
                    *small_buffer = false;
                }
                self.write_buf.extend_from_slice(&data[..take]);
                if let Poll::Ready(Err(err)) = self.poll_drain(cx) {
                    return Poll::Ready(Err(err));
                }
                return Poll::Ready(Ok(take));
            }
            ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.io).poll_write(cx, data)
    }
}

/// Reads once from `io` into at most [`READ_CHUNK`] more bytes of `buf`; returns how many
/// were read (0 at end of stream). The room is not zeroed first: that was a sixth of the
/// negotiation's cost of an RPC.
pub(super) fn poll_fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    buf.reserve(READ_CHUNK);
    poll_read_buf(Pin::new(io), cx, &mut buf.limit(READ_CHUNK))
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Negotiated<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Every read of a connection's multiplexer goes through here: the common case
        // is checked first and stays small (the rest is another function).
        if matches!(this.state, State::Done) && this.read_buf.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        this.poll_read_negotiating(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Negotiated<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Nothing queued and no failure: straight through, with the fast path small.
        if this.write_buf.is_empty() && !matches!(this.state, State::Failed(_)) {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.poll_write_negotiating(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_buf.is_empty() && this.failure().is_none() {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.failure() {
            return Poll::Ready(Err(err));
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        if let State::Expecting { flushed, .. } = &mut this.state {
            *flushed = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiate::{negotiate_inbound, negotiate_outbound_select};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_answer_is_read_into_the_buffer_a_small_first_write_went_out_in() {
        let (dialer, listener) = tokio::io::duplex(64 * 1024);
        let mut out = negotiate_outbound_select(dialer, "/rpc/1").unwrap();
        out.write_all(b"ping").await.unwrap();
        out.flush().await.unwrap();
        assert!(out.write_buf.is_empty());
        assert!(
            out.read_buf.capacity() > 0,
            "the spent buffer waits for the answer"
        );

        let (mut inbound, _) = negotiate_inbound(listener, &["/rpc/1"]).await.unwrap();
        let mut request = [0u8; 4];
        inbound.read_exact(&mut request).await.unwrap();
        inbound.write_all(b"pong").await.unwrap();
        inbound.flush().await.unwrap();
        let mut response = [0u8; 4];
        out.read_exact(&mut response).await.unwrap();
        assert_eq!(&response, b"pong");
        assert!(out.is_confirmed());
    }

    #[tokio::test]
    async fn a_buffer_a_large_first_write_grew_is_given_back() {
        let (dialer, _listener) = tokio::io::duplex(64 * 1024);
        let mut out = negotiate_outbound_select(dialer, "/rpc/1").unwrap();
        out.write_all(&vec![7u8; MAX_COALESCED_WRITE])
            .await
            .unwrap();
        out.flush().await.unwrap();
        assert!(out.write_buf.is_empty());
        assert_eq!(
            out.read_buf.capacity(),
            0,
            "a few bytes of answer do not keep {MAX_COALESCED_WRITE} bytes"
        );
    }

    #[tokio::test]
    async fn a_refused_proposal_lets_go_of_its_read_buffer() {
        let (dialer, listener) = tokio::io::duplex(64 * 1024);
        let mut out = negotiate_outbound_select(dialer, "/rpc/2").unwrap();
        out.write_all(b"ping").await.unwrap();
        out.flush().await.unwrap();
        let listening =
            tokio::spawn(async move { negotiate_inbound(listener, &["/rpc/1"]).await.err() });
        let mut response = [0u8; 4];
        let err = out.read_exact(&mut response).await.unwrap_err();
        assert!(matches!(
            NegotiateError::from_io(&err),
            Some(NegotiateError::Refused)
        ));
        assert_eq!(out.read_buf.capacity(), 0);
        drop(out);
        assert!(listening.await.unwrap().is_some());
    }
}
