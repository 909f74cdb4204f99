//! Length-delimited message framing: a 4-byte big-endian length, then the message.
//!
//! [`MessageCodec`] is tokio-util's [`LengthDelimitedCodec`] with a typed error: the
//! declared length is checked against the configured maximum before any buffer is
//! reserved for it, so a hostile length prefix costs the receiver nothing.
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

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The length prefix: a u32, big-endian.
const LENGTH_FIELD_BYTES: usize = 4;

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
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has consumed a length prefix and waits for the message body.
    in_message: bool,
}

impl MessageCodec {
    /// A codec that refuses messages longer than `max` bytes (capped at `u32::MAX`).
    pub fn new(max: usize) -> Self {
        let max = max.min(u32::MAX as usize);
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_FIELD_BYTES)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        Self {
            inner,
            max,
            in_message: false,
        }
    }

    /// The largest message accepted.
    pub fn max_message_size(&self) -> usize {
        self.max
    }
}

impl Decoder for MessageCodec {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        // Check the declared length ourselves before the inner codec reads it, so the
        // error is typed and nothing is reserved for an oversized message.
        let at_prefix = !self.in_message && src.len() >= LENGTH_FIELD_BYTES;
        if at_prefix {
            let len = (&src[..LENGTH_FIELD_BYTES]).get_u32() as usize;
            if len > self.max {
                return Err(FramingError::TooLarge { len, max: self.max });
            }
        }
        let msg = self.inner.decode(src)?;
        // The inner codec consumes a whole prefix at once, and only when it has one.
        self.in_message = msg.is_none() && (self.in_message || at_prefix);
        Ok(msg.map(BytesMut::freeze))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() && !self.in_message => Ok(None),
            None => Err(FramingError::Truncated(src.len())),
        }
    }
}

impl Encoder<Bytes> for MessageCodec {
    type Error = FramingError;

    fn encode(&mut self, msg: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        if msg.len() > self.max {
            return Err(FramingError::TooLarge {
                len: msg.len(),
                max: self.max,
            });
        }
        Ok(self.inner.encode(msg, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
