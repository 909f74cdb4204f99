//! The peer manager's decisions, without I/O: which connections and dials go ahead,
//! which connection of a peer stays live, which upgrade is evicted. The peer manager
//! feeds it what happened (an upgrade finished, a connection ended, a request came) and
//! carries out what it returns (register, close, refuse, abort), keeping the peer table
//! of handles in step with [`Decisions`]' view of who is live.

use std::collections::{HashMap, HashSet, VecDeque};

use netcore::PeerId;
use netcore::transport::ConnectionOrigin;

use crate::connection::ConnectionId;
use crate::error::{DialError, DisconnectError};

/// The limits the decisions apply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Inbound upgrades in flight; past it, the oldest is evicted.
    pub(crate) max_inbound_upgrades: usize,
    /// Of those, the most sockets from strangers (not from a known validator's
    /// address) may hold; the rest is kept for validators.
    pub(crate) max_stranger_upgrades: usize,
    /// Dials in flight.
    pub(crate) max_dials: usize,
    /// Live inbound connections from peers outside the trusted set.
    pub(crate) max_inbound_untrusted: usize,
}

/// Names one inbound upgrade in flight.
pub(crate) type UpgradeId = u64;

/// Why an upgraded connection is refused before the tie-break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The peer was banned while its upgrade was in flight.
    Banned,
    /// The connection leads back to this node.
    SelfConnection,
    /// Too many untrusted peers are connected inbound.
    TooManyUntrusted,
}

/// What to do with an upgraded connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upgraded {
    /// Close it, for this reason.
    Refuse(Refusal),
    /// The peer's live connection wins the tie-break: close the new one.
    KeepExisting,
    /// Make it the peer's live connection under `id`; then, if `replaces` names one,
    /// remove that connection and tell the applications it was replaced (after the new
    /// one's arrival, so a peer stays up throughout).
    Register {
        id: ConnectionId,
        replaces: Option<ConnectionId>,
    },
}

/// What to do with a dial request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dial {
    /// Dial.
    Start,
    /// The peer is connected already: succeed at once.
    Connected,
    /// A dial to the peer is in flight: wait for its outcome.
    Join,
    /// Refuse it.
    Refuse(DialRefusal),
}

/// Why a dial is refused before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DialRefusal {
    SelfDial,
    Banned,
    TooManyDials,
}

impl DialRefusal {
    /// The caller's error.
    pub(crate) fn error(self, peer: PeerId) -> DialError {
        match self {
            DialRefusal::SelfDial => DialError::SelfDial,
            DialRefusal::Banned => DialError::Banned(peer),
            DialRefusal::TooManyDials => DialError::TooManyDials,
        }
    }
}

/// A live connection, as the decisions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) id: ConnectionId,
    pub(crate) origin: ConnectionOrigin,
    /// Counted against the untrusted inbound limit.
    untrusted_inbound: bool,
}

/// The peer manager's view of its connections, dials and upgrades, and its decisions
/// about them.
#[derive(Debug)]
pub(crate) struct Decisions {
    local: PeerId,
    limits: Limits,
    live: HashMap<PeerId, Live>,
    untrusted_inbound: usize,
    next_connection_id: u64,
    dialing: HashSet<PeerId>,
    /// Inbound upgrades in flight, oldest first, each marked when it comes from a known
    /// validator's address.
    upgrades: VecDeque<(UpgradeId, bool)>,
    next_upgrade_id: UpgradeId,
}

impl Decisions {
    /// No connections yet, for the node `local`.
    pub(crate) fn new(local: PeerId, limits: Limits) -> Self {
        Self {
            local,
            limits,
            live: HashMap::new(),
            untrusted_inbound: 0,
            next_connection_id: 1,
            dialing: HashSet::new(),
            upgrades: VecDeque::new(),
            next_upgrade_id: 0,
        }
    }

    /// The live connection of `peer`.
    pub(crate) fn live(&self, peer: &PeerId) -> Option<Live> {
        self.live.get(peer).copied()
    }

    /// A socket arrived, from a known validator's address (`validator`) or not: the id
    /// of its upgrade, and the upgrades to evict (oldest first) to stay within the
    /// limits; `None` to refuse it. A stranger's socket evicts only strangers' (the
    /// oldest), and strangers hold at most `max_stranger_upgrades` slots; a validator's
    /// socket evicts a stranger's first, another validator's only when validators hold
    /// every slot.
    ///
    /// `claimed` says which upgrades in flight have since shown a trusted peer's id in
    /// their clear prologue. Anyone can write such an id, so a claimed upgrade stays a
    /// stranger's (within the strangers' share of slots) but is evicted after the
    /// unclaimed ones.
    pub(crate) fn on_inbound_socket(
        &mut self,
        validator: bool,
        claimed: impl Fn(UpgradeId) -> bool,
    ) -> Option<(UpgradeId, Vec<UpgradeId>)> {
        let limit = self.limits.max_inbound_upgrades;
        let stranger_limit = self.limits.max_stranger_upgrades.min(limit);
        if limit == 0 || (!validator && stranger_limit == 0) {
            return None;
        }
        let validators = self.upgrades.iter().filter(|(_, v)| *v).count();
        if !validator && validators >= limit {
            // Validators hold every slot: a stranger evicts none of them.
            return None;
        }
        let mut evicted = Vec::new();
        if !validator {
            while self.upgrades.len() - validators >= stranger_limit {
                evicted.extend(self.evict_stranger(&claimed));
            }
        }
        while self.upgrades.len() >= limit {
            // A stranger's first; a validator's only for a validator, when no stranger
            // is left (checked above for a stranger).
            evicted.extend(
                self.evict_stranger(&claimed)
                    .or_else(|| self.evict_oldest(true)),
            );
        }
        let id = self.next_upgrade_id;
        self.next_upgrade_id += 1;
        self.upgrades.push_back((id, validator));
        Some((id, evicted))
    }

    /// Removes the oldest stranger's upgrade that has not `claimed` a trusted id, or
    /// else the oldest stranger's.
    fn evict_stranger(&mut self, claimed: &impl Fn(UpgradeId) -> bool) -> Option<UpgradeId> {
        let at = self
            .upgrades
            .iter()
            .position(|(id, v)| !v && !claimed(*id))
            .or_else(|| self.upgrades.iter().position(|(_, v)| !v))?;
        self.upgrades.remove(at).map(|(id, _)| id)
    }

    /// Removes the oldest upgrade of a stranger, or (`any`) the oldest of all.
    fn evict_oldest(&mut self, any: bool) -> Option<UpgradeId> {
        let at = self.upgrades.iter().position(|(_, v)| any || !v)?;
        self.upgrades.remove(at).map(|(id, _)| id)
    }

    /// Inbound upgrade `id` finished (or was evicted).
    pub(crate) fn on_upgrade_finished(&mut self, id: UpgradeId) {
        self.upgrades.retain(|(u, _)| *u != id);
    }

    /// Inbound upgrades in flight.
    #[cfg(test)]
    pub(crate) fn upgrades_in_flight(&self) -> usize {
        self.upgrades.len()
    }

    /// A dial to `peer` was requested (`banned`: it is banned now).
    pub(crate) fn dial(&mut self, peer: PeerId, banned: bool) -> Dial {
        if peer == self.local {
            return Dial::Refuse(DialRefusal::SelfDial);
        }
        if banned {
            return Dial::Refuse(DialRefusal::Banned);
        }
        if self.live.contains_key(&peer) {
            return Dial::Connected;
        }
        if self.dialing.contains(&peer) {
            return Dial::Join;
        }
        if self.dialing.len() >= self.limits.max_dials {
            return Dial::Refuse(DialRefusal::TooManyDials);
        }
        self.dialing.insert(peer);
        Dial::Start
    }

    /// The dial to `peer` ended (its connection, if any, comes to [`Self::on_upgraded`]).
    pub(crate) fn on_dialed(&mut self, peer: &PeerId) {
        self.dialing.remove(peer);
    }

    /// A connection to `peer` of `origin` finished its upgrade; `trusted` and `banned`
    /// say what the peer is now.
    pub(crate) fn on_upgraded(
        &mut self,
        peer: PeerId,
        origin: ConnectionOrigin,
        trusted: bool,
        banned: bool,
    ) -> Upgraded {
        if banned {
            return Upgraded::Refuse(Refusal::Banned);
        }
        if peer == self.local {
            return Upgraded::Refuse(Refusal::SelfConnection);
        }
        let existing = self.live.get(&peer).copied();
        let untrusted_inbound = !trusted && origin == ConnectionOrigin::Inbound;
        let replaces_counted = existing.is_some_and(|live| live.untrusted_inbound);
        if untrusted_inbound
            && !replaces_counted
            && self.untrusted_inbound >= self.limits.max_inbound_untrusted
        {
            return Upgraded::Refuse(Refusal::TooManyUntrusted);
        }
        if let Some(live) = existing
            && !new_connection_wins(self.local, peer, live.origin, origin)
        {
            return Upgraded::KeepExisting;
        }
        if let Some(live) = existing {
            self.forget(&peer, live);
        }
        let id = ConnectionId(self.next_connection_id);
        self.next_connection_id += 1;
        self.live.insert(
            peer,
            Live {
                id,
                origin,
                untrusted_inbound,
            },
        );
        self.untrusted_inbound += usize::from(untrusted_inbound);
        Upgraded::Register {
            id,
            replaces: existing.map(|live| live.id),
        }
    }

    /// Connection `id` of `peer` ended by itself; whether it was the live one (then
    /// it is removed, and the applications are told).
    pub(crate) fn on_closed(&mut self, peer: &PeerId, id: ConnectionId) -> bool {
        match self.live.get(peer).copied() {
            Some(live) if live.id == id => {
                self.forget(peer, live);
                true
            }
            _ => false,
        }
    }

    /// A request to close `peer`'s live connection, or only connection `named`: the id
    /// of the connection to close, removed here.
    pub(crate) fn disconnect(
        &mut self,
        peer: PeerId,
        named: Option<ConnectionId>,
    ) -> Result<ConnectionId, DisconnectError> {
        let live = self
            .live
            .get(&peer)
            .copied()
            .ok_or(DisconnectError::NotConnected(peer))?;
        if let Some(named) = named
            && named != live.id
        {
            return Err(DisconnectError::StaleConnection {
                peer,
                connection: named,
            });
        }
        self.forget(&peer, live);
        Ok(live.id)
    }

    /// Every live connection is closing (shutdown): forgets them all.
    pub(crate) fn clear(&mut self) {
        self.live.clear();
        self.untrusted_inbound = 0;
    }

    fn forget(&mut self, peer: &PeerId, live: Live) {
        self.live.remove(peer);
        self.untrusted_inbound -= usize::from(live.untrusted_inbound);
    }
}

/// Whether a new connection to `remote` replaces the `existing` one.
///
/// When two peers dial each other at the same moment each ends up with two connections,
/// one of each origin. Both ends must keep the same one, or each closes the other's
/// survivor: the rule keeps the connection dialed by the peer with the smaller id. Two
/// connections of the same origin mean the same side dialed twice; the newer one wins,
/// since the older one is most likely dead on the dialer's side.
pub fn new_connection_wins(
    local: PeerId,
    remote: PeerId,
    existing: ConnectionOrigin,
    new: ConnectionOrigin,
) -> bool {
    if existing == new {
        return true;
    }
    let new_dialed_by_local = new == ConnectionOrigin::Outbound;
    new_dialed_by_local == (local < remote)
}

#[cfg(test)]
mod tests;
