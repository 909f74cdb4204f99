//! `NoiseStream`: an encrypted, authenticated byte stream over any socket.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::cipher::TransportCipher;
use crate::handshake::RemoteInfo;
use crate::session::{Decoded, NoiseSession};

/// An established Noise session over `IO`: reads decrypt, writes encrypt.
///
/// Writes are buffered and coalesced: small writes fill one frame of up to 65519
/// plaintext bytes, which is sealed and written when full or on `flush`. So call
/// `flush` once per batch of messages, not per message, and always before waiting for a
/// reply. `poll_shutdown` flushes, then shuts the socket's write side.
///
/// A frame that fails to authenticate or is malformed ends the read side with an
/// [`io::Error`] of kind `InvalidData` holding a [`FrameError`](crate::FrameError).
pub struct NoiseStream<IO> {
    io: IO,
    session: NoiseSession,
    remote: RemoteInfo,
}

impl<IO> NoiseStream<IO> {
    #[cfg(test)]
    pub(crate) fn new(io: IO, cipher: TransportCipher, remote: RemoteInfo) -> Self {
        Self::with_read(io, cipher, remote, &[])
    }

    /// A stream whose first socket bytes, `read`, were read already (by the handshake's
    /// last read, behind its message).
    pub(crate) fn with_read(
        io: IO,
        cipher: TransportCipher,
        remote: RemoteInfo,
        read: &[u8],
    ) -> Self {
        Self {
            io,
            session: NoiseSession::with_read(cipher, read),
            remote,
        }
    }

    /// The remote's peer id and static key.
    pub fn remote(&self) -> &RemoteInfo {
        &self.remote
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO> fmt::Debug for NoiseStream<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseStream")
            .field("remote", &self.remote.peer_id)
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncWrite + Unpin> NoiseStream<IO> {
    /// Writes sealed bytes to the socket until none are left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.session.pending_wire().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.session.pending_wire()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.session.advance_wire(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.session.plaintext().is_empty() {
                this.session.take_plaintext(buf);
                return Poll::Ready(Ok(()));
            }
            match this.session.decode(buf).map_err(|e| e.into_io())? {
                Decoded::Direct(_) => return Poll::Ready(Ok(())),
                // Loop to hand out the buffered plaintext (an empty frame has none).
                Decoded::Buffered => continue,
                Decoded::NeedMore => {}
            }
            // Into the buffer's spare capacity, uninitialised: `limit` keeps the read
            // from growing the buffer.
            let buf = this.session.read_buf();
            let room = buf.capacity() - buf.len();
            let read = poll_read_buf(Pin::new(&mut this.io), cx, &mut buf.limit(room));
            let Poll::Ready(n) = read? else {
                this.session.release_if_empty(tokio::time::Instant::now);
                return Poll::Pending;
            };
            if n == 0 {
                return Poll::Ready(this.session.end_of_stream().map_err(|e| e.into_io()));
            }
            this.session.filled();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // New bytes are taken only once the sealed frame is on the wire. While the socket
        // pushes back, what this stream holds is that one frame, not a full plaintext
        // buffer more: bytes taken here are committed to their order, and anything more
        // urgent the caller has would wait behind them. With the wire free there is room
        // in the plaintext buffer: a full one is sealed as soon as it fills.
        ready!(this.poll_drain(cx))?;
        let n = this.session.write_plaintext(buf).map_err(|e| e.into_io())?;
        if this.session.unsealed_full() {
            this.session.seal().map_err(|e| e.into_io())?;
        }
        if !this.session.pending_wire().is_empty() {
            // A full frame is sealed: start it on the wire now. Its bytes are already
            // accepted, so only an error is reported; `Pending` waits for the next call.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_drain(cx))?;
            if !this.session.seal().map_err(|e| e.into_io())? {
                break;
            }
        }
        this.session
            .release_write_if_quiet(tokio::time::Instant::now);
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::cipher_pair;
    use memsocket::MemorySocket;
    use netcore::PeerId;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A remote's identity, which is not looked at here.
    fn remote() -> RemoteInfo {
        RemoteInfo {
            peer_id: PeerId::new([0; 32]),
            static_key: x25519_dalek::PublicKey::from([9; 32]),
        }
    }

    /// A stream over `io` with `cipher`.
    fn stream(io: MemorySocket, cipher: TransportCipher) -> NoiseStream<MemorySocket> {
        NoiseStream::new(io, cipher, remote())
    }

    /// Polls `s` for a read once, to reach the socket's `Pending` after all was read.
    fn poll_once(s: &mut NoiseStream<MemorySocket>) {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        assert!(Pin::new(s).poll_read(&mut cx, &mut buf).is_pending());
    }

    /// A small message from `alice` to `bob`, read, and `bob` polled to its `Pending`.
    async fn ping(alice: &mut NoiseStream<MemorySocket>, bob: &mut NoiseStream<MemorySocket>) {
        alice.write_all(b"ping").await.unwrap();
        alice.flush().await.unwrap();
        let mut got = [0u8; 4];
        bob.read_exact(&mut got).await.unwrap();
        poll_once(bob);
    }

    /// `data` from `alice` to `bob`, written and read at once, and checked.
    async fn carry(
        alice: &mut NoiseStream<MemorySocket>,
        bob: &mut NoiseStream<MemorySocket>,
        data: &[u8],
    ) {
        let reader = async {
            let mut got = vec![0u8; data.len()];
            bob.read_exact(&mut got).await.unwrap();
            got
        };
        let writer = async {
            alice.write_all(data).await.unwrap();
            alice.flush().await.unwrap();
        };
        let (got, ()) = tokio::join!(reader, writer);
        assert!(got == data, "the bytes arrive intact");
    }

    #[tokio::test]
    async fn bytes_read_before_the_stream_began_are_decoded_first() {
        // Two frames as alice's socket carries them.
        let (a, mut wire) = MemorySocket::new_pair();
        let (ca, cb) = cipher_pair(crate::DEFAULT_SUITE);
        let mut alice = stream(a, ca);
        for part in [&b"first "[..], b"second"] {
            alice.write_all(part).await.unwrap();
            alice.flush().await.unwrap();
        }
        drop(alice);
        let mut bytes = Vec::new();
        wire.read_to_end(&mut bytes).await.unwrap();
        // Bob's handshake read the first frame and part of the second; his socket has
        // the rest.
        let split = bytes.len() - 5;
        let (mut rest, b) = MemorySocket::new_pair();
        let mut bob = NoiseStream::with_read(b, cb, remote(), &bytes[..split]);
        rest.write_all(&bytes[split..]).await.unwrap();
        let mut got = [0u8; 12];
        bob.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_burst_both_ends_give_their_large_buffers_back_once_quiet() {
        let (a, b) = MemorySocket::new_pair();
        let (ca, cb) = cipher_pair(crate::DEFAULT_SUITE);
        let (mut alice, mut bob) = (stream(a, ca), stream(b, cb));
        let block = vec![7u8; 100_000];
        carry(&mut alice, &mut bob, &block).await;
        poll_once(&mut bob);
        let held = |s: &NoiseStream<MemorySocket>| s.session.buffer_capacities();
        assert!(held(&bob)[0] >= crate::READ_BUFFER_LEN);
        assert!(held(&alice)[1].max(held(&alice)[2]) > 60_000);
        // Pings within the quiet period leave the buffers; the first past it frees them.
        tokio::time::advance(Duration::from_secs(9)).await;
        ping(&mut alice, &mut bob).await;
        assert!(held(&bob)[0] >= crate::READ_BUFFER_LEN);
        assert!(held(&alice)[1].max(held(&alice)[2]) > 60_000);
        tokio::time::advance(Duration::from_secs(1)).await;
        ping(&mut alice, &mut bob).await;
        assert_eq!(held(&bob)[0], 0);
        assert!(held(&alice)[1].max(held(&alice)[2]) <= crate::INITIAL_READ_BUFFER_LEN);
        // And the connection carries the next block as before.
        carry(&mut alice, &mut bob, &block).await;
    }
}
