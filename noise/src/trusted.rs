//! The trusted-peer set of mutual authentication.

use std::collections::HashMap;
use std::sync::Arc;

use netcore::PeerId;
use parking_lot::RwLock;
use x25519_dalek::PublicKey as X25519PublicKey;

use crate::error::KeyError;
use crate::identity::x25519_public_key;

/// The peers a listener in mutual mode accepts, each with its Noise static key (derived
/// once, on insertion). Cheap to clone: clones share the set, so a change made through
/// one handle (e.g. at an epoch change) applies to every upgrader holding another.
/// A handshake looks its dialer up in a hash map: no scan.
#[derive(Clone, Debug, Default)]
pub struct TrustedPeers {
    peers: Arc<RwLock<HashMap<PeerId, X25519PublicKey>>>,
}

fn with_keys(
    peers: impl IntoIterator<Item = PeerId>,
) -> Result<HashMap<PeerId, X25519PublicKey>, KeyError> {
    peers
        .into_iter()
        .map(|peer| Ok((peer, x25519_public_key(&peer)?)))
        .collect()
}

impl TrustedPeers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of these peers; fails if any peer id is not a valid ed25519 key.
    pub fn from_peers(peers: impl IntoIterator<Item = PeerId>) -> Result<Self, KeyError> {
        Ok(Self {
            peers: Arc::new(RwLock::new(with_keys(peers)?)),
        })
    }

    /// Replaces the whole set at once; on error the set is left unchanged.
    pub fn replace(&self, peers: impl IntoIterator<Item = PeerId>) -> Result<(), KeyError> {
        let new = with_keys(peers)?;
        *self.peers.write() = new;
        Ok(())
    }

    /// Adds a peer; returns whether it was new.
    pub fn insert(&self, peer: PeerId) -> Result<bool, KeyError> {
        let key = x25519_public_key(&peer)?;
        Ok(self.peers.write().insert(peer, key).is_none())
    }

    /// Removes a peer; returns whether it was there.
    pub fn remove(&self, peer: &PeerId) -> bool {
        self.peers.write().remove(peer).is_some()
    }

    /// Whether the peer is trusted.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.read().contains_key(peer)
    }

    /// The static key of a trusted peer.
    pub fn static_key(&self, peer: &PeerId) -> Option<X25519PublicKey> {
        self.peers.read().get(peer).copied()
    }

    /// The number of trusted peers.
    pub fn len(&self) -> usize {
        self.peers.read().len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.read().is_empty()
    }
}
