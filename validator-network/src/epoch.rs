//! Validator-set changes at epochs: one call moves the whole stack to a new set.

use std::collections::HashSet;
use std::sync::Arc;

use std::net::IpAddr;

use netcore::{NetworkAddress, PeerId};
use network::admission::ValidatorAddresses;
use network::connectivity_manager::ConnectivityHandle;
use noise::{KeyError, TrustedPeers};
use tokio::sync::Mutex;
use tracing::info;

/// A member of a validator set: its peer id and where it may be dialed (may be empty
/// when it dials us, or discovery finds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorInfo {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Addresses to dial it at.
    pub addresses: Vec<NetworkAddress>,
}

/// Why an epoch change was refused; the stack stays in its current epoch.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The epoch is older than the current one.
    #[error("epoch {got} is older than the current epoch {current}")]
    Stale {
        /// The current epoch.
        current: u64,
        /// The epoch refused.
        got: u64,
    },
    /// A peer id of the set is not a valid key.
    #[error("validator set: {0}")]
    Key(#[from] KeyError),
    /// The stack is shutting down.
    #[error("the stack is shutting down")]
    Stopped,
}

/// Moves a running stack to a new validator set; cheap to clone. See
/// [`EpochHandle::change_epoch`].
#[derive(Clone, Debug)]
pub struct EpochHandle {
    local: PeerId,
    /// The trusted set, shared with Noise, the peer manager, discovery and every
    /// sender's `broadcast`.
    trusted: TrustedPeers,
    connectivity: ConnectivityHandle,
    /// Mutual authentication: the validator set is also the set of peers to keep
    /// connected. In open mode the connectivity manager keeps its own bound.
    mutual: bool,
    /// The validators' IPs, which admission keeps handshake room for.
    addresses: ValidatorAddresses,
    /// The current epoch; held across a change, so that changes apply in order.
    current: Arc<Mutex<u64>>,
}

impl EpochHandle {
    pub(crate) fn new(
        local: PeerId,
        trusted: TrustedPeers,
        connectivity: ConnectivityHandle,
        mutual: bool,
        addresses: ValidatorAddresses,
        epoch: u64,
    ) -> Self {
        Self {
            local,
            trusted,
            connectivity,
            mutual,
            addresses,
            current: Arc::new(Mutex::new(epoch)),
        }
    }

    /// The current epoch.
    pub async fn epoch(&self) -> u64 {
        *self.current.lock().await
    }

    /// Moves the stack to `validators` as the set of `epoch`, which must not be older
    /// than the current one (the same epoch again re-applies its set). Together:
    /// - Noise's trusted set becomes the new set: a removed validator's next
    ///   connection is refused (in mutual mode), a new one's accepted;
    /// - the set every application's `broadcast` sends to becomes the new set;
    /// - the connectivity manager learns the new validators' addresses; in mutual mode,
    ///   where the set is who may be connected, it dials them and disconnects removed
    ///   validators at once (`LostPeer { reason: NotEligible }`); in open mode it dials
    ///   them at its next check.
    ///
    /// Not cancel-safe: a change dropped part way may leave the trusted set moved and
    /// the rest not; call it again with the same epoch to finish it.
    ///
    /// Connections between validators in both sets are not touched, so messages
    /// between them are not lost across the change. A node outside the new set leaves:
    /// it trusts no one and (in mutual mode) disconnects from everyone.
    pub async fn change_epoch(
        &self,
        epoch: u64,
        validators: Vec<ValidatorInfo>,
    ) -> Result<(), EpochError> {
        let mut current = self.current.lock().await;
        if epoch < *current {
            return Err(EpochError::Stale {
                current: *current,
                got: epoch,
            });
        }
        let member = validators.iter().any(|v| v.peer_id == self.local);
        // A node outside the new set leaves the validator network: it trusts and keeps
        // no one there (it may follow the chain elsewhere, e.g. as a full node).
        let set: HashSet<PeerId> = validators
            .iter()
            .map(|v| v.peer_id)
            .filter(|peer| *peer != self.local && member)
            .collect();
        self.trusted.replace(set.iter().copied())?;
        self.addresses.replace(ips(validators
            .iter()
            .filter(|v| member && v.peer_id != self.local)
            .flat_map(|v| &v.addresses)));
        let addresses = validators
            .into_iter()
            .filter(|v| v.peer_id != self.local && !v.addresses.is_empty())
            .map(|v| (v.peer_id, v.addresses))
            .collect();
        // Addresses first: the eligible set's change dials at once, with them.
        self.connectivity
            .update_addresses(addresses)
            .await
            .map_err(|_| EpochError::Stopped)?;
        let size = set.len();
        if self.mutual {
            self.connectivity
                .set_eligible(set)
                .await
                .map_err(|_| EpochError::Stopped)?;
        }
        info!(epoch, validators = size, "moved to a new validator set");
        *current = epoch;
        Ok(())
    }
}

/// The IPs among `addresses` (names are not resolved here: a validator known by a DNS
/// name gets no reserved room until it is known by an IP).
pub(crate) fn ips<'a>(addresses: impl IntoIterator<Item = &'a NetworkAddress>) -> Vec<IpAddr> {
    addresses
        .into_iter()
        .filter_map(NetworkAddress::ip)
        .collect()
}
