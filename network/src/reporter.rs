//! Where the network's components report a peer's misbehaviour: the reputation, its
//! metrics, and the peer manager, asked to disconnect a peer that the report bans.

use std::sync::Arc;

use netcore::PeerId;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge};
use tracing::{debug, warn};

use crate::channel::{MeteredSender, QueueError};
use crate::connection::{DisconnectReason, TrustPredicate};
use crate::counters::NetworkMetrics;
use crate::reputation::{Misbehaviour, Reputation, Verdict};
use crate::requests::Request;

/// Penalizes peers and asks the peer manager to disconnect the ones it bans. Cheap to
/// share: every component that sees misbehaviour holds it through the node's state.
pub(crate) struct Reporter {
    /// Penalties and bans, shared with the transport (which refuses banned peers).
    pub(crate) reputation: Arc<Mutex<Reputation>>,
    /// Whether a peer is in the trusted set (trusted peers get a short ban cap).
    is_trusted: TrustPredicate,
    penalties: IntCounterVec,
    bans: IntCounterVec,
    banned_peers: IntGauge,
    /// The peer manager's queue, for the disconnect of a banned peer.
    requests: MeteredSender<Request>,
}

impl Reporter {
    /// A reporter over `reputation`, counting in `metrics` and sending disconnects to
    /// `requests`.
    pub(crate) fn new(
        reputation: Arc<Mutex<Reputation>>,
        is_trusted: TrustPredicate,
        metrics: &NetworkMetrics,
        requests: MeteredSender<Request>,
    ) -> Self {
        Self {
            reputation,
            is_trusted,
            penalties: metrics.defence.penalties.clone(),
            bans: metrics.defence.bans.clone(),
            banned_peers: metrics.defence.banned_peers.clone(),
            requests,
        }
    }

    /// Penalizes `peer` for `misbehaviour`; when that bans it, counts the ban and asks
    /// the peer manager to disconnect it. Never waits: when the peer manager's queue is
    /// full, a task queues the disconnect as room comes. Called outside a runtime, the
    /// ban alone stands, and the transport refuses the peer's next connection.
    pub(crate) fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) {
        let trusted = (self.is_trusted)(&peer);
        self.penalties
            .with_label_values(&[misbehaviour.as_str()])
            .inc();
        let now = tokio::time::Instant::now().into_std();
        let (verdict, banned) = {
            let mut reputation = self.reputation.lock();
            let verdict = reputation.penalize(peer, misbehaviour, trusted, now);
            (verdict, reputation.banned_count(now))
        };
        self.banned_peers.set(banned as i64);
        let Verdict::Banned { period, offence } = verdict else {
            debug!(peer = %peer.short_str(), %misbehaviour, ?verdict, "peer penalized");
            return;
        };
        warn!(peer = %peer.short_str(), %misbehaviour, ?period, offence, trusted, "peer banned");
        let kind = if trusted { "trusted" } else { "untrusted" };
        self.bans.with_label_values(&[kind]).inc();
        let (reply, _) = tokio::sync::oneshot::channel();
        let request = Request::Disconnect {
            peer,
            connection: None,
            reason: DisconnectReason::Banned,
            reply,
        };
        if let Err(QueueError::Full(request)) = self.requests.try_send(request)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let requests = self.requests.clone();
            runtime.spawn(async move {
                let _ = requests.send(request).await;
            });
        }
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.reputation
            .lock()
            .is_banned(peer, tokio::time::Instant::now().into_std())
    }
}
