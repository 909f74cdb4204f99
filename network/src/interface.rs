//! What an application holds: a cloneable [`NetworkSender`] and a stream of [`Event`]s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use netcore::{NetworkAddress, PeerId};
use tokio::sync::oneshot;

use crate::channel::{FairQueue, Weighted};
use crate::connection::{ConnectionId, ConnectionMetadata, DisconnectReason};
use crate::error::{DialError, DisconnectError, ResponseTooLarge, RpcError, SendError};
use crate::protocol_id::ProtocolId;
use crate::protocols::{direct_send, rpc};
use crate::reputation::Misbehaviour;
use crate::requests::Request;
use crate::shared::Shared;

/// Something that happened on the network that an application registered for.
#[derive(Debug)]
pub enum Event {
    /// A connection to a peer is up. The metadata is shared by every application's
    /// copy of the event (and keeps events small: they move through queues by value).
    /// When it replaces the peer's live connection, this event comes first and the old
    /// connection's `LostPeer` with [`DisconnectReason::Replaced`] after it, so an
    /// application that tracks each peer's live connection sees the peer stay up.
    NewPeer(Arc<ConnectionMetadata>),
    /// The connection to a peer is gone.
    LostPeer {
        /// The peer.
        peer_id: PeerId,
        /// The connection that ended (a newer one may already be up).
        connection_id: ConnectionId,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// A DirectSend message.
    Message {
        /// The sender.
        peer_id: PeerId,
        /// The protocol it came on.
        protocol: ProtocolId,
        /// The payload.
        data: Bytes,
    },
    /// An RPC request; answer it through `responder`.
    RpcRequest {
        /// The caller.
        peer_id: PeerId,
        /// The protocol it came on.
        protocol: ProtocolId,
        /// The request payload.
        data: Bytes,
        /// Sends the answer back.
        responder: RpcResponder,
    },
}

/// Answers one inbound RPC. Dropping it without answering tells the caller the request
/// got no response.
///
/// The answer of a request whose caller had finished sending is written into the
/// substream by `respond` or `fail` itself (or by the drop), on the calling thread,
/// without waiting; only a response larger than the caller's flow-control window leaves
/// the rest to a task.
#[derive(Debug)]
pub struct RpcResponder {
    pub(crate) reply: rpc::Reply,
    /// The payload limit (`max_message_size`), the same as for requests.
    pub(crate) max: usize,
}

impl RpcResponder {
    /// Sends `response` to the caller. A response over the network's
    /// `max_message_size` is not sent: the caller gets [`RpcError::TooLarge`] with its
    /// size, and so does this call.
    ///
    /// [`RpcError::TooLarge`]: crate::RpcError::TooLarge
    pub fn respond(self, response: Bytes) -> Result<(), ResponseTooLarge> {
        let (len, max) = (response.len(), self.max);
        if len > max {
            self.reply.send(rpc::Answer::TooLarge { len, max });
            return Err(ResponseTooLarge { len, max });
        }
        self.reply.send(rpc::Answer::Data(response));
        Ok(())
    }

    /// Tells the caller the request failed, with a short explanation (cut at 1 KiB).
    pub fn fail(self, reason: impl Into<String>) {
        self.reply.send(rpc::Answer::Failed(reason.into()));
    }
}

/// The key events are queued under: a peer and, for data, the protocol. Connection
/// events use `None`, so they never wait in a queue behind a peer's messages; like
/// every key, only for the other keys' turns, each at most
/// [`crate::channel::TURN_WEIGHT`] messages (or, arriving while the application takes
/// one reader's batch alone, for the rest of that batch).
pub(crate) type EventKey = (PeerId, Option<ProtocolId>);

/// What an application's queue holds: events, and DirectSend messages as their reader
/// read them, turned into events only when the application takes them (moving one
/// buffer between tasks rather than an event per message).
pub(crate) enum Queued {
    /// An event as it is handed out.
    Event(Event),
    /// Messages of one DirectSend substream.
    Messages(direct_send::MessageBatch),
}

impl Weighted for Queued {
    fn weight(&self) -> usize {
        match self {
            Queued::Event(_) => 1,
            Queued::Messages(batch) => batch.len().max(1),
        }
    }

    fn split_off(&mut self, weight: usize) -> Option<Self> {
        match self {
            Queued::Event(_) => None,
            Queued::Messages(batch) => batch.split_off(weight).map(Queued::Messages),
        }
    }
}

/// The stream of an application's events, served round-robin across peers so that one
/// flooding peer cannot starve the others.
pub struct NetworkEvents {
    pub(crate) queue: FairQueue<EventKey, Queued>,
    /// The DirectSend messages being handed out, one event each.
    pub(crate) messages: Option<direct_send::MessageBatch>,
}

impl Stream for NetworkEvents {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            if let Some(batch) = &mut this.messages {
                if let Some(event) = batch.next_event() {
                    return Poll::Ready(Some(event));
                }
                this.messages = None;
            }
            match std::task::ready!(Pin::new(&mut this.queue).poll_next(cx)) {
                Some(Queued::Event(event)) => return Poll::Ready(Some(event)),
                Some(Queued::Messages(batch)) => this.messages = Some(batch),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// An application's handle to the network: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct NetworkSender {
    pub(crate) shared: Arc<Shared>,
}

impl NetworkSender {
    /// Sends `request` to `peer` over `protocol` and waits for the answer, at most
    /// `timeout`. Dropping the future cancels the request (its substream is reset).
    pub async fn rpc(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        rpc::outbound(&self.shared, peer, protocol, request, timeout).await
    }

    /// Queues `msg` for `peer` over `protocol`. Messages to one peer on one protocol
    /// arrive in order; when that peer's queue is full the message is dropped, counted,
    /// and [`SendError::QueueFull`] returned. Delivery is at most once: a message
    /// accepted here reaches the peer's application or is counted in
    /// `network_queue_drops_total{queue=<protocol>}` (`stream_failed`, or `unconfirmed`
    /// when the connection ended before the peer acknowledged it).
    pub fn send_to(&self, peer: PeerId, protocol: ProtocolId, msg: Bytes) -> Result<(), SendError> {
        direct_send::send(&self.shared, peer, protocol, msg)
    }

    /// Queues `msg` for each of `peers`; returns the peers it could not be queued for.
    pub fn send_to_many(
        &self,
        peers: impl IntoIterator<Item = PeerId>,
        protocol: ProtocolId,
        msg: Bytes,
    ) -> Vec<(PeerId, SendError)> {
        peers
            .into_iter()
            .filter_map(|peer| {
                direct_send::send(&self.shared, peer, protocol, msg.clone())
                    .err()
                    .map(|e| (peer, e))
            })
            .collect()
    }

    /// Dials `addr`, which must name the peer (`/p2p/<id>`). Succeeds once a connection
    /// to that peer is up (or already was).
    pub async fn dial(&self, addr: NetworkAddress) -> Result<(), DialError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Dial(addr, tx))
            .await
            .map_err(|_| DialError::Shutdown)?;
        rx.await.map_err(|_| DialError::Shutdown)?
    }

    /// Closes the connection to `peer` gracefully.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), DisconnectError> {
        self.disconnect_with_reason(peer, DisconnectReason::Requested)
            .await
    }

    /// Closes the connection to `peer`, reporting `reason` in the `LostPeer` event.
    pub async fn disconnect_with_reason(
        &self,
        peer: PeerId,
        reason: DisconnectReason,
    ) -> Result<(), DisconnectError> {
        self.request_disconnect(peer, None, reason).await
    }

    /// Closes connection `connection` of `peer`, if it is still the peer's live one: a
    /// verdict about one connection (a failed health check) never closes the
    /// connection that replaced it. Fails with [`DisconnectError::StaleConnection`]
    /// when a newer connection is live.
    pub async fn disconnect_connection(
        &self,
        peer: PeerId,
        connection: ConnectionId,
        reason: DisconnectReason,
    ) -> Result<(), DisconnectError> {
        self.request_disconnect(peer, Some(connection), reason)
            .await
    }

    async fn request_disconnect(
        &self,
        peer: PeerId,
        connection: Option<ConnectionId>,
        reason: DisconnectReason,
    ) -> Result<(), DisconnectError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Disconnect {
                peer,
                connection,
                reason,
                reply,
            })
            .await
            .map_err(|_| DisconnectError::Shutdown)?;
        rx.await.map_err(|_| DisconnectError::Shutdown)?
    }

    /// The live connections.
    pub fn connected_peers(&self) -> Vec<ConnectionMetadata> {
        self.shared
            .peers
            .read()
            .values()
            .map(|p| p.metadata.clone())
            .collect()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.shared.peers.read().contains_key(peer)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local_peer_id
    }

    /// Reports that `peer` misbehaved (e.g. sent a message the application could not
    /// decode, or a note with a bad signature). The penalty of `misbehaviour` (see
    /// [`crate::reputation::PenaltyTable`]) is added to the peer's score; past the ban
    /// threshold the peer is disconnected (`LostPeer` with [`DisconnectReason::Banned`])
    /// and its connections and dials are refused until the ban ends. Never waits.
    pub fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) {
        self.shared.report(peer, misbehaviour);
    }

    /// How long `peer` stays banned, or `None` if it is not banned.
    pub fn ban_remaining(&self, peer: &PeerId) -> Option<Duration> {
        let now = tokio::time::Instant::now().into_std();
        self.shared
            .reputation
            .lock()
            .banned_until(peer, now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// `peer`'s reputation score now (0: no recent misbehaviour; banned at
    /// [`crate::reputation::ReputationConfig::ban_threshold`]).
    pub fn reputation_score(&self, peer: &PeerId) -> u32 {
        let now = tokio::time::Instant::now().into_std();
        self.shared.reputation.lock().score(peer, now)
    }
}
