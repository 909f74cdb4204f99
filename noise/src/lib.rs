//! Noise IK authentication and encryption, and node identity keys.
//!
//! This crate owns:
//! - [`Identity`]: a node's one ed25519 key, from which its [`PeerId`](netcore::PeerId),
//!   its signatures ([`Identity::sign`], [`verify`]) and its Noise static X25519 key
//!   derive ([`x25519_public_key`] computes a peer's key from its id); key files;
//! - the Noise IK handshake ([`NoiseUpgrader`]), with mutual authentication against a
//!   [`TrustedPeers`] set or open mode, anti-replay timestamps, a timeout and a bound on
//!   concurrent inbound handshakes; it plugs into any `netcore` transport through
//!   `and_then`;
//! - [`NoiseStream`], the encrypted `AsyncRead + AsyncWrite` session: frames of a u16
//!   big-endian length and at most 65535 bytes of ciphertext, with small writes
//!   coalesced into full frames.
//!
//! It does not own sockets or transports (`netcore`), nor what travels inside the
//! session (handshake messages, multiplexing: `netcore` and `network`).
//!
//! # The handshake
//!
//! The dialer knows the listener's `PeerId` (from the address's `/p2p/` part) and so
//! its static key. It sends, in clear, the prologue (its own peer id and the key it
//! expects), then IK message 1 whose payload is a millisecond timestamp. The listener
//! refuses, each with its own [`NoiseError`] variant: a self-dial, a prologue expecting
//! another key, an untrusted dialer (mutual mode), a static key that is not the claimed
//! id's, and a timestamp not after the last one it accepted from that key. See
//! `handshake.rs` for the wire layout and `replay.rs` for the bounded anti-replay memory.
//!
//! # Choice of suite
//!
//! Figures from `cargo bench -p benches --bench noise -- --warm-up-time 1
//! --measurement-time 3` on the development machine (2 shared cores):
//!
//! FIGURES
//!
//! [`DEFAULT_SUITE`] is the choice.

mod constants;
mod error;
mod handshake;
mod identity;
mod replay;
mod session;
mod stream;
mod suite;
mod trusted;
mod upgrade;

pub use constants::*;
pub use error::{FrameError, KeyError, NoiseError};
pub use handshake::{AuthMode, RemoteInfo};
pub use identity::{Identity, verify, x25519_public_key};
pub use stream::NoiseStream;
pub use suite::{CryptoBackend, NoiseProtocol, NoiseSuite};
pub use trusted::TrustedPeers;
pub use upgrade::{NoiseConfig, NoiseUpgrader};

/// The ed25519 signature type of [`Identity::sign`] and [`verify`].
pub use ed25519_dalek::Signature;
/// The X25519 public key type of Noise static keys.
pub use x25519_dalek::PublicKey as X25519PublicKey;
