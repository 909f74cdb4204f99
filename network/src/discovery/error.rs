//! Why discovery drops a note or a message.

use netcore::PeerId;
use netcore::address::AddressError;

use crate::reputation::Misbehaviour;

/// Why a note (or a whole push message) was dropped. Each is counted by
/// [`NoteError::label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The push message is larger than the configured maximum.
    #[error("message of {len} bytes is over the maximum of {max}")]
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The push message does not decode.
    #[error("message does not decode: {0}")]
    Malformed(#[from] proto::DecodeError),
    /// The push message carries more notes than this node holds.
    #[error("{count} notes in one message, over the maximum of {max}")]
    TooManyNotes {
        /// Notes in the message.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// The note's peer id is not 32 bytes or not a valid ed25519 key.
    #[error("invalid peer id")]
    InvalidPeerId,
    /// The signature is not 64 bytes.
    #[error("invalid signature encoding")]
    InvalidSignature,
    /// An address does not parse.
    #[error("invalid address: {0}")]
    InvalidAddress(#[from] AddressError),
    /// The note lists more addresses than allowed.
    #[error("{count} addresses in one note, over the maximum of {max}")]
    TooManyAddresses {
        /// Addresses in the note.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// An address names a peer other than the one the note is about.
    #[error("an address names peer {0}, not the note's peer")]
    PeerMismatch(PeerId),
    /// The signature does not verify against the note's peer id.
    #[error("bad signature")]
    BadSignature,
    /// Mutual mode: the peer is not in the trusted set.
    #[error("peer {0} is not trusted")]
    Untrusted(PeerId),
    /// The book is full and the note is about a new peer.
    #[error("the note book is full")]
    BookFull,
}

impl NoteError {
    /// The misbehaviour of the peer that sent the note, if any. Honest nodes verify a
    /// note before they keep or relay it, so even a relayed note with a bad signature is
    /// the sender's fault; a note about an untrusted peer or a full book is not.
    pub fn misbehaviour(&self) -> Option<Misbehaviour> {
        match self {
            NoteError::MessageTooLarge { .. } => Some(Misbehaviour::OversizedMessage),
            NoteError::BadSignature => Some(Misbehaviour::BadSignature),
            NoteError::Malformed(_)
            | NoteError::TooManyNotes { .. }
            | NoteError::InvalidPeerId
            | NoteError::InvalidSignature
            | NoteError::InvalidAddress(_)
            | NoteError::TooManyAddresses { .. }
            | NoteError::PeerMismatch(_) => Some(Misbehaviour::UndecodableMessage),
            NoteError::Untrusted(_) | NoteError::BookFull => None,
        }
    }

    /// A short label for the `reason` of `network_discovery_notes_dropped_total`.
    pub fn label(&self) -> &'static str {
        match self {
            NoteError::MessageTooLarge { .. } => "message_too_large",
            NoteError::Malformed(_) => "malformed",
            NoteError::TooManyNotes { .. } => "too_many_notes",
            NoteError::InvalidPeerId => "invalid_peer_id",
            NoteError::InvalidSignature => "invalid_signature",
            NoteError::InvalidAddress(_) => "invalid_address",
            NoteError::TooManyAddresses { .. } => "too_many_addresses",
            NoteError::PeerMismatch(_) => "peer_mismatch",
            NoteError::BadSignature => "bad_signature",
            NoteError::Untrusted(_) => "untrusted",
            NoteError::BookFull => "book_full",
        }
    }
}
