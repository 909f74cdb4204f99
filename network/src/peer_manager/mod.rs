//! PeerManager: the one task that owns the set of connections.
//!
//! It listens, dials on request, upgrades connections (through the transport built in
//! [`crate::transport`]), and keeps **at most one connection per peer**: when two
//! connections to a peer exist, [`new_connection_wins`] picks the survivor the
//! same way on both ends. Every connection carries a [`ConnectionId`]; a connection that
//! closes after it was replaced produces no `LostPeer`.
//!
//! Defences: inbound upgrades in flight are capped, and past the cap each new socket
//! evicts the oldest (so sockets that connect and stall cannot lock honest peers out);
//! a banned peer (see [`crate::reputation`]) is refused right after Noise authenticates
//! it, and dials to it fail with `DialError::Banned`; each refusal is counted in
//! `network_ban_refusals_total`.
//!
//! Its decisions (admission, the tie-break, replacement, eviction, dial limits) are an
//! I/O-free core, [`decisions::Decisions`], which this task feeds and obeys.
//!
//! The manager never waits on anything but its own inputs: events to applications are
//! queued with `push_control`, which does not block, and closing a connection is
//! spawned. So no other task can stall it, and it cannot deadlock with a peer task.

mod accept;
mod counting;
mod decisions;
mod notifications;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{AbortHandle, Aborted, BoxFuture};
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use netcore::transport::{
    BoxedListener, BoxedTransport, ConnectionOrigin, SourceFilter, Transport,
};
use netcore::{NetworkAddress, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use self::accept::FilterState;
use self::notifications::coalesce_notifications;
pub use crate::connection::{ConnectionId, ConnectionMetadata, DisconnectReason, TrustPredicate};
use crate::requests::{Closed, Request};
pub use decisions::new_connection_wins;
use decisions::{Decisions, Dial, DialRefusal, Limits, UpgradeId, Upgraded};

use crate::admission::{Admission, ClaimBoard, ValidatorAddresses};
use crate::channel::MeteredReceiver;
use crate::config::MAX_QUEUED_NOTIFICATIONS_PER_PEER;
use crate::error::{DialError, DisconnectError};
use crate::peer;
use crate::protocols::{Delivery, Event, PeerHandle};
use crate::refusal_log::{Flaps, LogLimiter, host};
use crate::reputation::Misbehaviour;
use crate::shared::Shared;
use crate::transport::{UpgradeError, UpgradedConnection};

type Upgrade = BoxFuture<'static, Result<UpgradedConnection, UpgradeError>>;
type DialResult = (PeerId, Instant, Result<UpgradedConnection, UpgradeError>);
type InboundResult = (
    u64,
    NetworkAddress,
    Result<Result<UpgradedConnection, UpgradeError>, Aborted>,
);

/// The peer manager's state; see the module docs.
pub(crate) struct PeerManager {
    shared: Arc<Shared>,
    transport: BoxedTransport<UpgradedConnection, UpgradeError>,
    listeners: SelectAll<BoxedListener<UpgradedConnection, UpgradeError>>,
    requests: MeteredReceiver<Request>,
    closed_tx: mpsc::Sender<Closed>,
    closed_rx: mpsc::Receiver<Closed>,
    inbound_upgrades: FuturesUnordered<BoxFuture<'static, InboundResult>>,
    /// How to abort each inbound upgrade in flight, when it is evicted.
    upgrade_aborts: HashMap<UpgradeId, AbortHandle>,
    /// Limits on inbound sockets at accept, before any cryptography.
    admission: Admission,
    /// Where admission's blocks go (the TCP listeners' socket filter), and when.
    filter: FilterState,
    /// The source IP of each inbound upgrade in flight that admission counts.
    upgrade_sources: HashMap<UpgradeId, IpAddr>,
    /// The source address of each inbound upgrade in flight.
    upgrade_addrs: HashMap<UpgradeId, NetworkAddress>,
    /// Inbound upgrades that named a trusted peer in their prologue (filled by the
    /// transport).
    claims: ClaimBoard,
    /// Who is live, and what happens to each connection, dial and upgrade.
    decisions: Decisions,
    dials: FuturesUnordered<BoxFuture<'static, DialResult>>,
    /// Callers waiting on the dial in flight to each peer.
    pending_dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), DialError>>>>,
    is_trusted: TrustPredicate,
    /// Which refusals are written to the log.
    refusals: LogLimiter,
    /// Recent replacements of inbound connections, per peer.
    flaps: Flaps,
    shutdown: watch::Receiver<bool>,
    /// Tells each connection's task to stop.
    peer_shutdown: watch::Sender<bool>,
}

impl PeerManager {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        transport: BoxedTransport<UpgradedConnection, UpgradeError>,
        listeners: Vec<BoxedListener<UpgradedConnection, UpgradeError>>,
        requests: MeteredReceiver<Request>,
        is_trusted: TrustPredicate,
        validator_addresses: ValidatorAddresses,
        claims: ClaimBoard,
        source_filter: Option<SourceFilter>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        // Every live connection task may report once; the manager drains this queue in
        // its loop and never waits on it, so the bound only paces connection tasks.
        let (closed_tx, closed_rx) = mpsc::channel(1024);
        let (peer_shutdown, _) = watch::channel(false);
        let config = &shared.protocols.config;
        let mut admission = Admission::new(config.admission, validator_addresses);
        if source_filter.is_some() {
            admission.enable_filter();
        }
        let decisions = Decisions::new(
            shared.local_peer_id,
            Limits {
                max_inbound_upgrades: config.max_concurrent_inbound_upgrades,
                // At most half the slots are kept for validators, whatever the config
                // says: strangers (full nodes, validators known by name) keep the rest.
                max_stranger_upgrades: config.max_concurrent_inbound_upgrades
                    - config
                        .admission
                        .reserved_for_validators
                        .min(config.max_concurrent_inbound_upgrades / 2),
                max_dials: config.max_concurrent_dials,
                max_inbound_untrusted: config.max_inbound_untrusted,
            },
        );
        Self {
            shared,
            transport,
            listeners: listeners.into_iter().collect(),
            requests,
            closed_tx,
            closed_rx,
            inbound_upgrades: FuturesUnordered::new(),
            upgrade_aborts: HashMap::new(),
            admission,
            filter: FilterState::new(source_filter),
            upgrade_sources: HashMap::new(),
            upgrade_addrs: HashMap::new(),
            claims,
            decisions,
            dials: FuturesUnordered::new(),
            pending_dials: HashMap::new(),
            is_trusted,
            refusals: LogLimiter::new(),
            flaps: Flaps::default(),
            shutdown,
            peer_shutdown,
        }
    }

    /// Runs until shutdown is signalled, then closes every connection.
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Some(closed) = self.closed_rx.recv() => self.on_closed(closed),
                Some(request) = self.requests.recv() => self.on_request(request),
                () = &mut self.filter.timer, if self.filter.armed => self.on_filter_timer(),
                Some((id, addr, result)) = self.inbound_upgrades.next(), if !self.inbound_upgrades.is_empty() => {
                    self.on_upgrade_ended(id);
                    // An evicted upgrade (`Aborted`) dropped its socket already.
                    if let Ok(result) = result {
                        self.on_upgraded(addr, ConnectionOrigin::Inbound, result);
                    }
                }
                Some((peer, started, result)) = self.dials.next(), if !self.dials.is_empty() => {
                    self.on_dialed(peer, started, result);
                }
                Some(item) = self.listeners.next(), if !self.listeners.is_empty() => match item {
                    Ok((upgrade, addr)) => self.start_inbound_upgrade(upgrade, addr),
                    Err(e) => debug!(error = %e, "accept failed"),
                },
            }
        }
        self.close_all().await;
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Dial(addr, reply) => self.dial(addr, reply),
            Request::Disconnect {
                peer,
                connection,
                reason,
                reply,
            } => {
                let result = self.disconnect(peer, connection, reason);
                // Only a verdict that closed the connection it was about counts.
                if result.is_ok() && reason == DisconnectReason::HealthCheckFailed {
                    self.shared
                        .protocols
                        .reporter
                        .report(peer, Misbehaviour::FailedHealthCheck);
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Closes the live connection of `peer`, if it is `connection` when one is named.
    fn disconnect(
        &mut self,
        peer: PeerId,
        connection: Option<ConnectionId>,
        reason: DisconnectReason,
    ) -> Result<(), DisconnectError> {
        self.decisions.disconnect(peer, connection)?;
        let handle = self
            .remove_peer(&peer)
            .ok_or(DisconnectError::NotConnected(peer))?;
        self.notify_lost(&handle, reason);
        close_gracefully(handle);
        Ok(())
    }

    fn dial(&mut self, addr: NetworkAddress, reply: oneshot::Sender<Result<(), DialError>>) {
        let Some(peer) = addr.peer_id() else {
            let _ = reply.send(Err(DialError::MissingPeerId));
            return;
        };
        let banned = self.shared.protocols.reporter.is_banned(&peer);
        match self.decisions.dial(peer, banned) {
            Dial::Start => {}
            Dial::Connected => {
                let _ = reply.send(Ok(()));
                return;
            }
            Dial::Join => {
                self.pending_dials.entry(peer).or_default().push(reply);
                return;
            }
            Dial::Refuse(refusal) => {
                match refusal {
                    DialRefusal::SelfDial => self.count_failure("self_dial"),
                    DialRefusal::Banned => self.count_ban_refusal(ConnectionOrigin::Outbound),
                    DialRefusal::TooManyDials => {}
                }
                let _ = reply.send(Err(refusal.error(peer)));
                return;
            }
        }
        let dial = match self.transport.dial(addr) {
            Ok(dial) => dial,
            Err(e) => {
                self.decisions.on_dialed(&peer);
                self.count_failure(e.reason());
                let _ = reply.send(Err(DialError::Failed(Arc::new(e))));
                return;
            }
        };
        self.pending_dials.insert(peer, vec![reply]);
        let started = Instant::now();
        // The transport bounds the upgrade; this also bounds the connect before it.
        let timeout = self.shared.protocols.config.upgrade_timeout;
        let dial = async move {
            let result = tokio::time::timeout(timeout, dial)
                .await
                .unwrap_or(Err(UpgradeError::Timeout(timeout)));
            (peer, started, result)
        };
        self.dials.push(dial.boxed());
    }

    fn on_dialed(
        &mut self,
        peer: PeerId,
        started: Instant,
        result: Result<UpgradedConnection, UpgradeError>,
    ) {
        self.decisions.on_dialed(&peer);
        let waiting = self.pending_dials.remove(&peer).unwrap_or_default();
        let reply: Result<(), DialError> = match result {
            Ok(conn) if conn.peer_id != peer => {
                // Noise authenticated the key the address named; anything else is a bug
                // in the transport, not something to keep.
                warn!(expected = %peer.short_str(), got = %conn.peer_id.short_str(), "dial reached another peer");
                self.count_failure("wrong_peer");
                Err(DialError::Failed(Arc::new(UpgradeError::WrongPeer)))
            }
            Ok(conn) => {
                self.shared
                    .protocols
                    .metrics
                    .connection
                    .dial_latency
                    .observe(started.elapsed().as_secs_f64());
                let addr = conn.addr.clone();
                self.on_upgraded(addr, ConnectionOrigin::Outbound, Ok(conn));
                Ok(())
            }
            Err(e) => {
                debug!(peer = %peer.short_str(), error = %e, "dial failed");
                self.refusals
                    .log_dial_failure(peer, &e, tokio::time::Instant::now());
                if matches!(e, UpgradeError::Banned(_)) {
                    self.count_ban_refusal(ConnectionOrigin::Outbound);
                }
                self.count_failure(e.reason());
                Err(DialError::Failed(Arc::new(e)))
            }
        };
        for w in waiting {
            let _ = w.send(reply.clone());
        }
    }

    fn on_upgraded(
        &mut self,
        addr: NetworkAddress,
        origin: ConnectionOrigin,
        result: Result<UpgradedConnection, UpgradeError>,
    ) {
        let conn = match result {
            Ok(conn) => conn,
            Err(e) => {
                if origin == ConnectionOrigin::Inbound {
                    self.refusals
                        .log_inbound_refusal(&addr, &e, tokio::time::Instant::now());
                    if matches!(e, UpgradeError::Banned(_)) {
                        self.count_ban_refusal(origin);
                    }
                    self.count_failure(e.reason());
                }
                return;
            }
        };
        let peer = conn.peer_id;
        let trusted = (self.is_trusted)(&peer);
        let banned = self.shared.protocols.reporter.is_banned(&peer);
        let previous = self.decisions.live(&peer);
        let (id, replaces) = match self.decisions.on_upgraded(peer, origin, trusted, banned) {
            Upgraded::Register { id, replaces } => (id, replaces),
            Upgraded::KeepExisting => {
                debug!(peer = %peer.short_str(), %origin, "keeping the existing connection");
                self.count_event("duplicate_closed");
                close_connection(conn.control);
                return;
            }
            Upgraded::Refuse(refusal) => {
                self.count_refusal(refusal, origin);
                close_connection(conn.control);
                return;
            }
        };
        if let Some(previous) = previous
            && previous.origin == ConnectionOrigin::Inbound
            && origin == ConnectionOrigin::Inbound
            && let Some(old) = self.shared.peer(&peer)
        {
            self.check_shared_key(peer, &old.metadata.addr, &addr);
        }
        // The connection this one replaces: applications hear of its end only after the
        // new one's arrival, so that one that follows the live connection of each peer
        // sees the peer stay up throughout.
        let replaced = replaces.and_then(|_| self.remove_peer(&peer));
        self.register(conn, id, addr, origin, trusted);
        if let Some(old) = replaced {
            self.count_event("replaced");
            self.notify_lost(&old, DisconnectReason::Replaced);
            close_gracefully(old);
        }
    }

    /// Makes `conn` the live connection of its peer: the table, the metrics, its task,
    /// and the applications' `NewPeer`.
    fn register(
        &mut self,
        conn: UpgradedConnection,
        connection_id: ConnectionId,
        addr: NetworkAddress,
        origin: ConnectionOrigin,
        trusted: bool,
    ) {
        let peer = conn.peer_id;
        let protocols = self
            .shared
            .protocols
            .routes
            .iter()
            .map(|r| r.protocol)
            .filter(|p| conn.remote_protocols.iter().any(|rp| rp == p.as_str()))
            .collect();
        let metadata = ConnectionMetadata {
            peer_id: peer,
            addr,
            origin,
            connection_id,
            protocols,
            client_version: conn.client_version,
        };
        let handle = Arc::new(PeerHandle::new(
            &self.shared.protocols,
            metadata.clone(),
            conn.control,
            trusted,
        ));
        if let Some(replaced) = self.shared.peers.write().insert(peer, Arc::clone(&handle)) {
            replaced.close_direct_send();
        }
        self.shared
            .protocols
            .metrics
            .connection
            .live
            .with_label_values(&[origin.as_str()])
            .inc();
        self.count_event("opened");
        info!(peer = %peer.short_str(), %origin, %connection_id, "connected");
        tokio::spawn(peer::run(
            Arc::clone(&self.shared.protocols),
            handle,
            conn.incoming,
            self.closed_tx.clone(),
            self.peer_shutdown.subscribe(),
        ));
        let metadata = Arc::new(metadata);
        self.broadcast_with(peer, || Event::NewPeer(Arc::clone(&metadata)));
    }

    fn on_closed(&mut self, closed: Closed) {
        if !self
            .decisions
            .on_closed(&closed.peer_id, closed.connection_id)
        {
            // A replaced or already removed connection: its LostPeer was sent, if due.
            return;
        }
        if let Some(handle) = self.remove_peer(&closed.peer_id) {
            info!(peer = %closed.peer_id.short_str(), connection_id = %closed.connection_id, "connection lost");
            self.notify_lost(&handle, DisconnectReason::ConnectionLost);
            close_gracefully(handle);
        }
    }

    /// Removes the live connection of `peer` from the peer table and the counters (the
    /// decisions have forgotten it already).
    fn remove_peer(&mut self, peer: &PeerId) -> Option<Arc<PeerHandle>> {
        // Its queues close before the table's lock is released: no `send_to` finds
        // the connection gone from the table with one of its queues still open.
        let handle = {
            let mut peers = self.shared.peers.write();
            let handle = peers.remove(peer)?;
            handle.close_direct_send();
            handle
        };
        self.shared
            .protocols
            .metrics
            .connection
            .live
            .with_label_values(&[handle.metadata.origin.as_str()])
            .dec();
        self.count_event("closed");
        Some(handle)
    }

    /// Counts and logs a peer whose inbound connection is replaced by another inbound one
    /// from a second host, or over and over from any: two nodes running with one key.
    fn check_shared_key(&mut self, peer: PeerId, old: &NetworkAddress, new: &NetworkAddress) {
        let now = tokio::time::Instant::now();
        if self.flaps.record(peer, now) || host(old) != host(new) {
            self.count_event("same_key_two_hosts");
            self.refusals.log_shared_key(peer, old, new, now);
        }
    }

    fn notify_lost(&self, handle: &PeerHandle, reason: DisconnectReason) {
        let event_for = || Event::LostPeer {
            peer_id: handle.metadata.peer_id,
            connection_id: handle.metadata.connection_id,
            reason,
        };
        self.broadcast_with(handle.metadata.peer_id, event_for);
    }

    fn broadcast_with(&self, peer: PeerId, event: impl Fn() -> Event) {
        for app in &self.shared.protocols.apps {
            if app
                .push_control(
                    (peer, None),
                    Delivery::Event(event()),
                    MAX_QUEUED_NOTIFICATIONS_PER_PEER,
                    coalesce_notifications,
                )
                .is_err()
            {
                self.shared
                    .protocols
                    .metrics
                    .traffic
                    .queue_drops
                    .with_label_values(&["notifications", "queue_full"])
                    .inc();
            }
        }
    }

    async fn close_all(&mut self) {
        let _ = self.peer_shutdown.send(true);
        self.decisions.clear();
        let handles: Vec<_> = {
            let mut peers = self.shared.peers.write();
            let handles: Vec<_> = peers.drain().map(|(_, h)| h).collect();
            for handle in &handles {
                handle.close_direct_send();
            }
            handles
        };
        let closes = handles.iter().map(|h| {
            self.notify_lost(h, DisconnectReason::Shutdown);
            h.control.close()
        });
        futures::future::join_all(closes).await;
        for (_, waiting) in self.pending_dials.drain() {
            for w in waiting {
                let _ = w.send(Err(DialError::Shutdown));
            }
        }
    }
}

/// Closes a connection without waiting for it.
fn close_connection(control: netcore::multiplexing::Control) {
    tokio::spawn(async move {
        let _ = control.close().await;
    });
}

fn close_gracefully(handle: Arc<PeerHandle>) {
    close_connection(handle.control.clone());
}
