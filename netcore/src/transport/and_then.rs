//! `and_then`: an upgrade step run after the inner transport's upgrade.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::Stream;
use pin_project_lite::pin_project;

use super::{ConnectionOrigin, Transport};
use crate::address::NetworkAddress;

/// A transport whose upgrades run `f` after the inner transport's. See
/// [`TransportExt::and_then`](super::TransportExt::and_then).
#[derive(Debug, Clone)]
pub struct AndThen<T, F> {
    inner: T,
    f: F,
}

impl<T, F> AndThen<T, F> {
    pub(super) fn new(inner: T, f: F) -> Self {
        Self { inner, f }
    }
}

impl<T, F, Fut, O, E> Transport for AndThen<T, F>
where
    T: Transport,
    F: FnOnce(T::Output, NetworkAddress, ConnectionOrigin) -> Fut + Clone + Send,
    Fut: Future<Output = Result<O, E>> + Send,
    E: From<T::Error> + std::error::Error + Send + Sync + 'static,
{
    type Output = O;
    type Error = E;
    type Inbound = AndThenFuture<T::Inbound, Fut, F>;
    type Outbound = AndThenFuture<T::Outbound, Fut, F>;
    type Listener = AndThenListener<T::Listener, F>;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let (inner, bound) = self.inner.listen_on(addr)?;
        Ok((
            AndThenListener {
                inner,
                f: self.f.clone(),
            },
            bound,
        ))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let fut = self.inner.dial(addr.clone())?;
        Ok(AndThenFuture::new(
            fut,
            self.f.clone(),
            addr,
            ConnectionOrigin::Outbound,
        ))
    }
}

pin_project! {
    /// The listener stream of [`AndThen`].
    #[derive(Debug)]
    pub struct AndThenListener<S, F> {
        #[pin]
        inner: S,
        f: F,
    }
}

impl<S, F, Up, T, E0, Fut, O, E> Stream for AndThenListener<S, F>
where
    S: Stream<Item = Result<(Up, NetworkAddress), E0>>,
    Up: Future<Output = Result<T, E0>>,
    F: FnOnce(T, NetworkAddress, ConnectionOrigin) -> Fut + Clone,
    Fut: Future<Output = Result<O, E>>,
    E: From<E0>,
{
    type Item = Result<(AndThenFuture<Up, Fut, F>, NetworkAddress), E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match ready!(this.inner.poll_next(cx)) {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(E::from(e)))),
            Some(Ok((upgrade, addr))) => {
                let fut = AndThenFuture::new(
                    upgrade,
                    this.f.clone(),
                    addr.clone(),
                    ConnectionOrigin::Inbound,
                );
                Poll::Ready(Some(Ok((fut, addr))))
            }
        }
    }
}

pin_project! {
    /// The upgrade future of [`AndThen`]: the inner upgrade, then `f`.
    #[derive(Debug)]
    pub struct AndThenFuture<Up, Fut, F> {
        #[pin]
        state: State<Up, Fut, F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<Up, Fut, F> {
        // Waiting for the inner upgrade; `step` is what runs next.
        First {
            #[pin]
            upgrade: Up,
            step: Option<(F, NetworkAddress, ConnectionOrigin)>,
        },
        // Running `f`.
        Second {
            #[pin]
            fut: Fut,
        },
    }
}

impl<Up, Fut, F> AndThenFuture<Up, Fut, F> {
    fn new(upgrade: Up, f: F, addr: NetworkAddress, origin: ConnectionOrigin) -> Self {
        Self {
            state: State::First {
                upgrade,
                step: Some((f, addr, origin)),
            },
        }
    }
}

impl<Up, Fut, F, T, E0, O, E> Future for AndThenFuture<Up, Fut, F>
where
    Up: Future<Output = Result<T, E0>>,
    F: FnOnce(T, NetworkAddress, ConnectionOrigin) -> Fut,
    Fut: Future<Output = Result<O, E>>,
    E: From<E0>,
{
    type Output = Result<O, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::First { upgrade, step } => {
                    let output = ready!(upgrade.poll(cx)).map_err(E::from)?;
                    let (f, addr, origin) = step
                        .take()
                        .expect("AndThenFuture polled after its upgrade failed");
                    let fut = f(output, addr, origin);
                    state.set(State::Second { fut });
                }
                StateProj::Second { fut } => return fut.poll(cx),
            }
        }
    }
}
