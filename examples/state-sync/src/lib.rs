//! Example application: state sync. A node that is far behind (a validator back from an
//! outage, a full node joining) fetches committed blocks in chunks by RPC from its
//! peers, a bounded number of chunks in flight, applies them in order, and then
//! follows the chain by asking again as it grows. Every node serves the blocks it keeps.
//!
//! It is an application like any other: [`StateSyncApp`] declares its protocol and
//! types and is registered with `validator_network::StackBuilder::register`; nothing in
//! `validator-network` knows it. The decisions are in [`SyncCore`], which does no I/O;
//! [`StateSync`] drives it.
//!
//! It does not check blocks beyond their chaining (height and parent id): the example
//! consensus signs nothing. A real chain would verify each block's quorum certificate
//! before applying it.

mod core;
mod store;

use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};
use validator_network::proto::consensus::block_retrieval_response::Status;
use validator_network::proto::consensus::{BlockRetrievalRequest, BlockRetrievalResponse};
use validator_network::{
    AppEvent, Application, Events, Misbehaviour, Never, Priority, ProtocolId, RequestError, Sender,
};

pub use crate::core::{Answer, Fetch, Progress, SyncCore};
pub use crate::store::{BlockStore, MAX_BLOCKS_PER_ANSWER};

/// Committed blocks by request: one substream per chunk.
pub const STATE_SYNC_RPC: ProtocolId = ProtocolId::new("/state-sync/rpc/1");

/// The state-sync application: a [`BlockRetrievalRequest`] answered by a
/// [`BlockRetrievalResponse`]; no one-way messages.
#[derive(Debug, Clone, Copy)]
pub enum StateSyncApp {}

impl Application for StateSyncApp {
    const NAME: &'static str = "state_sync";
    const DIRECT_SEND: Option<ProtocolId> = None;
    const RPC: Option<ProtocolId> = Some(STATE_SYNC_RPC);
    type Message = Never;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
    /// Chunks of old blocks can wait behind anything live.
    const PRIORITY: Priority = Priority::Bulk;
    /// A chunk of blocks may be large: [`MAX_CHUNK_BYTES`].
    const MAX_MESSAGE_SIZE: Option<usize> = Some(MAX_CHUNK_BYTES);
}

/// The largest response (a chunk of blocks) state sync sends or accepts: the large
/// messages of a validator network, which travel at [`Priority::Bulk`] beside
/// consensus without holding it up.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024 * 1024;

/// Blocks asked for per request: a few KB each in the example chain, so a chunk is a
/// few hundred KB at most, well under the message limit.
pub const DEFAULT_CHUNK: u64 = 50;
/// Chunks in flight (or received and waiting to be applied) at once: enough to keep a
/// few peers busy, small enough that a node far behind holds little in memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// How long a client that reached the end of its peers' chains waits before asking
/// again: it then follows the chain within this delay.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long one request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How state sync runs.
#[derive(Clone, Debug)]
pub struct StateSyncConfig {
    /// Whether this node fetches blocks (a full node) or only serves them (a validator,
    /// whose consensus commits its own).
    pub fetch: bool,
    /// Blocks asked for per request.
    pub chunk: u64,
    /// Chunks in flight or waiting to be applied, at most.
    pub max_in_flight: usize,
    /// Pause after reaching the end of the peers' chains.
    pub poll_interval: Duration,
    /// Time one request may take.
    pub request_timeout: Duration,
}

impl StateSyncConfig {
    /// A node that fetches (`fetch`) or only serves, with the default limits.
    pub fn new(fetch: bool) -> Self {
        Self {
            fetch,
            chunk: DEFAULT_CHUNK,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What a state-sync client has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// The height of the local chain.
    pub height: u64,
    /// Blocks fetched and applied.
    pub fetched: u64,
}

#[derive(Clone, Debug)]
struct Metrics {
    height: IntGauge,
    fetched: IntCounter,
    requests: IntCounterVec,
    served: IntCounter,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let height = IntGauge::new("state_sync_height", "Height of the local chain")?;
        let fetched = IntCounter::new(
            "state_sync_blocks_fetched_total",
            "Blocks fetched from peers and applied",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "state_sync_requests_total",
                "Chunk requests made, by outcome",
            ),
            &["outcome"],
        )?;
        let served = IntCounter::new(
            "state_sync_requests_served_total",
            "Chunk requests answered",
        )?;
        registry.register(Box::new(height.clone()))?;
        registry.register(Box::new(fetched.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(served.clone()))?;
        Ok(Self {
            height,
            fetched,
            requests,
            served,
        })
    }
}

/// A chunk request in flight, and its outcome.
type Pending =
    futures::future::BoxFuture<'static, (Fetch, Result<BlockRetrievalResponse, RequestError>)>;

/// The state-sync task: serves the blocks of its [`BlockStore`] and, if it fetches,
/// fills the store from its peers.
pub struct StateSync {
    config: StateSyncConfig,
    sender: Sender<StateSyncApp>,
    events: Events<StateSyncApp>,
    store: BlockStore,
    core: SyncCore,
    metrics: Metrics,
    status: watch::Sender<SyncStatus>,
}

impl StateSync {
    /// A state-sync task over the application's handles, serving and (if configured)
    /// filling `store`. Metrics go to `registry`; the receiver follows its status.
    pub fn new(
        config: StateSyncConfig,
        sender: Sender<StateSyncApp>,
        events: Events<StateSyncApp>,
        store: BlockStore,
        registry: &Registry,
    ) -> Result<(Self, watch::Receiver<SyncStatus>), prometheus::Error> {
        let metrics = Metrics::new(registry)?;
        // A chunk past what one answer carries would read as the end of every chain.
        let chunk = config.chunk.min(u64::from(MAX_BLOCKS_PER_ANSWER));
        let core = SyncCore::new(
            store.height(),
            store.head_id(),
            chunk,
            config.max_in_flight,
            config.poll_interval,
        );
        let (status, status_rx) = watch::channel(SyncStatus {
            height: store.height(),
            fetched: 0,
        });
        Ok((
            Self {
                config,
                sender,
                events,
                store,
                core,
                metrics,
                status,
            },
            status_rx,
        ))
    }

    /// Runs on a new task until `shutdown` completes or the events end.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes or the event stream ends.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut ticker = tokio::time::interval(self.config.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some((fetch, result)) = pending.next(), if !pending.is_empty() => {
                    self.on_answer(&fetch, result);
                }
                _ = ticker.tick() => {}
            }
            if self.config.fetch {
                for fetch in self.core.poll(Instant::now()) {
                    pending.push(self.request(fetch));
                }
            }
        }
    }

    fn on_event(&mut self, event: AppEvent<StateSyncApp>) {
        match event {
            AppEvent::NewPeer(peer) => self.core.on_peer_up(peer),
            AppEvent::LostPeer { peer_id, .. } => self.core.on_peer_down(&peer_id),
            AppEvent::RpcRequest {
                peer_id,
                request,
                responder,
            } => {
                self.metrics.served.inc();
                if let Err(e) = responder.respond(self.store.serve(&request)) {
                    warn!(peer = %peer_id.short_str(), error = %e, "blocks not sent");
                }
            }
        }
    }

    fn request(&self, fetch: Fetch) -> Pending {
        let sender = self.sender.clone();
        let timeout = self.config.request_timeout;
        let request = BlockRetrievalRequest {
            from_height: fetch.from,
            // The core asks for at most `chunk` blocks, a `u32`-sized number.
            max_blocks: u32::try_from(fetch.count).unwrap_or(u32::MAX),
        };
        async move {
            let result = sender.request(fetch.peer, &request, timeout).await;
            (fetch, result)
        }
        .boxed()
    }

    fn on_answer(&mut self, fetch: &Fetch, result: Result<BlockRetrievalResponse, RequestError>) {
        let (answer, outcome) = match result {
            Ok(response) => match response.status() {
                Status::Ok => (Answer::Blocks(response.blocks), "ok"),
                // Past the peer's head: it has nothing more yet.
                Status::NotFound => (Answer::Blocks(Vec::new()), "not_found"),
                Status::Pruned => (Answer::Failed, "pruned"),
            },
            Err(error) => {
                debug!(from = fetch.from, %error, "chunk request failed");
                (Answer::Failed, "failed")
            }
        };
        self.metrics.requests.with_label_values(&[outcome]).inc();
        let progress = self.core.on_answer(fetch, answer, Instant::now());
        if let Some(peer) = progress.misbehaved {
            warn!(peer = %peer.short_str(), "blocks that do not chain");
            self.sender.report(peer, Misbehaviour::ProtocolViolation);
        }
        let applied = progress.apply.len() as u64;
        for block in progress.apply {
            // The core checked the chaining against the same head.
            self.store.append(block);
        }
        if applied > 0 {
            self.metrics.fetched.inc_by(applied);
            self.metrics.height.set(self.core.height() as i64);
            self.status.send_modify(|status| {
                status.height = self.core.height();
                status.fetched += applied;
            });
        }
    }
}
