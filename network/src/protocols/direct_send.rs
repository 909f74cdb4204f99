//! DirectSend: one long-lived substream per (peer, protocol) carrying one-way,
//! length-delimited messages.
//!
//! Outbound, each (peer, protocol) has a bounded queue drained by one writer task, which
//! opens the substream on the first message, writes every queued message and flushes
//! once per batch. When the queue is full the new message is dropped and counted (the
//! sender learns it from `SendError::QueueFull`): the messages already queued are older
//! and were accepted first. Inbound, one reader task per substream pushes messages into
//! the application's fair queue, waiting while that peer's queue is full, so a flooding
//! peer is slowed by reading less rather than by losing messages.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::Negotiated;
use prometheus::IntGauge;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::debug;

use super::open_substream;
use crate::error::SendError;
use crate::interface::Event;
use crate::protocol_id::ProtocolId;
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Route, Shared};

/// Messages one writer batch takes from its queue before flushing: enough to fill
/// several Noise frames with small messages, few enough that a flush is never far away.
const MAX_BATCH: usize = 256;

/// Queues `msg` for `peer`; see `NetworkSender::send_to`.
pub(crate) fn send(
    shared: &Shared,
    peer: PeerId,
    protocol: ProtocolId,
    msg: Bytes,
) -> Result<(), SendError> {
    let max = shared.config.max_message_size;
    if msg.len() > max {
        return Err(SendError::TooLarge {
            len: msg.len(),
            max,
        });
    }
    let handle = shared.peer(&peer).ok_or(SendError::NotConnected(peer))?;
    let route = shared
        .route(protocol)
        .ok_or(SendError::UnregisteredProtocol(protocol))?;
    let queue = writer_queue(shared, &handle, protocol, route);
    enqueue(
        &queue,
        &handle.direct_send_depth,
        &route.metrics.queue_drops,
        msg,
    )
}

fn enqueue(
    queue: &mpsc::Sender<Bytes>,
    depth: &IntGauge,
    drops: &prometheus::IntCounter,
    msg: Bytes,
) -> Result<(), SendError> {
    match queue.try_send(msg) {
        Ok(()) => {
            depth.inc();
            Ok(())
        }
        Err(_) => {
            drops.inc();
            Err(SendError::QueueFull)
        }
    }
}

/// The queue of (peer, protocol), creating it and its writer task on first use.
fn writer_queue(
    shared: &Shared,
    handle: &PeerHandle,
    protocol: ProtocolId,
    route: &Route,
) -> mpsc::Sender<Bytes> {
    let mut queues = handle.direct_send.lock();
    if let Some(queue) = queues.get(&protocol) {
        return queue.clone();
    }
    let (tx, rx) = mpsc::channel(shared.config.direct_send_queue_size.max(1));
    queues.insert(protocol, tx.clone());
    let writer = Writer {
        control: handle.control.clone(),
        remote_supports: handle.metadata.supports(protocol),
        protocol,
        max_message_size: shared.config.max_message_size,
        route: route.clone(),
        depth: handle.direct_send_depth.clone(),
    };
    tokio::spawn(writer.run(rx));
    tx
}

/// Drains one (peer, protocol) queue onto its substream.
struct Writer {
    control: Control,
    remote_supports: bool,
    protocol: ProtocolId,
    max_message_size: usize,
    route: Route,
    depth: IntGauge,
}

impl Writer {
    /// Runs until the queue closes, i.e. until the peer's handle is dropped when the
    /// connection ends.
    async fn run(self, mut queue: mpsc::Receiver<Bytes>) {
        let mut sink: Option<FramedWrite<Negotiated<Substream>, MessageCodec>> = None;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.depth.sub(batch.len() as i64);
            if sink.is_none() {
                match open_substream(&self.control, self.remote_supports, self.protocol).await {
                    Ok(io) => {
                        sink = Some(FramedWrite::new(
                            io,
                            MessageCodec::new(self.max_message_size),
                        ))
                    }
                    Err(e) => {
                        debug!(protocol = %self.protocol, error = ?e, "DirectSend substream failed to open");
                        self.route.metrics.queue_drops.inc_by(batch.len() as u64);
                        batch.clear();
                        if self.control.is_closed() {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(s) = sink.as_mut() else { continue };
            let count = batch.len() as u64;
            let bytes: u64 = batch.iter().map(|m| m.len() as u64).sum();
            let sent = {
                let mut stream = futures::stream::iter(batch.drain(..).map(Ok));
                s.send_all(&mut stream).await
            };
            match sent {
                Ok(()) => {
                    self.route.metrics.messages_out.inc_by(count);
                    self.route.metrics.bytes_out.inc_by(bytes);
                }
                Err(e) => {
                    debug!(protocol = %self.protocol, error = %e, "DirectSend substream failed; reopening on the next message");
                    self.route.metrics.queue_drops.inc_by(count);
                    sink = None;
                    if self.control.is_closed() {
                        return;
                    }
                }
            }
            batch.clear();
        }
        if let Some(mut s) = sink {
            let _ = s.close().await;
        }
    }
}

/// Reads one inbound DirectSend substream into the application's queue until it ends.
pub(crate) async fn serve_inbound(
    shared: Arc<Shared>,
    handle: Arc<PeerHandle>,
    route: Route,
    io: Negotiated<Substream>,
) {
    let peer = handle.metadata.peer_id;
    let mut reader = FramedRead::new(io, MessageCodec::new(shared.config.max_message_size));
    let limiter = handle.message_limiter.clone();
    // Release the handle: a long-lived reader must not keep a closed peer's state alive.
    drop(handle);
    while let Some(frame) = reader.next().await {
        let data = match frame {
            Ok(data) => data,
            Err(e) => {
                route.metrics.decode_failures.inc();
                debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "bad DirectSend stream; closing it");
                if let FramingError::TooLarge { .. } = e {
                    shared.report(peer, Misbehaviour::OversizedMessage);
                }
                return;
            }
        };
        // Over its message rate, the peer waits here: its stream is not read meanwhile,
        // so its window fills and it stops sending. Nothing is dropped.
        if let Some(limiter) = &limiter {
            limiter.acquire().await;
        }
        route.metrics.messages_in.inc();
        route.metrics.bytes_in.inc_by(data.len() as u64);
        let event = Event::Message {
            peer_id: peer,
            protocol: route.protocol,
            data,
        };
        if shared.apps[route.app]
            .push((peer, Some(route.protocol)), event)
            .await
            .is_err()
        {
            return;
        }
    }
}
