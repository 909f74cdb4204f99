//! The sender's packing of queued messages into wire bytes: small messages are copied
//! behind their length prefixes into shared runs, large ones are kept in their own
//! buffers, so a writer takes a few buffers ready for the substream rather than one
//! per message.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use netcore::framing::LENGTH_FIELD_BYTES;

/// Small messages are packed into runs of about this many bytes (each run one write to
/// the substream); this is also the size of each packing buffer a [`Packer`] allocates.
pub(crate) const WRITE_CHUNK: usize = 16 * 1024;

/// A message of up to this many bytes is copied into the packed run; a larger one is
/// kept as its own buffer (only its prefix is packed), so no large copy happens on the
/// sender's path (under its outbox's lock).
pub(crate) const PACK_MAX: usize = 4 * 1024;

/// Messages and their payload bytes (length prefixes not included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Messages.
    pub(crate) messages: usize,
    /// Their payload bytes.
    pub(crate) bytes: u64,
}

/// Messages queued for one substream, already encoded as the bytes it carries: each a
/// `u32` big-endian length, then the message.
///
/// Small messages (up to [`PACK_MAX`]) are copied behind their prefixes into runs of
/// about [`WRITE_CHUNK`] bytes; a larger message follows a run that ends with its
/// prefix, as its own buffer, never copied. Taking hands over every buffer in order.
#[derive(Debug, Default)]
pub(crate) struct Packer {
    /// Finished buffers, in wire order: packed runs, and large messages after the run
    /// that ends with their prefix.
    runs: VecDeque<Bytes>,
    /// The run being packed; its bytes follow `runs` on the wire.
    packing: BytesMut,
    /// What `runs` and `packing` hold.
    queued: Counts,
}

impl Packer {
    /// An empty packer; it allocates on its first message.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Messages held (pushed and not yet taken).
    #[inline]
    pub(crate) fn messages(&self) -> usize {
        self.queued.messages
    }

    /// Whether it holds no message.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.messages == 0
    }

    /// Encodes `msg` after everything held. Its length must fit the `u32` prefix: the
    /// caller checked it against the maximum message size, which does.
    ///
    /// A small message costs one copy into the current run (and a new run buffer once
    /// per [`WRITE_CHUNK`] bytes); a large one a copy of its 4-byte prefix.
    #[inline(always)]
    pub(crate) fn push(&mut self, msg: Bytes) {
        let len = msg.len();
        debug_assert!(u32::try_from(len).is_ok(), "checked by the caller");
        let packed = len <= PACK_MAX;
        let need = LENGTH_FIELD_BYTES + if packed { len } else { 0 };
        if self.packing.capacity() - self.packing.len() < need {
            if !self.packing.is_empty() {
                self.runs.push_back(self.packing.split().freeze());
            }
            self.packing.reserve(WRITE_CHUNK);
        }
        self.packing.extend_from_slice(&(len as u32).to_be_bytes());
        if packed {
            self.packing.extend_from_slice(&msg);
            if self.packing.len() >= WRITE_CHUNK {
                self.runs.push_back(self.packing.split().freeze());
            }
        } else {
            self.runs.push_back(self.packing.split().freeze());
            self.runs.push_back(msg);
        }
        self.queued.messages += 1;
        self.queued.bytes += len as u64;
    }

    /// Moves every buffer held onto the end of `into`, in wire order, and returns the
    /// messages and payload bytes they carry; the packer is then empty.
    pub(crate) fn take_into(&mut self, into: &mut Vec<Bytes>) -> Counts {
        into.extend(self.runs.drain(..));
        if !self.packing.is_empty() {
            into.push(self.packing.split().freeze());
        }
        std::mem::take(&mut self.queued)
    }

    /// Drops everything held and releases the packing buffer (the substream is gone);
    /// returns how many messages that was.
    pub(crate) fn clear(&mut self) -> usize {
        self.runs.clear();
        self.packing = BytesMut::new();
        std::mem::take(&mut self.queued).messages
    }
}
