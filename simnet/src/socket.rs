//! One end of a simulated connection.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::NodeId;
use crate::core::{ConnId, FlowId, Readable, Side};
use crate::shared::Shared;

/// One end of a simulated connection: a byte stream like a TCP socket's, with the
/// latency, bandwidth share, send buffer and window of its [`SimNetwork`](crate::SimNetwork).
///
/// A write is taken into the send buffer while it has room (otherwise it waits:
/// backpressure); the bytes leave at the connection's share of the links and arrive a
/// latency later. `poll_shutdown` half-closes (the peer reads what was sent, then EOF);
/// dropping the socket closes both ways: the peer reads what was sent, then EOF, and its
/// writes fail with `BrokenPipe` once it hears of the close, a latency later.
pub struct SimSocket {
    shared: Arc<Shared>,
    conn: ConnId,
    side: Side,
    local: NodeId,
    peer: NodeId,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl SimSocket {
    /// The `side` end of `conn`, which runs between `nodes` (dialer, listener).
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: ConnId,
        side: Side,
        nodes: (NodeId, NodeId),
    ) -> Self {
        let (local, peer) = match side {
            Side::Dialer => nodes,
            Side::Listener => (nodes.1, nodes.0),
        };
        Self {
            shared,
            conn,
            side,
            local,
            peer,
        }
    }

    fn sends(&self) -> FlowId {
        FlowId {
            conn: self.conn,
            dir: self.side.sends(),
        }
    }

    fn reads(&self) -> FlowId {
        FlowId {
            conn: self.conn,
            dir: self.side.sends().reverse(),
        }
    }

    /// The node this end is on.
    pub fn local_node(&self) -> NodeId {
        self.local
    }

    /// The node at the other end.
    pub fn peer_node(&self) -> NodeId {
        self.peer
    }

    /// Bytes written and not yet sent: the kernel's unsent queue (`SIOCOUTQNSD` on
    /// Linux). Bytes sent once and lost in a cut are not counted again.
    pub fn unsent(&self) -> usize {
        let flow = self.sends();
        self.shared.with(|s| s.core.unsent(flow)) as usize
    }

    /// Takes writes only while fewer than `threshold` bytes are unsent, and at most up to
    /// it, as `TCP_NOTSENT_LOWAT` does; `None` (the default) bounds writes by the send
    /// buffer alone. The send buffer bounds them in any case.
    pub fn set_notsent_lowat(&self, threshold: Option<usize>) {
        let flow = self.sends();
        self.shared
            .with(|s| s.core.set_lowat(flow, threshold.map(|t| t as u64)));
    }
}

impl AsyncRead for SimSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let flow = self.reads();
        self.shared.with(|s| {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match s.core.readable(flow) {
                Readable::Bytes(n) => {
                    let Some(bytes) = s.data.get_mut(&flow) else {
                        debug_assert!(false, "bytes arrived that were never stored");
                        return Poll::Ready(Ok(()));
                    };
                    let n = (n as usize).min(buf.remaining()).min(bytes.len());
                    let (a, b) = bytes.as_slices();
                    let from_a = n.min(a.len());
                    buf.put_slice(&a[..from_a]);
                    buf.put_slice(&b[..n - from_a]);
                    bytes.drain(..n);
                    s.core.consume(flow, n as u64);
                    Poll::Ready(Ok(()))
                }
                Readable::Eof => Poll::Ready(Ok(())),
                Readable::Nothing => {
                    s.core.wait_read(flow);
                    s.readers.insert(flow, cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

impl AsyncWrite for SimSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let flow = self.sends();
        self.shared.with(|s| {
            let room = match s.core.room(flow) {
                Ok(room) => room,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if room == 0 {
                s.core.wait_write(flow);
                s.writers.insert(flow, cx.waker().clone());
                return Poll::Pending;
            }
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            s.core.write(flow, n as u64);
            if s.core.flow(flow).is_some_and(|f| !f.reader_gone) {
                s.data.entry(flow).or_default().extend(&data[..n]);
            }
            Poll::Ready(Ok(n))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the send buffer, as after a TCP write: nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flow = self.sends();
        self.shared.with(|s| s.core.shutdown(flow));
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let (conn, side, sends, reads) = (self.conn, self.side, self.sends(), self.reads());
        self.shared.with(|s| {
            s.writers.remove(&sends);
            s.readers.remove(&reads);
            s.core.close(conn, side);
        });
    }
}
