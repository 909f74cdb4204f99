//! Discovery: spreads signed notes of where each peer listens.
//!
//! Each node holds a [`NoteBook`] of signed notes (peer id, addresses, epoch in
//! milliseconds, ed25519 signature over [`signing_bytes`]). Every
//! [`DiscoveryConfig::push_interval`] it pushes its notes to one random connected peer,
//! and it pushes them at once to every newly connected peer, so a node that knows only
//! its seeds reaches them as soon as the ConnectivityManager has connected it, and
//! learns their notes in return. A newer epoch wins; a bad signature, an address naming
//! another peer, too many addresses, or (in mutual mode) a peer outside the trusted set
//! drops the note, and each drop is counted by reason. What is learned goes to the
//! ConnectivityManager through its [`ConnectivityHandle`]. A node whose listen addresses
//! change ([`DiscoveryHandle::set_listen_addrs`]) signs a note with a newer epoch.
//!
//! The merging is in [`NoteBook`]; this task feeds it messages and does the pushes. It is
//! an application of the network: register [`PROTOCOLS`].

mod book;
mod config;
mod error;
mod note;

use std::future::Future;

use bytes::Bytes;
use futures::StreamExt;
use netcore::{NetworkAddress, PeerId};
use noise::{Identity, TrustedPeers};
use prometheus::{
    IntCounter, IntCounterVec, IntGauge, Registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_with_registry,
};
use proto::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use std::collections::HashMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::debug;

pub use self::book::{Merge, NoteBook};
pub use self::config::{
    DEFAULT_MAX_ADDRESSES_PER_NOTE, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_NOTES,
    DEFAULT_PUSH_INTERVAL, DiscoveryConfig,
};
pub use self::error::NoteError;
pub use self::note::{NOTE_DOMAIN, SignedNote, now_millis, signing_bytes};
use crate::connection::ConnectionId;
use crate::connectivity_manager::ConnectivityHandle;
use crate::interface::{Event, NetworkEvents, NetworkSender};
use crate::protocol_id::{ProtocolId, ProtocolKind};

/// Discovery's DirectSend protocol. Version 2: DirectSend acknowledgements travel back
/// on the substream (docs/WIRE.md); version 1 had none.
pub const DISCOVERY_PROTOCOL: ProtocolId = ProtocolId::new("/net/discovery/2");
/// What to pass to `NetworkBuilder::register` for discovery.
pub const PROTOCOLS: &[(ProtocolId, ProtocolKind)] =
    &[(DISCOVERY_PROTOCOL, ProtocolKind::DirectSend)];

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The identity that signs notes is not the network's.
    #[error("the signing identity {identity} is not the network's peer {network}")]
    IdentityMismatch {
        /// The identity's peer id.
        identity: PeerId,
        /// The network's peer id.
        network: PeerId,
    },
    /// The metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Changes a running [`Discovery`]'s own addresses.
#[derive(Debug)]
pub struct DiscoveryHandle {
    listen: watch::Sender<Vec<NetworkAddress>>,
}

impl DiscoveryHandle {
    /// This node now listens on `addrs`: discovery signs and spreads a note with a newer
    /// epoch.
    pub fn set_listen_addrs(&self, addrs: Vec<NetworkAddress>) {
        // Nobody listening means discovery has stopped; there is nothing to update.
        let _ = self.listen.send(addrs);
    }
}

#[derive(Clone, Debug)]
struct Metrics {
    dropped: IntCounterVec,
    accepted: IntCounter,
    pushes: IntCounter,
    held: IntGauge,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let dropped = register_int_counter_vec_with_registry!(
            "network_discovery_notes_dropped_total",
            "Discovery notes or messages dropped, by reason",
            &["reason"],
            registry
        )?;
        let accepted = register_int_counter_with_registry!(
            "network_discovery_notes_accepted_total",
            "Discovery notes that were new or newer than the one held",
            registry
        )?;
        let pushes = register_int_counter_with_registry!(
            "network_discovery_pushes_total",
            "Discovery pushes sent",
            registry
        )?;
        let held = register_int_gauge_with_registry!(
            "network_discovery_notes_held",
            "Discovery notes held, this node's own included",
            registry
        )?;
        held.set(1);
        Ok(Self {
            dropped,
            accepted,
            pushes,
            held,
        })
    }
}

/// The epoch of a republished note: the clock, unless it is not past both the current
/// epoch and one `seen` elsewhere (a clock that went back, or an earlier run of this
/// node), in which case one past the larger of them.
pub fn next_epoch(now: u64, current: u64, seen: u64) -> u64 {
    now.max(current.saturating_add(1))
        .max(seen.saturating_add(1))
}

/// The discovery task; see the module docs.
pub struct Discovery {
    config: DiscoveryConfig,
    identity: Identity,
    book: NoteBook,
    trusted: Option<TrustedPeers>,
    connectivity: ConnectivityHandle,
    sender: NetworkSender,
    events: NetworkEvents,
    listen: watch::Receiver<Vec<NetworkAddress>>,
    /// Connected peers that serve discovery, by their live connection.
    peers: HashMap<PeerId, ConnectionId>,
    metrics: Metrics,
    rng: StdRng,
}

impl Discovery {
    /// Discovery for the node `identity` (the network's own), listening on
    /// `listen_addrs`, over the application (`sender`, `events`) registered with
    /// [`PROTOCOLS`]. `trusted` is the trusted set in mutual mode, `None` in open mode.
    /// Learned addresses go to `connectivity`; metrics to `registry`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: DiscoveryConfig,
        identity: Identity,
        listen_addrs: Vec<NetworkAddress>,
        trusted: Option<TrustedPeers>,
        connectivity: ConnectivityHandle,
        sender: NetworkSender,
        events: NetworkEvents,
        registry: &Registry,
    ) -> Result<(Self, DiscoveryHandle), DiscoveryError> {
        if identity.peer_id() != sender.local_peer_id() {
            return Err(DiscoveryError::IdentityMismatch {
                identity: identity.peer_id(),
                network: sender.local_peer_id(),
            });
        }
        let metrics = Metrics::new(registry)?;
        let own = SignedNote::sign(&identity, &listen_addrs, now_millis());
        let book = NoteBook::new(own, config.max_notes);
        let (listen_tx, listen) = watch::channel(listen_addrs);
        let peers = sender
            .connected_peers()
            .into_iter()
            .filter(|m| m.supports(DISCOVERY_PROTOCOL))
            .map(|m| (m.peer_id, m.connection_id))
            .collect();
        let discovery = Self {
            config,
            identity,
            book,
            trusted,
            connectivity,
            sender,
            events,
            listen,
            peers,
            metrics,
            rng: StdRng::from_entropy(),
        };
        Ok((discovery, DiscoveryHandle { listen: listen_tx }))
    }

    /// The notes held now.
    pub fn book(&self) -> &NoteBook {
        &self.book
    }

    /// Runs discovery on a new task until `shutdown` completes or its events end.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes or the event stream ends.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.push_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut listen_open = true;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                changed = self.listen.changed(), if listen_open => match changed {
                    Ok(()) => {
                        let addrs = self.listen.borrow_and_update().clone();
                        self.republish(&addrs, 0);
                    }
                    Err(_) => listen_open = false,
                },
                _ = ticker.tick() => {
                    let target = self.peers.keys().copied().choose(&mut self.rng);
                    if let Some(peer) = target {
                        self.push(peer);
                    }
                }
            }
        }
    }

    /// Signs a note of `addrs` with an epoch after both the current one and `seen`.
    fn republish(&mut self, addrs: &[NetworkAddress], seen: u64) {
        let current = self.book.own().map_or(0, SignedNote::epoch);
        let epoch = next_epoch(now_millis(), current, seen);
        self.book
            .set_own(SignedNote::sign(&self.identity, addrs, epoch));
        debug!(epoch, "published a new discovery note");
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::NewPeer(meta) => {
                if meta.supports(DISCOVERY_PROTOCOL) {
                    self.peers.insert(meta.peer_id, meta.connection_id);
                    self.push(meta.peer_id);
                }
            }
            Event::LostPeer {
                peer_id,
                connection_id,
                ..
            } => {
                if self.peers.get(&peer_id) == Some(&connection_id) {
                    self.peers.remove(&peer_id);
                }
            }
            Event::Message { peer_id, data, .. } => self.on_message(peer_id, data).await,
            Event::RpcRequest { responder, .. } => {
                responder.fail("discovery serves no RPC");
            }
        }
    }

    /// Sends every note held (at most `max_notes`) to `peer`.
    fn push(&mut self, peer: PeerId) {
        let notes = proto::discovery::Notes {
            notes: self
                .book
                .notes()
                .take(self.config.max_notes)
                .map(SignedNote::to_proto)
                .collect(),
        };
        match self
            .sender
            .send_to(peer, DISCOVERY_PROTOCOL, Bytes::from(notes.encode_to_vec()))
        {
            Ok(()) => self.metrics.pushes.inc(),
            Err(e) => debug!(peer = %peer.short_str(), error = %e, "discovery push not sent"),
        }
    }

    async fn on_message(&mut self, from: PeerId, data: Bytes) {
        let notes = match self.decode(&data) {
            Ok(notes) => notes,
            Err(e) => {
                debug!(peer = %from.short_str(), error = %e, "dropping a discovery message");
                self.metrics.dropped.with_label_values(&[e.label()]).inc();
                if let Some(misbehaviour) = e.misbehaviour() {
                    self.sender.report(from, misbehaviour);
                }
                return;
            }
        };
        let mut learned = Vec::new();
        for wire in &notes.notes {
            let merged =
                SignedNote::from_proto(wire, self.config.max_addresses_per_note).and_then(|note| {
                    let peer = note.peer_id();
                    self.book
                        .merge(note, self.trusted.as_ref())
                        .map(|m| (peer, m))
                });
            match merged {
                Ok((peer, Merge::Added | Merge::Updated)) => {
                    self.metrics.accepted.inc();
                    if let Some(note) = self.book.get(&peer) {
                        learned.push((peer, note.addresses().to_vec()));
                    }
                }
                Ok((_, Merge::Stale)) => {}
                Ok((_, Merge::OwnSuperseded { epoch })) => {
                    let addrs = self.listen.borrow().clone();
                    self.republish(&addrs, epoch);
                }
                Err(e) => {
                    debug!(peer = %from.short_str(), error = %e, "dropping a discovery note");
                    self.metrics.dropped.with_label_values(&[e.label()]).inc();
                    if let Some(misbehaviour) = e.misbehaviour() {
                        self.sender.report(from, misbehaviour);
                    }
                }
            }
        }
        self.metrics
            .held
            .set(i64::try_from(self.book.len()).unwrap_or(i64::MAX));
        if !learned.is_empty() {
            // The connectivity manager never waits on discovery, so this cannot deadlock;
            // if it has stopped there is nobody left to tell.
            let _ = self.connectivity.update_addresses(learned).await;
        }
    }

    fn decode(&self, data: &Bytes) -> Result<proto::discovery::Notes, NoteError> {
        if data.len() > self.config.max_message_size {
            return Err(NoteError::MessageTooLarge {
                len: data.len(),
                max: self.config.max_message_size,
            });
        }
        let notes = proto::discovery::Notes::decode(data.clone())?;
        if notes.notes.len() > self.config.max_notes {
            return Err(NoteError::TooManyNotes {
                count: notes.notes.len(),
                max: self.config.max_notes,
            });
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::next_epoch;

    #[test]
    fn a_republished_note_is_always_newer_than_the_current_and_any_seen_epoch() {
        assert_eq!(
            next_epoch(1_000, 500, 0),
            1_000,
            "the clock when it is ahead"
        );
        assert_eq!(next_epoch(1_000, 1_000, 0), 1_001, "same millisecond");
        assert_eq!(next_epoch(1_000, 2_000, 0), 2_001, "clock went back");
        assert_eq!(
            next_epoch(1_000, 500, 5_000),
            5_001,
            "an earlier run wrote later"
        );
        assert_eq!(next_epoch(0, u64::MAX, 0), u64::MAX, "saturates");
    }
}
