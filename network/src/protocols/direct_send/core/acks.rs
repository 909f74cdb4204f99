//! Acknowledgements: the receiver's cumulative count of the messages it delivered
//! (`proto::direct_send::DirectSendAck`, framed like a message), and the sender's
//! check of those counts against what it wrote.

use bytes::{Buf, Bytes, BytesMut};
use netcore::framing::MessageCodec;
use proto::Message;
use proto::direct_send::DirectSendAck;

/// The receiver acknowledges at least once per this many messages, even when the sender
/// keeps it busy.
pub(crate) const ACK_EVERY: u64 = 256;

/// The largest acknowledgement frame accepted: a `DirectSendAck` is at most 11 bytes.
pub(crate) const MAX_ACK_SIZE: usize = 16;

/// The sender's side: the messages written to one substream and, of those, the count the
/// receiver acknowledged, so that what a substream that ends still owes is counted.
#[derive(Debug, Default)]
pub(crate) struct SenderAcks {
    /// Messages written to the substream.
    written: u64,
    /// Of those, the messages the receiver acknowledged; never more than `written`.
    acked: u64,
}

/// Why an acknowledgement was refused: the receiver broke the protocol.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AckError {
    /// The frame is not a `DirectSendAck`.
    #[error("acknowledgement does not decode")]
    Malformed,
    /// The count goes back, or past what was written.
    #[error(
        "acknowledgement of {delivered} messages after {acked} acknowledged and {written} written"
    )]
    OutOfRange {
        /// The count received.
        delivered: u64,
        /// The count acknowledged before it.
        acked: u64,
        /// The messages written.
        written: u64,
    },
}

impl SenderAcks {
    /// Counts `messages` more as written. The writer counts a batch before writing it:
    /// if the substream fails part way, the receiver may still acknowledge some of it.
    pub(crate) fn on_written(&mut self, messages: u64) {
        self.written += messages;
    }

    /// Applies one acknowledgement frame: a cumulative count, at least the last one and
    /// at most what was written. A refused frame changes nothing.
    pub(crate) fn on_ack(&mut self, frame: Bytes) -> Result<(), AckError> {
        let ack = DirectSendAck::decode(frame).map_err(|_| AckError::Malformed)?;
        if ack.delivered < self.acked || ack.delivered > self.written {
            return Err(AckError::OutOfRange {
                delivered: ack.delivered,
                acked: self.acked,
                written: self.written,
            });
        }
        self.acked = ack.delivered;
        Ok(())
    }

    /// The messages written and not acknowledged (so far).
    pub(crate) fn unconfirmed(&self) -> u64 {
        self.written - self.acked
    }
}

/// The receiver's side: which count to acknowledge and the encoded frame still to
/// write. The receiver never waits for the sender to read its acknowledgements, so a
/// frame may go out in pieces over several attempts; it is superseded by a newer count
/// only once it went out whole, so the sender never sees a torn frame.
#[derive(Debug, Default)]
pub(crate) struct ReceiverAcks {
    /// What is left to write of the last frame encoded.
    pending: BytesMut,
    /// The count last encoded.
    encoded: u64,
}

impl ReceiverAcks {
    /// Nothing acknowledged yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether `delivered` is [`ACK_EVERY`] or more past the last count encoded: the
    /// receiver acknowledges then even when it is not about to wait (when it is, it
    /// acknowledges whatever the count).
    pub(crate) fn due(&self, delivered: u64) -> bool {
        delivered.saturating_sub(self.encoded) >= ACK_EVERY
    }

    /// The bytes to write now to acknowledge `delivered` messages: what is left of a
    /// frame that went out in part, or else a frame of `delivered` if it is newer than
    /// the last one; empty when there is nothing to write. Report what was written
    /// with [`Self::sent`].
    pub(crate) fn outgoing(&mut self, delivered: u64) -> &[u8] {
        if self.pending.is_empty() && delivered > self.encoded {
            let ack = DirectSendAck { delivered };
            let len = ack.encoded_len();
            // A `DirectSendAck` fits the frame limit, and `BytesMut` grows to take it,
            // so neither step fails; if one did, nothing would be sent.
            if MessageCodec::new(MAX_ACK_SIZE)
                .write_prefix(len, &mut self.pending)
                .is_err()
            {
                return &[];
            }
            if ack.encode(&mut self.pending).is_err() {
                self.pending.clear();
                return &[];
            }
            self.encoded = delivered;
        }
        &self.pending
    }

    /// Records that the first `bytes` of what [`Self::outgoing`] returned went out.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.pending.advance(bytes.min(self.pending.len()));
    }
}
