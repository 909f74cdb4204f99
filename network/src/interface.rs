//! What an application holds: a cloneable [`NetworkSender`] and a stream of [`Event`]s.
//! The events and the RPC responder are the protocols'; this module hands them out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use netcore::{NetworkAddress, PeerId};
use tokio::sync::oneshot;

use crate::channel::FairQueue;
use crate::connection::{ConnectionId, ConnectionMetadata, DisconnectReason};
use crate::error::{DialError, DisconnectError, RpcError, SendError};
use crate::protocol_id::ProtocolId;
pub use crate::protocols::events::Event;
use crate::protocols::events::{Delivery, EventKey};
pub use crate::protocols::rpc::RpcResponder;
use crate::protocols::{direct_send, rpc};
use crate::reputation::Misbehaviour;
use crate::requests::Request;
use crate::shared::Shared;

/// The stream of an application's events, served round-robin across peers so that one
/// flooding peer cannot starve the others.
pub struct NetworkEvents {
    pub(crate) queue: FairQueue<EventKey, Delivery>,
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
                Some(Delivery::Event(event)) => return Poll::Ready(Some(event)),
                Some(Delivery::Messages(batch)) => this.messages = Some(batch),
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
        let handle = self.shared.peer(&peer);
        rpc::outbound(
            &self.shared.protocols,
            peer,
            handle,
            protocol,
            request,
            timeout,
        )
        .await
    }

    /// Queues `msg` as [`send_to`](Self::send_to) does and returns a [`Sent`] future,
    /// ready once the message's last byte (and the rest of the batch the writer took it
    /// in) has been taken by the connection for its socket: the rest of the way is the socket's (on TCP at most
    /// `TCP_NOTSENT_LOWAT` unsent bytes, 128 KiB by default, plus one write batch of the
    /// multiplexer). For a node that sends a large message to many peers: sent one
    /// after another, nearest first, each waiting for the last to be sent, the k-th
    /// peer has it after about k copies' time on the uplink, where sent all at once
    /// every copy shares the uplink and all finish together. Slower than `send_to` for
    /// small messages (a table lookup and a receipt per message).
    pub fn send_to_tracked(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        msg: Bytes,
    ) -> Result<Sent, SendError> {
        direct_send::send_tracked(
            &self.shared.protocols,
            &self.shared.peers,
            peer,
            protocol,
            msg,
        )
        .map(|receipt| Sent { receipt })
    }

    /// The round-trip time to `peer`: the smallest its connection measured (the
    /// multiplexer's RTT probe, at the start and every 10 s), which is the path's own;
    /// a later probe may wait behind bulk data. `None` if not connected or not yet
    /// measured.
    pub fn rtt(&self, peer: PeerId) -> Option<Duration> {
        self.shared.peer(&peer)?.control.min_rtt()
    }

    /// Sends `msg` to every peer of `peers` over `protocol` (each once), nearest first
    /// (by [`rtt`](Self::rtt); unmeasured ones last), as tracked sends
    /// ([`send_to_tracked`](Self::send_to_tracked)) [`IN_ORDER_WINDOW`] at a time: a
    /// copy starts when an earlier one went to its socket, or after
    /// [`IN_ORDER_PATIENCE`] if it has not (a peer that does not read holds its copy
    /// queued, not the others). For a large message to many peers (a proposal): the
    /// k-th nearest has it after about k copies' time on the uplink, where copies
    /// queued at once share it and all finish together.
    ///
    /// Returns the peers whose copy could not be queued or was lost, with why, once
    /// every copy went to its socket or was waited for `IN_ORDER_PATIENCE`. Dropping
    /// the future part-way leaves the copies queued so far queued and sends no more.
    pub async fn send_nearest_first(
        &self,
        peers: &[PeerId],
        protocol: ProtocolId,
        msg: Bytes,
    ) -> Vec<(PeerId, SendError)> {
        use futures::StreamExt;
        let mut order: Vec<(Duration, PeerId)> = peers
            .iter()
            .map(|p| (self.rtt(*p).unwrap_or(Duration::MAX), *p))
            .collect();
        order.sort_unstable();
        order.dedup_by_key(|(_, peer)| *peer);
        let mut failed = Vec::new();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        for (_, peer) in order {
            if in_flight.len() >= IN_ORDER_WINDOW
                && let Some((peer, Ok(Err(e)))) = in_flight.next().await
            {
                failed.push((peer, e));
            }
            match self.send_to_tracked(peer, protocol, msg.clone()) {
                Ok(sent) => in_flight.push(async move {
                    (peer, tokio::time::timeout(IN_ORDER_PATIENCE, sent).await)
                }),
                Err(e) => failed.push((peer, e)),
            }
        }
        while let Some((peer, sent)) = in_flight.next().await {
            if let Ok(Err(e)) = sent {
                failed.push((peer, e));
            }
        }
        failed
    }

    /// Queues `msg` for `peer` over `protocol`. Messages to one peer on one protocol
    /// arrive in order; when that peer's queue is full the message is dropped, counted,
    /// and [`SendError::QueueFull`] returned. Delivery is at most once: a message
    /// accepted here reaches the peer's application or is counted in
    /// `network_queue_drops_total{queue=<protocol>}` (`stream_failed`, or `unconfirmed`
    /// when the connection ended before the peer acknowledged it).
    pub fn send_to(&self, peer: PeerId, protocol: ProtocolId, msg: Bytes) -> Result<(), SendError> {
        direct_send::send(
            &self.shared.protocols,
            &self.shared.peers,
            peer,
            protocol,
            msg,
        )
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
                direct_send::send(
                    &self.shared.protocols,
                    &self.shared.peers,
                    peer,
                    protocol,
                    msg.clone(),
                )
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
        self.shared.protocols.reporter.report(peer, misbehaviour);
    }

    /// How long `peer` stays banned, or `None` if it is not banned.
    pub fn ban_remaining(&self, peer: &PeerId) -> Option<Duration> {
        let now = tokio::time::Instant::now().into_std();
        self.shared
            .protocols
            .reporter
            .reputation
            .lock()
            .banned_until(peer, now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// `peer`'s reputation score now (0: no recent misbehaviour; banned at
    /// [`crate::reputation::ReputationConfig::ban_threshold`]).
    pub fn reputation_score(&self, peer: &PeerId) -> u32 {
        let now = tokio::time::Instant::now().into_std();
        self.shared
            .protocols
            .reporter
            .reputation
            .lock()
            .score(peer, now)
    }
}

/// Copies of [`NetworkSender::send_nearest_first`] on their way at once. Copies to far
/// peers whose stream windows have not yet grown to the path (a leader's first large
/// message) each wait round trips for them: eight keep the uplink busy meanwhile, where
/// two or four leave it idle; and the copies on their way share the uplink, so the k-th
/// nearest of 99 has it a few percent later than after k copies' time (the WAN
/// benchmark's proposal rows, `benches/README.md`).
pub const IN_ORDER_WINDOW: usize = 8;

/// How long [`NetworkSender::send_nearest_first`] waits for a copy to go to its socket
/// before it starts the next one anyway: longer than an 8 MiB copy takes on a 100 Mbit/s
/// uplink, so only a peer that does not read (or a much slower uplink) reaches it, and
/// then the copies overlap instead of waiting.
pub const IN_ORDER_PATIENCE: Duration = Duration::from_secs(2);

/// The future of [`NetworkSender::send_to_tracked`]: `Ok` once the message went to the
/// socket (with the batch of messages the writer took it in), [`SendError::Lost`] if
/// its connection or substream failed or closed first.
#[derive(Debug)]
pub struct Sent {
    receipt: oneshot::Receiver<()>,
}

impl std::future::Future for Sent {
    type Output = Result<(), SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receipt)
            .poll(cx)
            .map(|sent| sent.map_err(|_| SendError::Lost))
    }
}
