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
//! IK's static-static Diffie-Hellman is the same in every handshake between two nodes:
//! an upgrader keeps it per remote key once computed, as WireGuard does per peer: for the
//! keys it dials and, under mutual authentication, the trusted keys that dial it (an open
//! listener keeps none); at most 4096 keys, zeroized on drop. See `dh.rs`. With it a
//! handshake costs each side three variable-base X25519 multiplications and one key
//! generation.
//!
//! # Choice of suite
//!
//! [`DEFAULT_SUITE`] is `Noise_IK_25519_AESGCM_SHA256` computed with ring: on CPUs with
//! hardware AES ring's AES-GCM seals and opens frames several times faster than
//! either ChaChaPoly backend (`cargo bench -p benches --bench noise`; the figures are
//! in benches/README.md). On a CPU without hardware AES ChaChaPoly would win; the
//! protocol is then a per-network configuration ([`NoiseConfig::suite`]), and the
//! backend a per-node one. The X25519 work is curve25519-dalek's with every suite.
//!
//! A [`NoiseStream`]'s read buffer starts small and grows to 128 KiB once a frame does
//! not fit or a read fills it; its write buffers grow to the largest frame sealed; one
//! more frame's worth is allocated if its reader ever reads into a buffer smaller than
//! a frame. Large buffers are given back once nothing has needed them for
//! [`LARGE_BUFFER_QUIET`] (see `session.rs`).

mod cipher;
mod constants;
mod dh;
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
pub use dh::{RemoteKey, x25519_shared};
pub use error::{FrameError, KeyError, NoiseError};
pub use handshake::{AuthMode, RemoteInfo};
pub use identity::{Identity, verify, x25519_public_key};
pub use stream::NoiseStream;
pub use suite::{CryptoBackend, NoiseProtocol, NoiseSuite};
pub use trusted::TrustedPeers;
pub use upgrade::{FixedInputs, NoiseConfig, NoiseUpgrader};

/// The ed25519 signature type of [`Identity::sign`] and [`verify`].
pub use ed25519_dalek::Signature;
/// The X25519 public key type of Noise static keys.
pub use x25519_dalek::PublicKey as X25519PublicKey;
