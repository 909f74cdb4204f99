//! The errors of the crate: key files and keys, handshakes and upgrades, frames.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use netcore::transport::TransportError;
use netcore::{NetworkAddress, PeerId};

/// Why an identity key, a key file, a peer id or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed (the file system's error is the source,
    /// which error reports print after this).
    #[error("key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// The key file already exists; generating a key never overwrites one.
    #[error("key file {0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The key file is readable or writable by its group or by others.
    #[error(
        "key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold 64 hex digits and a newline.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The peer id is not the encoding of a point on the ed25519 curve, so no static key
    /// (nor signature check) can be derived from it.
    #[error("peer id {0} is not a valid ed25519 public key")]
    InvalidPeerId(PeerId),
    /// A signature did not verify against the peer id.
    #[error("signature does not verify for peer {0}")]
    BadSignature(PeerId),
}

/// Why a frame of an established session was refused. A `NoiseStream` surfaces it as an
/// [`io::Error`] of kind [`InvalidData`](io::ErrorKind::InvalidData) (or
/// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) for [`Truncated`](Self::Truncated))
/// with this error inside: `err.get_ref().and_then(|e| e.downcast_ref::<FrameError>())`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than an authentication tag, so it cannot be a Noise message.
    #[error("frame of {0} bytes is shorter than an authentication tag")]
    ShorterThanTag(usize),
    /// The frame failed to authenticate: tampered, reordered, or not ours.
    #[error("frame failed to decrypt")]
    Decrypt,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// The session sent or received 2^64 - 1 frames: its nonce is exhausted.
    #[error("the session's nonce is exhausted")]
    NonceExhausted,
    /// The cipher refused to seal a frame (snow's backend: a frame over the maximum).
    #[error("the cipher refused to seal a frame")]
    Seal,
}

impl FrameError {
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self {
            FrameError::Truncated(_) => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// Why a Noise handshake or upgrade failed. Each refusal has its own variant.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The socket failed (or closed) during the handshake.
    #[error("I/O during the Noise handshake: {0}")]
    Io(#[from] io::Error),
    /// The inner transport failed before the handshake started.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The handshake took longer than the configured timeout.
    #[error("Noise handshake timed out after {0:?}")]
    Timeout(Duration),
    /// Too many inbound handshakes are running; this one was refused at once.
    #[error("too many inbound Noise handshakes at once (limit {limit})")]
    TooManyHandshakes {
        /// The configured limit.
        limit: usize,
    },
    /// The address to dial names no peer (`/p2p/<peer id>`), so its key is unknown.
    #[error("address {0} names no peer id (/p2p/...), so the Noise key to expect is unknown")]
    MissingPeerId(NetworkAddress),
    /// The remote is ourselves: we dialed our own id, or a dialer claims our id.
    #[error("refusing a connection to or from ourselves")]
    SelfDial,
    /// The dialer expects a static key that is not ours.
    #[error("the dialer expects static key {} that is not ours", hex::encode(.0))]
    WrongExpectedKey([u8; 32]),
    /// In mutual mode, the dialer's peer id is not in the trusted set.
    #[error("peer {0} is not trusted")]
    UntrustedPeer(PeerId),
    /// The static key inside the handshake is not the one of the peer id the dialer claimed.
    #[error("static key in the handshake does not belong to the claimed peer {0}")]
    StaticKeyMismatch(PeerId),
    /// The dialer's first message carries a timestamp not greater than the last one
    /// accepted from its key: a replay.
    #[error("replayed handshake from {peer}: timestamp {timestamp} is not after {last_accepted}")]
    Replay {
        /// The dialer.
        peer: PeerId,
        /// The timestamp it sent (ms since the Unix epoch).
        timestamp: u64,
        /// The timestamp it must exceed.
        last_accepted: u64,
    },
    /// The dialer's timestamp is too far ahead of our clock.
    #[error(
        "handshake timestamp {timestamp} is more than the allowed skew ahead of our clock ({now})"
    )]
    TimestampInFuture {
        /// The timestamp it sent (ms since the Unix epoch).
        timestamp: u64,
        /// Our clock (ms since the Unix epoch).
        now: u64,
    },
    /// The dialer's timestamp is older than the allowed age, or from before this
    /// listener started: a replay of a captured message, or a dialer's clock far behind.
    #[error(
        "handshake timestamp {timestamp} is older than our clock ({now}) allows, or from before we started"
    )]
    TimestampTooOld {
        /// The timestamp it sent (ms since the Unix epoch).
        timestamp: u64,
        /// Our clock (ms since the Unix epoch).
        now: u64,
    },
    /// The first message's payload is not an 8-byte timestamp.
    #[error("handshake payload is {0} bytes, expected an 8-byte timestamp")]
    BadPayload(usize),
    /// A handshake message is malformed or failed to authenticate (garbage, tampering,
    /// or a wrong key).
    #[error("Noise handshake message refused: {0}")]
    Handshake(#[source] snow::Error),
    /// The stream ended inside a handshake message.
    #[error("stream ended inside a Noise handshake message")]
    Truncated,
    /// The cipher refused the keys the handshake agreed on.
    #[error("the transport cipher refused the handshake's keys")]
    TransportKeys,
    /// A key could not be derived from a peer id.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<snow::Error> for NoiseError {
    fn from(e: snow::Error) -> Self {
        NoiseError::Handshake(e)
    }
}
