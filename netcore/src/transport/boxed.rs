//! `boxed`: a transport with its types erased.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::Transport;
use crate::address::NetworkAddress;

/// The listener stream of a [`BoxedTransport`].
pub type BoxedListener<O, E> =
    BoxStream<'static, Result<(BoxFuture<'static, Result<O, E>>, NetworkAddress), E>>;

trait ErasedTransport<O, E>: Send + Sync {
    fn listen_on(&self, addr: NetworkAddress) -> Result<(BoxedListener<O, E>, NetworkAddress), E>;
    fn dial(&self, addr: NetworkAddress) -> Result<BoxFuture<'static, Result<O, E>>, E>;
}

impl<T> ErasedTransport<T::Output, T::Error> for T
where
    T: Transport + Send + Sync + 'static,
    T::Output: 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(BoxedListener<T::Output, T::Error>, NetworkAddress), T::Error> {
        let (listener, bound) = Transport::listen_on(self, addr)?;
        let listener = listener.map_ok(|(up, addr)| (up.boxed(), addr)).boxed();
        Ok((listener, bound))
    }

    fn dial(
        &self,
        addr: NetworkAddress,
    ) -> Result<BoxFuture<'static, Result<T::Output, T::Error>>, T::Error> {
        Ok(Transport::dial(self, addr)?.boxed())
    }
}

/// A transport of any concrete type yielding `O` or failing with `E`. Cloning it is
/// cheap (an `Arc`).
pub struct BoxedTransport<O, E> {
    inner: Arc<dyn ErasedTransport<O, E>>,
}

impl<O, E> BoxedTransport<O, E> {
    pub(super) fn new<T>(transport: T) -> Self
    where
        T: Transport<Output = O, Error = E> + Send + Sync + 'static,
        T::Output: 'static,
        T::Inbound: 'static,
        T::Outbound: 'static,
        T::Listener: 'static,
    {
        Self {
            inner: Arc::new(transport),
        }
    }
}

impl<O, E> Clone for BoxedTransport<O, E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<O, E> fmt::Debug for BoxedTransport<O, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxedTransport")
    }
}

impl<O, E> Transport for BoxedTransport<O, E>
where
    O: 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    type Output = O;
    type Error = E;
    type Inbound = BoxFuture<'static, Result<O, E>>;
    type Outbound = BoxFuture<'static, Result<O, E>>;
    type Listener = BoxedListener<O, E>;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        self.inner.listen_on(addr)
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        self.inner.dial(addr)
    }
}
