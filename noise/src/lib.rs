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
//! Figures from `cargo bench -p benches --bench noise -- --warm-up-time 1
//! --measurement-time 3` (criterion medians) on the development machine: 2 shared x86-64
//! cores with AES-NI, other builds running, so take them to ±10%.
//!
//! | raw `snow`, one 65519-byte frame | encrypt            | decrypt            |
//! |----------------------------------|--------------------|--------------------|
//! | ChaChaPoly_BLAKE2s, RustCrypto   | 72.0 µs (867 MiB/s) | 55.1 µs (1.11 GiB/s) |
//! | ChaChaPoly_BLAKE2s, ring         | 32.5 µs (1.88 GiB/s) | 35.5 µs (1.72 GiB/s) |
//! | AESGCM_SHA256, RustCrypto        | 59.9 µs (1.02 GiB/s) | 60.9 µs (1.00 GiB/s) |
//! | AESGCM_SHA256, ring              | **11.3 µs (5.39 GiB/s)** | **12.8 µs (4.76 GiB/s)** |
//!
//! Handshakes (both sides in one thread, memsocket), before the static-static secret
//! was kept: 890/s ChaChaPoly/RustCrypto, 911/s ChaChaPoly/ring, 916/s AESGCM/RustCrypto,
//! **1389/s AESGCM/ring** (SHA-256 from ring; the X25519 work is curve25519-dalek's in
//! every case). Keeping it took a handshake from 635-741 µs to 523-573 µs across the
//! four in a back-to-back run on 2026-11-21 (benches/README.md).
//!
//! So [`DEFAULT_SUITE`] is `Noise_IK_25519_AESGCM_SHA256` computed with ring: 2.9 times
//! the fastest ChaChaPoly on this hardware. On a CPU without AES instructions ChaChaPoly
//! would win; the protocol is then a per-network configuration ([`NoiseConfig::suite`]),
//! and the backend a per-node one.
//!
//! `NoiseStream` with the default suite, one writer and one reader in one thread:
//!
//! | transport | 64 KiB writes | 32 B writes (one flush per MiB) |
//! |-----------|---------------|---------------------------------|
//! | memsocket | 1.20 GiB/s    | 620 MiB/s (20 M messages/s)     |
//! | TCP loopback | 741 MiB/s  | 451 MiB/s (14 M messages/s)     |
//!
//! (Diem measured 151 MiB/s with 32-byte messages and 796 MiB/s with 4 KiB ones over
//! TCP+Noise.) Each stream holds about 256 KiB of buffers (a 128 KiB read buffer and two
//! of one frame each for writing), plus one more frame's worth if its reader ever reads
//! into a buffer smaller than a frame.

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
