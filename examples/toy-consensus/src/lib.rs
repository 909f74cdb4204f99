//! An example consensus over `validator-network`, in the shape of a BFT protocol but
//! kept small:
//!
//! - the validators take turns as leader, one round each ([`Core::leader`]);
//! - the leader of a round proposes a block of transaction ids pulled from the mempool
//!   and broadcasts it; each validator votes for it (once per round) if it extends the
//!   chain it has committed;
//! - the leader commits on a quorum of `n - f` votes, where `f = (n - 1) / 3` ([`quorum`]:
//!   three of three, three of four, four of five), and broadcasts a `SyncInfo`; the
//!   others commit the block they voted for when they hear it, and the next leader
//!   proposes. A minority never commits alone, and a validator cut off from the
//!   majority catches up with the majority's chain once it hears of it again;
//! - a round that makes no progress times out and the next leader takes over;
//! - a validator that learns it is behind (a proposal or `SyncInfo` above its height)
//!   catches up by requesting blocks (`BlockRetrievalRequest`), from the peer that told it.
//!
//! The rules are in [`Core`], which does no I/O; [`ToyConsensus`] drives it with the
//! typed consensus API of `validator-network` and nothing else of the network. It is an
//! example: there are no signatures, and no locks (as Tendermint's or HotStuff's). A
//! validator may vote in two rounds at one height, so a leader cut off right after its
//! quorum formed, before the news of its commit left it, may have committed a block
//! that the others never see; they can then commit another at that height, and the
//! cut-off validator stays on its fork. Quorums of `n - f` keep any minority from
//! committing alone; the fork needs that narrow timing.

mod rules;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use validator_network::proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg,
};
use validator_network::{AppEvent, Application, Events, PeerId, Priority, ProtocolId, Sender};

pub use crate::rules::{Action, Core, MAX_BLOCKS_PER_REQUEST, Timing, block_id, quorum};

/// Proposals, votes and sync info: one long-lived substream per peer. Version 2:
/// DirectSend acknowledgements travel back on the substream (docs/WIRE.md); version 1
/// had none.
pub const CONSENSUS_DIRECT_SEND: ProtocolId = ProtocolId::new("/consensus/direct-send/2");
/// Block retrieval: one substream per request. Version 2: a response over the payload
/// limit is answered with the failure code `TOO_LARGE` (docs/WIRE.md).
pub const CONSENSUS_RPC: ProtocolId = ProtocolId::new("/consensus/rpc/2");

/// The consensus application: [`ConsensusMsg`] one way, block retrieval by request.
/// Register it with `StackBuilder::register::<ConsensusApp>()`.
#[derive(Debug, Clone, Copy)]
pub enum ConsensusApp {}

impl Application for ConsensusApp {
    const NAME: &'static str = "consensus";
    const DIRECT_SEND: Option<ProtocolId> = Some(CONSENSUS_DIRECT_SEND);
    const RPC: Option<ProtocolId> = Some(CONSENSUS_RPC);
    type Message = ConsensusMsg;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
    /// Votes and proposals go before anything else waiting on a connection: a round
    /// waits for the slowest of its quorum's messages.
    const PRIORITY: Priority = Priority::Urgent;
}

/// The consensus application's sender.
pub type ConsensusSender = Sender<ConsensusApp>;
/// The consensus application's event stream.
pub type ConsensusEvents = Events<ConsensusApp>;

/// Time a round may take: on loopback or a LAN a round takes milliseconds, so one second
/// means a leader is gone, not slow.
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Least time from a commit to the next proposal: ten blocks a second, so the example
/// shows a steady chain without spinning the CPU.
pub const DEFAULT_MIN_BLOCK_INTERVAL: Duration = Duration::from_millis(100);
/// Transactions per block at most.
pub const DEFAULT_MAX_BLOCK_TRANSACTIONS: usize = 2_000;
/// Time a block retrieval may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Committed blocks kept to serve validators that fall behind: about three minutes of
/// chain at the default pace, a few megabytes. A validator further behind cannot catch
/// up from its peers' recent blocks (that is state sync's work); a node keeps its memory
/// flat once this many are kept.
pub const DEFAULT_MAX_BLOCKS_KEPT: usize = 2_000;

/// Where a block's transactions come from and where committed ones go.
pub trait TransactionSource: Send + Sync + 'static {
    /// Up to `max` pending transaction ids, oldest first (they stay pending).
    fn pull(&self, max: usize) -> Vec<u64>;
    /// These transactions are committed.
    fn committed(&self, ids: &[u64]);
}

/// No transactions: blocks are empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTransactions;

impl TransactionSource for NoTransactions {
    fn pull(&self, _max: usize) -> Vec<u64> {
        Vec::new()
    }
    fn committed(&self, _ids: &[u64]) {}
}

/// The consensus configuration.
#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    /// Every validator, this one included.
    pub validators: Vec<PeerId>,
    /// Time a round may take.
    pub round_timeout: Duration,
    /// Least time from a commit to the next proposal.
    pub min_block_interval: Duration,
    /// Transactions per block at most.
    pub max_block_transactions: usize,
    /// Time a block retrieval may take.
    pub request_timeout: Duration,
    /// Committed blocks kept to serve others.
    pub max_blocks_kept: usize,
    /// A change of the validator set at a height, if one is scheduled.
    pub reconfiguration: Option<Reconfiguration>,
}

/// A change of the validator set: `validators` take over once the block at `at_height`
/// is committed (see [`Core::reconfigure_at`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconfiguration {
    /// The height of the last block of the old set.
    pub at_height: u64,
    /// The new set.
    pub validators: Vec<PeerId>,
}

impl ConsensusConfig {
    /// The defaults for the validator set `validators`.
    pub fn new(validators: Vec<PeerId>) -> Self {
        Self {
            validators,
            round_timeout: DEFAULT_ROUND_TIMEOUT,
            min_block_interval: DEFAULT_MIN_BLOCK_INTERVAL,
            max_block_transactions: DEFAULT_MAX_BLOCK_TRANSACTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_blocks_kept: DEFAULT_MAX_BLOCKS_KEPT,
            reconfiguration: None,
        }
    }
}

/// What a running consensus reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsensusStatus {
    /// Height of the last committed block.
    pub committed_height: u64,
    /// Transactions committed in all.
    pub committed_transactions: u64,
    /// The current round.
    pub round: u64,
    /// Block retrievals that returned blocks.
    pub blocks_fetched: u64,
}

#[derive(Clone, Debug)]
struct Metrics {
    blocks: IntCounter,
    transactions: IntCounter,
    height: IntGauge,
    round: IntGauge,
    retrievals: IntCounterVec,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let blocks = IntCounter::new("consensus_committed_blocks_total", "Blocks committed")?;
        let transactions = IntCounter::new(
            "consensus_committed_transactions_total",
            "Transactions committed",
        )?;
        let height = IntGauge::new("consensus_committed_height", "Height of the last commit")?;
        let round = IntGauge::new("consensus_round", "Current round")?;
        let retrievals = IntCounterVec::new(
            Opts::new(
                "consensus_block_retrievals_total",
                "Block retrieval requests made, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(blocks.clone()))?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(height.clone()))?;
        registry.register(Box::new(round.clone()))?;
        registry.register(Box::new(retrievals.clone()))?;
        Ok(Self {
            blocks,
            transactions,
            height,
            round,
            retrievals,
        })
    }
}

/// The consensus task; see the crate docs.
pub struct ToyConsensus {
    core: Core,
    config: ConsensusConfig,
    sender: ConsensusSender,
    events: ConsensusEvents,
    source: Arc<dyn TransactionSource>,
    metrics: Metrics,
    status: watch::Sender<ConsensusStatus>,
    /// Called with each committed block (e.g. to keep it in a store that state sync
    /// serves).
    on_commit: Option<CommitObserver>,
}

/// Called with each block a validator commits.
type CommitObserver = Box<dyn Fn(&Block) + Send + Sync>;

impl ToyConsensus {
    /// The committed blocks this validator keeps (`max_blocks_kept` of them), shared:
    /// state sync serves from the same store, so blocks are kept once.
    pub fn blocks(&self) -> state_sync::BlockStore {
        self.core.store()
    }

    /// Calls `observer` with each block this validator commits, in order.
    pub fn on_commit(mut self, observer: impl Fn(&Block) + Send + Sync + 'static) -> Self {
        self.on_commit = Some(Box::new(observer));
        self
    }

    /// A validator over the consensus application's handles, taking transactions from
    /// `source`. Metrics go to `registry`; the returned receiver follows its status.
    pub fn new(
        config: ConsensusConfig,
        sender: ConsensusSender,
        events: ConsensusEvents,
        source: Arc<dyn TransactionSource>,
        registry: &Registry,
    ) -> Result<(Self, watch::Receiver<ConsensusStatus>), prometheus::Error> {
        let metrics = Metrics::new(registry)?;
        let timing = Timing {
            round_timeout: config.round_timeout,
            min_block_interval: config.min_block_interval,
        };
        let mut core = Core::new(
            sender.local_peer_id(),
            config.validators.clone(),
            timing,
            config.max_blocks_kept,
            Instant::now(),
        );
        if let Some(change) = &config.reconfiguration {
            core.reconfigure_at(change.at_height, change.validators.clone());
        }
        let (status, status_rx) = watch::channel(ConsensusStatus {
            round: core.round(),
            ..ConsensusStatus::default()
        });
        Ok((
            Self {
                core,
                config,
                sender,
                events,
                source,
                metrics,
                status,
                on_commit: None,
            },
            status_rx,
        ))
    }

    /// Runs the validator on a new task until `shutdown` completes or the events end.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes or the event stream ends.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // One retrieval at a time (the core asks for no more), so one slot suffices.
        let (fetched_tx, mut fetched_rx) = mpsc::channel::<Option<BlockRetrievalResponse>>(1);
        loop {
            let deadline = self.core.next_deadline();
            let actions = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(response) = fetched_rx.recv() => {
                    let outcome = if response.is_some() { "ok" } else { "failed" };
                    self.metrics.retrievals.with_label_values(&[outcome]).inc();
                    if response.is_some() {
                        self.status.send_modify(|s| s.blocks_fetched += 1);
                    }
                    self.core.on_blocks(response, Instant::now())
                }
                event = self.events.next() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => self.core.on_tick(Instant::now()),
            };
            self.perform(actions, &fetched_tx);
            let now = Instant::now();
            if self.core.wants_to_propose(now) {
                let transactions = self.source.pull(self.config.max_block_transactions);
                let actions = self.core.propose(transactions, now);
                self.perform(actions, &fetched_tx);
            }
            self.metrics.round.set(self.core.round() as i64);
        }
    }

    fn on_event(&mut self, event: AppEvent<ConsensusApp>) -> Vec<Action> {
        match event {
            AppEvent::Message { peer_id, msg } => {
                self.core.on_message(peer_id, msg, Instant::now())
            }
            AppEvent::RpcRequest {
                request, responder, ..
            } => {
                // Blocks are served one per request: a block over the message limit
                // cannot be served at all, and the caller is told so.
                if let Err(e) = responder.respond(self.core.serve(&request)) {
                    warn!(error = %e, "block not served");
                }
                Vec::new()
            }
            AppEvent::NewPeer(peer) => {
                // Tell it where this validator is, so it can catch up at once.
                let _ = self.sender.send_to(peer, &self.core.sync_info());
                Vec::new()
            }
            AppEvent::LostPeer { .. } => Vec::new(),
        }
    }

    fn perform(
        &mut self,
        actions: Vec<Action>,
        fetched: &mpsc::Sender<Option<BlockRetrievalResponse>>,
    ) {
        for action in actions {
            match action {
                Action::Broadcast(msg) => {
                    for (peer, error) in self.sender.broadcast(&msg) {
                        debug!(peer = %peer.short_str(), %error, "broadcast not queued");
                    }
                }
                Action::Send(peer, msg) => {
                    if let Err(error) = self.sender.send_to(peer, &msg) {
                        debug!(peer = %peer.short_str(), %error, "message not queued");
                    }
                }
                Action::Fetch(peer, request) => self.fetch(peer, request, fetched.clone()),
                Action::Committed(block) => {
                    self.source.committed(&block.transactions);
                    if let Some(observer) = &self.on_commit {
                        observer(&block);
                    }
                    let txs = block.transactions.len() as u64;
                    self.metrics.blocks.inc();
                    self.metrics.transactions.inc_by(txs);
                    self.metrics.height.set(block.height as i64);
                    self.status.send_modify(|s| {
                        s.committed_height = block.height;
                        s.committed_transactions += txs;
                        s.round = self.core.round();
                    });
                }
            }
        }
    }

    fn fetch(
        &self,
        peer: PeerId,
        request: BlockRetrievalRequest,
        fetched: mpsc::Sender<Option<BlockRetrievalResponse>>,
    ) {
        info!(peer = %peer.short_str(), from = request.from_height, "behind: retrieving blocks");
        let sender = self.sender.clone();
        let timeout = self.config.request_timeout;
        tokio::spawn(async move {
            let response = match sender.request(peer, &request, timeout).await {
                Ok(response) => Some(response),
                Err(error) => {
                    debug!(peer = %peer.short_str(), %error, "block retrieval failed");
                    None
                }
            };
            // The consensus task may have stopped; then nobody needs the blocks.
            let _ = fetched.send(response).await;
        });
    }
}
