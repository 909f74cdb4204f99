//! `with_timeout`: a deadline on every upgrade.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;

use super::Transport;
use crate::address::NetworkAddress;

/// An upgrade failed or ran out of time.
#[derive(Debug, thiserror::Error)]
pub enum TimeoutError<E> {
    /// The upgrade did not complete within the deadline.
    #[error("upgrade timed out after {0:?}")]
    Timeout(Duration),
    /// The inner transport failed.
    #[error(transparent)]
    Transport(E),
}

/// A transport whose upgrades fail with [`TimeoutError::Timeout`] past a deadline. See
/// [`TransportExt::with_timeout`](super::TransportExt::with_timeout).
#[derive(Debug, Clone)]
pub struct WithTimeout<T> {
    inner: T,
    timeout: Duration,
}

impl<T> WithTimeout<T> {
    pub(super) fn new(inner: T, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<T: Transport> Transport for WithTimeout<T> {
    type Output = T::Output;
    type Error = TimeoutError<T::Error>;
    type Inbound = TimeoutFuture<T::Inbound>;
    type Outbound = TimeoutFuture<T::Outbound>;
    type Listener = TimeoutListener<T::Listener>;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let (inner, bound) = self
            .inner
            .listen_on(addr)
            .map_err(TimeoutError::Transport)?;
        Ok((
            TimeoutListener {
                inner,
                timeout: self.timeout,
            },
            bound,
        ))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let inner = self.inner.dial(addr).map_err(TimeoutError::Transport)?;
        Ok(TimeoutFuture::new(inner, self.timeout))
    }
}

pin_project! {
    /// The listener stream of [`WithTimeout`].
    #[derive(Debug)]
    pub struct TimeoutListener<S> {
        #[pin]
        inner: S,
        timeout: Duration,
    }
}

impl<S, Up, E> Stream for TimeoutListener<S>
where
    S: Stream<Item = Result<(Up, NetworkAddress), E>>,
    Up: Future,
{
    type Item = Result<(TimeoutFuture<Up>, NetworkAddress), TimeoutError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let timeout = *this.timeout;
        let item = ready!(this.inner.poll_next(cx));
        Poll::Ready(item.map(|r| {
            r.map(|(up, addr)| (TimeoutFuture::new(up, timeout), addr))
                .map_err(TimeoutError::Transport)
        }))
    }
}

pin_project! {
    /// The upgrade future of [`WithTimeout`]. The clock starts when the future is made,
    /// i.e. when the connection is accepted or the dial starts.
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        timeout: Duration,
    }
}

impl<F: std::future::Future> TimeoutFuture<F> {
    fn new(inner: F, timeout: Duration) -> Self {
        Self {
            inner: tokio::time::timeout(timeout, inner),
            timeout,
        }
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, TimeoutError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(result) => result.map_err(TimeoutError::Transport),
            Err(_) => Err(TimeoutError::Timeout(*this.timeout)),
        })
    }
}
