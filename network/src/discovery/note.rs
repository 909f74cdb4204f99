//! Signed notes: a peer's addresses at an epoch, signed by that peer.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use netcore::{NetworkAddress, PeerId};
use noise::{Identity, Signature};

use super::error::NoteError;

/// Prefix of the signed encoding, so a note's signature can never be taken for the
/// signature of anything else this key signs.
pub const NOTE_DOMAIN: &[u8] = b"NETSTACK_DISCOVERY_NOTE_V1";

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a peer listens at an epoch, signed by the peer. Addresses are held without their
/// `/p2p/` part (the note names the peer once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    peer_id: PeerId,
    addresses: Vec<NetworkAddress>,
    epoch: u64,
    signature: Signature,
}

impl SignedNote {
    /// `identity`'s note of `addresses` at `epoch` (milliseconds since the Unix epoch).
    pub fn sign(identity: &Identity, addresses: &[NetworkAddress], epoch: u64) -> Self {
        let addresses: Vec<NetworkAddress> = addresses
            .iter()
            .map(|a| a.clone().without_peer_id())
            .collect();
        let peer_id = identity.peer_id();
        let signature = identity.sign(&signing_bytes(&peer_id, epoch, &addresses));
        Self {
            peer_id,
            addresses,
            epoch,
            signature,
        }
    }

    /// The peer the note is about.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where it listens (without `/p2p/`).
    pub fn addresses(&self) -> &[NetworkAddress] {
        &self.addresses
    }

    /// When it wrote the note, in milliseconds since the Unix epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Checks the signature against the note's peer id.
    pub fn verify(&self) -> Result<(), NoteError> {
        noise::verify(
            &self.peer_id,
            &signing_bytes(&self.peer_id, self.epoch, &self.addresses),
            &self.signature,
        )
        .map_err(|_| NoteError::BadSignature)
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::discovery::Note {
        proto::discovery::Note {
            peer_id: Bytes::copy_from_slice(self.peer_id.as_bytes()),
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            epoch: self.epoch,
            signature: Bytes::copy_from_slice(&self.signature.to_bytes()),
        }
    }

    /// Reads the wire form, refusing more than `max_addresses` addresses (before any is
    /// parsed) and addresses that name another peer. The signature is not checked here:
    /// see [`SignedNote::verify`].
    pub fn from_proto(
        note: &proto::discovery::Note,
        max_addresses: usize,
    ) -> Result<Self, NoteError> {
        if note.addresses.len() > max_addresses {
            return Err(NoteError::TooManyAddresses {
                count: note.addresses.len(),
                max: max_addresses,
            });
        }
        let peer_id = PeerId::from_slice(&note.peer_id).map_err(|_| NoteError::InvalidPeerId)?;
        let signature =
            Signature::from_slice(&note.signature).map_err(|_| NoteError::InvalidSignature)?;
        let mut addresses = Vec::with_capacity(note.addresses.len());
        for text in &note.addresses {
            let addr: NetworkAddress = text.parse()?;
            match addr.peer_id() {
                Some(other) if other != peer_id => return Err(NoteError::PeerMismatch(other)),
                _ => addresses.push(addr.without_peer_id()),
            }
        }
        Ok(Self {
            peer_id,
            addresses,
            epoch: note.epoch,
            signature,
        })
    }
}

/// The bytes a note's signature covers: [`NOTE_DOMAIN`] ‖ peer id ‖ epoch (big-endian
/// u64) ‖ address count (big-endian u32) ‖ for each address its text length (big-endian
/// u32) and text. Lengths make the encoding unambiguous.
pub fn signing_bytes(peer_id: &PeerId, epoch: u64, addresses: &[NetworkAddress]) -> Vec<u8> {
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let mut out = Vec::with_capacity(
        NOTE_DOMAIN.len() + 32 + 8 + 4 + texts.iter().map(|t| 4 + t.len()).sum::<usize>(),
    );
    out.extend_from_slice(NOTE_DOMAIN);
    out.extend_from_slice(peer_id.as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    // Counts and lengths are bounded by the configured limits and MAX_ADDRESS_LENGTH.
    out.extend_from_slice(&u32::try_from(texts.len()).unwrap_or(u32::MAX).to_be_bytes());
    for text in &texts {
        out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}
