//! The yamux frame header: 12 bytes, big-endian, before every frame.
//!
//! ```text
//! version u8 (0) | type u8 | flags u16 | stream id u32 | length u32
//! ```
//! For a Data frame `length` is the payload length; for a WindowUpdate it is the credit
//! delta; for a Ping the opaque value echoed back; for a GoAway the error code. Only Data
//! frames carry a payload.

use bytes::{Buf, BufMut};

use super::error::ProtocolError;

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 12;

/// The only yamux version there is.
const VERSION: u8 = 0;

/// The stream id of session-level frames (Ping, GoAway).
pub(crate) const SESSION_ID: u32 = 0;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameType {
    /// Stream data; `length` payload bytes follow the header.
    Data,
    /// More send credit for a stream (or a SYN/ACK/FIN/RST without data).
    WindowUpdate,
    /// A ping (SYN) or its answer (ACK); `length` is the opaque value.
    Ping,
    /// The sender will open and accept no more streams; `length` is the reason code.
    GoAway,
}

impl FrameType {
    fn code(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::WindowUpdate => 1,
            FrameType::Ping => 2,
            FrameType::GoAway => 3,
        }
    }
}

/// Flags of a header; several may be set at once.
pub(crate) mod flags {
    /// Opens a stream (or asks for a pong).
    pub(crate) const SYN: u16 = 1;
    /// Acknowledges a stream (or answers a ping).
    pub(crate) const ACK: u16 = 2;
    /// Half-closes the sender's side of a stream.
    pub(crate) const FIN: u16 = 4;
    /// Resets a stream at once.
    pub(crate) const RST: u16 = 8;
}

/// GoAway reason codes.
pub(crate) mod go_away {
    /// A normal close.
    pub(crate) const NORMAL: u32 = 0;
    /// The remote broke the protocol.
    pub(crate) const PROTOCOL_ERROR: u32 = 1;
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ty: FrameType,
    pub(crate) flags: u16,
    pub(crate) stream_id: u32,
    pub(crate) length: u32,
}

impl Header {
    /// A header with the given fields.
    pub(crate) fn new(ty: FrameType, flags: u16, stream_id: u32, length: u32) -> Self {
        Self {
            ty,
            flags,
            stream_id,
            length,
        }
    }

    /// Whether `flag` is set.
    pub(crate) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Appends the 12 header bytes to `dst`.
    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(VERSION);
        dst.put_u8(self.ty.code());
        dst.put_u16(self.flags);
        dst.put_u32(self.stream_id);
        dst.put_u32(self.length);
    }

    /// Decodes a header from the first [`HEADER_LEN`] bytes of `src`; `Ok(None)` when
    /// fewer are there. Consumes nothing: the caller advances once it took the frame.
    pub(crate) fn decode(src: &[u8]) -> Result<Option<Header>, ProtocolError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut b = &src[..HEADER_LEN];
        let version = b.get_u8();
        if version != VERSION {
            return Err(ProtocolError::BadVersion(version));
        }
        let ty = match b.get_u8() {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            other => return Err(ProtocolError::UnknownFrameType(other)),
        };
        Ok(Some(Header {
            ty,
            flags: b.get_u16(),
            stream_id: b.get_u32(),
            length: b.get_u32(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_encodes_big_endian_in_spec_order() {
        let mut wire = Vec::new();
        Header::new(
            FrameType::WindowUpdate,
            flags::SYN | flags::FIN,
            3,
            0x0102_0304,
        )
        .encode(&mut wire);
        assert_eq!(wire, [0, 1, 0, 5, 0, 0, 0, 3, 1, 2, 3, 4]);
    }

    #[test]
    fn short_input_is_not_a_header_yet() {
        assert_eq!(Header::decode(&[0; HEADER_LEN - 1]).unwrap(), None);
    }

    #[test]
    fn bad_version_and_unknown_type_are_typed_errors() {
        assert!(matches!(
            Header::decode(&[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::BadVersion(1))
        ));
        assert!(matches!(
            Header::decode(&[0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownFrameType(4))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Header::decode(&bytes);
        }

        #[test]
        fn headers_round_trip(ty in 0u8..4, fl in any::<u16>(), id in any::<u32>(), len in any::<u32>()) {
            let ty = [FrameType::Data, FrameType::WindowUpdate, FrameType::Ping, FrameType::GoAway][ty as usize];
            let h = Header::new(ty, fl, id, len);
            let mut wire = Vec::new();
            h.encode(&mut wire);
            prop_assert_eq!(Header::decode(&wire).unwrap(), Some(h));
        }
    }
}
