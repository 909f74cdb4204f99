//! The byte queues on the hot path, built to copy payloads as little as possible.
//!
//! - [`OutQueue`]: encoded frames waiting for the socket. Headers and small payloads
//!   are copied together into one buffer; large payloads are queued as the `Bytes` split
//!   off a stream's send buffer, without a copy.
//! - [`RecvBuffer`]: a stream's received data. Large payloads (read straight from the
//!   socket into a buffer of their own) are kept as they are; small ones are copied
//!   together, so a flood of tiny frames costs no per-frame allocation.
//! - [`SparePayloads`]: the buffers of large payloads the application has read, kept
//!   for the next ones.

use std::collections::VecDeque;
use std::io::IoSlice;

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

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

    /// Moves up to `out.len()` bytes into `out`; returns how many. Each segment read to
    /// its end (a large payload, or small ones copied together) goes to `done`, which
    /// may keep its buffer for reuse, instead of being dropped.
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

/// Buffers of large received payloads a connection keeps for the next ones, once the
/// application has read them.
///
/// Reading each large payload into a fresh buffer and freeing it once read made glibc's
/// allocator give the top of its heap back to the system and take it again every
/// payload or two (a `brk` system call and page faults each time): 8,400 `brk` calls
/// per GiB, and bulk in a fresh process at half speed.
///
/// Bounds: at most [`SPARE_PAYLOADS`] buffers, each a whole allocation of
/// [`COALESCE_BELOW`] to `max` bytes (the connection's frame size: 1 MiB in all at the
/// default), and only buffers that held data the receive window had admitted. Every
/// [`SPARE_CHECK`] after a large payload was read, the kept buffers are cut to the
/// number reused since the last check, so a connection whose bulk traffic stopped holds
/// none after two checks, and one that reads a large payload now and then holds about
/// as many as it uses.
#[derive(Debug, Default)]
pub(crate) struct SparePayloads {
    bufs: Vec<BytesMut>,
    /// Buffers reused since the last check.
    reused: usize,
    /// When the next check is due, if one is scheduled.
    check_at: Option<Instant>,
}

/// The most payload buffers a connection keeps (see [`SparePayloads`]); fewer left
/// bulk reads at one core allocating and freeing at the heap's top.
pub(crate) const SPARE_PAYLOADS: usize = 64;

/// How often the kept payload buffers are cut to what was reused.
pub(crate) const SPARE_CHECK: Duration = Duration::from_secs(10);

impl SparePayloads {
    /// Keeps the buffer of `payload`, read to its end, if nothing else holds it, its
    /// whole allocation is of [`COALESCE_BELOW`] to `max` bytes and there is room.
    pub(crate) fn keep(&mut self, payload: Bytes, max: usize) {
        if self.bufs.len() >= SPARE_PAYLOADS {
            return;
        }
        if let Ok(buf) = payload.try_into_mut() {
            // The whole allocation, whatever part of it the payload used or was split
            // from: its capacity is what the buffer holds on to.
            let mut whole = Vec::from(buf);
            whole.clear();
            if (COALESCE_BELOW..=max).contains(&whole.capacity()) {
                // Through `Bytes`, which takes the allocation as it is.
                self.bufs.push(BytesMut::from(Bytes::from(whole)));
            }
        }
    }

    /// A buffer for a large payload of `len` bytes: the last kept one if it holds
    /// between `len` and twice that, else a new one of exactly `len`. Schedules the next
    /// check from `now` if none is.
    pub(crate) fn take(&mut self, len: usize, now: Instant) -> BytesMut {
        self.check_at.get_or_insert(now + SPARE_CHECK);
        if self
            .bufs
            .last()
            .is_some_and(|buf| (len..=2 * len).contains(&buf.capacity()))
            && let Some(buf) = self.bufs.pop()
        {
            self.reused += 1;
            return buf;
        }
        BytesMut::with_capacity(len)
    }

    /// When [`check`](Self::check) is due next.
    pub(crate) fn check_at(&self) -> Option<Instant> {
        self.check_at
    }

    /// Cuts the kept buffers to the number reused since the last check, when due.
    pub(crate) fn check(&mut self, now: Instant) {
        if self.check_at.is_none_or(|at| now < at) {
            return;
        }
        self.bufs.truncate(std::mem::take(&mut self.reused));
        self.check_at = (!self.bufs.is_empty()).then(|| now + SPARE_CHECK);
    }

    /// Buffers kept, for tests.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> &[BytesMut] {
        &self.bufs
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

    #[test]
    fn a_kept_payload_buffer_is_its_whole_allocation_after_a_smaller_payload() {
        let now = Instant::now();
        let mut spare = SparePayloads::default();
        spare.keep(Bytes::from(vec![1u8; 8 * 1024]), 16 * 1024);
        // Reused for a payload of 5000 bytes, read to its end, kept again: still 8 KiB.
        let mut buf = spare.take(5000, now);
        assert_eq!(buf.capacity(), 8 * 1024);
        buf.extend_from_slice(&[2u8; 5000]);
        let mut payload = buf.freeze();
        payload.advance(5000);
        spare.keep(payload, 16 * 1024);
        assert_eq!(spare.kept()[0].capacity(), 8 * 1024);
        assert!(spare.kept()[0].is_empty());
    }

    #[test]
    fn a_segment_still_shared_or_of_a_larger_allocation_or_past_the_cap_is_not_kept() {
        let mut spare = SparePayloads::default();
        let shared = Bytes::from(vec![1u8; 8 * 1024]);
        let other = shared.clone();
        spare.keep(shared, 16 * 1024);
        assert!(spare.kept().is_empty(), "another handle still reads it");
        drop(other);
        // A small segment split off a large tail: its allocation is the tail's.
        let mut tail = BytesMut::with_capacity(256 * 1024);
        tail.extend_from_slice(&[3u8; 6 * 1024]);
        let segment = tail.split().freeze();
        drop(tail);
        spare.keep(segment, 16 * 1024);
        assert!(spare.kept().is_empty(), "pins 256 KiB");
        spare.keep(Bytes::from(vec![1u8; 1024]), 16 * 1024);
        assert!(spare.kept().is_empty(), "too small to be a large payload's");
        for _ in 0..SPARE_PAYLOADS + 3 {
            spare.keep(Bytes::from(vec![1u8; 8 * 1024]), 16 * 1024);
        }
        assert_eq!(spare.kept().len(), SPARE_PAYLOADS);
    }

    #[test]
    fn a_check_cuts_kept_buffers_to_those_reused_since_the_last() {
        let t0 = Instant::now();
        let mut spare = SparePayloads::default();
        assert_eq!(spare.check_at(), None);
        let bufs: Vec<BytesMut> = (0..5).map(|_| spare.take(8 * 1024, t0)).collect();
        assert_eq!(spare.check_at(), Some(t0 + SPARE_CHECK));
        for mut buf in bufs {
            buf.extend_from_slice(&[0u8; 8 * 1024]);
            spare.keep(buf.freeze(), 16 * 1024);
        }
        // Two reused in the first interval: two stay.
        let a = spare.take(8 * 1024, t0);
        let b = spare.take(8 * 1024, t0);
        spare.keep(a.freeze(), 16 * 1024);
        spare.keep(b.freeze(), 16 * 1024);
        spare.check(t0 + SPARE_CHECK / 2);
        assert_eq!(spare.kept().len(), 5, "not due yet");
        spare.check(t0 + SPARE_CHECK);
        assert_eq!(spare.kept().len(), 2);
        assert_eq!(spare.check_at(), Some(t0 + 2 * SPARE_CHECK));
        // None reused in the next: none stay, and no check is scheduled.
        spare.check(t0 + 2 * SPARE_CHECK);
        assert!(spare.kept().is_empty());
        assert_eq!(spare.check_at(), None);
        // A payload less than half a kept buffer's size gets a buffer of its own.
        spare.keep(Bytes::from(vec![1u8; 16 * 1024]), 16 * 1024);
        assert_eq!(spare.take(5000, t0).capacity(), 5000);
        assert_eq!(spare.kept().len(), 1);
    }
}
