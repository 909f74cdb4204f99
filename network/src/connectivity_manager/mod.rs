//! ConnectivityManager: keeps this node connected to every eligible peer.
//!
//! It owns the **eligible set** (the trusted set in mutual mode, replaceable at runtime,
//! e.g. at an epoch change; everyone in open mode) and the **address book** (seeds from
//! [`ConnectivityConfig`] plus what discovery learns, given through a
//! [`ConnectivityHandle`]). Every [`ConnectivityConfig::check_interval`] it dials all
//! eligible, unconnected peers concurrently, each with its own exponential backoff plus
//! jitter and rotating through the peer's addresses; it disconnects peers that left the
//! eligible set, never dials itself, and in open mode bounds its outbound connections.
//!
//! The decisions are in [`ConnectivityCore`], a state machine that returns [`Action`]s;
//! this module's task only feeds it events and performs the actions. It is an
//! application of the network with no protocols: register it with
//! `builder.register(&[])` to get `NewPeer`/`LostPeer`.
//!
//! The task waits on nobody who waits on it: dials run concurrently in the task, and
//! disconnects are spawned, so a busy peer manager never stalls the event loop.

mod config;
mod decisions;
mod error;

use std::collections::HashSet;
use std::future::Future;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use netcore::{NetworkAddress, PeerId};
use prometheus::{
    IntCounter, IntCounterVec, IntGauge, Registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_with_registry,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

pub use self::config::{
    ConnectivityConfig, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_CHECK_INTERVAL,
    DEFAULT_MAX_OUTBOUND_OPEN, REQUEST_QUEUE_SIZE,
};
pub use self::decisions::{Action, Backoff, ConnectivityCore};
pub use self::error::ConnectivityError;
use crate::connection::DisconnectReason;
use crate::error::DialError;
use crate::interface::{Event, NetworkEvents, NetworkSender};

/// Requests to the manager's task.
#[derive(Debug)]
enum Request {
    Addresses(Vec<(PeerId, Vec<NetworkAddress>)>),
    Eligible(HashSet<PeerId>),
}

/// Tells a running [`ConnectivityManager`] about addresses and eligibility. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct ConnectivityHandle {
    tx: mpsc::Sender<Request>,
}

impl ConnectivityHandle {
    /// Replaces the discovered addresses of each listed peer (addresses are completed
    /// with `/p2p/<peer>`).
    pub async fn update_addresses(
        &self,
        addresses: Vec<(PeerId, Vec<NetworkAddress>)>,
    ) -> Result<(), ConnectivityError> {
        self.tx
            .send(Request::Addresses(addresses))
            .await
            .map_err(|_| ConnectivityError::Stopped)
    }

    /// Replaces the eligible set: new peers are dialed and removed ones disconnected at
    /// once (peers in backoff keep their retry time).
    pub async fn set_eligible(&self, peers: HashSet<PeerId>) -> Result<(), ConnectivityError> {
        self.tx
            .send(Request::Eligible(peers))
            .await
            .map_err(|_| ConnectivityError::Stopped)
    }
}

/// The manager's metrics.
#[derive(Clone, Debug)]
struct Metrics {
    dials: IntCounterVec,
    disconnects: IntCounter,
    connected: IntGauge,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let dials = register_int_counter_vec_with_registry!(
            "network_connectivity_dials_total",
            "Dials by the connectivity manager, by outcome",
            &["outcome"],
            registry
        )?;
        let disconnects = register_int_counter_with_registry!(
            "network_connectivity_disconnects_total",
            "Peers disconnected for leaving the eligible set",
            registry
        )?;
        let connected = register_int_gauge_with_registry!(
            "network_connectivity_connected_peers",
            "Peers the connectivity manager sees connected",
            registry
        )?;
        Ok(Self {
            dials,
            disconnects,
            connected,
        })
    }
}

type DialFuture = BoxFuture<'static, (PeerId, Result<(), DialError>)>;

/// The ConnectivityManager task; see the module docs.
pub struct ConnectivityManager {
    core: ConnectivityCore,
    config: ConnectivityConfig,
    sender: NetworkSender,
    events: NetworkEvents,
    requests: mpsc::Receiver<Request>,
    metrics: Metrics,
    rng: StdRng,
}

impl ConnectivityManager {
    /// A manager for the node behind `sender`, fed by `events` (from an application
    /// registered with no protocols). `eligible` is the trusted set in mutual mode and
    /// `None` in open mode. Metrics are registered in `registry`.
    pub fn new(
        config: ConnectivityConfig,
        eligible: Option<HashSet<PeerId>>,
        sender: NetworkSender,
        events: NetworkEvents,
        registry: &Registry,
    ) -> Result<(Self, ConnectivityHandle), prometheus::Error> {
        let metrics = Metrics::new(registry)?;
        let (tx, requests) = mpsc::channel(REQUEST_QUEUE_SIZE);
        let mut core = ConnectivityCore::new(sender.local_peer_id(), &config, eligible);
        for meta in sender.connected_peers() {
            core.on_connected(meta.peer_id, meta.connection_id, meta.origin);
        }
        let manager = Self {
            core,
            config,
            sender,
            events,
            requests,
            metrics,
            rng: StdRng::from_entropy(),
        };
        Ok((manager, ConnectivityHandle { tx }))
    }

    /// Runs the manager on a new task until `shutdown` completes or the network stops.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes, the event stream ends, or the network shuts down.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.check_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut dials: FuturesUnordered<DialFuture> = FuturesUnordered::new();
        let mut requests_open = true;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some((peer, result)) = dials.next(), if !dials.is_empty() => {
                    let outcome = match &result {
                        Ok(()) => "success",
                        Err(DialError::Shutdown) => break,
                        Err(e) => {
                            debug!(peer = %peer.short_str(), error = %e, "dial failed");
                            "failure"
                        }
                    };
                    self.metrics.dials.with_label_values(&[outcome]).inc();
                    self.core.on_dial_result(peer, result.is_ok(), Instant::now(), &mut self.rng);
                }
                request = self.requests.recv(), if requests_open => match request {
                    Some(Request::Addresses(list)) => {
                        for (peer, addrs) in list {
                            self.core.update_discovered(peer, addrs);
                        }
                    }
                    Some(Request::Eligible(set)) => {
                        // Acted on at once (an epoch change): new peers are dialed and
                        // peers that left are disconnected now, not at the next tick.
                        self.core.set_eligible(set);
                        for action in self.core.on_tick(Instant::now(), &mut self.rng) {
                            self.perform(action, &mut dials);
                        }
                    }
                    // Every handle is gone: no more updates, keep connecting.
                    None => requests_open = false,
                },
                _ = ticker.tick() => {
                    for action in self.core.on_tick(Instant::now(), &mut self.rng) {
                        self.perform(action, &mut dials);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::NewPeer(meta) => {
                self.core
                    .on_connected(meta.peer_id, meta.connection_id, meta.origin);
            }
            Event::LostPeer {
                peer_id,
                connection_id,
                ..
            } => self.core.on_lost(peer_id, connection_id),
            // No protocols are registered for this application; nothing else arrives.
            Event::Message { .. } | Event::RpcRequest { .. } => {}
        }
        self.metrics
            .connected
            .set(i64::try_from(self.core.connected().count()).unwrap_or(i64::MAX));
    }

    fn perform(&mut self, action: Action, dials: &mut FuturesUnordered<DialFuture>) {
        match action {
            Action::Dial(peer, addr) => {
                debug!(peer = %peer.short_str(), %addr, "dialing");
                let sender = self.sender.clone();
                dials.push(async move { (peer, sender.dial(addr).await) }.boxed());
            }
            Action::Disconnect(peer) => {
                debug!(peer = %peer.short_str(), "disconnecting a peer that is no longer eligible");
                self.metrics.disconnects.inc();
                let sender = self.sender.clone();
                // Spawned: the peer manager's answer must not hold up this loop.
                tokio::spawn(async move {
                    let _ = sender
                        .disconnect_with_reason(peer, DisconnectReason::NotEligible)
                        .await;
                });
            }
        }
    }
}
