//! `PeerId`: the 32-byte name of a peer.

use std::fmt;
use std::str::FromStr;

/// The length of a [`PeerId`] in bytes.
pub const PEER_ID_LENGTH: usize = 32;

/// The name of a peer: 32 bytes (a node's ed25519 public key, as the `noise` crate
/// derives it). Written as 64 lowercase hex digits.
///
/// ```
/// use netcore::PeerId;
///
/// let id: PeerId = "0101010101010101010101010101010101010101010101010101010101010101"
///     .parse()
///     .unwrap();
/// assert_eq!(id, PeerId::new([1; 32]));
/// assert_eq!(id.short_str(), "01010101");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; PEER_ID_LENGTH]);

/// Why a string or byte slice is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// The input does not hold exactly 32 bytes.
    #[error("a peer id is {PEER_ID_LENGTH} bytes or twice as many hex digits, got {0}")]
    WrongLength(usize),
    /// The input holds a character that is not a hex digit.
    #[error("a peer id is written in hex digits")]
    NotHex,
}

impl PeerId {
    /// A peer id from its bytes.
    pub const fn new(bytes: [u8; PEER_ID_LENGTH]) -> Self {
        Self(bytes)
    }

    /// A peer id from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PeerIdError> {
        <[u8; PEER_ID_LENGTH]>::try_from(bytes)
            .map(Self)
            .map_err(|_| PeerIdError::WrongLength(bytes.len()))
    }

    /// The bytes of the peer id.
    pub const fn as_bytes(&self) -> &[u8; PEER_ID_LENGTH] {
        &self.0
    }

    /// The first 4 bytes in hex: enough to tell peers apart in a log line.
    pub fn short_str(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; PEER_ID_LENGTH * 2];
        // The buffer is exactly twice the input, which is all encoding needs.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short_str())
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != PEER_ID_LENGTH * 2 {
            return Err(PeerIdError::WrongLength(s.len()));
        }
        // Uppercase hex is refused so that the text form of an id is unique.
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(PeerIdError::NotHex);
        }
        let mut bytes = [0u8; PEER_ID_LENGTH];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| PeerIdError::NotHex)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_form_round_trips(bytes in any::<[u8; 32]>()) {
            let id = PeerId::new(bytes);
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let _ = s.parse::<PeerId>();
        }
    }

    #[test]
    fn refuses_wrong_length_and_non_hex() {
        assert_eq!("ab".parse::<PeerId>(), Err(PeerIdError::WrongLength(2)));
        let upper = "AB".repeat(32);
        assert_eq!(upper.parse::<PeerId>(), Err(PeerIdError::NotHex));
        let junk = "zz".repeat(32);
        assert_eq!(junk.parse::<PeerId>(), Err(PeerIdError::NotHex));
        assert_eq!(
            PeerId::from_slice(&[0; 31]),
            Err(PeerIdError::WrongLength(31))
        );
    }

    #[test]
    fn short_form_is_the_first_four_bytes() {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(PeerId::new(bytes).short_str(), "deadbeef");
        assert_eq!(format!("{:?}", PeerId::new(bytes)), "PeerId(deadbeef)");
    }
}
