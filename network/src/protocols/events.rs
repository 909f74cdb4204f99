//! What the protocols hand to an application: its [`Event`]s, and the queue entries
//! they travel in.

use std::sync::Arc;

use bytes::Bytes;
use netcore::PeerId;

use super::direct_send::MessageBatch;
use super::rpc::RpcResponder;
use crate::channel::{FairSender, Weighted};
use crate::connection::{ConnectionId, ConnectionMetadata, DisconnectReason};
use crate::protocol_id::ProtocolId;

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

/// The key events are queued under: a peer and, for data, the protocol. Connection
/// events use `None`, so they never wait in a queue behind a peer's messages; like
/// every key, only for the other keys' turns, each at most
/// [`crate::channel::TURN_WEIGHT`] messages (or, arriving while the application takes
/// one reader's batch alone, for the rest of that batch).
pub(crate) type EventKey = (PeerId, Option<ProtocolId>);

/// What an application's queue holds: events, and DirectSend messages as their reader
/// read them, turned into events only when the application takes them (moving one
/// buffer between tasks rather than an event per message).
pub(crate) enum Delivery {
    /// An event as it is handed out.
    Event(Event),
    /// Messages of one DirectSend substream.
    Messages(MessageBatch),
}

impl Weighted for Delivery {
    fn weight(&self) -> usize {
        match self {
            Delivery::Event(_) => 1,
            Delivery::Messages(batch) => batch.len().max(1),
        }
    }

    fn split_off(&mut self, weight: usize) -> Option<Self> {
        match self {
            Delivery::Event(_) => None,
            Delivery::Messages(batch) => batch.split_off(weight).map(Delivery::Messages),
        }
    }
}

/// The sending side of one application's event queue.
pub(crate) type AppQueue = FairSender<EventKey, Delivery>;
