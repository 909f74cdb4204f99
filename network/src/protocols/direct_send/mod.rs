//! DirectSend: one long-lived substream per (peer, protocol) carrying one-way,
//! length-delimited messages, and acknowledgements the other way.
//!
//! Outbound, each (peer, protocol) has a bounded queue, its [`Outbox`], drained by one
//! writer task, which opens the substream on the first message, writes everything
//! queued and flushes once per batch. `send_to` encodes a small message straight into
//! the outbox's packed buffer, so the writer takes runs of frames ready for the wire,
//! not one buffer per message. When the queue is full the new message is dropped and
//! counted (the sender learns it from `SendError::QueueFull`): the messages already
//! queued are older and were accepted first. Inbound, one reader task per substream
//! pushes the frames it read into the application's fair queue, as they came off the
//! wire, waiting while that peer's queue is full, so a flooding peer is slowed by reading
//! less rather than by losing messages; the application's side splits them into events.
//!
//! Every message the network accepts is delivered or counted in
//! `network_queue_drops_total{queue=<protocol>}`: `queue_full` when its queue was full,
//! `stream_failed` when it was never written (no substream could be opened, or the
//! connection closed while it waited), `unconfirmed` when it was written to a
//! substream that ended before the receiver acknowledged it. The receiver acknowledges
//! with a cumulative count (`proto::direct_send::DirectSendAck`) whenever it waits, for
//! the sender or for room in the application's queue, and at least every `ACK_EVERY`
//! messages, so `unconfirmed` is an upper bound of the messages lost in flight when a
//! connection is cut, close to the truth: a handful of messages, not a window.
//!
//! The rules (packing, acknowledgement counts, which frames a batch takes) live in
//! [`core`](self::core), free of I/O; the outbox, the writer and the reader drive it.

use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use netcore::PeerId;
use tokio::sync::oneshot;

use crate::channel::QueueError;
use crate::error::SendError;
use crate::protocol_id::ProtocolId;
use crate::protocols::{PeerHandle, PeerTable, Protocols};
use crate::routes::Route;

mod core;
mod outbox;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use outbox::Outbox;
use outbox::{NotPushed, OutboxCache, outbox, push_to};
pub(crate) use reader::{MessageBatch, serve_inbound};
use writer::Writer;

/// The outbound depth gauge (`direct_send_outbound`) is moved in steps of this many
/// messages per queue, not one atomic update per message on a gauge every sender
/// shares: it is exact when the writers have taken everything and lower than the truth
/// by less than this per (peer, protocol) while messages wait.
const DEPTH_STEP: usize = 16;

/// Queues `msg` for `peer`, looked up in `peers` unless this thread sent to it last;
/// see `NetworkSender::send_to`.
pub(crate) fn send(
    protocols: &Arc<Protocols>,
    peers: &PeerTable,
    peer: PeerId,
    protocol: ProtocolId,
    msg: Bytes,
) -> Result<(), SendError> {
    check_size(protocols, protocol, &msg)?;
    let msg = match OutboxCache::push(protocols, peer, protocol, msg) {
        Ok(waker) => {
            if let Some(w) = waker {
                w.wake();
            }
            return Ok(());
        }
        Err(NotPushed::Full(route)) => {
            if let Some(route) = protocols.routes.at(route) {
                route.metrics.queue_drops.inc();
            }
            return Err(SendError::QueueFull);
        }
        Err(NotPushed::Uncached(msg)) => msg,
    };
    with_queue(protocols, peers, peer, protocol, |queue, index, route| {
        OutboxCache::looked_up(protocols, peer, protocol, index, queue);
        finish(push_to(&queue.shared, msg).map(|w| (w, ())), route, peer)
    })
}

/// Queues `msg` as [`send`] does (always through the peer table), and returns a
/// receiver told once the message went to the socket; see
/// `NetworkSender::send_to_tracked`.
pub(crate) fn send_tracked(
    protocols: &Arc<Protocols>,
    peers: &PeerTable,
    peer: PeerId,
    protocol: ProtocolId,
    msg: Bytes,
) -> Result<oneshot::Receiver<()>, SendError> {
    check_size(protocols, protocol, &msg)?;
    with_queue(protocols, peers, peer, protocol, |queue, _, route| {
        finish(outbox::push_tracked(&queue.shared, msg), route, peer)
    })
}

/// Refuses `msg` over `protocol`'s size limit. Within it, a message is within the
/// length prefix's range (the builder checks every limit): the outbox writes the prefix
/// of an accepted message without another check.
fn check_size(protocols: &Protocols, protocol: ProtocolId, msg: &Bytes) -> Result<(), SendError> {
    protocols
        .routes
        .check_size(protocol, msg.len())
        .map_err(|max| SendError::TooLarge {
            len: msg.len(),
            max,
        })
}

/// Runs `push` on (peer, protocol)'s queue (starting its writer on first use), with the
/// route's index and the route, under the peers' read lock, which nothing holds for
/// long: no lookup result is cloned out of it.
fn with_queue<T>(
    protocols: &Arc<Protocols>,
    peers: &PeerTable,
    peer: PeerId,
    protocol: ProtocolId,
    push: impl FnOnce(&Outbox, usize, &Route) -> Result<T, SendError>,
) -> Result<T, SendError> {
    let peers = peers.read();
    let handle = peers.get(&peer).ok_or(SendError::NotConnected(peer))?;
    let (index, route) = protocols
        .routes
        .index_of(protocol)
        .ok_or(SendError::UnregisteredProtocol(protocol))?;
    let queue = handle.direct_send[index].get_or_init(|| spawn_writer(protocols, handle, route));
    push(queue, index, route)
}

/// What a send returns for a push's outcome: wakes the writer, or counts a full
/// queue's drop.
fn finish<T>(
    pushed: Result<(Option<Waker>, T), QueueError<Bytes>>,
    route: &Route,
    peer: PeerId,
) -> Result<T, SendError> {
    match pushed {
        Ok((waker, receipt)) => {
            if let Some(w) = waker {
                w.wake();
            }
            Ok(receipt)
        }
        Err(QueueError::Full(_)) => {
            route.metrics.queue_drops.inc();
            Err(SendError::QueueFull)
        }
        // The writer found the connection closed and stopped; the peer is about to be
        // removed.
        Err(QueueError::Closed(_)) => Err(SendError::NotConnected(peer)),
    }
}

/// Starts the writer task of (peer, protocol) and returns its queue.
fn spawn_writer(protocols: &Arc<Protocols>, handle: &PeerHandle, route: &Route) -> Outbox {
    let protocol = route.protocol;
    let (tx, rx) = outbox(
        protocols.config.direct_send_queue_size,
        handle.direct_send_depth.clone(),
    );
    let writer = Writer {
        protocols: Arc::downgrade(protocols),
        peer: handle.metadata.peer_id,
        control: handle.control.clone(),
        remote_supports: handle.metadata.supports(protocol),
        protocol,
        route: route.clone(),
    };
    tokio::spawn(writer.run(rx));
    tx
}
