//! The in-memory listener and the process-wide table of bound ports.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::socket::MemorySocket;
use crate::{DEFAULT_BACKLOG, DEFAULT_CAPACITY, FIRST_EPHEMERAL_PORT};

/// What a bound port holds: where to queue new connections and their buffer capacity.
#[derive(Debug)]
struct Binding {
    backlog: mpsc::Sender<MemorySocket>,
    capacity: usize,
}

/// Every bound port of the process.
#[derive(Debug, Default)]
struct Switchboard {
    ports: HashMap<u16, Binding>,
    next_ephemeral: u16,
}

fn switchboard() -> MutexGuard<'static, Switchboard> {
    static BOARD: OnceLock<Mutex<Switchboard>> = OnceLock::new();
    BOARD
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Switchboard {
    /// The next free port at or above [`FIRST_EPHEMERAL_PORT`], wrapping around.
    fn ephemeral_port(&mut self) -> Option<u16> {
        let span = u32::from(u16::MAX - FIRST_EPHEMERAL_PORT) + 1;
        for _ in 0..span {
            if self.next_ephemeral < FIRST_EPHEMERAL_PORT {
                self.next_ephemeral = FIRST_EPHEMERAL_PORT;
            }
            let port = self.next_ephemeral;
            self.next_ephemeral = self.next_ephemeral.wrapping_add(1);
            if !self.ports.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }
}

pub(crate) fn switchboard_connect(port: u16) -> io::Result<MemorySocket> {
    let board = switchboard();
    let binding = board
        .ports
        .get(&port)
        .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
    let (ours, theirs) = MemorySocket::new_pair_with_capacity(binding.capacity);
    binding.backlog.try_send(theirs).map_err(|_| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "listener backlog full or listener closed",
        )
    })?;
    Ok(ours)
}

/// A listener for in-memory connections on a process-wide port number.
///
/// Ports are unique within the process: binding port 0 picks a free one, so tests that
/// run in parallel never collide. Dropping the listener frees its port and refuses the
/// connections it had not accepted yet.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use memsocket::{MemoryListener, MemorySocket};
///
/// let mut listener = MemoryListener::bind(0).unwrap();
/// let port = listener.local_addr();
/// let _client = MemorySocket::connect(port).unwrap();
/// let _server = listener.accept().await.unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct MemoryListener {
    port: u16,
    backlog: mpsc::Receiver<MemorySocket>,
}

impl MemoryListener {
    /// Binds `port` (0 picks a free port) with the default socket capacity and backlog.
    ///
    /// Fails with `AddrInUse` when the port is taken, or `AddrNotAvailable` when port 0
    /// was asked and no port is free.
    pub fn bind(port: u16) -> io::Result<Self> {
        Self::bind_with(port, DEFAULT_CAPACITY, DEFAULT_BACKLOG)
    }

    /// Binds `port` with the given per-direction buffer capacity for accepted sockets and
    /// the given backlog of connections not yet accepted.
    pub fn bind_with(port: u16, capacity: usize, backlog: usize) -> io::Result<Self> {
        let mut board = switchboard();
        let port = if port == 0 {
            board
                .ephemeral_port()
                .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?
        } else if board.ports.contains_key(&port) {
            return Err(io::ErrorKind::AddrInUse.into());
        } else {
            port
        };
        let (tx, rx) = mpsc::channel(backlog.max(1));
        board.ports.insert(
            port,
            Binding {
                backlog: tx,
                capacity,
            },
        );
        Ok(Self { port, backlog: rx })
    }

    /// The port this listener is bound to.
    pub fn local_addr(&self) -> u16 {
        self.port
    }

    /// Polls for the next inbound connection.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<MemorySocket>> {
        match self.backlog.poll_recv(cx) {
            Poll::Ready(Some(socket)) => Poll::Ready(Ok(socket)),
            // The sender lives in the switchboard until this listener drops it.
            Poll::Ready(None) => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Waits for the next inbound connection.
    pub async fn accept(&mut self) -> io::Result<MemorySocket> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// A stream of inbound connections that borrows the listener.
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// A stream of inbound connections that owns the listener.
    pub fn into_incoming(self) -> IntoIncoming {
        IntoIncoming { listener: self }
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        switchboard().ports.remove(&self.port);
    }
}

/// The stream of inbound connections of a borrowed [`MemoryListener`]; it never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a mut MemoryListener,
}

impl Stream for Incoming<'_> {
    type Item = io::Result<MemorySocket>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener.poll_accept(cx).map(Some)
    }
}

/// The stream of inbound connections of an owned [`MemoryListener`]; it never ends, and
/// dropping it frees the port.
#[derive(Debug)]
pub struct IntoIncoming {
    listener: MemoryListener,
}

impl IntoIncoming {
    /// The port of the listener.
    pub fn local_addr(&self) -> u16 {
        self.listener.port
    }
}

impl Stream for IntoIncoming {
    type Item = io::Result<MemorySocket>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener.poll_accept(cx).map(Some)
    }
}
