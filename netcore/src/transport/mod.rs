//! The composable `Transport` abstraction and its base transports.
//!
//! A [`Transport`] listens on and dials [`NetworkAddress`]es and yields connections as
//! *upgrade futures*: the listener stream gives one pending inbound upgrade per accepted
//! socket, and `dial` gives one outbound upgrade. Upgrades stack with the
//! [`TransportExt`] combinators, so a full connection pipeline (socket, Noise, handshake,
//! multiplexer) is one transport value, and tests and benches can stack any subset:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use futures::StreamExt;
//! use netcore::transport::{ConnectionOrigin, MemoryTransport, Transport, TransportExt};
//!
//! // An upgrade that learns which side of the connection it runs on.
//! let transport = MemoryTransport::default()
//!     .and_then(|socket, _addr, origin| async move {
//!         Ok::<_, netcore::transport::TransportError>((socket, origin))
//!     })
//!     .boxed();
//!
//! let (mut listener, addr) = transport.listen_on("/memory/0".parse().unwrap()).unwrap();
//! let outbound = transport.dial(addr).unwrap();
//! let (inbound, _remote) = listener.next().await.unwrap().unwrap();
//! let ((_, out_origin), (_, in_origin)) = (outbound.await.unwrap(), inbound.await.unwrap());
//! assert_eq!(out_origin, ConnectionOrigin::Outbound);
//! assert_eq!(in_origin, ConnectionOrigin::Inbound);
//! # });
//! ```

mod and_then;
mod boxed;
mod fault;
mod map;
mod memory;
mod source_filter;
mod tcp;
mod timeout;

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use futures::Stream;

use crate::address::NetworkAddress;

pub use and_then::{AndThen, AndThenFuture, AndThenListener};
pub use boxed::{BoxedListener, BoxedTransport};
pub use fault::{
    FaultController, FaultStats, FaultyListener, FaultyStream, FaultyTransport, FaultyUpgrade,
};
pub use map::{Map, MapFuture, MapListener};
pub use memory::{MemoryListenerStream, MemoryTransport};
pub use source_filter::{FilterRules, MAX_PROGRAM_LEN, Prefix, SourceFilter};
pub use tcp::{DEFAULT_NOTSENT_LOWAT, TcpConfig, TcpInbound, TcpListenerStream, TcpTransport};
pub use timeout::{TimeoutError, TimeoutFuture, TimeoutListener, WithTimeout};

/// Which side opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionOrigin {
    /// The remote dialed us.
    Inbound,
    /// We dialed the remote.
    Outbound,
}

impl ConnectionOrigin {
    /// `"inbound"` or `"outbound"`: the label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionOrigin::Inbound => "inbound",
            ConnectionOrigin::Outbound => "outbound",
        }
    }
}

impl fmt::Display for ConnectionOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The errors of the base transports (TCP and memory).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address is not one this transport can listen on or dial.
    #[error("address {0} is not supported by this transport")]
    UnsupportedAddress(NetworkAddress),
    /// A DNS name resolved to no address of the asked family.
    #[error("DNS name {0} resolved to no usable address")]
    NoAddressResolved(String),
    /// DNS resolution failed.
    #[error("resolving {name}: {source}")]
    Resolve {
        /// The name being resolved.
        name: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A socket operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A way to listen for and dial connections, yielding each as an upgrade future.
///
/// Errors of the listener stream concern one inbound connection only (for example an
/// accept that failed); the stream goes on after them.
pub trait Transport {
    /// What a completed upgrade yields, e.g. a socket or an authenticated session.
    type Output;
    /// Why listening, dialing or an upgrade failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The pending upgrade of an inbound connection.
    type Inbound: Future<Output = Result<Self::Output, Self::Error>> + Send;
    /// The pending upgrade of an outbound connection.
    type Outbound: Future<Output = Result<Self::Output, Self::Error>> + Send;
    /// The stream of inbound connections: each an upgrade and the remote's address.
    type Listener: Stream<Item = Result<(Self::Inbound, NetworkAddress), Self::Error>> + Send;

    /// Listens on `addr`; returns the listener stream and the address actually bound
    /// (port 0 replaced by the port picked).
    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error>;

    /// Starts dialing `addr`; the returned future completes the outbound upgrade.
    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error>;
}

/// Combinators that stack upgrades on any [`Transport`].
pub trait TransportExt: Transport + Sized {
    /// Runs `f` on every connection's output once the inner upgrade completes. `f` sees
    /// the remote address and the [`ConnectionOrigin`], so an upgrade such as Noise can
    /// play the dialer or the listener.
    fn and_then<F, Fut, O, E>(self, f: F) -> AndThen<Self, F>
    where
        F: FnOnce(Self::Output, NetworkAddress, ConnectionOrigin) -> Fut + Clone + Send,
        Fut: Future<Output = Result<O, E>> + Send,
        E: From<Self::Error> + std::error::Error + Send + Sync + 'static,
    {
        AndThen::new(self, f)
    }

    /// Maps every connection's output with `f`, which sees the [`ConnectionOrigin`].
    fn map<F, O>(self, f: F) -> Map<Self, F>
    where
        F: FnOnce(Self::Output, ConnectionOrigin) -> O + Clone + Send,
    {
        Map::new(self, f)
    }

    /// Fails any upgrade, inbound or outbound, that takes longer than `timeout`.
    fn with_timeout(self, timeout: Duration) -> WithTimeout<Self> {
        WithTimeout::new(self, timeout)
    }

    /// Erases the transport's type behind a cloneable [`BoxedTransport`].
    fn boxed(self) -> BoxedTransport<Self::Output, Self::Error>
    where
        Self: Send + Sync + 'static,
        Self::Output: 'static,
        Self::Inbound: 'static,
        Self::Outbound: 'static,
        Self::Listener: 'static,
    {
        BoxedTransport::new(self)
    }
}

impl<T: Transport> TransportExt for T {}
