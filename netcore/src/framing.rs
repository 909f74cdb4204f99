//! Length-delimited message framing: a 4-byte big-endian length, then the message.
//!
//! [`MessageCodec`] frames messages for tokio-util's `Framed`, `FramedRead` and
//! `FramedWrite`, with a typed error: the declared length is checked against the
//! configured maximum before any buffer is reserved for it, so a hostile length prefix
//! costs the receiver nothing. It parses the prefix itself rather than through
//! tokio-util's general `LengthDelimitedCodec`: the format has one fixed header, and
//! the general codec's configurable header handling costs small messages measurably
//! (benches/README.md).
//!
//! For a stream that carries one message each way (an RPC), [`MessageCodec::read_message`]
//! and [`MessageCodec::write_message`] read and write one message straight on the stream,
//! with no codec buffers: a `Framed` costs two allocations per stream, and its decoder
//! one more per message.
//!
//! For a reader that hands many messages on at once (DirectSend's),
//! [`MessageCodec::frame_len`] measures and checks the frames in its buffer, and
//! [`MessageCodec::split_frame`] later splits them off the frozen buffer without copying.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use netcore::framing::{FramingError, MessageCodec};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = MessageCodec::new(16);
//! let mut wire = BytesMut::new();
//! codec.encode(Bytes::from_static(b"hello"), &mut wire).unwrap();
//! assert_eq!(&wire[..], b"\0\0\0\x05hello");
//! assert_eq!(codec.decode(&mut wire).unwrap().unwrap(), Bytes::from_static(b"hello"));
//!
//! let mut hostile = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
//! assert!(matches!(codec.decode(&mut hostile), Err(FramingError::TooLarge { .. })));
//! ```

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// The bytes of a frame's length prefix: a u32, big-endian.
pub const LENGTH_FIELD_BYTES: usize = 4;

/// A message of up to this many bytes, with its prefix, is written from one buffer on
/// the stack, in one write call.
const SMALL_MESSAGE: usize = 512;

/// The first buffer of a message read by [`MessageCodec::read_message`] holds at most
/// this many bytes; a message of up to this length gets a buffer of exactly its length.
const READ_STEP: usize = 64 * 1024;

/// Why a message could not be framed or unframed.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// A message (declared by the remote or given to send) is over the maximum.
    #[error("message of {len} bytes is over the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a message; holds the bytes of it received.
    #[error("stream ended inside a message ({0} bytes of it received)")]
    Truncated(usize),
    /// The underlying I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A codec of u32-big-endian-length-prefixed messages of at most `max` bytes.
#[derive(Debug, Clone)]
pub struct MessageCodec {
    max: usize,
}

impl MessageCodec {
    /// A codec that refuses messages longer than `max` bytes (capped at `u32::MAX`).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.min(u32::MAX as usize),
        }
    }

    /// The largest message accepted.
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    /// Puts the length prefix of a `len`-byte message into `dst`; the message itself
    /// follows it. For a writer that sends the payload on its own (a large message,
    /// without copying it) or packs many messages into one buffer.
    pub fn write_prefix(&self, len: usize, dst: &mut BytesMut) -> Result<(), FramingError> {
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        // `max` is at most `u32::MAX`, so the length fits the field.
        dst.put_uint(len as u64, LENGTH_FIELD_BYTES);
        Ok(())
    }

    /// The length of the frame (prefix and message) that starts `buf`, once its prefix
    /// is there (`None` before), checked against the maximum; for a reader that hands
    /// on many whole frames as one buffer rather than one `Bytes` per message. The frame
    /// is whole when `buf` holds at least that many bytes.
    #[inline]
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        let Some(prefix) = buf.first_chunk::<LENGTH_FIELD_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        Ok(Some(LENGTH_FIELD_BYTES + len))
    }

    /// Splits the first message off `frames`, whole frames back to back (checked with
    /// [`Self::frame_len`] when they were read), without copying it. `None` once
    /// `frames` holds no whole frame; what is left is then not a frame and stays.
    #[inline]
    pub fn split_frame(frames: &mut Bytes) -> Option<Bytes> {
        let prefix = frames.first_chunk::<LENGTH_FIELD_BYTES>()?;
        let whole = LENGTH_FIELD_BYTES.checked_add(u32::from_be_bytes(*prefix) as usize)?;
        if frames.len() < whole {
            return None;
        }
        let message = frames.slice(LENGTH_FIELD_BYTES..whole);
        frames.advance(whole);
        Some(message)
    }
}

impl MessageCodec {
    /// Reads one message from `io`, for a stream that carries one message each way (an
    /// RPC) and has no use for a `Framed`'s buffers: the prefix is read into an array
    /// and the message into a buffer of its own, which ends exactly its length, so the
    /// returned `Bytes` costs one allocation for a message of up to 64 KiB. The length is
    /// checked against the maximum before anything is allocated, and a larger message's
    /// buffer grows with what arrives (to at most twice what arrived and 64 KiB more,
    /// never past the declared length): a prefix that promises more than is sent costs
    /// little.
    ///
    /// Returns `Ok(None)` if the stream ended before the message began.
    ///
    /// # Errors
    /// [`FramingError::TooLarge`] for a declared length over the maximum,
    /// [`FramingError::Truncated`] if the stream ends inside the message, and
    /// [`FramingError::Io`] if reading fails.
    pub async fn read_message<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<Bytes>, FramingError> {
        let mut prefix = [0u8; LENGTH_FIELD_BYTES];
        let mut have = 0;
        while have < LENGTH_FIELD_BYTES {
            match io.read(&mut prefix[have..]).await? {
                0 if have == 0 => return Ok(None),
                0 => return Err(FramingError::Truncated(have)),
                n => have += n,
            }
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        let mut msg = Vec::with_capacity(len.min(READ_STEP));
        while msg.len() < len {
            if msg.capacity() == msg.len() {
                let grown = (msg.capacity() * 2).max(msg.capacity() + READ_STEP);
                msg.reserve_exact(grown.min(len) - msg.len());
            }
            let room = (len - msg.len()).min(msg.capacity() - msg.len());
            if io.read_buf(&mut (&mut msg).limit(room)).await? == 0 {
                return Err(FramingError::Truncated(msg.len()));
            }
        }
        Ok(Some(Bytes::from(msg)))
    }

    /// Writes one `len`-byte message, which `fill` puts into the slice it is given
    /// (exactly `len` bytes), behind its prefix. A small message leaves from a buffer on
    /// the stack, in one write call; a larger one from a buffer allocated for it. For
    /// a message encoded straight into its frame, such as a protobuf one.
    ///
    /// # Errors
    /// [`FramingError::TooLarge`] if `len` is over the maximum (nothing is written), and
    /// [`FramingError::Io`] if writing fails.
    pub async fn write_message_with<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), FramingError> {
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        let whole = LENGTH_FIELD_BYTES + len;
        // `max` is at most `u32::MAX`, so the length fits the field.
        let prefix = (len as u32).to_be_bytes();
        if whole <= SMALL_MESSAGE {
            let mut frame = [0u8; SMALL_MESSAGE];
            frame[..LENGTH_FIELD_BYTES].copy_from_slice(&prefix);
            fill(&mut frame[LENGTH_FIELD_BYTES..whole]);
            io.write_all(&frame[..whole]).await?;
        } else {
            let mut frame = vec![0u8; whole];
            frame[..LENGTH_FIELD_BYTES].copy_from_slice(&prefix);
            fill(&mut frame[LENGTH_FIELD_BYTES..]);
            io.write_all(&frame).await?;
        }
        Ok(())
    }

    /// Writes `msg` behind its prefix: a small message in one write call from a buffer
    /// on the stack, a larger one as the prefix and then `msg` itself, not copied.
    ///
    /// # Errors
    /// [`FramingError::TooLarge`] if `msg` is over the maximum (nothing is written), and
    /// [`FramingError::Io`] if writing fails.
    pub async fn write_message<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        msg: &[u8],
    ) -> Result<(), FramingError> {
        if LENGTH_FIELD_BYTES + msg.len() <= SMALL_MESSAGE {
            return self
                .write_message_with(io, msg.len(), |dst| dst.copy_from_slice(msg))
                .await;
        }
        if msg.len() > self.max {
            return Err(FramingError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        io.write_all(&(msg.len() as u32).to_be_bytes()).await?;
        io.write_all(msg).await?;
        Ok(())
    }
}

impl Decoder for MessageCodec {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        let Some(prefix) = src.first_chunk::<LENGTH_FIELD_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        let whole = LENGTH_FIELD_BYTES + len;
        if src.len() < whole {
            // Room for the rest of this message and no more; its length passed the
            // check above.
            src.reserve(whole - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_FIELD_BYTES);
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            // Past a whole prefix, what follows it is the message's received part.
            None => Err(FramingError::Truncated(
                src.len()
                    .checked_sub(LENGTH_FIELD_BYTES)
                    .unwrap_or(src.len()),
            )),
        }
    }
}

impl Encoder<Bytes> for MessageCodec {
    type Error = FramingError;

    fn encode(&mut self, msg: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        self.write_prefix(msg.len(), dst)?;
        dst.extend_from_slice(&msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_frames_are_measured_checked_and_split_in_place() {
        let codec = MessageCodec::new(8);
        let mut wire = BytesMut::new();
        for msg in [&b"one"[..], b"", b"three"] {
            codec.write_prefix(msg.len(), &mut wire).unwrap();
            wire.extend_from_slice(msg);
        }
        assert_eq!(
            codec.frame_len(&wire[..3]).unwrap(),
            None,
            "prefix not there"
        );
        assert_eq!(codec.frame_len(&wire).unwrap(), Some(7));
        assert_eq!(codec.frame_len(&wire[7..]).unwrap(), Some(4));
        assert!(matches!(
            codec.frame_len(b"\0\0\0\x09"),
            Err(FramingError::TooLarge { len: 9, max: 8 })
        ));
        // The last frame is cut short: the two before it split off, the rest stays.
        let mut frames = wire.freeze().slice(..17);
        let base = frames.as_ptr() as usize;
        let first = MessageCodec::split_frame(&mut frames).unwrap();
        assert_eq!(&first[..], b"one");
        assert_eq!(first.as_ptr() as usize, base + 4, "no copy");
        assert_eq!(
            MessageCodec::split_frame(&mut frames).unwrap(),
            Bytes::new()
        );
        assert_eq!(MessageCodec::split_frame(&mut frames), None);
        assert_eq!(&frames[..], b"\0\0\0\x05th");
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let mut codec = MessageCodec::new(1024);
        let mut src = BytesMut::with_capacity(8);
        src.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        let capacity_before = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(
            err,
            FramingError::TooLarge {
                len: 0x7fff_ffff,
                max: 1024
            }
        ));
        assert_eq!(src.capacity(), capacity_before, "nothing was reserved");
    }

    #[test]
    fn message_at_the_maximum_passes_and_one_over_fails() {
        let mut codec = MessageCodec::new(4);
        let mut dst = BytesMut::new();
        codec.encode(Bytes::from_static(b"abcd"), &mut dst).unwrap();
        assert!(matches!(
            codec.encode(Bytes::from_static(b"abcde"), &mut dst),
            Err(FramingError::TooLarge { len: 5, max: 4 })
        ));
        assert_eq!(codec.decode(&mut dst).unwrap().unwrap(), &b"abcd"[..]);
    }

    #[test]
    fn a_prefix_written_alone_frames_like_encode() {
        let mut codec = MessageCodec::new(8);
        let mut encoded = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"abc"), &mut encoded)
            .unwrap();
        let mut by_parts = BytesMut::new();
        codec.write_prefix(3, &mut by_parts).unwrap();
        by_parts.extend_from_slice(b"abc");
        assert_eq!(by_parts, encoded);
        assert!(matches!(
            codec.write_prefix(9, &mut by_parts),
            Err(FramingError::TooLarge { len: 9, max: 8 })
        ));
        assert_eq!(by_parts, encoded, "a refused prefix writes nothing");
    }

    #[test]
    fn eof_inside_a_message_is_truncated() {
        let mut codec = MessageCodec::new(64);
        let mut src = BytesMut::from(&[0, 0, 0, 9, 1, 2][..]);
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(FramingError::Truncated(2))
        ));
        let mut codec = MessageCodec::new(64);
        let mut prefix_only = BytesMut::from(&[0, 0, 0, 9][..]);
        assert!(matches!(
            codec.decode_eof(&mut prefix_only),
            Err(FramingError::Truncated(0))
        ));
        let mut empty = BytesMut::new();
        assert!(
            MessageCodec::new(64)
                .decode_eof(&mut empty)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn read_and_write_message_round_trip_small_large_and_empty() {
        let codec = MessageCodec::new(READ_STEP * 3);
        let (mut a, mut b) = tokio::io::duplex(1024);
        let small = vec![1u8; 32];
        let large = (0..READ_STEP * 2 + 5).map(|i| i as u8).collect::<Vec<_>>();
        let writer = {
            let codec = codec.clone();
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                codec.write_message(&mut a, &small).await.unwrap();
                codec.write_message(&mut a, &large).await.unwrap();
                codec.write_message(&mut a, b"").await.unwrap();
                codec
                    .write_message_with(&mut a, 3, |dst| dst.copy_from_slice(b"xyz"))
                    .await
                    .unwrap();
                // Encoded in place beyond the stack buffer's size.
                codec
                    .write_message_with(&mut a, SMALL_MESSAGE, |dst| dst.fill(9))
                    .await
                    .unwrap();
            })
        };
        assert_eq!(codec.read_message(&mut b).await.unwrap().unwrap(), small);
        assert_eq!(codec.read_message(&mut b).await.unwrap().unwrap(), large);
        assert!(
            codec
                .read_message(&mut b)
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            codec.read_message(&mut b).await.unwrap().unwrap(),
            &b"xyz"[..]
        );
        let big = codec.read_message(&mut b).await.unwrap().unwrap();
        assert!(big.len() == SMALL_MESSAGE && big.iter().all(|&x| x == 9));
        writer.await.unwrap();
        // The writer is gone: a clean end before a message.
        assert!(codec.read_message(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn read_message_buffers_end_exactly_at_the_message_length() {
        let codec = MessageCodec::new(1 << 20);
        for len in [0, 32, READ_STEP, READ_STEP + 1, 3 * READ_STEP + 1] {
            let mut wire = (len as u32).to_be_bytes().to_vec();
            wire.resize(LENGTH_FIELD_BYTES + len, 5);
            let msg = codec.read_message(&mut &wire[..]).await.unwrap().unwrap();
            assert_eq!(msg.len(), len);
            if len > 0 {
                // The allocation behind it is exactly the message.
                assert_eq!(msg.try_into_mut().unwrap().capacity(), len);
            }
        }
    }

    #[tokio::test]
    async fn read_message_refuses_long_prefixes_and_reports_truncation() {
        let codec = MessageCodec::new(100);
        let mut hostile: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            codec.read_message(&mut hostile).await,
            Err(FramingError::TooLarge {
                len: 0xffff_ffff,
                max: 100
            })
        ));
        assert_eq!(hostile, &[1, 2, 3], "nothing past the prefix was read");
        let mut half_prefix: &[u8] = &[0, 0];
        assert!(matches!(
            codec.read_message(&mut half_prefix).await,
            Err(FramingError::Truncated(2))
        ));
        let mut short: &[u8] = &[0, 0, 0, 9, 1, 2, 3];
        assert!(matches!(
            codec.read_message(&mut short).await,
            Err(FramingError::Truncated(3))
        ));
    }

    #[tokio::test]
    async fn write_message_refuses_oversized_messages_writing_nothing() {
        let codec = MessageCodec::new(4);
        let mut out = Vec::new();
        assert!(matches!(
            codec.write_message(&mut out, b"abcde").await,
            Err(FramingError::TooLarge { len: 5, max: 4 })
        ));
        let codec = MessageCodec::new(SMALL_MESSAGE);
        let over = vec![0u8; SMALL_MESSAGE + 1];
        assert!(matches!(
            codec.write_message(&mut out, &over).await,
            Err(FramingError::TooLarge { .. })
        ));
        assert!(matches!(
            codec
                .write_message_with(&mut out, SMALL_MESSAGE + 1, |_| {})
                .await,
            Err(FramingError::TooLarge { .. })
        ));
        assert!(out.is_empty());
        // What it writes is what the codec encodes.
        codec.write_message(&mut out, b"abc").await.unwrap();
        let mut encoded = BytesMut::new();
        MessageCodec::new(8)
            .encode(Bytes::from_static(b"abc"), &mut encoded)
            .unwrap();
        assert_eq!(out, &encoded[..]);
    }

    proptest! {
        #[test]
        fn messages_round_trip_split_anywhere(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            split in 1usize..64,
        ) {
            let mut codec = MessageCodec::new(300);
            let mut wire = BytesMut::new();
            for m in &msgs {
                codec.encode(Bytes::from(m.clone()), &mut wire).unwrap();
            }
            // Feed the wire bytes in chunks of `split` bytes.
            let mut decoded = Vec::new();
            let mut buf = BytesMut::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(m) = codec.decode(&mut buf).unwrap() {
                    decoded.push(m.to_vec());
                }
            }
            prop_assert_eq!(decoded, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = MessageCodec::new(128);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}
