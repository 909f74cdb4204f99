//! `map`: a synchronous transformation of every connection's output.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Stream;
use pin_project_lite::pin_project;

use super::{ConnectionOrigin, Transport};
use crate::address::NetworkAddress;

/// A transport whose outputs pass through `f`. See
/// [`TransportExt::map`](super::TransportExt::map).
#[derive(Debug, Clone)]
pub struct Map<T, F> {
    inner: T,
    f: F,
}

impl<T, F> Map<T, F> {
    pub(super) fn new(inner: T, f: F) -> Self {
        Self { inner, f }
    }
}

impl<T, F, O> Transport for Map<T, F>
where
    T: Transport,
    F: FnOnce(T::Output, ConnectionOrigin) -> O + Clone + Send,
{
    type Output = O;
    type Error = T::Error;
    type Inbound = MapFuture<T::Inbound, F>;
    type Outbound = MapFuture<T::Outbound, F>;
    type Listener = MapListener<T::Listener, F>;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let (inner, bound) = self.inner.listen_on(addr)?;
        Ok((
            MapListener {
                inner,
                f: self.f.clone(),
            },
            bound,
        ))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        Ok(MapFuture {
            inner: self.inner.dial(addr)?,
            f: Some(self.f.clone()),
            origin: ConnectionOrigin::Outbound,
        })
    }
}

pin_project! {
    /// The listener stream of [`Map`].
    #[derive(Debug)]
    pub struct MapListener<S, F> {
        #[pin]
        inner: S,
        f: F,
    }
}

impl<S, Up, E, F> Stream for MapListener<S, F>
where
    S: Stream<Item = Result<(Up, NetworkAddress), E>>,
    Up: Future,
    F: Clone,
{
    type Item = Result<(MapFuture<Up, F>, NetworkAddress), E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = ready!(this.inner.poll_next(cx));
        Poll::Ready(item.map(|r| {
            r.map(|(inner, addr)| {
                let fut = MapFuture {
                    inner,
                    f: Some(this.f.clone()),
                    origin: ConnectionOrigin::Inbound,
                };
                (fut, addr)
            })
        }))
    }
}

pin_project! {
    /// The upgrade future of [`Map`].
    #[derive(Debug)]
    pub struct MapFuture<Up, F> {
        #[pin]
        inner: Up,
        f: Option<F>,
        origin: ConnectionOrigin,
    }
}

impl<Up, F, T, E, O> Future for MapFuture<Up, F>
where
    Up: Future<Output = Result<T, E>>,
    F: FnOnce(T, ConnectionOrigin) -> O,
{
    type Output = Result<O, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx))?;
        let f = this.f.take().expect("MapFuture polled after it completed");
        Poll::Ready(Ok(f(output, *this.origin)))
    }
}
