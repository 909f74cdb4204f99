//! The byte queues on the hot path, built to copy payloads as little as possible.
//!
//! - [`OutQueue`]: encoded frames waiting for the socket. Headers and small payloads
//!   are copied together into one buffer; large payloads are queued as the `Bytes` split
//!   off a stream's send buffer, without a copy.
//! - [`RecvBuffer`]: a stream's received data. Large payloads (read straight from the
//!   socket into a buffer of exactly their size) are kept as they are; small ones are
//!   copied together, so a flood of tiny frames costs no per-frame allocation.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{HEADER_LEN, Header};

/// Payloads below this are copied next to their header rather than queued on their own:
/// a separate socket write costs more than copying this much.
const COPY_BELOW: usize = 2 * 1024;

/// Received payloads below this are copied together into the stream's tail buffer.
pub(crate) const COALESCE_BELOW: usize = 4 * 1024;

/// Encoded frames waiting to be written, in order.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    len: usize,
}

impl OutQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a frame header.
    pub(crate) fn header(&mut self, h: Header) {
        h.encode(&mut self.staging);
        self.len += HEADER_LEN;
    }

    /// Queues encoded bytes by copying them.
    pub(crate) fn copy(&mut self, b: &[u8]) {
        self.staging.extend_from_slice(b);
        self.len += b.len();
    }

    /// Queues a payload: copied when small, else queued as is.
    pub(crate) fn payload(&mut self, b: Bytes) {
        if b.len() < COPY_BELOW {
            self.copy(&b);
            return;
        }
        self.seal();
        self.len += b.len();
        self.chunks.push_back(b);
    }

    /// Queues the first `n` bytes of a stream's send buffer: copied when few (the
    /// buffer stays unshared, its room reused by the next writes without an
    /// allocation), else split off without a copy. Returns whether it split the buffer
    /// (which then shares its allocation with the queued payload).
    pub(crate) fn payload_from(&mut self, buf: &mut BytesMut, n: usize) -> bool {
        if n < COPY_BELOW {
            self.copy(&buf[..n]);
            buf.advance(n);
            false
        } else {
            self.payload(buf.split_to(n).freeze());
            true
        }
    }

    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// The next bytes to write, if any.
    pub(crate) fn front(&mut self) -> Option<&[u8]> {
        if self.chunks.is_empty() {
            self.seal();
        }
        self.chunks.front().map(|c| &c[..])
    }

    /// Fills `dst` with the queued chunks in order; returns how many it filled.
    pub(crate) fn io_slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.seal();
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// `n` bytes from the front were written.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(c) = self.chunks.front_mut() else {
                break;
            };
            let k = n.min(c.len());
            c.advance(k);
            n -= k;
            if c.is_empty() {
                self.chunks.pop_front();
            }
        }
        if self.len == 0 && !self.staging.is_empty() {
            // Unreachable by construction (staging is sealed before it is written).
            self.staging.clear();
        }
    }

    /// Everything queued, for tests.
    #[cfg(test)]
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(c) = self.front() {
            let n = c.len();
            v.extend_from_slice(c);
            self.advance(n);
        }
        v
    }
}

/// A stream's received, unread data.
#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    segments: VecDeque<Bytes>,
    /// Small payloads after the last segment, copied together.
    tail: BytesMut,
    len: usize,
    /// The tail was split off into a segment at least once, so it may share a larger
    /// allocation: not worth keeping for reuse.
    tail_split: bool,
}

impl RecvBuffer {
    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a small payload by copying it.
    pub(crate) fn push_slice(&mut self, b: &[u8]) {
        self.tail.extend_from_slice(b);
        self.len += b.len();
    }

    /// Appends a payload: kept as is when large, copied into the tail when small.
    pub(crate) fn push(&mut self, b: Bytes) {
        if b.len() < COALESCE_BELOW {
            self.push_slice(&b);
            return;
        }
        if !self.tail.is_empty() {
            self.segments.push_back(self.tail.split().freeze());
            self.tail_split = true;
        }
        self.len += b.len();
        self.segments.push_back(b);
    }

    /// Moves up to `out.len()` bytes into `out`; returns how many. Each large payload
    /// read to its end goes to `done` (for reuse of its buffer) instead of being dropped.
    pub(crate) fn read_into(
        &mut self,
        out: &mut tokio::io::ReadBuf<'_>,
        mut done: impl FnMut(Bytes),
    ) -> usize {
        let mut copied = 0;
        while out.remaining() > 0 {
            let src: &mut dyn BufAdvance = match self.segments.front_mut() {
                Some(seg) => seg,
                None if !self.tail.is_empty() => &mut self.tail,
                None => break,
            };
            let chunk = src.bytes();
            let n = chunk.len().min(out.remaining());
            crate::copy::put_bytes(out, &chunk[..n]);
            src.skip(n);
            copied += n;
            if self.segments.front().is_some_and(Bytes::is_empty)
                && let Some(segment) = self.segments.pop_front()
            {
                done(segment);
            }
        }
        self.len -= copied;
        copied
    }

    /// Drops everything buffered.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// An empty buffer whose small payloads start in `tail` (a spare buffer).
    pub(crate) fn with_tail(mut tail: BytesMut) -> Self {
        tail.clear();
        Self {
            tail,
            ..Self::default()
        }
    }

    /// The tail buffer, for reuse by another stream, unless it was ever split.
    pub(crate) fn into_tail(self) -> Option<BytesMut> {
        (!self.tail_split).then_some(self.tail)
    }
}

/// Empties `buf` and says whether its whole allocation is at most `max` bytes, for
/// keeping it to reuse. `capacity` counts only the room past what was consumed, so a
/// buffer that can reclaim more than `max` without allocating holds a larger one.
pub(crate) fn clear_if_small(buf: &mut BytesMut, max: usize) -> bool {
    buf.clear();
    !buf.try_reclaim(max + 1)
}

/// `Bytes` and `BytesMut` alike, for [`RecvBuffer::read_into`].
trait BufAdvance {
    fn bytes(&self) -> &[u8];
    fn skip(&mut self, n: usize);
}

impl BufAdvance for Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn skip(&mut self, n: usize) {
        self.advance(n);
    }
}

impl BufAdvance for BytesMut {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn skip(&mut self, n: usize) {
        self.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::ReadBuf;

    #[test]
    fn recv_buffer_keeps_order_across_segments_and_tail() {
        let mut r = RecvBuffer::default();
        r.push_slice(b"ab");
        r.push(Bytes::from(vec![b'c'; COALESCE_BELOW]));
        r.push(Bytes::from_static(b"de"));
        assert_eq!(r.len(), COALESCE_BELOW + 4);
        let mut storage = vec![0u8; COALESCE_BELOW + 10];
        let mut out = ReadBuf::new(&mut storage);
        assert_eq!(r.read_into(&mut out, drop), COALESCE_BELOW + 4);
        let got = out.filled();
        assert_eq!(&got[..3], b"abc");
        assert_eq!(&got[got.len() - 3..], b"cde");
        assert!(r.is_empty());
    }

    #[test]
    fn out_queue_yields_headers_and_payloads_in_order() {
        let mut q = OutQueue::default();
        q.copy(b"h1");
        q.payload(Bytes::from(vec![1u8; COPY_BELOW]));
        q.copy(b"h2");
        q.payload(Bytes::from_static(b"small"));
        assert_eq!(q.len(), 2 + COPY_BELOW + 2 + 5);
        let all = q.take_all();
        assert_eq!(&all[..2], b"h1");
        assert_eq!(&all[all.len() - 7..], b"h2small");
        assert!(q.is_empty());
    }

    #[test]
    fn only_buffers_small_as_a_whole_are_kept() {
        let mut small = BytesMut::with_capacity(1024);
        small.extend_from_slice(&[1; 600]);
        small.advance(600);
        assert!(clear_if_small(&mut small, 2048));
        assert!(small.is_empty());

        // 64 KiB allocated, almost all of it consumed: little room shows, but the
        // allocation behind it is large.
        let mut large = BytesMut::with_capacity(64 * 1024);
        large.extend_from_slice(&vec![1; 63 * 1024]);
        large.advance(63 * 1024);
        assert!(large.capacity() <= 2048);
        assert!(!clear_if_small(&mut large, 2048));
    }
}
