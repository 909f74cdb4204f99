//! HealthChecker: pings every connected peer and disconnects the dead.
//!
//! Every [`HealthCheckerConfig::ping_interval`] each connected peer that serves
//! [`HEALTH_PROTOCOL`] gets a [`Ping`] with a random nonce over RPC;
//! the [`Pong`] must echo it within
//! [`HealthCheckerConfig::ping_timeout`]. After
//! [`HealthCheckerConfig::failures_threshold`] consecutive failures the peer is
//! disconnected with [`DisconnectReason::HealthCheckFailed`]; a success resets the count.
//! The same task answers the pings of other nodes.
//!
//! The counting is in [`HealthState`]; this task feeds it events and ping outcomes. It is
//! an application of the network: register [`PROTOCOLS`] and give the task that
//! application's sender and events.

mod config;
mod state;

use std::future::Future;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use netcore::PeerId;
use prometheus::{
    IntCounter, IntCounterVec, Registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry,
};
use proto::Message;
use proto::health::{Ping, Pong};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

pub use self::config::{
    DEFAULT_FAILURES_THRESHOLD, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, HealthCheckerConfig,
    MAX_PING_MESSAGE_SIZE,
};
pub use self::state::{HealthState, Verdict};
use crate::connection::{ConnectionId, DisconnectReason};
use crate::interface::{Event, NetworkEvents, NetworkSender, RpcResponder};
use crate::protocol_id::{ProtocolId, ProtocolKind};

/// The health checker's RPC protocol.
/// Version 2: a response over the payload limit is answered with the failure code
/// `TOO_LARGE` (docs/WIRE.md).
pub const HEALTH_PROTOCOL: ProtocolId = ProtocolId::new("/net/health/2");
/// What to pass to `NetworkBuilder::register` for the health checker.
pub const PROTOCOLS: &[(ProtocolId, ProtocolKind)] = &[(HEALTH_PROTOCOL, ProtocolKind::Rpc)];

/// Why a ping failed (for logs and the `outcome` label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// The RPC failed (timeout, disconnection, refusal...).
    #[error("ping RPC failed: {0}")]
    Rpc(#[from] crate::error::RpcError),
    /// The pong is larger than a pong can be.
    #[error("pong of {0} bytes is too large")]
    TooLarge(usize),
    /// The pong does not decode.
    #[error("pong does not decode: {0}")]
    Malformed(#[from] proto::DecodeError),
    /// The pong echoes another nonce.
    #[error("pong echoes nonce {got}, expected {expected}")]
    WrongNonce {
        /// The nonce sent.
        expected: u64,
        /// The nonce echoed.
        got: u64,
    },
}

impl PingError {
    fn label(&self) -> &'static str {
        match self {
            PingError::Rpc(e) => e.as_str(),
            PingError::TooLarge(_) => "too_large",
            PingError::Malformed(_) => "malformed",
            PingError::WrongNonce { .. } => "wrong_nonce",
        }
    }
}

#[derive(Clone, Debug)]
struct Metrics {
    pings: IntCounterVec,
    failures: IntCounter,
    disconnects: IntCounter,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let pings = register_int_counter_vec_with_registry!(
            "network_health_check_pings_total",
            "Health check pings sent, by outcome",
            &["outcome"],
            registry
        )?;
        let failures = register_int_counter_with_registry!(
            "network_health_check_failures_total",
            "Health check pings that failed",
            registry
        )?;
        let disconnects = register_int_counter_with_registry!(
            "network_health_check_disconnects_total",
            "Peers disconnected after too many failed pings",
            registry
        )?;
        Ok(Self {
            pings,
            failures,
            disconnects,
        })
    }
}

type PingFuture = BoxFuture<'static, (PeerId, ConnectionId, Result<(), PingError>)>;

/// The health checker task; see the module docs.
pub struct HealthChecker {
    config: HealthCheckerConfig,
    state: HealthState,
    sender: NetworkSender,
    events: NetworkEvents,
    metrics: Metrics,
}

impl HealthChecker {
    /// A health checker over the application (`sender`, `events`) registered with
    /// [`PROTOCOLS`]. Metrics are registered in `registry`.
    pub fn new(
        config: HealthCheckerConfig,
        sender: NetworkSender,
        events: NetworkEvents,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let mut state = HealthState::new(config.failures_threshold);
        for meta in sender.connected_peers() {
            if meta.supports(HEALTH_PROTOCOL) {
                state.on_connected(meta.peer_id, meta.connection_id);
            }
        }
        Ok(Self {
            state,
            metrics: Metrics::new(registry)?,
            config,
            sender,
            events,
        })
    }

    /// Runs the checker on a new task until `shutdown` completes or its events end.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes or the event stream ends. The first pings go out
    /// one interval after the start.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let start = tokio::time::Instant::now() + self.config.ping_interval;
        let mut ticker = tokio::time::interval_at(start, self.config.ping_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pings: FuturesUnordered<PingFuture> = FuturesUnordered::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some((peer, connection, result)) = pings.next(), if !pings.is_empty() => {
                    self.on_ping_result(peer, connection, result);
                }
                _ = ticker.tick() => {
                    for (peer, connection) in self.state.peers_to_ping() {
                        pings.push(self.ping(peer, connection));
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::NewPeer(meta) => {
                if meta.supports(HEALTH_PROTOCOL) {
                    self.state.on_connected(meta.peer_id, meta.connection_id);
                }
            }
            Event::LostPeer {
                peer_id,
                connection_id,
                ..
            } => self.state.on_lost(peer_id, connection_id),
            Event::RpcRequest {
                peer_id,
                data,
                responder,
                ..
            } => answer_ping(peer_id, &data, responder),
            Event::Message { .. } => {}
        }
    }

    fn ping(&self, peer: PeerId, connection: ConnectionId) -> PingFuture {
        let sender = self.sender.clone();
        let timeout = self.config.ping_timeout;
        let nonce: u64 = rand::thread_rng().r#gen();
        async move {
            let request = Bytes::from(Ping { nonce }.encode_to_vec());
            let result = async {
                let response = sender.rpc(peer, HEALTH_PROTOCOL, request, timeout).await?;
                if response.len() > MAX_PING_MESSAGE_SIZE {
                    return Err(PingError::TooLarge(response.len()));
                }
                let pong = Pong::decode(response)?;
                if pong.nonce != nonce {
                    return Err(PingError::WrongNonce {
                        expected: nonce,
                        got: pong.nonce,
                    });
                }
                Ok(())
            }
            .await;
            (peer, connection, result)
        }
        .boxed()
    }

    fn on_ping_result(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        result: Result<(), PingError>,
    ) {
        let label = match &result {
            Ok(()) => "success",
            Err(e) => e.label(),
        };
        self.metrics.pings.with_label_values(&[label]).inc();
        if let Err(e) = &result {
            self.metrics.failures.inc();
            debug!(peer = %peer.short_str(), error = %e, "ping failed");
        }
        if self.state.on_ping_result(peer, connection, result.is_ok()) == Verdict::Disconnect {
            warn!(
                peer = %peer.short_str(),
                failures = self.config.failures_threshold,
                "disconnecting a peer that failed its health checks"
            );
            self.metrics.disconnects.inc();
            let sender = self.sender.clone();
            // Spawned: the peer manager's answer must not hold up the pings of others.
            tokio::spawn(async move {
                let _ = sender
                    .disconnect_connection(peer, connection, DisconnectReason::HealthCheckFailed)
                    .await;
            });
        }
    }
}

/// Answers a ping with a pong echoing its nonce; a malformed ping is failed.
fn answer_ping(peer: PeerId, data: &Bytes, responder: RpcResponder) {
    if data.len() > MAX_PING_MESSAGE_SIZE {
        debug!(peer = %peer.short_str(), len = data.len(), "oversized ping");
        responder.fail("ping too large");
        return;
    }
    match Ping::decode(data.clone()) {
        Ok(ping) => {
            // A pong is a few bytes, far below any message limit.
            let _ = responder.respond(Bytes::from(Pong { nonce: ping.nonce }.encode_to_vec()));
        }
        Err(e) => {
            debug!(peer = %peer.short_str(), error = %e, "malformed ping");
            responder.fail("malformed ping");
        }
    }
}
