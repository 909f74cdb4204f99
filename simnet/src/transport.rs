//! A node's view of the simulated network: listening, connecting, and netcore's
//! [`Transport`] over `/memory/<port>` addresses.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{MapErr, Ready, ready};
use futures::{Stream, TryFutureExt};
use netcore::NetworkAddress;
use netcore::address::Endpoint;
use netcore::transport::{Transport, TransportError};

use crate::config::NodeId;
use crate::core::{ConnId, ConnectState, Side};
use crate::network::SimNetwork;
use crate::shared::Shared;
use crate::socket::SimSocket;

/// One node's transport: it listens on and dials `/memory/<port>` addresses of its
/// [`SimNetwork`] (a namespace of that network's own, apart from `memsocket`'s).
///
/// A connection's remote address, as the listener sees it, is `/memory/<port>` with the
/// dialer's source port: a port of that network's, distinct per connection as a TCP
/// source port is, which [`SimNetwork::node_of`] maps to the dialing node.
#[derive(Clone, Debug)]
pub struct SimTransport {
    network: SimNetwork,
    node: NodeId,
}

impl SimTransport {
    pub(crate) fn new(network: SimNetwork, node: NodeId) -> Self {
        Self { network, node }
    }

    /// The node this transport is.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The network the node is in.
    pub fn network(&self) -> &SimNetwork {
        &self.network
    }

    /// Listens on `port` (0 picks a free one). Fails with `AddrInUse` when the port is
    /// taken in this network.
    pub fn listen(&self, port: u16) -> io::Result<SimListener> {
        let shared = Arc::clone(self.network.shared());
        let node = self.node;
        let port = shared.with(|s| s.core.listen(node, port))?;
        Ok(SimListener { shared, port })
    }

    /// Connects to whoever listens on `port`: the SYN leaves now, the future completes
    /// when the SYN-ACK arrives (one round trip), or fails with `ConnectionRefused` when
    /// the reset does (nobody listens there, or the backlog is full). A cut holds the
    /// handshake until it heals.
    pub fn connect(&self, port: u16) -> SimConnect {
        let shared = Arc::clone(self.network.shared());
        let node = self.node;
        let (conn, error) = match shared.with(|s| s.core.connect(node, port)) {
            Ok(conn) => (Some(conn), None),
            Err(e) => (None, Some(e)),
        };
        SimConnect {
            shared,
            conn,
            error,
        }
    }
}

/// Converts the simulated connection's error into the transport's.
type IntoTransportError = fn(io::Error) -> TransportError;

impl Transport for SimTransport {
    type Output = SimSocket;
    type Error = TransportError;
    type Inbound = Ready<Result<SimSocket, TransportError>>;
    type Outbound = MapErr<SimConnect, IntoTransportError>;
    type Listener = SimListener;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let Endpoint::Memory(port) = *addr.endpoint() else {
            return Err(TransportError::UnsupportedAddress(addr));
        };
        let listener = self.listen(port)?;
        let bound = NetworkAddress::memory(listener.local_port());
        Ok((listener, bound))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let Endpoint::Memory(port) = *addr.endpoint() else {
            return Err(TransportError::UnsupportedAddress(addr));
        };
        Ok(self
            .connect(port)
            .map_err(TransportError::from as IntoTransportError))
    }
}

/// A connection being set up by [`SimTransport::connect`]. Dropping it gives up.
#[derive(Debug)]
#[must_use = "a connection is set up only while its future is polled or kept"]
pub struct SimConnect {
    shared: Arc<Shared>,
    /// The connection being set up, until the future completes.
    conn: Option<ConnId>,
    /// Why the connection could not even start, until reported.
    error: Option<io::Error>,
}

impl Future for SimConnect {
    type Output = io::Result<SimSocket>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(conn) = self.conn else {
            let e = self.error.take();
            return Poll::Ready(Err(e.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "polled after completion")
            })));
        };
        let shared = Arc::clone(&self.shared);
        let polled = shared.with(|s| match s.core.connect_state(conn) {
            ConnectState::Pending => {
                s.dialers.insert(conn, cx.waker().clone());
                Poll::Pending
            }
            ConnectState::Established => {
                let nodes = s.core.conn(conn).map(|c| c.nodes());
                Poll::Ready(nodes.ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionReset)))
            }
            ConnectState::Refused => {
                s.core.abandon(conn);
                Poll::Ready(Err(io::ErrorKind::ConnectionRefused.into()))
            }
        });
        let Poll::Ready(result) = polled else {
            return Poll::Pending;
        };
        self.conn = None;
        let nodes = result?;
        Poll::Ready(Ok(SimSocket::new(shared, conn, Side::Dialer, nodes)))
    }
}

impl Drop for SimConnect {
    fn drop(&mut self) {
        if let Some(conn) = self.conn {
            self.shared.with(|s| {
                s.dialers.remove(&conn);
                s.core.abandon(conn);
            });
        }
    }
}

/// A node's listener on one port of its network. Dropping it frees the port and closes
/// the connections it had not accepted.
///
/// As a [`Stream`] it is [`SimTransport`]'s listener: each item is an accepted socket
/// (its upgrade ready at once) and the dialer's address.
#[derive(Debug)]
pub struct SimListener {
    shared: Arc<Shared>,
    port: u16,
}

impl SimListener {
    /// The port listened on.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Polls for the next connection whose handshake completed (its ACK arrived): the
    /// socket and the dialer's address (`/memory/<its source port>`).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<(SimSocket, NetworkAddress)> {
        let port = self.port;
        let accepted = self.shared.with(|s| {
            let accepted = s.core.accept(port);
            if accepted.is_none() {
                s.core.wait_accept(port);
                s.acceptors.insert(port, cx.waker().clone());
            }
            accepted
        });
        match accepted {
            Some((conn, nodes, source_port)) => {
                let socket = SimSocket::new(Arc::clone(&self.shared), conn, Side::Listener, nodes);
                Poll::Ready((socket, NetworkAddress::memory(source_port)))
            }
            None => Poll::Pending,
        }
    }

    /// Waits for the next connection: the socket and the dialer's address.
    pub async fn accept(&mut self) -> (SimSocket, NetworkAddress) {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

impl Stream for SimListener {
    type Item = Result<(Ready<Result<SimSocket, TransportError>>, NetworkAddress), TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_accept(cx)
            .map(|(socket, addr)| Some(Ok((ready(Ok(socket)), addr))))
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let port = self.port;
        self.shared.with(|s| {
            s.acceptors.remove(&port);
            s.core.unlisten(port);
        });
    }
}
