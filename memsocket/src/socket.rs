//! The in-memory socket: two bounded pipes, one each way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::DEFAULT_CAPACITY;
use crate::listener::switchboard_connect;
use crate::pipe::Pipe;

/// One end of an in-memory, bidirectional byte stream.
///
/// Each direction buffers at most the capacity given at creation: a writer that outpaces
/// its reader waits. `poll_shutdown` half-closes (the peer reads what was sent, then EOF);
/// dropping an end gives the peer EOF on read and `BrokenPipe` on write.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use memsocket::MemorySocket;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let (mut a, mut b) = MemorySocket::new_pair();
/// a.write_all(b"ping").await.unwrap();
/// let mut buf = [0u8; 4];
/// b.read_exact(&mut buf).await.unwrap();
/// assert_eq!(&buf, b"ping");
/// # });
/// ```
#[derive(Debug)]
pub struct MemorySocket {
    incoming: Pipe,
    outgoing: Pipe,
}

impl MemorySocket {
    /// A connected pair of sockets with the default buffer capacity per direction.
    pub fn new_pair() -> (Self, Self) {
        Self::new_pair_with_capacity(DEFAULT_CAPACITY)
    }

    /// A connected pair of sockets buffering at most `capacity` bytes per direction.
    pub fn new_pair_with_capacity(capacity: usize) -> (Self, Self) {
        let a_to_b = Pipe::new(capacity);
        let b_to_a = Pipe::new(capacity);
        (
            Self {
                incoming: b_to_a.clone(),
                outgoing: a_to_b.clone(),
            },
            Self {
                incoming: a_to_b,
                outgoing: b_to_a,
            },
        )
    }

    /// Connects to the [`MemoryListener`](crate::MemoryListener) bound to `port`.
    ///
    /// Fails with `ConnectionRefused` when nobody listens on `port`, or when the
    /// listener's backlog of unaccepted connections is full (as a TCP stack drops a SYN
    /// past its backlog).
    pub fn connect(port: u16) -> io::Result<Self> {
        switchboard_connect(port)
    }
}

impl AsyncRead for MemorySocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // `put_slice` copies into the unfilled part: no zeroing of the caller's buffer.
        self.incoming.poll_read(cx, buf)
    }
}

impl AsyncWrite for MemorySocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outgoing.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are visible to the reader at once; there is nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outgoing.close_write();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.outgoing.close_write();
        self.incoming.close_read();
    }
}
