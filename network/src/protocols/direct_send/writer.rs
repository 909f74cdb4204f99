//! The writer task of one (peer, protocol): drains its outbox onto a substream and
//! reads the receiver's acknowledgements.

use std::sync::Weak;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::Negotiated;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;
use tracing::debug;

use super::core::{MAX_ACK_SIZE, SenderAcks};
use super::outbox::{OutboxReader, Taken};
use crate::protocol_id::ProtocolId;
use crate::protocols::Protocols;
use crate::protocols::open_substream;
use crate::reputation::Misbehaviour;
use crate::routes::Route;

/// An open outbound substream and what it has carried.
struct OutboundStream {
    /// Messages go out through `io.get_mut()`; acknowledgements come in through `io`
    /// (frames of at most [`MAX_ACK_SIZE`]).
    io: FramedRead<Negotiated<Substream>, MessageCodec>,
    /// The messages written to it, and those the receiver acknowledged.
    acks: SenderAcks,
}

impl OutboundStream {
    /// Writes `runs` in order and flushes.
    async fn write_runs(&mut self, runs: &mut Vec<Bytes>) -> std::io::Result<()> {
        let io = self.io.get_mut();
        for run in runs.drain(..) {
            io.write_all(&run).await?;
        }
        io.flush().await
    }

    /// Takes every acknowledgement that has already arrived, without waiting.
    fn take_arrived_acks(&mut self) {
        while let Some(Some(Ok(frame))) = self.io.next().now_or_never() {
            if self.acks.on_ack(frame).is_err() {
                return;
            }
        }
    }

    /// The messages written and never acknowledged; the stream is about to be dropped.
    fn unconfirmed(mut self) -> u64 {
        self.take_arrived_acks();
        self.acks.unconfirmed()
    }
}

/// Drains one (peer, protocol) queue onto its substream.
pub(super) struct Writer {
    /// For reporting a receiver that breaks the protocol; weak, as the writer lives as
    /// long as the connection.
    pub(super) protocols: Weak<Protocols>,
    pub(super) peer: PeerId,
    pub(super) control: Control,
    pub(super) remote_supports: bool,
    pub(super) protocol: ProtocolId,
    pub(super) route: Route,
}

impl Writer {
    /// Holds `misbehaviour` against the receiver, while the node runs.
    fn report(&self, misbehaviour: Misbehaviour) {
        if let Some(protocols) = self.protocols.upgrade() {
            protocols.reporter.report(self.peer, misbehaviour);
        }
    }

    /// Runs until the queue closes (when the connection leaves the peer table, or its
    /// handle is dropped) and what it held is written.
    pub(super) async fn run(self, mut queue: OutboxReader) {
        let mut stream: Option<OutboundStream> = None;
        let mut batch = Taken::new();
        loop {
            let taken = match stream.as_mut() {
                None => queue.take(&mut batch).await,
                // Acknowledgements are read while the queue is empty; under load they
                // wait in the substream's buffer, where the latest supersedes the rest.
                Some(s) => tokio::select! {
                    biased;
                    taken = queue.take(&mut batch) => taken,
                    incoming = s.io.next() => {
                        self.on_incoming(&mut stream, incoming);
                        continue;
                    }
                },
            };
            if !taken {
                break;
            }
            if stream.is_none() {
                match open_substream(&self.control, self.remote_supports, &self.route).await {
                    Ok(io) => {
                        stream = Some(OutboundStream {
                            io: FramedRead::new(io, MessageCodec::new(MAX_ACK_SIZE)),
                            acks: SenderAcks::default(),
                        });
                    }
                    Err(e) => {
                        debug!(protocol = %self.protocol, error = ?e, "DirectSend substream failed to open");
                        self.route
                            .metrics
                            .stream_drops
                            .inc_by(batch.messages as u64);
                        batch.runs.clear();
                        if batch.marked {
                            queue.settle_marks(batch.end, false);
                        }
                        if self.control.is_closed() {
                            self.drop_queued(&mut queue);
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            let count = batch.messages as u64;
            // Counted as written before the write: if the substream fails part way, the
            // receiver may still acknowledge some of the batch, and what it does not is
            // counted as unconfirmed.
            s.acks.on_written(count);
            self.route.metrics.messages_out.inc_by(count);
            self.route.metrics.bytes_out.inc_by(batch.bytes);
            let mut sent = s.write_runs(&mut batch.runs).await;
            if batch.marked {
                // A caller waits to learn that its message went to the socket.
                if sent.is_ok() {
                    sent = s.io.get_ref().get_ref().sent().await;
                }
                queue.settle_marks(batch.end, sent.is_ok());
            }
            if let Err(e) = sent {
                debug!(protocol = %self.protocol, error = %e, "DirectSend substream failed; reopening on the next message");
                self.end_stream(&mut stream);
                if self.control.is_closed() {
                    self.drop_queued(&mut queue);
                    return;
                }
            }
        }
        if let Some(mut s) = stream {
            let _ = s.io.get_mut().shutdown().await;
            self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
        }
    }

    /// Handles what the substream carried in while the queue was empty: an
    /// acknowledgement is applied; a refused one, a framing error or the receiver's end
    /// ends the substream (the next message opens another).
    fn on_incoming(
        &self,
        stream: &mut Option<OutboundStream>,
        incoming: Option<Result<Bytes, FramingError>>,
    ) {
        let Some(s) = stream.as_mut() else { return };
        let failure = match incoming {
            Some(Ok(frame)) => match s.acks.on_ack(frame) {
                Ok(()) => return,
                Err(e) => {
                    self.route.metrics.decode_failures.inc();
                    self.report(Misbehaviour::ProtocolViolation);
                    e.to_string()
                }
            },
            Some(Err(e)) => {
                if let FramingError::TooLarge { .. } = e {
                    // An acknowledgement over its size is no acknowledgement.
                    self.route.metrics.decode_failures.inc();
                    self.report(Misbehaviour::OversizedMessage);
                }
                e.to_string()
            }
            None => "receiver closed the substream".to_owned(),
        };
        debug!(protocol = %self.protocol, error = %failure, "DirectSend substream ended; reopening on the next message");
        self.end_stream(stream);
    }

    /// Drops the substream, counting the messages it carried that the receiver did not
    /// acknowledge.
    fn end_stream(&self, stream: &mut Option<OutboundStream>) {
        if let Some(s) = stream.take() {
            self.route.metrics.unconfirmed.inc_by(s.unconfirmed());
        }
    }

    /// The connection is gone: closes the queue and counts what it still holds as
    /// dropped, so every accepted message is delivered or counted.
    fn drop_queued(&self, queue: &mut OutboxReader) {
        let dropped = queue.close_and_clear();
        self.route.metrics.stream_drops.inc_by(dropped as u64);
    }
}
