//! TCP: listens on IPv4 and IPv6, dials IPv4, IPv6 and DNS names.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

use super::source_filter::{Insn, SourceFilter, Subscription, compile, max_program_len};
use super::{Transport, TransportError};
use crate::address::{Endpoint, Host, NetworkAddress};

/// Connections a listening socket queues before the application accepts them: the
/// common Linux `somaxconn` default, so a burst of dials from a whole validator set at
/// start-up is not refused.
const LISTEN_BACKLOG: i32 = 4096;

/// Socket options applied to every TCP connection, inbound and outbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Disables Nagle's algorithm. On by default: the layers above coalesce writes
    /// themselves, so Nagle only adds latency to small messages.
    pub nodelay: bool,
    /// TCP keepalive idle time; `None` leaves keepalive off. Off by default: the
    /// health checker detects dead peers at the application level.
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF`; `None` keeps the kernel's auto-tuning.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF`; `None` keeps the kernel's auto-tuning.
    pub send_buffer_size: Option<usize>,
    /// `TCP_NOTSENT_LOWAT` (Linux and Android): the kernel takes more bytes only while
    /// fewer than this are waiting to be sent (bytes sent and not yet acknowledged do
    /// not count). `None` keeps the kernel's default (no limit: the autotuned send buffer, megabytes, may
    /// queue in front of the next message). Default [`DEFAULT_NOTSENT_LOWAT`].
    pub notsent_lowat: Option<u32>,
}

/// Default [`TcpConfig::notsent_lowat`]. Bytes the kernel has not sent yet sit in front
/// of every message written after them, whatever its priority; the multiplexer orders
/// frames by priority only while they are still its own. With this much unsent at
/// most, a consensus message waits behind about 1 ms of bulk at 1 Gbit/s (10 ms at 100
/// Mbit/s) in the kernel, and the kernel still always has a frame ready when the
/// congestion window opens.
pub const DEFAULT_NOTSENT_LOWAT: u32 = 128 * 1024;

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            keepalive: None,
            recv_buffer_size: None,
            send_buffer_size: None,
            notsent_lowat: Some(DEFAULT_NOTSENT_LOWAT),
        }
    }
}

impl TcpConfig {
    fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let sock = SockRef::from(stream);
        sock.set_tcp_nodelay(self.nodelay)?;
        // Linux and Android only (where socket2 offers it); elsewhere the kernel's
        // default stands.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(lowat) = self.notsent_lowat {
            sock.set_tcp_notsent_lowat(lowat)?;
        }
        if let Some(idle) = self.keepalive {
            sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
        }
        self.apply_buffers(&sock)
    }

    fn apply_buffers(&self, sock: &SockRef<'_>) -> io::Result<()> {
        if let Some(size) = self.recv_buffer_size {
            sock.set_recv_buffer_size(size)?;
        }
        if let Some(size) = self.send_buffer_size {
            sock.set_send_buffer_size(size)?;
        }
        Ok(())
    }
}

/// The TCP transport. Its output is a [`TcpStream`] with [`TcpConfig`] applied.
///
/// `listen_on` and `dial` must run inside a tokio runtime with I/O enabled.
#[derive(Clone, Debug, Default)]
pub struct TcpTransport {
    /// Options for every connection.
    pub config: TcpConfig,
    /// Sources whose SYNs the listeners drop before accepting (none by default).
    source_filter: Option<SourceFilter>,
}

impl TcpTransport {
    /// A TCP transport with the given options.
    pub fn new(config: TcpConfig) -> Self {
        Self {
            config,
            source_filter: None,
        }
    }

    /// Every listener of this transport applies the rules of `filter` to its socket,
    /// and follows their changes (see [`SourceFilter`]).
    pub fn with_source_filter(mut self, filter: SourceFilter) -> Self {
        self.source_filter = Some(filter);
        self
    }
}

fn bind(addr: SocketAddr, config: &TcpConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `/ip6/::` listens on IPv6 only, so that `/ip4/0.0.0.0` can bind beside it.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    config.apply_buffers(&SockRef::from(&socket))?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

impl Transport for TcpTransport {
    type Output = TcpStream;
    type Error = TransportError;
    type Inbound = TcpInbound;
    type Outbound = BoxFuture<'static, Result<TcpStream, TransportError>>;
    type Listener = TcpListenerStream;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let ip: IpAddr = match addr.endpoint() {
            Endpoint::Tcp {
                host: Host::Ip4(ip),
                ..
            } => (*ip).into(),
            Endpoint::Tcp {
                host: Host::Ip6(ip),
                ..
            } => (*ip).into(),
            _ => return Err(TransportError::UnsupportedAddress(addr)),
        };
        let listener = bind(SocketAddr::new(ip, addr.port()), &self.config)?;
        let bound = NetworkAddress::from_socket_addr(listener.local_addr()?);
        Ok((
            TcpListenerStream {
                listener,
                config: self.config.clone(),
                filter: self
                    .source_filter
                    .as_ref()
                    .map(|f| ListenerFilter::new(f, ip.is_ipv6())),
            },
            bound,
        ))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let Endpoint::Tcp { host, port } = addr.endpoint().clone() else {
            return Err(TransportError::UnsupportedAddress(addr));
        };
        let config = self.config.clone();
        Ok(Box::pin(async move {
            let candidates = resolve(&host, port).await?;
            let mut last_error = None;
            for candidate in candidates {
                match TcpStream::connect(candidate).await {
                    Ok(stream) => {
                        config.apply(&stream)?;
                        return Ok(stream);
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            Err(match last_error {
                Some(e) => TransportError::Io(e),
                None => TransportError::NoAddressResolved(host.to_string()),
            })
        }))
    }
}

/// The socket addresses to try for `host`, in resolver order.
async fn resolve(host: &Host, port: u16) -> Result<Vec<SocketAddr>, TransportError> {
    let (name, keep): (_, fn(&SocketAddr) -> bool) = match host {
        Host::Ip4(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        Host::Ip6(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        Host::Dns(name) => (name, |_| true),
        Host::Dns4(name) => (name, SocketAddr::is_ipv4),
        Host::Dns6(name) => (name, SocketAddr::is_ipv6),
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|source| TransportError::Resolve {
            name: name.to_string(),
            source,
        })?
        .filter(keep)
        .collect();
    if resolved.is_empty() {
        return Err(TransportError::NoAddressResolved(name.to_string()));
    }
    Ok(resolved)
}

/// The listener stream of [`TcpTransport`]. Accept errors are yielded and the stream
/// goes on.
#[derive(Debug)]
pub struct TcpListenerStream {
    listener: TcpListener,
    config: TcpConfig,
    filter: Option<ListenerFilter>,
}

/// A listener's socket filter: the rules it follows and how large a program it may
/// hold.
#[derive(Debug)]
struct ListenerFilter {
    subscription: Subscription,
    /// An IPv6-only socket (IPv4 rules do not apply to it).
    v6: bool,
    /// The longest program the kernel will take for this socket.
    max_len: usize,
    /// The last attach failed (logged once until one succeeds).
    failing: bool,
}

impl ListenerFilter {
    fn new(filter: &SourceFilter, v6: bool) -> Self {
        Self {
            subscription: filter.subscribe(),
            v6,
            max_len: max_program_len(optmem_max()),
            failing: false,
        }
    }

    /// Applies the rules to `listener` if they changed. A program the kernel refuses
    /// (its option memory is short, e.g. while the old program is still charged) is
    /// tried again after removing the old one; if it still fails, the socket is left
    /// with no filter, so refusals happen at accept rather than by stale rules.
    fn refresh(&mut self, listener: &TcpListener, cx: &Context<'_>) {
        let Some(rules) = self.subscription.poll_changed(cx.waker()) else {
            return;
        };
        let program = compile(&rules, self.v6, self.max_len);
        let result = match &program {
            Some((program, _)) => attach(listener, program).or_else(|_| {
                detach(listener)?;
                attach(listener, program)
            }),
            None => detach(listener),
        };
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("the listener's socket filter applies again");
            }
            Ok(()) => {}
            Err(error) => {
                let _ = detach(listener);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(%error, "could not set the listener's socket filter; refusing at accept until it can be set");
                }
            }
        }
    }
}

/// `net.core.optmem_max`, the option memory a socket may hold; the common default if
/// it cannot be read.
fn optmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/optmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(20 * 1024)
}

/// Attaches `program` to the listening socket, replacing the one there.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn attach(listener: &TcpListener, program: &[Insn]) -> io::Result<()> {
    let program: Vec<socket2::SockFilter> = program
        .iter()
        .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    SockRef::from(listener).attach_filter(&program)
}

/// Removes the socket's program, if it has one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn detach(socket: &impl std::os::fd::AsFd) -> io::Result<()> {
    match SockRef::from(socket).detach_filter() {
        // No program to remove: nothing to undo.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Socket filters are a Linux feature: elsewhere the rules are kept and never applied.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn attach(_: &TcpListener, _: &[Insn]) -> io::Result<()> {
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn detach<T>(_: &T) -> io::Result<()> {
    Ok(())
}

impl Stream for TcpListenerStream {
    type Item = Result<(TcpInbound, NetworkAddress), TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(filter) = &mut this.filter {
            filter.refresh(&this.listener, cx);
        }
        let (stream, remote) = match this.listener.poll_accept(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Ok(accepted)) => accepted,
        };
        let inbound = TcpInbound {
            stream: Some(stream),
            config: this.config.clone(),
            detach_filter: this.filter.is_some(),
        };
        Poll::Ready(Some(Ok((
            inbound,
            NetworkAddress::from_socket_addr(remote),
        ))))
    }
}

/// An accepted TCP socket; [`TcpConfig`] is applied when it is first polled.
///
/// Dropped before that, it resets the connection (`SO_LINGER` of zero): a socket
/// refused on its address alone (admission) gets no socket options, no FIN exchange and
/// leaves no `TIME_WAIT` behind, which keeps the cost of refusing a flood of sockets
/// to the accept and the close.
#[derive(Debug)]
pub struct TcpInbound {
    stream: Option<TcpStream>,
    config: TcpConfig,
    /// The socket may have inherited the listener's filter (the one in force when its
    /// handshake completed), which is for SYNs only: it is removed so the connection's
    /// packets do not run it.
    detach_filter: bool,
}

impl Future for TcpInbound {
    type Output = Result<TcpStream, TransportError>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(stream) = self.stream.take() else {
            return Poll::Ready(Err(TransportError::Io(io::Error::other(
                "inbound TCP socket polled after completion",
            ))));
        };
        if self.detach_filter {
            // Best effort: the program passes every packet but a SYN anyway.
            let _ = detach(&stream);
        }
        Poll::Ready(match self.config.apply(&stream) {
            Ok(()) => Ok(stream),
            Err(e) => Err(e.into()),
        })
    }
}

impl Drop for TcpInbound {
    fn drop(&mut self) {
        if let Some(stream) = &self.stream {
            // Best effort: if the option cannot be set, the close is a graceful one.
            let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
    }
}
