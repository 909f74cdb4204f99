//! Turns the bytes read from the socket into frames for the [`Session`].
//!
//! Small frames are read in large chunks and decoded from one buffer. A data payload of
//! [`DIRECT_READ_MIN`] bytes or more is read straight into a buffer of its own (of
//! exactly its size, or a kept one of at most twice that: see `SparePayloads`), and
//! after such a frame the next read asks for just a header, so bulk data is copied once
//! from the socket and never pins a larger shared buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncRead;
use tokio::time::Instant;

use super::buffers::COALESCE_BELOW;
use super::error::ProtocolError;
use super::frame::{HEADER_LEN, Header};
use super::session::{Payload, Session};

/// Bytes asked of the socket per bulk read: a full Noise frame, so one read takes a
/// whole decrypted frame from the layer below.
const READ_CHUNK: usize = 64 * 1024;

/// Payloads this large are read into their own buffer (the stream keeps them as is).
const DIRECT_READ_MIN: usize = COALESCE_BELOW;

/// Where the reader is within the frame stream.
#[derive(Debug, Default)]
enum ReadState {
    /// Waiting for a header.
    #[default]
    Header,
    /// A small payload, copied out of the read buffer once it is all there.
    Small(Header, usize),
    /// A large payload being filled to its length.
    Large(Header, BytesMut, usize),
    /// Payload bytes to drop.
    Skip(Header, usize),
}

/// The frame decoder of a connection.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    state: ReadState,
    /// The last frame had a large payload: read only a header next.
    after_large: bool,
}

impl FrameReader {
    /// Reads once from `io` into the right buffer; `Ok(0)` is EOF.
    pub(crate) fn poll_read<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if let ReadState::Large(_, payload, len) = &mut self.state {
            let want = *len - payload.len();
            return tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut payload.limit(want));
        }
        let want = if self.after_large {
            HEADER_LEN.saturating_sub(self.buf.len()).max(1)
        } else {
            READ_CHUNK
        };
        if self.buf.capacity() - self.buf.len() < want.min(READ_CHUNK / 4) {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut (&mut self.buf).limit(want))
    }

    /// Hands every complete frame to the session.
    pub(crate) fn decode(&mut self, s: &mut Session, now: Instant) -> Result<(), ProtocolError> {
        loop {
            match std::mem::take(&mut self.state) {
                ReadState::Header => {
                    let Some(h) = Header::decode(&self.buf)? else {
                        return Ok(());
                    };
                    self.buf.advance(HEADER_LEN);
                    self.after_large = false;
                    self.state = match s.on_header(&h, now)? {
                        Payload::None => ReadState::Header,
                        Payload::Deliver(n) if n >= DIRECT_READ_MIN => {
                            ReadState::Large(h, s.payload_buffer(n, now), n)
                        }
                        Payload::Deliver(n) => ReadState::Small(h, n),
                        Payload::Skip(n) => ReadState::Skip(h, n),
                    };
                }
                ReadState::Small(h, n) => {
                    if self.buf.len() < n {
                        self.buf.reserve(n - self.buf.len());
                        self.state = ReadState::Small(h, n);
                        return Ok(());
                    }
                    s.on_data(&h, &self.buf[..n]);
                    self.buf.advance(n);
                }
                ReadState::Large(h, mut payload, n) => {
                    let k = (n - payload.len()).min(self.buf.len());
                    crate::copy::extend_bytes(&mut payload, &self.buf[..k]);
                    self.buf.advance(k);
                    if payload.len() < n {
                        self.state = ReadState::Large(h, payload, n);
                        return Ok(());
                    }
                    s.on_data_bytes(&h, payload.freeze());
                    self.after_large = true;
                }
                ReadState::Skip(h, n) => {
                    let k = n.min(self.buf.len());
                    self.buf.advance(k);
                    if k < n {
                        self.state = ReadState::Skip(h, n - k);
                        return Ok(());
                    }
                    s.on_skipped(&h);
                }
            }
        }
    }

    /// Feeds `wire` as if read from the socket, for tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn feed(
        &mut self,
        s: &mut Session,
        wire: &[u8],
        now: Instant,
    ) -> Result<(), ProtocolError> {
        self.buf.extend_from_slice(wire);
        self.decode(s, now)
    }

    /// Bytes read but not yet decoded, for tests.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }
}
