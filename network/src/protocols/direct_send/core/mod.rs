//! DirectSend's rules, free of I/O, locks, metrics and the runtime: messages, read
//! bytes and acknowledgement frames go in; wire bytes to write, frames to deliver and
//! counts come out. The drivers (the outbox with its lock and waker, the writer task,
//! the reader task) move them between the core and the substream.
//!
//! - [`Packer`]: the sender's queued messages, encoded into runs ready to write.
//! - [`SenderAcks`]: what the sender wrote and what the receiver acknowledged of it.
//! - [`ReceiverAcks`]: when the receiver acknowledges, and the frame it writes.
//! - [`scan`] and [`frames_end`]: which whole frames of the receiver's read buffer go
//!   to the application in one batch, and where a batch splits.

mod acks;
mod packing;
mod scan;
#[cfg(test)]
mod tests;

pub(crate) use acks::{MAX_ACK_SIZE, ReceiverAcks, SenderAcks};
pub(crate) use packing::Packer;
pub(crate) use scan::{DELIVER_BATCH, frames_end, scan};
