//! What an application receives: typed [`AppEvent`]s on an [`Events`] stream.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use netcore::PeerId;
use network::{ConnectionId, DisconnectReason, NetworkEvents, ResponseTooLarge, RpcResponder};
use tracing::debug;

use crate::app::{Application, Payload};
use crate::compression::Compression;
use crate::metrics::Metrics;

/// Something that happened on the network, for application `A`. The variants of a
/// kind `A` does not use hold [`Never`](crate::Never): they cannot occur, and a `match`
/// may leave them out.
pub enum AppEvent<A: Application> {
    /// A peer is connected.
    NewPeer(PeerId),
    /// A peer is no longer connected.
    LostPeer {
        /// The peer.
        peer_id: PeerId,
        /// Why its connection ended.
        reason: DisconnectReason,
    },
    /// A one-way message.
    Message {
        /// The sender.
        peer_id: PeerId,
        /// The message.
        msg: A::Message,
    },
    /// A request; answer it through `responder`.
    RpcRequest {
        /// The caller.
        peer_id: PeerId,
        /// The request.
        request: A::Request,
        /// Sends the typed answer back.
        responder: Responder<A::Response>,
    },
}

impl<A: Application> fmt::Debug for AppEvent<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppEvent::NewPeer(peer) => f.debug_tuple("NewPeer").field(peer).finish(),
            AppEvent::LostPeer { peer_id, reason } => f
                .debug_struct("LostPeer")
                .field("peer_id", peer_id)
                .field("reason", reason)
                .finish(),
            AppEvent::Message { peer_id, msg } => f
                .debug_struct("Message")
                .field("peer_id", peer_id)
                .field("msg", msg)
                .finish(),
            AppEvent::RpcRequest {
                peer_id, request, ..
            } => f
                .debug_struct("RpcRequest")
                .field("peer_id", peer_id)
                .field("request", request)
                .finish_non_exhaustive(),
        }
    }
}

/// Answers one inbound request with a typed response. Dropping it unanswered tells the
/// caller the request failed.
pub struct Responder<R> {
    inner: RpcResponder,
    /// How the response travels: as the request did.
    compression: Compression,
    _response: PhantomData<fn(R)>,
}

impl<R: Payload> Responder<R> {
    /// Sends `response` to the caller. A response over the network's message limit is
    /// not sent: the caller gets `RpcError::TooLarge`, and so does this call.
    pub fn respond(self, response: R) -> Result<(), ResponseTooLarge> {
        let encoded = response.to_bytes();
        if self.compression == Compression::None || encoded.len() > self.inner.max_len() {
            // Over the limit, it goes uncompressed to be refused as such: the caller is
            // told `TooLarge`, as this call is.
            return self.inner.respond(encoded);
        }
        self.inner.respond(self.compression.compress(encoded))
    }

    /// Tells the caller the request failed, with a short explanation.
    pub fn fail(self, reason: impl Into<String>) {
        self.inner.fail(reason);
    }
}

impl<R> fmt::Debug for Responder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

/// Events dropped (undecodable, or stale connection events) in one poll before the
/// stream yields to its task's other work: a peer sending garbage as fast as it can must
/// not keep the task from the rest of its work.
const MAX_DROPS_PER_POLL: usize = 64;

/// Which connection of each peer is live, so that a peer is reported up once and down
/// once however its connections are replaced.
#[derive(Debug, Default)]
struct LivePeers(HashMap<PeerId, ConnectionId>);

impl LivePeers {
    /// Connection `conn` of `peer` is up; whether the peer was down until now.
    fn up(&mut self, peer: PeerId, conn: ConnectionId) -> bool {
        self.0.insert(peer, conn).is_none()
    }

    /// Connection `conn` of `peer` is down; whether the peer is now down (false when a
    /// newer connection replaced it).
    fn down(&mut self, peer: PeerId, conn: ConnectionId) -> bool {
        if self.0.get(&peer) == Some(&conn) {
            self.0.remove(&peer);
            true
        } else {
            false
        }
    }
}

/// The stream of application `A`'s events, served fairly across peers.
///
/// Each peer is reported up once (`NewPeer`) and down once (`LostPeer`): when a newer
/// connection replaces an older one, the applications sees neither the replacement's
/// `NewPeer` nor the stale `LostPeer`. Inbound data that does not decode is counted in
/// `validator_network_decode_failures_total` and dropped (an undecodable request is
/// failed back to its caller).
pub struct Events<A: Application> {
    inner: NetworkEvents,
    live: LivePeers,
    metrics: Metrics,
    /// The largest payload, decompressed.
    max_message_size: usize,
    _app: PhantomData<fn() -> A>,
}

impl<A: Application> Events<A> {
    pub(crate) fn new(inner: NetworkEvents, metrics: Metrics, max_message_size: usize) -> Self {
        Self {
            inner,
            live: LivePeers::default(),
            metrics,
            max_message_size,
            _app: PhantomData,
        }
    }

    /// Turns a network event into a typed one, or `None` if it is dropped.
    fn convert(&mut self, event: network::Event) -> Option<AppEvent<A>> {
        match event {
            network::Event::NewPeer(meta) => self
                .live
                .up(meta.peer_id, meta.connection_id)
                .then_some(AppEvent::NewPeer(meta.peer_id)),
            network::Event::LostPeer {
                peer_id,
                connection_id,
                reason,
            } => self
                .live
                .down(peer_id, connection_id)
                .then_some(AppEvent::LostPeer { peer_id, reason }),
            network::Event::Message { peer_id, data, .. } => {
                match self.payload::<A::Message>(data) {
                    Ok(msg) => Some(AppEvent::Message { peer_id, msg }),
                    Err(error) => {
                        self.metrics.decode_failure(A::NAME, "message");
                        debug!(app = A::NAME, peer = %peer_id.short_str(), %error, "dropped an undecodable message");
                        None
                    }
                }
            }
            network::Event::RpcRequest {
                peer_id,
                data,
                responder,
                ..
            } => match self.payload::<A::Request>(data) {
                Ok(request) => Some(AppEvent::RpcRequest {
                    peer_id,
                    request,
                    responder: Responder {
                        inner: responder,
                        compression: A::COMPRESSION,
                        _response: PhantomData,
                    },
                }),
                Err(error) => {
                    self.metrics.decode_failure(A::NAME, "request");
                    debug!(app = A::NAME, peer = %peer_id.short_str(), %error, "refused an undecodable request");
                    responder.fail("undecodable request");
                    None
                }
            },
        }
    }

    /// The payload in `data`, decompressed if `A` compresses.
    fn payload<P: Payload>(&self, data: Bytes) -> Result<P, String> {
        let data = A::COMPRESSION
            .decompress(data, self.max_message_size)
            .map_err(|e| e.to_string())?;
        P::from_bytes(data).map_err(|e| e.to_string())
    }
}

impl<A: Application> Stream for Events<A> {
    type Item = AppEvent<A>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AppEvent<A>>> {
        let this = self.get_mut();
        for _ in 0..MAX_DROPS_PER_POLL {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(event)) => {
                    if let Some(event) = this.convert(event) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A flood of dropped input: let the task's other work run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<A: Application> fmt::Debug for Events<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("app", &A::NAME)
            .field("live_peers", &self.live.0.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: PeerId = PeerId::new([7; 32]);

    #[test]
    fn a_replaced_connection_reports_the_peer_neither_up_again_nor_down() {
        let mut live = LivePeers::default();

        assert!(live.up(PEER, ConnectionId(1)));
        assert!(!live.up(PEER, ConnectionId(2)));
        assert!(!live.down(PEER, ConnectionId(1)));
        assert!(live.down(PEER, ConnectionId(2)));
    }

    #[test]
    fn a_stale_loss_arriving_after_the_new_connection_is_ignored_in_either_order() {
        let mut live = LivePeers::default();
        live.up(PEER, ConnectionId(1));

        // The old connection's loss first, then the new connection.
        assert!(live.down(PEER, ConnectionId(1)));
        assert!(live.up(PEER, ConnectionId(2)));
        assert!(!live.down(PEER, ConnectionId(1)));
    }
}
