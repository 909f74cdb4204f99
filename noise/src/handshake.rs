//! The Noise IK handshake as byte-in, byte-out steps with no I/O.
//!
//! On the wire:
//!
//! ```text
//! dialer   -> listener: prologue (64 bytes, in clear) | u16 BE length | IK message 1
//! listener -> dialer:                                  u16 BE length | IK message 2
//! ```
//!
//! The prologue is the dialer's peer id and the static key it expects of the listener.
//! It is sent in clear so that the listener can refuse a self-dial, a dialer expecting
//! another key, or (in mutual mode) an untrusted dialer before doing any Diffie-Hellman;
//! it is also hashed into the handshake, so tampering with it fails the handshake. The
//! payload of message 1 is the dialer's timestamp (u64 BE, ms since the Unix epoch);
//! message 2 has an empty payload.

use netcore::PeerId;
use parking_lot::Mutex;
use snow::HandshakeState;
use x25519_dalek::PublicKey as X25519PublicKey;

use crate::cipher::TransportCipher;
use crate::constants::{
    HANDSHAKE_WRITE_BUFFER_LEN, LENGTH_PREFIX_LEN, PROLOGUE_LEN, TIMESTAMP_LEN,
};
use crate::dh::{HandshakeKeys, StaticKeys};
use crate::error::NoiseError;
use crate::identity::{Identity, x25519_public_key};
use crate::replay::{ReplayGuard, ReplayRefusal};
use crate::suite::NoiseSuite;
use crate::trusted::TrustedPeers;

/// Who a listener accepts.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// Only dialers in the trusted set (mutual authentication).
    Mutual(TrustedPeers),
    /// Any dialer; its peer id is derived from its static key. Dialers still
    /// authenticate the listener.
    Open,
}

/// What the handshake learned about the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteInfo {
    /// The remote's peer id.
    pub peer_id: PeerId,
    /// The remote's Noise static public key, as proven in the handshake.
    pub static_key: X25519PublicKey,
}

/// What a handshake takes from outside: the clock (the dialer sends it as its
/// timestamp, the listener checks timestamps against it) and, for transcripts only, a
/// fixed ephemeral secret instead of a random one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inputs {
    /// Milliseconds since the Unix epoch.
    pub(crate) clock_ms: u64,
    /// The ephemeral secret to use, if fixed.
    pub(crate) ephemeral: Option<[u8; 32]>,
}

/// The prologue: the dialer's peer id, then the static key it expects of the listener.
pub(crate) fn prologue(dialer: &PeerId, expected: &X25519PublicKey) -> [u8; PROLOGUE_LEN] {
    let mut prologue = [0u8; PROLOGUE_LEN];
    prologue[..32].copy_from_slice(dialer.as_bytes());
    prologue[32..].copy_from_slice(expected.as_bytes());
    prologue
}

/// Appends `message` to `out` behind its u16 BE length.
fn push_framed(out: &mut Vec<u8>, message: &[u8]) {
    // Handshake messages we write fit HANDSHAKE_WRITE_BUFFER_LEN, far below u16::MAX.
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
}

/// The dialer's side, between sending message 1 and receiving message 2.
pub(crate) struct DialerHandshake {
    state: HandshakeState,
    suite: NoiseSuite,
    remote: RemoteInfo,
}

impl DialerHandshake {
    /// Starts a handshake with `remote`: returns the state and the bytes to send.
    /// `keys` are `identity`'s.
    pub(crate) fn start(
        identity: &Identity,
        keys: &StaticKeys,
        remote: PeerId,
        suite: NoiseSuite,
        inputs: Inputs,
    ) -> Result<(Self, Vec<u8>), NoiseError> {
        if remote == identity.peer_id() {
            return Err(NoiseError::SelfDial);
        }
        let remote_key = x25519_public_key(&remote)?;
        let prologue = prologue(&identity.peer_id(), &remote_key);
        let secret = identity.x25519_secret_bytes();
        // A key we dial is one we chose: its static-static secret is kept.
        let keys = keys.for_handshake(remote_key.as_bytes(), true);
        let mut builder = suite
            .handshake_builder(&keys)?
            .local_private_key(&secret[..])?
            .remote_public_key(remote_key.as_bytes())?
            .prologue(&prologue)?;
        if let Some(key) = &inputs.ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(key);
        }
        let mut state = builder.build_initiator()?;
        let mut message = [0u8; HANDSHAKE_WRITE_BUFFER_LEN];
        let len = state.write_message(&inputs.clock_ms.to_be_bytes(), &mut message)?;
        let mut wire = Vec::with_capacity(PROLOGUE_LEN + LENGTH_PREFIX_LEN + len);
        wire.extend_from_slice(&prologue);
        push_framed(&mut wire, &message[..len]);
        let remote = RemoteInfo {
            peer_id: remote,
            static_key: remote_key,
        };
        Ok((
            Self {
                state,
                suite,
                remote,
            },
            wire,
        ))
    }

    /// Reads message 2 (without its length prefix) and completes the handshake.
    pub(crate) fn finish(
        mut self,
        message: &[u8],
    ) -> Result<(TransportCipher, RemoteInfo), NoiseError> {
        let mut payload = vec![0u8; message.len()];
        let len = self.state.read_message(message, &mut payload)?;
        if len != 0 {
            return Err(NoiseError::BadPayload(len));
        }
        let cipher = TransportCipher::from_handshake(self.state, self.suite)?;
        Ok((cipher, self.remote))
    }
}

/// The listener's checks of the clear prologue, before any cryptography: returns the
/// dialer's claimed peer id and the static key that id implies.
pub(crate) fn check_prologue(
    identity: &Identity,
    mode: &AuthMode,
    prologue: &[u8; PROLOGUE_LEN],
) -> Result<RemoteInfo, NoiseError> {
    let (claimed, expected) = prologue.split_at(32);
    let claimed = PeerId::from_slice(claimed).map_err(|_| NoiseError::Truncated)?;
    if claimed == identity.peer_id() {
        return Err(NoiseError::SelfDial);
    }
    if expected != identity.x25519_public().as_bytes() {
        let mut key = [0u8; 32];
        key.copy_from_slice(expected);
        return Err(NoiseError::WrongExpectedKey(key));
    }
    let static_key = match mode {
        AuthMode::Mutual(trusted) => trusted
            .static_key(&claimed)
            .ok_or(NoiseError::UntrustedPeer(claimed))?,
        AuthMode::Open => x25519_public_key(&claimed)?,
    };
    Ok(RemoteInfo {
        peer_id: claimed,
        static_key,
    })
}

/// The listener's processing of message 1 (without its length prefix), once the
/// prologue passed [`check_prologue`]: checks the dialer's key and timestamp, and
/// returns the session and the bytes of message 2 to send.
pub(crate) fn respond(
    keys: &HandshakeKeys,
    suite: NoiseSuite,
    prologue: &[u8; PROLOGUE_LEN],
    remote: RemoteInfo,
    message: &[u8],
    replay: &Mutex<ReplayGuard>,
    inputs: Inputs,
) -> Result<(TransportCipher, Vec<u8>), NoiseError> {
    // `keys` were made for the claimed key, which is checked against the one the
    // handshake proves below.
    let mut builder = suite
        .handshake_builder(keys)?
        .local_private_key(keys.secret())?
        .prologue(prologue)?;
    if let Some(key) = &inputs.ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(key);
    }
    let mut state = builder.build_responder()?;
    // The message is at most MAX_NOISE_MESSAGE_LEN (its length came in 2 bytes), and its
    // payload no longer than it.
    let mut payload = vec![0u8; message.len()];
    let len = state.read_message(message, &mut payload)?;
    if state.get_remote_static() != Some(remote.static_key.as_bytes().as_slice()) {
        return Err(NoiseError::StaticKeyMismatch(remote.peer_id));
    }
    let timestamp: [u8; TIMESTAMP_LEN] = payload[..len]
        .try_into()
        .map_err(|_| NoiseError::BadPayload(len))?;
    let timestamp = u64::from_be_bytes(timestamp);
    replay
        .lock()
        .check_and_record(remote.static_key.to_bytes(), timestamp, inputs.clock_ms)
        .map_err(|refusal| match refusal {
            ReplayRefusal::Replay { last_accepted } => NoiseError::Replay {
                peer: remote.peer_id,
                timestamp,
                last_accepted,
            },
            ReplayRefusal::InFuture { now } => NoiseError::TimestampInFuture { timestamp, now },
            ReplayRefusal::TooOld { now } => NoiseError::TimestampTooOld { timestamp, now },
        })?;
    let mut reply = [0u8; HANDSHAKE_WRITE_BUFFER_LEN];
    let len = state.write_message(&[], &mut reply)?;
    let mut wire = Vec::with_capacity(LENGTH_PREFIX_LEN + len);
    push_framed(&mut wire, &reply[..len]);
    Ok((TransportCipher::from_handshake(state, suite)?, wire))
}
