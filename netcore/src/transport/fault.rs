//! Fault injection for tests: a transport wrapper that adds latency, cuts connections and
//! partitions chosen nodes from each other, under the control of a shared
//! [`FaultController`].
//!
//! Every node of a test wraps its base transport (memory or TCP) with
//! [`FaultController::transport`], naming itself. The controller learns which node
//! listens on which address (the address bound, as `listen_on` returns it; a node
//! listening on `0.0.0.0` but dialed at `127.0.0.1` is not recognised, and no
//! partition applies to it), so a dial knows both ends:
//!
//! - a **partition** refuses dials between the two groups (`ConnectionRefused`) and cuts
//!   the connections between them that are open;
//! - a **cut** ends a connection: its next read or write fails with `ConnectionReset` and
//!   its socket is dropped, so the remote sees the connection end too;
//! - **latency** holds each write (and each new connection) for the configured time
//!   before it reaches the socket, so every message is late by at least that much.
//!
//! A dialer knows whom it dials, a listener does not know who dialed it (a memory
//! dialer has no address, a TCP dialer an ephemeral port), so a partition cuts a
//! connection through its dialing end; the socket then closes for both. Cutting a node
//! ([`FaultController::cut_node`]) or all connections reaches both ends.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use futures::StreamExt;
//! use netcore::transport::{FaultController, MemoryTransport, Transport};
//!
//! let faults = FaultController::new();
//! let a = faults.transport(MemoryTransport::default(), "a");
//! let b = faults.transport(MemoryTransport::default(), "b");
//! let (_listener, b_addr) = b.listen_on("/memory/0".parse().unwrap()).unwrap();
//!
//! faults.partition(&["a"], &["b"]);
//! assert!(a.dial(b_addr.clone()).is_err());
//! faults.heal();
//! assert!(a.dial(b_addr).is_ok());
//! # });
//! ```

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::{Transport, TransportError};
use crate::address::NetworkAddress;

/// The state of one connection the controller can cut.
#[derive(Debug)]
struct ConnShared {
    /// The node this end belongs to.
    local: Arc<str>,
    /// The address this end dialed (none for an accepted end): the node behind it is
    /// looked up when a partition or a cut is decided.
    dialed: Option<NetworkAddress>,
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl ConnShared {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.reader.wake();
        self.writer.wake();
    }

    /// The node at the other end, as known now: looked up each time, since a listener
    /// registers its address just after its socket starts listening, and a dial can
    /// connect in between.
    fn remote_in(&self, listeners: &HashMap<NetworkAddress, Arc<str>>) -> Option<Arc<str>> {
        self.dialed.as_ref().and_then(|a| listeners.get(a).cloned())
    }

    fn between(
        &self,
        remote: Option<&Arc<str>>,
        a: &HashSet<Arc<str>>,
        b: &HashSet<Arc<str>>,
    ) -> bool {
        let Some(remote) = remote else {
            return false;
        };
        (a.contains(&self.local) && b.contains(remote))
            || (b.contains(&self.local) && a.contains(remote))
    }
}

#[derive(Debug, Default)]
struct State {
    latency: Duration,
    /// Unordered pairs of nodes that cannot reach each other, stored both ways round.
    blocked: HashSet<(Arc<str>, Arc<str>)>,
    /// Which node listens where (addresses without their `/p2p/` part).
    listeners: HashMap<NetworkAddress, Arc<str>>,
    connections: Vec<Weak<ConnShared>>,
}

/// What the controller did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Connections cut (by a partition, a node cut or `cut_all`).
    pub connections_cut: u64,
    /// Dials refused because of a partition.
    pub dials_refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    cut: AtomicU64,
    refused: AtomicU64,
}

/// The switchboard of a fault-injection test, shared by every node's
/// [`FaultyTransport`]. Cheap to clone; clones control the same faults.
#[derive(Clone, Debug, Default)]
pub struct FaultController {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
}

impl FaultController {
    /// A controller with no faults: no latency, no partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps `inner` as node `node`'s transport under this controller.
    pub fn transport<T>(&self, inner: T, node: impl Into<String>) -> FaultyTransport<T> {
        FaultyTransport {
            inner,
            node: Arc::from(node.into()),
            controller: self.clone(),
        }
    }

    /// Holds every write, and every new connection, for `latency` from now on (zero
    /// turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// The latency in force.
    pub fn latency(&self) -> Duration {
        self.state.lock().latency
    }

    /// Separates every node of `a` from every node of `b`: dials between them are
    /// refused, and the open connections between them are cut. Partitions add up until
    /// [`heal`](Self::heal).
    pub fn partition<S: AsRef<str>>(&self, a: &[S], b: &[S]) {
        let a: HashSet<Arc<str>> = a.iter().map(|n| Arc::from(n.as_ref())).collect();
        let b: HashSet<Arc<str>> = b.iter().map(|n| Arc::from(n.as_ref())).collect();
        let mut state = self.state.lock();
        for x in &a {
            for y in &b {
                state.blocked.insert((x.clone(), y.clone()));
                state.blocked.insert((y.clone(), x.clone()));
            }
        }
        self.cut_where(&mut state, |c, remote| c.between(remote, &a, &b));
    }

    /// Lifts every partition. Connections cut stay cut; nodes redial as they would.
    pub fn heal(&self) {
        self.state.lock().blocked.clear();
    }

    /// Whether `a` and `b` are partitioned from each other.
    pub fn is_partitioned(&self, a: &str, b: &str) -> bool {
        self.state
            .lock()
            .blocked
            .contains(&(Arc::from(a), Arc::from(b)))
    }

    /// Cuts every open connection of `node`, both those it dialed and those it
    /// accepted; returns how many ends were cut. New connections are not refused.
    pub fn cut_node(&self, node: &str) -> usize {
        let mut state = self.state.lock();
        self.cut_where(&mut state, |c, remote| {
            &*c.local == node || remote.is_some_and(|r| &**r == node)
        })
    }

    /// Cuts every open connection; returns how many ends were cut.
    pub fn cut_all(&self) -> usize {
        let mut state = self.state.lock();
        self.cut_where(&mut state, |_, _| true)
    }

    /// Connection ends open now (not cut, not dropped).
    pub fn open_connections(&self) -> usize {
        let mut state = self.state.lock();
        state.connections.retain(|c| c.strong_count() > 0);
        state
            .connections
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.cut.load(Ordering::SeqCst))
            .count()
    }

    /// What the controller did so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            connections_cut: self.counters.cut.load(Ordering::Relaxed),
            dials_refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    /// Cuts the open connections `pred` picks, given each one's remote as known now.
    fn cut_where(
        &self,
        state: &mut State,
        pred: impl Fn(&ConnShared, Option<&Arc<str>>) -> bool,
    ) -> usize {
        let mut cut = 0;
        let State {
            connections,
            listeners,
            ..
        } = state;
        connections.retain(|weak| {
            let Some(conn) = weak.upgrade() else {
                return false;
            };
            if conn.cut.load(Ordering::SeqCst) {
                return false;
            }
            if pred(&conn, conn.remote_in(listeners).as_ref()) {
                conn.cut();
                cut += 1;
                return false;
            }
            true
        });
        self.counters.cut.fetch_add(cut as u64, Ordering::Relaxed);
        cut
    }

    /// Registers a connection of `local`; a dialed one names the address it dialed
    /// (without its `/p2p/` part).
    fn register(&self, local: Arc<str>, dialed: Option<NetworkAddress>) -> Arc<ConnShared> {
        let mut state = self.state.lock();
        let conn = Arc::new(ConnShared {
            local,
            dialed,
            cut: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        // A partition set while this connection was being made covers it too. Its
        // remote is looked up now, not when the dial began: it may have started
        // listening in between (nodes that start together dial each other before every
        // one listens).
        if let Some(remote) = conn.remote_in(&state.listeners)
            && state.blocked.contains(&(conn.local.clone(), remote))
        {
            conn.cut.store(true, Ordering::SeqCst);
            self.counters.cut.fetch_add(1, Ordering::Relaxed);
        } else {
            state.connections.retain(|c| c.strong_count() > 0);
            state.connections.push(Arc::downgrade(&conn));
        }
        conn
    }
}

/// A transport whose connections suffer the faults of its [`FaultController`]. Made
/// by [`FaultController::transport`].
#[derive(Clone, Debug)]
pub struct FaultyTransport<T> {
    inner: T,
    node: Arc<str>,
    controller: FaultController,
}

impl<T> FaultyTransport<T> {
    /// The node this transport belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The controller of its faults.
    pub fn controller(&self) -> &FaultController {
        &self.controller
    }
}

/// An upgrade of [`FaultyTransport`].
pub type FaultyUpgrade<S> = BoxFuture<'static, Result<FaultyStream<S>, TransportError>>;

/// The listener stream of [`FaultyTransport`].
pub type FaultyListener<S> =
    BoxStream<'static, Result<(FaultyUpgrade<S>, NetworkAddress), TransportError>>;

/// Completes `inner`, waits out the latency, and wraps the connection.
async fn wrap<S, F>(
    inner: F,
    controller: FaultController,
    local: Arc<str>,
    dialed: Option<NetworkAddress>,
) -> Result<FaultyStream<S>, TransportError>
where
    F: Future<Output = Result<S, TransportError>>,
{
    let socket = inner.await?;
    let latency = controller.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let shared = controller.register(local, dialed);
    Ok(FaultyStream {
        inner: Some(socket),
        shared,
        controller,
        delay: None,
        delayed: false,
    })
}

impl<T> Transport for FaultyTransport<T>
where
    T: Transport<Error = TransportError>,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    type Output = FaultyStream<T::Output>;
    type Error = TransportError;
    type Inbound = FaultyUpgrade<T::Output>;
    type Outbound = FaultyUpgrade<T::Output>;
    type Listener = FaultyListener<T::Output>;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let (listener, bound) = self.inner.listen_on(addr)?;
        self.controller
            .state
            .lock()
            .listeners
            .insert(bound.clone().without_peer_id(), self.node.clone());
        let (controller, node) = (self.controller.clone(), self.node.clone());
        let listener = listener
            .map_ok(move |(upgrade, remote)| {
                let up = wrap(upgrade, controller.clone(), node.clone(), None).boxed();
                (up, remote)
            })
            .boxed();
        Ok((listener, bound))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let dialed = addr.clone().without_peer_id();
        {
            let state = self.controller.state.lock();
            if let Some(remote) = state.listeners.get(&dialed)
                && state.blocked.contains(&(self.node.clone(), remote.clone()))
            {
                self.controller
                    .counters
                    .refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(TransportError::Io(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "{} is partitioned from {remote} (fault injection)",
                        self.node
                    ),
                )));
            }
        }
        let upgrade = self.inner.dial(addr)?;
        Ok(wrap(
            upgrade,
            self.controller.clone(),
            self.node.clone(),
            Some(dialed),
        )
        .boxed())
    }
}

/// A connection of a [`FaultyTransport`]: the inner socket, until a cut drops it.
pub struct FaultyStream<S> {
    inner: Option<S>,
    shared: Arc<ConnShared>,
    controller: FaultController,
    /// The latency being waited out before the next write.
    delay: Option<Pin<Box<Sleep>>>,
    /// The next write has waited out its latency.
    delayed: bool,
}

impl<S> std::fmt::Debug for FaultyStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStream")
            .field("local", &self.shared.local)
            .field("dialed", &self.shared.dialed)
            .field("cut", &self.inner.is_none())
            .finish()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection cut (fault injection)",
    )
}

impl<S> FaultyStream<S> {
    /// Whether the connection was cut.
    pub fn is_cut(&self) -> bool {
        self.inner.is_none() || self.shared.cut.load(Ordering::SeqCst)
    }

    /// The socket, or the cut error (dropping the socket once cut, so the remote sees
    /// the connection end).
    fn socket(&mut self) -> io::Result<&mut S> {
        if self.shared.cut.load(Ordering::SeqCst) {
            self.inner = None;
        }
        self.inner.as_mut().ok_or_else(cut_error)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.reader.register(cx.waker());
        let socket = this.socket()?;
        Pin::new(socket).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.shared.writer.register(cx.waker());
        this.socket()?;
        if !this.delayed {
            let latency = this.controller.latency();
            if !latency.is_zero() {
                let delay = this
                    .delay
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(latency)));
                ready!(delay.as_mut().poll(cx));
                this.delay = None;
            }
            this.delayed = true;
        }
        let written = ready!(Pin::new(this.socket()?).poll_write(cx, data));
        if written.is_ok() {
            this.delayed = false;
        }
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.writer.register(cx.waker());
        Pin::new(this.socket()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(this.socket()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
