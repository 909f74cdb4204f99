//! The in-memory transport over `memsocket`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::future::{Ready, ready};
use memsocket::{IntoIncoming, MemoryListener, MemorySocket};

use super::{Transport, TransportError};
use crate::address::{Endpoint, NetworkAddress};

/// The in-memory transport: `/memory/<port>` addresses, [`MemorySocket`] connections.
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    /// Bytes buffered per direction on each connection this transport's listeners accept.
    pub capacity: usize,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self {
            capacity: memsocket::DEFAULT_CAPACITY,
        }
    }
}

impl Transport for MemoryTransport {
    type Output = MemorySocket;
    type Error = TransportError;
    type Inbound = Ready<Result<MemorySocket, TransportError>>;
    type Outbound = Ready<Result<MemorySocket, TransportError>>;
    type Listener = MemoryListenerStream;

    fn listen_on(
        &self,
        addr: NetworkAddress,
    ) -> Result<(Self::Listener, NetworkAddress), Self::Error> {
        let Endpoint::Memory(port) = *addr.endpoint() else {
            return Err(TransportError::UnsupportedAddress(addr));
        };
        let listener = MemoryListener::bind_with(port, self.capacity, memsocket::DEFAULT_BACKLOG)?;
        let bound = NetworkAddress::memory(listener.local_addr());
        Ok((
            MemoryListenerStream {
                incoming: listener.into_incoming(),
            },
            bound,
        ))
    }

    fn dial(&self, addr: NetworkAddress) -> Result<Self::Outbound, Self::Error> {
        let Endpoint::Memory(port) = *addr.endpoint() else {
            return Err(TransportError::UnsupportedAddress(addr));
        };
        Ok(ready(MemorySocket::connect(port).map_err(Into::into)))
    }
}

/// The listener stream of [`MemoryTransport`]. Dialers have no port of their own, so
/// every inbound connection reports the remote address `/memory/0`.
#[derive(Debug)]
pub struct MemoryListenerStream {
    incoming: IntoIncoming,
}

impl Stream for MemoryListenerStream {
    type Item =
        Result<(Ready<Result<MemorySocket, TransportError>>, NetworkAddress), TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let incoming = Pin::new(&mut self.incoming);
        incoming.poll_next(cx).map(|item| {
            item.map(|r| {
                r.map(|socket| (ready(Ok(socket)), NetworkAddress::memory(0)))
                    .map_err(Into::into)
            })
        })
    }
}
