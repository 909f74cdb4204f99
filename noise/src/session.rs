//! The framing and crypto state of an established Noise session, with no I/O.
//!
//! A frame on the wire is a u16 big-endian length and that many bytes of ciphertext
//! (plaintext and a 16-byte tag), at most
//! [`MAX_NOISE_MESSAGE_LEN`](crate::MAX_NOISE_MESSAGE_LEN). The session keeps
//! four buffers, each allocated on first use and grown only as far as the traffic needs
//! (never reallocated per frame), and each let go once a burst is over (a large buffer
//! nothing needed for [`LARGE_BUFFER_QUIET`](crate::LARGE_BUFFER_QUIET)), so an idle
//! connection holds little:
//!
//! - `plain_out`: plaintext written but not yet sealed; small writes accumulate here so
//!   that many become one full frame;
//! - `wire_out`: one sealed frame (length and ciphertext) being written to the socket;
//!   the cipher writes straight into it after the length, so a frame is never copied
//!   after encryption;
//! - `wire_in`: ciphertext read from the socket,
//!   [`INITIAL_READ_BUFFER_LEN`](crate::INITIAL_READ_BUFFER_LEN) bytes at first and
//!   [`READ_BUFFER_LEN`](crate::READ_BUFFER_LEN) once a frame does not fit or a read
//!   fills it, so one read call takes all that is available; frames split at any byte are
//!   reassembled here. The socket reads into its spare capacity, which is not zeroed
//!   first: the small buffer is let go whenever it is empty and the socket has nothing
//!   more, so an idle connection holds no read buffer, and a connection of small
//!   messages takes it again per wake-up, where zeroing it would cost more than the
//!   read. The large one is kept while reads need it (a fast sender refills it at
//!   once) and let go once none has for
//!   [`LARGE_BUFFER_QUIET`](crate::LARGE_BUFFER_QUIET). The large buffer's
//!   data starts on a page boundary: the
//!   kernel's copy into it (`rep movsb`) runs at a fraction of its speed on some CPUs
//!   when the destination sits a few bytes past the source modulo 4 KiB, and where the
//!   heap placed the buffer would otherwise decide that for the whole life of a
//!   connection;
//! - `plain_in`: with snow's backend, a decrypted frame that the reader's buffer was too
//!   small to take whole; allocated the first time that happens (once per session, never
//!   per frame), since a reader with a large buffer never needs it.
//!   A reader with room for a whole frame gets it straight into its buffer.
//!
//! With the ring backend a frame is opened in place in `wire_in` and its plaintext
//! copied once to the reader, whole or in as many reads as the reader's buffer needs
//! (`plain_in` is never used); with snow's backend the cipher copies the ciphertext into
//! the reader's buffer, or `plain_in`, and decrypts it there. Payload copies go through
//! [`netcore::copy`], which stays fast where `memcpy` has a slow case.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::ReadBuf;
use tokio::time::Instant;

use crate::cipher::TransportCipher;
use quiet::Quiet;

use crate::constants::{
    INITIAL_READ_BUFFER_LEN, LENGTH_PREFIX_LEN, MAX_FRAME_PAYLOAD_LEN, MAX_NOISE_MESSAGE_LEN,
    MAX_WIRE_FRAME_LEN, READ_BUFFER_LEN, TAG_LEN,
};
use crate::error::FrameError;

/// The page size the large read buffer's data is aligned to.
const PAGE: usize = 4096;

/// What the reader should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// This many plaintext bytes were put into the caller's buffer (its filled part
    /// grew by as many).
    Direct(usize),
    /// A frame was decrypted into the session's buffer; take it with
    /// [`NoiseSession::take_plaintext`].
    Buffered,
    /// No complete frame is buffered: read more from the socket into
    /// [`NoiseSession::read_buf`].
    NeedMore,
}

/// The state of one Noise session: the cipher states and the framing buffers.
pub(crate) struct NoiseSession {
    cipher: TransportCipher,
    /// Grows as writes fill it, up to one frame's plaintext.
    plain_out: Vec<u8>,
    /// Grows to the largest frame sealed so far (in powers of two): a connection that
    /// only ever sends small messages keeps a small buffer. Both write buffers are let
    /// go once no large frame was sealed for a while (`release_write_if_quiet`).
    wire_out: Vec<u8>,
    wire_out_start: usize,
    wire_out_end: usize,
    /// Socket bytes read and not yet decoded: `wire_in[wire_in_start..]`. Its capacity
    /// is 0 until the first read, [`INITIAL_READ_BUFFER_LEN`] then, and
    /// [`READ_BUFFER_LEN`] once a frame does not fit or a read fills it; the socket reads
    /// into the spare capacity, which is never zeroed first.
    wire_in: BytesMut,
    wire_in_start: usize,
    /// The last socket read filled `wire_in`: the sender is fast, so grow it.
    grow_wire_in: bool,
    /// The large read buffer's use: taking it, or holding more than the small one could.
    read_quiet: Quiet,
    /// The large write buffers' use: sealing a frame the small size could not hold.
    write_quiet: Quiet,
    plain_in: Vec<u8>,
    /// The undelivered plaintext: `plain_in[start..end]`, or `wire_in[start..end]` when
    /// `plain_in_wire` (a frame opened in place and not yet handed out whole).
    plain_in_start: usize,
    plain_in_end: usize,
    plain_in_wire: bool,
    /// Set once a frame failed: the read side stays failed.
    read_failure: Option<FrameError>,
}

impl NoiseSession {
    pub(crate) fn new(cipher: TransportCipher) -> Self {
        Self {
            cipher,
            plain_out: Vec::new(),
            wire_out: Vec::new(),
            wire_out_start: 0,
            wire_out_end: 0,
            wire_in: BytesMut::new(),
            wire_in_start: 0,
            grow_wire_in: false,
            read_quiet: Quiet::default(),
            write_quiet: Quiet::default(),
            plain_in: Vec::new(),
            plain_in_start: 0,
            plain_in_end: 0,
            plain_in_wire: false,
            read_failure: None,
        }
    }

    /// A session whose first socket bytes, `read`, were read already (the handshake's
    /// last read, at most [`INITIAL_READ_BUFFER_LEN`] bytes): they are decoded before
    /// the socket is read, from the small read buffer.
    pub(crate) fn with_read(cipher: TransportCipher, read: &[u8]) -> Self {
        let mut session = Self::new(cipher);
        if !read.is_empty() {
            session.wire_in = BytesMut::with_capacity(INITIAL_READ_BUFFER_LEN.max(read.len()));
            session.wire_in.extend_from_slice(read);
            session.filled();
        }
        session
    }

    // ----- Write side -----

    /// Sealed bytes waiting for the socket.
    pub(crate) fn pending_wire(&self) -> &[u8] {
        &self.wire_out[self.wire_out_start..self.wire_out_end]
    }

    /// Marks `n` bytes of [`pending_wire`](Self::pending_wire) as written.
    pub(crate) fn advance_wire(&mut self, n: usize) {
        self.wire_out_start = (self.wire_out_start + n).min(self.wire_out_end);
        if self.wire_out_start == self.wire_out_end {
            self.wire_out_start = 0;
            self.wire_out_end = 0;
        }
    }

    /// Plaintext written and not yet sealed.
    fn unsealed_len(&self) -> usize {
        self.plain_out.len().saturating_sub(LENGTH_PREFIX_LEN)
    }

    /// Whether the plaintext buffer holds a full frame's worth.
    pub(crate) fn unsealed_full(&self) -> bool {
        self.unsealed_len() == MAX_FRAME_PAYLOAD_LEN
    }

    /// Takes plaintext from `data`: returns how many bytes were taken (at least one if
    /// `data` is not empty, unless a full frame waits to be sealed).
    ///
    /// A write of a full frame or more, with nothing buffered and the wire free, is
    /// sealed straight from `data` without being copied into the buffer.
    pub(crate) fn write_plaintext(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        if self.plain_out.is_empty()
            && self.pending_wire().is_empty()
            && data.len() >= MAX_FRAME_PAYLOAD_LEN
        {
            self.seal_from(&data[..MAX_FRAME_PAYLOAD_LEN])?;
            return Ok(MAX_FRAME_PAYLOAD_LEN);
        }
        let n = data.len().min(MAX_FRAME_PAYLOAD_LEN - self.unsealed_len());
        if n == 0 {
            return Ok(0);
        }
        // Room for the length prefix in front and the tag behind, so that the frame can
        // be sealed where it lies; growth is capped at one whole frame.
        let start = if self.plain_out.is_empty() {
            LENGTH_PREFIX_LEN
        } else {
            self.plain_out.len()
        };
        let needed = start + n + TAG_LEN;
        if needed > self.plain_out.capacity() {
            let size = (self.plain_out.capacity() * 2)
                .min(MAX_WIRE_FRAME_LEN)
                .max(needed);
            self.plain_out.reserve_exact(size - self.plain_out.len());
        }
        if self.plain_out.is_empty() {
            self.plain_out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
        }
        for piece in data[..n].chunks(netcore::copy::COPY_CHUNK) {
            self.plain_out.extend_from_slice(piece);
        }
        Ok(n)
    }

    /// Seals the buffered plaintext into one frame, once the wire buffer is free.
    /// Returns whether a frame was sealed.
    pub(crate) fn seal(&mut self) -> Result<bool, FrameError> {
        if self.unsealed_len() == 0 || !self.pending_wire().is_empty() {
            return Ok(false);
        }
        if self.cipher.opens_in_place() {
            // Sealed where it lies, behind the room left for its length; then the two
            // buffers trade places: the sealed frame goes to the wire, and the free wire
            // buffer takes the next plaintext.
            let len = self.unsealed_len();
            if LENGTH_PREFIX_LEN + len + TAG_LEN > INITIAL_READ_BUFFER_LEN {
                self.write_quiet.used();
            }
            let prefix = u16::try_from(len + TAG_LEN)
                .map_err(|_| FrameError::Seal)?
                .to_be_bytes();
            self.plain_out.resize(LENGTH_PREFIX_LEN + len + TAG_LEN, 0);
            if let Err(e) = self
                .cipher
                .seal_in_place(&mut self.plain_out[LENGTH_PREFIX_LEN..], len)
            {
                // Back to the plaintext alone; the session cannot send any more anyway.
                self.plain_out.truncate(LENGTH_PREFIX_LEN + len);
                return Err(e);
            }
            self.plain_out[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix);
            std::mem::swap(&mut self.plain_out, &mut self.wire_out);
            self.wire_out_start = 0;
            self.wire_out_end = self.wire_out.len();
            self.plain_out.clear();
            return Ok(true);
        }
        let plain = std::mem::take(&mut self.plain_out);
        let result = self.seal_from(&plain[LENGTH_PREFIX_LEN..]);
        self.plain_out = plain;
        self.plain_out.clear();
        result.map(|()| true)
    }

    fn seal_from(&mut self, plain: &[u8]) -> Result<(), FrameError> {
        if LENGTH_PREFIX_LEN + plain.len() + TAG_LEN > INITIAL_READ_BUFFER_LEN {
            self.write_quiet.used();
        }
        let needed = LENGTH_PREFIX_LEN + plain.len() + TAG_LEN;
        if self.wire_out.len() < needed {
            let size = needed
                .next_power_of_two()
                .min(MAX_WIRE_FRAME_LEN)
                .max(needed);
            self.wire_out.reserve_exact(size - self.wire_out.len());
            self.wire_out.resize(size, 0);
        }
        // Callers pass at most MAX_FRAME_PAYLOAD_LEN bytes, so the frame fits the u16
        // prefix; a longer one is refused before anything is sealed.
        let prefix = u16::try_from(plain.len() + TAG_LEN)
            .map_err(|_| FrameError::Seal)?
            .to_be_bytes();
        let len = self
            .cipher
            .seal(plain, &mut self.wire_out[LENGTH_PREFIX_LEN..])?;
        self.wire_out[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix);
        self.wire_out_start = 0;
        self.wire_out_end = LENGTH_PREFIX_LEN + len;
        Ok(())
    }

    /// Lets go of the write buffers when everything written went out and no frame
    /// larger than [`INITIAL_READ_BUFFER_LEN`] was sealed for [`LARGE_BUFFER_QUIET`]:
    /// called after a flush, so a connection whose burst is over gives them back (up to
    /// a frame each), and one whose buffers grew past that size for small frames gets
    /// small ones again. Small ones are kept. `now` is called only while a large one is
    /// held.
    pub(crate) fn release_write_if_quiet(&mut self, now: impl FnOnce() -> Instant) {
        let large =
            self.plain_out.capacity().max(self.wire_out.capacity()) > INITIAL_READ_BUFFER_LEN;
        if !large || !self.plain_out.is_empty() || !self.pending_wire().is_empty() {
            return;
        }
        if self.write_quiet.long_enough(now()) {
            self.plain_out = Vec::new();
            self.wire_out = Vec::new();
            self.wire_out_start = 0;
            self.wire_out_end = 0;
            self.write_quiet = Quiet::default();
        }
    }

    // ----- Read side -----

    /// Decrypted bytes waiting for the reader.
    pub(crate) fn plaintext(&self) -> &[u8] {
        let buffer: &[u8] = if self.plain_in_wire {
            &self.wire_in
        } else {
            &self.plain_in
        };
        &buffer[self.plain_in_start..self.plain_in_end]
    }

    /// Moves buffered plaintext into `out`, as much as it has room for; returns how
    /// many bytes.
    pub(crate) fn take_plaintext(&mut self, out: &mut ReadBuf<'_>) -> usize {
        let available = self.plaintext();
        let n = available.len().min(out.remaining());
        netcore::copy::put_bytes(out, &available[..n]);
        self.plain_in_start += n;
        n
    }

    /// Decodes the next complete frame buffered from the socket into `out` when it fits:
    /// its plaintext when the cipher opens frames in place (ring), its whole ciphertext
    /// otherwise (snow decrypts into the destination, and with less room would allocate
    /// a copy of the frame). A frame that does not fit is decrypted into `plain_in`.
    pub(crate) fn decode(&mut self, out: &mut ReadBuf<'_>) -> Result<Decoded, FrameError> {
        if let Some(failure) = &self.read_failure {
            return Err(failure.clone());
        }
        let result = self.decode_inner(out);
        if let Err(failure) = &result {
            self.read_failure = Some(failure.clone());
        }
        result
    }

    fn decode_inner(&mut self, out: &mut ReadBuf<'_>) -> Result<Decoded, FrameError> {
        if !self.plaintext().is_empty() {
            // The last frame's plaintext comes first.
            return Ok(Decoded::Buffered);
        }
        let buffered = &self.wire_in[self.wire_in_start..];
        let Some(prefix) = buffered.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(Decoded::NeedMore);
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len < TAG_LEN {
            return Err(FrameError::ShorterThanTag(len));
        }
        if buffered.len() < LENGTH_PREFIX_LEN + len {
            return Ok(Decoded::NeedMore);
        }
        let plain_len = len - TAG_LEN;
        // Opened in place, a frame needs room for its plaintext only at the reader;
        // opened by snow, for the whole ciphertext.
        let in_place = self.cipher.opens_in_place();
        let need = if in_place { plain_len } else { len };
        let direct = plain_len > 0 && out.remaining() >= need;
        if !direct && !in_place && self.plain_in.is_empty() {
            // Room for a whole ciphertext, for the same reason as `out` above.
            self.plain_in = vec![0u8; MAX_NOISE_MESSAGE_LEN];
        }
        let start = self.wire_in_start + LENGTH_PREFIX_LEN;
        let decoded = if in_place {
            // Decrypted where it lies, then copied once to where the reader wants it.
            let frame = &mut self.wire_in[start..start + len];
            let n = self.cipher.open_in_place(frame)?;
            let plain = &frame[..n];
            if direct {
                // Into the reader's unfilled space as it is: no zeroing first.
                netcore::copy::put_bytes(out, plain);
                Decoded::Direct(n)
            } else {
                // Handed out from where it lies: `wire_in` is not read into again until
                // the reader has taken all of it.
                self.plain_in_wire = true;
                self.plain_in_start = start;
                self.plain_in_end = start + n;
                Decoded::Buffered
            }
        } else {
            let ciphertext = &self.wire_in[start..start + len];
            if direct {
                let n = self
                    .cipher
                    .open(ciphertext, out.initialize_unfilled_to(len))?;
                out.advance(n);
                Decoded::Direct(n)
            } else {
                let n = self.cipher.open(ciphertext, &mut self.plain_in)?;
                self.plain_in_wire = false;
                self.plain_in_start = 0;
                self.plain_in_end = n;
                Decoded::Buffered
            }
        };
        // Consumed bytes are reclaimed by `read_buf`, not here: a frame opened in place
        // may still be handed out from where it lies.
        self.wire_in_start += LENGTH_PREFIX_LEN + len;
        Ok(decoded)
    }

    /// The buffer to read socket bytes into, with room in its spare capacity: a read
    /// appends at most that much (it must not grow the buffer), then calls
    /// [`filled`](Self::filled). Callers decode every complete frame first.
    ///
    /// Consumed bytes are reclaimed here, and a partial frame is moved to the front if
    /// the room behind it could not hold a whole frame. The buffer is allocated here on
    /// first use, small, and grows to [`READ_BUFFER_LEN`] once a frame does not fit in
    /// it or a read fills it.
    pub(crate) fn read_buf(&mut self) -> &mut BytesMut {
        if self.plain_in_wire {
            // Callers take the plaintext before reading more; should one not, the
            // plaintext moves out of the way rather than be overwritten.
            self.plain_in = self.wire_in[self.plain_in_start..self.plain_in_end].to_vec();
            self.plain_in_start = 0;
            self.plain_in_end = self.plain_in.len();
            self.plain_in_wire = false;
        }
        if self.wire_in_start == self.wire_in.len() {
            self.wire_in.clear();
            self.wire_in_start = 0;
        } else if self.wire_in.capacity() - self.wire_in.len() < MAX_WIRE_FRAME_LEN {
            let held = self.wire_in.len() - self.wire_in_start;
            self.wire_in.copy_within(self.wire_in_start.., 0);
            self.wire_in.truncate(held);
            self.wire_in_start = 0;
        }
        let room = self.wire_in.capacity();
        let frame_does_not_fit = self.wire_in[self.wire_in_start..]
            .first_chunk::<LENGTH_PREFIX_LEN>()
            .is_some_and(|p| {
                self.wire_in_start + LENGTH_PREFIX_LEN + usize::from(u16::from_be_bytes(*p)) > room
            });
        let full = room > 0 && self.wire_in.len() == room;
        let want = if self.grow_wire_in || frame_does_not_fit || full {
            READ_BUFFER_LEN
        } else {
            INITIAL_READ_BUFFER_LEN
        };
        if room < want {
            self.grow_wire_in_to(want);
        }
        self.grow_wire_in = false;
        &mut self.wire_in
    }

    /// Replaces `wire_in` with a buffer of `want` bytes of room, keeping what it holds
    /// (a partial frame, smaller than `want`); the large one's room starts on a page
    /// boundary.
    fn grow_wire_in_to(&mut self, want: usize) {
        let page = if want >= READ_BUFFER_LEN { PAGE } else { 0 };
        let mut grown = BytesMut::with_capacity(want + page);
        if page != 0 {
            // Skip to the first page boundary: the bytes before it are never used.
            let skip = (page - grown.as_ptr() as usize % page) % page;
            grown.put_bytes(0, skip);
            grown.advance(skip);
        }
        grown.extend_from_slice(&self.wire_in[self.wire_in_start..]);
        self.wire_in = grown;
        self.wire_in_start = 0;
        if page != 0 {
            self.read_quiet.used();
        }
    }

    /// Lets go of the read buffer when it holds nothing: called when the socket has no
    /// more to give. The small buffer goes at once, so an idle connection keeps none.
    /// The large one goes once no read has needed it for [`LARGE_BUFFER_QUIET`]: a
    /// fast sender refills it at once, and a connection whose burst is over gives its
    /// 128 KiB back. `now` is called only while the large buffer is held.
    pub(crate) fn release_if_empty(&mut self, now: impl FnOnce() -> Instant) {
        if self.wire_in_start != self.wire_in.len() || !self.plaintext().is_empty() {
            return;
        }
        if self.wire_in.capacity() >= READ_BUFFER_LEN && !self.read_quiet.long_enough(now()) {
            return;
        }
        self.wire_in = BytesMut::new();
        self.plain_in_wire = false;
        self.plain_in_start = 0;
        self.plain_in_end = 0;
        self.wire_in_start = 0;
        self.read_quiet = Quiet::default();
    }

    /// Called after a read appended to [`read_buf`](Self::read_buf)'s buffer: a read
    /// that filled it means a fast sender, so the next read gets the large buffer. The
    /// large buffer counts as needed whenever it holds more than the small one could
    /// (a large read, or a large frame arriving in small pieces).
    pub(crate) fn filled(&mut self) {
        self.grow_wire_in = self.wire_in.len() == self.wire_in.capacity();
        if self.wire_in.len() - self.wire_in_start > INITIAL_READ_BUFFER_LEN {
            self.read_quiet.used();
        }
    }

    /// The capacities of the read buffer and the two write buffers, for tests.
    #[cfg(test)]
    pub(crate) fn buffer_capacities(&self) -> [usize; 3] {
        [
            self.wire_in.capacity(),
            self.plain_out.capacity(),
            self.wire_out.capacity(),
        ]
    }

    /// Called at the end of the socket's stream: an error if it ended inside a frame.
    pub(crate) fn end_of_stream(&self) -> Result<(), FrameError> {
        match self.wire_in.len() - self.wire_in_start {
            0 => Ok(()),
            partial => Err(FrameError::Truncated(partial)),
        }
    }
}

#[cfg(test)]
mod buffer_tests;
mod quiet;
#[cfg(test)]
pub(crate) mod tests;
