//! The Noise protocol (cipher and hash) a network uses, and the library computing it.

use snow::params::NoiseParams;

use crate::dh::HandshakeKeys;
use snow::resolvers::{BoxedCryptoResolver, DefaultResolver, FallbackResolver, RingResolver};

/// The cipher and hash of the Noise IK protocol. Both ends of a connection must use the
/// same one: it is part of the handshake hash, so a mismatch fails the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoiseProtocol {
    /// `Noise_IK_25519_ChaChaPoly_BLAKE2s`.
    ChaChaPolyBlake2s,
    /// `Noise_IK_25519_AESGCM_SHA256`.
    AesGcmSha256,
}

impl NoiseProtocol {
    /// The Noise protocol name.
    pub const fn name(self) -> &'static str {
        match self {
            NoiseProtocol::ChaChaPolyBlake2s => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            NoiseProtocol::AesGcmSha256 => "Noise_IK_25519_AESGCM_SHA256",
        }
    }
}

/// Which implementation of the primitives `snow` uses. A local choice: it never changes
/// the bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptoBackend {
    /// snow's default resolver (RustCrypto crates and curve25519-dalek).
    RustCrypto,
    /// snow's `ring` resolver for the cipher and SHA-256, falling back to the default
    /// resolver for what ring lacks (X25519 and BLAKE2s).
    Ring,
}

/// A Noise protocol and the backend computing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoiseSuite {
    /// The protocol: must be the same on every node of a network.
    pub protocol: NoiseProtocol,
    /// The implementation: a per-node choice.
    pub backend: CryptoBackend,
}

impl NoiseSuite {
    /// The Noise protocol parameters.
    pub fn params(&self) -> Result<NoiseParams, snow::Error> {
        self.protocol.name().parse()
    }

    /// A `snow` builder for this suite.
    pub fn builder(&self) -> Result<snow::Builder<'static>, snow::Error> {
        Ok(snow::Builder::with_resolver(
            self.params()?,
            self.resolver(),
        ))
    }

    /// A `snow` builder for one handshake with `keys`: X25519 uses or keeps the
    /// static-static secret (see `dh`).
    pub(crate) fn handshake_builder(
        &self,
        keys: &HandshakeKeys,
    ) -> Result<snow::Builder<'static>, snow::Error> {
        Ok(snow::Builder::with_resolver(
            self.params()?,
            keys.resolver(self.resolver()),
        ))
    }

    fn resolver(&self) -> BoxedCryptoResolver {
        match self.backend {
            CryptoBackend::RustCrypto => Box::new(DefaultResolver),
            CryptoBackend::Ring => Box::new(FallbackResolver::new(
                Box::new(RingResolver),
                Box::new(DefaultResolver),
            )),
        }
    }
}

impl Default for NoiseSuite {
    fn default() -> Self {
        crate::DEFAULT_SUITE
    }
}
