//! A network of cores in simulated time: every message takes one `DELAY`, a partition
//! drops what crosses it, a fetch is answered at once by the peer asked (if it is on the
//! same side). Each validator's commits are recorded, so tests can check that all
//! validators end on one chain.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::*;

/// One way of every message.
const DELAY: Duration = Duration::from_millis(5);

/// The timing of the simulated validators.
pub(super) const SIM_TIMING: Timing = Timing {
    round_timeout: Duration::from_millis(500),
    min_block_interval: Duration::from_millis(50),
};

/// A message in flight: when it arrives, to whom, from whom.
struct InFlight {
    to: usize,
    from: usize,
    msg: ConsensusMsg,
}

/// Validators, the messages between them and the side of a partition each is on.
pub(super) struct Sim {
    pub(super) ids: Vec<PeerId>,
    pub(super) cores: Vec<Core>,
    /// The side of each validator: messages cross only between equal sides.
    side: Vec<u8>,
    /// Messages by arrival time (and a sequence number, to keep sends in order).
    in_flight: BTreeMap<(Instant, u64), InFlight>,
    sent: u64,
    pub(super) now: Instant,
    /// The id each validator committed at each height.
    pub(super) chains: Vec<BTreeMap<u64, Bytes>>,
}

impl Sim {
    /// `n` validators, all on one side.
    pub(super) fn new(n: u8) -> Self {
        let all: Vec<usize> = (0..n as usize).collect();
        Self::with_validators(n, &all)
    }

    /// `n` nodes, all on one side, of which those at `validators` are the validator
    /// set; the others follow.
    pub(super) fn with_validators(n: u8, validators: &[usize]) -> Self {
        let now = Instant::now();
        let ids: Vec<PeerId> = (1..=n).map(|b| PeerId::new([b; 32])).collect();
        let set: Vec<PeerId> = validators.iter().map(|&i| ids[i]).collect();
        let cores = ids
            .iter()
            .map(|me| Core::new(*me, set.clone(), SIM_TIMING, 10_000, now))
            .collect();
        Self {
            side: vec![0; ids.len()],
            chains: vec![BTreeMap::new(); ids.len()],
            ids,
            cores,
            in_flight: BTreeMap::new(),
            sent: 0,
            now,
        }
    }

    /// Puts `minority` on a side of their own.
    pub(super) fn partition(&mut self, minority: &[usize]) {
        for &i in minority {
            self.side[i] = 1;
        }
    }

    /// Everyone on one side again.
    pub(super) fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    pub(super) fn height(&self, i: usize) -> u64 {
        self.cores[i].committed_height()
    }

    /// Runs until `until` has passed.
    pub(super) fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let next_message = self.in_flight.keys().next().map(|(at, _)| *at);
            let next_deadline = self.cores.iter().map(Core::next_deadline).min();
            let Some(next) = [next_message, next_deadline].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_message == Some(next) {
                let (_, m) = self.in_flight.pop_first().expect("a message");
                if self.side[m.from] == self.side[m.to] {
                    let actions = self.cores[m.to].on_message(self.ids[m.from], m.msg, self.now);
                    self.perform(m.to, actions);
                }
                continue;
            }
            for i in 0..self.cores.len() {
                let mut actions = Vec::new();
                if self.cores[i].wants_to_propose(self.now) {
                    actions.extend(self.cores[i].propose(vec![i as u64], self.now));
                }
                if self.cores[i].next_deadline() <= self.now {
                    actions.extend(self.cores[i].on_tick(self.now));
                }
                self.perform(i, actions);
            }
        }
        self.now = end;
    }

    fn send(&mut self, from: usize, to: usize, msg: ConsensusMsg) {
        self.sent += 1;
        self.in_flight
            .insert((self.now + DELAY, self.sent), InFlight { to, from, msg });
    }

    fn perform(&mut self, i: usize, actions: Vec<Action>) {
        let index: HashMap<PeerId, usize> =
            self.ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    Action::Broadcast(msg) => {
                        for to in 0..self.ids.len() {
                            if to != i {
                                self.send(i, to, msg.clone());
                            }
                        }
                    }
                    Action::Send(peer, msg) => self.send(i, index[&peer], msg),
                    Action::Fetch(peer, request) => {
                        let from = index[&peer];
                        let response = (self.side[from] == self.side[i])
                            .then(|| self.cores[from].serve(&request));
                        next.extend(self.cores[i].on_blocks(response, self.now));
                    }
                    Action::Committed(block) => {
                        self.chains[i].insert(block.height, block.id);
                    }
                }
            }
            queue = next;
        }
    }

    /// Whether every two validators committed the same block at every height both have.
    pub(super) fn one_chain(&self) -> bool {
        self.chains.iter().all(|a| {
            self.chains.iter().all(|b| {
                a.iter()
                    .all(|(h, id)| b.get(h).is_none_or(|other| other == id))
            })
        })
    }
}
