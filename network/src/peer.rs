//! One connection's substreams and its task. Each substream the remote opens gets a task
//! of its own, spawned by the multiplexer's task as the substream arrives, which routes
//! it by its negotiated protocol to the RPC or DirectSend handler of the application
//! that registered it. The connection's task exports the multiplexer's counters and
//! tells the peer manager when the connection ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use netcore::multiplexing::{Incoming, MuxStats, Substream};
use netcore::negotiate::{NegotiateError, negotiate_inbound};
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::peer_manager::Closed;
use crate::protocol_id::ProtocolKind;
use crate::protocols::{direct_send, rpc};
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Shared};

/// How often a connection's multiplexer counters are copied into the metrics: often
/// enough for a dashboard, rare enough to cost nothing.
const MUX_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Copies one connection's multiplexer counters into the node's metrics as deltas.
struct MuxStatsExport {
    stats: Arc<MuxStats>,
    refused: IntCounter,
    errors: IntCounter,
    seen_refused: u64,
    seen_errors: u64,
}

impl MuxStatsExport {
    fn new(shared: &Shared, handle: &PeerHandle) -> Self {
        Self {
            stats: handle.control.stats(),
            refused: shared
                .metrics
                .substreams_refused
                .with_label_values(&["mux_refused"]),
            errors: shared.metrics.mux_protocol_errors.clone(),
            seen_refused: 0,
            seen_errors: 0,
        }
    }

    fn sync(&mut self) {
        let refused = self.stats.streams_refused.load(Ordering::Relaxed);
        self.refused
            .inc_by(refused.saturating_sub(self.seen_refused));
        self.seen_refused = self.seen_refused.max(refused);
        let errors = self.stats.protocol_errors.load(Ordering::Relaxed);
        self.errors.inc_by(errors.saturating_sub(self.seen_errors));
        self.seen_errors = self.seen_errors.max(errors);
    }
}

/// Sets up the routing of the remote's substreams, then runs until the connection closes
/// or the network shuts down, and tells the peer manager.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handle: Arc<PeerHandle>,
    mut incoming: Incoming,
    closed: mpsc::Sender<Closed>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer_id = handle.metadata.peer_id;
    let connection_id = handle.metadata.connection_id;
    let mut stats = MuxStatsExport::new(&shared, &handle);
    // Each inbound substream gets its task straight from the connection task, not
    // through a wake-up of this one. Weak references: the multiplexer holds the
    // acceptor until the connection ends, and the peer handle holds the multiplexer.
    let (weak_shared, weak_handle) = (Arc::downgrade(&shared), Arc::downgrade(&handle));
    incoming.accept_with(move |substream| {
        if let (Some(shared), Some(handle)) = (weak_shared.upgrade(), weak_handle.upgrade()) {
            tokio::spawn(route_substream(shared, handle, substream));
        }
    });
    let mut tick = tokio::time::interval(MUX_STATS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One shutdown wait for the connection's life, not one registered and dropped per
    // substream.
    let shutdown = async move {
        let _ = shutdown.changed().await;
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            // The acceptor takes the substreams; this yields none unless one was
            // waiting before it was set, and ends with the connection.
            biased;
            substream = incoming.next() => match substream {
                Some(substream) => {
                    tokio::spawn(route_substream(Arc::clone(&shared), Arc::clone(&handle), substream));
                }
                None => break,
            },
            () = &mut shutdown => break,
            _ = tick.tick() => stats.sync(),
        }
    }
    // A connection the multiplexer closed for a protocol violation counts against its
    // peer, so repeated violations across reconnections end in a ban.
    stats.sync();
    if stats.stats.protocol_errors.load(Ordering::Relaxed) > 0 {
        shared.report(peer_id, Misbehaviour::ProtocolViolation);
    }
    drop(handle);
    let _ = closed
        .send(Closed {
            peer_id,
            connection_id,
        })
        .await;
}

/// Negotiates the protocol of an inbound substream and serves it.
async fn route_substream(shared: Arc<Shared>, handle: Arc<PeerHandle>, substream: Substream) {
    // One deadline for negotiating and, for an RPC, answering.
    let deadline = tokio::time::Instant::now() + shared.config.inbound_rpc_timeout;
    let negotiation = negotiate_inbound(substream, &shared.protocol_names);
    let (io, index) = match tokio::time::timeout_at(deadline, negotiation).await {
        Ok(Ok(negotiated)) => negotiated,
        Ok(Err(e)) => {
            let reason = match e {
                NegotiateError::Refused => "unknown_protocol",
                _ => "negotiation_failed",
            };
            debug!(peer = %handle.metadata.peer_id.short_str(), error = %e, "inbound substream refused");
            if is_garbage(&e) {
                shared.report(handle.metadata.peer_id, Misbehaviour::NegotiationGarbage);
            }
            shared
                .metrics
                .substreams_refused
                .with_label_values(&[reason])
                .inc();
            return;
        }
        Err(_) => {
            shared
                .metrics
                .substreams_refused
                .with_label_values(&["negotiation_timeout"])
                .inc();
            return;
        }
    };
    // Borrowed, not cloned: a route holds a dozen metric handles.
    let Some(route) = shared.routes.get(index) else {
        return;
    };
    match route.kind {
        ProtocolKind::Rpc => rpc::serve_inbound(&shared, handle, route, io, deadline).await,
        ProtocolKind::DirectSend => direct_send::serve_inbound(&shared, handle, route, io).await,
    }
}

/// Whether a negotiation failure is the remote's fault (malformed or abusive input)
/// rather than a refusal, a closed stream or an I/O failure.
fn is_garbage(e: &NegotiateError) -> bool {
    matches!(
        e,
        NegotiateError::MessageTooLong { .. }
            | NegotiateError::LengthPrefixTooLong { .. }
            | NegotiateError::Malformed(_)
            | NegotiateError::BadHeader
            | NegotiateError::UnexpectedMessage(_)
            | NegotiateError::TooManyProposals { .. }
    )
}
