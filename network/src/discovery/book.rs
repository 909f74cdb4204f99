//! The note book: the newest verified note of each peer, free of I/O.

use std::collections::BTreeMap;

use netcore::PeerId;
use noise::TrustedPeers;

use super::error::NoteError;
use super::note::SignedNote;

/// What merging a note did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// A note of a peer not known before.
    Added,
    /// A newer note of a known peer replaced the old one.
    Updated,
    /// Not newer than what is held (or an older note of this node): ignored.
    Stale,
    /// A valid note of this node with an epoch at least as new as this node's own: some
    /// earlier run of this node wrote it. Republish with a later epoch.
    OwnSuperseded {
        /// The epoch seen.
        epoch: u64,
    },
}

/// The newest verified note of each peer, this node's own included; see [`merge`].
///
/// [`merge`]: NoteBook::merge
#[derive(Debug)]
pub struct NoteBook {
    local: PeerId,
    max_notes: usize,
    notes: BTreeMap<PeerId, SignedNote>,
}

impl NoteBook {
    /// A book holding this node's `own` note and at most `max_notes` notes in all.
    pub fn new(own: SignedNote, max_notes: usize) -> Self {
        let local = own.peer_id();
        let mut notes = BTreeMap::new();
        notes.insert(local, own);
        Self {
            local,
            max_notes: max_notes.max(1),
            notes,
        }
    }

    /// This node's note.
    pub fn own(&self) -> Option<&SignedNote> {
        self.notes.get(&self.local)
    }

    /// Replaces this node's note (after its addresses changed).
    pub fn set_own(&mut self, note: SignedNote) {
        if note.peer_id() == self.local {
            self.notes.insert(self.local, note);
        }
    }

    /// Merges a note received from the network. In mutual mode (`trusted` given), notes
    /// of peers outside the set are refused. The newer epoch wins; the signature is
    /// checked only for a note that would win, so replays of old notes cost no
    /// verification.
    pub fn merge(
        &mut self,
        note: SignedNote,
        trusted: Option<&TrustedPeers>,
    ) -> Result<Merge, NoteError> {
        let peer = note.peer_id();
        if peer == self.local {
            let own_epoch = self.own().map_or(0, SignedNote::epoch);
            if note.epoch() < own_epoch || self.own() == Some(&note) {
                return Ok(Merge::Stale);
            }
            note.verify()?;
            return Ok(Merge::OwnSuperseded {
                epoch: note.epoch(),
            });
        }
        if trusted.is_some_and(|set| !set.contains(&peer)) {
            return Err(NoteError::Untrusted(peer));
        }
        let known = self.notes.get(&peer).map(SignedNote::epoch);
        if known.is_some_and(|epoch| note.epoch() <= epoch) {
            return Ok(Merge::Stale);
        }
        if known.is_none() && self.notes.len() >= self.max_notes {
            return Err(NoteError::BookFull);
        }
        note.verify()?;
        self.notes.insert(peer, note);
        Ok(if known.is_some() {
            Merge::Updated
        } else {
            Merge::Added
        })
    }

    /// Every note held, by peer id.
    pub fn notes(&self) -> impl Iterator<Item = &SignedNote> {
        self.notes.values()
    }

    /// The note of `peer`, if held.
    pub fn get(&self, peer: &PeerId) -> Option<&SignedNote> {
        self.notes.get(peer)
    }

    /// Notes held, this node's included.
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    /// Always false: the book holds this node's own note.
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }
}

#[cfg(test)]
mod tests;
