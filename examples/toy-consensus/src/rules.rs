//! The consensus rules, with no I/O: messages and instants go in, [`Action`]s come out.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use state_sync::{BlockStore, MAX_BLOCKS_PER_ANSWER};
use tokio::time::Instant;
use validator_network::PeerId;
use validator_network::proto::consensus::block_retrieval_response::Status;
use validator_network::proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, Proposal, SyncInfo, Vote,
    consensus_msg,
};

/// Blocks asked for in one retrieval request, and served at most per request: a few
/// hundred kilobytes of transaction ids, far below the message limit.
pub const MAX_BLOCKS_PER_REQUEST: u32 = MAX_BLOCKS_PER_ANSWER;

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `msg` to every connected validator.
    Broadcast(ConsensusMsg),
    /// Send `msg` to one validator.
    Send(PeerId, ConsensusMsg),
    /// Ask a validator for committed blocks (the answer goes to [`Core::on_blocks`]).
    Fetch(PeerId, BlockRetrievalRequest),
    /// A block was committed.
    Committed(Block),
}

/// The timing of the rounds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Time a round may take before validators move to the next leader.
    pub round_timeout: Duration,
    /// Least time between two commits and the next proposal, which paces the chain.
    pub min_block_interval: Duration,
}

/// One validator's view of the chain and the round.
#[derive(Debug)]
pub struct Core {
    me: PeerId,
    validators: Vec<PeerId>,
    quorum: usize,
    timing: Timing,
    /// Recent committed blocks, oldest first, shared with whoever serves them.
    store: BlockStore,
    committed_height: u64,
    head_id: Bytes,
    round: u64,
    round_deadline: Instant,
    /// The highest round this validator voted in: it votes once per round.
    voted_round: u64,
    /// Proposals for the next height, by block id.
    pending: HashMap<Bytes, Block>,
    /// Votes for this validator's own proposals, by block id.
    votes: HashMap<Bytes, HashSet<PeerId>>,
    /// When this validator, as leader, proposes next.
    propose_at: Option<Instant>,
    last_commit: Instant,
    /// A retrieval in flight.
    fetching: bool,
    /// The highest height some peer said it has committed, and that peer.
    best_known: Option<(u64, PeerId)>,
    /// A validator-set change: the set that takes over once the block at this height
    /// is committed.
    reconfiguration: Option<(u64, Vec<PeerId>)>,
}

/// The votes that commit a block among `n` validators: `n - f`, where `f = (n - 1) / 3`
/// is how many may fail. Any two such quorums share at least `f + 1` validators, so at
/// least one honest validator, who votes once per round; and `n - f` is at least
/// `floor(2n/3) + 1`, more than half, so a minority never commits alone. (`2f + 1` is
/// the same number only when `n = 3f + 1`: for three validators it is one.)
pub fn quorum(n: usize) -> usize {
    n - n.saturating_sub(1) / 3
}

/// `block` with its byte fields copied out of the buffer it was decoded from. A message
/// received from the network decodes its `bytes` fields as slices of the receive buffer,
/// which holds other messages too: a block kept for minutes would keep that whole buffer.
fn owned(block: Block) -> Block {
    let copy = |b: &Bytes| Bytes::copy_from_slice(b);
    Block {
        id: copy(&block.id),
        parent_id: copy(&block.parent_id),
        proposer: copy(&block.proposer),
        ..block
    }
}

/// The id of the block proposed at `height` in `round` by `proposer`: unique, since a
/// leader proposes once per round.
pub fn block_id(height: u64, round: u64, proposer: &PeerId) -> Bytes {
    let mut id = Vec::with_capacity(48);
    id.extend_from_slice(&height.to_be_bytes());
    id.extend_from_slice(&round.to_be_bytes());
    id.extend_from_slice(proposer.as_bytes());
    Bytes::from(id)
}

fn msg(message: consensus_msg::Message) -> ConsensusMsg {
    ConsensusMsg {
        message: Some(message),
    }
}

impl Core {
    /// A node `me` with the validator set `validators`, at height 0, round 1. A node
    /// outside the set follows the chain (it commits what the validators commit) but
    /// neither proposes nor votes.
    pub fn new(
        me: PeerId,
        mut validators: Vec<PeerId>,
        timing: Timing,
        max_blocks_kept: usize,
        now: Instant,
    ) -> Self {
        validators.sort();
        validators.dedup();
        let n = validators.len();
        let mut core = Self {
            me,
            validators,
            quorum: quorum(n),
            timing,
            store: BlockStore::new(max_blocks_kept),
            committed_height: 0,
            head_id: Bytes::new(),
            round: 1,
            round_deadline: now + timing.round_timeout,
            voted_round: 0,
            pending: HashMap::new(),
            votes: HashMap::new(),
            propose_at: None,
            last_commit: now,
            fetching: false,
            best_known: None,
            reconfiguration: None,
        };
        core.enter_round(1, now);
        core
    }

    /// Hands the chain to `validators` after the block at `height` is committed: from
    /// the next round on they lead in turn and their votes count, and the old set's no
    /// longer do. Every node must be given the same change (in a real chain it would be
    /// a transaction of the block at `height`).
    pub fn reconfigure_at(&mut self, height: u64, mut validators: Vec<PeerId>) {
        if validators.is_empty() {
            // No set can take over from none: the change is ignored.
            return;
        }
        validators.sort();
        validators.dedup();
        self.reconfiguration = Some((height, validators));
    }

    /// The current validator set.
    pub fn validators(&self) -> &[PeerId] {
        &self.validators
    }

    /// Whether this node is a validator now.
    pub fn is_validator(&self) -> bool {
        self.validators.contains(&self.me)
    }

    /// Votes needed to commit: `n - f` (see [`quorum`]).
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The leader of `round`: the validators take turns.
    pub fn leader(&self, round: u64) -> PeerId {
        let n = self.validators.len() as u64;
        self.validators[(round % n) as usize]
    }

    /// The height of the last committed block.
    pub fn committed_height(&self) -> u64 {
        self.committed_height
    }

    /// The current round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The next instant the driver must call [`on_tick`](Core::on_tick) at.
    pub fn next_deadline(&self) -> Instant {
        match self.propose_at {
            Some(at) => at.min(self.round_deadline),
            None => self.round_deadline,
        }
    }

    /// Whether this validator should propose now: the driver then pulls transactions
    /// and calls [`propose`](Core::propose).
    pub fn wants_to_propose(&self, now: Instant) -> bool {
        self.propose_at.is_some_and(|at| at <= now)
    }

    fn enter_round(&mut self, round: u64, now: Instant) {
        self.round = round;
        self.round_deadline = now + self.timing.round_timeout;
        self.votes.clear();
        self.propose_at = (self.leader(round) == self.me)
            .then(|| now.max(self.last_commit + self.timing.min_block_interval));
    }

    /// Moves to the next round when the current one timed out.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if now >= self.round_deadline {
            self.enter_round(self.round + 1, now);
            // Tell the others where this validator is, so a validator that missed a
            // commit hears of it.
            return vec![Action::Broadcast(self.sync_info())];
        }
        Vec::new()
    }

    /// Proposes a block of `transactions` as the leader of the current round.
    pub fn propose(&mut self, transactions: Vec<u64>, now: Instant) -> Vec<Action> {
        self.propose_at = None;
        let height = self.committed_height + 1;
        let block = Block {
            height,
            round: self.round,
            id: block_id(height, self.round, &self.me),
            parent_id: self.head_id.clone(),
            proposer: Bytes::copy_from_slice(self.me.as_bytes()),
            transactions,
        };
        self.voted_round = self.round;
        self.votes
            .entry(block.id.clone())
            .or_default()
            .insert(self.me);
        self.pending.insert(block.id.clone(), block.clone());
        let mut actions = vec![Action::Broadcast(msg(consensus_msg::Message::Proposal(
            Proposal {
                block: Some(block.clone()),
            },
        )))];
        if self.quorum <= 1 {
            actions.extend(self.commit_as_leader(block, now));
        }
        actions
    }

    /// A message from a validator.
    pub fn on_message(&mut self, from: PeerId, message: ConsensusMsg, now: Instant) -> Vec<Action> {
        if !self.validators.contains(&from) {
            return Vec::new();
        }
        match message.message {
            Some(consensus_msg::Message::Proposal(Proposal { block: Some(block) })) => {
                self.on_proposal(from, block, now)
            }
            Some(consensus_msg::Message::Vote(vote)) => self.on_vote(from, vote, now),
            Some(consensus_msg::Message::SyncInfo(info)) => self.on_sync_info(from, info, now),
            _ => Vec::new(),
        }
    }

    fn on_proposal(&mut self, from: PeerId, block: Block, now: Instant) -> Vec<Action> {
        if !self.is_validator() {
            // A follower keeps the proposal, to commit it when a validator says so.
            if block.height == self.committed_height + 1 && self.leader(block.round) == from {
                self.pending.insert(block.id.clone(), block);
            } else if block.height > self.committed_height + 1 {
                return self.learn_of(block.height - 1, from);
            }
            return Vec::new();
        }
        if block.proposer != from.as_bytes()[..]
            || self.leader(block.round) != from
            || block.id != block_id(block.height, block.round, &from)
        {
            return Vec::new();
        }
        if block.height > self.committed_height + 1 {
            // The leader is ahead: this validator missed commits.
            return self.learn_of(block.height - 1, from);
        }
        if block.height != self.committed_height + 1
            || block.parent_id != self.head_id
            || block.round < self.round
            || block.round <= self.voted_round
        {
            return Vec::new();
        }
        if block.round > self.round {
            self.enter_round(block.round, now);
        }
        self.voted_round = block.round;
        let vote = Vote {
            block_id: block.id.clone(),
            height: block.height,
            round: block.round,
        };
        self.pending.insert(block.id.clone(), block);
        vec![Action::Send(from, msg(consensus_msg::Message::Vote(vote)))]
    }

    fn on_vote(&mut self, from: PeerId, vote: Vote, now: Instant) -> Vec<Action> {
        let Some(voters) = self.votes.get_mut(&vote.block_id) else {
            return Vec::new();
        };
        voters.insert(from);
        if voters.len() < self.quorum {
            return Vec::new();
        }
        match self.pending.get(&vote.block_id) {
            Some(block) if block.height == self.committed_height + 1 => {
                let block = block.clone();
                self.commit_as_leader(block, now)
            }
            _ => Vec::new(),
        }
    }

    fn commit_as_leader(&mut self, block: Block, now: Instant) -> Vec<Action> {
        let round = block.round;
        let mut actions = self.commit(block, now);
        self.enter_round(round + 1, now);
        actions.push(Action::Broadcast(self.sync_info()));
        actions
    }

    fn on_sync_info(&mut self, from: PeerId, info: SyncInfo, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if info.committed_height == self.committed_height + 1
            && let Some(block) = self.pending.get(&info.committed_id).cloned()
        {
            actions.extend(self.commit(block, now));
        } else if info.committed_height > self.committed_height {
            actions.extend(self.learn_of(info.committed_height, from));
        }
        if info.committed_height <= self.committed_height && info.round > self.round {
            self.enter_round(info.round, now);
        }
        actions
    }

    /// `peer` has committed up to `height`: fetch what this validator lacks.
    fn learn_of(&mut self, height: u64, peer: PeerId) -> Vec<Action> {
        if self.best_known.is_none_or(|(h, _)| height > h) {
            self.best_known = Some((height, peer));
        }
        self.fetch_if_behind()
    }

    fn fetch_if_behind(&mut self) -> Vec<Action> {
        match self.best_known {
            Some((height, peer)) if !self.fetching && height > self.committed_height => {
                self.fetching = true;
                vec![Action::Fetch(
                    peer,
                    BlockRetrievalRequest {
                        from_height: self.committed_height + 1,
                        max_blocks: MAX_BLOCKS_PER_REQUEST,
                    },
                )]
            }
            _ => Vec::new(),
        }
    }

    /// The answer to a [`Action::Fetch`] (`None`: the request failed).
    pub fn on_blocks(
        &mut self,
        response: Option<BlockRetrievalResponse>,
        now: Instant,
    ) -> Vec<Action> {
        self.fetching = false;
        let mut actions = Vec::new();
        let mut progressed = false;
        if let Some(response) = response
            && response.status() == Status::Ok
        {
            for block in response.blocks {
                if block.height != self.committed_height + 1 || block.parent_id != self.head_id {
                    break;
                }
                let round = block.round;
                actions.extend(self.commit(block, now));
                progressed = true;
                if round >= self.round {
                    self.enter_round(round + 1, now);
                }
            }
        }
        if progressed {
            actions.extend(self.fetch_if_behind());
        } else {
            // Ask again when someone next says it is ahead.
            self.best_known = None;
        }
        actions
    }

    /// Answers a block retrieval request from the recent committed blocks.
    pub fn serve(&self, request: &BlockRetrievalRequest) -> BlockRetrievalResponse {
        self.store.serve(request)
    }

    /// The committed blocks this core keeps, shared: what state sync serves too.
    pub fn store(&self) -> BlockStore {
        self.store.clone()
    }

    /// What this validator has committed and the round it is in.
    pub fn sync_info(&self) -> ConsensusMsg {
        msg(consensus_msg::Message::SyncInfo(SyncInfo {
            committed_height: self.committed_height,
            committed_id: self.head_id.clone(),
            round: self.round,
        }))
    }

    fn commit(&mut self, block: Block, now: Instant) -> Vec<Action> {
        let block = owned(block);
        self.committed_height = block.height;
        self.head_id = block.id.clone();
        self.last_commit = now;
        self.pending.clear();
        // It extends the chain (the next height, the head as parent), so it is kept.
        self.store.append(block.clone());
        if let Some((height, _)) = &self.reconfiguration
            && *height == block.height
            && let Some((_, validators)) = self.reconfiguration.take()
        {
            self.quorum = quorum(validators.len());
            self.validators = validators;
            self.votes.clear();
            self.propose_at = (self.leader(self.round) == self.me)
                .then(|| now.max(self.last_commit + self.timing.min_block_interval));
        }
        vec![Action::Committed(block)]
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
