//! The transport ciphers of an established session: one key and nonce each way.
//!
//! With the ring backend the session seals and opens frames in place with ring's AEAD,
//! using the two keys of the handshake's split: a received frame is decrypted where it
//! lies in the read buffer, with no copy before the cipher (snow's API copies the
//! ciphertext into the output first). The bytes on the wire are the Noise transport
//! messages snow makes (same keys, nonces and empty associated data), as the tests
//! check against snow in both directions; with the RustCrypto backend snow's own
//! transport state does the work.

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use snow::{HandshakeState, TransportState};
use zeroize::Zeroizing;

use crate::constants::TAG_LEN;
use crate::error::{FrameError, NoiseError};
use crate::suite::{CryptoBackend, NoiseProtocol, NoiseSuite};

/// How a Noise cipher turns its 64-bit counter into a 96-bit nonce (Noise spec, 12):
/// four zero bytes, then the counter.
#[derive(Clone, Copy, Debug)]
enum NonceLayout {
    /// AESGCM: the counter big-endian.
    BigEndian,
    /// ChaChaPoly: the counter little-endian.
    LittleEndian,
}

/// One direction's key and the counter of its next frame.
pub(crate) struct Direction {
    key: LessSafeKey,
    next: u64,
    layout: NonceLayout,
}

impl Direction {
    fn new(protocol: NoiseProtocol, raw: &[u8; 32]) -> Result<Self, NoiseError> {
        let (algorithm, layout) = match protocol {
            NoiseProtocol::AesGcmSha256 => (&AES_256_GCM, NonceLayout::BigEndian),
            NoiseProtocol::ChaChaPolyBlake2s => (&CHACHA20_POLY1305, NonceLayout::LittleEndian),
        };
        let key = UnboundKey::new(algorithm, raw).map_err(|_| NoiseError::TransportKeys)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            next: 0,
            layout,
        })
    }

    /// The nonce of the next frame; the counter's last value (2^64 - 1) is reserved by
    /// the Noise spec, so a session ends before it.
    fn take_nonce(&mut self) -> Result<Nonce, FrameError> {
        if self.next == u64::MAX {
            return Err(FrameError::NonceExhausted);
        }
        let counter = match self.layout {
            NonceLayout::BigEndian => self.next.to_be_bytes(),
            NonceLayout::LittleEndian => self.next.to_le_bytes(),
        };
        self.next += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter);
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Moves the counter, so a test can reach its end.
    #[cfg(test)]
    pub(crate) fn set_next_for_tests(&mut self, next: u64) {
        self.next = next;
    }
}

/// The ciphers of one session.
pub(crate) enum TransportCipher {
    /// snow's transport state (the RustCrypto backend).
    Snow(Box<TransportState>),
    /// ring, in place.
    Ring(Box<RingCiphers>),
}

/// ring's keys, one each way.
pub(crate) struct RingCiphers {
    pub(crate) send: Direction,
    recv: Direction,
}

impl TransportCipher {
    /// The transport ciphers of a finished handshake, for `suite`'s backend.
    pub(crate) fn from_handshake(
        mut state: HandshakeState,
        suite: NoiseSuite,
    ) -> Result<Self, NoiseError> {
        match suite.backend {
            CryptoBackend::RustCrypto => Ok(Self::Snow(Box::new(state.into_transport_mode()?))),
            CryptoBackend::Ring => {
                if !state.is_handshake_finished() {
                    return Err(NoiseError::TransportKeys);
                }
                // The initiator sends with the first key of the split, the responder
                // with the second.
                let (first, second) = state.dangerously_get_raw_split();
                let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
                let (send, recv) = if state.is_initiator() {
                    (&first, &second)
                } else {
                    (&second, &first)
                };
                Ok(Self::Ring(Box::new(RingCiphers {
                    send: Direction::new(suite.protocol, send)?,
                    recv: Direction::new(suite.protocol, recv)?,
                })))
            }
        }
    }

    /// Seals `plain` into `out` (at least `plain.len() + TAG_LEN` bytes); returns the
    /// ciphertext's length.
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        let len = plain.len() + TAG_LEN;
        match self {
            Self::Snow(state) => state
                .write_message(plain, out)
                .map_err(|_| FrameError::Seal),
            Self::Ring(_) => {
                netcore::copy::copy_bytes(&mut out[..plain.len()], plain);
                self.seal_in_place(&mut out[..len], plain.len())
            }
        }
    }

    /// Seals the first `plain_len` bytes of `buf` where they lie and writes the tag
    /// behind them (`buf` holds at least `plain_len + TAG_LEN` bytes); returns the
    /// ciphertext's length. Only with [`opens_in_place`](Self::opens_in_place).
    pub(crate) fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        plain_len: usize,
    ) -> Result<usize, FrameError> {
        let Self::Ring(ring) = self else {
            return Err(FrameError::Seal);
        };
        let send = &mut ring.send;
        let nonce = send.take_nonce()?;
        let (body, rest) = buf[..plain_len + TAG_LEN].split_at_mut(plain_len);
        let tag = send
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
            .map_err(|_| FrameError::Seal)?;
        rest.copy_from_slice(tag.as_ref());
        Ok(plain_len + TAG_LEN)
    }

    /// Whether [`open_in_place`](Self::open_in_place) works; otherwise use
    /// [`open`](Self::open).
    pub(crate) fn opens_in_place(&self) -> bool {
        matches!(self, Self::Ring(_))
    }

    /// Opens the frame `frame` (ciphertext and tag) where it lies; returns the length of
    /// the plaintext, which starts at `frame[0]`. Only with
    /// [`opens_in_place`](Self::opens_in_place).
    pub(crate) fn open_in_place(&mut self, frame: &mut [u8]) -> Result<usize, FrameError> {
        match self {
            Self::Snow(_) => Err(FrameError::Decrypt),
            Self::Ring(ring) => {
                let recv = &mut ring.recv;
                let nonce = recv.take_nonce()?;
                recv.key
                    .open_in_place(nonce, Aad::empty(), frame)
                    .map(|plain| plain.len())
                    .map_err(|_| FrameError::Decrypt)
            }
        }
    }

    /// Opens `frame` into `out` (room for the whole ciphertext); returns the length of
    /// the plaintext. Only without [`opens_in_place`](Self::opens_in_place).
    pub(crate) fn open(&mut self, frame: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        match self {
            Self::Snow(state) => state
                .read_message(frame, out)
                .map_err(|_| FrameError::Decrypt),
            Self::Ring(_) => Err(FrameError::Decrypt),
        }
    }
}
