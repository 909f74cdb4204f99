//! An example mempool over `validator-network`: each node generates transactions at a
//! steady rate, gossips what is new to every connected peer in acknowledged batches
//! (an RPC per batch, a bounded number in flight per peer), and deduplicates what it
//! receives. Consensus pulls the oldest pending transactions through a
//! [`MempoolHandle`] and removes them once committed.
//!
//! It owns the pool and the gossip; it uses nothing of the network but the typed
//! mempool API of `validator-network`.

mod pool;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};
use validator_network::proto::mempool::{BatchAck, Transaction, TransactionBatch};
use validator_network::{
    AppEvent, Application, Events, Never, PeerId, ProtocolId, RequestError, Sender,
};

pub use pool::{Insert, Pool};

/// Transaction batches (requests) and their acks (responses). Version 2: a response
/// over the payload limit is answered with the failure code `TOO_LARGE` (docs/WIRE.md).
pub const MEMPOOL_RPC: ProtocolId = ProtocolId::new("/mempool/rpc/2");

/// The mempool application: a [`TransactionBatch`] is a request answered by a
/// [`BatchAck`]; it sends no one-way messages. Register it with
/// `StackBuilder::register::<MempoolApp>()`.
#[derive(Debug, Clone, Copy)]
pub enum MempoolApp {}

impl Application for MempoolApp {
    const NAME: &'static str = "mempool";
    const DIRECT_SEND: Option<ProtocolId> = None;
    const RPC: Option<ProtocolId> = Some(MEMPOOL_RPC);
    type Message = Never;
    type Request = TransactionBatch;
    type Response = BatchAck;
}

/// The mempool application's sender.
pub type MempoolSender = Sender<MempoolApp>;
/// The mempool application's event stream.
pub type MempoolEvents = Events<MempoolApp>;

/// Transactions this node creates per second: enough to fill blocks of a few hundred
/// at ten blocks a second across four validators, little enough to idle on two cores.
pub const DEFAULT_TRANSACTIONS_PER_SECOND: u64 = 1_000;
/// Bytes of payload per transaction: a small transfer.
pub const DEFAULT_PAYLOAD_SIZE: usize = 128;
/// Pending transactions at most: a few seconds of the whole network's load, so a
/// stalled chain bounds memory instead of growing it.
pub const DEFAULT_MAX_PENDING: usize = 50_000;
/// Time between gossip rounds: short enough that a leader has most transactions
/// before it proposes, long enough to batch them.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(50);
/// Transactions per batch at most: 1000 × ~140 bytes stays far below the network's
/// message limit.
pub const DEFAULT_MAX_BATCH: usize = 1_000;
/// Unacknowledged batches per peer: a slow peer gets no more until it answers.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Time a peer may take to acknowledge a batch.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Ticks per second of the transaction generator: creation is spread over the second.
const GENERATOR_TICKS_PER_SECOND: u64 = 20;

/// The mempool's configuration.
#[derive(Clone, Debug)]
pub struct MempoolConfig {
    /// Transactions this node creates per second (0: none).
    pub transactions_per_second: u64,
    /// Bytes of payload per transaction.
    pub payload_size: usize,
    /// Pending transactions at most.
    pub max_pending: usize,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Transactions per batch at most.
    pub max_batch: usize,
    /// Unacknowledged batches per peer at most.
    pub max_in_flight: usize,
    /// Time a peer may take to acknowledge a batch.
    pub batch_timeout: Duration,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            transactions_per_second: DEFAULT_TRANSACTIONS_PER_SECOND,
            payload_size: DEFAULT_PAYLOAD_SIZE,
            max_pending: DEFAULT_MAX_PENDING,
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            max_batch: DEFAULT_MAX_BATCH,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
        }
    }
}

/// The mempool's counters, registered in the node's registry.
#[derive(Clone, Debug)]
struct Metrics {
    transactions: IntCounterVec,
    batches: IntCounterVec,
    pending: IntGauge,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let transactions = IntCounterVec::new(
            Opts::new(
                "mempool_transactions_total",
                "Transactions by what happened to them",
            ),
            &["event"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new("mempool_batches_total", "Batches sent, by outcome"),
            &["outcome"],
        )?;
        let pending = IntGauge::new("mempool_pending_transactions", "Transactions pending")?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        Ok(Self {
            transactions,
            batches,
            pending,
        })
    }

    fn count(&self, event: &str, n: usize) {
        self.transactions
            .with_label_values(&[event])
            .inc_by(n as u64);
    }
}

/// What consensus uses: the pool, shared with the mempool task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MempoolHandle {
    pool: Arc<Mutex<Pool>>,
    metrics: Metrics,
}

impl MempoolHandle {
    /// The oldest `max` pending transaction ids (they stay pending until committed).
    pub fn pull(&self, max: usize) -> Vec<u64> {
        self.pool.lock().pull(max)
    }

    /// Removes committed transactions from the pool.
    pub fn remove_committed(&self, ids: &[u64]) {
        let mut pool = self.pool.lock();
        pool.remove_committed(ids);
        self.metrics.pending.set(pool.len() as i64);
    }

    /// Pending transactions.
    pub fn pending(&self) -> usize {
        self.pool.lock().len()
    }
}

type BatchFuture = BoxFuture<'static, (PeerId, Result<BatchAck, RequestError>)>;

/// Per-peer gossip state.
#[derive(Debug, Default)]
struct PeerState {
    /// The pool sequence number to send from.
    cursor: u64,
    /// Batches sent and not yet answered.
    in_flight: usize,
}

/// The mempool task; see the crate docs.
pub struct Mempool {
    config: MempoolConfig,
    sender: MempoolSender,
    events: MempoolEvents,
    handle: MempoolHandle,
    peers: HashMap<PeerId, PeerState>,
    /// The high bits of this node's transaction ids (from its peer id), so ids made by
    /// different nodes never collide.
    id_prefix: u64,
    /// Transactions created so far.
    created: u64,
    /// Generator ticks so far.
    generator_ticks: u64,
    next_batch_id: u64,
}

impl Mempool {
    /// A mempool over the mempool application's handles; metrics go to `registry`.
    pub fn new(
        config: MempoolConfig,
        sender: MempoolSender,
        events: MempoolEvents,
        registry: &Registry,
    ) -> Result<(Self, MempoolHandle), prometheus::Error> {
        let metrics = Metrics::new(registry)?;
        let handle = MempoolHandle {
            pool: Arc::new(Mutex::new(Pool::new(
                config.max_pending,
                4 * config.max_pending,
            ))),
            metrics,
        };
        let bytes = sender.local_peer_id();
        let bytes = bytes.as_bytes();
        let id_prefix =
            u64::from(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])) << 32;
        let mempool = Self {
            config,
            sender,
            events,
            handle: handle.clone(),
            peers: HashMap::new(),
            id_prefix,
            created: 0,
            generator_ticks: 0,
            next_batch_id: 0,
        };
        Ok((mempool, handle))
    }

    /// Runs the mempool on a new task until `shutdown` completes or the events end.
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes or the event stream ends.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut generate =
            tokio::time::interval(Duration::from_millis(1000 / GENERATOR_TICKS_PER_SECOND));
        generate.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut gossip = tokio::time::interval(self.config.gossip_interval);
        gossip.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batches: FuturesUnordered<BatchFuture> = FuturesUnordered::new();
        for peer in self.sender.connected_peers() {
            self.peers.entry(peer).or_default();
        }
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some((peer, result)) = batches.next(), if !batches.is_empty() => {
                    self.on_ack(peer, result);
                }
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                _ = generate.tick() => self.generate(),
                _ = gossip.tick() => self.gossip(&mut batches),
            }
        }
    }

    fn on_event(&mut self, event: AppEvent<MempoolApp>) {
        match event {
            AppEvent::NewPeer(peer) => {
                self.peers.insert(peer, PeerState::default());
            }
            AppEvent::LostPeer { peer_id, .. } => {
                self.peers.remove(&peer_id);
            }
            AppEvent::RpcRequest {
                peer_id,
                request,
                responder,
            } => {
                if let Err(e) = responder.respond(self.receive(peer_id, request)) {
                    warn!(peer = %peer_id.short_str(), error = %e, "batch acknowledgement not sent");
                }
            } // No `Message` arm: the mempool has no one-way messages (its type is
              // `Never`), so none can arrive.
        }
    }

    fn receive(&mut self, peer: PeerId, batch: TransactionBatch) -> BatchAck {
        let mut ack = BatchAck {
            batch_id: batch.batch_id,
            ..BatchAck::default()
        };
        let mut pool = self.handle.pool.lock();
        for tx in batch.transactions {
            match pool.insert(tx.id, tx.payload, Some(peer)) {
                Insert::Added => ack.accepted += 1,
                Insert::Duplicate => ack.duplicates += 1,
                Insert::Full => ack.dropped += 1,
            }
        }
        let metrics = &self.handle.metrics;
        metrics.count("received", ack.accepted as usize);
        metrics.count("duplicate", ack.duplicates as usize);
        metrics.count("dropped_full", ack.dropped as usize);
        metrics.pending.set(pool.len() as i64);
        ack
    }

    /// Creates the transactions due by this tick: after `t` ticks, `rate × t / ticks per
    /// second` in all, so the rate holds whatever it is.
    fn generate(&mut self) {
        self.generator_ticks += 1;
        let due =
            self.config.transactions_per_second * self.generator_ticks / GENERATOR_TICKS_PER_SECOND;
        let mut pool = self.handle.pool.lock();
        let mut made = 0;
        while self.created < due {
            let id = self.id_prefix | (self.created & 0xffff_ffff);
            self.created += 1;
            let payload = Bytes::from(vec![0u8; self.config.payload_size]);
            if pool.insert(id, payload, None) == Insert::Full {
                self.handle.metrics.count("dropped_full", 1);
            } else {
                made += 1;
            }
        }
        self.handle.metrics.count("generated", made);
        self.handle.metrics.pending.set(pool.len() as i64);
    }

    fn gossip(&mut self, batches: &mut FuturesUnordered<BatchFuture>) {
        let pool = self.handle.pool.lock();
        for (&peer, state) in &mut self.peers {
            if state.in_flight >= self.config.max_in_flight {
                continue;
            }
            let (txs, cursor) = pool.since(state.cursor, peer, self.config.max_batch);
            state.cursor = cursor;
            if txs.is_empty() {
                continue;
            }
            state.in_flight += 1;
            self.next_batch_id += 1;
            let batch = TransactionBatch {
                batch_id: self.next_batch_id,
                transactions: txs
                    .into_iter()
                    .map(|(id, payload)| Transaction { id, payload })
                    .collect(),
            };
            let sender = self.sender.clone();
            let timeout = self.config.batch_timeout;
            batches
                .push(async move { (peer, sender.request(peer, &batch, timeout).await) }.boxed());
        }
    }

    fn on_ack(&mut self, peer: PeerId, result: Result<BatchAck, RequestError>) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        let outcome = match result {
            Ok(_) => "acked",
            Err(e) => {
                debug!(peer = %peer.short_str(), error = %e, "batch not acknowledged");
                "failed"
            }
        };
        self.handle
            .metrics
            .batches
            .with_label_values(&[outcome])
            .inc();
    }
}
