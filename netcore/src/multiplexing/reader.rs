//! Turns the bytes read from the socket into frames for the [`Session`].
//!
//! Small frames are decoded from one read buffer. It starts at [`SMALL_READ`] bytes and
//! grows to [`READ_CHUNK`] once a read fills it (the peer sends faster than the reader
//! wakes), so a connection of small messages never holds the large one. A small buffer
//! is let go whenever it is empty and the socket has no more to give (a connection of
//! small messages takes a new one, one allocation and no zeroing, per wake-up), and a
//! large one at the driver's next timer (the RTT probe's, every 10 s while the peer
//! answers probes) if it is empty then: an idle connection holds no read buffer, and one
//! whose reads fill the buffer does not allocate per wake-up.
//! A data payload of
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

/// Bytes asked of the socket per read until a read fills them.
const SMALL_READ: usize = 4 * 1024;

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
    /// The last read filled what it was offered: read [`READ_CHUNK`] at a time.
    grow: bool,
    /// `buf` was allocated for [`READ_CHUNK`]-sized reads.
    large: bool,
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
        let chunk = if self.grow || self.large {
            READ_CHUNK
        } else {
            SMALL_READ
        };
        let want = if self.after_large {
            HEADER_LEN.saturating_sub(self.buf.len()).max(1)
        } else {
            chunk
        };
        if self.buf.capacity() - self.buf.len() < want.min(chunk / 4) {
            self.buf.reserve(chunk);
            self.large = chunk == READ_CHUNK;
        }
        let offered = want.min(self.buf.capacity() - self.buf.len());
        let read =
            tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut (&mut self.buf).limit(want));
        if let Poll::Ready(Ok(n)) = read {
            self.grow = n == offered && !self.after_large;
        }
        read
    }

    /// Whether the reader holds nothing: no partial frame, no buffered bytes.
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && matches!(self.state, ReadState::Header)
    }

    /// Lets go of the read buffer if it is empty and small: called when the socket has
    /// no more to give. The next read takes a new one (one allocation, not zeroed).
    pub(crate) fn release_if_small(&mut self) {
        if self.is_empty() && !self.large {
            self.buf = BytesMut::new();
        }
    }

    /// Lets go of the read buffer, large or small, if it is empty: called on the
    /// driver's timers, so a buffer grown by a burst is kept while the burst lasts
    /// and freed once the connection goes quiet.
    pub(crate) fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.buf = BytesMut::new();
            self.grow = false;
            self.large = false;
        }
    }

    /// Bytes held for reading (the buffer's capacity), for tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity()
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::multiplexing::Mode;
    use crate::multiplexing::config::MuxConfig;
    use crate::multiplexing::frame::{FrameType, flags};

    /// A socket that gives its chunks (each at most what the reader offers) and then
    /// has nothing more for now.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let Some(mut chunk) = self.0.pop_front() else {
                return Poll::Pending;
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
            Poll::Ready(Ok(()))
        }
    }

    fn pings(count: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for nonce in 0..count {
            Header::new(FrameType::Ping, flags::SYN, 0, nonce as u32).encode(&mut wire);
        }
        wire
    }

    /// Reads and decodes until the socket has nothing more; returns the bytes read.
    fn drain(reader: &mut FrameReader, io: &mut Chunks, s: &mut Session) -> usize {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut total = 0;
        loop {
            match reader.poll_read(io, &mut cx) {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    reader.decode(s, Instant::now()).unwrap();
                }
                Poll::Ready(Err(e)) => panic!("read failed: {e}"),
                Poll::Pending => return total,
            }
        }
    }

    #[test]
    fn small_reads_keep_a_small_buffer_and_let_it_go_when_quiet() {
        let mut s = Session::new(Mode::Server, MuxConfig::default(), Instant::now());
        let mut reader = FrameReader::default();
        let mut io = Chunks(VecDeque::from([pings(1), pings(3)]));
        assert_eq!(drain(&mut reader, &mut io, &mut s), 4 * HEADER_LEN);
        assert!(reader.held() <= SMALL_READ, "held {}", reader.held());
        reader.release_if_small();
        assert_eq!(reader.held(), 0);
    }

    #[test]
    fn a_full_read_grows_the_buffer_until_a_timer_finds_it_empty() {
        let mut s = Session::new(Mode::Server, MuxConfig::default(), Instant::now());
        let mut reader = FrameReader::default();
        // More than a small read holds: the first read fills it.
        let burst = pings(2 * SMALL_READ / HEADER_LEN);
        let mut io = Chunks(VecDeque::from([burst.clone()]));
        assert_eq!(drain(&mut reader, &mut io, &mut s), burst.len());
        assert!(reader.large);
        // Quiet between bursts: kept, so a busy connection does not allocate per wake.
        reader.release_if_small();
        assert!(reader.large && reader.held() > 0);
        // The timer: let go, and the next reads start small again.
        reader.release_if_empty();
        assert_eq!(reader.held(), 0);
        let mut io = Chunks(VecDeque::from([pings(1)]));
        drain(&mut reader, &mut io, &mut s);
        assert!(reader.held() <= SMALL_READ, "held {}", reader.held());
    }

    #[test]
    fn a_partial_frame_is_never_let_go() {
        let mut s = Session::new(Mode::Server, MuxConfig::default(), Instant::now());
        let mut reader = FrameReader::default();
        let wire = pings(1);
        let mut io = Chunks(VecDeque::from([wire[..5].to_vec()]));
        assert_eq!(drain(&mut reader, &mut io, &mut s), 5);
        reader.release_if_small();
        reader.release_if_empty();
        assert_eq!(reader.buffered(), 5);
    }
}
